// detections.geojson in QuPath's conventions (QuPath 0.3+ imports it with File > Import objects, or by drag and drop):
// a FeatureCollection whose features carry properties.objectType ("detection" | "annotation"),
// properties.classification {name, color [r, g, b]} and properties.name; coordinates are level-0 pixels, which is
// what QuPath uses for its image coordinates.
#include <algorithm>
#include <cmath>
#include <numbers>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "grade/report.hpp"
#include "report_detail.hpp"

namespace grade {

using nlohmann::ordered_json;

namespace detail {

std::vector<std::vector<std::vector<cv::Point2d>>> grid_polygons(const cv::Mat& mask, double cell_px,
                                                                 double min_cells) {
  std::vector<std::vector<std::vector<cv::Point2d>>> out;
  if (mask.empty()) return out;
  // One cell of padding so pieces touching the border are closed.
  cv::Mat padded;
  cv::copyMakeBorder(mask, padded, 1, 1, 1, 1, cv::BORDER_CONSTANT, cv::Scalar(0));
  std::vector<std::vector<cv::Point>> contours;
  std::vector<cv::Vec4i> hierarchy;
  cv::findContours(padded, contours, hierarchy, cv::RETR_CCOMP, cv::CHAIN_APPROX_SIMPLE);
  auto to_level0 = [&](const std::vector<cv::Point>& c) {
    std::vector<cv::Point> simple;
    cv::approxPolyDP(c, simple, 0.75, true);
    std::vector<cv::Point2d> ring;
    ring.reserve(simple.size());
    // Contour points are boundary cell indices (+1 for the padding); a cell's centre is at (i + 0.5) cells.
    for (const cv::Point& p : simple) ring.emplace_back((p.x - 1 + 0.5) * cell_px, (p.y - 1 + 0.5) * cell_px);
    return ring;
  };
  for (int i = 0; i >= 0 && i < static_cast<int>(contours.size()); i = hierarchy[static_cast<std::size_t>(i)][0]) {
    // Outer contours are the top level of RETR_CCOMP; their children are holes.
    const auto& c = contours[static_cast<std::size_t>(i)];
    if (cv::contourArea(c) + static_cast<double>(c.size()) / 2.0 < min_cells) continue;
    std::vector<std::vector<cv::Point2d>> poly;
    auto outline = to_level0(c);
    if (outline.size() < 3) {  // a single cell or a thin line: its cell square
      const cv::Rect b = cv::boundingRect(c);
      const double x0 = (b.x - 1) * cell_px, y0 = (b.y - 1) * cell_px;
      const double x1 = (b.x - 1 + b.width) * cell_px, y1 = (b.y - 1 + b.height) * cell_px;
      outline = {{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}};
    }
    poly.push_back(std::move(outline));
    for (int h = hierarchy[static_cast<std::size_t>(i)][2]; h >= 0; h = hierarchy[static_cast<std::size_t>(h)][0]) {
      auto hole = to_level0(contours[static_cast<std::size_t>(h)]);
      if (hole.size() >= 3) poly.push_back(std::move(hole));
    }
    out.push_back(std::move(poly));
  }
  // findContours' order is an implementation detail: sort by the outline's top-left point for stable output.
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    auto key = [](const auto& p) {
      cv::Point2d m = p[0][0];
      for (const auto& q : p[0])
        if (q.y < m.y || (q.y == m.y && q.x < m.x)) m = q;
      return m;
    };
    const cv::Point2d ka = key(a), kb = key(b);
    return ka.y != kb.y ? ka.y < kb.y : ka.x < kb.x;
  });
  return out;
}

}  // namespace detail

