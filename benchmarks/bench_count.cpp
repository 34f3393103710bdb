// bench_count: time of count_mitoses() (exact 10-HPF hotspot search) against the number of detections, on a
// 100k x 100k level-0 slide at 0.25 um/px (25 x 25 mm) with an elliptic tumour mask at 8 um/px (ds = 32).
// Usage: bench_count [repeats]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include <opencv2/imgproc.hpp>

#include "grade/count.hpp"

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
  const double ds = 32.0;
  const std::int64_t side = 100000;
  const int n_mask = static_cast<int>(side / static_cast<std::int64_t>(ds));
  cv::Mat mask(n_mask, n_mask, CV_8U, cv::Scalar(0));
  cv::ellipse(mask, cv::Point(n_mask / 2, n_mask / 2), cv::Size(n_mask * 45 / 100, n_mask * 35 / 100), 20, 0, 360,
              cv::Scalar(255), -1);
  std::printf("detections,seconds_median,count,window_x,window_y\n");
  for (int n : {1000, 10000, 100000, 1000000}) {
    std::mt19937 rng(42);
    std::uniform_real_distribution<double> u(0.0, static_cast<double>(side));
    std::vector<grade::MitosisDetection> d;
    d.reserve(static_cast<std::size_t>(n));
    for (int k = 0; k < n; ++k) d.push_back({u(rng), u(rng), 0.8});
    std::vector<double> t;
    grade::MitoticCount r;
    for (int rep = 0; rep < repeats; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      r = grade::count_mitoses(d, mask, ds, 0, 0, 0.25);
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    std::printf("%d,%.4f,%d,%lld,%lld\n", n, t[t.size() / 2], r.count, static_cast<long long>(r.window.x),
                static_cast<long long>(r.window.y));
  }
  return 0;
}
