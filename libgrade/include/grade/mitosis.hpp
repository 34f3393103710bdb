#pragma once
// Mitotic-figure detection: dark hematoxylin candidates at about 1 um/px, then trained CNNs in cascade on crops at
// 0.25 um/px around each candidate.
//
// Method. Stage 1 (cheap, every pixel): the image is area-averaged to `candidate_mpp` (1 um/px, 16x fewer pixels than
// 0.25 um/px), the hematoxylin optical density is obtained by colour deconvolution (Ruifrok & Johnston, Anal Quant
// Cytol Histol 2001) through per-channel look-up tables, smoothed, and its local maxima above `candidate_min_od` are the
// candidates (condensed chromatin is the densest hematoxylin in the tissue; this is the "dark blob" detector of the
// evaluation README, tuned for recall), each moved to the centroid of the dark mass around its peak. Stage 2 (only on
// candidates): a cheap screen network (the crop at 0.5 um/px, 15k parameters) drops the plain non-mitotic candidates
// (about 90 % of them in ordinary tumour), and a larger network (0.28 M parameters; conv / batch-norm / ReLU /
// max-pool, global average pooling; in the spirit of Ciresan et al., MICCAI 2013, and of the two-stage detectors of the
// MIDOG challenges, Aubreville et al., MedIA 2023) gives each remaining candidate the probability of being a mitotic
// figure from its 64x64 crop (16 um). The candidates it scores >= `verify_from` also go to a verifier: the same layers
// on a wider view (32 um around the candidate at 0.5 um/px: the cell's outline, its halo, its neighbours); their
// score is the mean of the two logits (an ensemble of two views, run only where it matters). The embedded verifier is
// itself two such networks trained with different seeds, their logits averaged inside one ONNX graph. All were trained
// on the AMi-Br patches (Bertram et al., BVM 2025) with look-alike negatives from the same patches and from nucleus
// data sets (tools/train/train_mitosis.py; provenance and numbers in benchmarks/README.md). Detections closer than
// `nms_radius_um` to a higher-scoring one are dropped (one figure, e.g. the two halves of an anaphase, gives one
// detection). Stage 3 (only on the detections): a locator network moves each detection to the centre of its figure
// (the soft-argmax of a map of 2 um cells over the 32 um around it; tools/train/train_mitosis_locate.py), since a
// figure is often found from one of its dark masses.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "grade/image.hpp"
#include "grade/stain.hpp"

namespace grade {

// A loaded mitosis classifier (an ONNX network: input N x 3 x 64 x 64 RGB scaled to 0..1, output N x 1 logits).
// detect_mitoses uses the model embedded in the library unless MitosisParams::model names another one (e.g. a
// cross-validation fold model in a benchmark). Immutable and safe to share between threads.
class MitosisModel {
 public:
  // `screen_onnx_bytes` (optional): a cheap network that runs on every candidate first, on the same crops averaged
  // 2x2 (input N x 3 x 32 x 32, 0.5 um/px, 0..1); only the candidates it passes (MitosisParams::screen_threshold) go
  // to the main network. `locate_onnx_bytes` (optional): the locator, which moves each detection to the centre of its
  // figure (input N x 3 x 64 x 64: a 128 x 128 crop at 0.25 um/px around the detection averaged 2x2; output N x 1 x
  // 16 x 16 logits over 2 um cells; MitosisParams::locate). Throws Error(model) when the bytes are not an ONNX network
  // OpenCV can run with the expected shapes.
  // `verify_onnx_bytes` (optional): the verifier, a second classifier with more context that runs only on the
  // candidates the main network scores >= MitosisParams::verify_from (input N x 3 x 64 x 64: a 128 x 128 crop at
  // 0.25 um/px averaged 2x2; output N x 1 logits; it may be an ensemble in one graph, train_mitosis.py --average).
  static std::shared_ptr<const MitosisModel> from_onnx(const std::vector<unsigned char>& onnx_bytes,
                                                       const std::vector<unsigned char>& screen_onnx_bytes = {},
                                                       const std::vector<unsigned char>& locate_onnx_bytes = {},
                                                       const std::vector<unsigned char>& verify_onnx_bytes = {});
  // The model compiled into the library: libgrade/models/mitosis_cnn.onnx (main) with mitosis_screen.onnx (screen),
  // mitosis_locate.onnx (locator) and mitosis_verify.onnx (verifier: two networks, logits averaged).
  static std::shared_ptr<const MitosisModel> embedded();

