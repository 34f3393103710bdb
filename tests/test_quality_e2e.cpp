// grade-slide on the real error fixtures of ../shared/data (skipped where it is absent): a truncated SVS, a file
// that opens but cannot be read, a file that is not a slide; and a real 20x H&E region graded end to end.
#include <doctest/doctest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace fs = std::filesystem;
using grade::test::quote;
using grade::test::run;
using grade::test::TempDir;

namespace {

grade::test::CommandResult grade_slide(const fs::path& slide, const fs::path& out, const std::string& args = "") {
  return run(quote(grade::test::tool("grade-slide").string()) + " " + quote(slide.string()) + " --quiet --out " +
             quote(out.string()) + " " + args);
}

}  // namespace

TEST_CASE("real fixtures: broken, unreadable and unopenable slides exit 1 naming the file") {
  const fs::path data = grade::test::shared_data_or_skip("needs wsi/ fixtures");
  TempDir dir("grade-quality-e2e");
  for (const fs::path& rel : {fs::path("wsi/broken.svs"), fs::path("wsi/fixtures/unreadable.svs"),
                             fs::path("wsi/fixtures/unopenable.tiff")}) {
    const auto r = grade_slide(data / rel, dir / rel.stem(), "--mpp 0.25");
    INFO(rel.string() << ": " << r.output);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find(rel.filename().string()) != std::string::npos);
    CHECK_FALSE(fs::exists(dir / rel.stem() / "report.json"));
  }
}

TEST_CASE("real slide: CMU-1 small region (20x) is graded with a complete report") {
  const fs::path data = grade::test::shared_data_or_skip("needs wsi/cmu-1-small-region.svs");
  TempDir dir("grade-quality-e2e");
  const auto r = grade_slide(data / "wsi/cmu-1-small-region.svs", dir / "cmu", "-d 2 --threads 2");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::ifstream in(dir / "cmu" / "report.json");
  const auto rep = nlohmann::json::parse(in);
  CHECK(rep["slide"]["mpp"].get<double>() == doctest::Approx(0.499).epsilon(0.01));
  CHECK(rep["tissue"]["area_mm2"].get<double>() > 0.3);
  CHECK(rep["fnclcc"]["grade"].is_number());
  // 20x is coarser than the detector's 0.25 um/px: the report must say so.
  bool warned = false;
  for (const auto& w : rep["warnings"]) warned = warned || w.get<std::string>().find("coarser") != std::string::npos;
  CHECK(warned);
}
