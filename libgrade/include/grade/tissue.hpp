#pragma once
// Tissue detection on a low-resolution image (about 8-16 um/px): glass, dust, pen marks and out-of-focus debris are
// excluded; holes that are glass stay holes.
#include <opencv2/core.hpp>

#include "grade/image.hpp"

namespace grade {

struct TissueParams {
  double min_region_um2 = 20'000.0;  // tissue pieces smaller than this are dropped (dust, debris)
  double min_hole_um2 = 20'000.0;    // glass holes smaller than this are filled
};

struct TissueMask {
  cv::Mat mask;             // CV_8U, 255 = tissue, same size as the input image
  double mpp = 0.0;         // micrometres per mask pixel (the input's)
  double downsample = 1.0;  // level-0 pixels per mask pixel (the input's)
  std::int64_t x0 = 0, y0 = 0;  // level-0 origin of the mask (the input's)
  double area_mm2 = 0.0;    // tissue area
};

// `image` must have mpp > 0. Throws Error(invalid_argument) for empty or non-RGB input.
TissueMask detect_tissue(const ImageView& image, const TissueParams& params = {});

}  // namespace grade
