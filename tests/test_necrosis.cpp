// The necrosis stage: input checks, known-answer images, areas and percentages, polygons, determinism, and the map on
// grade-synth slides whose necrosis percentage is known (these need the grade-synth tool, not ../shared/data).
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <fstream>
#include <iterator>
#include <random>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/necrosis.hpp"
#include "grade/slide.hpp"
#include "necrosis_model.hpp"
#include "test_support.hpp"

using namespace grade;

namespace {

ErrorCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::internal;
}

// Random points inside a CV_8U mask, about one per `px_per_point` mask pixels.
template <class Draw>
void scatter(const cv::Mat& where, double px_per_point, std::mt19937& rng, Draw draw) {
  const int n = static_cast<int>(cv::countNonZero(where) / px_per_point);
  if (n == 0) return;
  const cv::Rect box = cv::boundingRect(where);
  std::uniform_int_distribution<int> ux(box.x, box.x + box.width - 1), uy(box.y, box.y + box.height - 1);
  for (int i = 0; i < n;) {
    const cv::Point p(ux(rng), uy(rng));
    if (where.at<unsigned char>(p) == 0) continue;
    draw(p, i++);
  }
}

// Coagulative necrosis as grade-synth draws it: pale, smooth, eosin-only, with faint round ghost cells, no nuclei.
void paint_necrotic(cv::Mat& rgb, const cv::Mat& where, std::mt19937& rng) {
  rgb.setTo(cv::Scalar(236, 196, 216), where);
  std::uniform_int_distribution<int> gs(0, 30);
  scatter(where, 60.0, rng, [&](cv::Point p, int) {
    const int d = gs(rng);
    cv::circle(rgb, p, 4, cv::Scalar(226 - d, 176 - d, 204 - d / 2), cv::FILLED);
  });
}

// Viable, nucleus-rich tumour: dense dark-purple elongated nuclei on pink.
void paint_viable(cv::Mat& rgb, const cv::Mat& where, std::mt19937& rng) {
  rgb.setTo(cv::Scalar(200, 120, 170), where);
  scatter(where, 75.0, rng, [&](cv::Point p, int i) {
    cv::ellipse(rgb, p, cv::Size(5, 2), (i * 37) % 180, 0, 360, cv::Scalar(70, 40, 110), cv::FILLED);
  });
}

cv::Mat glass(int size) { return cv::Mat(size, size, CV_8UC3, cv::Scalar(242, 242, 242)); }

// Necrosis on the left half and viable tumour on the right half; glass in a frame around both.
cv::Mat two_tissues(int size) {
  cv::Mat rgb = glass(size);
  const int m = size / 16;
  std::mt19937 rng(7);
  cv::Mat left = cv::Mat::zeros(size, size, CV_8U), right = left.clone();
  left(cv::Rect(m, m, size / 2 - m, size - 2 * m)).setTo(255);
  right(cv::Rect(size / 2, m, size / 2 - m, size - 2 * m)).setTo(255);
  paint_necrotic(rgb, left, rng);
  paint_viable(rgb, right, rng);
  return rgb;
}

// Viable tumour filling the image with a round necrotic focus of `radius` pixels in its centre (none for 0); `focus`
// gets its mask.
cv::Mat focus_in_tumour(int size, int radius, cv::Mat& focus) {
  cv::Mat rgb = glass(size);
  std::mt19937 rng(11);
  focus = cv::Mat::zeros(size, size, CV_8U);
  if (radius > 0) cv::circle(focus, cv::Point(size / 2, size / 2), radius, cv::Scalar(255), cv::FILLED);
  paint_viable(rgb, ~focus, rng);
  paint_necrotic(rgb, focus, rng);
  return rgb;
}

double mean_in(const cv::Mat& m, const cv::Rect& r) { return cv::mean(m(r))[0]; }

}  // namespace

