#pragma once
// Nucleus instance segmentation and per-nucleus features, with a spindle-cell classification.
//
// Method. A small fully-convolutional network (a U-Net in the spirit of Ronneberger et al., MICCAI 2015, whose finest
// level is at half the working resolution) predicts, per pixel at `working_mpp`, (1) nucleus foreground, (2) the
// distance to the nucleus boundary normalised per nucleus to 1 on its medial axis (a per-instance distance map, as in
// Naylor et al., IEEE TMI 2019, "Segmentation of nuclei in histopathology images by deep regression of the distance
// map"), (3) whether the pixel belongs to a spindle-shaped nucleus, and (4, 5) the horizontal and vertical offset of
// the pixel from its nucleus's centre, scaled to -1..1 across the nucleus (HoVer-Net's maps, Graham et al., Medical
// Image Analysis 2019). The network was trained on CoNSeP, MoNuSeg and
// CPM-15 (tools/train/train_nuclei.py; benchmarks/README.md gives the command, data and held-out scores) and is
// embedded in the library (libgrade/models/nuclei_unet.onnx, and a wider, slower, more accurate one beside it: see
// NucleiNetwork), run by libgrade's own AVX-512 or AVX2 kernels (src/direct_unet.hpp; by OpenCV dnn on other CPUs).
// Instances come from a marker-controlled watershed (Beucher & Meyer 1993) on the predicted distance: markers are the
// connected regions where the distance exceeds `marker_threshold`; they flood the foreground in order of decreasing
// distance, and two basins that meet less than `merge_depth` below the lower of their peaks are merged (dynamics,
// Grimaud 1992). Because the distance is normalised per nucleus, the marker of a thin spindle nucleus runs along its
// whole axis (it is never cut in pieces), while two touching nuclei are separated by the valley of the distance between
// them. The offset maps then undo over-splitting: touching instances whose union still fits one nucleus's offsets
// (score under `offset_merge_tolerance`) are merged. They can also deepen the valleys (where two nuclei touch, an
// offset falls from +1 to -1 within a pixel or two; `contact_weight` times that fall is taken off the distance before
// seeding). That step is off for the fast network (with an earlier network it cut drawn spindle nuclei in two, and on
// the fast one it trades CoNSeP for MoNuSeg and CPM-15) and on for the accurate one, whose offset maps are cleaner. A
// three-output network (no offset maps) runs too, without either step.
//
// Spindle rule (documented so it can be checked by eye): a nucleus is spindle-shaped when it is
//   - elongated:  elongation (major / minor axis of the moment-equivalent ellipse) >= spindle_min_elongation,
//   - smooth:     solidity (area / convex-hull area) >= spindle_min_solidity (no notches or lobes),
//   - blunt-ended or spindle-textured: the network's mean spindle probability over the nucleus
//                 >= spindle_min_probability; the network learned CoNSeP's fibroblast / smooth-muscle / endothelial
//                 class, i.e. the appearance of elongated nuclei with blunt (cigar-shaped) ends in fascicles, and
//   - aligned with its neighbours, or the network is confident: alignment (the mean of cos(2 * angle difference)
//                 to the nuclei whose centres lie within spindle_neighbourhood_um, weighted by their elongation) >=
//                 spindle_min_alignment, or the spindle probability >= spindle_confident_probability.
// Nucleus::spindle_probability, alignment and bluntness are exposed so callers can apply their own rule.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/image.hpp"
#include "grade/stain.hpp"

