// grade_slide (the grade-slide pipeline, outputs included) on synthetic 40x slides from grade-synth, against the cost
// of decoding the same level-0 pixels (the tiles the pipeline reads, margins included) through a bare
// openslide_read_region loop, in the same run, with 1 and 2 threads; plus the peak RSS of each configuration, for a
// small and a large slide (RSS must not grow with slide size). A second baseline reads the same rectangles through
// grade::Slide::read_region, which decodes tiled TIFF slides with libtiff directly (slide.hpp): the ratio to it says
// how far the analysis is from libgrade's own decode.
//
//   bench_grade_slide [--sizes 10000,40000] [--threads 1,2] [--dir DIR] [--default-malloc]
//
// --default-malloc leaves glibc's allocator settings as they are instead of tuning them as grade-slide does
// (grade::tune_allocator), to measure what that is worth.
//
// Slides are made once with grade::synthesize_slide (seed 7, defaults otherwise) and cached in DIR
// (default /tmp/libgrade-bench). Each grading configuration runs in a child process (this program re-executed) so its
// peak RSS (getrusage ru_maxrss) is its own.
#include <opencv2/core/utility.hpp>
#include <openslide/openslide.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "grade/allocator.hpp"
#include "grade/error.hpp"
#include "grade/pipeline.hpp"
#include "grade/report.hpp"
#include "grade/slide.hpp"
#include "grade/synth.hpp"

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

std::vector<long> parse_list(const std::string& s) {
  std::vector<long> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stol(item));
  return out;
}

// The read rectangles of the pipeline's tiles, rebuilt from the report's tumour grid exactly as pipeline.cpp tiles.
std::vector<grade::Rect64> pipeline_reads(const grade::SlideReport& r) {
  std::vector<grade::Rect64> out;
  const auto c = static_cast<std::int64_t>(r.grid_px);
  const int k = std::max(1, static_cast<int>(std::lround(r.params.tile_um / r.params.grid_um)));
  const auto margin = static_cast<std::int64_t>(std::ceil(r.params.tile_margin_um / r.mpp));
  const int gh = r.tumour_grid.rows, gw = r.tumour_grid.cols;
  for (int gy = 0; gy < gh; gy += k)
    for (int gx = 0; gx < gw; gx += k) {
      const int gx1 = std::min(gw, gx + k), gy1 = std::min(gh, gy + k);
      if (cv::countNonZero(r.tumour_grid(cv::Range(gy, gy1), cv::Range(gx, gx1))) == 0) continue;
      const std::int64_t x0 = std::max<std::int64_t>(0, gx * c - margin);
      const std::int64_t y0 = std::max<std::int64_t>(0, gy * c - margin);
      const std::int64_t x1 = std::min<std::int64_t>(r.width, std::min<std::int64_t>(r.width, gx1 * c) + margin);
      const std::int64_t y1 = std::min<std::int64_t>(r.height, std::min<std::int64_t>(r.height, gy1 * c) + margin);
      out.push_back({x0, y0, x1 - x0, y1 - y0});
    }
  return out;
}

// Bare OpenSlide decode of `reads` at level 0 with `threads` workers (one handle shared, as OpenSlide allows).
double decode_seconds(const fs::path& slide, const std::vector<grade::Rect64>& reads, int threads) {
  openslide_t* osr = openslide_open(slide.c_str());
  if (!osr || openslide_get_error(osr)) throw std::runtime_error(slide.string() + ": openslide_open failed");
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      std::vector<uint32_t> buf;
      for (std::size_t i = next++; i < reads.size(); i = next++) {
        const auto& r = reads[i];
        buf.resize(static_cast<std::size_t>(r.width * r.height));
        openslide_read_region(osr, buf.data(), r.x, r.y, 0, r.width, r.height);
        if (openslide_get_error(osr)) failed = true;
      }
    });
  for (auto& th : pool) th.join();
  const double s = seconds_since(t0);
  openslide_close(osr);
  if (failed) throw std::runtime_error(slide.string() + ": openslide_read_region failed");
  return s;
}

// The same reads through grade::Slide (libtiff tile decoding where it gives OpenSlide's pixels), `threads` workers.
double libgrade_read_seconds(const fs::path& slide, const std::vector<grade::Rect64>& reads, int threads) {
  const grade::Slide s = grade::Slide::open(slide);
  std::atomic<std::size_t> next{0};
  std::atomic<std::uint64_t> checksum{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (std::size_t i = next++; i < reads.size(); i = next++) checksum += s.read_region(reads[i], 0).rgb.data[0];
    });
  for (auto& th : pool) th.join();
  return seconds_since(t0);
}

