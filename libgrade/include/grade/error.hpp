#pragma once
// grade::Error: the one exception type libgrade throws. Its message names the file (where there is one) and the bad
// value; code() says what kind of failure it was, so callers (e.g. grade-batch) can react without parsing text.
#include <stdexcept>
#include <string>

namespace grade {

enum class ErrorCode {
  invalid_argument,  // a parameter or input image is out of range, empty, or of the wrong type
  file_not_found,    // the path does not exist or cannot be read
  unsupported,       // the file exists but is not a slide or image format libgrade reads
  corrupt,           // the file was recognised but decoding failed
  missing_mpp,       // the resolution is needed but neither the file nor the caller gives it
  out_of_bounds,     // a region lies (partly) outside the slide
  io,                // writing an output failed
  model,             // an embedded model could not be loaded or run
  cancelled,         // the caller asked the work to stop
  internal           // a bug: an invariant did not hold
};

// Short stable name of a code ("corrupt", "missing_mpp", ...), for logs and CSV columns.
const char* to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace grade
