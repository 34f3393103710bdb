// PLACEHOLDER: replaced by the real mitoses inspector.
#include "grade/error.hpp"
#include "stages.hpp"

namespace grade::inspect {
std::unique_ptr<Inspector> make_mitoses_inspector(const Options&) {
  throw grade::Error(grade::ErrorCode::internal, "grade-inspect mitoses: not implemented yet");
}
}  // namespace grade::inspect
