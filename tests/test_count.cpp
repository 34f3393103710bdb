// The mitotic count: window geometry, hand-placed detections, a brute-force reference, the Poisson interval, speed.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <random>

#include <opencv2/imgproc.hpp>

#include "grade/count.hpp"
#include "grade/error.hpp"

using namespace grade;

namespace {

MitoticCount brute_force(const std::vector<MitosisDetection>& dets, const cv::Mat& mask, double ds, std::int64_t x0,
                         std::int64_t y0, double mpp0, const HpfParams& hpf) {
  // Straight from the definition in count.hpp: every integer window position inside the region's bounding box.
  const std::int64_t side = hpf_window_side_px(hpf, mpp0);
  cv::Rect bb = cv::boundingRect(mask);
  const std::int64_t bx = x0 + static_cast<std::int64_t>(std::floor(bb.x * ds));
  const std::int64_t by = y0 + static_cast<std::int64_t>(std::floor(bb.y * ds));
  const std::int64_t bw = x0 + static_cast<std::int64_t>(std::ceil((bb.x + bb.width) * ds)) - bx;
  const std::int64_t bh = y0 + static_cast<std::int64_t>(std::ceil((bb.y + bb.height) * ds)) - by;
  const std::int64_t w = std::min(side, bw), h = std::min(side, bh);
  auto in_mask = [&](double x, double y) {
    const double j = std::floor((x - x0) / ds), i = std::floor((y - y0) / ds);
    return j >= 0 && i >= 0 && j < mask.cols && i < mask.rows && mask.at<uchar>(int(i), int(j)) != 0;
  };
  std::vector<MitosisDetection> in;
  for (const auto& d : dets)
    if (in_mask(d.x, d.y)) in.push_back(d);
  MitoticCount best;
  best.raw_count = -1;
  for (int relaxed = 0; relaxed < 2 && best.raw_count < 0; ++relaxed)
    for (std::int64_t y = by; y <= by + bh - h; ++y)
      for (std::int64_t x = bx; x <= bx + bw - w; ++x) {
        if (!relaxed && !in_mask(x + 0.5 * w, y + 0.5 * h)) continue;
        int c = 0;
        for (const auto& d : in)
          if (d.x >= x && d.x < x + w && d.y >= y && d.y < y + h) ++c;
        if (c > best.raw_count) {
          best.raw_count = c;
          best.window = {x, y, w, h};
        }
      }
  best.total_detected = static_cast<int>(in.size());
  return best;
}

}  // namespace

TEST_CASE("HPF geometry") {
  const HpfParams def;
  CHECK(def.hpf_area_mm2 == doctest::Approx(0.1734));
  CHECK(def.fields == 10);
  // 10 x 0.1734 mm^2 = 1.734 mm^2: side 1.31681 mm = 5267 px at 0.25 um/px.
  CHECK(hpf_window_side_px(def, 0.25) == 5267);
  CHECK(hpf_window_side_px(def, 0.5) == 2634);
  // A 22 mm field number with a 40x objective: diameter 0.55 mm, 0.2376 mm^2.
  const auto p = HpfParams::from_field_diameter_mm(0.55);
  CHECK(p.hpf_area_mm2 == doctest::Approx(0.237583).epsilon(1e-5));
  CHECK(p.fields == 10);
  // FNCLCC's own 0.1734 mm^2 corresponds to a field diameter of 0.4699 mm.
  CHECK(HpfParams::from_field_diameter_mm(0.46988).hpf_area_mm2 == doctest::Approx(0.1734).epsilon(1e-4));
  CHECK(HpfParams::from_field_diameter_mm(0.5, 5).fields == 5);
  CHECK_THROWS_AS(HpfParams::from_field_diameter_mm(0.0), Error);
  CHECK_THROWS_AS(HpfParams::from_field_diameter_mm(0.5, 0), Error);
  CHECK_THROWS_AS(hpf_window_side_px(def, 0.0), Error);
}

