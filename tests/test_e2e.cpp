// End to end on grade-synth slides (made here, in a temporary folder): G1, G2 and G3 slides graded exactly against
// the synthetic truth; a borderline slide flagged; a plain image with --mpp; the same report for 1 and 2 threads;
// truncated and unopenable slides giving their errors. Slides are small (2 x 2 mm) to keep the program within minutes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/fnclcc.hpp"
#include "grade/slide.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using grade::test::quote;
using grade::test::read_json;
using grade::test::slurp;
using grade::test::run;
using grade::test::TempDir;
using nlohmann::json;

namespace {

// 7000 px at 0.25 um/px = 1.75 mm: the tissue (~2.1-2.3 mm^2) exceeds the 1.734 mm^2 10-HPF window, so the count is
// a real hotspot count (not the scaled small-tumour case).
constexpr int kSide = 7000;

struct Synth {
  fs::path slide, truth;
};

Synth synth(const TempDir& dir, const std::string& name, const std::string& args, int side = kSide) {
  Synth s{dir / (name + ".tiff"), dir / (name + ".json")};
  const auto r = run(quote(grade::test::tool("grade-synth").string()) + " --quiet --out " + quote(s.slide.string()) +
                     " --truth " + quote(s.truth.string()) + " --width " + std::to_string(side) + " --height " +
                     std::to_string(side) + " " + args);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return s;
}

json grade_slide(const fs::path& slide, const fs::path& out, const std::string& args) {
  const auto r = run(quote(grade::test::tool("grade-slide").string()) + " " + quote(slide.string()) +
                     " --quiet --out " + quote(out.string()) + " " + args);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  MESSAGE(r.output);
  return read_json(out / "report.json");
}

// The grade the truth implies with the pathologist's differentiation score.
int truth_grade(const json& truth, int differentiation) {
  return grade::grade_from_total(differentiation + truth["mitosis_score"].get<int>() +
                                 truth["necrosis_score"].get<int>());
}

void check_graded_exactly(const json& rep, const json& truth, int differentiation, int expected_grade) {
  // The synthetic slide really is of the intended grade (so the test covers it) ...
  REQUIRE(truth_grade(truth, differentiation) == expected_grade);
  // ... and the tool gives that grade. The slides are chosen so that the grade survives a component off by one
  // category where that is plausible (e.g. G3 with differentiation 3 and >= 20 mitoses whatever the necrosis); the
  // components themselves are reported (WARN) so a drifting stage shows up here too.
  CHECK(rep["fnclcc"]["grade"] == expected_grade);
  CHECK(rep["fnclcc"]["complete"] == true);
  WARN(rep["fnclcc"]["mitosis_score"] == truth["mitosis_score"]);
  WARN(rep["fnclcc"]["necrosis_score"] == truth["necrosis_score"]);
  // Issue 5: the necrosis percentage within 5 points of the truth. The weakest case is the "plain" slide (seed 31,
  // three ~300 um foci, 10 %) read from its level-0 PNG: 5.3 % when written (6.2 % through the TIFF's pyramid;
  // benchmarks/README.md, "Necrosis map").
  CHECK(std::abs(rep["necrosis"]["percent"].get<double>() - truth["necrosis_percent"].get<double>()) <= 5.0);
  MESSAGE("count " << rep["mitoses"]["per_10hpf"] << " (truth " << truth["hotspot"]["count"] << "), necrosis "
                   << rep["necrosis"]["percent"] << " % (truth " << truth["necrosis_percent"] << ")");
}

// Issue 4: the count in the found window within 20 % (or 2) of the truth's count in its window.
void check_count_near_truth(const json& rep, const json& truth) {
  const double got = rep["mitoses"]["per_10hpf"].get<double>();
  const double want = truth["hotspot"]["count"].get<double>();
  INFO("count " << got << ", truth " << want);
  CHECK(std::abs(got - want) <= std::max(2.0, 0.2 * want));
}

// A grade-synth slide graded with `grade_args`: the grade is exact and the count near the truth's.
void check_synthetic_grade(const std::string& name, const std::string& synth_args, const std::string& grade_args,
                           int differentiation, int expected_grade) {
  TempDir dir("grade-e2e");
  const Synth s = synth(dir, name, synth_args);
  const json rep = grade_slide(s.slide, dir / name, grade_args);
  const json truth = read_json(s.truth);
  check_graded_exactly(rep, truth, differentiation, expected_grade);
  check_count_near_truth(rep, truth);
}

}  // namespace

