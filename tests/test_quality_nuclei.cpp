// Nucleus segmentation quality on real data (../shared/data/nuclei), on images the embedded networks never saw in
// training (both were trained on the other cross-validation fold; benchmarks/README.md). Each floor is the score
// measured with bench_nuclei_quality on the same subset, minus 0.02: the test fails when a change makes it worse than
// that.
#include <doctest/doctest.h>

#include <cstdio>
#include <map>
#include <vector>
#include <set>
#include <string>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/nuclei.hpp"
#include "nuclei_eval.hpp"
#include "test_support.hpp"

namespace {

// Measured on these subsets (benchmarks/README.md, "nuclei" section).
constexpr double MONUSEG_AJI = 0.536, MONUSEG_F1 = 0.693, CPM15_AJI = 0.596, CPM15_F1 = 0.704, CONSEP_AJI = 0.469,
                 CONSEP_SPINDLE_F1 = 0.456;
// The same with four network passes per tile (NucleiParams::flips = 4).
constexpr double FLIPS4_MONUSEG_AJI = 0.546, FLIPS4_MONUSEG_F1 = 0.705, FLIPS4_CPM15_AJI = 0.610,
                 FLIPS4_CPM15_F1 = 0.725, FLIPS4_CONSEP_AJI = 0.472, FLIPS4_CONSEP_SPINDLE_F1 = 0.461;
// The accurate network (NucleiNetwork::accurate, one pass, its own post-processing settings; also trained on the other
// fold).
constexpr double ACCURATE_MONUSEG_AJI = 0.551, ACCURATE_MONUSEG_F1 = 0.705, ACCURATE_CPM15_AJI = 0.621,
                 ACCURATE_CPM15_F1 = 0.720, ACCURATE_CONSEP_AJI = 0.501, ACCURATE_CONSEP_SPINDLE_F1 = 0.477;
// The accurate network with four passes.
constexpr double ACCURATE4_MONUSEG_AJI = 0.556, ACCURATE4_MONUSEG_F1 = 0.718, ACCURATE4_CPM15_AJI = 0.628,
                 ACCURATE4_CPM15_F1 = 0.734, ACCURATE4_CONSEP_AJI = 0.509, ACCURATE4_CONSEP_SPINDLE_F1 = 0.499;

// A held-out image, decoded once for every test case that scores it (one pass and four).
struct Loaded {
  cv::Mat rgb, gt;
  double mpp;
  std::set<int> gt_spindle;
};

const std::vector<Loaded>& load(const std::string& dataset, const std::set<std::string>& names) {
  static std::map<std::string, std::vector<Loaded>> cache;
  auto [it, fresh] = cache.try_emplace(dataset);
  if (fresh) {
    const auto root = grade::test::shared_data_or_skip("nuclei quality needs ../shared/data/nuclei") / "nuclei";
    for (const auto& s : grade::detail::nuclei_dataset(root.string(), dataset)) {
      if (!names.count(s.name)) continue;
      Loaded l{{}, cv::imread(s.label_path, cv::IMREAD_UNCHANGED), s.mpp, s.gt_spindle};
      cv::cvtColor(cv::imread(s.image_path, cv::IMREAD_COLOR), l.rgb, cv::COLOR_BGR2RGB);
      it->second.push_back(std::move(l));
    }
  }
  return it->second;
}

grade::detail::NucleiMetrics score(const std::string& dataset, const std::set<std::string>& names, int flips = 1,
                                   grade::NucleiNetwork network = grade::NucleiNetwork::fast) {
  grade::detail::NucleiEvalSums total;
  int n = 0;
  for (const Loaded& l : load(dataset, names)) {
    const auto r = grade::segment_nuclei(grade::make_view(l.rgb, l.mpp), {.network = network, .flips = flips});
    std::set<int> sp;
    for (const auto& nu : r.nuclei)
      if (nu.spindle) sp.insert(nu.id);
    total += grade::detail::nuclei_image_sums(l.gt, r.labels, l.gt_spindle, sp);
    ++n;
  }
  REQUIRE(n == static_cast<int>(names.size()));
  const auto m = grade::detail::nuclei_metrics(total);
  MESSAGE(dataset << " (" << std::string(grade::nuclei_network_name(network)) << " network, flips " << flips
                  << "): AJI " << m.aji << " Dice " << m.dice << " F1 " << m.f1 << " PQ "
                  << m.pq << " spindle F1 " << m.sp_f1);
  return m;
}

const std::set<std::string> kMonuseg = {"TCGA-21-5784-01Z-00-DX1", "TCGA-50-5931-01Z-00-DX1",
                                         "TCGA-AR-A1AK-01Z-00-DX1", "TCGA-AR-A1AS-01Z-00-DX1",
                                         "TCGA-B0-5710-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1"};
const std::set<std::string> kCpm15 = {"image01", "image02", "image03", "image08", "image09", "image14", "image15"};

std::set<std::string> consep_names() {
  std::set<std::string> names;
  for (const std::string src : {"train_4", "train_5", "train_6", "train_7", "train_14", "train_15", "train_16",
                                "train_17", "train_20", "train_21", "train_22", "train_23"})
    for (int i = 0; i < 16; ++i) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s_%03d", src.c_str(), i);
      names.insert(buf);
    }
  return names;
}

}  // namespace

