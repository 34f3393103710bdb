#pragma once
// Necrosis map: coagulative tumour necrosis against viable tumour and pink, nucleus-poor look-alikes.
#include <opencv2/core.hpp>

#include "grade/image.hpp"
#include "grade/stain.hpp"

namespace grade {

struct NecrosisParams {
  double working_mpp = 2.0;
  double threshold = 0.5;  // probability at and above which a pixel is called necrotic
  StainVectors stains = standard_stains();
};

struct NecrosisMap {
  cv::Mat probability;  // CV_32F 0..1, at the input's size
  cv::Mat necrosis;     // CV_8U 255 = necrotic, at the input's size
  cv::Mat tissue;       // CV_8U 255 = tissue (not glass), at the input's size
  double necrotic_fraction = 0.0;  // necrotic pixels / tissue pixels
  double tissue_fraction = 0.0;    // tissue pixels / all pixels
};

NecrosisMap map_necrosis(const ImageView& image, const NecrosisParams& params = {});

}  // namespace grade
