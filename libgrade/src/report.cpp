// report.json (schema libgrade-report/1, documented in README.md "## report.json"), the output folder writer, the
// completeness check used by --resume, and the ROI reader.
#include "grade/report.hpp"

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/error.hpp"
#include "report_detail.hpp"

namespace grade {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace detail {

void write_file_atomically(const fs::path& path, const std::function<void(const fs::path&)>& write) {
  std::random_device rd;
  // The real extension stays last so that writers choosing a format by extension (cv::imwrite) still work.
  const fs::path tmp = path.parent_path() / (".tmp-" + std::to_string(rd()) + "-" + path.filename().string());
  try {
    write(tmp);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) throw Error(ErrorCode::io, path.string() + ": cannot write (" + ec.message() + ")");
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  write_file_atomically(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    out.flush();
    if (!out) throw Error(ErrorCode::io, path.string() + ": cannot write");
  });
}

void write_png_atomically(const fs::path& path, const cv::Mat& rgb) {
  write_file_atomically(path, [&](const fs::path& tmp) {
    cv::Mat bgr;
    if (rgb.channels() == 3)
      cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    else
      bgr = rgb;
    bool ok = false;
    try {
      ok = cv::imwrite(tmp.string(), bgr);
    } catch (const cv::Exception& e) {
      throw Error(ErrorCode::io, path.string() + ": cannot write image (" + e.what() + ")");
    }
    if (!ok) throw Error(ErrorCode::io, path.string() + ": cannot write image");
  });
}

}  // namespace detail

