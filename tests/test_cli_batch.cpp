// grade-batch end to end: manifest validation, shards, error rows for broken slides, kill -9 then --resume.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "grade/report.hpp"
#include "grade/synth.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace grade::test;

namespace {

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

// "<prefix><i><suffix>" (written out to dodge a GCC 12 -Wrestrict false positive on "literal" + std::string).
std::string name(const char* prefix, int i, const char* suffix = "") {
  std::ostringstream s;
  s << prefix << i << suffix;
  return s.str();
}

std::string batch(const std::string& args) { return quote(tool("grade-batch").string()) + " " + args; }

// Small synthetic slides (grade-synth's library entry point): 2048 x 2048 px at 0.25 um/px, seconds each.
void make_slides(const fs::path& dir, int n) {
  for (int i = 0; i < n; ++i) {
    grade::SynthParams p;
    p.width_px = 2048;
    p.height_px = 2048;
    p.seed = 100 + static_cast<std::uint64_t>(i);
    p.hotspot_mitoses_per_10hpf = i % 2 ? 25.0 : 5.0;
    p.necrosis_percent = i % 2 ? 20.0 : 0.0;
    grade::synthesize_slide(p, dir / name("s", i, ".tiff"), dir / name("s", i, ".json"));
  }
}

}  // namespace

