// FNCLCC rules (see fnclcc.hpp for the sources).
#include "grade/fnclcc.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>
#include <sstream>

#include "grade/count.hpp"
#include "grade/error.hpp"

namespace grade {

namespace detail {
namespace {

enum class Caveat { none, high_grade_by_definition, limited_value };

struct SubtypeEntry {
  const char* name;  // canonical spelling (normalised form is derived)
  int score;
  Caveat caveat;
  bool canonical;  // listed by known_subtypes(); false for aliases and older names
};

// Coindre 2006, table 2 (updated FNCLCC differentiation scores), plus the names of Guillou 1997 still in use.
// Caveats: Coindre 2006 and the WHO classification say grading is not recommended (not prognostic) for MPNST,
// angiosarcoma, extraskeletal myxoid chondrosarcoma, alveolar soft part sarcoma, clear cell sarcoma and epithelioid
// sarcoma; embryonal/alveolar rhabdomyosarcoma, Ewing sarcoma / PNET, mesenchymal chondrosarcoma, extraskeletal
// osteosarcoma, malignant rhabdoid tumour and round cell liposarcoma are high grade by definition.
const SubtypeEntry kSubtypes[] = {
    // score 1
    {"well-differentiated liposarcoma", 1, Caveat::none, true},
    {"atypical lipomatous tumour", 1, Caveat::none, false},
    {"well-differentiated leiomyosarcoma", 1, Caveat::none, true},
    {"malignant neurofibroma", 1, Caveat::limited_value, true},
    {"well-differentiated malignant peripheral nerve sheath tumour", 1, Caveat::limited_value, true},
    {"well-differentiated mpnst", 1, Caveat::limited_value, false},
    {"well-differentiated fibrosarcoma", 1, Caveat::none, true},
    // score 2
    {"myxoid liposarcoma", 2, Caveat::none, true},
    {"leiomyosarcoma", 2, Caveat::none, true},
    {"conventional leiomyosarcoma", 2, Caveat::none, true},
    {"conventional malignant peripheral nerve sheath tumour", 2, Caveat::limited_value, true},
    {"malignant peripheral nerve sheath tumour", 2, Caveat::limited_value, false},
    {"conventional mpnst", 2, Caveat::limited_value, false},
    {"mpnst", 2, Caveat::limited_value, false},
    {"malignant schwannoma", 2, Caveat::limited_value, false},
    {"fibrosarcoma", 2, Caveat::none, false},
    {"conventional fibrosarcoma", 2, Caveat::none, true},
    {"myxofibrosarcoma", 2, Caveat::none, true},
    {"myxoid malignant fibrous histiocytoma", 2, Caveat::none, false},
    {"myxoid mfh", 2, Caveat::none, false},
    {"storiform malignant fibrous histiocytoma", 2, Caveat::none, false},
    {"myxoid chondrosarcoma", 2, Caveat::limited_value, false},
    {"extraskeletal myxoid chondrosarcoma", 2, Caveat::limited_value, true},
    {"angiosarcoma", 2, Caveat::limited_value, false},
    {"conventional angiosarcoma", 2, Caveat::limited_value, true},
    // score 3
    {"round cell liposarcoma", 3, Caveat::high_grade_by_definition, true},
    {"high-grade myxoid liposarcoma", 3, Caveat::high_grade_by_definition, false},
    {"myxoid round cell liposarcoma", 3, Caveat::high_grade_by_definition, false},
    {"pleomorphic liposarcoma", 3, Caveat::none, true},
    {"dedifferentiated liposarcoma", 3, Caveat::none, true},
    {"rhabdomyosarcoma", 3, Caveat::high_grade_by_definition, true},
    {"embryonal rhabdomyosarcoma", 3, Caveat::high_grade_by_definition, true},
    {"alveolar rhabdomyosarcoma", 3, Caveat::high_grade_by_definition, true},
    {"pleomorphic rhabdomyosarcoma", 3, Caveat::none, true},
    {"poorly differentiated leiomyosarcoma", 3, Caveat::none, true},
    {"pleomorphic leiomyosarcoma", 3, Caveat::none, true},
    {"epithelioid leiomyosarcoma", 3, Caveat::none, true},
    {"poorly differentiated angiosarcoma", 3, Caveat::limited_value, true},
    {"epithelioid angiosarcoma", 3, Caveat::limited_value, true},
    {"poorly differentiated malignant peripheral nerve sheath tumour", 3, Caveat::limited_value, true},
    {"poorly differentiated mpnst", 3, Caveat::limited_value, false},
    {"epithelioid malignant peripheral nerve sheath tumour", 3, Caveat::limited_value, true},
    {"epithelioid mpnst", 3, Caveat::limited_value, false},
    {"malignant triton tumour", 3, Caveat::limited_value, true},
    {"poorly differentiated fibrosarcoma", 3, Caveat::none, true},
    {"synovial sarcoma", 3, Caveat::none, true},
    {"monophasic synovial sarcoma", 3, Caveat::none, false},
    {"biphasic synovial sarcoma", 3, Caveat::none, false},
    {"poorly differentiated synovial sarcoma", 3, Caveat::none, false},
    {"extraskeletal osteosarcoma", 3, Caveat::high_grade_by_definition, true},
    {"ewing sarcoma", 3, Caveat::high_grade_by_definition, true},
    {"extraskeletal ewing sarcoma", 3, Caveat::high_grade_by_definition, true},
    {"primitive neuroectodermal tumour", 3, Caveat::high_grade_by_definition, false},
    {"pnet", 3, Caveat::high_grade_by_definition, false},
    {"mesenchymal chondrosarcoma", 3, Caveat::high_grade_by_definition, true},
    {"clear cell sarcoma", 3, Caveat::limited_value, true},
    {"epithelioid sarcoma", 3, Caveat::limited_value, true},
    {"alveolar soft part sarcoma", 3, Caveat::limited_value, true},
    {"malignant rhabdoid tumour", 3, Caveat::high_grade_by_definition, true},
    {"undifferentiated pleomorphic sarcoma", 3, Caveat::none, true},
    {"undifferentiated spindle cell sarcoma", 3, Caveat::none, true},
    {"undifferentiated sarcoma", 3, Caveat::none, true},
    {"pleomorphic malignant fibrous histiocytoma", 3, Caveat::none, false},
    {"malignant fibrous histiocytoma", 3, Caveat::none, false},
    {"pleomorphic mfh", 3, Caveat::none, false},
    {"giant cell malignant fibrous histiocytoma", 3, Caveat::none, false},
    {"inflammatory malignant fibrous histiocytoma", 3, Caveat::none, false},
};

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
}

// Lower case, every run of non-alphanumerics one space, British spellings made American ("tumour", "haem"), so
// "Well-differentiated", "well differentiated" and "WELL_DIFFERENTIATED" match. Word order is not normalised.
std::string normalise(const std::string& name) {
  std::string out;
  bool space = false;
  for (unsigned char c : name) {
    if (std::isalnum(c)) {
      if (space && !out.empty()) out += ' ';
      out += static_cast<char>(std::tolower(c));
      space = false;
    } else {
      space = true;
    }
  }
  replace_all(out, "tumour", "tumor");
  replace_all(out, "haem", "hem");
  replace_all(out, "ewings", "ewing");
  replace_all(out, "ewing s ", "ewing ");
  return out;
}

const SubtypeEntry* find_subtype(const std::string& subtype) {
  const std::string key = normalise(subtype);
  if (key.empty()) return nullptr;
  for (const auto& e : kSubtypes)
    if (normalise(e.name) == key) return &e;
  return nullptr;
}

std::string fmt(double v, int precision = 1) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(precision);
  s << v;
  return s.str();
}

}  // namespace
}  // namespace detail