  struct Impl;
  explicit MitosisModel(std::unique_ptr<Impl> impl);
  ~MitosisModel();
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

struct MitosisParams {
  double working_mpp = 0.25;  // resolution of the classifier's crops (the model was trained at 0.25 um/px)
  // Operating threshold on the classifier probability. Chosen on the held-out source images of AMi-Br and the
  // nucleus sets (benchmarks/README.md, "Mitosis"): it trades recall for false positives per mm^2.
  double threshold = 0.9;
  StainVectors stains = standard_stains();

  // Stage 1 (candidates).
  double candidate_mpp = 1.0;       // resolution of the candidate search
  double candidate_min_od = 1.0;    // smoothed hematoxylin optical density a candidate peak must reach
  double candidate_sigma_um = 1.0;  // Gaussian smoothing of the hematoxylin density before peak finding
  double candidate_separation_um = 4.0;  // peaks closer than this to a denser one are merged into it
  // A candidate sits at the centroid of the density above candidate_centroid_fraction x its peak's, within
  // candidate_centroid_um of the peak (0 = at the peak). Centring the crops on the dark mass raised held-out recall at
  // the operating threshold from 0.735 to 0.787 with half the false positives (benchmarks/README.md, "Mitosis").
  double candidate_centroid_um = 6.0;
  double candidate_centroid_fraction = 0.3;