namespace grade {

// Which embedded network segments the nuclei. `fast` (the default, libgrade/models/nuclei_unet.onnx: 16-16-32
// channels, ~2.7k multiply-adds per input pixel) is the one the speed target is measured with. `accurate`
// (nuclei_unet_accurate.onnx: the same U-Net with 32-32-64 channels, ~10.4k multiply-adds per pixel, trained by the
// same command with --widths 32,32,64 --steps 16000) scores higher on every data set held out (pooled cross-validation,
// with its own post-processing settings: CoNSeP AJI 0.486 against 0.452, spindle F1 0.435 against 0.418, MoNuSeg
// 0.548 against 0.525, CPM-15 0.643 against 0.618) for about 2.7 times the CPU time of the nucleus stage: a better use
// of that time than 4 test-time flips of the fast one (benchmarks/README.md, "Twenty-first session" and
// "Twenty-second session"). Both are the fold-1 networks (trained on fold 0).
enum class NucleiNetwork { fast, accurate };

// The post-processing each embedded network was tuned with (NucleiParams::contact_weight and offset_merge_tolerance,
// when unset). Fast: no contact step, tolerance 0.35. Accurate: contact 0.5, tolerance 0.30, chosen on its training
// side; on the images it did not see (pooled cross-validation) they raise CoNSeP AJI by 0.009 and MoNuSeg AJI by 0.005
// over the fast network's settings, and cost CPM-15 0.002 (benchmarks/README.md, "Twenty-second session").
constexpr double default_contact_weight(NucleiNetwork network) { return network == NucleiNetwork::accurate ? 0.5 : 0.0; }
constexpr double default_offset_merge_tolerance(NucleiNetwork network) {
  return network == NucleiNetwork::accurate ? 0.30 : 0.35;
}

// "fast" / "accurate" (report.json, the tools' options); parse_nuclei_network returns false for any other name.
const char* nuclei_network_name(NucleiNetwork network);
bool parse_nuclei_network(const std::string& name, NucleiNetwork* network);

struct NucleiParams {
  NucleiNetwork network = NucleiNetwork::fast;
  // The image is resampled to this scale internally; results are at the input's scale. 0.5 um/px is where the network
  // was trained: nuclei are 10-40 px across and a thin spindle nucleus still 4-6 px wide, at a quarter of the pixels
  // of 0.25 um/px (speed).
  double working_mpp = 0.5;
  StainVectors stains = standard_stains();  // for the hematoxylin features (mean_h_od, std_h_od)
  // Post-processing thresholds, chosen on the images the fast network trained on (never on the held-out ones the
  // quality test uses; benchmarks/README.md gives the sweep); they suit the accurate network too (checked on its
  // training side). The merge depth is a compromise: MoNuSeg and CPM-15 gain from merging more (their large nuclei are
  // over-split), CoNSeP's small touching nuclei from merging less.
  double foreground_threshold = 0.6;  // network foreground probability above which a pixel belongs to a nucleus
  double marker_threshold = 0.3;      // normalised distance above which a pixel seeds a nucleus
  double merge_depth = 0.12;          // markers whose basins meet less than this below the lower peak are merged
  double min_area_um2 = 6.0;          // smaller instances are dropped (debris, noise)
  // With a network that also predicts offset maps (five outputs, as both embedded ones): the weight of the contact
  // evidence taken off the distance, and the score (0 = one nucleus, 0.75 = two) under which touching instances are
  // merged; 0 turns either step off. Unset, the network's own settings apply (default_contact_weight,
  // default_offset_merge_tolerance below), chosen on the images it trained on like the rest: a higher tolerance helps
  // MoNuSeg and CPM-15 (fewer over-split large nuclei), a lower one and the contact step CoNSeP (fewer merged small
  // ones). A network given by file (detail::set_thread_nuclei_model) gets the settings of `network`.
  std::optional<double> contact_weight = std::nullopt;
  std::optional<double> offset_merge_tolerance = std::nullopt;
  // The spindle rule (see the top of this header), chosen the same way (spindle F1 on CoNSeP training tiles):
  // CoNSeP's spindle class includes obliquely cut fibroblasts, so the elongation threshold is low, and the learned
  // probability carries most of the decision.
  double spindle_min_elongation = 1.1;
  double spindle_min_solidity = 0.8;
  double spindle_min_probability = 0.3;
  double spindle_confident_probability = 0.4;
  double spindle_min_alignment = 0.2;
  double spindle_neighbourhood_um = 30.0;
  // Network tiles at working_mpp: core size and the context margin around it (multiples of 8). Results do not depend on
  // how the caller tiles the slide, only on the input image; memory is bounded by one tile. An 8 px margin is enough:
  // cut into 128 px tiles (8x the seams of 1024 px ones), MoNuSeg scores the same with 8 and 16 px margins (AJI within
  // 0.001; 0 px loses 0.014), and 16 px would cost 3 % more network time per 1024 px tile.
  int tile_px = 1024;
  int tile_margin_px = 8;
  // Test-time augmentation: the network also runs on mirrored (2: left-right; 4: and up-down, and both) or, with 8,
  // also transposed copies of each tile, and its outputs are averaged (the offset maps turned back with the copy).
  // Costs that many network passes; 1 (the default) runs it once.
  int flips = 1;
};

// The values NucleiParams::flips accepts: 1, 2, 4 or 8 (checked by segment_nuclei, grade_slide and the tools).
constexpr bool valid_flips(int flips) { return flips == 1 || flips == 2 || flips == 4 || flips == 8; }
// The values NucleiParams::network accepts (an enum can hold others; checked by segment_nuclei and grade_slide).
constexpr bool valid_network(NucleiNetwork network) {
  return network == NucleiNetwork::fast || network == NucleiNetwork::accurate;
}

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
  double spindle_probability = 0.0;  // the network's mean spindle probability over the nucleus
  double alignment = 0.0;            // orientation agreement with neighbours, in [-1, 1] (0 when it has none)
  double bluntness = 1.0;            // area / area of the moment-equivalent ellipse (> 1: blunt, < 1: tapered ends)
  bool spindle = false;
};

