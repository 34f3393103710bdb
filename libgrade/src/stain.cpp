// PLACEHOLDER (except standard_stains): replaced by the real implementation of issue 3.
#include "grade/stain.hpp"

#include <cmath>

#include "grade/error.hpp"

namespace grade {

StainVectors standard_stains() {
  // Ruifrok & Johnston 2001, H&E optical-density vectors (R, G, B), normalised to unit length.
  auto unit = [](std::array<double, 3> v) {
    const double n = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    return std::array<double, 3>{v[0] / n, v[1] / n, v[2] / n};
  };
  return {unit({0.650, 0.704, 0.286}), unit({0.072, 0.990, 0.105})};
}

StainEstimate estimate_stains(const ImageView&, const StainParams&, const cv::Mat&) { throw Error(ErrorCode::internal, "stain: not implemented yet"); }
StainDensities deconvolve(const ImageView&, const StainVectors&) { throw Error(ErrorCode::internal, "stain: not implemented yet"); }

}  // namespace grade
