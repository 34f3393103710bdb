// grade-inspect necrosis: DIR/<stem>.necrosis.png (255 = necrotic) and DIR/necrosis.csv
// (image,necrotic_fraction,tissue_fraction,necrotic_area_mm2,tissue_area_mm2,necrosis_percent,mask_mpp,mask_width,
// mask_height). The mask has the input's size for images up to kWholeImagePixels (level 0); larger slides are mapped
// tile by tile at the working resolution and their mask is at that resolution (mask_mpp says which).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <opencv2/imgproc.hpp>

#include "cli.hpp"
#include "grade/necrosis.hpp"
#include "stages.hpp"

namespace grade::inspect {
namespace {

constexpr std::int64_t kWholeImagePixels = 64LL * 1024 * 1024;
constexpr int kTilePx = 2048;    // tile core at the working resolution
constexpr int kMarginPx = 128;   // context around each core (the features look ~100 um around a cell)

class NecrosisInspector final : public Inspector {
 public:
  explicit NecrosisInspector(const Options& o) : options_(o) {
    csv_ << "image,necrotic_fraction,tissue_fraction,necrotic_area_mm2,tissue_area_mm2,necrosis_percent,mask_mpp,"
            "mask_width,mask_height\n";
  }

  void process(const Input& input) override {
    const Slide& slide = *input.slide;
    const double mpp0 = slide.require_mpp();
    const NecrosisParams params;
    cv::Mat mask;
    double mask_mpp = mpp0;
    double tissue_px = 0, necrotic_px = 0, all_px = 0;
    if (slide.width() * slide.height() <= kWholeImagePixels) {
      const ImageView view = slide.read_region({0, 0, slide.width(), slide.height()}, 0);
      const NecrosisMap map = map_necrosis(view, params);
      mask = map.necrosis;
      tissue_px = cv::countNonZero(map.tissue);
      necrotic_px = cv::countNonZero(map.necrosis);
      all_px = static_cast<double>(map.tissue.total());
    } else {
      // Tiles at the working resolution; each keeps its core, so the mask does not depend on tile order.
      mask_mpp = std::max(params.working_mpp, mpp0);
      const double step0 = kTilePx * mask_mpp / mpp0;  // level-0 pixels per core
      const double margin0 = kMarginPx * mask_mpp / mpp0;
      const int mw = static_cast<int>(std::ceil(slide.width() * mpp0 / mask_mpp));
      const int mh = static_cast<int>(std::ceil(slide.height() * mpp0 / mask_mpp));
      mask = cv::Mat::zeros(mh, mw, CV_8U);
      cv::Mat tissue = cv::Mat::zeros(mh, mw, CV_8U);
      for (double y = 0; y < slide.height(); y += step0)
        for (double x = 0; x < slide.width(); x += step0) {
          const auto x0 = static_cast<std::int64_t>(std::max(0.0, x - margin0));
          const auto y0 = static_cast<std::int64_t>(std::max(0.0, y - margin0));
          const auto x1 = std::min<std::int64_t>(slide.width(), static_cast<std::int64_t>(x + step0 + margin0));
          const auto y1 = std::min<std::int64_t>(slide.height(), static_cast<std::int64_t>(y + step0 + margin0));
          const ImageView view = slide.read_region_at_mpp({x0, y0, x1 - x0, y1 - y0}, mask_mpp);
          const NecrosisMap map = map_necrosis(view, params);
          // Core of this tile in mask pixels, and where it sits in the tile's own map.
          const int cx = static_cast<int>(std::lround(x * mpp0 / mask_mpp));
          const int cy = static_cast<int>(std::lround(y * mpp0 / mask_mpp));
          const int ox = static_cast<int>(std::lround(x0 * mpp0 / mask_mpp));
          const int oy = static_cast<int>(std::lround(y0 * mpp0 / mask_mpp));
          const int cw = std::min({kTilePx, mw - cx, map.necrosis.cols - (cx - ox)});
          const int ch = std::min({kTilePx, mh - cy, map.necrosis.rows - (cy - oy)});
          if (cw <= 0 || ch <= 0) continue;
          const cv::Rect src(cx - ox, cy - oy, cw, ch), dst(cx, cy, cw, ch);
          map.necrosis(src).copyTo(mask(dst));
          map.tissue(src).copyTo(tissue(dst));
        }
      tissue_px = cv::countNonZero(tissue);
      necrotic_px = cv::countNonZero(mask);
      all_px = static_cast<double>(mask.total());
    }
    cli::write_image_atomically(options_.out_dir / (input.stem + ".necrosis.png"), mask);
    const double px_mm2 = (mask_mpp * 1e-3) * (mask_mpp * 1e-3);
    const double nf = tissue_px > 0 ? necrotic_px / tissue_px : 0.0;
    char buf[320];
    std::snprintf(buf, sizeof buf, ",%.6f,%.6f,%.6f,%.6f,%.3f,%.4f,%d,%d\n", nf, all_px > 0 ? tissue_px / all_px : 0.0,
                  necrotic_px * px_mm2, tissue_px * px_mm2, 100.0 * nf, mask_mpp, mask.cols, mask.rows);
    csv_ << cli::csv_field(input.stem) << buf;
  }

  void finish() override { cli::write_text_atomically(options_.out_dir / "necrosis.csv", csv_.str()); }

 private:
  Options options_;
  std::ostringstream csv_;
};

}  // namespace

std::unique_ptr<Inspector> make_necrosis_inspector(const Options& options) {
  return std::make_unique<NecrosisInspector>(options);
}

}  // namespace grade::inspect
