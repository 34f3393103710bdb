#pragma once
// Internal helpers of the report writers (report.cpp, geojson.cpp, overlay.cpp).
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace grade::detail {

// `write` fills a temporary file beside `path`, which is then renamed over it: a crash leaves the old file or the new
// one, never half of one. Throws Error(io) naming `path`.
void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(const std::filesystem::path&)>& write);
void write_text_atomically(const std::filesystem::path& path, const std::string& text);
// Writes an RGB (or single-channel) image as PNG, atomically.
void write_png_atomically(const std::filesystem::path& path, const cv::Mat& rgb);

// Outlines (with holes) of a CV_8U grid mask, in level-0 pixels: cell (i, j) covers [j c, (j+1) c) x [i c, (i+1) c).
// Each element: rings[0] outline, rings[1..] holes. Pieces smaller than min_cells are dropped.
std::vector<std::vector<std::vector<cv::Point2d>>> grid_polygons(const cv::Mat& mask, double cell_px,
                                                                 double min_cells = 1.0);

}  // namespace grade::detail
