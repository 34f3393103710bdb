#pragma once
// Internals of grade-synth: the pyramidal TIFF writer.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace grade::detail {

// Writes a tiled, JPEG-compressed, pyramidal TIFF while the caller renders level 0 tile row by tile row (left to
// right, top to bottom). Level 0 goes straight to the output; each lower level (downsample 4 per level) is built
// from the one above in strips of one tile row and kept in a temporary TIFF beside the output, then appended as its own
// directory by finish(). Memory: a few tile rows of the lower levels, whatever the slide's height.
class PyramidTiffWriter {
 public:
  // `description` goes in the first directory's ImageDescription. Levels are added (each 1/4 of the previous) while
  // the previous level's longer side is >= min_level_px.
  PyramidTiffWriter(const std::filesystem::path& path, std::int64_t width, std::int64_t height, int tile_px,
                    int jpeg_quality, double mpp, const std::string& description, std::int64_t min_level_px = 1000);
  ~PyramidTiffWriter();
  PyramidTiffWriter(const PyramidTiffWriter&) = delete;
  PyramidTiffWriter& operator=(const PyramidTiffWriter&) = delete;

  // One level-0 tile: CV_8UC3 RGB, tile_px x tile_px (pixels beyond the image edge are written but never shown).
  void write_tile(int col, int row, const cv::Mat& rgb);
  // Writes the lower levels and closes the file. The caller renames it into place.
  void finish();
  int levels() const { return static_cast<int>(levels_.size()); }

 private:
  struct Level;
  void flush_strip(std::size_t k, bool last);
  std::filesystem::path path_;
  int tile_px_;
  int quality_;
  double mpp_;
  std::vector<std::unique_ptr<Level>> levels_;
  bool finished_ = false;
};

}  // namespace grade::detail
