// Quality of the necrosis map on ../shared/data/necrosis/osteosarcoma, cross-validated leave-one-case-out (each tile
// is predicted by a model trained without its case), scored as ../shared/eval/eval_necrosis.py does.
//
//   bench_necrosis_quality [--data DIR] [--mpp 1.0] [--l2 X] [--synth SLIDE.tiff TRUTH.json]... [--synth-weight W] [--threshold T] [--reach UM] [--estimate-stains] [--csv OUT.csv]
//                          [--maps DIR] [--image IMG --image-mpp X] [--write-model libgrade/models/necrosis.yml]
//
// --synth adds a grade-synth slide to every fold's training set (cells labelled from its truth polygons);
// --csv writes the out-of-fold predictions (image,necrotic_fraction) for eval_necrosis.py; --write-model trains on
// all tiles and writes the model the library embeds (this is the training command).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "grade/slide.hpp"
#include "grade/stain.hpp"
#include "necrosis_eval.hpp"

using namespace grade;
using namespace grade::detail;

int main(int argc, char** argv) {
  std::string data = std::string(GRADE_SHARED_DATA) + "/necrosis/osteosarcoma";
  std::string csv, model_out, maps, extra_image;
  double extra_mpp = 0.0;
  double synth_weight = 2.0;
  double threshold = NecrosisParams{}.threshold;
  double reach = NecrosisParams{}.refine_reach_um;
  bool estimate = false;  // Macenko per image instead of the standard vectors (an experiment; see necrosis_eval.hpp)  // 0 = the file's
  std::vector<std::pair<std::string, std::string>> synth;
  double mpp = 1.0;
  NecrosisTrainParams tp;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--data") data = next();
    else if (a == "--csv") csv = next();
    else if (a == "--write-model") model_out = next();
    else if (a == "--maps") maps = next();
    else if (a == "--image") extra_image = next();
    else if (a == "--threshold") threshold = std::stod(next());
    else if (a == "--reach") reach = std::stod(next());
    else if (a == "--estimate-stains") estimate = true;
    else if (a == "--synth-weight") synth_weight = std::stod(next());
    else if (a == "--synth") {
      const std::string tiff = next();
      synth.emplace_back(tiff, next());
    }
    else if (a == "--image-mpp") extra_mpp = std::stod(next());
    else if (a == "--mpp") mpp = std::stod(next());
    else if (a == "--l2") tp.l2 = std::stod(next());
    else {
      std::cerr << "usage: bench_necrosis_quality [--data DIR] [--mpp X] [--l2 X] [--synth TIFF JSON]... [--synth-weight W] [--threshold T] [--reach UM] [--estimate-stains] [--csv OUT] "
                   "[--maps DIR] [--image IMG --image-mpp X] [--write-model OUT]\n";
      return 2;
    }
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const auto tiles = load_necrosis_tiles(data, mpp, {}, estimate);
    std::vector<NecrosisTrainingTile> extra;
    for (const auto& [tiff, json] : synth)
      for (auto& t : load_synth_training(tiff, json, synth_weight, {}, estimate)) extra.push_back(std::move(t));
    NecrosisParams params;
    params.threshold = threshold;
    params.refine_reach_um = reach;
    const auto res = cross_validate_necrosis(tiles, tp, params, maps, extra);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-62s %6s %6s %8s\n", "tile (leave-one-case-out)", "case", "truth", "fraction");
    for (const auto& r : res)
      std::printf("%-62s %6s %6d %8.3f%s\n", r.stem.c_str(), r.group.c_str(), int(r.necrotic), r.fraction,
                  (r.fraction >= 0.5) != r.necrotic ? "  WRONG" : "");
    const auto s = score_necrosis_tiles(res);
    std::printf("necrosis LOCO-CV: tiles=%d necrotic=%d acc=%.4f sens=%.4f spec=%.4f AUC=%.4f mosaicMAE=%.2f pp "
                "(constant prior: %.2f pp) [%.1f s]\n",
                s.tiles, s.necrotic, s.accuracy, s.sensitivity, s.specificity, s.auc, s.mosaic_mae_pp,
                s.mosaic_prior_mae_pp, secs);
    if (!csv.empty()) {
      std::ofstream f(csv);
      f << "image,necrotic_fraction\n";
      for (const auto& r : res) f << r.stem << "," << r.fraction << "\n";
    }
    // Resubstitution (trained and scored on all tiles), for reference only: the gap to the CV numbers is overfitting.
    std::vector<NecrosisTrainingTile> all = extra;
    for (const auto& t : tiles) all.push_back({t.features, t.necrotic, {}, 1.0});
    NecrosisModel m = train_necrosis_model(all, tp);
    std::vector<NecrosisTileResult> in;
    for (const auto& t : tiles) in.push_back({t.stem, t.group, t.necrotic, map_necrosis_with(t.view, t.params, m).necrotic_fraction});
    const auto si = score_necrosis_tiles(in);
    std::printf("necrosis resubstitution: acc=%.4f AUC=%.4f mosaicMAE=%.2f pp\n", si.accuracy, si.auc, si.mosaic_mae_pp);
    const auto names = necrosis_feature_names();
    for (size_t k = 0; k < names.size(); ++k)
      std::printf("  w[%-24s] = %+.3f (mean %.3f, sd %.3f)\n", names[k].c_str(), m.weights[k], m.mean[k], m.scale[k]);
    std::printf("  bias = %+.3f\n", m.bias);
    for (size_t k = 0; k < m.fine_weights.size(); ++k)
      std::printf("  fine w[%-24s] = %+.3f\n", names[k].c_str(), m.fine_weights[k]);
    std::printf("  fine bias = %+.3f\n", m.fine_bias);
    if (!extra_image.empty()) {  // e.g. a grade-synth slide, read as the pipeline reads it (at the working mpp)
      SlideOpenParams op;
      op.mpp_override = extra_mpp;
      const Slide slide = Slide::open(extra_image, op);
      NecrosisParams np;
      const ImageView whole = slide.read_region_at_mpp({0, 0, slide.width(), slide.height()}, np.working_mpp);
      if (estimate) np.stains = estimate_stains(whole).vectors;
      const NecrosisMap em = map_necrosis_with(whole, np, m);
      if (!maps.empty()) {
        cv::Mat p8;
        em.probability.convertTo(p8, CV_8U, 255.0);
        cv::imwrite(maps + "/extra_probability.png", p8);
      }
      std::printf("%s: necrotic fraction of tissue %.4f, tissue fraction %.4f\n", extra_image.c_str(),
                  em.necrotic_fraction, em.tissue_fraction);
    }
    if (!model_out.empty()) {
      std::string synth_note, synth_args;
      for (const auto& [tiff, json] : synth) {
        synth_note += ", plus grade-synth slide " + tiff + " (cell labels from its truth, weight " +
                      std::to_string(synth_weight) + " tiles per class)";
        synth_args += " --synth " + tiff + " " + json + " --synth-weight " + std::to_string(synth_weight);
      }
      m.provenance = "logistic regressions, full (" + std::to_string(necrosis_feature_count()) +
                     " features) and border refinement (the first " +
                     std::to_string(necrosis_fine_feature_count()) + "), IRLS, l2=" + std::to_string(tp.l2) + ", on all " +
                     std::to_string(tiles.size()) +
                     " tiles of ../shared/data/necrosis/osteosarcoma (Leavey et al., TCIA 2019, CC BY 3.0) at mpp " +
                     std::to_string(mpp) + synth_note + "; command: bench_necrosis_quality" + synth_args +
                     " --write-model " + model_out;
      write_necrosis_model(m, model_out);
      std::printf("wrote %s\n", model_out.c_str());
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_necrosis_quality: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
