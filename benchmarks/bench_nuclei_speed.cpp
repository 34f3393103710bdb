// Throughput of tissue + stain + nuclei at 0.5 um/px, with 1 and 2 worker threads (OpenCV's own threads off), the way
// the pipeline runs them: tissue mask on a thumbnail, Macenko on the tissue, then segment_nuclei on tiles
// (1024x1024, the pipeline's 512 um tile core, and the partial tiles at the right and bottom edges; tiles with no
// tissue are skipped, as the pipeline does). Pixels are counted over the tiles processed at 0.5 um/px. Reading the
// slide is not timed, neither the tiles nor the thumbnail (decoding is issue 6's budget: bench_slide_read,
// bench_grade_slide); the thumbnail read is printed apart (on this single-level slide it decodes all of it, which a
// real slide's pyramid avoids). Both wall-clock and CPU time are reported (medians over the repetitions): on a loaded
// machine only the CPU time says what one core does. The tiles' CPU time (segment_nuclei) is also reported alone.
//
// Each worker thread runs the first tile once before its CPU clock starts (the wall clock includes it): that first
// use costs extra CPU (up to ~0.4 s here, mostly with 2 threads: network buffers, the thread's fresh heap), once per
// worker per slide, which this 6-tile sample would overweight against a slide of a few hundred tiles; --cold counts it.
//
// The allocator is tuned as the tools tune it (grade::tune_allocator); --default-malloc leaves glibc's defaults, to
// measure what that is worth.
//
// usage: bench_nuclei_speed [SLIDE] [--mpp X] [--repeat N] [--cold] [--default-malloc] [--model FILE.onnx]
//                           [--contact W] [--otol T] [--flips N] [--network fast|accurate]
//                           [--tile PX] [--engine best|avx2|opencv|all]
//   SLIDE defaults to ../shared/data/wsi/cmu-1-small-region.svs; --model times another network than the embedded ones
//   (a per-thread copy); --contact / --otol / --flips / --network / --tile set NucleiParams::contact_weight /
//   offset_merge_tolerance / flips / network (which embedded network) / tile_px; --engine: which implementation runs
//   the network (grade::detail::NucleiEngine): libgrade's own kernels with the CPU's best instruction set, with AVX2,
//   OpenCV dnn, or each of these in turn (all, the default), with their ratios to OpenCV dnn.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "grade/allocator.hpp"
#include "grade/nuclei.hpp"
#include "grade/slide.hpp"
#include "grade/stain.hpp"
#include "grade/tissue.hpp"

