#include "grade/image.hpp"

#include <string>

#include "grade/error.hpp"

namespace grade {

void check_view(const ImageView& view, const char* what, bool need_mpp) {
  const std::string name = what ? what : "image";
  if (view.rgb.empty()) throw Error(ErrorCode::invalid_argument, name + ": the image is empty");
  if (view.rgb.type() != CV_8UC3)
    throw Error(ErrorCode::invalid_argument,
                name + ": expected an 8-bit RGB image (CV_8UC3), got type " + std::to_string(view.rgb.type()) +
                    " with " + std::to_string(view.rgb.channels()) + " channel(s)");
  if (need_mpp && !(view.mpp > 0.0))
    throw Error(ErrorCode::invalid_argument, name + ": the image's scale (mpp) must be > 0, got " + std::to_string(view.mpp));
  if (!(view.downsample > 0.0))
    throw Error(ErrorCode::invalid_argument, name + ": downsample must be > 0, got " + std::to_string(view.downsample));
}

}  // namespace grade