TEST_CASE("exact Poisson 95% interval (Garwood)") {
  double lo = 0, hi = 0;
  poisson_ci95(0, lo, hi);
  CHECK(lo == 0.0);
  CHECK(hi == doctest::Approx(3.689).epsilon(1e-3));
  poisson_ci95(1, lo, hi);
  CHECK(lo == doctest::Approx(0.0253).epsilon(1e-2));
  CHECK(hi == doctest::Approx(5.572).epsilon(1e-3));
  poisson_ci95(10, lo, hi);
  CHECK(lo == doctest::Approx(4.795).epsilon(1e-3));
  CHECK(hi == doctest::Approx(18.39).epsilon(1e-3));
  poisson_ci95(20, lo, hi);
  CHECK(lo == doctest::Approx(12.22).epsilon(1e-3));
  CHECK(hi == doctest::Approx(30.89).epsilon(1e-3));
  CHECK_THROWS_AS(poisson_ci95(-1, lo, hi), Error);
}

TEST_CASE("hand-placed detections on a large region") {
  // 0.25 um/px: window side 5267 px. Region: 20000 x 12000 px as a 200 x 120 mask at ds = 100.
  cv::Mat mask(120, 200, CV_8U, cv::Scalar(255));
  std::vector<MitosisDetection> d;
  // A cluster of 12 inside a 3000-px square near (14000, 6000); 3 scattered elsewhere.
  for (int k = 0; k < 12; ++k) d.push_back({14000.0 + 250 * k, 6000.0 + 200 * k, 0.9});
  d.push_back({1000, 1000, 0.9});
  d.push_back({5000, 11000, 0.9});
  d.push_back({19000, 500, 0.9});
  const auto r = count_mitoses(d, mask, 100.0, 0, 0, 0.25);
  CHECK(r.count == 12);
  CHECK(r.raw_count == 12);
  CHECK(!r.scaled);
  CHECK(r.score == 2);
  CHECK(r.total_detected == 15);
  CHECK(r.window.width == 5267);
  CHECK(r.window.height == 5267);
  CHECK(r.window_area_mm2 == doctest::Approx(1.734).epsilon(1e-3));
  CHECK(r.per_mm2 == doctest::Approx(12 / r.window_area_mm2));
  CHECK(r.region_area_mm2 == doctest::Approx(20000.0 * 12000.0 * 0.0625e-6));
  CHECK(r.ci95_low == doctest::Approx(6.2006).epsilon(1e-3));
  CHECK(r.ci95_high == doctest::Approx(20.96).epsilon(1e-3));
  // Ties go to the smallest y, then x: the lowest window holding all 12 ends just below the last one (y = 8200).
  CHECK(r.window.y == 8200 - 5267 + 1);
  CHECK(r.window.x == std::max<std::int64_t>(0, 14000 + 250 * 11 - 5267 + 1));
  // Detections outside the region are ignored.
  cv::Mat half = mask.clone();
  half.colRange(100, 200).setTo(0);
  const auto r2 = count_mitoses(d, half, 100.0, 0, 0, 0.25);
  CHECK(r2.total_detected == 2);
  CHECK(r2.count <= 2);
}

TEST_CASE("region smaller than the window: bounding box, scaled count") {
  // 2000 x 1000 px at 0.25 um/px = 0.125 mm^2, against 1.734 mm^2: scale 13.87.
  cv::Mat mask(10, 20, CV_8U, cv::Scalar(1));
  std::vector<MitosisDetection> d{{100, 100, 1}, {1500, 900, 1}};
  const auto r = count_mitoses(d, mask, 100.0, 3000, 4000, 0.25);  // origin offset: detections fall outside
  CHECK(r.total_detected == 0);
  CHECK(r.window == Rect64{3000, 4000, 2000, 1000});
  std::vector<MitosisDetection> d2{{3100, 4100, 1}, {4500, 4900, 1}};
  const auto r2 = count_mitoses(d2, mask, 100.0, 3000, 4000, 0.25);
  CHECK(r2.raw_count == 2);
  CHECK(r2.scaled);
  CHECK(r2.scale == doctest::Approx(5267.0 * 5267.0 / 2e6));
  CHECK(r2.count == static_cast<int>(std::llround(2 * r2.scale)));
  CHECK(r2.count == 28);
  CHECK(r2.score == 3);
  CHECK(r2.ci95_high == doctest::Approx(7.2247 * r2.scale).epsilon(1e-3));
}

