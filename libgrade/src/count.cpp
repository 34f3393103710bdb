// PLACEHOLDER: replaced by the real implementation (issue 4).
#include "grade/count.hpp"
#include "grade/error.hpp"

namespace grade {
HpfParams HpfParams::from_field_diameter_mm(double, int) { throw Error(ErrorCode::internal, "count: not implemented yet"); }
MitoticCount count_mitoses(const std::vector<MitosisDetection>&, const cv::Mat&, double, std::int64_t, std::int64_t, double, const HpfParams&) { throw Error(ErrorCode::internal, "count: not implemented yet"); }
void poisson_ci95(int, double&, double&) { throw Error(ErrorCode::internal, "count: not implemented yet"); }
}  // namespace grade
