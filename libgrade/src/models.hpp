#pragma once
// Model files from libgrade/models/ are compiled into the library as byte arrays (libgrade/cmake/embed.cmake):
// models/<stem>.<ext> becomes grade::detail::model_<stem> and model_<stem>_size. Declare the ones a stage uses with
// GRADE_DECLARE_MODEL(stem) at namespace scope and read them with GRADE_MODEL_BYTES(stem).
#include <cstddef>
#include <vector>

#define GRADE_DECLARE_MODEL(stem)                         \
  namespace grade::detail {                               \
  extern const unsigned char model_##stem[];              \
  extern const std::size_t model_##stem##_size;           \
  }
#define GRADE_MODEL_BYTES(stem) \
  std::vector<unsigned char>(::grade::detail::model_##stem, ::grade::detail::model_##stem + ::grade::detail::model_##stem##_size)
