// grade-batch MANIFEST.csv --out DIR [--threads N] [--shard K/N] [--resume] [--quiet]
//             [--hpf-area-mm2 A | --field-diameter-mm D] [--fields F] [--nuclei all|sample|none] [--nuclei-flips N]
//             [--nuclei-network fast|accurate]
// Grades every slide of a manifest (DESIGN.md §3) with the same library calls as grade-slide (Slide::open,
// grade_slide, write_slide_outputs): one folder DIR/<id>/ per slide, then DIR/summary.csv with one row per slide.
// - The manifest is validated before any slide is touched; an error names the line and the column (exit 2).
// - A slide that fails (missing, unopenable, corrupt, no mpp, no tissue, ...) gets an error row; the others go on.
// - --shard K/N grades the slides whose 0-based manifest position i has i mod N == K-1 and writes the summary of that
//   shard only, to DIR/summary.K-of-N.csv (so shards can share DIR); the shards are disjoint and cover the manifest.
// - --resume skips slides whose folder already holds a complete report (grade::has_complete_report) made with the same
//   differentiation, subtype, HPF and nucleus settings, and rebuilds the summary from every report on disk.
// - Every file is written to a temporary name and renamed; report.json is written last. Summary rows of graded slides
//   are always read back from their report.json, so an interrupted run resumed later gives the same summary as an
//   uninterrupted one.
// Exit status: 0 every slide graded; 1 at least one failed; 2 bad command line or manifest; 130 interrupted.
#include <unistd.h>

#include <boost/program_options.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "grade/error.hpp"
#include "grade/fnclcc.hpp"
#include "grade/pipeline.hpp"
#include "grade/report.hpp"
#include "grade/slide.hpp"
#include "grade/version.hpp"
#include "manifest.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kTool = "grade-batch";

std::atomic<bool> g_cancel{false};

extern "C" void on_signal(int sig) {
  g_cancel.store(true);
  std::signal(sig, SIG_DFL);  // a second Ctrl-C kills at once; every output goes through a temporary name
}

const char* const kColumns[] = {"id",
                                "slide",
                                "status",
                                "grade",
                                "possible_grades",
                                "tier",
                                "complete",
                                "differentiation",
                                "mitosis_score",
                                "necrosis_score",
                                "total",
                                "mitoses_per_10hpf",
                                "mitoses_ci95_low",
                                "mitoses_ci95_high",
                                "mitoses_per_mm2",
                                "count_scaled",
                                "hpf_area_mm2",
                                "necrosis_percent",
                                "tumour_area_mm2",
                                "mitosis_borderline",
                                "necrosis_borderline",
                                "error_code",
                                "error_message"};

using Row = std::map<std::string, std::string>;

// A JSON value as CSV text: numbers as JSON prints them, booleans 1/0, null/missing empty, arrays joined with '|'.
std::string cell(const json& j) {
  if (j.is_null()) return "";
  if (j.is_boolean()) return j.get<bool>() ? "1" : "0";
  if (j.is_string()) return j.get<std::string>();
  if (j.is_array()) {
    std::string s;
    for (const auto& v : j) {
      if (!s.empty()) s += '|';
      s += cell(v);
    }
    return s;
  }
  return j.dump();
}

std::string at(const json& j, const char* pointer) {
  const json::json_pointer p(pointer);
  return j.contains(p) ? cell(j.at(p)) : std::string();
}