TEST_CASE("manifest errors name the line and column; exit status 2") {
  TempDir t("grade-batch-manifest");
  struct Case {
    const char* text;
    const char* expect;
  };
  const Case cases[] = {
      {"id,differentiation\na,1\n", "m.csv:1: the header has no 'slide' column"},
      {"slide,id\na.svs,x\nb.svs,x\n", "m.csv:3: column 'id': duplicate id 'x'"},
      {"slide,id\na.svs,X\nb.svs,x\n", "m.csv:3: column 'id': duplicate id"},
      {"slide\ndir1/a.svs\ndir2/a.svs\n", "m.csv:3: column 'id': duplicate id 'a'"},
      {"slide,differentiation\na.svs,1\nb.svs,4\n", "m.csv:3: column 'differentiation'"},
      {"slide,subtype\na.svs,leiomyosarcoma\nb.svs,bananoma\n", "m.csv:3: column 'subtype': unknown subtype 'bananoma'"},
      {"slide,mpp\na.svs,0.25\nb.svs,abc\n", "m.csv:3: column 'mpp'"},
      {"slide,mpp\na.svs,-1\n", "m.csv:2: column 'mpp'"},
      {"slide,id\n,x\n", "m.csv:2: column 'slide': empty"},
      {"slide,id\na.svs,../evil\n", "m.csv:2: column 'id'"},
      {"slide,id\na.svs\n", "m.csv:2: expected 2 fields"},
      {"slide,id\n\"a.svs,x\n", "m.csv:2: unterminated"},
      {"slide,slide\na,b\n", "m.csv:1: column 'slide' appears twice"},
      {"slide\n", "lists no slides"},
      {"", "empty"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    write_text(t / "m.csv", c.text);
    const auto r = run(batch(quote((t / "m.csv").string()) + " --out " + quote((t / "out").string())));
    CHECK(r.exit_code == 2);
    CHECK_MESSAGE(r.output.find(c.expect) != std::string::npos, r.output);
    CHECK(!fs::exists(t / "out" / "summary.csv"));
  }
  // Usage errors.
  write_text(t / "m.csv", "slide\na.svs\n");
  CHECK(run(batch(quote((t / "m.csv").string()))).exit_code == 2);  // no --out
  for (const char* s : {"0/2", "3/2", "1", "a/b", "1/0", "1/2x"})
    CHECK(run(batch(quote((t / "m.csv").string()) + " --out " + quote((t / "o").string()) + " --shard " + s)).exit_code == 2);
  CHECK(run(batch(quote((t / "nope.csv").string()) + " --out " + quote((t / "o").string()))).exit_code == 2);
}

TEST_CASE("shards are disjoint and cover the manifest; failing slides get error rows") {
  // Slides that do not exist: every row is an error row (file_not_found), which is enough to check the partition.
  TempDir t("grade-batch-shard");
  std::string m = "# a comment line\nid,slide,extra\n";
  std::set<std::string> all;
  for (int i = 0; i < 11; ++i) {
    const std::string id = name("slide", i);
    m += id + ",missing/" + id + ".svs,x\n";
    all.insert(id);
  }
  m += ",,\n";
  write_text(t / "m.csv", m);
  std::set<std::string> seen;
  for (int k = 1; k <= 3; ++k) {
    const auto r = run(batch(quote((t / "m.csv").string()) + " --out " + quote((t / "out").string()) + " --shard " +
                             std::to_string(k) + "/3 --quiet"));
    CHECK(r.exit_code == 1);
    const fs::path summary = t / "out" / name("summary.", k, "-of-3.csv");
    REQUIRE(fs::exists(summary));
    const auto rows = grade::test::read_csv(summary);
    for (const auto& row : rows) {
      CHECK(row.at("status") == "error");
      CHECK(row.at("error_code") == "file_not_found");
      CHECK(row.at("error_message").find(row.at("id") + ".svs") != std::string::npos);
      const int i = std::stoi(row.at("id").substr(5));
      CHECK(i % 3 == k - 1);
      CHECK(seen.insert(row.at("id")).second);  // disjoint
    }
  }
  CHECK(seen == all);  // covering
  CHECK(!fs::exists(t / "out" / "summary.csv"));
  // Unsharded: every slide, in manifest order.
  const auto r = run(batch(quote((t / "m.csv").string()) + " --out " + quote((t / "out").string()) + " --quiet"));
  CHECK(r.exit_code == 1);
  const auto rows = grade::test::read_csv(t / "out" / "summary.csv");
  REQUIRE(rows.size() == 11);
  for (int i = 0; i < 11; ++i) CHECK(rows[static_cast<std::size_t>(i)].at("id") == name("slide", i));
}

TEST_CASE("corrupt and unopenable slides give error rows while the others are graded") {
  // Only this case needs ../shared: it skips itself. shared_data_or_skip would exit the program with ctest's "skipped"
  // code, so the cases after it would never run, and a failure in the cases before it would be reported as a skip.
  const fs::path data = shared_data();
  if (data.empty()) {
    MESSAGE("SKIPPED: ../shared/data is absent (grade-batch on broken.svs and unopenable.tiff)");
    return;
  }
  TempDir t("grade-batch-broken");
  make_slides(t.path(), 2);
  write_text(t / "m.csv", "slide,id,differentiation\n"
                          "s0.tiff,good0,2\n" +
                              (data / "wsi" / "broken.svs").string() + ",broken,2\n" +
                              (data / "wsi" / "fixtures" / "unopenable.tiff").string() + ",unopenable,\n"
                              "s1.tiff,good1,\n");
  const auto r = run(batch(quote((t / "m.csv").string()) + " --out " + quote((t / "out").string()) +
                           " --threads 2 --nuclei none"));
  CHECK(r.exit_code == 1);
  const auto rows = grade::test::read_csv(t / "out" / "summary.csv");
  REQUIRE(rows.size() == 4);
  std::map<std::string, std::map<std::string, std::string>> by_id;
  for (const auto& row : rows) by_id[row.at("id")] = row;
  CHECK(by_id["broken"].at("status") == "error");
  CHECK(by_id["broken"].at("error_code") == "corrupt");
  CHECK(by_id["broken"].at("error_message").find("broken.svs") != std::string::npos);
  CHECK(by_id["unopenable"].at("status") == "error");
  CHECK(by_id["unopenable"].at("error_code") == "unsupported");
  CHECK(by_id["unopenable"].at("error_message").find("unopenable.tiff") != std::string::npos);
  for (const char* id : {"good0", "good1"}) {
    CAPTURE(id);
    CHECK_MESSAGE(by_id[id].at("status") == "ok", r.output);
    CHECK(grade::has_complete_report(t / "out" / id));
  }
  CHECK(by_id["good0"].at("complete") == "1");
  CHECK(!by_id["good0"].at("grade").empty());
  CHECK(by_id["good1"].at("complete") == "0");  // no differentiation given
  CHECK(!fs::exists(t / "out" / "broken" / grade::report_json_name));
}

TEST_CASE("kill -9 in the middle of a batch, then --resume, gives the uninterrupted summary") {
  TempDir t("grade-batch-resume");
  const int n = 4;
  make_slides(t.path(), n);
  std::string m = "slide,differentiation\n";
  for (int i = 0; i < n; ++i) m += name("s", i, ".tiff,") + name("", 1 + i % 3, "\n");
  write_text(t / "m.csv", m);
  const std::string common = " --threads 2 --nuclei none --quiet";

  const auto full = run(batch(quote((t / "m.csv").string()) + " --out " + quote((t / "full").string()) + common));
  CHECK_MESSAGE(full.exit_code == 0, full.output);
  const std::string expected = slurp(t / "full" / "summary.csv");

  // Start the same batch, kill -9 once the first slide's report exists.
  const fs::path out = t / "killed";
  const std::string cmd = "exec " + batch(quote((t / "m.csv").string()) + " --out " + quote(out.string()) + common) +
                          " >/dev/null 2>&1";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  bool killed = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(out / "s0" / grade::report_json_name)) {
      killed = kill(pid, SIGKILL) == 0;
      break;
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) break;  // finished (or failed) before we could kill it
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  const bool died_by_kill = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  MESSAGE("killed mid-batch: " << (killed && died_by_kill));
  CHECK(killed);
  if (died_by_kill) CHECK(!fs::exists(out / "summary.csv"));
  // Whatever was killed left no half-written report: a folder either holds a complete report or no report.json.
  for (int i = 0; i < n; ++i) {
    const fs::path d = out / name("s", i);
    if (fs::exists(d / grade::report_json_name)) CHECK(grade::has_complete_report(d));
  }

  const auto resumed = run(batch(quote((t / "m.csv").string()) + " --out " + quote(out.string()) +
                                 " --threads 2 --nuclei none --resume"));
  CHECK_MESSAGE(resumed.exit_code == 0, resumed.output);
  CHECK(resumed.output.find("already graded, skipped") != std::string::npos);
  CHECK(slurp(out / "summary.csv") == expected);

  // A second --resume redoes nothing and rebuilds the same summary.
  const auto again = run(batch(quote((t / "m.csv").string()) + " --out " + quote(out.string()) +
                               " --threads 2 --nuclei none --resume"));
  CHECK(again.exit_code == 0);
  CHECK(again.output.find("grading ") == std::string::npos);
  CHECK(slurp(out / "summary.csv") == expected);

  // Changing a slide's differentiation in the manifest makes --resume grade that slide again.
  write_text(t / "m2.csv", "slide,differentiation\ns0.tiff,3\ns1.tiff,2\ns2.tiff,3\ns3.tiff,1\n");
  const auto changed = run(batch(quote((t / "m2.csv").string()) + " --out " + quote(out.string()) +
                                 " --threads 2 --nuclei none --resume"));
  CHECK(changed.exit_code == 0);
  CHECK(changed.output.find("other settings") != std::string::npos);
  const auto rows = grade::test::read_csv(out / "summary.csv");
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].at("differentiation") == "3");

  // So do other nucleus settings (they change the report's nucleus numbers); the flips count only with nuclei.
  write_text(t / "m3.csv", "slide,differentiation\ns0.tiff,3\n");
  const auto flips_alone = run(batch(quote((t / "m3.csv").string()) + " --out " + quote(out.string()) +
                                     " --threads 2 --nuclei none --nuclei-flips 2 --resume"));
  CHECK(flips_alone.exit_code == 0);
  CHECK(flips_alone.output.find("grading ") == std::string::npos);
  const auto sampled = run(batch(quote((t / "m3.csv").string()) + " --out " + quote(out.string()) +
                                 " --threads 2 --nuclei sample --nuclei-flips 2 --resume"));
  CHECK_MESSAGE(sampled.exit_code == 0, sampled.output);
  CHECK(sampled.output.find("other settings") != std::string::npos);
  const nlohmann::json rep = read_json(out / "s0" / grade::report_json_name);
  CHECK(rep["parameters"]["nuclei_sampling"] == "sample");
  CHECK(rep["parameters"]["nuclei_flips"] == 2);
  CHECK(rep["parameters"]["nuclei_network"] == "fast");
  CHECK(rep["nuclei"]["count"].get<int>() > 0);
  // The network too: a report from the fast one is regraded for --nuclei-network accurate, then kept.
  const std::string accurate = " --threads 2 --nuclei sample --nuclei-flips 2 --nuclei-network accurate --resume";
  const auto regraded = run(batch(quote((t / "m3.csv").string()) + " --out " + quote(out.string()) + accurate));
  CHECK_MESSAGE(regraded.exit_code == 0, regraded.output);
  CHECK(regraded.output.find("other settings") != std::string::npos);
  CHECK(read_json(out / "s0" / grade::report_json_name)["parameters"]["nuclei_network"] == "accurate");
  const auto kept = run(batch(quote((t / "m3.csv").string()) + " --out " + quote(out.string()) + accurate));
  CHECK(kept.exit_code == 0);
  CHECK(kept.output.find("grading ") == std::string::npos);
}
