#pragma once
// Report writers for a graded slide: report.json (schema "libgrade-report/1", documented in README.md "## report.json"),
// detections.geojson (QuPath conventions), overlay.png and hotspot.png; a writer for a slide's whole output folder that
// never leaves a half-written report; and the ROI reader for QuPath-exported GeoJSON.
#include <filesystem>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/pipeline.hpp"
#include "grade/slide.hpp"

namespace grade {

inline constexpr const char* report_schema = "libgrade-report/1";

// File names inside a slide's output folder.
inline constexpr const char* report_json_name = "report.json";
inline constexpr const char* detections_geojson_name = "detections.geojson";
inline constexpr const char* overlay_png_name = "overlay.png";
inline constexpr const char* hotspot_png_name = "hotspot.png";

// report.json as text (pretty-printed, stable key order).
std::string report_json(const SlideReport& report);
// detections.geojson as text: a FeatureCollection, level-0 pixel coordinates; properties.objectType is "detection"
// (mitoses, as small circles) or "annotation" (tissue outline, tumour ROI, necrosis regions, hotspot window), with
// properties.classification {name, color [r, g, b]} and properties.name.
std::string detections_geojson(const SlideReport& report);

// overlay.png: the thumbnail with the tissue outline (green), necrosis shading (yellow), mitoses (red dots) and the
// hotspot window (blue). RGB CV_8UC3.
cv::Mat render_overlay(const SlideReport& report);
// hotspot.png: the hotspot window read from the slide at about `target_mpp` (coarser when the window would exceed
// max_side_px), every counted mitosis circled and numbered in (y, x) order. RGB CV_8UC3. Empty when there is no window.
cv::Mat render_hotspot(const Slide& slide, const SlideReport& report, double target_mpp = 0.5,
                       int max_side_px = 4096);

// Writes one file atomically (temporary name in the same folder, then rename). Throws Error(io) naming the path.
void write_report_json(const SlideReport& report, const std::filesystem::path& path);
void write_geojson(const SlideReport& report, const std::filesystem::path& path);

// Writes the whole output folder `dir` (created if needed): detections.geojson, overlay.png, hotspot.png, then
// report.json LAST, each through a temporary name + rename. A folder with a report.json therefore holds every file.
// An existing report.json is removed first, so a run killed half-way leaves no stale "complete" report.
void write_slide_outputs(const Slide& slide, const SlideReport& report, const std::filesystem::path& dir);

// True when `dir` holds a complete report: report.json exists, parses, has schema libgrade-report/1, and every file
// it lists exists. (For grade-batch --resume.)
bool has_complete_report(const std::filesystem::path& dir);

// Reads a region of interest as QuPath exports it: a Feature, a FeatureCollection (every Polygon/MultiPolygon
// feature is used), or a bare Polygon/MultiPolygon geometry; coordinates in level-0 pixels. Throws Error
// (file_not_found, invalid_argument) naming the file and what is wrong (e.g. "no polygon").
std::vector<Polygon> read_roi_geojson(const std::filesystem::path& path);
// The same from GeoJSON text; `what` names the source in error messages.
std::vector<Polygon> parse_roi_geojson(const std::string& text, const std::string& what = "ROI");

}  // namespace grade
