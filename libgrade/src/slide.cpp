// PLACEHOLDER: the real slide access is being written (issue 2).
#include "grade/slide.hpp"
#include "grade/error.hpp"

namespace grade {
struct Slide::Impl {};
Slide::Slide(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Slide::Slide(Slide&&) noexcept = default;
Slide& Slide::operator=(Slide&&) noexcept = default;
Slide::~Slide() = default;
Slide Slide::open(const std::filesystem::path& p, const SlideOpenParams&) { throw Error(ErrorCode::file_not_found, p.string() + ": not implemented yet"); }
}  // namespace grade