TEST_CASE("bounds keep the window on the slide") {
  // A 2000 x 2000 px mask whose last cells reach past a 1950 x 1990 px slide.
  cv::Mat mask(20, 20, CV_8U, cv::Scalar(1));
  std::vector<MitosisDetection> d{{100, 100, 1}, {1960, 1000, 1}, {1000, 1995, 1}};
  const auto r = count_mitoses(d, mask, 100.0, 0, 0, 0.25, {}, Rect64{0, 0, 1950, 1990});
  CHECK(r.window == Rect64{0, 0, 1950, 1990});
  CHECK(r.raw_count == 1);
  CHECK(r.scale == doctest::Approx(5267.0 * 5267.0 / (1950.0 * 1990.0)));
  // With a large window-sized region, bounds clip the search range.
  cv::Mat big(100, 100, CV_8U, cv::Scalar(1));
  std::vector<MitosisDetection> e;
  for (int k = 0; k < 5; ++k) e.push_back({9950.0 + k, 5000.0 + k, 1});  // beyond the 9900-px bound
  for (int k = 0; k < 3; ++k) e.push_back({1000.0 + k, 1000.0 + k, 1});
  const auto r2 = count_mitoses(e, big, 100.0, 0, 0, 0.25, {}, Rect64{0, 0, 9900, 10000});
  CHECK(r2.raw_count == 3);
  CHECK(r2.window.x + r2.window.width <= 9900);
  const auto r3 = count_mitoses(e, big, 100.0, 0, 0, 0.25);
  CHECK(r3.raw_count == 5);
}

TEST_CASE("empty region and bad arguments") {
  cv::Mat mask(10, 10, CV_8U, cv::Scalar(0));
  const auto r = count_mitoses({{5, 5, 1}}, mask, 10.0, 0, 0, 0.25);
  CHECK(r.count == 0);
  CHECK(r.window.width == 0);
  CHECK(r.region_area_mm2 == 0.0);
  CHECK_THROWS_AS(count_mitoses({}, cv::Mat(), 1.0, 0, 0, 0.25), Error);
  CHECK_THROWS_AS(count_mitoses({}, cv::Mat(4, 4, CV_32F), 1.0, 0, 0, 0.25), Error);
  CHECK_THROWS_AS(count_mitoses({}, mask, 0.0, 0, 0, 0.25), Error);
  CHECK_THROWS_AS(count_mitoses({}, mask, 1.0, 0, 0, -1.0), Error);
  HpfParams bad;
  bad.hpf_area_mm2 = 0;
  CHECK_THROWS_AS(count_mitoses({}, mask, 1.0, 0, 0, 0.25, bad), Error);
}

