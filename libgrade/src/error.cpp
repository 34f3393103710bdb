#include "grade/error.hpp"

namespace grade {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::file_not_found: return "file_not_found";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::corrupt: return "corrupt";
    case ErrorCode::missing_mpp: return "missing_mpp";
    case ErrorCode::out_of_bounds: return "out_of_bounds";
    case ErrorCode::io: return "io";
    case ErrorCode::model: return "model";
    case ErrorCode::cancelled: return "cancelled";
    case ErrorCode::internal: return "internal";
  }
  return "unknown";
}

}  // namespace grade
