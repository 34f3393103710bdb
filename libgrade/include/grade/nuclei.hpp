#pragma once
// Nucleus instance segmentation and per-nucleus features, with a spindle-cell classification.
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/image.hpp"
#include "grade/stain.hpp"

namespace grade {

struct NucleiParams {
  double working_mpp = 0.5;  // the image is resampled to this scale internally; results are at the input's scale
  StainVectors stains = standard_stains();
};

struct Nucleus {
  std::int32_t id = 0;        // the nucleus's label in NucleiResult::labels
  double x = 0.0, y = 0.0;    // centroid, level-0 pixels
  double area_um2 = 0.0;
  double perimeter_um = 0.0;
  double major_axis_um = 0.0;
  double minor_axis_um = 0.0;
  double elongation = 1.0;       // major / minor axis, >= 1
  double orientation_deg = 0.0;  // of the major axis, degrees in [0, 180), counter-clockwise from the image x axis
  double solidity = 1.0;         // area / convex hull area
  double mean_h_od = 0.0;        // mean hematoxylin optical density
  double std_h_od = 0.0;
  bool spindle = false;
};

struct NucleiResult {
  cv::Mat labels;  // CV_32S instance labels at the input's size, 0 = background
  std::vector<Nucleus> nuclei;
};

NucleiResult segment_nuclei(const ImageView& image, const NucleiParams& params = {});

}  // namespace grade
