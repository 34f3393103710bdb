// Builds against the installed package: uses a stage, the grading rules and the error type.
#include <grade/grade.hpp>

#include <iostream>

int main() {
  grade::tune_allocator();  // public, linkable (its result depends on the C library)
  grade::FnclccInput in;
  in.differentiation = 2;
  in.mitotic_count = 12;
  in.necrosis_percent = 10.0;
  const grade::FnclccResult r = grade::fnclcc_grade(in);
  if (!r.grade || *r.grade != 2) return 1;
  try {
    grade::Slide::open("/nonexistent/slide.svs");
    return 2;
  } catch (const grade::Error& e) {
    if (e.code() != grade::ErrorCode::file_not_found) return 3;
  }
  std::cout << "libgrade " << grade::version_string << ": consumer OK\n";
  return 0;
}