// Child mode: grade, write outputs, print one line "wall tiles_s rss_mb tiles megapixels grade count necrosis".
int child(const fs::path& slide, int threads, const fs::path& out, bool default_malloc) {
  const auto t0 = Clock::now();
  if (!default_malloc) grade::tune_allocator();  // as grade-slide does (set_up_tile_workers)
  grade::GradeParams p;
  p.differentiation = 2;
  p.threads = threads;
  cv::setNumThreads(1);  // as grade-slide does (tools/common/cli.hpp, set_up_tile_workers): N threads = N cores
  const grade::Slide s = grade::Slide::open(slide);
  const grade::SlideReport r = grade::grade_slide(s, p);
  const double grade_s = seconds_since(t0);
  grade::write_slide_outputs(s, r, out);
  const double wall = seconds_since(t0);
  double mp = 0.0;
  FILE* f = std::fopen((out / "bench_reads.txt").c_str(), "w");
  if (!f) throw std::runtime_error("cannot write the read list");
  for (const auto& rd : pipeline_reads(r)) {
    mp += static_cast<double>(rd.width * rd.height) / 1e6;
    std::fprintf(f, "%lld %lld %lld %lld\n", static_cast<long long>(rd.x), static_cast<long long>(rd.y),
                 static_cast<long long>(rd.width), static_cast<long long>(rd.height));
  }
  std::fclose(f);
  std::printf("RESULT %.3f %.3f %.1f %lld %.1f %d %d %.2f\n", wall, grade_s, peak_rss_mb(),
              static_cast<long long>(r.tiles), mp, r.fnclcc.grade ? *r.fnclcc.grade : 0, r.mitotic_count.count,
              r.necrosis.percent);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc >= 6 && std::strcmp(argv[1], "--child") == 0)
      return child(argv[2], std::atoi(argv[3]), argv[4], std::strcmp(argv[5], "default") == 0);

    std::vector<long> sizes = {10000, 40000};
    std::vector<long> threads = {1, 2};
    fs::path dir = "/tmp/libgrade-bench";
    bool default_malloc = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--sizes" && i + 1 < argc)
        sizes = parse_list(argv[++i]);
      else if (a == "--threads" && i + 1 < argc)
        threads = parse_list(argv[++i]);
      else if (a == "--dir" && i + 1 < argc)
        dir = argv[++i];
      else if (a == "--default-malloc")
        default_malloc = true;
      else {
        std::cerr << "usage: bench_grade_slide [--sizes 10000,40000] [--threads 1,2] [--dir DIR] [--default-malloc]\n";
        return 2;
      }
    }
    fs::create_directories(dir);
    const std::string self = fs::read_symlink("/proc/self/exe").string();

    std::printf("| slide | tissue tiles | level-0 MP read | threads | openslide decode s | libgrade read s | grade s | "
                "outputs s | wall s | wall / openslide decode | wall / libgrade read | peak RSS MB | grade | count | "
                "necrosis %% |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (long side : sizes) {
      const fs::path slide = dir / ("synth-" + std::to_string(side) + ".tiff");
      if (!fs::exists(slide)) {
        grade::SynthParams sp;
        sp.width_px = sp.height_px = side;
        sp.seed = 7;
        const auto t0 = Clock::now();
        grade::synthesize_slide(sp, slide, dir / ("synth-" + std::to_string(side) + ".json"));
        std::fprintf(stderr, "made %s in %.1f s\n", slide.c_str(), seconds_since(t0));
      }
      for (long t : threads) {
        const fs::path out = dir / ("out-" + std::to_string(side) + "-" + std::to_string(t));
        const std::string cmd = "'" + self + "' --child '" + slide.string() + "' " + std::to_string(t) + " '" +
                                out.string() + "' " + (default_malloc ? "default" : "tuned");
        FILE* pipe = popen(cmd.c_str(), "r");
        if (!pipe) throw std::runtime_error("cannot run " + cmd);
        char line[512];
        double wall = 0, grade_s = 0, rss = 0, mp = 0, nec = 0;
        long long tiles = 0;
        int g = 0, count = 0;
        bool ok = false;
        while (std::fgets(line, sizeof line, pipe))
          if (std::sscanf(line, "RESULT %lf %lf %lf %lld %lf %d %d %lf", &wall, &grade_s, &rss, &tiles, &mp, &g, &count,
                          &nec) == 8)
            ok = true;
        if (pclose(pipe) != 0 || !ok) throw std::runtime_error("child failed: " + cmd);
        // The decode baseline: the same read rectangles, which the child wrote beside its outputs.
        std::vector<grade::Rect64> reads;
        {
          FILE* f = std::fopen((out / "bench_reads.txt").c_str(), "r");
          if (!f) throw std::runtime_error("no read list from the child");
          long long x, y, w, h;
          while (std::fscanf(f, "%lld %lld %lld %lld", &x, &y, &w, &h) == 4) reads.push_back({x, y, w, h});
          std::fclose(f);
        }
        const double dec = decode_seconds(slide, reads, static_cast<int>(t));
        const double own = libgrade_read_seconds(slide, reads, static_cast<int>(t));
        std::printf("| %ldx%ld | %lld | %.0f | %ld | %.2f | %.2f | %.2f | %.2f | %.2f | **%.2f** | %.2f | %.0f | G%d | "
                    "%d | %.1f |\n",
                    side, side, tiles, mp, t, dec, own, grade_s, wall - grade_s, wall, wall / dec, wall / own, rss, g,
                    count, nec);
        std::fflush(stdout);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_grade_slide: " << e.what() << "\n";
    return 1;
  }
}
