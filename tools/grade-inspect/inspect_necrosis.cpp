// PLACEHOLDER: replaced by the real necrosis inspector.
#include "grade/error.hpp"
#include "stages.hpp"

namespace grade::inspect {
std::unique_ptr<Inspector> make_necrosis_inspector(const Options&) {
  throw grade::Error(grade::ErrorCode::internal, "grade-inspect necrosis: not implemented yet");
}
}  // namespace grade::inspect