TEST_CASE("matches a brute-force reference on random sets") {
  // Coarse mpp so the window is small (side 13 px at 100 um/px) and brute force is cheap.
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    CAPTURE(trial);
    const double mpp0 = std::uniform_real_distribution<double>(60.0, 160.0)(rng);
    const int mw = std::uniform_int_distribution<int>(2, 14)(rng), mh = std::uniform_int_distribution<int>(2, 14)(rng);
    const double ds = std::uniform_int_distribution<int>(0, 1)(rng) ? 4.0 : 2.5;
    const std::int64_t x0 = std::uniform_int_distribution<int>(0, 30)(rng), y0 = std::uniform_int_distribution<int>(0, 30)(rng);
    cv::Mat mask(mh, mw, CV_8U);
    const double density = std::uniform_real_distribution<double>(0.05, 1.0)(rng);
    for (int i = 0; i < mh; ++i)
      for (int j = 0; j < mw; ++j) mask.at<uchar>(i, j) = std::bernoulli_distribution(density)(rng) ? 1 : 0;
    if (cv::countNonZero(mask) == 0) mask.at<uchar>(0, 0) = 1;
    std::vector<MitosisDetection> d;
    const int n = std::uniform_int_distribution<int>(0, 60)(rng);
    for (int k = 0; k < n; ++k) {
      // Some on integer coordinates (edges), some clustered.
      double x = std::uniform_real_distribution<double>(x0 - 3.0, x0 + mw * ds + 3.0)(rng);
      double y = std::uniform_real_distribution<double>(y0 - 3.0, y0 + mh * ds + 3.0)(rng);
      if (k % 3 == 0) {
        x = std::round(x);
        y = std::round(y);
      }
      d.push_back({x, y, 0.8});
    }
    const HpfParams hpf;
    const auto fast = count_mitoses(d, mask, ds, x0, y0, mpp0, hpf);
    const auto ref = brute_force(d, mask, ds, x0, y0, mpp0, hpf);
    CHECK(fast.raw_count == ref.raw_count);
    CHECK(fast.window == ref.window);
    CHECK(fast.total_detected == ref.total_detected);
  }
}

TEST_CASE("independent of detection order; fast on 1e5 detections") {
  std::mt19937 rng(7);
  // A 60000 x 50000 px slide at 0.25 um/px (15 x 12.5 mm), elliptic tumour mask at ds = 32.
  cv::Mat mask(1563, 1875, CV_8U, cv::Scalar(0));
  cv::ellipse(mask, cv::Point(937, 781), cv::Size(850, 700), 0, 0, 360, cv::Scalar(255), -1);
  std::vector<MitosisDetection> d;
  std::uniform_real_distribution<double> ux(0, 60000), uy(0, 50000);
  for (int k = 0; k < 100000; ++k) d.push_back({ux(rng), uy(rng), 0.7});
  for (int k = 0; k < 300; ++k)  // a hotspot
    d.push_back({std::normal_distribution<double>(20000, 1500)(rng), std::normal_distribution<double>(30000, 1500)(rng), 0.9});
  const auto t0 = std::chrono::steady_clock::now();
  const auto a = count_mitoses(d, mask, 32.0, 0, 0, 0.25);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("1e5 detections: " << seconds << " s, count " << a.count << " at (" << a.window.x << ", " << a.window.y << ")");
  CHECK(seconds < 2.0);
  std::shuffle(d.begin(), d.end(), rng);
  const auto b = count_mitoses(d, mask, 32.0, 0, 0, 0.25);
  CHECK(a.count == b.count);
  CHECK(a.window == b.window);
  // The best window holds the 300-figure cluster (plus ~900 background detections per window area).
  CHECK(a.window.x < 20000);
  CHECK(a.window.x + a.window.width > 20000);
  CHECK(a.window.y < 30000);
  CHECK(a.window.y + a.window.height > 30000);
}

#include <fstream>

#include <nlohmann/json.hpp>

#include "grade/synth.hpp"
#include "test_support.hpp"

