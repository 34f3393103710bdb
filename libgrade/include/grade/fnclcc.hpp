#pragma once
// FNCLCC grading of adult soft-tissue sarcoma (Trojani et al., Int J Cancer 1984; Guillou et al., J Clin Oncol 1997;
// Coindre, Arch Pathol Lab Med 2006;130:1448-53). Pure functions: no I/O, no state.
//
// The grade is the sum of three scores:
//   differentiation 1..3 (the pathologist's, or implied by the histological subtype: Coindre 2006, table 2),
//   mitotic count 1..3 (0-9 / 10-19 / >= 20 mitoses per 10 HPF in the most active area),
//   tumour necrosis 0..2 (none / < 50 % / >= 50 % of the tumour area);
// total 2-3 -> G1, 4-5 -> G2, 6-8 -> G3; G1 is low grade, G2 and G3 high grade (two-tier reporting).
//
// The subtype table is the updated one of Coindre 2006 (table 2), with the older names of Guillou 1997 that are still
// met in reports (MFH variants, round cell liposarcoma, malignant schwannoma, PNET). Not in the table on purpose:
// solitary fibrous tumour / haemangiopericytoma (graded with risk models, not FNCLCC, today) and anything we could not
// check against those two papers; for those the pathologist gives the score.
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace grade {

enum class Tier { low, high };
const char* to_string(Tier tier) noexcept;  // "low" / "high"

// Mitosis score from the count per 10 HPF: 0-9 -> 1, 10-19 -> 2, >= 20 -> 3. Throws invalid_argument when < 0.
int mitosis_score(int count_per_10hpf);
// Necrosis score from the percentage of tumour: 0 -> 0, (0, 50) -> 1, >= 50 -> 2. Throws outside [0, 100] or NaN.
int necrosis_score(double necrosis_percent);
// Grade 1..3 from the total score 2..8 (2-3 -> 1, 4-5 -> 2, 6-8 -> 3). Throws outside 2..8.
int grade_from_total(int total);
// G1 -> low, G2/G3 -> high. Throws outside 1..3.
Tier tier_from_grade(int grade);

// Differentiation score implied by a subtype name (e.g. "leiomyosarcoma", "well-differentiated leiomyosarcoma",
// "pleomorphic leiomyosarcoma"); case- and punctuation-insensitive ("Well differentiated", "well-differentiated" and
// "WELL_DIFFERENTIATED" are the same; "tumour"/"tumor", "haem"/"hem" spellings too). nullopt when the name is not known.
std::optional<int> differentiation_from_subtype(const std::string& subtype);
// The subtype names differentiation_from_subtype() knows (canonical spellings, not aliases), with their scores, for
// --help and the README.
std::vector<std::pair<std::string, int>> known_subtypes();
// Remarks on applying FNCLCC to a subtype (e.g. "high grade by definition", "grade of limited prognostic value"), or
// "" when there is none or the subtype is unknown.
std::string subtype_caveat(const std::string& subtype);

struct FnclccInput {
  std::optional<int> differentiation;  // 1..3 from the pathologist, or unknown
  // Histological subtype, optional. Used for the differentiation score when `differentiation` is unset, and for notes.
  std::string subtype;
  int mitotic_count = 0;  // per 10 HPF
  // Exact Poisson 95 % interval of the count. When both are 0 and the count is > 0, fnclcc_grade computes it.
  double mitotic_ci95_low = 0.0, mitotic_ci95_high = 0.0;
  double necrosis_percent = 0.0;
  double necrosis_borderline_points = 5.0;  // see FnclccResult::necrosis_borderline
};

struct FnclccResult {
  std::optional<int> differentiation;
  std::string differentiation_source;  // "pathologist", "subtype", or "" when unknown
  int mitosis_score = 1;
  int necrosis_score = 0;
  std::optional<int> total;          // when differentiation is known
  std::vector<int> possible_grades;  // sorted; one element when the grade is determined
  std::optional<int> grade;          // when every possible differentiation gives the same grade
  std::optional<Tier> tier;          // when the tier is determined (it may be even when the grade is not)
  bool complete = false;             // differentiation known
  bool mitosis_borderline = false;   // the count's 95 % interval crosses 10 or 20
  bool necrosis_borderline = false;  // necrosis within necrosis_borderline_points of 0 (and > 0) or of 50
  std::vector<std::string> notes;    // human-readable remarks on what was assumed
};

// Necrosis within this many percentage points of 0 (above 0) or of 50 is flagged borderline (default of FnclccInput).
inline constexpr double necrosis_borderline_points = 5.0;

// Combines the measured values into the FNCLCC scores and grade. Throws grade::Error(invalid_argument) naming the bad
// value when differentiation is outside 1..3, the count < 0, the interval inverted, or necrosis outside [0, 100].
FnclccResult fnclcc_grade(const FnclccInput& input);

}  // namespace grade