// G1 and G2 were known failures with the single small classifier (26 counted for a truth of 2, 25 for 14: false
// positives on synthetic lymphocytes); the screen + main network of libgrade/models counts them right.
TEST_CASE("e2e: a G1 slide is graded exactly") {
  check_synthetic_grade("g1", "--seed 11 --hotspot-mitoses-per-10hpf 2 "
                        "--background-mitoses-per-10hpf 0.5 --necrosis-percent 0",
                        "-d 1 --threads 2 --nuclei none", 1, 1);
}

TEST_CASE("e2e: a G2 slide is graded exactly") {
  check_synthetic_grade("g2", "--seed 12 --hotspot-mitoses-per-10hpf 16 "
                        "--background-mitoses-per-10hpf 2 --necrosis-percent 20",
                        "-d 2 --threads 2 --nuclei none", 2, 2);
}

TEST_CASE("e2e: a G3 slide is graded exactly") {
  check_synthetic_grade("g3", "--seed 13 --hotspot-mitoses-per-10hpf 90 "
                        "--background-mitoses-per-10hpf 8 --necrosis-percent 60",
                        "--subtype 'pleomorphic leiomyosarcoma' --threads 2 --nuclei none", 3, 3);
}

TEST_CASE("e2e: a borderline slide is flagged; 1 and 2 threads give the same report") {
  TempDir dir("grade-e2e");
  // Necrosis near 50 % and a count near 10: both are where grades flip.
  const Synth s = synth(dir, "border", "--seed 21 --hotspot-mitoses-per-10hpf 14 --necrosis-percent 48");
  const json r1 = grade_slide(s.slide, dir / "t1", "-d 2 --threads 1");
  const json r2 = grade_slide(s.slide, dir / "t2", "-d 2 --threads 2");
  CHECK(r1["fnclcc"]["borderline"]["any"] == true);
  json a = r1, b = r2;
  for (json* j : {&a, &b}) {
    j->erase("timings");
    j->erase("run");
  }
  CHECK(a == b);
  CHECK(slurp(dir / "t1" / "detections.geojson") == slurp(dir / "t2" / "detections.geojson"));
}

TEST_CASE("e2e: a plain image with --mpp") {
  TempDir dir("grade-e2e");
  const Synth s = synth(dir, "plain", "--seed 31 --hotspot-mitoses-per-10hpf 60 --necrosis-percent 10");
  // The level-0 pixels of the synthetic slide, saved as a PNG (which carries no resolution).
  const grade::Slide slide = grade::Slide::open(s.slide);
  const grade::ImageView v = slide.read_region(grade::Rect64{0, 0, kSide, kSide}, 0);
  cv::Mat bgr;
  cv::cvtColor(v.rgb, bgr, cv::COLOR_RGB2BGR);
  const fs::path png = dir / "plain.png";
  REQUIRE(cv::imwrite(png.string(), bgr));
  const auto no_mpp = run(quote(grade::test::tool("grade-slide").string()) + " " + quote(png.string()) +
                          " --quiet --out " + quote((dir / "x").string()));
  CHECK(no_mpp.exit_code == 1);
  CHECK(no_mpp.output.find("--mpp") != std::string::npos);

  const json rep = grade_slide(png, dir / "png", "-d 3 --mpp 0.25 --threads 2 --nuclei none");
  CHECK(rep["slide"]["mpp_source"] == "caller");
  CHECK(rep["slide"]["width"] == kSide);
  // ~47 mitoses per 10 HPF and differentiation 3: G3 whatever the necrosis.
  check_graded_exactly(rep, read_json(s.truth), 3, 3);
}

TEST_CASE("e2e: truncated and unopenable slides give their errors") {
  TempDir dir("grade-e2e");
  const Synth s = synth(dir, "whole", "--seed 41", 2048);
  const std::string bytes = slurp(s.slide);
  const fs::path cut = dir / "truncated.tiff";
  std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 3));
  auto r = run(quote(grade::test::tool("grade-slide").string()) + " " + quote(cut.string()) + " --quiet --out " +
               quote((dir / "cut").string()));
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("truncated.tiff") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "cut" / "report.json"));

  const fs::path junk = dir / "junk.svs";
  std::ofstream(junk, std::ios::binary) << std::string(4096, '\x42');
  r = run(quote(grade::test::tool("grade-slide").string()) + " " + quote(junk.string()) + " --quiet --out " +
          quote((dir / "junk").string()));
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("junk.svs") != std::string::npos);
}
