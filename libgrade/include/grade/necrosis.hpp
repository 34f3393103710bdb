#pragma once
// Necrosis map: coagulative tumour necrosis against viable tumour and pink, nucleus-poor look-alikes.
//
// Method. The image is resampled to the working resolution (~2 um/px) and unmixed into haematoxylin and eosin optical
// densities (colour deconvolution, Ruifrok & Johnston, Anal Quant Cytol Histol 2001, with the caller's stain vectors).
// Per 16 um cell and over three neighbourhoods (~48, ~208 and ~400 um) seven features describe what a pathologist
// looks at: how much tissue there is (fat and oedema are mostly glass); the log mean H and log mean E densities
// (bone and hyalinised collagen are dense eosin, cartilage matrix is haematoxylin-tinged, necrosis is pale); the share
// of crisp-nucleus pixels, H above its ~14 um background (viable tumour is nucleus-rich; cartilage matrix and ghost
// cells are not crisp, which a plain H threshold cannot tell); texture as the log mean OD gradient of the image
// smoothed over ~6 um and the log spread of E density (bone, collagen and cartilage are smooth and homogeneous;
// necrotic debris is not); and saturation (ghost cells and debris are greyer). A logistic regression on the
// standardised features gives a probability per cell, interpolated to every pixel. Border refinement (two-scale
// hysteresis): the ~400 um windows erode necrosis along viable tumour by up to 200 um, so cells this full model calls
// necrotic seed regions that grow (up to refine_reach_um) through cells a second logistic regression on the ~48 and
// ~208 um features alone calls necrotic, and in those regions the second model's probability is used; nothing grows
// without a seed. Both models
// are trained on tile-labelled H&E tiles (post-chemotherapy osteosarcoma: Leavey et al., TCIA 2019,
// doi:10.7937/tcia.2019.bvhjhdas; Arunachalam et al., PLoS ONE 2019) with leave-one-case-out cross-validation, plus
// one grade-synth slide whose truth labels every cell (it teaches the pale, smooth synthetic necrosis and pins the
// border); see benchmarks/README.md for the numbers and the command.
// Why a linear model on few features: 30 labelled tiles from 4 cases cannot support a large model, and the features
// keep their meaning on other tissues.
#include <cstdint>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/image.hpp"
#include "grade/stain.hpp"

namespace grade {

struct NecrosisParams {
  double working_mpp = 2.0;  // resolution the features are computed at (0.5..8); the input is resampled to it
  double threshold = 0.5;    // probability at and above which a pixel is called necrotic
  // Border refinement: a necrotic region (full model, all three scales) grows by up to this distance into cells whose
  // finest-scale (~48 um) evidence is necrotic. The ~400 um windows erode necrosis by up to half their width (200 um)
  // along its border with viable tumour; small foci lose most of their area to that. 0 = no refinement (0..1000).
  double refine_reach_um = 200.0;
  // The embedded model was trained on densities from these standard vectors. A slide's own (Macenko) vectors shift
  // every density feature: on grade-synth they move the percentage by ~2 points, and per-tile estimates cost ~0.1 of
  // cross-validated accuracy on the osteosarcoma tiles. Keep the default unless the model is retrained with others.
  StainVectors stains = standard_stains();
};

struct NecrosisMap {
  cv::Mat probability;  // CV_32F 0..1, at the input's size (0 outside tissue)
  cv::Mat necrosis;     // CV_8U 255 = necrotic, at the input's size (always inside `tissue`)
  cv::Mat tissue;       // CV_8U 255 = tissue (not glass), at the input's size
  double necrotic_fraction = 0.0;  // necrotic pixels / tissue pixels (0 when there is no tissue)
  double tissue_fraction = 0.0;    // tissue pixels / all pixels
  // Where the maps sit (copied from the input view): micrometres per map pixel, level-0 pixels per map pixel and the
  // level-0 origin, so that areas and polygons can be reported without the view.
  double mpp = 0.0;
  double downsample = 1.0;
  std::int64_t x0 = 0, y0 = 0;
};

// Throws Error(invalid_argument) for an empty or non-RGB image, mpp <= 0, or parameters out of range.
NecrosisMap map_necrosis(const ImageView& image, const NecrosisParams& params = {});

// Necrotic and tumour areas of a map inside a tumour region. Areas add up over tiles (operator+=), so a slide's
// percentage is the ratio of the summed areas, never a mean of tile percentages.
struct NecrosisArea {
  double necrotic_mm2 = 0.0;  // necrotic area inside the region
  double tumour_mm2 = 0.0;    // region area (tissue inside the region)
  // necrotic / tumour x 100 (FNCLCC's "percentage of tumour necrosis"); 0 when there is no tumour area.
  double percent() const { return tumour_mm2 > 0.0 ? 100.0 * necrotic_mm2 / tumour_mm2 : 0.0; }
  NecrosisArea& operator+=(const NecrosisArea& o) {
    necrotic_mm2 += o.necrotic_mm2;
    tumour_mm2 += o.tumour_mm2;
    return *this;
  }
};

// `region` (optional): CV_8U mask of the map's size, non-zero = tumour; the tumour is tissue inside it. Empty = all
// tissue. Throws Error(invalid_argument) when the map has no mpp or the region's size or type is wrong.
NecrosisArea necrosis_area(const NecrosisMap& map, const cv::Mat& region = {});

// A polygon in level-0 pixels, as GeoJSON has it: rings[0] is the outline (counter-clockwise in image coordinates is
// not guaranteed), further rings are its holes. Rings are not closed (the first point is not repeated).
struct NecrosisPolygon {
  std::vector<std::vector<cv::Point2d>> rings;
};

struct NecrosisPolygonParams {
  double min_area_um2 = 2'000.0;  // necrotic pieces (and holes) smaller than this are left out
  double simplify_um = 4.0;       // Douglas-Peucker tolerance
};

// The necrosis mask as polygons in level-0 pixels (pixel edges: map pixel (i, j) covers level-0
// [x0 + j ds, x0 + (j+1) ds) x [y0 + i ds, ...)), for GeoJSON and QuPath. Order: by outline's top-left (y, then x).
std::vector<NecrosisPolygon> necrosis_polygons(const NecrosisMap& map, const NecrosisPolygonParams& params = {});

}  // namespace grade
