// FNCLCC rules: every component value, the grade table, incomplete grading, borderline flags, subtypes.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>

#include "grade/count.hpp"
#include "grade/error.hpp"
#include "grade/fnclcc.hpp"

using namespace grade;

namespace {
bool has_note(const FnclccResult& r, const std::string& part) {
  return std::any_of(r.notes.begin(), r.notes.end(), [&](const std::string& n) { return n.find(part) != std::string::npos; });
}
}  // namespace

TEST_CASE("mitosis score cut-offs") {
  for (int c = 0; c <= 200; ++c) CHECK(mitosis_score(c) == (c < 10 ? 1 : c < 20 ? 2 : 3));
  CHECK(mitosis_score(9) == 1);
  CHECK(mitosis_score(10) == 2);
  CHECK(mitosis_score(19) == 2);
  CHECK(mitosis_score(20) == 3);
  CHECK_THROWS_AS(mitosis_score(-1), Error);
}

TEST_CASE("necrosis score cut-offs") {
  CHECK(necrosis_score(0.0) == 0);
  CHECK(necrosis_score(1e-9) == 1);
  CHECK(necrosis_score(49.999) == 1);
  CHECK(necrosis_score(50.0) == 2);
  CHECK(necrosis_score(100.0) == 2);
  CHECK_THROWS_AS(necrosis_score(-0.1), Error);
  CHECK_THROWS_AS(necrosis_score(100.5), Error);
  CHECK_THROWS_AS(necrosis_score(std::nan("")), Error);
}

TEST_CASE("total to grade to tier") {
  const int expected[] = {0, 0, 1, 1, 2, 2, 3, 3, 3};
  for (int t = 2; t <= 8; ++t) CHECK(grade_from_total(t) == expected[t]);
  CHECK_THROWS_AS(grade_from_total(1), Error);
  CHECK_THROWS_AS(grade_from_total(9), Error);
  CHECK(tier_from_grade(1) == Tier::low);
  CHECK(tier_from_grade(2) == Tier::high);
  CHECK(tier_from_grade(3) == Tier::high);
  CHECK_THROWS_AS(tier_from_grade(0), Error);
  CHECK(std::string(to_string(Tier::low)) == "low");
}

TEST_CASE("fnclcc_grade: every differentiation x mitosis x necrosis score") {
  // One representative measured value per score, plus the values at the cut-offs.
  const int counts[] = {0, 5, 9, 10, 15, 19, 20, 45};
  const double necroses[] = {0.0, 0.5, 20.0, 49.9, 50.0, 80.0, 100.0};
  for (int d = 0; d <= 3; ++d)
    for (int c : counts)
      for (double n : necroses) {
        CAPTURE(d);
        CAPTURE(c);
        CAPTURE(n);
        FnclccInput in;
        if (d > 0) in.differentiation = d;
        in.mitotic_count = c;
        in.necrosis_percent = n;
        const auto r = fnclcc_grade(in);
        const int m = c < 10 ? 1 : c < 20 ? 2 : 3;
        const int k = n == 0.0 ? 0 : n < 50.0 ? 1 : 2;
        CHECK(r.mitosis_score == m);
        CHECK(r.necrosis_score == k);
        auto grade_of = [](int total) { return total <= 3 ? 1 : total <= 5 ? 2 : 3; };
        if (d > 0) {
          REQUIRE(r.total.has_value());
          CHECK(*r.total == d + m + k);
          REQUIRE(r.grade.has_value());
          CHECK(*r.grade == grade_of(d + m + k));
          CHECK(r.possible_grades == std::vector<int>{*r.grade});
          REQUIRE(r.tier.has_value());
          CHECK(*r.tier == (*r.grade == 1 ? Tier::low : Tier::high));
          CHECK(r.complete);
          CHECK(r.differentiation_source == "pathologist");
        } else {
          std::set<int> g;
          for (int dd = 1; dd <= 3; ++dd) g.insert(grade_of(dd + m + k));
          CHECK(r.possible_grades == std::vector<int>(g.begin(), g.end()));
          CHECK(!r.total.has_value());
          CHECK(!r.complete);
          CHECK(r.grade.has_value() == (g.size() == 1));
          if (g.size() == 1) CHECK(*r.grade == *g.begin());
          const bool tier_known = *g.begin() >= 2 || *g.rbegin() == 1;
          CHECK(r.tier.has_value() == tier_known);
          if (tier_known) CHECK(*r.tier == (*g.begin() == 1 ? Tier::low : Tier::high));
          CHECK(has_note(r, "differentiation not given"));
          CHECK(r.differentiation_source.empty());
        }
        CHECK(has_note(r, "neoadjuvant"));
      }
}

