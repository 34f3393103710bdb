// PLACEHOLDER: replaced by the real nuclei inspector.
#include "grade/error.hpp"
#include "stages.hpp"

namespace grade::inspect {
std::unique_ptr<Inspector> make_nuclei_inspector(const Options&) {
  throw grade::Error(grade::ErrorCode::internal, "grade-inspect nuclei: not implemented yet");
}
}  // namespace grade::inspect
