// grade-inspect stain: DIR/stain.csv (image,h_r,h_g,h_b,e_r,e_g,e_b,fallback,warning,pixels_used). The estimate uses
// the tissue pixels (detect_tissue on a thumbnail) of a ~2 um/px view of the image.
#include <algorithm>
#include <cstdio>
#include <sstream>

#include <opencv2/imgproc.hpp>

#include "cli.hpp"
#include "grade/stain.hpp"
#include "grade/tissue.hpp"
#include "stages.hpp"

namespace grade::inspect {
namespace {

constexpr double kStainMpp = 2.0;

class StainInspector final : public Inspector {
 public:
  explicit StainInspector(const Options& o) : options_(o) {
    csv_ << "image,h_r,h_g,h_b,e_r,e_g,e_b,fallback,warning,pixels_used\n";
  }
  void process(const Input& input) override {
    const ImageView view = input.slide->read_thumbnail(kStainMpp);
    // Tissue mask on a coarser copy, brought back to the view's size.
    ImageView small = view;
    const double f = std::min(1.0, view.mpp / 8.0);
    if (f < 1.0) {
      cv::resize(view.rgb, small.rgb, cv::Size(), f, f, cv::INTER_AREA);
      small.mpp = view.mpp / f;
      small.downsample = view.downsample / f;
    }
    TissueMask t = detect_tissue(small);
    cv::Mat mask;
    cv::resize(t.mask, mask, view.rgb.size(), 0, 0, cv::INTER_NEAREST);
    const StainEstimate e = estimate_stains(view, {}, cv::countNonZero(mask) > 0 ? mask : cv::Mat());
    char buf[256];
    std::snprintf(buf, sizeof buf, ",%.5f,%.5f,%.5f,%.5f,%.5f,%.5f,%d,", e.vectors.hematoxylin[0], e.vectors.hematoxylin[1],
                  e.vectors.hematoxylin[2], e.vectors.eosin[0], e.vectors.eosin[1], e.vectors.eosin[2], e.fallback ? 1 : 0);
    csv_ << cli::csv_field(input.stem) << buf << cli::csv_field(e.warning) << "," << e.pixels_used << "\n";
  }
  void finish() override { cli::write_text_atomically(options_.out_dir / "stain.csv", csv_.str()); }

 private:
  Options options_;
  std::ostringstream csv_;
};

}  // namespace

std::unique_ptr<Inspector> make_stain_inspector(const Options& options) {
  return std::make_unique<StainInspector>(options);
}

}  // namespace grade::inspect