TEST_CASE("missing differentiation: known cases") {
  FnclccInput in;
  in.mitotic_count = 2;
  in.necrosis_percent = 0.0;  // m1 n0: totals 2..4 -> G1 or G2
  auto r = fnclcc_grade(in);
  CHECK(r.possible_grades == std::vector<int>{1, 2});
  CHECK(!r.grade);
  CHECK(!r.tier);
  in.mitotic_count = 30;
  in.necrosis_percent = 60.0;  // m3 n2: totals 6..8 -> G3 whatever the differentiation
  r = fnclcc_grade(in);
  CHECK(r.possible_grades == std::vector<int>{3});
  REQUIRE(r.grade);
  CHECK(*r.grade == 3);
  CHECK(!r.complete);
  in.mitotic_count = 12;
  in.necrosis_percent = 10.0;  // m2 n1: totals 4..6 -> G2 or G3: grade unknown, tier high
  r = fnclcc_grade(in);
  CHECK(r.possible_grades == std::vector<int>{2, 3});
  CHECK(!r.grade);
  REQUIRE(r.tier);
  CHECK(*r.tier == Tier::high);
}

TEST_CASE("borderline flags") {
  FnclccInput in;
  in.differentiation = 2;
  double lo = 0, hi = 0;
  for (int c : {0, 1, 3, 9, 10, 11, 18, 20, 22, 40, 60}) {
    CAPTURE(c);
    poisson_ci95(c, lo, hi);
    in.mitotic_count = c;
    in.mitotic_ci95_low = lo;
    in.mitotic_ci95_high = hi;
    const auto r = fnclcc_grade(in);
    CHECK(r.mitosis_borderline == ((lo < 10 && hi >= 10) || (lo < 20 && hi >= 20)));
  }
  // Known values: 1 -> [0.025, 5.57] not borderline; 9 -> [4.1, 17.1] crosses 10; 40 -> [28.6, 54.5] does not.
  in.mitotic_ci95_low = in.mitotic_ci95_high = 0.0;  // computed from the count when not given
  in.mitotic_count = 1;
  CHECK(!fnclcc_grade(in).mitosis_borderline);
  in.mitotic_count = 9;
  CHECK(fnclcc_grade(in).mitosis_borderline);
  in.mitotic_count = 40;
  CHECK(!fnclcc_grade(in).mitosis_borderline);
  in.mitotic_count = 0;
  CHECK(!fnclcc_grade(in).mitosis_borderline);

  in.mitotic_count = 40;
  for (double n : {0.0, 0.1, 4.9, 5.0, 5.1, 20.0, 44.9, 45.0, 50.0, 55.0, 55.1, 90.0}) {
    CAPTURE(n);
    in.necrosis_percent = n;
    const auto r = fnclcc_grade(in);
    CHECK(r.necrosis_borderline == ((n > 0 && n <= 5.0) || (n >= 45.0 && n <= 55.0)));
    if (r.necrosis_borderline) CHECK(has_note(r, "necrosis"));
  }
  in.necrosis_percent = 8.0;
  in.necrosis_borderline_points = 10.0;
  CHECK(fnclcc_grade(in).necrosis_borderline);
}

TEST_CASE("invalid inputs name the value") {
  FnclccInput in;
  in.differentiation = 4;
  try {
    fnclcc_grade(in);
    FAIL("no throw");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(std::string(e.what()).find("4") != std::string::npos);
  }
  in.differentiation = 1;
  in.mitotic_count = -3;
  CHECK_THROWS_AS(fnclcc_grade(in), Error);
  in.mitotic_count = 3;
  in.necrosis_percent = 101.0;
  CHECK_THROWS_AS(fnclcc_grade(in), Error);
  in.necrosis_percent = 1.0;
  in.mitotic_ci95_low = 5.0;
  in.mitotic_ci95_high = 2.0;
  CHECK_THROWS_AS(fnclcc_grade(in), Error);
}

