// PLACEHOLDER: replaced by the real implementation (see the issue for this stage).
#include "grade/nuclei.hpp"
#include "grade/error.hpp"

namespace grade {
NucleiResult segment_nuclei(const ImageView&, const NucleiParams&) { throw Error(ErrorCode::internal, "nuclei: not implemented yet"); }
}  // namespace grade
