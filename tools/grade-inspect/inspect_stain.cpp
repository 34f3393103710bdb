// PLACEHOLDER: replaced by the real stain inspector.
#include "grade/error.hpp"
#include "stages.hpp"

namespace grade::inspect {
std::unique_ptr<Inspector> make_stain_inspector(const Options&) {
  throw grade::Error(grade::ErrorCode::internal, "grade-inspect stain: not implemented yet");
}
}  // namespace grade::inspect
