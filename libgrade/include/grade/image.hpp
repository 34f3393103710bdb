#pragma once
// ImageView: the one image type that crosses stage boundaries. It carries its scale and where it sits on the slide,
// so a stage can report results in level-0 coordinates without knowing how the image was read.
#include <cstdint>

#include <opencv2/core.hpp>

namespace grade {

// An axis-aligned rectangle in level-0 pixels.
struct Rect64 {
  std::int64_t x = 0;
  std::int64_t y = 0;
  std::int64_t width = 0;
  std::int64_t height = 0;
  friend bool operator==(const Rect64&, const Rect64&) = default;
};

struct ImageView {
  cv::Mat rgb;                 // CV_8UC3, channels in R, G, B order
  double mpp = 0.0;            // micrometres per pixel of `rgb` (0 = unknown)
  std::int64_t x0 = 0;         // level-0 x of rgb's top-left pixel
  std::int64_t y0 = 0;         // level-0 y of rgb's top-left pixel
  double downsample = 1.0;     // level-0 pixels per pixel of `rgb`

  // Level-0 coordinates of a point given in this image's pixel coordinates (pixel centres at +0.5 are the caller's).
  double to_level0_x(double px) const { return static_cast<double>(x0) + px * downsample; }
  double to_level0_y(double py) const { return static_cast<double>(y0) + py * downsample; }
};

// Wraps a plain RGB image (e.g. a tile or a PNG) as an ImageView at the given mpp, placed at the level-0 origin.
inline ImageView make_view(cv::Mat rgb, double mpp) {
  ImageView v;
  v.rgb = std::move(rgb);
  v.mpp = mpp;
  return v;
}

// Throws grade::Error(invalid_argument) naming `what` when `view` is empty, not 8-bit 3-channel, or has mpp <= 0
// (mpp is checked only when `need_mpp`). Stages call this on entry.
void check_view(const ImageView& view, const char* what, bool need_mpp = true);

}  // namespace grade