TEST_CASE("subtype table (Coindre 2006)") {
  const std::pair<const char*, int> cases[] = {
      {"leiomyosarcoma", 2},
      {"well-differentiated leiomyosarcoma", 1},
      {"Well differentiated Leiomyosarcoma", 1},
      {"WELL_DIFFERENTIATED_LEIOMYOSARCOMA", 1},
      {"conventional leiomyosarcoma", 2},
      {"poorly differentiated leiomyosarcoma", 3},
      {"pleomorphic leiomyosarcoma", 3},
      {"epithelioid leiomyosarcoma", 3},
      {"well-differentiated liposarcoma", 1},
      {"myxoid liposarcoma", 2},
      {"round cell liposarcoma", 3},
      {"pleomorphic liposarcoma", 3},
      {"dedifferentiated liposarcoma", 3},
      {"well-differentiated fibrosarcoma", 1},
      {"conventional fibrosarcoma", 2},
      {"poorly differentiated fibrosarcoma", 3},
      {"myxofibrosarcoma", 2},
      {"undifferentiated pleomorphic sarcoma", 3},
      {"well-differentiated MPNST", 1},
      {"malignant neurofibroma", 1},
      {"conventional MPNST", 2},
      {"poorly differentiated MPNST", 3},
      {"malignant triton tumor", 3},
      {"synovial sarcoma", 3},
      {"embryonal rhabdomyosarcoma", 3},
      {"alveolar rhabdomyosarcoma", 3},
      {"Ewing sarcoma", 3},
      {"Ewing's sarcoma", 3},
      {"extraskeletal Ewing sarcoma", 3},
      {"mesenchymal chondrosarcoma", 3},
      {"extraskeletal myxoid chondrosarcoma", 2},
      {"conventional angiosarcoma", 2},
      {"epithelioid angiosarcoma", 3},
      {"extraskeletal osteosarcoma", 3},
      {"clear cell sarcoma", 3},
      {"alveolar soft part sarcoma", 3},
      {"malignant rhabdoid tumour", 3},
  };
  for (const auto& [name, score] : cases) {
    CAPTURE(name);
    const auto d = differentiation_from_subtype(name);
    REQUIRE(d.has_value());
    CHECK(*d == score);
  }
  CHECK(!differentiation_from_subtype("banana").has_value());
  CHECK(!differentiation_from_subtype("").has_value());
  CHECK(!differentiation_from_subtype("solitary fibrous tumour").has_value());
  const auto known = known_subtypes();
  CHECK(known.size() >= 30);
  for (const auto& [name, score] : known) {
    CAPTURE(name);
    CHECK(differentiation_from_subtype(name) == score);
    CHECK(score >= 1);
    CHECK(score <= 3);
  }
  CHECK(subtype_caveat("embryonal rhabdomyosarcoma").find("high grade by definition") != std::string::npos);
  CHECK(subtype_caveat("angiosarcoma").find("not recommended") != std::string::npos);
  CHECK(subtype_caveat("leiomyosarcoma").empty());
}

TEST_CASE("differentiation from the subtype in fnclcc_grade") {
  FnclccInput in;
  in.subtype = "pleomorphic leiomyosarcoma";
  in.mitotic_count = 12;
  in.necrosis_percent = 0.0;
  auto r = fnclcc_grade(in);
  REQUIRE(r.differentiation);
  CHECK(*r.differentiation == 3);
  CHECK(r.differentiation_source == "subtype");
  CHECK(r.complete);
  CHECK(*r.grade == 2);  // 3 + 2 + 0 = 5
  in.differentiation = 1;  // the pathologist's score wins, with a note
  r = fnclcc_grade(in);
  CHECK(*r.differentiation == 1);
  CHECK(r.differentiation_source == "pathologist");
  CHECK(has_note(r, "differs"));
  in.differentiation.reset();
  in.subtype = "unknownoma";
  r = fnclcc_grade(in);
  CHECK(!r.complete);
  CHECK(has_note(r, "not in the FNCLCC"));
  in.subtype = "Ewing sarcoma";
  r = fnclcc_grade(in);
  CHECK(has_note(r, "high grade by definition"));
}
