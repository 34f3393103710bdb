// PLACEHOLDER: replaced by the real implementation (see the issue for this stage).
#include "grade/mitosis.hpp"
#include "grade/error.hpp"

namespace grade {
std::vector<MitosisDetection> detect_mitoses(const ImageView&, const MitosisParams&) { throw Error(ErrorCode::internal, "mitosis: not implemented yet"); }
}  // namespace grade