namespace {

double r2(double v) { return std::round(v * 100.0) / 100.0; }

ordered_json ring_json(const std::vector<cv::Point2d>& ring) {
  ordered_json pts = ordered_json::array();
  for (const auto& p : ring) pts.push_back({r2(p.x), r2(p.y)});
  if (!ring.empty()) pts.push_back({r2(ring.front().x), r2(ring.front().y)});  // GeoJSON rings are closed
  return pts;
}

ordered_json polygon_geometry(const std::vector<std::vector<cv::Point2d>>& rings) {
  ordered_json coords = ordered_json::array();
  for (const auto& ring : rings) coords.push_back(ring_json(ring));
  return {{"type", "Polygon"}, {"coordinates", coords}};
}

ordered_json feature(const char* object_type, const std::string& cls, std::array<int, 3> color, const std::string& name,
                     ordered_json geometry, ordered_json measurements = ordered_json::object()) {
  ordered_json props = {{"objectType", object_type},
                        {"classification", {{"name", cls}, {"color", {color[0], color[1], color[2]}}}},
                        {"name", name},
                        {"isLocked", true}};
  if (!measurements.empty()) props["measurements"] = measurements;
  return {{"type", "Feature"}, {"geometry", std::move(geometry)}, {"properties", std::move(props)}};
}

}  // namespace

std::string detections_geojson(const SlideReport& rep) {
  ordered_json features = ordered_json::array();
  const double mpp = rep.mpp > 0 ? rep.mpp : 0.25;

  int piece = 0;
  for (const auto& poly : detail::grid_polygons(rep.tissue_grid, rep.grid_px, 4.0))
    features.push_back(feature("annotation", "Tissue", {0, 160, 0}, "Tissue " + std::to_string(++piece),
                               polygon_geometry(poly)));
  for (std::size_t i = 0; i < rep.params.roi.size(); ++i)
    features.push_back(feature("annotation", "Tumor", {200, 0, 0}, "Region of interest " + std::to_string(i + 1),
                               polygon_geometry(rep.params.roi[i].rings)));
  piece = 0;
  for (const auto& poly : detail::grid_polygons(rep.necrosis_grid, rep.grid_px, 1.0))
    features.push_back(feature("annotation", "Necrosis", {230, 190, 0}, "Necrosis " + std::to_string(++piece),
                               polygon_geometry(poly)));

  const Rect64& w = rep.mitotic_count.window;
  if (w.width > 0 && w.height > 0) {
    const double x0 = static_cast<double>(w.x), y0 = static_cast<double>(w.y);
    const double x1 = x0 + static_cast<double>(w.width), y1 = y0 + static_cast<double>(w.height);
    ordered_json meas = {{"Mitoses per " + std::to_string(rep.mitotic_count.fields) + " HPF", rep.mitotic_count.count},
                         {"Mitoses in window", static_cast<int>(rep.hotspot_mitoses.size())},
                         {"Window area mm^2", rep.mitotic_count.window_area_mm2}};
    features.push_back(feature("annotation", "Hotspot", {0, 90, 230},
                               "Mitotic hotspot (" + std::to_string(rep.mitotic_count.fields) + " HPF): " +
                                   std::to_string(rep.mitotic_count.count) + " mitoses",
                               polygon_geometry({{{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}}}), meas));
  }

  // Mitoses as small circles (QuPath shows point detections poorly): radius 4 um, 16 vertices.
  const double radius = 4.0 / mpp;
  for (std::size_t i = 0; i < rep.mitoses.size(); ++i) {
    const MitosisDetection& d = rep.mitoses[i];
    std::vector<cv::Point2d> ring;
    for (int k = 0; k < 16; ++k) {
      const double a = 2.0 * std::numbers::pi * k / 16.0;
      ring.emplace_back(d.x + radius * std::cos(a), d.y + radius * std::sin(a));
    }
    const bool counted = std::find_if(rep.hotspot_mitoses.begin(), rep.hotspot_mitoses.end(), [&](const auto& h) {
                           return h.x == d.x && h.y == d.y;
                         }) != rep.hotspot_mitoses.end();
    ordered_json meas = {{"score", std::round(d.score * 1e4) / 1e4}, {"in hotspot", counted ? 1 : 0}};
    features.push_back(feature("detection", "Mitosis", {255, 0, 0}, "Mitosis " + std::to_string(i + 1),
                               polygon_geometry({ring}), meas));
  }
  ordered_json fc = {{"type", "FeatureCollection"}, {"features", features}};
  return fc.dump(1) + "\n";
}

}  // namespace grade
