// PLACEHOLDER: replaced by the real tissue inspector.
#include "grade/error.hpp"
#include "stages.hpp"

namespace grade::inspect {
std::unique_ptr<Inspector> make_tissue_inspector(const Options&) {
  throw grade::Error(grade::ErrorCode::internal, "grade-inspect tissue: not implemented yet");
}
}  // namespace grade::inspect
