// The whole-slide pipeline and the report writers on small drawn images (no ../shared/data needed): ROI reading,
// report.json / GeoJSON structure, the output folder and its completeness check, parameter errors, cancellation,
// a slide without tissue, and the same report for 1 and 2 threads.
#include <doctest/doctest.h>

#include <atomic>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "grade/pipeline.hpp"
#include "grade/report.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using grade::test::TempDir;
using nlohmann::json;

namespace {

// A plain image at 0.5 um/px: glass with an elliptic piece of pink tissue full of purple nuclei, a few dark blobs.
fs::path draw_slide(const TempDir& dir, const std::string& name, bool tissue = true, int size = 1600) {
  const fs::path p = dir / name;
  grade::test::draw_tissue_png(p, size, tissue, 7, 12);
  return p;
}

grade::Slide open_at(const fs::path& p, double mpp) {
  grade::SlideOpenParams op;
  op.mpp_override = mpp;
  return grade::Slide::open(p, op);
}

// report.json without the parts that may differ between runs (timings, thread count).
json stable(const grade::SlideReport& r) {
  json j = json::parse(grade::report_json(r));
  j.erase("timings");
  j.erase("run");
  return j;
}

grade::SlideReport handmade_report() {
  grade::SlideReport r;
  r.slide_path = "x.svs";
  r.vendor = "aperio";
  r.width = 4000;
  r.height = 3000;
  r.mpp = 0.25;
  r.mpp_source = "openslide";
  r.grid_px = 32;
  r.tissue_grid = cv::Mat::zeros(94, 125, CV_8U);
  cv::rectangle(r.tissue_grid, cv::Rect(10, 10, 80, 60), cv::Scalar(255), cv::FILLED);
  r.tumour_grid = r.tissue_grid.clone();
  r.necrosis_grid = cv::Mat::zeros(94, 125, CV_8U);
  cv::rectangle(r.necrosis_grid, cv::Rect(20, 20, 10, 10), cv::Scalar(255), cv::FILLED);
  r.necrosis_fraction = cv::Mat::zeros(94, 125, CV_32F);
  r.thumbnail = cv::Mat(94, 125, CV_8UC3, cv::Scalar(240, 200, 220));
  r.thumbnail_downsample = 32;
  r.mitoses = {{1000.5, 900.0, 0.9}, {1200.0, 1000.0, 0.8}, {3000.0, 2000.0, 0.7}};
  r.hotspot_mitoses = {r.mitoses[0], r.mitoses[1]};
  r.mitotic_count.count = 2;
  r.mitotic_count.window = grade::Rect64{800, 800, 1000, 1000};
  r.mitotic_count.window_area_mm2 = 0.0625;
  r.count_scaled = true;
  r.fnclcc.mitosis_score = 1;
  r.fnclcc.possible_grades = {1, 2};
  r.warnings = {"something to say"};
  return r;
}

}  // namespace

TEST_CASE("ROI GeoJSON as QuPath exports it") {
  const std::string feature = R"({"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[100,0],[100,100],[0,100],[0,0]],[[40,40],[60,40],[60,60],[40,60],[40,40]]]},"properties":{"objectType":"annotation"}})";
  auto roi = grade::parse_roi_geojson(feature);
  REQUIRE(roi.size() == 1);
  CHECK(roi[0].rings.size() == 2);
  CHECK(roi[0].rings[0].size() == 4);  // closing point dropped
  CHECK(grade::roi_contains(roi, 10, 10));
  CHECK_FALSE(grade::roi_contains(roi, 50, 50));  // in the hole
  CHECK_FALSE(grade::roi_contains(roi, 150, 50));

  const std::string collection = R"({"type":"FeatureCollection","features":[
    {"type":"Feature","geometry":{"type":"Point","coordinates":[5,5]},"properties":{}},
    {"type":"Feature","geometry":{"type":"MultiPolygon","coordinates":[[[[0,0],[10,0],[10,10]]],[[[20,20],[30,20],[30,30]]]]},"properties":{}}]})";
  CHECK(grade::parse_roi_geojson(collection).size() == 2);
  // QuPath 0.2 exported a bare array of features.
  CHECK(grade::parse_roi_geojson("[" + feature + "," + feature + "]").size() == 2);

  auto code_of = [](const std::string& text) {
    try {
      grade::parse_roi_geojson(text, "roi.geojson");
    } catch (const grade::Error& e) {
      CHECK(std::string(e.what()).find("roi.geojson") != std::string::npos);
      return e.code();
    }
    return grade::ErrorCode::internal;
  };
  CHECK(code_of("{not json") == grade::ErrorCode::invalid_argument);
  CHECK(code_of(R"({"type":"Feature","geometry":{"type":"Point","coordinates":[1,2]}})") ==
        grade::ErrorCode::invalid_argument);
  CHECK(code_of(R"({"type":"Polygon","coordinates":[[[0,0],[1,1]]]})") == grade::ErrorCode::invalid_argument);
  CHECK_THROWS_AS(grade::read_roi_geojson("/nonexistent/roi.geojson"), grade::Error);
}

