// grade-inspect tissue: DIR/<stem>.tissue.png (255 = tissue, at the thumbnail scale used) and DIR/tissue.csv
// (image,tissue_area_mm2,mask_mpp,mask_width,mask_height,downsample).
#include <cstdio>
#include <sstream>

#include "cli.hpp"
#include "grade/tissue.hpp"
#include "stages.hpp"

namespace grade::inspect {
namespace {

// The thumbnail scale: in the 8-16 um/px range detect_tissue is designed for. Images coarser than this are used as
// they are.
constexpr double kTissueMpp = 8.0;

class TissueInspector final : public Inspector {
 public:
  explicit TissueInspector(const Options& o) : options_(o) {
    csv_ << "image,tissue_area_mm2,mask_mpp,mask_width,mask_height,downsample\n";
  }
  void process(const Input& input) override {
    const ImageView thumb = input.slide->read_thumbnail(kTissueMpp);
    const TissueMask t = detect_tissue(thumb);
    cli::write_image_atomically(options_.out_dir / (input.stem + ".tissue.png"), t.mask);
    char buf[256];
    std::snprintf(buf, sizeof buf, ",%.6f,%.4f,%d,%d,%.4f\n", t.area_mm2, t.mpp, t.mask.cols, t.mask.rows, t.downsample);
    csv_ << cli::csv_field(input.stem) << buf;
  }
  void finish() override { cli::write_text_atomically(options_.out_dir / "tissue.csv", csv_.str()); }

 private:
  Options options_;
  std::ostringstream csv_;
};

}  // namespace

std::unique_ptr<Inspector> make_tissue_inspector(const Options& options) {
  return std::make_unique<TissueInspector>(options);
}

}  // namespace grade::inspect
