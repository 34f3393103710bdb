// detect_tissue on a drawn thumbnail with known tissue, glass holes, pen marks, dust and grey debris; grade-inspect
// tissue with an mpp per image.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <map>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/tissue.hpp"
#include "test_support.hpp"

namespace {

cv::Vec3b from_od(double r, double g, double b) {
  auto v = [](double od) { return cv::saturate_cast<uchar>(std::lround(256.0 * std::exp(-od) - 1.0)); };
  return {v(r), v(g), v(b)};
}

struct Scene {
  cv::Mat rgb, truth;  // truth: 255 where tissue should be
};

// 8 um/px, 300 x 200 px (2.4 x 1.6 mm).
Scene scene() {
  const int w = 300, h = 200;
  Scene s;
  s.rgb = cv::Mat(h, w, CV_8UC3, cv::Scalar(242, 242, 244));  // glass
  s.truth = cv::Mat::zeros(h, w, CV_8U);
  cv::ellipse(s.truth, {150, 100}, {110, 70}, 0, 0, 360, 255, cv::FILLED);
  cv::circle(s.truth, {120, 90}, 16, 0, cv::FILLED);  // a real glass hole (~0.05 mm^2): stays a hole
  cv::RNG rng(5);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      if (!s.truth.at<uchar>(y, x)) continue;
      // H&E mixture: eosin-rich stroma with hematoxylin texture (OD of the standard vectors).
      const double a = std::max(0.0, rng.gaussian(0.25) + 0.35), e = std::max(0.05, rng.gaussian(0.1) + 0.45);
      s.rgb.at<cv::Vec3b>(y, x) = from_od(0.65 * a + 0.07 * e, 0.70 * a + 0.99 * e, 0.29 * a + 0.11 * e);
    }
  // A tiny glass hole (< min_hole_um2): filled.
  cv::circle(s.rgb, {200, 110}, 2, cv::Scalar(242, 242, 244), cv::FILLED);
  // Blue pen on glass and across the tissue edge; grey debris and dark dust on glass.
  cv::line(s.rgb, {5, 190}, {120, 150}, cv::Scalar(40, 60, 170), 4);
  cv::line(s.truth, {5, 190}, {120, 150}, 0, 6);
  cv::ellipse(s.rgb, {40, 30}, {18, 10}, 0, 0, 360, cv::Scalar(120, 120, 125), cv::FILLED);
  for (int i = 0; i < 6; ++i) cv::circle(s.rgb, {260 + 5 * i, 15}, 1, cv::Scalar(60, 60, 60), cv::FILLED);
  // A small stained speck on glass (dust-sized piece of tissue, < min_region_um2): dropped.
  cv::circle(s.rgb, {280, 185}, 2, cv::Scalar(180, 90, 160), cv::FILLED);
  return s;
}

}  // namespace

TEST_CASE("tissue: glass, holes, pen, grey debris and dust") {
  const Scene s = scene();
  const auto t = grade::detect_tissue(grade::make_view(s.rgb, 8.0));
  REQUIRE(t.mask.size() == s.rgb.size());
  REQUIRE(t.mask.type() == CV_8U);
  const double inter = cv::countNonZero(t.mask & s.truth), uni = cv::countNonZero(t.mask | s.truth);
  CHECK(inter / uni > 0.97);
  CHECK(t.mask.at<uchar>(90, 120) == 0);    // the large hole stays a hole
  CHECK(t.mask.at<uchar>(110, 200) == 255); // the tiny hole is filled
  CHECK(t.mask.at<uchar>(30, 40) == 0);     // grey debris
  CHECK(t.mask.at<uchar>(15, 270) == 0);    // dust
  CHECK(t.mask.at<uchar>(185, 280) == 0);   // speck
  CHECK(t.mask.at<uchar>(180, 40) == 0);    // pen on glass
  const double truth_mm2 = cv::countNonZero(s.truth) * 64.0 / 1e6;
  CHECK(t.area_mm2 == doctest::Approx(truth_mm2).epsilon(0.03));
  CHECK(t.mpp == 8.0);
}

