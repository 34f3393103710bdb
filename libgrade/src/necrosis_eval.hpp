#pragma once
// Cross-validation and scoring of the necrosis model on tile-labelled data (../shared/data/necrosis/osteosarcoma),
// shared by benchmarks/bench_necrosis_quality.cpp and tests/test_quality_necrosis.cpp. Header-only: it reads image
// files (which the library itself never does) and is compiled only into those programs.
//
// The scores follow ../shared/eval/eval_necrosis.py: a tile is called necrotic when its necrotic fraction is >= 0.5;
// accuracy, sensitivity, specificity at that cut; ROC AUC of the fraction (Mann-Whitney, ties count one half); and
// the mean absolute error, in percentage points, of the necrosis of random 3x3 mosaics of distinct tiles (predicted:
// mean of the 9 fractions; true: share of necrotic tiles). The mosaics here come from std::mt19937_64, not numpy's
// generator, so the mosaic MAE agrees with eval_necrosis.py only statistically (more mosaics, less noise).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/slide.hpp"
#include "grade/stain.hpp"
#include "necrosis_model.hpp"

namespace grade::detail {

struct NecrosisTileResult {
  std::string stem;
  std::string group;  // the case the tile comes from
  bool necrotic = false;
  double fraction = 0.0;
};

struct NecrosisScores {
  int tiles = 0, necrotic = 0;
  double accuracy = 0, sensitivity = 0, specificity = 0, auc = 0;
  double mosaic_mae_pp = 0, mosaic_prior_mae_pp = 0;
};

// The case of an osteosarcoma tile stem "<class>___Case-3-A18-11012-16647_113" -> "Case-3", "<class>___P9-B6-..." ->
// "P9": tiles of one case (patient) share staining and scanning, so they are held out together.
inline std::string necrosis_case_of(const std::string& stem) {
  std::string s = stem;
  const auto p = s.find("___");
  if (p != std::string::npos) s = s.substr(p + 3);
  const auto d1 = s.find('-');
  if (d1 == std::string::npos) return s;
  if (s.rfind("Case-", 0) == 0) {
    const auto d2 = s.find('-', d1 + 1);
    return d2 == std::string::npos ? s : s.substr(0, d2);
  }
  return s.substr(0, d1);
}

inline NecrosisScores score_necrosis_tiles(const std::vector<NecrosisTileResult>& r, int mosaics = 5000,
                                           std::uint64_t seed = 0) {
  NecrosisScores s;
  s.tiles = static_cast<int>(r.size());
  int tp = 0, tn = 0, fp = 0, fn = 0;
  for (const auto& t : r) {
    const bool call = t.fraction >= 0.5;
    s.necrotic += t.necrotic;
    tp += call && t.necrotic;
    tn += !call && !t.necrotic;
    fp += call && !t.necrotic;
    fn += !call && t.necrotic;
  }
  s.accuracy = r.empty() ? 0.0 : static_cast<double>(tp + tn) / static_cast<double>(r.size());
  s.sensitivity = tp + fn ? static_cast<double>(tp) / (tp + fn) : 0.0;
  s.specificity = tn + fp ? static_cast<double>(tn) / (tn + fp) : 0.0;
  // AUC: Mann-Whitney with average ranks for ties.
  std::vector<size_t> idx(r.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return r[a].fraction < r[b].fraction; });
  std::vector<double> rank(r.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && r[idx[j + 1]].fraction == r[idx[i]].fraction) ++j;
    for (size_t k = i; k <= j; ++k) rank[idx[k]] = (static_cast<double>(i + j) / 2.0) + 1.0;
    i = j + 1;
  }
  const double npos = s.necrotic, nneg = s.tiles - s.necrotic;
  double rs = 0;
  for (size_t i = 0; i < r.size(); ++i)
    if (r[i].necrotic) rs += rank[i];
  s.auc = npos > 0 && nneg > 0 ? (rs - npos * (npos + 1) / 2) / (npos * nneg) : 0.0;
  // Mosaics of 9 distinct tiles.
  if (r.size() >= 9) {
    std::mt19937_64 rng(seed);
    const double prior = npos / s.tiles;
    double err = 0, err_prior = 0;
    std::vector<size_t> pool(r.size());
    for (int m = 0; m < mosaics; ++m) {
      std::iota(pool.begin(), pool.end(), size_t{0});
      double tr = 0, pr = 0;
      for (size_t k = 0; k < 9; ++k) {  // partial Fisher-Yates
        std::uniform_int_distribution<size_t> u(k, pool.size() - 1);
        std::swap(pool[k], pool[u(rng)]);
        tr += r[pool[k]].necrotic;
        pr += r[pool[k]].fraction;
      }
      err += std::abs(pr / 9 - tr / 9);
      err_prior += std::abs(prior - tr / 9);
    }
    s.mosaic_mae_pp = 100.0 * err / mosaics;
    s.mosaic_prior_mae_pp = 100.0 * err_prior / mosaics;
  }
  return s;
}

