// Throughput of map_necrosis on one core: megapixels of input per second, (a) input already at the working resolution
// (2 um/px, what the pipeline hands the stage), (b) input at 1 um/px (the stage resamples it first; MP of that input).
// The image is made of the osteosarcoma tiles (../shared/data) when present, else of a synthetic H&E-like pattern.
//
//   bench_necrosis_speed [--size PX] [--repeats N]
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/necrosis.hpp"

using namespace grade;

namespace {

// A size x size RGB mosaic at 1 um/px.
cv::Mat make_input(int size) {
  std::vector<cv::Mat> tiles;
  const std::filesystem::path dir = std::filesystem::path(GRADE_SHARED_DATA) / "necrosis" / "osteosarcoma";
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) {
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      cv::Mat bgr = cv::imread(f.string(), cv::IMREAD_COLOR);
      if (!bgr.empty()) tiles.push_back(bgr);
    }
  }
  cv::Mat out(size, size, CV_8UC3);
  if (tiles.empty()) {  // synthetic: pink with purple blobs
    out.setTo(cv::Scalar(220, 170, 230));
    std::mt19937 rng(1);
    std::uniform_int_distribution<int> u(0, size - 1);
    for (int i = 0; i < size * size / 400; ++i) cv::circle(out, {u(rng), u(rng)}, 4, cv::Scalar(150, 60, 90), cv::FILLED);
  } else {
    size_t k = 0;
    for (int y = 0; y < size; y += 1024)
      for (int x = 0; x < size; x += 1024, ++k) {
        const cv::Mat& t = tiles[k % tiles.size()];
        const cv::Rect r(x, y, std::min(1024, size - x), std::min(1024, size - y));
        t(cv::Rect(0, 0, r.width, r.height)).copyTo(out(r));
      }
  }
  cv::Mat rgb;
  cv::cvtColor(out, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Best of `repeats` in thread CPU time (the machine is shared: wall time would measure the other processes too) and,
// for reference, in wall time.
double best_seconds(const ImageView& v, int repeats, double* fraction, double* wall) {
  double best = 1e30;
  *wall = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = thread_cpu_seconds();
    const NecrosisMap m = map_necrosis(v);
    best = std::min(best, thread_cpu_seconds() - c0);
    *wall = std::min(*wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    *fraction = m.necrotic_fraction;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int size = 4096, repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--size") size = std::stoi(argv[i + 1]);
    else if (a == "--repeats") repeats = std::stoi(argv[i + 1]);
  }
  cv::setNumThreads(1);  // per core: OpenCV's own worker threads off
  const cv::Mat at1 = make_input(size);
  cv::Mat at2;
  cv::resize(at1, at2, cv::Size(), 0.5, 0.5, cv::INTER_AREA);
  double f = 0, w = 0;
  const double s2 = best_seconds(make_view(at2, 2.0), repeats, &f, &w);
  const double mp2 = at2.total() / 1e6;
  std::printf("map_necrosis, input at the working resolution (2 um/px): %dx%d = %.2f MP in %.4f s CPU: %.1f MP/s per "
              "core (wall %.4f s; necrotic fraction %.3f)\n", at2.cols, at2.rows, mp2, s2, mp2 / s2, w, f);
  const double s1 = best_seconds(make_view(at1, 1.0), repeats, &f, &w);
  const double mp1 = at1.total() / 1e6;
  std::printf("map_necrosis, input at 1 um/px (resampled to 2 um/px inside): %dx%d = %.2f MP in %.4f s CPU: %.1f MP/s "
              "per core of input (wall %.4f s; necrotic fraction %.3f)\n", at1.cols, at1.rows, mp1, s1, mp1 / s1, w, f);
  return 0;
}