TEST_CASE("tissue: origin and scale are carried over; blank glass has no tissue") {
  const cv::Mat glass(100, 100, CV_8UC3, cv::Scalar(240, 240, 240));
  grade::ImageView v = grade::make_view(glass, 16.0);
  v.x0 = 5;
  v.downsample = 64.0;
  const auto t = grade::detect_tissue(v);
  CHECK(t.area_mm2 == 0.0);
  CHECK(t.x0 == 5);
  CHECK(t.downsample == 64.0);
}

TEST_CASE("tissue: clear errors") {
  CHECK_THROWS_WITH_AS(grade::detect_tissue(grade::make_view(cv::Mat(), 8.0)), doctest::Contains("empty"), grade::Error);
  CHECK_THROWS_WITH_AS(grade::detect_tissue(grade::make_view(cv::Mat(10, 10, CV_8UC4, cv::Scalar::all(0)), 8.0)),
                       doctest::Contains("CV_8UC3"), grade::Error);
  CHECK_THROWS_WITH_AS(grade::detect_tissue(grade::make_view(cv::Mat(10, 10, CV_8UC3, cv::Scalar::all(0)), 0.0)),
                       doctest::Contains("mpp"), grade::Error);
  CHECK_THROWS_AS(grade::detect_tissue(grade::make_view(cv::Mat(10, 10, CV_8UC3, cv::Scalar::all(0)), 8.0),
                                       {.min_region_um2 = -1.0}),
                  grade::Error);
}

TEST_CASE("grade-inspect tissue: one mask and one row per image, each image at its own mpp (--mpp-csv)") {
  namespace test = grade::test;
  test::TempDir dir("grade-tissue-cli");
  const Scene s = scene();
  cv::Mat bgr;
  cv::cvtColor(s.rgb, bgr, cv::COLOR_RGB2BGR);
  REQUIRE(cv::imwrite((dir / "a.png").string(), bgr));
  REQUIRE(cv::imwrite((dir / "b.png").string(), bgr));
  std::ofstream(dir / "mpp.csv") << "image,mpp\na.png,8\nb,16\n";  // by file name and by stem
  const auto out = dir / "out";
  const auto r = test::run(test::quote(test::tool("grade-inspect").string()) + " tissue --mpp-csv " +
                           test::quote((dir / "mpp.csv").string()) + " --out " + test::quote(out.string()) + " " +
                           test::quote((dir / "a.png").string()) + " " + test::quote((dir / "b.png").string()));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK(test::slurp(out / "tissue.csv").rfind("image,tissue_area_mm2,mask_mpp,mask_width,mask_height,downsample\n", 0) ==
        0);
  std::map<std::string, double> area;
  for (const auto& row : test::read_csv(out / "tissue.csv")) area[row.at("image")] = std::stod(row.at("tissue_area_mm2"));
  REQUIRE(area.size() == 2);
  const double truth_mm2 = cv::countNonZero(s.truth) * 64.0 / 1e6;
  CHECK(area["a"] == doctest::Approx(truth_mm2).epsilon(0.03));
  CHECK(area["b"] == doctest::Approx(4.0 * area["a"]).epsilon(0.01));  // twice the mpp: four times the area
  const cv::Mat mask = cv::imread((out / "a.tissue.png").string(), cv::IMREAD_UNCHANGED);
  REQUIRE(!mask.empty());
  const cv::Mat direct = grade::detect_tissue(grade::make_view(s.rgb, 8.0)).mask;
  REQUIRE(mask.size() == direct.size());
  CHECK(cv::countNonZero(mask != direct) == 0);
  // An image the CSV does not name, and no --mpp: an error naming it; the others are still written.
  REQUIRE(cv::imwrite((dir / "c.png").string(), bgr));
  const auto out2 = dir / "out2";
  const auto partial = test::run(test::quote(test::tool("grade-inspect").string()) + " tissue --mpp-csv " +
                                 test::quote((dir / "mpp.csv").string()) + " --out " + test::quote(out2.string()) + " " +
                                 test::quote((dir / "a.png").string()) + " " + test::quote((dir / "c.png").string()));
  CHECK(partial.exit_code != 0);
  CHECK(partial.output.find("c.png") != std::string::npos);
  CHECK(partial.output.find("mpp.csv does not name this image") != std::string::npos);
  CHECK(std::filesystem::exists(out2 / "a.tissue.png"));
}
