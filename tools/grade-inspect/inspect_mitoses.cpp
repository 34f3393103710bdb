// grade-inspect mitoses: DIR/mitoses.csv with columns image,x,y,score (pixel coordinates of the input image = level-0
// pixels of a slide), highest score first. Whole slides are processed in overlapping tiles read at the detector's
// working resolution (0.25 um/px, or the slide's own when coarser); a detection belongs to the tile whose core holds it,
// so tiles never count a figure twice and the result does not depend on the tiling or on the number of threads.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "cli.hpp"
#include "grade/error.hpp"
#include "grade/mitosis.hpp"
#include "stages.hpp"

namespace grade::inspect {
namespace {

struct Row {
  std::string image;
  MitosisDetection d;
};

class MitosesInspector : public Inspector {
 public:
  explicit MitosesInspector(const Options& o) : options_(o) {}

  void process(const Input& input) override {
    const Slide& slide = *input.slide;
    const MitosisParams params;
    const double mpp0 = slide.require_mpp();
    const double target = std::max(params.working_mpp, mpp0);  // never ask for pixels finer than level 0
    const double l0_per_px = target / mpp0;
    // Tile core 2048 px and margin 128 px at the target resolution (margin >= crop half-width 32 px + NMS radius
    // 40 px + smoothing support), both multiples of the candidate grid (4 px), so tiles see the same pixel blocks.
    const auto core = static_cast<std::int64_t>(std::llround(2048 * l0_per_px));
    const auto margin = static_cast<std::int64_t>(std::llround(128 * l0_per_px));
    const std::int64_t W = slide.width(), H = slide.height();
    std::vector<Rect64> tiles;
    for (std::int64_t y = 0; y < H; y += core)
      for (std::int64_t x = 0; x < W; x += core) tiles.push_back({x, y, std::min(core, W - x), std::min(core, H - y)});

    std::vector<std::vector<MitosisDetection>> found(tiles.size());
    std::atomic<size_t> next{0};
    std::mutex err_mutex;
    std::exception_ptr error;
    auto work = [&] {
      for (size_t i; (i = next++) < tiles.size();) {
        try {
          const Rect64& c = tiles[i];
          const std::int64_t x0 = std::max<std::int64_t>(0, c.x - margin), y0 = std::max<std::int64_t>(0, c.y - margin);
          const std::int64_t x1 = std::min(W, c.x + c.width + margin), y1 = std::min(H, c.y + c.height + margin);
          const ImageView view = slide.read_region_at_mpp({x0, y0, x1 - x0, y1 - y0}, target);
          MitosisParams p = params;
          p.region = c;  // detections of the core only; the margin is context
          found[i] = detect_mitoses(view, p);
        } catch (...) {
          std::lock_guard<std::mutex> lock(err_mutex);
          if (!error) error = std::current_exception();
          next = tiles.size();
        }
      }
    };
    const int n_threads = std::max(1, std::min<int>(options_.threads, static_cast<int>(tiles.size())));
    std::vector<std::thread> pool;
    for (int t = 1; t < n_threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);

    std::vector<MitosisDetection> all;
    for (auto& f : found) all.insert(all.end(), f.begin(), f.end());
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
      if (a.score != b.score) return a.score > b.score;
      return a.y != b.y ? a.y < b.y : a.x < b.x;
    });
    for (const auto& d : all) rows_.push_back({input.stem, d});
  }

  void finish() override {
    std::ostringstream out;
    out.precision(10);
    out << "image,x,y,score\n";
    for (const auto& r : rows_)
      out << cli::csv_field(r.image) << ',' << r.d.x << ',' << r.d.y << ',' << r.d.score << '\n';
    cli::write_text_atomically(options_.out_dir / "mitoses.csv", out.str());
  }

 private:
  Options options_;
  std::vector<Row> rows_;
};

}  // namespace

std::unique_ptr<Inspector> make_mitoses_inspector(const Options& options) {
  return std::make_unique<MitosesInspector>(options);
}

}  // namespace grade::inspect
