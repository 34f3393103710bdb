#pragma once
// Mitotic-figure detection: dark hematoxylin candidates at about 0.25 um/px, then a trained classifier.
#include <vector>

#include "grade/image.hpp"
#include "grade/stain.hpp"

namespace grade {

struct MitosisParams {
  double working_mpp = 0.25;
  double threshold = 0.5;  // detections with score below this are dropped (documented operating point)
  StainVectors stains = standard_stains();
};

struct MitosisDetection {
  double x = 0.0, y = 0.0;  // level-0 pixels
  double score = 0.0;       // classifier probability of a mitotic figure, 0..1
};

std::vector<MitosisDetection> detect_mitoses(const ImageView& image, const MitosisParams& params = {});

}  // namespace grade
