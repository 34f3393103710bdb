#pragma once
// Synthetic H&E whole-slide images with a known ground truth, for tests, the demo and benchmarks.
//
// Rendering is physical (Beer-Lambert law, as in colour deconvolution: Ruifrok & Johnston, Anal Quant Cytol Histol
// 2001): hematoxylin and eosin concentration maps are mixed through unit optical-density stain vectors,
// OD = c_H * h + c_E * e, and RGB = 255 * 10^-OD. The content follows the appearance of a spindle-cell sarcoma
// (leiomyosarcoma): fibrillar eosinophilic stroma in fascicles, cigar-shaped spindle nuclei aligned with them, rounder
// and pleomorphic nuclei, lymphocytes, mitotic figures in several phases (darker than any nucleus, with a clear halo),
// coagulative necrosis (pale eosinophilic, karyorrhectic dust and ghost outlines, no intact nuclei), and glass around
// an irregular tissue outline.
//
// Objects are generated per grid cell from a hash of (seed, cell), so the slide is rendered tile row by tile row with
// memory that does not grow with the slide's height (and only slowly with its width), and the output is
// byte-identical for a seed.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "grade/stain.hpp"

namespace grade {

struct SynthParams {
  std::int64_t width_px = 6000;   // level-0 size
  std::int64_t height_px = 6000;
  double mpp = 0.25;              // micrometres per level-0 pixel (0.1 .. 2)
  std::uint64_t seed = 1;

  // Mitotic activity, in mitoses per 10 HPF of hpf_area_mm2 (a Poisson process of that mean density): inside the
  // hotspot (a disc of hotspot_diameter_mm placed in viable tumour) and elsewhere in viable tumour.
  double hotspot_mitoses_per_10hpf = 25.0;
  double background_mitoses_per_10hpf = 3.0;
  double hotspot_diameter_mm = 1.6;
  double hpf_area_mm2 = 0.1734;   // FNCLCC's HPF; the truth's 10-HPF window is a square of 10 x this area
  int hpf_fields = 10;

  double necrosis_percent = 10.0;  // necrotic area / tissue area x 100 (0 .. 80); the truth gives the exact value
  double spindle_fraction = 0.7;   // fraction of tumour nuclei that are spindle-shaped (0 .. 1)
  double pleomorphic_fraction = 0.3;   // of the non-spindle tumour nuclei, fraction that are large and irregular
  double lymphocyte_fraction = 0.05;   // fraction of all nuclei that are lymphocytes
  double nuclei_per_mm2 = 4500.0;      // mean density of nuclei in viable tumour (varies +-40 % across the slide)
  double tissue_fraction = 0.95;       // how far the tissue outline reaches towards the slide's edges (0.3 .. 1)

  StainVectors stains = synth_default_stains();  // unit OD vectors, R, G, B order
  int tile_px = 256;        // TIFF tile size (multiple of 16)
  int jpeg_quality = 85;    // 1..100

  // H&E vectors typical of real 40x slides (matched to real tiles' median colours), the default rendering stains.
  static StainVectors synth_default_stains();
};

struct SynthSummary {
  std::int64_t width_px = 0, height_px = 0;
  int levels = 0;
  std::int64_t nuclei = 0;
  std::int64_t mitoses = 0;
  int hotspot_count = 0;            // mitoses in the best 10-HPF window (scaled to 10 HPF when the slide is smaller)
  double necrosis_percent = 0.0;
  double tissue_area_mm2 = 0.0;
  int mitosis_score = 1;
  int necrosis_score = 0;
};

// Progress: fraction done in [0, 1]. Called from the calling thread only.
using SynthProgress = std::function<void(double)>;

// Renders a synthetic slide to `slide_path` (tiled, pyramidal, JPEG-compressed TIFF with an Aperio-style
// ImageDescription and resolution tags, which OpenSlide opens with the right mpp) and writes the ground truth JSON to
// `truth_path`. Both are written to temporary names beside the targets and renamed at the end, so a failure leaves no
// half-written output. Throws grade::Error(invalid_argument) naming a bad parameter, Error(io) naming a file.
SynthSummary synthesize_slide(const SynthParams& params, const std::filesystem::path& slide_path,
                              const std::filesystem::path& truth_path, const SynthProgress& progress = {});

// Checks every parameter; throws grade::Error(invalid_argument) naming the first bad one.
void validate(const SynthParams& params);

// Brute-force densest 10-HPF window (the project's convention): an axis-aligned square of side
// sqrt(fields x hpf_area_mm2) inside the slide; its count is the number of points (level-0 px) inside
// [x, x+side) x [y, y+side); the best maximises the count, ties broken by the smallest y, then x. Exact: it tries
// every edge position that puts a point on the window's first or last row/column (clamped), plus a 32-px grid.
struct HotspotWindow {
  int count = 0;
  std::int64_t x = 0, y = 0, side_px = 0;
};
HotspotWindow brute_force_hotspot(const std::vector<std::pair<double, double>>& points, std::int64_t width_px,
                                  std::int64_t height_px, std::int64_t side_px);

}  // namespace grade
