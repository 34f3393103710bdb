// Stain estimation and colour deconvolution on images rendered from known stain vectors; grade-inspect stain.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <numbers>
#include <random>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/stain.hpp"
#include "stain_detail.hpp"
#include "test_support.hpp"

namespace {

std::array<double, 3> unit(std::array<double, 3> v) {
  const double n = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
  return {v[0] / n, v[1] / n, v[2] / n};
}

// Beer-Lambert rendering: I = 256 * exp(-(cH * H + cE * E)) - 1, with concentrations drawn per pixel (a fraction of
// pixels pure H, pure E, or background, the rest mixtures), plus a little noise.
cv::Mat render(const grade::StainVectors& s, int w, int h, unsigned seed, cv::Mat* ch = nullptr, cv::Mat* ce = nullptr) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::normal_distribution<double> noise(0.0, 0.6);
  cv::Mat rgb(h, w, CV_8UC3);
  if (ch) ch->create(h, w, CV_32F);
  if (ce) ce->create(h, w, CV_32F);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const double kind = u(rng);
      double a = 0, b = 0;
      if (kind < 0.2) a = 0.2 + 1.2 * u(rng);
      else if (kind < 0.5) b = 0.2 + 1.0 * u(rng);
      else if (kind < 0.9) { a = 1.0 * u(rng); b = 0.8 * u(rng); }
      if (ch) ch->at<float>(y, x) = static_cast<float>(a);
      if (ce) ce->at<float>(y, x) = static_cast<float>(b);
      cv::Vec3b p;
      for (int c = 0; c < 3; ++c) {
        const double od = a * s.hematoxylin[c] + b * s.eosin[c];
        const double i = 256.0 * std::exp(-od) - 1.0 + (ch ? 0.0 : noise(rng));
        p[c] = cv::saturate_cast<uchar>(std::lround(i));
      }
      rgb.at<cv::Vec3b>(y, x) = p;
    }
  return rgb;
}

}  // namespace

TEST_CASE("standard_stains are unit vectors") {
  const auto s = grade::standard_stains();
  CHECK(std::hypot(s.hematoxylin[0], s.hematoxylin[1], s.hematoxylin[2]) == doctest::Approx(1.0));
  CHECK(std::hypot(s.eosin[0], s.eosin[1], s.eosin[2]) == doctest::Approx(1.0));
}

TEST_CASE("Macenko recovers known stain vectors within 3 degrees") {
  // Several plausible H&E pairs, a few degrees to ~20 degrees away from the standard ones.
  const std::vector<grade::StainVectors> truths = {
      grade::standard_stains(),
      {unit({0.55, 0.78, 0.30}), unit({0.10, 0.95, 0.30})},
      {unit({0.70, 0.65, 0.20}), unit({0.20, 0.90, 0.15})},
      {unit({0.60, 0.70, 0.40}), unit({0.05, 0.85, 0.45})},
  };
  unsigned seed = 1;
  for (const auto& t : truths) {
    const auto rgb = render(t, 300, 200, seed++);
    const auto est = grade::estimate_stains(grade::make_view(rgb, 0.5));
    CAPTURE(est.warning);
    CHECK_FALSE(est.fallback);
    CHECK(grade::detail::angle_deg(est.vectors.hematoxylin, t.hematoxylin) < 3.0);
    CHECK(grade::detail::angle_deg(est.vectors.eosin, t.eosin) < 3.0);
  }
}

TEST_CASE("the mask restricts the estimate, and too few pixels falls back with a warning") {
  const auto t = grade::standard_stains();
  const auto rgb = render(t, 100, 100, 7);
  cv::Mat mask = cv::Mat::zeros(rgb.size(), CV_8U);
  mask(cv::Rect(0, 0, 10, 10)).setTo(255);
  const auto est = grade::estimate_stains(grade::make_view(rgb, 0.5), {}, mask);
  CHECK(est.fallback);
  CHECK(est.warning.find("too few") != std::string::npos);
  CHECK(est.pixels_used <= 100);

  const cv::Mat white(200, 200, CV_8UC3, cv::Scalar(255, 255, 255));
  const auto w = grade::estimate_stains(grade::make_view(white, 0.5));
  CHECK(w.fallback);
  CHECK(w.pixels_used == 0);
}

