#pragma once
// FNCLCC grading (Trojani et al., Int J Cancer 1984; Guillou et al., J Clin Oncol 1997; Coindre, Arch Pathol Lab Med
// 2006). Pure functions: no I/O, no state.
#include <optional>
#include <string>
#include <vector>

namespace grade {

enum class Tier { low, high };

// Mitosis score from the count per 10 HPF: 0-9 -> 1, 10-19 -> 2, >= 20 -> 3.
int mitosis_score(int count_per_10hpf);
// Necrosis score from the percentage of tumour: 0 -> 0, (0, 50) -> 1, >= 50 -> 2.
int necrosis_score(double necrosis_percent);
// Grade 1..3 from the total score 2..8 (2-3 -> 1, 4-5 -> 2, 6-8 -> 3).
int grade_from_total(int total);
Tier tier_from_grade(int grade);

// Differentiation score implied by a subtype name (e.g. "leiomyosarcoma", "well-differentiated leiomyosarcoma",
// "pleomorphic leiomyosarcoma"); case- and punctuation-insensitive. nullopt when the name is not known.
std::optional<int> differentiation_from_subtype(const std::string& subtype);
// The subtype names differentiation_from_subtype() knows, with their scores, for --help and the README.
std::vector<std::pair<std::string, int>> known_subtypes();

struct FnclccInput {
  std::optional<int> differentiation;  // 1..3 from the pathologist, or unknown
  int mitotic_count = 0;               // per 10 HPF
  double mitotic_ci95_low = 0.0, mitotic_ci95_high = 0.0;
  double necrosis_percent = 0.0;
};

struct FnclccResult {
  std::optional<int> differentiation;
  int mitosis_score = 1;
  int necrosis_score = 0;
  std::optional<int> total;          // when differentiation is known
  std::vector<int> possible_grades;  // sorted; one element when the grade is determined
  std::optional<int> grade;          // when every possible differentiation gives the same grade
  std::optional<Tier> tier;          // when the tier is determined (it may be even when the grade is not)
  bool complete = false;             // differentiation known
  bool mitosis_borderline = false;   // the count's 95 % interval crosses 10 or 20
  bool necrosis_borderline = false;  // necrosis near 0 % or near 50 %
  std::vector<std::string> notes;    // human-readable remarks on what was assumed
};

// Necrosis within this many percentage points of 0 (above 0) or of 50 is flagged borderline.
inline constexpr double necrosis_borderline_points = 5.0;

FnclccResult fnclcc_grade(const FnclccInput& input);

}  // namespace grade
