#include "grade/allocator.hpp"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace grade {

bool tune_allocator() {
#if defined(__GLIBC__)
  // mallopt returns 1 on success; 32 MiB is glibc's largest mmap threshold on 64-bit targets.
  return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TOP_PAD, 64 << 20) == 1;
#else
  return false;
#endif
}

}  // namespace grade