TEST_CASE("grade-synth truth: the count over the whole slide equals the truth's brute-force hotspot") {
  // The synthetic slide's truth mitoses as detections and the whole slide as the region: the same definition as
  // grade-synth's brute force, so the same count (the window may differ among equal-count ties: the synth's brute force
  // tries a subset of positions, so its tie-break is not always the smallest (y, x)).
  grade::test::TempDir t("grade-count-synth");
  for (std::uint64_t seed : {3u, 4u}) {
    CAPTURE(seed);
    SynthParams p;
    p.width_px = 7000;
    p.height_px = 6000;
    p.seed = seed;
    p.hotspot_mitoses_per_10hpf = seed == 3 ? 60.0 : 15.0;
    p.background_mitoses_per_10hpf = seed == 3 ? 12.0 : 6.0;
    const auto summary = synthesize_slide(p, t / "s.tiff", t / "s.json");
    std::ifstream in(t / "s.json");
    const auto truth = nlohmann::json::parse(in);
    std::vector<MitosisDetection> d;
    for (const auto& m : truth.at("mitoses")) d.push_back({m.at("x").get<double>(), m.at("y").get<double>(), 1.0});
    const double ds = 8.0;
    cv::Mat all(static_cast<int>(std::ceil(p.height_px / ds)), static_cast<int>(std::ceil(p.width_px / ds)), CV_8U,
                cv::Scalar(1));
    // The mask must not reach beyond the slide: 7000 and 6000 are multiples of 8.
    const auto r = count_mitoses(d, all, ds, 0, 0, p.mpp);
    CHECK(r.count == truth.at("hotspot").at("count").get<int>());
    CHECK(r.count == summary.hotspot_count);
    CHECK(r.total_detected == static_cast<int>(d.size()));
    CHECK(r.window.width == truth.at("hotspot").at("window").at("width").get<std::int64_t>());
    CHECK(r.score == truth.at("mitosis_score").get<int>());
    MESSAGE("seed " << seed << ": " << d.size() << " mitoses, hotspot count " << r.count << " at (" << r.window.x << ", "
                    << r.window.y << "), truth at (" << truth.at("hotspot").at("window").at("x") << ", "
                    << truth.at("hotspot").at("window").at("y") << ")");
  }
}

TEST_CASE("grade-synth truth: the count over the tissue region is within 20 % (or 2) of the truth's hotspot") {
  // Region = the truth's tissue outline rasterised at 16 px per cell; window centres must lie on tissue, so the count
  // may be a little lower than the slide-wide brute force, never higher.
  grade::test::TempDir t("grade-count-tissue");
  for (std::uint64_t seed : {11u, 12u}) {
    CAPTURE(seed);
    SynthParams p;
    p.width_px = 6400;
    p.height_px = 6400;
    p.mpp = 0.5;  // 3.2 x 3.2 mm: larger than the 1.32 mm window
    p.seed = seed;
    p.hotspot_mitoses_per_10hpf = seed == 11 ? 30.0 : 14.0;
    p.background_mitoses_per_10hpf = 3.0;
    synthesize_slide(p, t / "s.tiff", t / "s.json");
    std::ifstream in(t / "s.json");
    const auto truth = nlohmann::json::parse(in);
    const double ds = 16.0;
    cv::Mat tissue(static_cast<int>(p.height_px / 16), static_cast<int>(p.width_px / 16), CV_8U, cv::Scalar(0));
    std::vector<std::vector<cv::Point>> polys;
    for (const auto& poly : truth.at("tissue_polygons")) {
      std::vector<cv::Point> ring;
      for (const auto& pt : poly)
        ring.emplace_back(static_cast<int>(std::lround(pt.at(0).get<double>() / ds)),
                          static_cast<int>(std::lround(pt.at(1).get<double>() / ds)));
      polys.push_back(ring);
    }
    cv::fillPoly(tissue, polys, cv::Scalar(255));
    std::vector<MitosisDetection> d;
    for (const auto& m : truth.at("mitoses")) d.push_back({m.at("x").get<double>(), m.at("y").get<double>(), 1.0});
    const auto r = count_mitoses(d, tissue, ds, 0, 0, p.mpp, {}, Rect64{0, 0, p.width_px, p.height_px});
    const int want = truth.at("hotspot").at("count").get<int>();
    MESSAGE("seed " << seed << ": " << d.size() << " mitoses, " << r.total_detected << " on the mask; count " << r.count
                    << " (truth " << want << "), scaled " << r.scaled);
    CHECK(!r.scaled);
    CHECK(r.count <= want);
    CHECK(std::abs(r.count - want) <= std::max(2.0, 0.2 * want));
    const bool near_cutoff = (want >= 8 && want <= 11) || (want >= 18 && want <= 22);
    if (!near_cutoff) CHECK(r.score == truth.at("mitosis_score").get<int>());
  }
}