TEST_CASE("report.json: versioned schema with every section") {
  const grade::SlideReport r = handmade_report();
  const json j = json::parse(grade::report_json(r));
  CHECK(j["schema"] == "libgrade-report/1");
  for (const char* key : {"software", "slide", "parameters", "stains", "tissue", "nuclei", "mitoses", "necrosis",
                          "fnclcc", "warnings", "timings", "files"})
    CHECK_MESSAGE(j.contains(key), key);
  CHECK(j["mitoses"]["per_10hpf"] == 2);
  CHECK(j["mitoses"]["hotspot"]["window"]["width"] == 1000);
  CHECK(j["mitoses"]["hotspot"]["count_scaled"] == true);
  CHECK(j["mitoses"]["hotspot"]["mitoses"].size() == 2);
  CHECK(j["mitoses"]["total_detected"] == 3);
  CHECK(j["fnclcc"]["grade"].is_null());
  CHECK(j["fnclcc"]["possible_grades"] == json::array({1, 2}));
  CHECK(j["parameters"]["hpf_area_mm2"] == doctest::Approx(0.1734));
}

TEST_CASE("detections.geojson: QuPath objects in level-0 pixels") {
  const grade::SlideReport r = handmade_report();
  const json j = json::parse(grade::detections_geojson(r));
  CHECK(j["type"] == "FeatureCollection");
  int mitoses = 0, hotspot = 0, tissue = 0, necrosis = 0;
  for (const auto& f : j["features"]) {
    CHECK(f["type"] == "Feature");
    const auto& p = f["properties"];
    const std::string cls = p["classification"]["name"];
    CHECK(p["classification"]["color"].size() == 3);
    if (cls == "Mitosis") {
      ++mitoses;
      CHECK(p["objectType"] == "detection");
    } else {
      CHECK(p["objectType"] == "annotation");
    }
    if (cls == "Hotspot") {
      ++hotspot;
      const auto& ring = f["geometry"]["coordinates"][0];
      CHECK(ring[0][0] == 800);
      CHECK(ring[2][0] == 1800);
    }
    if (cls == "Tissue") {
      ++tissue;
      // The tissue block spans grid cells 10..89 x 10..69, i.e. level-0 x in [320, 2880).
      for (const auto& pt : f["geometry"]["coordinates"][0]) {
        CHECK(pt[0].get<double>() >= 320.0 - 1e-6);
        CHECK(pt[0].get<double>() <= 2880.0 + 1e-6);
      }
    }
    if (cls == "Necrosis") ++necrosis;
    const auto& ring = f["geometry"]["coordinates"][0];
    CHECK(ring.front() == ring.back());  // closed rings
  }
  CHECK(mitoses == 3);
  CHECK(hotspot == 1);
  CHECK(tissue == 1);
  CHECK(necrosis == 1);
}

TEST_CASE("output folder: report.json last, completeness check") {
  TempDir dir("grade-pipeline");
  const fs::path img = draw_slide(dir, "plain.png");
  const grade::Slide slide = open_at(img, 0.5);
  grade::SlideReport r = handmade_report();
  r.mpp = 0.5;
  r.mitotic_count.window = grade::Rect64{100, 100, 600, 600};
  const fs::path out = dir / "out";
  CHECK_FALSE(grade::has_complete_report(out));
  grade::write_slide_outputs(slide, r, out);
  CHECK(grade::has_complete_report(out));
  for (const char* f : {"report.json", "detections.geojson", "overlay.png", "hotspot.png"})
    CHECK_MESSAGE(fs::is_regular_file(out / f), f);
  const cv::Mat hot = cv::imread((out / "hotspot.png").string());
  CHECK(hot.cols == 600);  // the 600 px window read at the slide's 0.5 um/px (never finer than the slide)
  for (const auto& e : fs::directory_iterator(out)) CHECK(e.path().filename().string().rfind(".tmp-", 0) != 0);

  // A missing evidence file or a truncated report.json makes the folder incomplete.
  fs::remove(out / "overlay.png");
  CHECK_FALSE(grade::has_complete_report(out));
  grade::write_slide_outputs(slide, r, out);
  CHECK(grade::has_complete_report(out));
  std::ofstream(out / "report.json") << "{\"schema\": \"libgrade-rep";
  CHECK_FALSE(grade::has_complete_report(out));
}

