// Read throughput of grade::Slide against a bare openslide_read_region loop over the same pixels, in the same run.
//   bench_slide_read SLIDE [--repeats N] [--tile PX] [--max-side PX]
// Reads the slide (or its central max-side x max-side square) in tiles, at level 0 and at 0.5 um/px, with 1 and 2
// threads; prints level-0 megapixels per second (median of N repeats), the ratio to the bare loop, and peak RSS.
// Make a slide with: grade-synth --out /tmp/bench40x.tiff --truth /tmp/bench40x.json --width 20000 --height 20000
#include <openslide/openslide.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "grade/error.hpp"
#include "grade/slide.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

// Runs work(tile index) over all tiles with `threads` workers taking tiles from a shared counter; returns seconds.
template <class F>
double run_tiles(size_t n, int threads, F&& work) {
  std::atomic<size_t> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (size_t i = next++; i < n; i = next++) work(i);
    });
  for (auto& th : pool) th.join();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bench_slide_read SLIDE [--repeats N] [--tile PX] [--max-side PX]\n";
    return 2;
  }
  const std::string path = argv[1];
  int repeats = 3;
  int64_t tile = 1024, max_side = 20000;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--repeats") repeats = std::stoi(argv[i + 1]);
    else if (k == "--tile") tile = std::stoll(argv[i + 1]);
    else if (k == "--max-side") max_side = std::stoll(argv[i + 1]);
  }
  try {
    const grade::Slide slide = grade::Slide::open(path);
    const double mpp0 = slide.require_mpp();
    const int64_t w = std::min(slide.width(), max_side), h = std::min(slide.height(), max_side);
    const int64_t x0 = (slide.width() - w) / 2, y0 = (slide.height() - h) / 2;
    std::vector<grade::Rect64> tiles;
    for (int64_t y = y0; y < y0 + h; y += tile)
      for (int64_t x = x0; x < x0 + w; x += tile)
        tiles.push_back({x, y, std::min(tile, x0 + w - x), std::min(tile, y0 + h - y)});
    const double mp = static_cast<double>(w) * static_cast<double>(h) / 1e6;
    openslide_t* osr = openslide_open(path.c_str());
    if (!osr || openslide_get_error(osr)) throw std::runtime_error(path + ": openslide_open failed");

    std::printf("slide %s: %lld x %lld at %.4f um/px, %d levels; reading %lld x %lld (%.0f MP) in %lld px tiles, "
                "median of %d\n",
                path.c_str(), static_cast<long long>(slide.width()), static_cast<long long>(slide.height()), mpp0,
                slide.level_count(), static_cast<long long>(w), static_cast<long long>(h), mp,
                static_cast<long long>(tile), repeats);
    std::printf("%-34s %8s %10s %10s %8s\n", "mode", "threads", "MP/s", "bare MP/s", "ratio");
    std::atomic<uint64_t> checksum{0};  // keeps the reads from being optimised away
    for (int threads : {1, 2}) {
      // Bare loop: openslide_read_region at level 0 into a per-call buffer (what any reader must at least do).
      auto bare = [&] {
        return run_tiles(tiles.size(), threads, [&](size_t i) {
          const auto& r = tiles[i];
          std::vector<uint32_t> buf(static_cast<size_t>(r.width * r.height));
          openslide_read_region(osr, buf.data(), r.x, r.y, 0, r.width, r.height);
          checksum += buf[buf.size() / 2];
        });
      };
      auto level0 = [&] {
        return run_tiles(tiles.size(), threads, [&](size_t i) {
          const grade::ImageView v = slide.read_region(tiles[i], 0);
          checksum += v.rgb.at<cv::Vec3b>(0, 0)[0];
        });
      };
      auto at_half = [&] {
        return run_tiles(tiles.size(), threads, [&](size_t i) {
          const grade::ImageView v = slide.read_region_at_mpp(tiles[i], 0.5);
          checksum += v.rgb.at<cv::Vec3b>(0, 0)[0];
        });
      };
      std::vector<double> tb, t0, th;
      for (int r = 0; r < repeats; ++r) {  // interleaved so drift on a shared machine hits all three alike
        tb.push_back(bare());
        t0.push_back(level0());
        th.push_back(at_half());
      }
      const double b = median(tb);
      std::printf("%-34s %8d %10.1f %10.1f %8.2f\n", "read_region level 0", threads, mp / median(t0), mp / b, median(t0) / b);
      std::printf("%-34s %8d %10.1f %10.1f %8.2f\n", "read_region_at_mpp 0.5 um/px", threads, mp / median(th), mp / b,
                  median(th) / b);
    }
    openslide_close(osr);
    std::printf("peak RSS: %.0f MB (checksum %llu)\n", peak_rss_mb(), static_cast<unsigned long long>(checksum.load()));
    std::printf("ratio = our time / bare openslide_read_region time over the same level-0 pixels (1.00 = no overhead)\n");
  } catch (const std::exception& e) {
    std::cerr << "bench_slide_read: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
