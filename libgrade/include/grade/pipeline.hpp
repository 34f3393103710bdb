#pragma once
// The whole-slide pipeline: tissue mask on a thumbnail -> Macenko stain estimate on its tissue pixels -> one parallel
// pass over tissue tiles (mitoses at ~0.25 um/px, nuclei at ~0.5 um/px, necrosis at ~2 um/px, each tile decoded once)
// -> slide-level aggregation (hotspot 10-HPF window, necrosis %, spindle fraction) -> FNCLCC (fnclcc.hpp).
//
// Why this shape: FNCLCC asks for the count in the most active 10-HPF area over the whole tumour and for the necrotic
// fraction of the whole tumour (Trojani et al. 1984; Coindre 2006), so every tissue tile must be seen; memory stays
// bounded by the tiles in flight (plus maps at the tile-grid resolution, ~8 um/px), never by the slide size.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/count.hpp"
#include "grade/fnclcc.hpp"
#include "grade/image.hpp"
#include "grade/mitosis.hpp"
#include "grade/necrosis.hpp"
#include "grade/nuclei.hpp"
#include "grade/slide.hpp"
#include "grade/stain.hpp"
#include "grade/tissue.hpp"

namespace grade {

// A polygon in level-0 pixels, as GeoJSON has it: rings[0] is the outline, further rings are holes. Rings need not be
// closed (a repeated first point is accepted).
struct Polygon {
  std::vector<std::vector<cv::Point2d>> rings;
};

// Which tissue tiles the nucleus stage runs on. Nuclei only feed descriptive numbers (spindle fraction, nuclear
// features), not the grade, so a deterministic sample is enough on large slides.
enum class NucleiSampling {
  all_tissue,  // every tissue tile
  sample,      // every k-th tissue tile in raster order, k chosen so that about nuclei_sample_fraction are analysed,
               // but at least nuclei_min_tiles of them (all tiles of a slide that has fewer)
  none         // skip the nucleus stage
};

// "all_tissue", "sample" or "none", as report.json's parameters.nuclei_sampling gives it.
const char* nuclei_sampling_name(NucleiSampling sampling);

struct GradeParams {
  // Differentiation: the pathologist's score 1..3, or a subtype name (fnclcc.hpp, differentiation_from_subtype) when
  // no score is given. Both empty -> the report gives the possible grades and is marked incomplete.
  std::optional<int> differentiation;
  std::string subtype;

  HpfParams hpf;               // 10-HPF window (area per field and number of fields)
  double mpp_override = 0.0;   // used only by the grade_slide(path, ...) overload when opening; 0 = the file's mpp

  // Tumour region of interest in level-0 pixels (union of the polygons), e.g. read_roi_geojson(). Empty = all tissue.
  std::vector<Polygon> roi;

  // Worker threads; 0 = std::thread::hardware_concurrency(). OpenCV's own parallel loops (inside the stages) come on
  // top; the tools call cv::setNumThreads(1) so that N workers use N cores (tools/common/cli.hpp).
  int threads = 0;
  double tile_um = 512.0;            // side of a tile's core (the part whose detections it keeps), micrometres
  double tile_margin_um = 24.0;      // context read around the core so border objects are seen whole
  double necrosis_margin_um = 160.0; // context for the necrosis map (read separately at its own, coarse resolution)
  double grid_um = 8.0;              // resolution of the tissue, tumour and necrosis maps (one cell, micrometres)
  double thumbnail_mpp = 8.0;        // resolution of the thumbnail used for tissue detection and overlays
  // The stain estimate runs on a finer overview (at 8 um/px nuclei and stroma blur into one colour and Macenko's two
  // extreme angles move together): stain_mpp, or coarser so that it stays under stain_max_pixels (4 MP keeps the read
  // on a coarse pyramid level of a large slide: with 8 MP a 40k x 40k slide decoded its whole 1 um/px level and the
  // thumbnail phase took 23 s).
  double stain_mpp = 2.0;
  std::int64_t stain_max_pixels = 4'000'000;

  NucleiSampling nuclei_sampling = NucleiSampling::sample;
  double nuclei_sample_fraction = 0.125;  // with NucleiSampling::sample
  int nuclei_min_tiles = 8;               // idem: a small slide is not judged on one or two tiles