TEST_CASE("grade_slide: parameter and input errors name the problem") {
  TempDir dir("grade-pipeline");
  const fs::path img = draw_slide(dir, "plain.png");
  auto error_of = [](const auto& f) -> std::pair<grade::ErrorCode, std::string> {
    try {
      f();
    } catch (const grade::Error& e) {
      return {e.code(), e.what()};
    }
    return {grade::ErrorCode::internal, "no error"};
  };
  {
    const grade::Slide s = grade::Slide::open(img);  // a PNG has no mpp
    auto [code, msg] = error_of([&] { grade::grade_slide(s); });
    CHECK(code == grade::ErrorCode::missing_mpp);
  }
  const grade::Slide s = open_at(img, 0.5);
  grade::GradeParams p;
  p.differentiation = 4;
  auto [c1, m1] = error_of([&] { grade::grade_slide(s, p); });
  CHECK(c1 == grade::ErrorCode::invalid_argument);
  CHECK(m1.find("differentiation") != std::string::npos);
  p = {};
  p.subtype = "no such sarcoma";
  auto [c2, m2] = error_of([&] { grade::grade_slide(s, p); });
  CHECK(c2 == grade::ErrorCode::invalid_argument);
  CHECK(m2.find("no such sarcoma") != std::string::npos);
  p = {};
  p.tile_um = 1.0;
  CHECK(error_of([&] { grade::grade_slide(s, p); }).first == grade::ErrorCode::invalid_argument);
  p = {};
  p.nuclei.flips = 3;  // checked before any tile is read, not in a worker
  auto [c3, m3] = error_of([&] { grade::grade_slide(s, p); });
  CHECK(c3 == grade::ErrorCode::invalid_argument);
  CHECK(m3.find("nuclei.flips must be 1, 2, 4 or 8 (got 3)") != std::string::npos);
  p.nuclei.flips = 1;
  p.nuclei.network = grade::NucleiNetwork{7};
  auto [c4, m4] = error_of([&] { grade::grade_slide(s, p); });
  CHECK(c4 == grade::ErrorCode::invalid_argument);
  CHECK(m4.find("nuclei.network must be fast or accurate (got 7)") != std::string::npos);
}

TEST_CASE("grade_slide: no tissue is a clear error; an ROI off the tissue too") {
  TempDir dir("grade-pipeline");
  const grade::Slide blank = open_at(draw_slide(dir, "blank.png", false), 0.5);
  try {
    grade::grade_slide(blank);
    FAIL("no error");
  } catch (const grade::Error& e) {
    CHECK(std::string(e.what()).find("no tissue") != std::string::npos);
    CHECK(std::string(e.what()).find("blank.png") != std::string::npos);
  }
  const grade::Slide s = open_at(draw_slide(dir, "plain.png"), 0.5);
  grade::GradeParams p;
  p.roi = grade::parse_roi_geojson(R"({"type":"Polygon","coordinates":[[[0,0],[60,0],[60,60],[0,60]]]})");
  CHECK_THROWS_AS(grade::grade_slide(s, p), grade::Error);
}

TEST_CASE("grade_slide: cancellation stops with Error(cancelled)") {
  TempDir dir("grade-pipeline");
  const grade::Slide s = open_at(draw_slide(dir, "plain.png"), 0.5);
  std::atomic<bool> cancel{true};
  try {
    grade::grade_slide(s, {}, {}, &cancel);
    FAIL("no error");
  } catch (const grade::Error& e) {
    CHECK(e.code() == grade::ErrorCode::cancelled);
  }
}