struct NucleiResult {
  cv::Mat labels;  // CV_32S instance labels at the input's size, 0 = background
  std::vector<Nucleus> nuclei;
};

// Throws Error(invalid_argument) for empty, non-RGB or mpp-less input and bad parameters, Error(model) if the
// embedded network cannot be run.
NucleiResult segment_nuclei(const ImageView& image, const NucleiParams& params = {});

// The evidence to check a segmentation by eye: a copy of the image (RGB, CV_8UC3) with each nucleus's outline drawn on
// its own outermost pixels (those with a 4-neighbour outside the nucleus), spindle nuclei in yellow and the others in
// cyan, so that the outlines cover exactly the labelled pixels' edge. `result` must come from this image (labels of
// the same size); throws Error(invalid_argument) otherwise.
cv::Mat render_nuclei_overlay(const ImageView& image, const NucleiResult& result);
inline const cv::Vec3b kSpindleOutline{255, 230, 0};  // RGB
inline const cv::Vec3b kOtherOutline{0, 200, 255};

namespace detail {
// For evaluating other networks (cross-validation in benchmarks): the ONNX model used instead of the embedded ones
// (whatever NucleiParams::network says) by the calling thread, until reset with an empty vector.
void set_thread_nuclei_model(std::vector<unsigned char> onnx);
// Merges touching instances of `labels` (CV_32S) that the offset maps `h`, `v` (CV_32F, 0..1 for -1..1, as the
// network gives them) show to be parts of one nucleus (score below `tolerance`; see nuclei.cpp). Exposed for tests.
void merge_by_offsets(cv::Mat& labels, const cv::Mat& h, const cv::Mat& v, double tolerance);
// The network's probability maps for an RGB image (CV_8UC3) already at the working scale: foreground, distance,
// spindle and, for the embedded network, the horizontal and vertical offsets (0..1 for -1..1); params.flips,
// tile_px and tile_margin_px apply. Exposed for tests.
std::vector<cv::Mat> network_maps(const cv::Mat& rgb, const NucleiParams& params = {});
// Which implementation runs the nucleus network for the calling thread (for benchmarks and tests that compare them):
// libgrade's own kernels with the best instruction set the CPU has (AVX-512F, else AVX2 with FMA; the default; see
// src/direct_unet.hpp), those kernels with AVX2 even where AVX-512F is there, or OpenCV dnn. The kernels run only
// networks with the embedded networks' layout; any other runs on OpenCV dnn.
enum class NucleiEngine { best, avx2, opencv };
void set_thread_nuclei_engine(NucleiEngine engine);
// What runs `network` (or the thread's model) for the calling thread: "direct AVX-512", "direct AVX2" or "OpenCV dnn".
const char* nuclei_engine_name(NucleiNetwork network);
}  // namespace detail

}  // namespace grade
