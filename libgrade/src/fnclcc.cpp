// PLACEHOLDER: replaced by the real implementation (issue 6).
#include "grade/fnclcc.hpp"
#include "grade/error.hpp"

namespace grade {
int mitosis_score(int) { throw Error(ErrorCode::internal, "fnclcc: not implemented yet"); }
int necrosis_score(double) { throw Error(ErrorCode::internal, "fnclcc: not implemented yet"); }
int grade_from_total(int) { throw Error(ErrorCode::internal, "fnclcc: not implemented yet"); }
Tier tier_from_grade(int) { throw Error(ErrorCode::internal, "fnclcc: not implemented yet"); }
std::optional<int> differentiation_from_subtype(const std::string&) { throw Error(ErrorCode::internal, "fnclcc: not implemented yet"); }
std::vector<std::pair<std::string, int>> known_subtypes() { throw Error(ErrorCode::internal, "fnclcc: not implemented yet"); }
FnclccResult fnclcc_grade(const FnclccInput&) { throw Error(ErrorCode::internal, "fnclcc: not implemented yet"); }
}  // namespace grade
