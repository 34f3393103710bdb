#pragma once
// Stain estimation (Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI 2009)
// and colour deconvolution (Ruifrok & Johnston, Anal Quant Cytol Histol 2001).
#include <array>
#include <cstdint>
#include <string>

#include <opencv2/core.hpp>

#include "grade/image.hpp"

namespace grade {

// Unit optical-density vectors in R, G, B order.
struct StainVectors {
  std::array<double, 3> hematoxylin{};
  std::array<double, 3> eosin{};
};

// The standard H&E vectors of Ruifrok & Johnston, used when a slide's own cannot be estimated.
StainVectors standard_stains();

struct StainParams {
  double od_threshold = 0.15;       // pixels with optical density below this in every channel are background
  double angle_percentile = 1.0;    // robust extremes of the angle distribution (Macenko's alpha), in percent
  std::int64_t min_pixels = 2'000;  // fewer tissue pixels than this -> fallback to standard_stains()
};

struct StainEstimate {
  StainVectors vectors;
  bool fallback = false;       // true when standard_stains() were used
  std::string warning;         // why the fallback was taken ("" when not)
  std::int64_t pixels_used = 0;
};

// `mask` (optional, CV_8U of the image's size, non-zero = use) restricts the estimate to tissue pixels.
StainEstimate estimate_stains(const ImageView& image, const StainParams& params = {}, const cv::Mat& mask = {});

// Optical density throughout is -ln((I + 1) / 256) per 8-bit channel. Densities are clipped at 0.
struct StainDensities {
  cv::Mat hematoxylin;  // CV_32F optical density, same size as the input
  cv::Mat eosin;        // CV_32F optical density
};

StainDensities deconvolve(const ImageView& image, const StainVectors& stains);

}  // namespace grade
