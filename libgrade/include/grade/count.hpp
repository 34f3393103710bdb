#pragma once
// The mitotic count: the 10-HPF window with the most mitoses, slid over the tumour (FNCLCC; Trojani et al. 1984,
// Coindre 2006), with an exact Poisson interval (Garwood, Biometrika 1936).
//
// The window is an axis-aligned square of area fields x hpf_area_mm2 (10 x 0.1734 mm^2 = 1.734 mm^2 by default, side
// 1.3168 mm = 5267 level-0 pixels at 0.25 um/px; the side is rounded to whole level-0 pixels). A window at integer
// level-0 position (x, y) covers [x, x + side) x [y, y + side); it counts the detections inside the region mask whose
// centres lie in it. It is placed inside the region's bounding box and its centre (x + side/2, y + side/2) must fall on a
// non-zero region pixel. The best window has the highest count; ties go to the smallest y, then the smallest x. The
// search is exact (a plane sweep over the positions where the count can change, with a segment tree over x:
// O((n + region perimeter) log n)), so ~10^5 detections take milliseconds.
//
// Where the region's bounding box is narrower or shorter than the window, the window is clipped to it (so a region
// smaller than the window in both directions gets its bounding box) and the count is scaled to the full area
// (MitoticCount::scaled says so). If no window centre can lie on the region (a very sparse or fragmented mask), the
// centre condition is dropped and the note in MitoticCount::centre_rule_relaxed says so.
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/mitosis.hpp"

namespace grade {

enum class HpfShape { circles_square, square };

struct HpfParams {
  double hpf_area_mm2 = 0.1734;  // one high-power field; FNCLCC's original microscope
  int fields = 10;
  // The field for a microscope's field number and objective: area = pi (d/2)^2, d = field diameter at the slide
  // (field number / objective magnification, e.g. 22 mm / 40 = 0.55 mm -> 0.2376 mm^2). Throws unless d > 0, fields >= 1.
  static HpfParams from_field_diameter_mm(double diameter_mm, int fields = 10);
};

struct MitoticCount {
  int count = 0;                 // mitoses in the best window, per `fields` HPF (scaled and rounded when `scaled`)
  double per_mm2 = 0.0;          // raw_count / window_area_mm2
  double ci95_low = 0.0, ci95_high = 0.0;  // exact Poisson 95 % interval of the count (scaled like the count)
  int score = 1;                 // FNCLCC mitosis score 1..3
  Rect64 window;                 // the best window, level-0 pixels (empty when the region is empty)
  double window_area_mm2 = 0.0;  // the window's actual area
  double hpf_area_mm2 = 0.1734;
  int fields = 10;
  int total_detected = 0;        // all detections inside the region
  double region_area_mm2 = 0.0;  // area searched
  int raw_count = 0;             // detections in the window before scaling
  bool scaled = false;           // the region is smaller than the window: count = raw_count x nominal / actual area
  double scale = 1.0;            // nominal 10-HPF area / actual window area (1 when not scaled)
  bool centre_rule_relaxed = false;  // no window centre could lie on the region; the centre condition was dropped
};

// `region` is a CV_8U mask (non-zero = tumour) whose pixel (i, j) covers level-0 pixels
// [j*ds, (j+1)*ds) x [i*ds, (i+1)*ds) offset by (region_x0, region_y0); `mpp0` is micrometres per level-0 pixel.
// Detections outside the region are ignored. An empty region gives count 0 and an empty window. `bounds` (level-0
// pixels, e.g. {0, 0, slide width, slide height}), when not empty, keeps the window inside it: the region's bounding
// box is clipped to it (a mask whose last cells reach past the slide's edge then cannot push the window off the slide).
// Throws grade::Error(invalid_argument) naming the bad value (mask type, ds, mpp0, hpf area, fields).
MitoticCount count_mitoses(const std::vector<MitosisDetection>& detections, const cv::Mat& region, double region_ds,
                           std::int64_t region_x0, std::int64_t region_y0, double mpp0, const HpfParams& hpf = {},
                           const Rect64& bounds = {});

// Exact (Garwood) Poisson 95 % interval for an observed count: [Gamma^-1(0.025; k), Gamma^-1(0.975; k + 1)] (lower
// bound 0 for k = 0), e.g. 0 -> [0, 3.689], 10 -> [4.795, 18.39]. Throws for count < 0.
void poisson_ci95(int count, double& low, double& high);

// Side of the square window in level-0 pixels (rounded) for `hpf` at `mpp0` um/px.
std::int64_t hpf_window_side_px(const HpfParams& hpf, double mpp0);

}  // namespace grade