TEST_CASE("map_necrosis checks its inputs and parameters") {
  cv::Mat rgb(64, 64, CV_8UC3, cv::Scalar(230, 200, 220));
  CHECK(code_of([&] { map_necrosis(make_view(cv::Mat(), 2.0)); }) == ErrorCode::invalid_argument);
  CHECK(code_of([&] { map_necrosis(make_view(cv::Mat(64, 64, CV_8UC1, cv::Scalar(1)), 2.0)); }) ==
        ErrorCode::invalid_argument);
  CHECK(code_of([&] { map_necrosis(make_view(rgb, 0.0)); }) == ErrorCode::invalid_argument);
  NecrosisParams p;
  p.working_mpp = 0.1;
  CHECK(code_of([&] { map_necrosis(make_view(rgb, 2.0), p); }) == ErrorCode::invalid_argument);
  p = {};
  p.threshold = 1.5;
  CHECK(code_of([&] { map_necrosis(make_view(rgb, 2.0), p); }) == ErrorCode::invalid_argument);
  p = {};
  p.refine_reach_um = -1.0;
  CHECK(code_of([&] { map_necrosis(make_view(rgb, 2.0), p); }) == ErrorCode::invalid_argument);
  p = {};
  p.stains.eosin = p.stains.hematoxylin;  // parallel stains cannot be unmixed
  CHECK(code_of([&] { map_necrosis(make_view(rgb, 2.0), p); }) == ErrorCode::invalid_argument);
  try {
    p = {};
    p.working_mpp = 20.0;
    map_necrosis(make_view(rgb, 2.0), p);
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("working_mpp") != std::string::npos);
    CHECK(std::string(e.what()).find("20") != std::string::npos);
  }
}

TEST_CASE("glass only: no tissue, no necrosis") {
  const NecrosisMap m = map_necrosis(make_view(cv::Mat(200, 300, CV_8UC3, cv::Scalar(245, 245, 245)), 2.0));
  CHECK(m.tissue_fraction == 0.0);
  CHECK(m.necrotic_fraction == 0.0);
  CHECK(cv::countNonZero(m.necrosis) == 0);
  CHECK(m.probability.size() == cv::Size(300, 200));
}

TEST_CASE("pale eosin-only tissue is necrotic, nucleus-rich tissue is not; outputs at the input's size") {
  const cv::Mat rgb = two_tissues(512);
  const NecrosisMap m = map_necrosis(make_view(rgb, 2.0));
  REQUIRE(m.probability.size() == rgb.size());
  REQUIRE(m.necrosis.size() == rgb.size());
  REQUIRE(m.tissue.size() == rgb.size());
  CHECK(m.tissue_fraction == doctest::Approx(448.0 * 448.0 / (512.0 * 512.0)).epsilon(0.05));
  // Away from the border between the two (the features look ~100 um around).
  const cv::Rect pale(48, 48, 140, 416), rich(324, 48, 140, 416);
  CHECK(mean_in(m.probability, pale) > 0.6);
  CHECK(mean_in(m.probability, rich) < 0.2);
  CHECK(m.necrosis.at<unsigned char>(256, 100) == 255);
  CHECK(m.necrosis.at<unsigned char>(256, 400) == 0);
  // Necrosis lies inside tissue; fractions agree with the masks.
  CHECK(cv::countNonZero(m.necrosis & ~m.tissue) == 0);
  CHECK(m.necrotic_fraction == doctest::Approx(double(cv::countNonZero(m.necrosis)) / cv::countNonZero(m.tissue)));

  // The same tissue at 1 um/px (twice the pixels) is resampled to the working resolution: same answer, input size.
  cv::Mat big;
  cv::resize(rgb, big, cv::Size(), 2.0, 2.0, cv::INTER_LINEAR);
  const NecrosisMap m2 = map_necrosis(make_view(big, 1.0));
  CHECK(m2.probability.size() == big.size());
  CHECK(m2.necrotic_fraction == doctest::Approx(m.necrotic_fraction).epsilon(0.05));
}