const char* to_string(Tier tier) noexcept { return tier == Tier::low ? "low" : "high"; }

int mitosis_score(int count_per_10hpf) {
  if (count_per_10hpf < 0)
    throw Error(ErrorCode::invalid_argument,
                "fnclcc: mitotic count must be >= 0, got " + std::to_string(count_per_10hpf));
  if (count_per_10hpf <= 9) return 1;
  if (count_per_10hpf <= 19) return 2;
  return 3;
}

int necrosis_score(double necrosis_percent) {
  if (!(necrosis_percent >= 0.0 && necrosis_percent <= 100.0))
    throw Error(ErrorCode::invalid_argument,
                "fnclcc: necrosis percentage must be in [0, 100], got " + std::to_string(necrosis_percent));
  if (necrosis_percent == 0.0) return 0;
  if (necrosis_percent < 50.0) return 1;
  return 2;
}

int grade_from_total(int total) {
  if (total < 2 || total > 8)
    throw Error(ErrorCode::invalid_argument, "fnclcc: total score must be in 2..8, got " + std::to_string(total));
  if (total <= 3) return 1;
  if (total <= 5) return 2;
  return 3;
}

Tier tier_from_grade(int grade) {
  if (grade < 1 || grade > 3)
    throw Error(ErrorCode::invalid_argument, "fnclcc: grade must be 1, 2 or 3, got " + std::to_string(grade));
  return grade == 1 ? Tier::low : Tier::high;
}

std::optional<int> differentiation_from_subtype(const std::string& subtype) {
  if (const auto* e = detail::find_subtype(subtype)) return e->score;
  return std::nullopt;
}

std::vector<std::pair<std::string, int>> known_subtypes() {
  std::vector<std::pair<std::string, int>> out;
  for (const auto& e : detail::kSubtypes)
    if (e.canonical) out.emplace_back(e.name, e.score);
  return out;
}

std::string subtype_caveat(const std::string& subtype) {
  const auto* e = detail::find_subtype(subtype);
  if (!e) return "";
  switch (e->caveat) {
    case detail::Caveat::high_grade_by_definition:
      return std::string(e->name) +
             " is high grade by definition; the FNCLCC grade is given for information only (Coindre 2006)";
    case detail::Caveat::limited_value:
      return "FNCLCC grading is not recommended for " + std::string(e->name) +
             " (the grade has little prognostic value for this type; Coindre 2006)";
    case detail::Caveat::none:
      break;
  }
  return "";
}

