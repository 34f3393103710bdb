// Mitosis detection throughput, per core (OpenCV limited to one thread), in level-0 megapixels per second at
// 0.25 um/px, over tiles of 2048 px + 128 px margins as grade-inspect and the pipeline read them.
//
//   bench_mitosis_speed                 a 4096 x 4096 mosaic of AMi-Br patches (dense, mitotically active breast
//                                       tumour: a worst case for the number of candidates)
//   bench_mitosis_speed --slide S.tiff  a whole slide (e.g. from grade-synth): every tile whose core holds tissue
//                                       (detect_tissue on a 16 um/px thumbnail, as the pipeline finds it), read at
//                                       0.25 um/px; MP/s counts the cores of those tiles, glass tiles are skipped
//   --screen-threshold T, --candidate-min-od OD, --candidate-separation-um UM, --candidate-centroid-um UM
//                                       other stage parameters (default: MitosisParams's)
//   --model MAIN.onnx [--screen SCREEN.onnx]   other networks than the embedded ones (then without a locator or
//                                               verifier)
//   --no-locate                                 without stage 3, the locator
//   --verify-from P                             the verifier on candidates the main network scores >= P (1 = never)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>

#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/mitosis.hpp"
#include "grade/slide.hpp"
#include "grade/tissue.hpp"
#include "mitosis_eval.hpp"

namespace me = grade::detail::mitosis_eval;
using clk = std::chrono::steady_clock;