TEST_CASE("the map is deterministic and does not depend on where the view sits on the slide") {
  const cv::Mat rgb = two_tissues(256);
  ImageView a = make_view(rgb, 2.0), b = make_view(rgb.clone(), 2.0);
  b.x0 = 123456;
  b.y0 = 789;
  b.downsample = 8.0;
  const NecrosisMap ma = map_necrosis(a), mb = map_necrosis(b);
  CHECK(cv::norm(ma.probability, mb.probability, cv::NORM_INF) == 0.0);
  CHECK(cv::countNonZero(ma.necrosis != mb.necrosis) == 0);
  CHECK(mb.x0 == 123456);
  CHECK(mb.downsample == 8.0);
}

TEST_CASE("border refinement: a small necrotic focus keeps more of its area; viable tumour stays necrosis-free") {
  // A drawn focus 680 um across at 2 um/px in 1.2 mm of tumour: the ~400 um windows see it diluted by viable tumour,
  // so the full model alone finds only its centre. Measured when written: 0.23 of the focus without refinement, 0.47
  // with it, nothing outside. This drawing is harder than grade-synth's necrosis (which the models were trained
  // with): a drawn focus 300 um across gets no seed at all, where grade-synth's foci of that size are found and
  // recovered to within a few points (the grade-synth test below; benchmarks/README.md).
  cv::Mat focus;
  const cv::Mat rgb = focus_in_tumour(600, 170, focus);
  NecrosisParams off;
  off.refine_reach_um = 0.0;
  const NecrosisMap coarse = map_necrosis(make_view(rgb, 2.0), off);
  const NecrosisMap refined = map_necrosis(make_view(rgb, 2.0));
  const double area = cv::countNonZero(focus);
  const double coarse_in = cv::countNonZero(coarse.necrosis & focus) / area;
  const double refined_in = cv::countNonZero(refined.necrosis & focus) / area;
  const double refined_out = cv::countNonZero(refined.necrosis & ~focus) / area;
  MESSAGE("focus: full model alone " << coarse_in << " of its area, refined " << refined_in << " (+" << refined_out
                                     << " outside)");
  CHECK(coarse_in > 0.1);  // the focus has seeds (else there is nothing to refine)
  CHECK(refined_in >= 1.5 * coarse_in);
  CHECK(refined_out <= 0.05);  // the border moves out to the focus's edge, not into viable tumour
  // Growth never starts a region: viable tumour alone has no necrosis.
  cv::Mat none;
  const cv::Mat viable = focus_in_tumour(600, 0, none);
  CHECK(map_necrosis(make_view(viable, 2.0)).necrotic_fraction == 0.0);
}

TEST_CASE("necrosis_area: mm^2 and percentage of tissue or of a caller's region; areas add up") {
  NecrosisMap m;
  m.mpp = 2.0;  // one pixel = 4 um^2
  m.tissue = cv::Mat(100, 100, CV_8U, cv::Scalar(255));
  m.tissue(cv::Rect(0, 0, 100, 20)).setTo(0);  // 8000 tissue pixels
  m.necrosis = cv::Mat::zeros(100, 100, CV_8U);
  m.necrosis(cv::Rect(0, 20, 50, 80)).setTo(255);  // 4000 necrotic pixels
  const NecrosisArea a = necrosis_area(m);
  CHECK(a.tumour_mm2 == doctest::Approx(8000 * 4e-6));
  CHECK(a.necrotic_mm2 == doctest::Approx(4000 * 4e-6));
  CHECK(a.percent() == doctest::Approx(50.0));

  cv::Mat region = cv::Mat::zeros(100, 100, CV_8U);
  region(cv::Rect(25, 0, 75, 100)).setTo(1);  // tumour: columns 25..99 of the tissue -> 6000 px, 2000 necrotic
  const NecrosisArea r = necrosis_area(m, region);
  CHECK(r.tumour_mm2 == doctest::Approx(6000 * 4e-6));
  CHECK(r.percent() == doctest::Approx(100.0 / 3.0));

  NecrosisArea sum = a;
  sum += r;
  CHECK(sum.percent() == doctest::Approx(100.0 * 6000 / 14000));
  CHECK(NecrosisArea{}.percent() == 0.0);

  CHECK(code_of([&] { necrosis_area(m, cv::Mat::zeros(10, 10, CV_8U)); }) == ErrorCode::invalid_argument);
  NecrosisMap no_mpp = m;
  no_mpp.mpp = 0;
  CHECK(code_of([&] { necrosis_area(no_mpp); }) == ErrorCode::invalid_argument);
}