TEST_CASE("grade_slide: same report for 1 and 2 threads; progress; ROI restricts the tumour") {
  TempDir dir("grade-pipeline");
  const grade::Slide s = open_at(draw_slide(dir, "plain.png"), 0.5);
  grade::GradeParams p;
  p.differentiation = 2;
  p.tile_um = 128;  // many tiles on a small image, so the threads really interleave
  p.nuclei_sampling = grade::NucleiSampling::all_tissue;
  p.threads = 1;
  std::int64_t last = -1;
  bool monotonic = true;
  const grade::SlideReport r1 = grade::grade_slide(s, p, [&](const grade::Progress& pr) {
    if (pr.tiles_done < last) monotonic = false;
    last = pr.tiles_done;
  });
  CHECK(monotonic);
  CHECK(last == r1.tiles);
  p.threads = 2;
  const grade::SlideReport r2 = grade::grade_slide(s, p);
  CHECK(r2.threads_used == 2);
  CHECK(stable(r1) == stable(r2));
  CHECK(r1.tiles > 4);
  CHECK(r1.tissue_area_mm2 > 0.05);
  CHECK(r1.tumour_area_mm2 == doctest::Approx(r1.tissue_area_mm2));
  REQUIRE(r1.fnclcc.grade.has_value());
  CHECK(r1.fnclcc.complete);

  // An ROI over the left half of the tissue.
  p.roi = grade::parse_roi_geojson(R"({"type":"Polygon","coordinates":[[[0,0],[800,0],[800,1600],[0,1600]]]})");
  const grade::SlideReport rr = grade::grade_slide(s, p);
  CHECK(rr.tumour_area_mm2 < 0.7 * r1.tumour_area_mm2);
  CHECK(rr.tumour_area_mm2 > 0.3 * r1.tumour_area_mm2);
  for (const auto& m : rr.mitoses) CHECK(m.x < 800 + 16);
}

TEST_CASE("grade_slide: the nucleus sample is every k-th tile, but at least nuclei_min_tiles") {
  TempDir dir("grade-pipeline");
  const grade::Slide s = open_at(draw_slide(dir, "plain.png"), 0.5);
  grade::GradeParams p;
  p.tile_um = 128;  // many tiles on a small image
  p.threads = 2;
  p.nuclei_sampling = grade::NucleiSampling::sample;
  p.nuclei_sample_fraction = 0.125;
  p.nuclei_min_tiles = 1;
  const grade::SlideReport sparse = grade::grade_slide(s, p);
  REQUIRE(sparse.tiles >= 16);
  CHECK(sparse.nuclei.sampling == "sample 1/8");
  CHECK(sparse.nuclei.tiles_analysed == (sparse.tiles + 7) / 8);
  // Asking for at least half the tiles: every 2nd.
  p.nuclei_min_tiles = static_cast<int>(sparse.tiles / 2);
  const grade::SlideReport half = grade::grade_slide(s, p);
  CHECK(half.nuclei.sampling == "sample 1/2");
  CHECK(half.nuclei.tiles_analysed == (half.tiles + 1) / 2);
  // More than the slide has: all of them.
  p.nuclei_min_tiles = static_cast<int>(sparse.tiles + 1);
  const grade::SlideReport all = grade::grade_slide(s, p);
  CHECK(all.nuclei.sampling == "all_tissue");
  CHECK(all.nuclei.tiles_analysed == all.tiles);
  CHECK(all.nuclei.count > half.nuclei.count);
  p.nuclei_min_tiles = 0;
  CHECK_THROWS_AS(grade::grade_slide(s, p), grade::Error);
}

TEST_CASE("grade_slide: a large tumour on a coarse slide is not reported as smaller than the window") {
  // At 4 um/px the 10-HPF window is 329 px (1.7319 mm^2, a little under 1.734 after rounding to whole pixels): it
  // fits the tissue, so the count is not scaled and no warning says otherwise.
  TempDir dir("grade-pipeline");
  const grade::Slide s = open_at(draw_slide(dir, "coarse.png", true, 700), 4.0);
  grade::GradeParams p;
  p.threads = 2;
  p.nuclei_sampling = grade::NucleiSampling::none;
  const grade::SlideReport r = grade::grade_slide(s, p);
  REQUIRE(r.tumour_area_mm2 > 3.0);
  CHECK(r.mitotic_count.window.width == 329);
  CHECK_FALSE(r.mitotic_count.scaled);
  CHECK_FALSE(r.count_scaled);
  for (const auto& w : r.warnings) CHECK_MESSAGE(w.find("smaller than") == std::string::npos, w);
}