namespace {

// Rounds for the report: enough digits to be useful, few enough that reports diff cleanly.
double r(double v, int digits = 4) {
  if (!std::isfinite(v)) return v;
  const double f = std::pow(10.0, digits);
  return std::round(v * f) / f;
}

ordered_json opt_int(const std::optional<int>& v) { return v ? ordered_json(*v) : ordered_json(nullptr); }

ordered_json rect_json(const Rect64& w) {
  return ordered_json{{"x", w.x}, {"y", w.y}, {"width", w.width}, {"height", w.height}};
}

ordered_json report_object(const SlideReport& rep) {
  const GradeParams& p = rep.params;
  ordered_json j;
  j["schema"] = report_schema;
  j["software"] = {{"name", "libgrade"}, {"version", rep.software_version}};
  j["slide"] = {{"path", rep.slide_path},
                {"vendor", rep.vendor},
                {"width", rep.width},
                {"height", rep.height},
                {"mpp", rep.mpp},
                {"mpp_source", rep.mpp_source},
                {"objective_power", rep.objective_power ? ordered_json(*rep.objective_power) : ordered_json(nullptr)}};

  ordered_json roi = ordered_json::array();
  for (const Polygon& poly : p.roi) {
    ordered_json rings = ordered_json::array();
    for (const auto& ring : poly.rings) {
      ordered_json pts = ordered_json::array();
      for (const auto& pt : ring) pts.push_back({r(pt.x, 2), r(pt.y, 2)});
      rings.push_back(pts);
    }
    roi.push_back(rings);
  }
  j["parameters"] = {{"differentiation", opt_int(p.differentiation)},
                     {"subtype", p.subtype},
                     {"hpf_area_mm2", p.hpf.hpf_area_mm2},
                     {"fields", p.hpf.fields},
                     {"window_area_mm2", r(p.hpf.hpf_area_mm2 * p.hpf.fields, 6)},
                     {"roi", roi},
                     {"tile_um", p.tile_um},
                     {"tile_margin_um", p.tile_margin_um},
                     {"necrosis_margin_um", p.necrosis_margin_um},
                     {"grid_um", p.grid_um},
                     {"thumbnail_mpp", p.thumbnail_mpp},
                     {"stain_mpp", p.stain_mpp},
                     {"nuclei_sampling", nuclei_sampling_name(p.nuclei_sampling)},
                     {"nuclei_sample_fraction", p.nuclei_sample_fraction},
                     {"nuclei_min_tiles", p.nuclei_min_tiles},
                     {"nuclei_flips", p.nuclei.flips},
                     {"nuclei_network", nuclei_network_name(p.nuclei.network)},
                     {"mitosis_threshold", p.mitosis.threshold},
                     {"mitosis_working_mpp", p.mitosis.working_mpp},
                     {"nuclei_working_mpp", p.nuclei.working_mpp},
                     {"necrosis_threshold", p.necrosis.threshold},
                     {"necrosis_working_mpp", p.necrosis.working_mpp}};
  auto vec3 = [](const std::array<double, 3>& v) { return ordered_json{r(v[0]), r(v[1]), r(v[2])}; };
  j["stains"] = {{"method", rep.stains.fallback ? "standard (Ruifrok & Johnston)" : "Macenko"},
                 {"hematoxylin", vec3(rep.stains.vectors.hematoxylin)},
                 {"eosin", vec3(rep.stains.vectors.eosin)},
                 {"fallback", rep.stains.fallback},
                 {"warning", rep.stains.warning},
                 {"pixels_used", rep.stains.pixels_used}};
  j["tissue"] = {{"area_mm2", r(rep.tissue_area_mm2)},
                 {"tumour_area_mm2", r(rep.tumour_area_mm2)},
                 {"roi_used", !p.roi.empty()},
                 {"tiles", rep.tiles}};
  const NucleiSummary& n = rep.nuclei;
  j["nuclei"] = {{"count", n.count},
                 {"spindle", n.spindle},
                 {"spindle_fraction", r(n.spindle_fraction)},
                 {"mean_area_um2", r(n.mean_area_um2, 2)},
                 {"mean_elongation", r(n.mean_elongation, 3)},
                 {"mean_h_od", r(n.mean_h_od)},
                 {"density_per_mm2", r(n.density_per_mm2, 1)},
                 {"analysed_area_mm2", r(n.analysed_area_mm2)},
                 {"tiles_analysed", n.tiles_analysed},
                 {"sampling", n.sampling}};
  const MitoticCount& m = rep.mitotic_count;
  ordered_json hot = ordered_json::array();
  for (std::size_t i = 0; i < rep.hotspot_mitoses.size(); ++i)
    hot.push_back({{"n", i + 1},
                   {"x", r(rep.hotspot_mitoses[i].x, 1)},
                   {"y", r(rep.hotspot_mitoses[i].y, 1)},
                   {"score", r(rep.hotspot_mitoses[i].score)}});
  j["mitoses"] = {{"per_10hpf", m.count},
                  {"fields", m.fields},
                  {"hpf_area_mm2", m.hpf_area_mm2},
                  {"per_mm2", r(m.per_mm2)},
                  {"ci95", {r(m.ci95_low, 3), r(m.ci95_high, 3)}},
                  {"hotspot", {{"window", rect_json(m.window)}, {"area_mm2", r(m.window_area_mm2, 6)},
                               {"count_scaled", rep.count_scaled}, {"mitoses", hot}}},
                  {"total_detected", static_cast<std::int64_t>(rep.mitoses.size())},
                  {"region_area_mm2", r(m.region_area_mm2)},
                  {"score", m.score}};
  j["necrosis"] = {{"percent", r(rep.necrosis.percent, 3)}, {"area_mm2", r(rep.necrosis.area_mm2)}};
  const FnclccResult& f = rep.fnclcc;
  j["fnclcc"] = {{"differentiation", opt_int(f.differentiation)},
                 {"differentiation_source", f.differentiation_source.empty() ? rep.differentiation_source
                                                                             : f.differentiation_source},
                 {"mitosis_score", f.mitosis_score},
                 {"necrosis_score", f.necrosis_score},
                 {"total", opt_int(f.total)},
                 {"grade", opt_int(f.grade)},
                 {"possible_grades", f.possible_grades},
                 {"tier", f.tier ? ordered_json(to_string(*f.tier)) : ordered_json(nullptr)},
                 {"complete", f.complete},
                 {"borderline", {{"mitosis", f.mitosis_borderline},
                                 {"necrosis", f.necrosis_borderline},
                                 {"any", f.mitosis_borderline || f.necrosis_borderline}}},
                 {"notes", f.notes}};
  j["warnings"] = rep.warnings;
  j["run"] = {{"threads", rep.threads_used}, {"nuclei_engine", rep.nuclei_engine}};
  j["timings"] = {{"thumbnail_s", r(rep.timings.thumbnail_s, 3)},
                  {"tiles_s", r(rep.timings.tiles_s, 3)},
                  {"aggregate_s", r(rep.timings.aggregate_s, 3)},
                  {"total_s", r(rep.timings.total_s, 3)},
                  {"tile_cpu_s", {{"read", r(rep.timings.read_s, 3)},
                                  {"mitosis", r(rep.timings.mitosis_s, 3)},
                                  {"nuclei", r(rep.timings.nuclei_s, 3)},
                                  {"necrosis", r(rep.timings.necrosis_s, 3)}}}};
  j["files"] = {{"detections", detections_geojson_name}, {"overlay", overlay_png_name}, {"hotspot", hotspot_png_name}};
  return j;
}

std::vector<cv::Point2d> parse_ring(const nlohmann::json& ring, const std::string& what) {
  if (!ring.is_array()) throw Error(ErrorCode::invalid_argument, what + ": a polygon ring is not an array");
  std::vector<cv::Point2d> out;
  for (const auto& pt : ring) {
    if (!pt.is_array() || pt.size() < 2 || !pt[0].is_number() || !pt[1].is_number())
      throw Error(ErrorCode::invalid_argument, what + ": a coordinate is not [x, y]: " + pt.dump());
    out.emplace_back(pt[0].get<double>(), pt[1].get<double>());
  }
  if (out.size() >= 2 && out.front() == out.back()) out.pop_back();
  return out;
}

Polygon parse_polygon(const nlohmann::json& coords, const std::string& what) {
  if (!coords.is_array() || coords.empty())
    throw Error(ErrorCode::invalid_argument, what + ": a Polygon has no coordinates");
  Polygon poly;
  for (const auto& ring : coords) poly.rings.push_back(parse_ring(ring, what));
  if (poly.rings[0].size() < 3)
    throw Error(ErrorCode::invalid_argument, what + ": a Polygon outline has fewer than 3 points");
  return poly;
}

void collect(const nlohmann::json& j, std::vector<Polygon>& out, const std::string& what, int depth = 0) {
  if (depth > 8) throw Error(ErrorCode::invalid_argument, what + ": GeoJSON nested too deeply");
  if (j.is_array()) {  // QuPath 0.2 exports a bare array of features
    for (const auto& e : j) collect(e, out, what, depth + 1);
    return;
  }
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw Error(ErrorCode::invalid_argument, what + ": not GeoJSON (no \"type\")");
  const std::string type = j["type"].get<std::string>();
  if (type == "FeatureCollection") {
    if (!j.contains("features") || !j["features"].is_array())
      throw Error(ErrorCode::invalid_argument, what + ": FeatureCollection without \"features\"");
    for (const auto& f : j["features"]) collect(f, out, what, depth + 1);
  } else if (type == "Feature") {
    if (j.contains("geometry") && !j["geometry"].is_null()) collect(j["geometry"], out, what, depth + 1);
  } else if (type == "GeometryCollection") {
    if (j.contains("geometries"))
      for (const auto& g : j["geometries"]) collect(g, out, what, depth + 1);
  } else if (type == "Polygon") {
    out.push_back(parse_polygon(j.value("coordinates", nlohmann::json()), what));
  } else if (type == "MultiPolygon") {
    const auto& c = j.value("coordinates", nlohmann::json());
    if (!c.is_array()) throw Error(ErrorCode::invalid_argument, what + ": a MultiPolygon has no coordinates");
    for (const auto& poly : c) out.push_back(parse_polygon(poly, what));
  }
  // Points, lines and other geometries do not delimit a region: ignored.
}

}  // namespace