  TissueParams tissue;
  StainParams stain;
  NucleiParams nuclei;      // its `stains` are replaced by the slide's estimate
  MitosisParams mitosis;    // idem
  NecrosisParams necrosis;  // used as given: its model expects the standard vectors (necrosis.hpp)
};

// One progress step. `phase` is "thumbnail", "tiles" or "aggregate"; fraction is 0..1 over the whole run.
struct Progress {
  std::string phase;
  std::int64_t tiles_done = 0;
  std::int64_t tiles_total = 0;
  double fraction = 0.0;
};
// Called from pipeline threads, never concurrently (calls are serialised), in order of increasing tiles_done.
using ProgressCallback = std::function<void(const Progress&)>;

struct NucleiSummary {
  std::int64_t count = 0;          // nuclei whose centres lie in the analysed tile cores inside the tumour region
  std::int64_t spindle = 0;
  double spindle_fraction = 0.0;   // spindle / count (0 when count is 0)
  double mean_area_um2 = 0.0;
  double mean_elongation = 0.0;
  double mean_h_od = 0.0;
  double density_per_mm2 = 0.0;    // count / analysed area
  double analysed_area_mm2 = 0.0;  // tumour area of the analysed tiles
  std::int64_t tiles_analysed = 0;
  std::string sampling;            // "all_tissue", "sample 1/k" or "none"
};

struct NecrosisSummary {
  double percent = 0.0;            // necrotic area / tumour area x 100
  double area_mm2 = 0.0;           // necrotic area inside the tumour region
};

struct Timings {
  double thumbnail_s = 0.0;  // thumbnail, tissue mask, stains
  double tiles_s = 0.0;      // the tile pass
  double aggregate_s = 0.0;  // count, necrosis %, grading
  double total_s = 0.0;
  // Summed over tiles (CPU-seconds across threads): where the tile pass spends its time.
  double read_s = 0.0, mitosis_s = 0.0, nuclei_s = 0.0, necrosis_s = 0.0;
};

// Everything report.json holds, plus the low-resolution maps the overlay and GeoJSON writers draw from.
struct SlideReport {
  // slide
  std::string slide_path;
  std::string vendor;
  std::int64_t width = 0, height = 0;  // level 0
  double mpp = 0.0;                    // micrometres per level-0 pixel used
  std::string mpp_source;
  std::optional<double> objective_power;

  // parameters as used
  GradeParams params;                  // roi included
  std::optional<int> differentiation;  // resolved (score given, or from the subtype)
  std::string differentiation_source;  // "pathologist", "subtype", or "" when unknown
  int threads_used = 1;
  // What ran the nucleus network: "direct AVX-512", "direct AVX2" (libgrade's own kernels) or "OpenCV dnn"; the same
  // function to float rounding. Empty with NucleiSampling::none.
  std::string nuclei_engine;

  StainEstimate stains;
  double tissue_area_mm2 = 0.0;   // all tissue on the slide
  double tumour_area_mm2 = 0.0;   // tissue inside the ROI (= tissue_area_mm2 without an ROI)
  std::int64_t tiles = 0;         // tissue tiles processed

  NucleiSummary nuclei;
  MitoticCount mitotic_count;
  bool count_scaled = false;                 // the tumour is smaller than the window: count scaled to `fields` HPF
  std::vector<MitosisDetection> mitoses;     // every detection in the tumour region, sorted by (y, x)
  std::vector<MitosisDetection> hotspot_mitoses;  // those counted in the hotspot window, sorted by (y, x)
  NecrosisSummary necrosis;

  FnclccResult fnclcc;
  std::vector<std::string> warnings;
  Timings timings;
  std::string software_version;

  // Maps on a grid of `grid_px` level-0 pixels per cell, origin (0, 0), covering the slide. CV_8U 255 = yes, except
  // necrosis_fraction (CV_32F, necrotic fraction of each cell).
  double grid_px = 0.0;
  cv::Mat tissue_grid, tumour_grid, necrosis_grid;
  cv::Mat necrosis_fraction;
  // The thumbnail (RGB) and its level-0 pixels per pixel, for overlay.png.
  cv::Mat thumbnail;
  double thumbnail_downsample = 1.0;
};

// Grades one slide. Throws grade::Error: missing_mpp when neither the slide nor the caller gives the resolution,
// invalid_argument for bad parameters (naming them), cancelled when *cancel becomes true (checked between tiles; no
// partial result), and whatever the slide reader throws (corrupt, ...). A slide (or ROI) without tissue is an
// Error(invalid_argument) saying so: there is nothing to grade, and a grade computed from zero counts would mislead.
SlideReport grade_slide(const Slide& slide, const GradeParams& params = {}, const ProgressCallback& progress = {},
                        const std::atomic<bool>* cancel = nullptr);

// Opens `path` (with params.mpp_override) and grades it.
SlideReport grade_slide(const std::filesystem::path& path, const GradeParams& params = {},
                        const ProgressCallback& progress = {}, const std::atomic<bool>* cancel = nullptr);

// Whether level-0 point (x, y) lies in the polygon union (even-odd rule within each polygon's rings).
bool roi_contains(const std::vector<Polygon>& roi, double x, double y);

}  // namespace grade