struct NecrosisLabelledTile {
  std::string stem, group;
  bool necrotic = false;
  ImageView view;
  NecrosisFeatures features;  // at the working resolution of `params`
  NecrosisParams params;      // as used for `features` (stains: standard or estimated from the tile)
};

// Reads every labelled tile of `dir` (class prefix before "___"; Non-Viable-Tumor = necrotic) at `mpp` and computes
// its features, with params.stains or (`estimate`) each tile's own Macenko estimate. The embedded model uses the
// standard vectors: per-tile estimates on these tiles (many are nearly all bone, cartilage or glass) cost ~0.1 of
// accuracy and ~4 pp of mosaic error under cross-validation.
inline std::vector<NecrosisLabelledTile> load_necrosis_tiles(const std::filesystem::path& dir, double mpp,
                                                             const NecrosisParams& params = {}, bool estimate = false) {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string ext = e.path().extension().string();
    if (ext == ".jpg" || ext == ".png" || ext == ".tif" || ext == ".jpeg") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<NecrosisLabelledTile> out;
  for (const auto& f : files) {
    const std::string stem = f.stem().string();
    const auto p = stem.find("___");
    if (p == std::string::npos) continue;
    cv::Mat bgr = cv::imread(f.string(), cv::IMREAD_COLOR);
    if (bgr.empty()) throw Error(ErrorCode::corrupt, "cannot read " + f.string());
    NecrosisLabelledTile t;
    t.stem = stem;
    t.group = necrosis_case_of(stem);
    t.necrotic = stem.substr(0, p) == "Non-Viable-Tumor";
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    t.view = make_view(rgb, mpp);
    t.params = params;
    if (estimate) t.params.stains = estimate_stains(t.view).vectors;  // as the pipeline does per slide
    double wmpp = 0;
    const cv::Mat work = necrosis_working_image(t.view, t.params, &wmpp);
    t.features = necrosis_features(work, wmpp, t.params.stains);
    out.push_back(std::move(t));
  }
  return out;
}

