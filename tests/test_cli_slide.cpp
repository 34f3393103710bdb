// grade-slide's command line: usage errors (exit 2), slide errors naming the file (exit 1), a plain image with --mpp,
// --quiet, progress lines when stderr is not a terminal, --subtype / --field-diameter-mm in the report, and Ctrl-C
// (SIGINT) stopping cleanly with no report written. Inputs are drawn here; no ../shared/data needed.
#include <doctest/doctest.h>

#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/nuclei.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using grade::test::quote;
using grade::test::read_json;
using grade::test::slurp;
using grade::test::run;
using grade::test::TempDir;
using nlohmann::json;

namespace {

std::string slide_cmd() { return quote(grade::test::tool("grade-slide").string()); }

// Pink tissue with purple nuclei on glass (or only glass), as a PNG with no resolution of its own.
fs::path draw(const TempDir& dir, const std::string& name, int size, bool tissue = true) {
  const fs::path p = dir / name;
  grade::test::draw_tissue_png(p, size, tissue, 11);
  return p;
}

}  // namespace

TEST_CASE("grade-slide: usage errors exit 2 and say what is wrong") {
  TempDir dir("grade-cli-slide");
  const fs::path img = draw(dir, "a.png", 600);
  auto r = run(slide_cmd());
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("Usage") != std::string::npos);
  r = run(slide_cmd() + " --help");
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("leiomyosarcoma") != std::string::npos);  // known subtypes listed
  r = run(slide_cmd() + " " + quote(img.string()) + " --differentiation 5");
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--differentiation") != std::string::npos);
  r = run(slide_cmd() + " " + quote(img.string()) + " --hpf-area-mm2 0.2 --field-diameter-mm 0.5");
  CHECK(r.exit_code == 2);
  r = run(slide_cmd() + " " + quote(img.string()) + " --subtype 'no such sarcoma'");
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("no such sarcoma") != std::string::npos);
  r = run(slide_cmd() + " " + quote(img.string()) + " --nuclei some");
  CHECK(r.exit_code == 2);
  r = run(slide_cmd() + " " + quote(img.string()) + " --nuclei-flips 3");
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--nuclei-flips must be 1, 2, 4 or 8, got 3") != std::string::npos);
  r = run(slide_cmd() + " " + quote(img.string()) + " --nuclei-network turbo");
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--nuclei-network must be fast or accurate, got 'turbo'") != std::string::npos);
  r = run(slide_cmd() + " " + quote(img.string()) + " --bogus-option");
  CHECK(r.exit_code == 2);
}

TEST_CASE("grade-slide: slide problems exit 1 and name the file") {
  TempDir dir("grade-cli-slide");
  const fs::path out = dir / "out";
  auto r = run(slide_cmd() + " /nonexistent/slide.svs --quiet --out " + quote(out.string()));
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("/nonexistent/slide.svs") != std::string::npos);

  const fs::path img = draw(dir, "nompp.png", 600);
  r = run(slide_cmd() + " " + quote(img.string()) + " --quiet --out " + quote(out.string()));
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("nompp.png") != std::string::npos);
  CHECK(r.output.find("--mpp") != std::string::npos);

  const fs::path text = dir / "notes.svs";
  std::ofstream(text) << "this is not a slide\n";
  r = run(slide_cmd() + " " + quote(text.string()) + " --quiet --mpp 0.25 --out " + quote(out.string()));
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("notes.svs") != std::string::npos);

  const fs::path blank = draw(dir, "blank.png", 600, false);
  r = run(slide_cmd() + " " + quote(blank.string()) + " --quiet --mpp 0.5 --out " + quote(out.string()));
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("no tissue") != std::string::npos);

  const fs::path img2 = draw(dir, "b.png", 600);
  const fs::path roi = dir / "roi.geojson";
  std::ofstream(roi) << "{\"type\": \"Feature\", \"geometry\": ";  // truncated
  r = run(slide_cmd() + " " + quote(img2.string()) + " --quiet --mpp 0.5 --roi " + quote(roi.string()) + " --out " +
          quote(out.string()));
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("roi.geojson") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "report.json"));
}

TEST_CASE("grade-slide: a plain image with --mpp; --quiet; progress lines; report parameters") {
  TempDir dir("grade-cli-slide");
  const fs::path img = draw(dir, "plain.png", 1200);
  const fs::path out = dir / "out";
  const fs::path err = dir / "stderr.txt";
  auto r = run("sh -c " + quote(slide_cmd() + " " + quote(img.string()) +
                                " --mpp 0.5 --subtype leiomyosarcoma --field-diameter-mm 0.55 --threads 2 "
                                "--nuclei-flips 2 --nuclei-network accurate --out " +
                                quote(out.string()) + " 2>" + quote(err.string())));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("FNCLCC") != std::string::npos);
  // stderr is a file here, not a terminal: plain progress lines.
  const std::string progress = slurp(err);
  CHECK(progress.find("% tiles") != std::string::npos);
  CHECK(progress.find('\r') == std::string::npos);
  for (const char* f : {"report.json", "detections.geojson", "overlay.png", "hotspot.png"})
    CHECK_MESSAGE(fs::is_regular_file(out / f), f);
  const json rep = read_json(out / "report.json");
  CHECK(rep["schema"] == "libgrade-report/1");
  CHECK(rep["slide"]["mpp"] == doctest::Approx(0.5));
  CHECK(rep["slide"]["mpp_source"] == "caller");
  CHECK(rep["fnclcc"]["differentiation"] == 2);
  CHECK(rep["fnclcc"]["differentiation_source"] == "subtype");
  CHECK(rep["parameters"]["hpf_area_mm2"] == doctest::Approx(0.2376).epsilon(0.01));
  CHECK(rep["run"]["threads"] == 2);
  CHECK(rep["run"]["nuclei_engine"].get<std::string>() ==
        grade::detail::nuclei_engine_name(grade::NucleiNetwork::accurate));  // what this CPU runs, recorded
  CHECK(rep["parameters"]["nuclei_flips"] == 2);
  CHECK(rep["parameters"]["nuclei_network"] == "accurate");
  CHECK(rep["nuclei"]["count"].get<int>() > 0);

  const fs::path out2 = dir / "out2";
  r = run("sh -c " + quote(slide_cmd() + " " + quote(img.string()) + " --mpp 0.5 --quiet --out " +
                           quote(out2.string()) + " 2>" + quote(err.string())));
  CHECK(r.exit_code == 0);
  CHECK(slurp(err).empty());
  const json rep2 = read_json(out2 / "report.json");
  CHECK(rep2["fnclcc"]["complete"] == false);  // no differentiation given
  CHECK(rep2["fnclcc"]["differentiation"].is_null());
  CHECK(rep2["parameters"]["nuclei_flips"] == 1);
  CHECK(rep2["parameters"]["nuclei_network"] == "fast");
}

TEST_CASE("grade-slide: SIGINT stops cleanly without a report") {
  TempDir dir("grade-cli-slide");
  const fs::path img = draw(dir, "big.png", 6000);
  const fs::path out = dir / "out";
  // Start, let it get into the tile pass, interrupt, and collect the exit status.
  const std::string script = slide_cmd() + " " + quote(img.string()) + " --mpp 0.25 --threads 1 --nuclei all --out " +
                             quote(out.string()) + " & pid=$!; sleep 2; kill -INT $pid; wait $pid; echo \"rc=$?\"";
  auto r = run("sh -c " + quote(script));
  INFO(r.output);
  CHECK(r.output.find("rc=130") != std::string::npos);
  CHECK(r.output.find("interrupted") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "report.json"));
}