namespace {
// CPU time of the calling thread: on a shared machine the wall clock also counts other processes' time slices, the
// thread CPU time does not, so MP per CPU-second is the per-core throughput.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The slide's tiles at the working resolution and what to run on them.
struct Setup {
  const grade::Slide* slide = nullptr;
  grade::ImageView whole;                 // the whole slide at 0.5 um/px
  std::vector<grade::ImageView> tiles;    // its 1024 px tiles
  grade::NucleiParams base;               // the nucleus settings given
  std::vector<unsigned char> model;       // empty: the embedded network
  bool cold = false;                      // count each worker's first use
};

// One repetition's clocks and counts.
struct Run {
  double wall = 0, cpu = 0, tiles_cpu = 0, thumb_cpu = 0;
  std::int64_t px = 0;
  std::size_t kept = 0, nuclei = 0;
};

// One timed run as the pipeline does it: tissue and stains on the slide (one thread), then segment_nuclei on the
// tissue tiles by `threads` workers, each running the network on `engine`.
Run run_once(const Setup& s, int threads, grade::detail::NucleiEngine engine) {
  Run run;
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = thread_cpu_seconds();
  // Tissue and stains (once per slide), on a thumbnail / a 2 um/px view.
  const double r0 = thread_cpu_seconds();
  const grade::ImageView thumb = s.slide->read_thumbnail(8.0);
  run.thumb_cpu = thread_cpu_seconds() - r0;
  const grade::TissueMask tissue = grade::detect_tissue(thumb);
  cv::Mat tm;
  cv::resize(tissue.mask, tm, s.whole.rgb.size(), 0, 0, cv::INTER_NEAREST);
  grade::ImageView small = s.whole;
  cv::resize(s.whole.rgb, small.rgb, cv::Size(), 0.25, 0.25, cv::INTER_AREA);
  cv::Mat sm;
  cv::resize(tm, sm, small.rgb.size(), 0, 0, cv::INTER_NEAREST);
  const grade::StainEstimate stains = grade::estimate_stains(small, {}, sm);
  grade::NucleiParams np = s.base;
  np.stains = stains.vectors;
  const auto& tiles = s.tiles;
  std::vector<char> use(tiles.size(), 0);
  for (std::size_t i = 0; i < tiles.size(); ++i) {
    const int x = static_cast<int>((tiles[i].x0 - s.whole.x0) / s.whole.downsample),
              y = static_cast<int>((tiles[i].y0 - s.whole.y0) / s.whole.downsample);
    use[i] = cv::countNonZero(tm(cv::Rect(x, y, tiles[i].rgb.cols, tiles[i].rgb.rows))) > 0;
  }
  std::atomic<double> cpu{thread_cpu_seconds() - c0 - run.thumb_cpu}, tiles_cpu{0.0};
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> count{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      // The worker's first use, off the CPU clock unless --cold (see the top of the file).
      if (!s.model.empty()) grade::detail::set_thread_nuclei_model(s.model);
      grade::detail::set_thread_nuclei_engine(engine);
      if (!s.cold) grade::segment_nuclei(tiles[0], np);
      const double w0 = thread_cpu_seconds();
      for (std::size_t i; (i = next.fetch_add(1)) < tiles.size();)
        if (use[i]) count += grade::segment_nuclei(tiles[i], np).nuclei.size();
      const double used = thread_cpu_seconds() - w0;
      for (double c = cpu.load(); !cpu.compare_exchange_weak(c, c + used);) {
      }
      for (double c = tiles_cpu.load(); !tiles_cpu.compare_exchange_weak(c, c + used);) {
      }
    });
  for (auto& t : pool) t.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.wall = wall - run.thumb_cpu;  // the read is single-threaded: its CPU time is its wall time
  run.cpu = cpu.load();
  run.tiles_cpu = tiles_cpu.load();
  for (std::size_t i = 0; i < tiles.size(); ++i)
    if (use[i]) {
      ++run.kept;
      run.px += static_cast<std::int64_t>(tiles[i].rgb.total());
    }
  run.nuclei = count;
  return run;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  std::string path = std::string(GRADE_SHARED_DATA) + "/wsi/cmu-1-small-region.svs";
  double mpp = 0.0;
  int repeat = 5;
  bool default_malloc = false;
  std::string engine = "all";
  Setup setup;
  grade::NucleiParams& base = setup.base;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mpp" && i + 1 < argc) mpp = std::stod(argv[++i]);
    else if (a == "--repeat" && i + 1 < argc) repeat = std::stoi(argv[++i]);
    else if (a == "--cold") setup.cold = true;
    else if (a == "--default-malloc") default_malloc = true;
    else if (a == "--engine" && i + 1 < argc) {
      engine = argv[++i];
      if (engine != "best" && engine != "avx2" && engine != "opencv" && engine != "all") {
        std::fprintf(stderr, "bench_nuclei_speed: --engine must be best, avx2, opencv or all, got %s\n",
                     engine.c_str());
        return 2;
      }
    }
    else if (a == "--contact" && i + 1 < argc) base.contact_weight = std::stod(argv[++i]);
    else if (a == "--otol" && i + 1 < argc) base.offset_merge_tolerance = std::stod(argv[++i]);
    else if (a == "--flips" && i + 1 < argc) base.flips = std::stoi(argv[++i]);
    else if (a == "--tile" && i + 1 < argc) base.tile_px = std::stoi(argv[++i]);
    else if (a == "--network" && i + 1 < argc) {
      if (!grade::parse_nuclei_network(argv[++i], &base.network)) {
        std::fprintf(stderr, "bench_nuclei_speed: --network must be fast or accurate, got %s\n", argv[i]);
        return 2;
      }
    }
    else if (a == "--model" && i + 1 < argc) {
      std::ifstream in(argv[++i], std::ios::binary);
      if (!in) {
        std::fprintf(stderr, "bench_nuclei_speed: cannot read %s\n", argv[i]);
        return 2;
      }
      setup.model.assign(std::istreambuf_iterator<char>(in), {});
    } else path = a;
  }
  cv::setNumThreads(1);
  if (!default_malloc && !grade::tune_allocator()) {
    std::fprintf(stderr, "bench_nuclei_speed: grade::tune_allocator() failed (not glibc?)\n");
    return 2;
  }
  grade::SlideOpenParams op;
  op.mpp_override = mpp;
  const grade::Slide slide = grade::Slide::open(path, op);
  const double work_mpp = 0.5;
  // Tiles at 0.5 um/px, read once up front.
  setup.slide = &slide;
  setup.whole = slide.read_region_at_mpp({0, 0, slide.width(), slide.height()}, work_mpp);
  const grade::ImageView& whole = setup.whole;
  const int T = 1024;  // the pipeline's tile core (PipelineParams::tile_um = 512 um at 0.5 um/px)
  std::vector<grade::ImageView>& tiles = setup.tiles;
  for (int y = 0; y < whole.rgb.rows; y += T)
    for (int x = 0; x < whole.rgb.cols; x += T) {
      grade::ImageView v = whole;
      v.rgb = whole.rgb(cv::Rect(x, y, std::min(T, whole.rgb.cols - x), std::min(T, whole.rgb.rows - y))).clone();
      v.x0 = whole.x0 + static_cast<std::int64_t>(x * whole.downsample);
      v.y0 = whole.y0 + static_cast<std::int64_t>(y * whole.downsample);
      tiles.push_back(v);
    }
  std::printf("%s: %zu tiles of up to %dx%d at %.2f um/px; allocator %s\n", path.c_str(), tiles.size(), T, T, work_mpp,
              default_malloc ? "glibc defaults" : "tuned (grade::tune_allocator)");
  // Which implementations run the network: libgrade's own kernels with the CPU's best instruction set, with AVX2 (where
  // that best is AVX-512), and OpenCV dnn, in the same run, so that their ratios do not depend on what else the machine
  // is doing that hour.
  using grade::detail::NucleiEngine;
  if (!setup.model.empty()) grade::detail::set_thread_nuclei_model(setup.model);
  std::vector<std::pair<NucleiEngine, std::string>> engines;
  for (auto [e, name] : {std::pair{NucleiEngine::best, "best"}, {NucleiEngine::avx2, "avx2"},
                         {NucleiEngine::opencv, "opencv"}}) {
    grade::detail::set_thread_nuclei_engine(e);
    const std::string what = grade::detail::nuclei_engine_name(base.network);
    const bool seen = std::any_of(engines.begin(), engines.end(), [&](const auto& x) { return x.second == what; });
    if ((engine == "all" && !seen) || engine == name) engines.emplace_back(e, what);
  }
  grade::detail::set_thread_nuclei_engine(NucleiEngine::best);
  std::vector<std::pair<double, double>> per_cpu_second;  // (1 thread, 2 threads) per engine
  for (const auto& [which, name] : engines) {
    std::printf("network: %s\n", name.c_str());
    per_cpu_second.emplace_back();
    for (int threads : {1, 2}) {
      std::vector<double> walls, cpus, tiles_cpus, thumb_cpus;
      Run last;
      for (int r = 0; r < repeat; ++r) {
        last = run_once(setup, threads, which);
        walls.push_back(last.wall);
        cpus.push_back(last.cpu);
        tiles_cpus.push_back(last.tiles_cpu);
        thumb_cpus.push_back(last.thumb_cpu);
      }
      const double wall = median(walls), cpu = median(cpus), tiles_cpu = median(tiles_cpus);
      const std::int64_t px = last.px;
      const double mps = static_cast<double>(px) / 1e6 / wall;
      std::printf("threads %d: %zu tissue tiles, %zu nuclei, wall %.2f s (%.2f MP/s, %.2f per thread), CPU %.2f s: "
                  "%.2f MP per CPU-second (per core); segment_nuclei alone %.2f MP per CPU-second; thumbnail read "
                  "(not counted) %.3f s CPU\n",
                  threads, last.kept, last.nuclei, wall, mps, mps / threads, cpu, static_cast<double>(px) / 1e6 / cpu,
                  static_cast<double>(px) / 1e6 / tiles_cpu, median(thumb_cpus));
      (threads == 1 ? per_cpu_second.back().first : per_cpu_second.back().second) = static_cast<double>(px) / 1e6 / cpu;
    }
  }
  for (std::size_t e = 0; e + 1 < engines.size(); ++e)
    if (engines.back().second == "OpenCV dnn")
      std::printf("%s / OpenCV dnn, MP per CPU-second: %.2f (1 thread), %.2f (2 threads)\n", engines[e].second.c_str(),
                  per_cpu_second[e].first / per_cpu_second.back().first,
                  per_cpu_second[e].second / per_cpu_second.back().second);
  return 0;
}
