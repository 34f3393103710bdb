#pragma once
// Slide access: whole-slide images through OpenSlide 3.4.1 (every format it reads), and plain PNG/JPEG/TIFF images as
// one-level slides. Every failure is a grade::Error naming the file. A Slide may be read from several threads at
// once; reads return identical pixels whatever the thread.
//
// Tiled TIFF slides (OpenSlide's generic-tiff and aperio formats) are read tile by tile with libtiff where that gives
// exactly OpenSlide's pixels: OpenSlide 3.4 composites every decoded tile through cairo, which costs ~6x the JPEG
// decode itself. Slide::open checks this per level on a probe tile (decoded both ways, compared byte for byte) and
// reads through OpenSlide wherever the check fails, the level is not a plain tiled 8-bit RGB/YCbCr directory, or a
// region's origin falls between the level's pixels.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "grade/image.hpp"

namespace grade {

struct LevelInfo {
  std::int64_t width = 0;
  std::int64_t height = 0;
  double downsample = 1.0;  // level-0 pixels per pixel of this level
};

enum class SlideBackend { openslide, plain_image };

struct SlideOpenParams {
  // Micrometres per level-0 pixel given by the caller; overrides what the file says. 0 = use the file's.
  double mpp_override = 0.0;
  // Read tiled TIFF levels with libtiff where it reproduces OpenSlide's pixels (see above); false = OpenSlide only.
  bool direct_tiff = true;
};

class Slide {
 public:
  // Opens `path`. Throws Error(file_not_found | unsupported | corrupt).
  static Slide open(const std::filesystem::path& path, const SlideOpenParams& params = {});

  Slide(Slide&&) noexcept;
  Slide& operator=(Slide&&) noexcept;
  ~Slide();

  const std::filesystem::path& path() const;
  SlideBackend backend() const;
  std::string vendor() const;  // OpenSlide's vendor ("aperio", "generic-tiff", ...) or "image"

  int level_count() const;
  LevelInfo level(int index) const;  // throws out_of_bounds for a bad index
  std::int64_t width() const { return level(0).width; }
  std::int64_t height() const { return level(0).height; }

  // Micrometres per level-0 pixel (the caller's override, else the file's; x and y averaged), if known.
  std::optional<double> mpp() const;
  // Where mpp() came from: "caller", "openslide", "tiff-resolution", or "" when unknown.
  std::string mpp_source() const;
  // mpp(), or Error(missing_mpp) naming the file and suggesting --mpp.
  double require_mpp() const;
  std::optional<double> objective_power() const;

  // Whether reads of level `index` with a whole-pixel origin go through libtiff directly rather than
  // openslide_read_region (see the top of this file). Always false for plain images.
  bool reads_tiff_directly(int index) const;

  std::map<std::string, std::string> properties() const;
  std::vector<std::string> associated_image_names() const;
  cv::Mat read_associated_image(const std::string& name) const;  // RGB CV_8UC3

  // Reads `region` (level-0 pixels; must lie inside the slide) at pyramid level `level`. The result has
  // ceil(region / downsample) pixels, RGB, transparent areas white, and carries mpp (0 if unknown), origin, downsample.
  ImageView read_region(const Rect64& region, int level) const;

  // Reads `region` (level-0 pixels) at `target_mpp`: from the coarsest level at or finer than the target, then area
  // resampling. Throws missing_mpp when the slide has no mpp, invalid_argument when target_mpp is finer than level 0.
  ImageView read_region_at_mpp(const Rect64& region, double target_mpp) const;

  // The coarsest level whose mpp is <= target_mpp * (1 + 1e-6); level 0 when none is.
  int best_level_for_mpp(double target_mpp) const;

  // The whole slide at about `target_mpp` (or coarser if needed to stay under max_pixels), for masks and overlays.
  ImageView read_thumbnail(double target_mpp, std::int64_t max_pixels = 16'000'000) const;

 private:
  struct Impl;
  explicit Slide(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace grade
