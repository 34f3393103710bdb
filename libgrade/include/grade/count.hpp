#pragma once
// The mitotic count: the 10-HPF window with the most mitoses, slid over the tumour (FNCLCC; Trojani et al. 1984,
// Coindre 2006).
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/mitosis.hpp"

namespace grade {

enum class HpfShape { circles_square, square };

struct HpfParams {
  double hpf_area_mm2 = 0.1734;  // one high-power field; FNCLCC's original microscope
  int fields = 10;
  // The field for a microscope's field number and objective: area = pi (d/2)^2, d = field diameter at the slide.
  static HpfParams from_field_diameter_mm(double diameter_mm, int fields = 10);
};

struct MitoticCount {
  int count = 0;                 // mitoses in the best window (per `fields` HPF)
  double per_mm2 = 0.0;          // count / window area
  double ci95_low = 0.0, ci95_high = 0.0;  // exact Poisson 95 % interval of the count
  int score = 1;                 // FNCLCC mitosis score 1..3
  Rect64 window;                 // the best window, level-0 pixels
  double window_area_mm2 = 0.0;
  double hpf_area_mm2 = 0.1734;
  int fields = 10;
  int total_detected = 0;        // all detections inside the region
  double region_area_mm2 = 0.0;  // area searched
};

// `region` is a CV_8U mask (non-zero = tumour) whose pixel (i, j) covers level-0 pixels
// [j*ds, (j+1)*ds) x [i*ds, (i+1)*ds) offset by (region_x0, region_y0); `mpp0` is micrometres per level-0 pixel.
MitoticCount count_mitoses(const std::vector<MitosisDetection>& detections, const cv::Mat& region, double region_ds,
                           std::int64_t region_x0, std::int64_t region_y0, double mpp0, const HpfParams& hpf = {});

// Exact (Garwood) Poisson 95 % interval for an observed count.
void poisson_ci95(int count, double& low, double& high);

}  // namespace grade