FnclccResult fnclcc_grade(const FnclccInput& in) {
  if (in.differentiation && (*in.differentiation < 1 || *in.differentiation > 3))
    throw Error(ErrorCode::invalid_argument,
                "fnclcc: differentiation score must be 1, 2 or 3, got " + std::to_string(*in.differentiation));
  if (!(in.mitotic_ci95_low <= in.mitotic_ci95_high) || in.mitotic_ci95_low < 0.0)
    throw Error(ErrorCode::invalid_argument, "fnclcc: mitotic count interval must satisfy 0 <= low <= high, got [" +
                                                 std::to_string(in.mitotic_ci95_low) + ", " +
                                                 std::to_string(in.mitotic_ci95_high) + "]");
  if (!(in.necrosis_borderline_points >= 0.0))
    throw Error(ErrorCode::invalid_argument, "fnclcc: necrosis_borderline_points must be >= 0, got " +
                                                 std::to_string(in.necrosis_borderline_points));

  FnclccResult r;
  r.mitosis_score = mitosis_score(in.mitotic_count);
  r.necrosis_score = necrosis_score(in.necrosis_percent);

  // Differentiation: the pathologist's score wins; else the subtype's.
  const auto from_subtype = in.subtype.empty() ? std::nullopt : differentiation_from_subtype(in.subtype);
  if (in.differentiation) {
    r.differentiation = in.differentiation;
    r.differentiation_source = "pathologist";
    if (from_subtype && *from_subtype != *in.differentiation)
      r.notes.push_back("the given differentiation score " + std::to_string(*in.differentiation) +
                        " differs from the score " + std::to_string(*from_subtype) + " of subtype '" + in.subtype +
                        "' in the FNCLCC table; the given score was used");
  } else if (from_subtype) {
    r.differentiation = from_subtype;
    r.differentiation_source = "subtype";
    r.notes.push_back("differentiation score " + std::to_string(*from_subtype) + " from subtype '" + in.subtype +
                      "' (FNCLCC table, Coindre 2006)");
  } else if (!in.subtype.empty()) {
    r.notes.push_back("subtype '" + in.subtype +
                      "' is not in the FNCLCC differentiation table; give the differentiation score (1-3)");
  }
  if (!in.subtype.empty()) {
    const std::string caveat = subtype_caveat(in.subtype);
    if (!caveat.empty()) r.notes.push_back(caveat);
  }

  std::set<int> grades;
  std::set<Tier> tiers;
  if (r.differentiation) {
    r.total = *r.differentiation + r.mitosis_score + r.necrosis_score;
    grades.insert(grade_from_total(*r.total));
  } else {
    for (int d = 1; d <= 3; ++d) grades.insert(grade_from_total(d + r.mitosis_score + r.necrosis_score));
  }
  for (int g : grades) tiers.insert(tier_from_grade(g));
  r.possible_grades.assign(grades.begin(), grades.end());
  if (grades.size() == 1) r.grade = *grades.begin();
  if (tiers.size() == 1) r.tier = *tiers.begin();
  r.complete = r.differentiation.has_value();
  if (!r.complete) {
    std::string list;
    for (int g : r.possible_grades) {
      list += list.empty() ? "G" : " or G";
      list += std::to_string(g);
    }
    if (r.grade)
      r.notes.push_back("differentiation not given: every differentiation score gives G" + std::to_string(*r.grade));
    else
      r.notes.push_back("differentiation not given: the grade is " + list + " depending on the differentiation score" +
                        (r.tier ? std::string(" (") + to_string(*r.tier) + " grade either way)" : std::string()));
  }

  // Borderline mitotic count: the score could differ within the count's exact Poisson 95 % interval.
  double lo = in.mitotic_ci95_low, hi = in.mitotic_ci95_high;
  if (lo == 0.0 && hi == 0.0 && in.mitotic_count > 0) poisson_ci95(in.mitotic_count, lo, hi);
  for (double cut : {10.0, 20.0})
    if (lo < cut && hi >= cut) r.mitosis_borderline = true;
  if (r.mitosis_borderline)
    r.notes.push_back("mitotic count " + std::to_string(in.mitotic_count) + " per 10 HPF is borderline: its 95 % interval [" +
                      detail::fmt(lo) + ", " + detail::fmt(hi) + "] crosses the cut-off at 10 or 20");

  const double p = in.necrosis_percent, band = in.necrosis_borderline_points;
  if ((p > 0.0 && p <= band) || std::abs(p - 50.0) <= band) {
    r.necrosis_borderline = true;
    r.notes.push_back("necrosis " + detail::fmt(p) + " % is within " + detail::fmt(band) + " points of " +
                      (p <= band ? "0 %" : "50 %") + ": its score may flip");
  }

  r.notes.push_back("assumes an untreated primary tumour: FNCLCC grading does not apply after neoadjuvant therapy, "
                    "and the pathologist decides whether it applies to this tumour type");
  return r;
}

}  // namespace grade