  // Stage 2 (classifier) and output.
  // Candidates the screen network gives a probability below this are scored 0 without running the main classifier
  // (0 = run the main classifier on every candidate; ignored for a model without a screen). 0.4 since the verifier
  // (seventh session): cross-validated on AMi-Br (scored fairly, see `locate`), recall at <= 3 FP/mm^2 0.844 against
  // 0.865 at 0.3, for 20 % more speed on grade-synth tissue (median 22.3 against 18.6 MP/s per core, alternated);
  // before the verifier it was 0.3 (benchmarks/README.md, "Mitosis").
  double screen_threshold = 0.4;
  // Test-time augmentation: the classifier's logit is averaged over this many of the 8 quarter turns and mirror images
  // of each crop (1 = none); the cost of stage 2 grows in proportion.
  int orientations = 1;
  // Candidates the main network scores at least this also go to the model's verifier (if it has one), and their score
  // becomes the mean of the two networks' logits (1 = never; 0 = every candidate the screen passes). The verifier
  // sees 32 um around the candidate at 0.5 um/px where the main network sees 16 um at 0.25 um/px: the cell's shape,
  // its halo and its neighbours. Cross-validated on AMi-Br (scored fairly, see `locate`), it raised recall at <= 3
  // false positives per mm^2 from 0.666 to 0.865 (screen 0.3) and cut detections on the nucleus images from 5.0 to 4.2
  // per mm^2 at 0.9. 0.5 was not tuned (0.2: 0.871; 0.8: 0.829 but 3.3 per mm^2 on the nucleus images). Averaging two
  // verifiers trained with different seeds (eighth session; screen 0.4) took the nucleus images from 3.9 to 3.0 per
  // mm^2 at 0.9 with the same AMi-Br recall (0.812 -> 0.813). The pair costs ~6 % of stage 2's time (~3 % each) on
  // grade-synth tissue (benchmarks/README.md, "Mitosis").
  double verify_from = 0.5;
  // Detections closer than this to a higher-scoring detection are dropped. 16 um because the two daughter chromatin
  // masses of a late anaphase / telophase lie 10-20 um apart and are counted as one figure (10 um counted many twice).
  double nms_radius_um = 16.0;
  // A detection that suppressed another scoring at least this (the highest such, within nms_radius_um) is reported at
  // the midpoint of the two: the two daughter masses of a telophase are one figure, and its centre lies between them.
  // Which detections are returned does not change (nor the count), only where; 0 = always at the detection's own
  // candidate. 0.9 (the operating threshold): two near-certain detections within the radius are one figure, or a
  // figure and a dark look-alike that outscored it, and the midpoint is nearer the figure's centre. On the held-out
  // AMi-Br patches it moved both false positives at 0.9 onto their figures; on all 2700 patches (training images
  // included) 470 of 2282 detections >= 0.9 moved (median 4 px), 7 onto a figure, 3 off one; 0.5 did worse
  // (benchmarks/README.md, "Mitosis").
  double midpoint_min_score = 0.9;
  // Stage 3: each returned detection is moved to the centre of its figure as the model's locator network finds it
  // (ignored for a model without one). The classifier finds a figure from one of its dark masses (a clump of a spread
  // prometaphase or atypical figure, one end of an anaphase), and that mark can lie 7.5-11 um from the figure's
  // centre. Which detections are returned (and the count) does not change, only where. Cross-validated on AMi-Br, it
  // raised recall at <= 3 false positives per mm^2 from 0.596 to 0.666 before the verifier, and from 0.811 to 0.844
  // with it (scored so that moves into the metric's ignored patch border hide no false positive; eval_mitosis.py as
  // is says 0.826 and 0.861; benchmarks/README.md, "Mitosis").
  bool locate = true;
  // Level-0 rectangle whose detections are wanted (e.g. a tile's core, the image being the core plus its context
  // margin); width or height 0 = the whole image. Only detections inside it are returned, and the same ones as
  // classifying every candidate would give; but only its own candidates are all classified. One within nms_radius_um
  // of it is classified only when it lies within that radius of a detection already found (it could suppress one
  // inside, directly or through a chain), so the margin costs almost no classifier time.
  Rect64 region;
  // Optional: level-0 points where no figure is looked for. Candidates there are neither classified nor able to
  // suppress others. The pipeline passes its necrosis map: FNCLCC counts mitoses in viable tumour, and the dark
  // karyorrhectic debris of necrosis is the classifier's commonest look-alike.
  std::function<bool(double x, double y)> exclude;
  std::shared_ptr<const MitosisModel> model;  // null = MitosisModel::embedded()
};

struct MitosisDetection {
  double x = 0.0, y = 0.0;  // level-0 pixels
  double score = 0.0;       // classifier probability of a mitotic figure, 0..1
};

std::vector<MitosisDetection> detect_mitoses(const ImageView& image, const MitosisParams& params = {});

// Stage 1 alone, for training and diagnostics: every candidate (level-0 pixels) with its smoothed hematoxylin optical
// density; candidates are in raster order of their peak at candidate_mpp.
struct MitosisCandidate {
  double x = 0.0, y = 0.0;  // level-0 pixels: the centroid of the dark mass (candidate_centroid_um)
  double density = 0.0;     // smoothed hematoxylin optical density at the peak
};
std::vector<MitosisCandidate> find_mitosis_candidates(const ImageView& image, const MitosisParams& params = {});

// Stage 2 alone: classifier probabilities of candidates given in level-0 pixels (same order). `image` is the view the
// candidates were found in.
std::vector<double> score_mitosis_candidates(const ImageView& image, const std::vector<MitosisCandidate>& candidates,
                                             const MitosisParams& params = {});

// Stage 3 alone: moves each detection (level-0 pixels) to the centre of its figure as the model's locator finds it;
// nothing happens when MitosisParams::locate is false or the model has no locator. `image` is the view the detections
// were found in.
void locate_mitoses(const ImageView& image, std::vector<MitosisDetection>& detections,
                    const MitosisParams& params = {});

}  // namespace grade