TEST_CASE("an implausible estimate (a single blue stain, e.g. a pen mark) falls back") {
  grade::StainVectors blue{unit({0.9, 0.4, 0.05}), unit({0.85, 0.5, 0.05})};  // nearly one direction
  const auto rgb = render(blue, 200, 200, 3);
  const auto est = grade::estimate_stains(grade::make_view(rgb, 0.5));
  CHECK(est.fallback);
  CHECK(est.warning.find("implausible") != std::string::npos);
}

TEST_CASE("deconvolve returns the rendered densities") {
  const grade::StainVectors t{unit({0.55, 0.78, 0.30}), unit({0.10, 0.95, 0.30})};
  cv::Mat ch, ce;
  const auto rgb = render(t, 120, 80, 11, &ch, &ce);
  const auto d = grade::deconvolve(grade::make_view(rgb, 0.5), t);
  REQUIRE(d.hematoxylin.type() == CV_32F);
  REQUIRE(d.eosin.size() == rgb.size());
  // Quantisation to 8 bits limits the precision (worst where the image is dark).
  cv::Mat dh = cv::abs(d.hematoxylin - ch), de = cv::abs(d.eosin - ce);
  CHECK(cv::mean(dh)[0] < 0.01);
  CHECK(cv::mean(de)[0] < 0.01);
}

TEST_CASE("clear errors for empty or non-RGB input") {
  CHECK_THROWS_AS(grade::estimate_stains(grade::make_view(cv::Mat(), 0.5)), grade::Error);
  CHECK_THROWS_WITH_AS(grade::deconvolve(grade::make_view(cv::Mat(10, 10, CV_8UC1, cv::Scalar(0)), 0.5),
                                         grade::standard_stains()),
                       doctest::Contains("CV_8UC3"), grade::Error);
  const cv::Mat rgb(10, 10, CV_8UC3, cv::Scalar(200, 100, 150));
  CHECK_THROWS_AS(grade::deconvolve(grade::make_view(rgb, 0.5), {{1, 0, 0}, {1, 0, 0}}), grade::Error);
  CHECK_THROWS_AS(grade::estimate_stains(grade::make_view(rgb, 0.5), {.angle_percentile = 60.0}), grade::Error);
}

TEST_CASE("grade-inspect stain: the rendered vectors come back in stain.csv; blank glass falls back with a warning") {
  namespace test = grade::test;
  test::TempDir dir("grade-stain-cli");
  const grade::StainVectors truth{unit({0.55, 0.78, 0.30}), unit({0.10, 0.95, 0.30})};
  cv::Mat bgr;
  cv::cvtColor(render(truth, 300, 200, 7), bgr, cv::COLOR_RGB2BGR);
  REQUIRE(cv::imwrite((dir / "he.png").string(), bgr));
  REQUIRE(cv::imwrite((dir / "glass.png").string(), cv::Mat(200, 300, CV_8UC3, cv::Scalar(243, 242, 244))));
  const auto out = dir / "out";
  const auto r = test::run(test::quote(test::tool("grade-inspect").string()) + " stain --mpp 2 --out " +
                           test::quote(out.string()) + " " + test::quote((dir / "he.png").string()) + " " +
                           test::quote((dir / "glass.png").string()));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK(test::slurp(out / "stain.csv").rfind("image,h_r,h_g,h_b,e_r,e_g,e_b,fallback,warning,pixels_used\n", 0) == 0);
  std::map<std::string, std::map<std::string, std::string>> rows;
  for (const auto& row : test::read_csv(out / "stain.csv")) rows[row.at("image")] = row;
  REQUIRE(rows.count("he") == 1);
  REQUIRE(rows.count("glass") == 1);
  auto& he = rows["he"];
  const std::array<double, 3> h{std::stod(he["h_r"]), std::stod(he["h_g"]), std::stod(he["h_b"])},
      e{std::stod(he["e_r"]), std::stod(he["e_g"]), std::stod(he["e_b"])};
  CHECK(he["fallback"] == "0");
  CHECK(grade::detail::angle_deg(h, truth.hematoxylin) < 3.0);
  CHECK(grade::detail::angle_deg(e, truth.eosin) < 3.0);
  CHECK(rows["glass"]["fallback"] == "1");
  CHECK(!rows["glass"]["warning"].empty());  // the warning says why
}
