#pragma once
// Internals of the necrosis stage: the local-window features, the logistic model over them, and its training. They
// are in the library (not in a script) so that the quality benchmark and test can re-train the model per
// cross-validation fold with exactly the code the run time uses.
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/necrosis.hpp"

namespace grade::detail {

// Side of one feature cell, micrometres. The map is decided per cell and interpolated between cell centres.
inline constexpr double necrosis_cell_um = 16.0;

// Per-cell features of an RGB image at the working resolution (see necrosis.hpp for what they are and why).
struct NecrosisFeatures {
  cv::Mat values;        // CV_32F, rows = cells (row-major over the grid), cols = necrosis_feature_count()
  cv::Mat cell_tissue;   // CV_32F grid (rows x cols of cells): tissue pixels / pixels of each cell
  int cell_px = 8;       // cell side in working-resolution pixels
};

int necrosis_feature_count();
// Feature rows run from the finest neighbourhood to the widest; the border refinement model (map_necrosis_with) uses
// the first this many of them (the ~48 and ~208 um scales).
int necrosis_fine_feature_count();
std::vector<std::string> necrosis_feature_names();

// `rgb` is CV_8UC3 (R, G, B) at `mpp` (the working resolution). Also returns the working-resolution tissue mask.
NecrosisFeatures necrosis_features(const cv::Mat& rgb, double mpp, const StainVectors& stains, cv::Mat* tissue = nullptr);

// Logistic regression on standardised features: p = 1 / (1 + exp(-(bias + sum w_k (x_k - mean_k) / scale_k))).
struct NecrosisModel {
  std::vector<double> mean, scale, weights;
  double bias = 0.0;
  // The border refinement model: a second logistic regression on the finer scales' features only (the first
  // necrosis_fine_feature_count() columns, same standardisation), trained on the same cells. It places the necrosis
  // border closer than the full model's ~400 um windows do; used only in and around regions the full model found
  // (map_necrosis_with).
  std::vector<double> fine_weights;
  double fine_bias = 0.0;
  std::string provenance;  // free text: data and command it was trained with
};

// The model compiled into the library (libgrade/models/necrosis.yml).
const NecrosisModel& embedded_necrosis_model();
NecrosisModel read_necrosis_model(const std::string& yaml_text);
void write_necrosis_model(const NecrosisModel& model, const std::string& path);

// One labelled training image: its features and the label of the whole image (tile-level labels, as in the
// osteosarcoma set). Cells with less than half tissue are not used.
struct NecrosisTrainingTile {
  NecrosisFeatures features;
  bool necrotic = false;
  // Optional CV_8U mask over the cell grid (non-zero = use the cell): lets one image with pixel-level truth (a
  // grade-synth slide) give a necrotic and a viable training "tile".
  cv::Mat cells;
  double weight = 1.0;  // relative to a labelled tile
};

struct NecrosisTrainParams {
  double l2 = 3.0;          // ridge penalty on the standardised weights (x 1e-3, total sample weight is 1)
  int iterations = 30;      // Newton (IRLS) steps at most
  double min_cell_tissue = 0.5;
};

// Deterministic: every tile weighs the same, and both classes weigh the same in total (tile labels are noisy at
// cell level; equal tile weights stop large tissue-rich tiles from dominating).
NecrosisModel train_necrosis_model(const std::vector<NecrosisTrainingTile>& tiles, const NecrosisTrainParams& params = {});

// map_necrosis with a given model (the public function uses the embedded one).
NecrosisMap map_necrosis_with(const ImageView& image, const NecrosisParams& params, const NecrosisModel& model);

// The image resampled to the working resolution as map_necrosis does it, and that resolution.
cv::Mat necrosis_working_image(const ImageView& image, const NecrosisParams& params, double* working_mpp);

}  // namespace grade::detail
