// PLACEHOLDER: replaced by the real implementation (see the issue for this stage).
#include "grade/tissue.hpp"
#include "grade/error.hpp"

namespace grade {
TissueMask detect_tissue(const ImageView&, const TissueParams&) { throw Error(ErrorCode::internal, "tissue: not implemented yet"); }
}  // namespace grade
