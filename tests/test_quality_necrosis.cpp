// Quality of the necrosis map on ../shared/data/necrosis/osteosarcoma (30 tiles, tile labels, 4 cases), measured the
// way the model is trained (benchmarks/README.md): leave-one-case-out cross-validation, each fold trained on the other
// cases plus a grade-synth slide (seed 11, 45 % necrosis), every tile predicted through the run-time map. Scores as
// ../shared/eval/eval_necrosis.py defines them. Targets (issue 5): accuracy >= 0.85, AUC >= 0.90, mosaic MAE <= 8 pp.
// Measured with the border refinement and the ~6 um texture (benchmarks/README.md): accuracy 0.867, AUC 0.920, mosaic
// MAE 7.57 pp (7.93 by eval_necrosis.py's 200 numpy mosaics) - the margins are thin, and the test holds the issue's
// targets, not a looser bar.
#include <doctest/doctest.h>

#include "grade/necrosis.hpp"
#include "necrosis_eval.hpp"
#include "test_support.hpp"

using namespace grade;
using namespace grade::detail;

TEST_CASE("osteosarcoma tiles, leave-one-case-out: accuracy, AUC and mosaic error meet the targets") {
  const auto data = test::shared_data_or_skip("necrosis quality needs the osteosarcoma tiles");
  test::TempDir dir("grade-necrosis-quality");
  const auto tiff = dir / "train.tiff", json = dir / "train.json";
  const auto r = test::run(test::quote(test::tool("grade-synth").string()) + " -q --seed 11 --necrosis-percent 45 --out " +
                           test::quote(tiff.string()) + " --truth " + test::quote(json.string()));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);

  const auto tiles = load_necrosis_tiles(data / "necrosis" / "osteosarcoma", 1.0);
  REQUIRE(tiles.size() == 30);
  const auto synth = load_synth_training(tiff.string(), json.string());
  const auto res = cross_validate_necrosis(tiles, {}, {}, {}, synth);
  const auto s = score_necrosis_tiles(res);
  for (const auto& t : res)
    if ((t.fraction >= 0.5) != t.necrotic) MESSAGE("wrong: " << t.stem << " fraction " << t.fraction);
  MESSAGE("LOCO-CV acc " << s.accuracy << " AUC " << s.auc << " mosaic MAE " << s.mosaic_mae_pp << " pp (constant prior "
                         << s.mosaic_prior_mae_pp << " pp)");
  CHECK(s.accuracy >= 0.85);
  CHECK(s.auc >= 0.90);
  CHECK(s.mosaic_mae_pp <= 8.0);
  CHECK(s.mosaic_mae_pp < s.mosaic_prior_mae_pp - 2.0);

  // Reproducibility: training on everything gives the embedded model (unless grade-synth's rendering has changed
  // since it was trained: then this warns, and the model should be retrained with the command in benchmarks/README).
  std::vector<NecrosisTrainingTile> all = synth;
  for (const auto& t : tiles) all.push_back({t.features, t.necrotic, {}, 1.0});
  const NecrosisModel m = train_necrosis_model(all);
  const NecrosisModel& e = embedded_necrosis_model();
  double diff = std::abs(m.bias - e.bias);
  for (size_t k = 0; k < m.weights.size(); ++k) diff = std::max(diff, std::abs(m.weights[k] - e.weights[k]));
  diff = std::max(diff, std::abs(m.fine_bias - e.fine_bias));
  for (size_t k = 0; k < m.fine_weights.size(); ++k)
    diff = std::max(diff, std::abs(m.fine_weights[k] - e.fine_weights[k]));
  WARN_MESSAGE(diff < 1e-4, "the embedded necrosis model differs from a fresh training run by " << diff);
}

TEST_CASE("the embedded model on the osteosarcoma tiles (resubstitution: an upper bound, not a quality claim)") {
  const auto data = test::shared_data_or_skip("necrosis quality needs the osteosarcoma tiles");
  const auto tiles = load_necrosis_tiles(data / "necrosis" / "osteosarcoma", 1.0);
  std::vector<NecrosisTileResult> res;
  for (const auto& t : tiles) res.push_back({t.stem, t.group, t.necrotic, map_necrosis(t.view).necrotic_fraction});
  const auto s = score_necrosis_tiles(res);
  MESSAGE("resubstitution acc " << s.accuracy << " AUC " << s.auc << " mosaic MAE " << s.mosaic_mae_pp << " pp");
  // Guards against a broken embedded model (e.g. features changed without retraining).
  CHECK(s.accuracy >= 0.85);
  CHECK(s.auc >= 0.90);
}