// A grade-synth slide and its truth JSON as two training "tiles" with
// cell-level labels: cells at least 80 % inside the truth's necrosis polygons (necrotic) and cells at most 5 % inside
// (not necrotic); the cells in between (the border) are not used. Each weighs `weight` labelled tiles.
inline std::vector<NecrosisTrainingTile> load_synth_training(const std::string& tiff, const std::string& truth_json,
                                                            double weight = 2.0, const NecrosisParams& params = {},
                                                            bool estimate = false) {
  std::ifstream in(truth_json);
  if (!in) throw Error(ErrorCode::file_not_found, "cannot read " + truth_json);
  const nlohmann::json truth = nlohmann::json::parse(in);
  // Read as the pipeline reads it: through grade::Slide, at the working resolution (from the pyramid).
  const Slide slide = Slide::open(tiff);
  double wmpp = 0;
  const ImageView whole = slide.read_region_at_mpp({0, 0, slide.width(), slide.height()}, params.working_mpp);
  NecrosisParams sp = params;
  if (estimate) sp.stains = estimate_stains(whole).vectors;
  const cv::Mat work = necrosis_working_image(whole, sp, &wmpp);
  const double sx = static_cast<double>(work.cols) / truth.at("width").get<double>();
  const double sy = static_cast<double>(work.rows) / truth.at("height").get<double>();
  NecrosisTrainingTile nec, viable;
  nec.features = necrosis_features(work, wmpp, sp.stains);
  nec.necrotic = true;
  viable.features = nec.features;
  const int c = nec.features.cell_px, gh = nec.features.cell_tissue.rows, gw = nec.features.cell_tissue.cols;
  cv::Mat mask = cv::Mat::zeros(gh * c, gw * c, CV_32F);
  std::vector<std::vector<cv::Point>> polys;
  for (const auto& poly : truth.at("necrosis_polygons")) {
    std::vector<cv::Point> pts;
    for (const auto& pt : poly)
      pts.emplace_back(static_cast<int>(std::lround(pt.at(0).get<double>() * sx)),
                       static_cast<int>(std::lround(pt.at(1).get<double>() * sy)));
    polys.push_back(std::move(pts));
  }
  cv::fillPoly(mask, polys, cv::Scalar(1.0));
  cv::Mat frac;
  cv::resize(mask, frac, cv::Size(gw, gh), 0, 0, cv::INTER_AREA);
  nec.cells = frac >= 0.8f;
  nec.weight = viable.weight = weight;
  viable.cells = frac <= 0.05f;
  return {nec, viable};
}

// Leave-one-case-out: each tile is predicted (through map_necrosis_with, the run-time path) by a model trained on
// the other cases only.
inline std::vector<NecrosisTileResult> cross_validate_necrosis(const std::vector<NecrosisLabelledTile>& tiles,
                                                               const NecrosisTrainParams& train = {},
                                                               const NecrosisParams& params = {},
                                                               const std::string& maps_dir = {},
                                                               const std::vector<NecrosisTrainingTile>& extra = {}) {
  std::set<std::string> groups;
  for (const auto& t : tiles) groups.insert(t.group);
  std::vector<NecrosisTileResult> out(tiles.size());
  for (const auto& g : groups) {
    std::vector<NecrosisTrainingTile> tr = extra;  // e.g. synthetic slides: no case of their own, in every fold
    for (const auto& t : tiles)
      if (t.group != g) tr.push_back({t.features, t.necrotic, {}, 1.0});
    const NecrosisModel m = train_necrosis_model(tr, train);
    for (size_t i = 0; i < tiles.size(); ++i)
      if (tiles[i].group == g) {
        NecrosisParams p = tiles[i].params;
        p.threshold = params.threshold;
        p.refine_reach_um = params.refine_reach_um;
        const NecrosisMap map = map_necrosis_with(tiles[i].view, p, m);
        out[i] = {tiles[i].stem, g, tiles[i].necrotic, map.necrotic_fraction};
        if (!maps_dir.empty()) {  // debugging aid: the tile beside its probability map (necrotic pixels outlined)
          cv::Mat bgr, heat, p8;
          cv::cvtColor(tiles[i].view.rgb, bgr, cv::COLOR_RGB2BGR);
          map.probability.convertTo(p8, CV_8U, 255.0);
          cv::applyColorMap(p8, heat, cv::COLORMAP_JET);
          heat.setTo(cv::Scalar(255, 255, 255), map.tissue == 0);
          std::vector<std::vector<cv::Point>> cs;
          cv::findContours(map.necrosis.clone(), cs, cv::RETR_LIST, cv::CHAIN_APPROX_SIMPLE);
          cv::drawContours(bgr, cs, -1, cv::Scalar(0, 0, 0), 3);
          cv::Mat both;
          cv::hconcat(bgr, heat, both);
          cv::resize(both, both, cv::Size(), 0.5, 0.5, cv::INTER_AREA);
          cv::imwrite(maps_dir + "/" + tiles[i].stem + ".png", both);
        }
      }
  }
  return out;
}

}  // namespace grade::detail
