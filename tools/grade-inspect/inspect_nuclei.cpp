// grade-inspect nuclei: DIR/<stem>.png (uint16 instance labels at the input's size, 0 = background) and DIR/nuclei.csv
// (image,id,x,y,area_um2,elongation,spindle, then the other features), x and y in input pixels; with --overlay also
// DIR/<stem>.overlay.png (the image with the nuclei outlined).
#include <cstdio>
#include <sstream>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "cli.hpp"
#include "grade/error.hpp"
#include "grade/nuclei.hpp"
#include "stages.hpp"

namespace grade::inspect {
namespace {

// Whole images only: labels are written at the input's size, so a whole slide this large would not fit a PNG anyway.
constexpr std::int64_t kMaxPixels = 200'000'000;

class NucleiInspector final : public Inspector {
 public:
  explicit NucleiInspector(const Options& o) : options_(o) {
    csv_ << "image,id,x,y,area_um2,elongation,spindle,perimeter_um,major_axis_um,minor_axis_um,orientation_deg,"
            "solidity,mean_h_od,std_h_od,spindle_probability,alignment,bluntness\n";
  }

  void process(const Input& input) override {
    const Slide& slide = *input.slide;
    if (slide.width() * slide.height() > kMaxPixels)
      throw Error(ErrorCode::invalid_argument, input.path.string() + ": " + std::to_string(slide.width()) + "x" +
                                                   std::to_string(slide.height()) +
                                                   " pixels is too large for grade-inspect nuclei (whole-image labels)");
    const ImageView view = slide.read_region(Rect64{0, 0, slide.width(), slide.height()}, 0);
    NucleiParams params;
    params.flips = options_.flips;
    params.network = options_.network;
    const NucleiResult r = segment_nuclei(view, params);
    if (r.nuclei.size() > 65535)
      throw Error(ErrorCode::invalid_argument, input.path.string() + ": " + std::to_string(r.nuclei.size()) +
                                                   " nuclei do not fit a 16-bit label image");
    cv::Mat labels16;
    r.labels.convertTo(labels16, CV_16U);
    cv::Mat overlay;  // drawn before anything is written
    if (options_.overlay) cv::cvtColor(render_nuclei_overlay(view, r), overlay, cv::COLOR_RGB2BGR);
    cli::write_image_atomically(options_.out_dir / (input.stem + ".png"), labels16);
    if (options_.overlay) cli::write_image_atomically(options_.out_dir / (input.stem + ".overlay.png"), overlay);
    char buf[512];
    for (const Nucleus& n : r.nuclei) {
      std::snprintf(buf, sizeof buf, ",%d,%.2f,%.2f,%.3f,%.4f,%d,%.3f,%.3f,%.3f,%.2f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f\n",
                    n.id, n.x, n.y, n.area_um2, n.elongation, n.spindle ? 1 : 0, n.perimeter_um, n.major_axis_um,
                    n.minor_axis_um, n.orientation_deg, n.solidity, n.mean_h_od, n.std_h_od, n.spindle_probability,
                    n.alignment, n.bluntness);
      csv_ << cli::csv_field(input.stem) << buf;
    }
  }

  void finish() override { cli::write_text_atomically(options_.out_dir / "nuclei.csv", csv_.str()); }

 private:
  Options options_;
  std::ostringstream csv_;
};

}  // namespace

std::unique_ptr<Inspector> make_nuclei_inspector(const Options& options) {
  return std::make_unique<NucleiInspector>(options);
}

}  // namespace grade::inspect