std::string report_json(const SlideReport& report) { return report_object(report).dump(2) + "\n"; }

void write_report_json(const SlideReport& report, const fs::path& path) {
  detail::write_text_atomically(path, report_json(report));
}

void write_geojson(const SlideReport& report, const fs::path& path) {
  detail::write_text_atomically(path, detections_geojson(report));
}

void write_slide_outputs(const Slide& slide, const SlideReport& report, const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw Error(ErrorCode::io, dir.string() + ": cannot create directory (" + ec.message() + ")");
  // A stale report.json would make the folder look complete while the other files are being replaced.
  fs::remove(dir / report_json_name, ec);
  if (ec) throw Error(ErrorCode::io, (dir / report_json_name).string() + ": cannot remove (" + ec.message() + ")");
  write_geojson(report, dir / detections_geojson_name);
  detail::write_png_atomically(dir / overlay_png_name, render_overlay(report));
  const cv::Mat hot = render_hotspot(slide, report);
  if (!hot.empty()) detail::write_png_atomically(dir / hotspot_png_name, hot);
  write_report_json(report, dir / report_json_name);
}

bool has_complete_report(const fs::path& dir) {
  const fs::path p = dir / report_json_name;
  std::ifstream in(p, std::ios::binary);
  if (!in) return false;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    if (!j.is_object() || j.value("schema", "") != report_schema) return false;
    if (j.contains("files") && j["files"].is_object())
      for (const auto& [key, value] : j["files"].items())
        if (!value.is_string() || !fs::is_regular_file(dir / value.get<std::string>())) return false;
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

std::vector<Polygon> parse_roi_geojson(const std::string& text, const std::string& what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::invalid_argument, what + ": not valid JSON (" + e.what() + ")");
  }
  std::vector<Polygon> out;
  collect(j, out, what);
  if (out.empty())
    throw Error(ErrorCode::invalid_argument, what + ": no Polygon or MultiPolygon found (draw the tumour region as an "
                                                    "area annotation and export it as GeoJSON)");
  return out;
}

std::vector<Polygon> read_roi_geojson(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(ErrorCode::file_not_found, path.string() + ": no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::file_not_found, path.string() + ": cannot read");
  std::ostringstream s;
  s << in.rdbuf();
  return parse_roi_geojson(s.str(), path.string());
}

}  // namespace grade
