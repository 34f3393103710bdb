// PLACEHOLDER: replaced by the real implementation (see the issue for this stage).
#include "grade/necrosis.hpp"
#include "grade/error.hpp"

namespace grade {
NecrosisMap map_necrosis(const ImageView&, const NecrosisParams&) { throw Error(ErrorCode::internal, "necrosis: not implemented yet"); }
}  // namespace grade