TEST_CASE("necrosis_polygons: level-0 outlines with holes, small pieces dropped, sorted") {
  NecrosisMap m;
  m.mpp = 2.0;
  m.downsample = 8.0;  // level 0 at 0.25 um/px
  m.x0 = 1000;
  m.y0 = 2000;
  m.necrosis = cv::Mat::zeros(200, 200, CV_8U);
  m.necrosis(cv::Rect(100, 20, 80, 60)).setTo(255);  // 160 x 120 um with a 60 x 60 um hole
  m.necrosis(cv::Rect(125, 35, 30, 30)).setTo(0);
  m.necrosis(cv::Rect(10, 150, 30, 30)).setTo(255);  // 60 x 60 um, lower
  m.necrosis(cv::Rect(5, 5, 3, 3)).setTo(255);       // 36 um^2: below min_area_um2
  m.tissue = cv::Mat(200, 200, CV_8U, cv::Scalar(255));
  const auto polys = necrosis_polygons(m);
  REQUIRE(polys.size() == 2);
  REQUIRE(polys[0].rings.size() == 2);  // outline + hole
  CHECK(polys[1].rings.size() == 1);
  // Bounding box of the first outline in level-0 pixels: x0 + (px + 0.5) * ds.
  double minx = 1e18, maxx = -1e18, miny = 1e18, maxy = -1e18;
  for (const auto& p : polys[0].rings[0]) {
    minx = std::min(minx, p.x);
    maxx = std::max(maxx, p.x);
    miny = std::min(miny, p.y);
    maxy = std::max(maxy, p.y);
  }
  CHECK(minx == doctest::Approx(1000 + 100.5 * 8));
  CHECK(maxx == doctest::Approx(1000 + 179.5 * 8));
  CHECK(miny == doctest::Approx(2000 + 20.5 * 8));
  CHECK(maxy == doctest::Approx(2000 + 79.5 * 8));
  NecrosisPolygonParams big;
  big.min_area_um2 = 10'000.0;  // keeps only the first piece (~16000 um^2), drops the 3600 um^2 one and the hole
  const auto only = necrosis_polygons(m, big);
  REQUIRE(only.size() == 1);
  CHECK(only[0].rings.size() == 1);
  CHECK(code_of([] { necrosis_polygons(NecrosisMap{}); }) == ErrorCode::invalid_argument);  // no mpp
}

TEST_CASE("the embedded model loads and matches this library's features") {
  const auto& model = detail::embedded_necrosis_model();
  CHECK(model.weights.size() == static_cast<size_t>(detail::necrosis_feature_count()));
  CHECK(model.fine_weights.size() == static_cast<size_t>(detail::necrosis_fine_feature_count()));
  CHECK(model.provenance.find("osteosarcoma") != std::string::npos);
  CHECK(code_of([] { detail::read_necrosis_model("%YAML:1.0\n---\nbias: 1.0\n"); }) == ErrorCode::model);
}

