// Mitosis detector quality on ../shared/data, held-out source images only (the split of
// tools/train/train_mitosis.py), with the metric of ../shared/eval/eval_mitosis.py. The bounds are what
// benchmarks/bench_mitosis_quality measured (benchmarks/README.md, "Mitosis") with a small margin: the test fails when
// the detector gets worse, not when it misses the targets (see the README).
// Measured (screen + main network, screen threshold 0.4, the verifier -- two networks averaged, since the eighth
// session -- on candidates the main network scores >= 0.5, threshold 0.9, candidates at the centroid of their dark
// mass, a detection that suppressed another >= 0.9 reported at their midpoint, then moved by the locator network):
// recall 0.859, 0 FP/mm^2 (no false positive in 0.386 mm^2), atypical recall 0.782, nucleus images 3.0 detections/mm^2
// (2 in 0.66 mm^2 inside eval_mitosis.py's 2 um border; 2.8 over the whole images); best recall at <= 3 FP/mm^2 over the
// thresholds >= 0.9 0.859 (over all thresholds, bench_mitosis_quality: 0.906). (One verifier, seventh session: 0.855,
// 0, 0.769, 1 nucleus-image detection, 0.855. Before the verifier, screen 0.3: 0.789, 0, 0.769, 1, 0.789 (0.920,
// partly because the locator pushes edge detections into the metric's ignored border; README); before the locator:
// 0.791, 0, 0.782, 1, 0.791 (0.871); without the midpoints: 0.787, 5.2, 0.769, 1, 0.602; at the peaks: 0.735, 10.4,
// 0.692, 1, 0.602.) One false positive here is 2.6 FP/mm^2 and one nucleus-image detection 1.5 per mm^2: the FP bound
// allows one, the nucleus bound one detection more than measured (so it is above the 3 per mm^2, which is
// judged on the cross-validated 3.1 mm^2 of nucleus images, not on this quarter). The cross-validated numbers (all
// four quarters) are in the README.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/mitosis.hpp"
#include "mitosis_eval.hpp"
#include "test_support.hpp"

namespace me = grade::detail::mitosis_eval;

namespace {

cv::Mat load_rgb(const std::string& path) {
  cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR), rgb;
  REQUIRE(!bgr.empty());
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

}  // namespace

TEST_CASE("held-out AMi-Br patches and nucleus images: recall, FP/mm^2, detections/mm^2 at the operating threshold") {
  const auto data = grade::test::shared_data_or_skip("mitosis quality needs mitosis/amibr and nuclei/");
  const auto images = me::list_images(data);
  const grade::MitosisParams params;  // the documented operating threshold
  std::vector<const me::DevImage*> patches;
  std::vector<cv::Size> sizes;
  std::vector<me::Det> dets;
  me::OpenImages nuclei;
  for (const auto& d : images) {
    if (!d.held_out) continue;
    const cv::Mat rgb = load_rgb(d.path);
    const auto found = grade::detect_mitoses(grade::make_view(rgb, d.mpp), params);
    if (d.set == "amibr") {
      for (const auto& k : found) dets.push_back({patches.size(), k.x, k.y, k.score});
      patches.push_back(&d);
      sizes.push_back(rgb.size());
    } else {
      nuclei.add(rgb.size(), d.mpp, found);
    }
  }
  REQUIRE(patches.size() > 400);
  const auto e = me::evaluate_patches(patches, sizes, dets);
  const auto p = e.at(params.threshold);
  const double atypical = e.recall_of("class", "atypical", params.threshold);
  const double nuclei_rate = nuclei.rate(params.threshold);
  std::printf("held-out: %zu patches, %d figures: recall %.3f, FP/mm^2 %.2f, atypical recall %.3f; nucleus images "
              "%.3f mm^2 inside the 2 um border: %.2f detections/mm^2 (whole images %.2f)\n",
              patches.size(), e.n_gt, p.recall, p.fp_per_mm2, atypical, nuclei.area_mm2, nuclei_rate,
              nuclei.whole_rate(params.threshold));
  double recall_at_3 = 0.0;  // the operating point: the best recall with at most 3 FP/mm^2
  for (const auto& c : e.curve)
    if (c.fp_per_mm2 <= 3.0) recall_at_3 = std::max(recall_at_3, c.recall);
  std::printf("best recall at <= 3 FP/mm^2: %.3f\n", recall_at_3);
  CHECK(p.recall >= 0.83);
  CHECK(p.fp_per_mm2 <= 3.0);
  CHECK(atypical >= 0.75);
  CHECK(nuclei_rate <= 4.6);  // 3 detections: 4.5 per mm^2
  CHECK(recall_at_3 >= 0.83);
}

TEST_CASE("a telophase is one detection at its centre, between the two daughter masses") {
  const auto data = grade::test::shared_data_or_skip("needs mitosis/amibr");
  // TUPAC16_1314 (held out): a telophase annotated at the patch centre (64, 64); its daughter masses lie ~15 um apart,
  // around (40, 50) and (88, 86). Both score > 0.9; NMS keeps one.
  const cv::Mat rgb = load_rgb((data / "mitosis" / "amibr" / "patches" / "TUPAC16_1314.png").string());
  const grade::ImageView view = grade::make_view(rgb, 0.25);
  grade::MitosisParams params;
  auto found = grade::detect_mitoses(view, params);
  REQUIRE(found.size() == 1);
  CHECK(std::hypot(found[0].x - 64.0, found[0].y - 64.0) < 10.0);
  params.midpoint_min_score = 0.0;
  params.locate = false;  // at its own candidate: the lower-right mass, outside the 30 px match radius
  found = grade::detect_mitoses(view, params);
  REQUIRE(found.size() == 1);
  CHECK(std::hypot(found[0].x - 64.0, found[0].y - 64.0) > 30.0);
}

TEST_CASE("the locator moves marks 7 um off a held-out figure back onto it") {
  const auto data = grade::test::shared_data_or_skip("needs mitosis/amibr");
  // Every held-out AMi-Br figure, from four start points 28 px (7 um) away (right, below, left, above): the distance
  // after locate_mitoses, against the 30 px match radius of eval_mitosis.py and a tighter 12 px (3 um).
  int n = 0, within30 = 0, within12 = 0;
  for (const auto& d : me::list_images(data)) {
    if (!d.held_out || d.set != "amibr") continue;
    const cv::Mat rgb = load_rgb(d.path);
    const grade::ImageView view = grade::make_view(rgb, d.mpp);
    for (const auto& f : d.figures) {
      std::vector<grade::MitosisDetection> marks;
      for (int k = 0; k < 4; ++k)
        marks.push_back({f.x + 28.0 * std::cos(k * M_PI / 2), f.y + 28.0 * std::sin(k * M_PI / 2), 1.0});
      const auto before = marks;
      grade::MitosisParams off;
      off.locate = false;
      grade::locate_mitoses(view, marks, off);
      CHECK(marks[0].x == before[0].x);
      grade::locate_mitoses(view, marks);
      for (const auto& m : marks) {
        const double e = std::hypot(m.x - f.x, m.y - f.y);
        ++n;
        within30 += e <= 30.0;
        within12 += e <= 12.0;
      }
    }
  }
  REQUIRE(n > 1500);
  std::printf("locator, %d starts 28 px from held-out figures: %.3f end within 30 px, %.3f within 12 px\n", n,
              static_cast<double>(within30) / n, static_cast<double>(within12) / n);
  // Measured: 0.990 and 0.935 (without the locator: 1.0 and 0).
  CHECK(within30 >= 0.97 * n);
  CHECK(within12 >= 0.90 * n);
}
