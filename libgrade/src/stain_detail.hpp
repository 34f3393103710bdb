#pragma once
// Internals of the stain stage shared with the nuclei and tissue stages.
#include <array>

#include "grade/stain.hpp"

namespace grade::detail {

// -ln((I + 1) / 256) for each 8-bit value I.
const std::array<float, 256>& od_lut();
// Angle between two 3-vectors, degrees.
double angle_deg(const std::array<double, 3>& a, const std::array<double, 3>& b);
// Rows of the inverse stain matrix: density_k = sum_c rows[k][c] * od_c, k = 0 hematoxylin, 1 eosin.
std::array<std::array<float, 3>, 2> unmixing_rows(const StainVectors& stains);

}  // namespace grade::detail