// grade-synth slides: the necrosis percentage of tissue is known exactly; the map must be within 5 points. Seeds and
// percentages differ from the slide used in training (seed 11, 45 %). Seeds 31 and 17 have small foci (three of ~300
// and three of ~415 um), which the full model alone under-reads by 7.8 and 6.1 points (the border refinement's reason
// to exist); with it (and the ~6 um texture) they read 6.2 % and 11.6 % through grade-slide, the weakest cases
// (benchmarks/README.md).
TEST_CASE("grade-synth slides: necrosis percentage within 5 points of the truth") {
  test::TempDir dir("grade-necrosis-synth");
  struct Case {
    int seed;
    double percent;
    int width, height;
  };
  for (const Case c : {Case{3, 30.0, 6000, 6000}, Case{5, 60.0, 8000, 5000}, Case{7, 5.0, 6000, 6000},
                       Case{21, 0.0, 4000, 4000}, Case{31, 10.0, 7000, 7000}, Case{17, 15.0, 8000, 8000}}) {
    const std::string stem = std::to_string(c.seed);
    const auto tiff = dir / (stem + ".tiff");
    const auto json = dir / (stem + ".json");
    const auto r = test::run(test::quote(test::tool("grade-synth").string()) + " -q --out " + test::quote(tiff.string()) +
                             " --truth " + test::quote(json.string()) + " --seed " + std::to_string(c.seed) +
                             " --necrosis-percent " + std::to_string(c.percent) + " --width " +
                             std::to_string(c.width) + " --height " + std::to_string(c.height));
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    std::ifstream in(json);
    const auto truth = nlohmann::json::parse(in);
    const Slide slide = Slide::open(tiff);
    const ImageView view = slide.read_region_at_mpp({0, 0, slide.width(), slide.height()}, 2.0);
    const NecrosisMap m = map_necrosis(view);
    const NecrosisArea a = necrosis_area(m);
    const double truth_pct = truth.at("necrosis_percent").get<double>();
    INFO("seed " << c.seed << ": truth " << truth_pct << " %, measured " << a.percent() << " %");
    CHECK(std::abs(a.percent() - truth_pct) <= 5.0);
    CHECK(a.tumour_mm2 == doctest::Approx(truth.at("tissue_area_mm2").get<double>()).epsilon(0.05));
    MESSAGE("grade-synth seed " << c.seed << ": truth " << truth_pct << " %, measured " << a.percent() << " %");
  }
}

TEST_CASE("grade-inspect necrosis writes necrosis.csv and a mask per image, agreeing with map_necrosis") {
  test::TempDir dir("grade-necrosis-cli");
  const cv::Mat rgb = two_tissues(384);
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  const auto png = dir / "two.png";
  REQUIRE(cv::imwrite(png.string(), bgr));
  const auto out = dir / "out";
  const auto r = test::run(test::quote(test::tool("grade-inspect").string()) + " necrosis --mpp 2.0 --out " +
                           test::quote(out.string()) + " " + test::quote(png.string()));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  std::ifstream csv(out / "necrosis.csv");
  std::string header, row;
  std::getline(csv, header);
  std::getline(csv, row);
  CHECK(header.rfind("image,necrotic_fraction,tissue_fraction", 0) == 0);
  REQUIRE(row.rfind("two,", 0) == 0);
  const double fraction = std::stod(row.substr(4));
  const NecrosisMap m = map_necrosis(make_view(rgb, 2.0));
  CHECK(fraction == doctest::Approx(m.necrotic_fraction).epsilon(1e-4));
  const cv::Mat mask = cv::imread((out / "two.necrosis.png").string(), cv::IMREAD_UNCHANGED);
  REQUIRE(!mask.empty());
  CHECK(mask.size() == rgb.size());
  CHECK(cv::countNonZero(mask != m.necrosis) == 0);

  // A later run whose inputs all fail says so, exits 1 and leaves the earlier table alone.
  const auto broken = dir / "broken.png";
  std::ofstream(broken) << "not a PNG";
  std::ifstream before_in(out / "necrosis.csv");
  const std::string before((std::istreambuf_iterator<char>(before_in)), {});
  const auto bad = test::run(test::quote(test::tool("grade-inspect").string()) + " necrosis --mpp 2.0 --out " +
                             test::quote(out.string()) + " " + test::quote(broken.string()));
  CHECK(bad.exit_code == 1);
  CHECK(bad.output.find("broken.png") != std::string::npos);
  CHECK(bad.output.find("nothing written") != std::string::npos);
  std::ifstream after_in(out / "necrosis.csv");
  CHECK(std::string((std::istreambuf_iterator<char>(after_in)), {}) == before);
}