static double secs(clk::time_point a) { return std::chrono::duration<double>(clk::now() - a).count(); }
// CPU time of this thread: the machine may be shared, and OpenCV is limited to this one thread, so this is the cost
// per core whatever else runs.
static double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
  cv::setNumThreads(1);
  std::string slide_path;
  grade::MitosisParams params;
  std::string model_path, screen_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--slide" && i + 1 < argc) slide_path = argv[++i];
    else if (a == "--screen-threshold" && i + 1 < argc) params.screen_threshold = std::stod(argv[++i]);
    else if (a == "--candidate-min-od" && i + 1 < argc) params.candidate_min_od = std::stod(argv[++i]);
    else if (a == "--candidate-separation-um" && i + 1 < argc) params.candidate_separation_um = std::stod(argv[++i]);
    else if (a == "--candidate-centroid-um" && i + 1 < argc) params.candidate_centroid_um = std::stod(argv[++i]);
    else if (a == "--model" && i + 1 < argc) model_path = argv[++i];
    else if (a == "--screen" && i + 1 < argc) screen_path = argv[++i];
    else if (a == "--no-locate") params.locate = false;
    else if (a == "--verify-from" && i + 1 < argc) params.verify_from = std::stod(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_mitosis_speed [--slide S.tiff] [--screen-threshold T] [--candidate-min-od OD] "
                           "[--candidate-separation-um UM] [--candidate-centroid-um UM] "
                           "[--model MAIN.onnx [--screen SCREEN.onnx]] [--no-locate] [--verify-from P]\n");
      return 2;
    }
  }
  // Load once, outside the timing.
  if (!model_path.empty()) params.model = me::load_model(model_path, screen_path);
  else grade::MitosisModel::embedded();

  double t_read = 0, t_cand = 0, t_det = 0, c_cand = 0, c_det = 0, mp = 0, mm2 = 0;
  size_t n_cand = 0, n_det = 0, n_main = 0;
  // `core`: the tile's level-0 core, whose detections are wanted (the rest of `v` is context, as in the pipeline).
  auto run_tile = [&](const grade::ImageView& v, const grade::Rect64& core) {
    const double core_mp = static_cast<double>(core.width * core.height) * 1e-6;
    params.region = core;
    auto t = clk::now();
    double c = cpu_now();
    const auto candidates = grade::find_mitosis_candidates(v, params);
    n_cand += candidates.size();
    t_cand += secs(t);
    c_cand += cpu_now() - c;
    t = clk::now();
    c = cpu_now();
    n_det += grade::detect_mitoses(v, params).size();
    t_det += secs(t);
    c_det += cpu_now() - c;
    mp += core_mp;
    // Not timed: how many candidates the screen passes to the main network (they are the ones scored above 0).
    const auto scores = grade::score_mitosis_candidates(v, candidates, params);
    n_main += static_cast<size_t>(std::count_if(scores.begin(), scores.end(), [](double s) { return s > 0.0; }));
  };
  if (slide_path.empty()) {
    const auto images = me::list_images(GRADE_SHARED_DATA);
    std::vector<const me::DevImage*> amibr;
    for (const auto& d : images)
      if (d.set == "amibr") amibr.push_back(&d);
    std::mt19937 rng(1);
    cv::Mat mosaic(4096, 4096, CV_8UC3);
    for (int y = 0; y < 4096; y += 128)
      for (int x = 0; x < 4096; x += 128) {
        cv::Mat bgr = cv::imread(amibr[rng() % amibr.size()]->path), rgb;
        cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
        rgb.copyTo(mosaic(cv::Rect(x, y, 128, 128)));
      }
    for (int ty = 0; ty < 4096; ty += 2048)
      for (int tx = 0; tx < 4096; tx += 2048) {
        const int x0 = std::max(0, tx - 128), y0 = std::max(0, ty - 128);
        const int x1 = std::min(4096, tx + 2048 + 128), y1 = std::min(4096, ty + 2048 + 128);
        grade::ImageView v = grade::make_view(mosaic(cv::Rect(x0, y0, x1 - x0, y1 - y0)).clone(), 0.25);
        v.x0 = x0;
        v.y0 = y0;
        run_tile(v, {tx, ty, 2048, 2048});
      }
    mm2 = mp * 1e6 * 0.25 * 0.25 * 1e-6;
    std::printf("input: 4096x4096 mosaic of random AMi-Br patches at 0.25 um/px (%.2f mm^2)\n", mm2);
  } else {
    const auto slide = grade::Slide::open(slide_path);
    const double mpp0 = slide.require_mpp();
    const double target = std::max(0.25, mpp0);
    const grade::ImageView thumb = slide.read_thumbnail(16.0);
    const grade::TissueMask tissue = grade::detect_tissue(thumb);
    auto has_tissue = [&](std::int64_t x0, std::int64_t y0, std::int64_t x1, std::int64_t y1) {
      const int a = std::clamp(static_cast<int>(x0 / tissue.downsample), 0, tissue.mask.cols - 1);
      const int b = std::clamp(static_cast<int>(y0 / tissue.downsample), 0, tissue.mask.rows - 1);
      const int c = std::clamp(static_cast<int>(std::ceil(x1 / tissue.downsample)), a + 1, tissue.mask.cols);
      const int d = std::clamp(static_cast<int>(std::ceil(y1 / tissue.downsample)), b + 1, tissue.mask.rows);
      return cv::countNonZero(tissue.mask(cv::Range(b, d), cv::Range(a, c))) > 0;
    };
    const auto core = static_cast<std::int64_t>(std::llround(2048 * target / mpp0));
    const auto margin = static_cast<std::int64_t>(std::llround(128 * target / mpp0));
    for (std::int64_t y = 0; y < slide.height(); y += core)
      for (std::int64_t x = 0; x < slide.width(); x += core) {
        if (!has_tissue(x, y, std::min(slide.width(), x + core), std::min(slide.height(), y + core))) continue;
        const std::int64_t x0 = std::max<std::int64_t>(0, x - margin), y0 = std::max<std::int64_t>(0, y - margin);
        const std::int64_t x1 = std::min(slide.width(), x + core + margin), y1 = std::min(slide.height(), y + core + margin);
        auto t = clk::now();
        const auto v = slide.read_region_at_mpp({x0, y0, x1 - x0, y1 - y0}, target);
        t_read += secs(t);
        run_tile(v, {x, y, std::min(core, slide.width() - x), std::min(core, slide.height() - y)});
      }
    mm2 = mp * 1e6 * mpp0 * mpp0 * 1e-6;
    std::printf("input: %s, %lldx%lld at %.3f um/px: the tissue tiles (%.2f mm^2 of cores; tissue %.2f mm^2), read at "
                "%.3f um/px in %.1f s (not counted below)\n",
                slide_path.c_str(), static_cast<long long>(slide.width()), static_cast<long long>(slide.height()), mpp0,
                mm2, tissue.area_mm2, target, t_read);
  }
  std::printf("stage 1 (candidates) alone: %.2f s CPU (%.1f s wall), %.1f MP/s per core, %.0f candidates/mm^2\n",
              c_cand, t_cand, mp / c_cand, n_cand / mm2);
  std::printf("screen (threshold %.3f) passed %.1f %% of the candidates to the main network\n", params.screen_threshold,
              n_cand ? 100.0 * n_main / n_cand : 0.0);
  std::printf("detect_mitoses (candidates + classifier + NMS): %.2f s CPU (%.1f s wall), %.1f MP/s per core of level-0 "
              "pixels, %.1f detections/mm^2 at threshold %.3f\n",
              c_det, t_det, mp / c_det, n_det / mm2, params.threshold);
  return 0;
}