std::optional<json> read_report(const fs::path& dir) {
  std::ifstream in(dir / grade::report_json_name, std::ios::binary);
  if (!in) return std::nullopt;
  try {
    return json::parse(in);
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

Row row_from_report(const grade::batch::ManifestEntry& e, const json& j) {
  Row r;
  r["id"] = e.id;
  r["slide"] = e.slide;
  r["status"] = "ok";
  r["grade"] = at(j, "/fnclcc/grade");
  r["possible_grades"] = at(j, "/fnclcc/possible_grades");
  r["tier"] = at(j, "/fnclcc/tier");
  r["complete"] = at(j, "/fnclcc/complete");
  r["differentiation"] = at(j, "/fnclcc/differentiation");
  r["mitosis_score"] = at(j, "/fnclcc/mitosis_score");
  r["necrosis_score"] = at(j, "/fnclcc/necrosis_score");
  r["total"] = at(j, "/fnclcc/total");
  r["mitoses_per_10hpf"] = at(j, "/mitoses/per_10hpf");
  r["mitoses_ci95_low"] = at(j, "/mitoses/ci95/0");
  r["mitoses_ci95_high"] = at(j, "/mitoses/ci95/1");
  r["mitoses_per_mm2"] = at(j, "/mitoses/per_mm2");
  r["count_scaled"] = at(j, "/mitoses/hotspot/count_scaled");
  r["hpf_area_mm2"] = at(j, "/mitoses/hpf_area_mm2");
  r["necrosis_percent"] = at(j, "/necrosis/percent");
  r["tumour_area_mm2"] = at(j, "/tissue/tumour_area_mm2");
  r["mitosis_borderline"] = at(j, "/fnclcc/borderline/mitosis");
  r["necrosis_borderline"] = at(j, "/fnclcc/borderline/necrosis");
  return r;
}

Row error_row(const grade::batch::ManifestEntry& e, const std::string& code, std::string message) {
  for (char& c : message)
    if (c == '\n' || c == '\r') c = ' ';
  Row r;
  r["id"] = e.id;
  r["slide"] = e.slide;
  r["status"] = "error";
  r["error_code"] = code;
  r["error_message"] = message;
  return r;
}

std::string summary_csv(const std::vector<Row>& rows) {
  std::string out;
  for (const char* c : kColumns) {
    if (!out.empty()) out += ',';
    out += c;
  }
  out += "\n";
  for (const Row& r : rows) {
    std::string line;
    bool first = true;
    for (const char* c : kColumns) {
      const auto it = r.find(c);
      if (!first) line += ',';
      line += grade::cli::csv_field(it == r.end() ? std::string() : it->second);
      first = false;
    }
    out += line + "\n";
  }
  return out;
}

bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  const bool eq = fs::equivalent(a, b, ec);
  return ec ? a.lexically_normal() == b.lexically_normal() : eq;
}

// The settings a finished report must have been made with for --resume to keep it: the same slide file, the same
// differentiation, subtype, HPF settings, mpp override and nucleus settings (sampling, and the flips and network when
// nuclei are analysed: they change the report's nucleus numbers; a report from before they were recorded used one pass
// of the fast network).
bool report_matches(const json& j, const grade::GradeParams& p, const fs::path& slide) {
  try {
    if (!same_file(fs::path(j.at("/slide/path"_json_pointer).get<std::string>()), slide)) return false;
    const double mpp = j.at("/slide/mpp"_json_pointer).get<double>();
    const bool by_caller = j.at("/slide/mpp_source"_json_pointer).get<std::string>() == "caller";
    if (p.mpp_override > 0.0 ? !(by_caller && std::abs(mpp - p.mpp_override) <= 1e-9 * p.mpp_override) : by_caller)
      return false;
    const json& par = j.at("parameters");
    const json& d = par.at("differentiation");
    const std::optional<int> rd = d.is_null() ? std::nullopt : std::optional<int>(d.get<int>());
    if (rd != p.differentiation) return false;
    if (par.at("subtype").get<std::string>() != p.subtype) return false;
    if (std::abs(par.at("hpf_area_mm2").get<double>() - p.hpf.hpf_area_mm2) > 1e-9) return false;
    if (par.at("fields").get<int>() != p.hpf.fields) return false;
    if (par.at("nuclei_sampling").get<std::string>() != grade::nuclei_sampling_name(p.nuclei_sampling)) return false;
    if (p.nuclei_sampling != grade::NucleiSampling::none &&
        (par.value("nuclei_flips", 1) != p.nuclei.flips ||
         par.value("nuclei_network", std::string("fast")) != grade::nuclei_network_name(p.nuclei.network)))
      return false;
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

using grade::cli::fixed;

}  // namespace

int main(int argc, char** argv) {
  std::string manifest_path, out_dir, shard, nuclei_mode = "sample", nuclei_network = "fast";
  int threads = 0, fields = 10, nuclei_flips = 1;
  double hpf_area = 0.0, field_diameter = 0.0;

  po::options_description visible(
      "Usage: grade-batch MANIFEST.csv --out DIR [options]\n"
      "Grades every slide listed in MANIFEST.csv (columns: slide required; id, differentiation, subtype, mpp\n"
      "optional; relative paths are relative to the manifest's folder) like grade-slide does, into DIR/<id>/, and\n"
      "writes DIR/summary.csv with one row per slide. Exit status: 0 all graded, 1 some failed, 2 usage or manifest\n"
      "error, 130 interrupted.\n\nOptions");
  visible.add_options()("help,h", "show this help")("out,o", po::value<std::string>(&out_dir), "output folder (required)")(
      "threads,j", po::value<int>(&threads)->default_value(0), "worker threads per slide (0 = all cores)")(
      "shard", po::value<std::string>(&shard),
      "K/N: grade only slides i (0-based manifest order) with i mod N = K-1; summary in DIR/summary.K-of-N.csv")(
      "resume", "skip slides whose folder holds a complete report made with the same settings")(
      "hpf-area-mm2", po::value<double>(&hpf_area), "area of one high-power field (default 0.1734, FNCLCC's)")(
      "field-diameter-mm", po::value<double>(&field_diameter), "field diameter at the slide; sets the HPF area")(
      "fields", po::value<int>(&fields)->default_value(10), "number of HPF in the counting window")(
      "nuclei", po::value<std::string>(&nuclei_mode)->default_value("sample"), "nucleus analysis: all | sample | none")(
      "nuclei-flips", po::value<int>(&nuclei_flips)->default_value(1),
      "nucleus network passes per tile (mirrored copies averaged): 1, 2, 4 or 8")(
      "nuclei-network", po::value<std::string>(&nuclei_network)->default_value("fast"),
      "nucleus segmentation network: fast | accurate (about 2.7 times the nucleus stage's time)")(
      "quiet,q", "no progress on stderr")("version", "print the version");
  po::options_description hidden;
  hidden.add_options()("manifest", po::value<std::string>(&manifest_path));
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description pos;
  pos.add("manifest", 1);

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    if (vm.count("help") || argc == 1) {
      std::cout << visible;
      return argc == 1 ? 2 : 0;
    }
    if (vm.count("version")) {
      std::cout << kTool << " (libgrade) " << grade::version_string << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    grade::cli::print_error(kTool, std::string(e.what()) + " (see --help)");
    return 2;
  }
  const bool quiet = vm.count("quiet") > 0, resume = vm.count("resume") > 0;
  auto usage = [](const std::string& msg) {
    grade::cli::print_error(kTool, msg + " (see --help)");
    return 2;
  };
  if (manifest_path.empty()) return usage("no manifest given");
  if (out_dir.empty()) return usage("--out DIR is required");
  if (threads < 0) return usage("--threads must be >= 0, got " + std::to_string(threads));
  std::size_t shard_k = 1, shard_n = 1;
  if (!shard.empty()) {
    const auto slash = shard.find('/');
    bool ok = slash != std::string::npos;
    if (ok) {
      try {
        std::size_t a = 0, b = 0;
        const long k = std::stol(shard.substr(0, slash), &a), n = std::stol(shard.substr(slash + 1), &b);
        ok = a == slash && b == shard.size() - slash - 1 && n >= 1 && k >= 1 && k <= n;
        shard_k = static_cast<std::size_t>(k);
        shard_n = static_cast<std::size_t>(n);
      } catch (const std::exception&) {
        ok = false;
      }
    }
    if (!ok) return usage("--shard must be K/N with 1 <= K <= N, got '" + shard + "'");
  }

  grade::GradeParams base;
  if (std::string err = grade::cli::apply_nuclei_option(nuclei_mode, base.nuclei_sampling); !err.empty())
    return usage(err);
  if (std::string err = grade::cli::check_flips_option("--nuclei-flips", nuclei_flips); !err.empty()) return usage(err);
  base.nuclei.flips = nuclei_flips;
  if (std::string err = grade::cli::parse_network_option("--nuclei-network", nuclei_network, &base.nuclei.network);
      !err.empty())
    return usage(err);
  if (std::string err = grade::cli::apply_hpf_options(vm.count("hpf-area-mm2") > 0, hpf_area,
                                                      vm.count("field-diameter-mm") > 0, field_diameter, fields,
                                                      base.hpf);
      !err.empty())
    return usage(err);
  base.threads = threads;
  grade::cli::set_up_tile_workers();

  grade::batch::Manifest manifest;
  try {
    manifest = grade::batch::read_manifest(manifest_path);
    grade::cli::ensure_directory(out_dir);
  } catch (const std::exception& e) {
    grade::cli::print_error(kTool, e.what());
    return 2;
  }
  if (!quiet)
    for (const auto& w : manifest.warnings) std::cerr << kTool << ": warning: " << w << "\n";

  std::vector<const grade::batch::ManifestEntry*> mine;
  for (const auto& e : manifest.entries)
    if (e.index % shard_n == shard_k - 1) mine.push_back(&e);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  std::vector<Row> rows;
  int n_ok = 0, n_failed = 0, n_skipped = 0;
  for (std::size_t i = 0; i < mine.size(); ++i) {
    const auto& e = *mine[i];
    const fs::path dir = fs::path(out_dir) / e.id;
    grade::GradeParams params = base;
    params.differentiation = e.differentiation;
    params.subtype = e.subtype;
    params.mpp_override = e.mpp;
    const std::string tag = "[" + std::to_string(i + 1) + "/" + std::to_string(mine.size()) + "] " + e.id;

    if (resume && grade::has_complete_report(dir)) {
      const auto j = read_report(dir);
      if (j && report_matches(*j, params, e.path)) {
        rows.push_back(row_from_report(e, *j));
        ++n_skipped;
        ++n_ok;
        if (!quiet) std::cerr << kTool << ": " << tag << ": already graded, skipped\n";
        continue;
      }
      if (!quiet) std::cerr << kTool << ": " << tag << ": report made with other settings, grading again\n";
    }

    if (!quiet) std::cerr << kTool << ": " << tag << ": grading " << e.path.string() << "\n";
    const auto t0 = std::chrono::steady_clock::now();
    const bool bar = !quiet && isatty(STDERR_FILENO) != 0;  // a percentage redrawn in place on a terminal
    int last_pct = -1;
    auto clear_bar = [&] {
      if (bar && last_pct >= 0) std::cerr << "\r" << std::string(tag.size() + 40, ' ') << "\r";
      last_pct = -1;
    };
    try {
      grade::cli::ensure_directory(dir);
      // A failed run must not leave an older report that looks like this run's result; temporary files left by a
      // killed run are removed (only this process writes this slide's folder).
      std::error_code ec;
      fs::remove(dir / grade::report_json_name, ec);
      for (const auto& f : fs::directory_iterator(dir, ec))
        if (f.path().filename().string().rfind(".tmp-", 0) == 0) fs::remove(f.path(), ec);
      grade::SlideOpenParams op;
      op.mpp_override = e.mpp;
      const grade::Slide slide = grade::Slide::open(e.path, op);
      const grade::SlideReport report = grade::grade_slide(
          slide, params,
          [&](const grade::Progress& p) {
            const int pct = static_cast<int>(p.fraction * 100.0);
            if (!bar || pct == last_pct) return;
            last_pct = pct;
            std::cerr << "\r" << kTool << ": " << tag << ": " << std::setw(3) << pct << "% " << p.phase << "   "
                      << std::flush;
          },
          &g_cancel);
      clear_bar();
      if (g_cancel.load()) throw grade::Error(grade::ErrorCode::cancelled, e.slide + ": grading cancelled");
      grade::write_slide_outputs(slide, report, dir);
      const auto j = read_report(dir);
      if (!j) throw grade::Error(grade::ErrorCode::io, (dir / grade::report_json_name).string() + ": cannot read back the report");
      rows.push_back(row_from_report(e, *j));
      ++n_ok;
      if (!quiet) {
        const auto& f = report.fnclcc;
        std::string g = f.grade ? "G" + std::to_string(*f.grade) : std::string("grade undetermined");
        std::cerr << kTool << ": " << tag << ": ok, " << g << (f.complete ? "" : " (incomplete)") << ", "
                  << report.mitotic_count.count << " mitoses/10 HPF, necrosis " << fixed(report.necrosis.percent, 1)
                  << " % (" << fixed(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1)
                  << " s)\n";
      }
    } catch (const grade::Error& err) {
      clear_bar();
      if (err.code() == grade::ErrorCode::cancelled || g_cancel.load()) {
        std::cerr << kTool << ": interrupted; finished slides are kept: rerun with --resume to go on\n";
        return 130;
      }
      std::string msg = err.what();
      if (msg.find(e.path.string()) == std::string::npos && msg.find(e.slide) == std::string::npos)
        msg = e.path.string() + ": " + msg;  // every error row names its file
      if (err.code() == grade::ErrorCode::missing_mpp && msg.find("mpp") == std::string::npos)
        msg += " (give it in the manifest's mpp column)";
      rows.push_back(error_row(e, grade::to_string(err.code()), msg));
      ++n_failed;
      if (!quiet) std::cerr << kTool << ": " << tag << ": error: " << msg << "\n";
    } catch (const std::exception& err) {
      clear_bar();
      if (g_cancel.load()) {
        std::cerr << kTool << ": interrupted; finished slides are kept: rerun with --resume to go on\n";
        return 130;
      }
      rows.push_back(error_row(e, "internal", e.slide + ": " + err.what()));
      ++n_failed;
      if (!quiet) std::cerr << kTool << ": " << tag << ": error: " << err.what() << "\n";
    }
  }

  const fs::path summary =
      fs::path(out_dir) / (shard.empty() ? std::string("summary.csv")
                                         : "summary." + std::to_string(shard_k) + "-of-" + std::to_string(shard_n) + ".csv");
  try {
    grade::cli::write_text_atomically(summary, summary_csv(rows));
  } catch (const std::exception& e) {
    grade::cli::print_error(kTool, e.what());
    return 1;
  }
  if (!quiet)
    std::cerr << kTool << ": " << mine.size() << " slide(s): " << n_ok << " ok (" << n_skipped << " from earlier runs), "
              << n_failed << " failed; summary: " << summary.string() << "\n";
  return n_failed == 0 ? 0 : 1;
}