TEST_CASE("monuseg held-out images") {
  const auto m = score("monuseg", kMonuseg);
  CHECK(m.aji >= MONUSEG_AJI - 0.02);
  CHECK(m.f1 >= MONUSEG_F1 - 0.02);
}

TEST_CASE("cpm15 held-out images") {
  const auto m = score("cpm15", kCpm15);
  CHECK(m.aji >= CPM15_AJI - 0.02);
  CHECK(m.f1 >= CPM15_F1 - 0.02);
}

TEST_CASE("consep held-out tiles (the 192 tiles of 12 source images)") {
  const auto m = score("consep", consep_names());
  CHECK(m.aji >= CONSEP_AJI - 0.02);
  CHECK(m.sp_f1 >= CONSEP_SPINDLE_F1 - 0.02);
}

TEST_CASE("held-out images with test-time flips (4 network passes)") {
  const auto mo = score("monuseg", kMonuseg, 4);
  CHECK(mo.aji >= FLIPS4_MONUSEG_AJI - 0.02);
  CHECK(mo.f1 >= FLIPS4_MONUSEG_F1 - 0.02);
  const auto cp = score("cpm15", kCpm15, 4);
  CHECK(cp.aji >= FLIPS4_CPM15_AJI - 0.02);
  CHECK(cp.f1 >= FLIPS4_CPM15_F1 - 0.02);
  const auto co = score("consep", consep_names(), 4);
  CHECK(co.aji >= FLIPS4_CONSEP_AJI - 0.02);
  CHECK(co.sp_f1 >= FLIPS4_CONSEP_SPINDLE_F1 - 0.02);
}

TEST_CASE("the accurate network's own post-processing settings are the ones applied by default") {
  // On real crowded tiles the settings matter: unset, the labels are those of the accurate network's settings given
  // explicitly, and differ from those of the fast network's settings on some of the first 8 held-out tiles.
  const auto& tiles = load("consep", consep_names());
  REQUIRE(tiles.size() >= 8);
  const auto acc = grade::NucleiNetwork::accurate;
  int differ = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    const auto view = grade::make_view(tiles[i].rgb, tiles[i].mpp);
    const auto unset = grade::segment_nuclei(view, {.network = acc});
    const auto own = grade::segment_nuclei(view, {.network = acc, .contact_weight = 0.5, .offset_merge_tolerance = 0.30});
    const auto other = grade::segment_nuclei(view, {.network = acc, .contact_weight = 0.0, .offset_merge_tolerance = 0.35});
    CHECK(cv::countNonZero(unset.labels != own.labels) == 0);
    differ += cv::countNonZero(unset.labels != other.labels) > 0;
  }
  CHECK(differ > 0);
}

TEST_CASE("held-out images with the accurate network, one pass and four") {
  struct Floors {
    int flips;
    double monuseg_aji, monuseg_f1, cpm15_aji, cpm15_f1, consep_aji, consep_spindle_f1;
  };
  const Floors one{1, ACCURATE_MONUSEG_AJI, ACCURATE_MONUSEG_F1, ACCURATE_CPM15_AJI, ACCURATE_CPM15_F1,
                   ACCURATE_CONSEP_AJI, ACCURATE_CONSEP_SPINDLE_F1};
  const Floors four{4, ACCURATE4_MONUSEG_AJI, ACCURATE4_MONUSEG_F1, ACCURATE4_CPM15_AJI, ACCURATE4_CPM15_F1,
                    ACCURATE4_CONSEP_AJI, ACCURATE4_CONSEP_SPINDLE_F1};
  for (const Floors& f : {one, four}) {
    CAPTURE(f.flips);
    const auto mo = score("monuseg", kMonuseg, f.flips, grade::NucleiNetwork::accurate);
    CHECK(mo.aji >= f.monuseg_aji - 0.02);
    CHECK(mo.f1 >= f.monuseg_f1 - 0.02);
    const auto cp = score("cpm15", kCpm15, f.flips, grade::NucleiNetwork::accurate);
    CHECK(cp.aji >= f.cpm15_aji - 0.02);
    CHECK(cp.f1 >= f.cpm15_f1 - 0.02);
    const auto co = score("consep", consep_names(), f.flips, grade::NucleiNetwork::accurate);
    CHECK(co.aji >= f.consep_aji - 0.02);
    CHECK(co.sp_f1 >= f.consep_spindle_f1 - 0.02);
  }
}
