// grade-slide SLIDE [--differentiation 1|2|3 | --subtype NAME] [--mpp X] [--hpf-area-mm2 A | --field-diameter-mm D]
//             [--roi REGION.geojson] [--threads N] [--out DIR] [--quiet]
// Grades one slide (DESIGN.md §3): writes DIR/report.json, DIR/detections.geojson, DIR/overlay.png and
// DIR/hotspot.png (report.json last, every file through a temporary name), prints a short summary.
// Exit status: 0 report written; 1 the slide could not be graded (the message names the file and the problem);
// 2 bad command line; 130 interrupted (Ctrl-C / SIGTERM: the run stops between tiles and writes nothing).
#include <unistd.h>

#include <boost/program_options.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli.hpp"
#include "grade/error.hpp"
#include "grade/fnclcc.hpp"
#include "grade/pipeline.hpp"
#include "grade/report.hpp"
#include "grade/slide.hpp"
#include "grade/version.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kTool = "grade-slide";

std::atomic<bool> g_cancel{false};

extern "C" void on_signal(int sig) {
  g_cancel.store(true);
  // A second Ctrl-C kills at once (outputs are written through temporary names, so nothing half-written remains).
  std::signal(sig, SIG_DFL);
}

using grade::cli::fixed;

// Progress on stderr: a bar redrawn in place on a terminal, otherwise a plain line every 10 %.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(bool quiet) : quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0) {}
  void operator()(const grade::Progress& p) {
    if (quiet_) return;
    const int pct = static_cast<int>(p.fraction * 100.0 + 0.5);
    if (tty_) {
      constexpr int width = 30;
      const int filled = std::clamp(static_cast<int>(p.fraction * width), 0, width);
      std::string bar(static_cast<std::size_t>(filled), '#');
      bar.append(static_cast<std::size_t>(width - filled), '.');
      std::cerr << "\r" << kTool << ": [" << bar << "] " << std::setw(3) << pct << "% " << p.phase;
      if (p.tiles_total > 0) std::cerr << " " << p.tiles_done << "/" << p.tiles_total << " tiles";
      std::cerr << "   " << std::flush;
      dirty_ = true;
    } else {
      const int step = pct / 10;
      if (p.phase != last_phase_ || step > last_step_) {
        std::cerr << kTool << ": " << pct << "% " << p.phase;
        if (p.tiles_total > 0) std::cerr << " " << p.tiles_done << "/" << p.tiles_total << " tiles";
        std::cerr << "\n";
        last_step_ = step;
        last_phase_ = p.phase;
      }
    }
  }
  void end_line() {
    if (dirty_) std::cerr << "\n";
    dirty_ = false;
  }

 private:
  bool quiet_, tty_;
  bool dirty_ = false;
  int last_step_ = -1;
  std::string last_phase_;
};

std::string grades_text(const grade::FnclccResult& f) {
  std::string s;
  for (std::size_t i = 0; i < f.possible_grades.size(); ++i) s += (i ? " or G" : "G") + std::to_string(f.possible_grades[i]);
  return s;
}

void print_summary(const grade::SlideReport& r, const fs::path& out) {
  std::ostream& o = std::cout;
  const auto& m = r.mitotic_count;
  const auto& f = r.fnclcc;
  o << r.slide_path << ": " << r.width << " x " << r.height << " px at " << fixed(r.mpp, 4) << " um/px ("
    << (r.mpp_source.empty() ? "?" : r.mpp_source) << "), tumour area " << fixed(r.tumour_area_mm2, 2) << " mm2"
    << (r.params.roi.empty() ? "" : " (inside the ROI)") << "\n";
  o << "  mitoses:    " << m.count << " per " << m.fields << " HPF (95% CI " << fixed(m.ci95_low, 1) << "-"
    << fixed(m.ci95_high, 1) << "; HPF " << m.hpf_area_mm2 << " mm2; " << fixed(m.per_mm2, 2) << "/mm2)"
    << (r.count_scaled ? " [scaled: tumour smaller than the window]" : "") << " -> score " << f.mitosis_score
    << (f.mitosis_borderline ? "  BORDERLINE" : "") << "\n";
  o << "  necrosis:   " << fixed(r.necrosis.percent, 1) << " % of tumour (" << fixed(r.necrosis.area_mm2, 2)
    << " mm2) -> score " << f.necrosis_score << (f.necrosis_borderline ? "  BORDERLINE" : "") << "\n";
  o << "  differentiation: ";
  if (f.differentiation)
    o << *f.differentiation << " (" << (f.differentiation_source.empty() ? r.differentiation_source : f.differentiation_source)
      << (r.params.subtype.empty() ? "" : ": " + r.params.subtype) << ")\n";
  else
    o << "not given\n";
  o << "  FNCLCC:     ";
  if (f.grade) {
    o << "grade " << *f.grade;
    if (f.total) o << " (total " << *f.total << ")";
  } else {
    o << "grade not determined: " << grades_text(f);
  }
  if (f.tier) o << ", " << grade::to_string(*f.tier) << " grade";
  if (!f.complete) o << "  [INCOMPLETE: differentiation missing]";
  if (f.mitosis_borderline || f.necrosis_borderline) o << "  [BORDERLINE]";
  o << "\n";
  if (r.nuclei.count > 0)
    o << "  nuclei:     " << r.nuclei.count << " analysed (" << r.nuclei.sampling << "), spindle fraction "
      << fixed(r.nuclei.spindle_fraction, 2) << "\n";
  for (const std::string& w : r.warnings) o << "  warning: " << w << "\n";
  o << "  written:    " << (out / grade::report_json_name).string() << " (+ detections.geojson, overlay.png, hotspot.png)"
    << " in " << fixed(r.timings.total_s, 1) << " s\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string slide_path, subtype, roi_path, out_dir, nuclei_mode = "sample", nuclei_network = "fast";
  int differentiation = 0, threads = 0, fields = 10, nuclei_flips = 1;
  double mpp = 0.0, hpf_area = 0.0, field_diameter = 0.0, mitosis_threshold = -1.0;
  bool quiet = false;

  std::ostringstream subtypes;
  try {
    for (const auto& [name, score] : grade::known_subtypes()) subtypes << "  " << score << "  " << name << "\n";
  } catch (const std::exception&) {
  }

  po::options_description visible(
      "Usage: grade-slide SLIDE [options]\n"
      "Grades one H&E slide of soft-tissue sarcoma with the FNCLCC system: counts mitoses in the most active 10 HPF,\n"
      "measures necrosis, and combines them with the pathologist's differentiation score.\n"
      "Writes DIR/report.json, DIR/detections.geojson (QuPath), DIR/overlay.png and DIR/hotspot.png.\n\nOptions");
  visible.add_options()("help,h", "show this help")(
      "differentiation,d", po::value<int>(&differentiation), "differentiation score 1, 2 or 3 (the pathologist's)")(
      "subtype", po::value<std::string>(&subtype),
      "histological subtype implying the differentiation score (see --list-subtypes); --differentiation wins")(
      "list-subtypes", "list the subtypes --subtype knows, with their scores")(
      "mpp", po::value<double>(&mpp), "micrometres per level-0 pixel (required when the file does not say)")(
      "hpf-area-mm2", po::value<double>(&hpf_area), "area of one high-power field (default 0.1734, FNCLCC's)")(
      "field-diameter-mm", po::value<double>(&field_diameter),
      "field diameter of your microscope at the slide (e.g. 0.55 for FN 22 with 40x); sets the HPF area")(
      "fields", po::value<int>(&fields)->default_value(10), "number of HPF in the counting window")(
      "roi", po::value<std::string>(&roi_path), "tumour region: a GeoJSON polygon in level-0 pixels (QuPath export)")(
      "threads,j", po::value<int>(&threads)->default_value(0), "worker threads (0 = all cores)")(
      "nuclei", po::value<std::string>(&nuclei_mode)->default_value("sample"),
      "nucleus analysis: all | sample (every 8th tissue tile, at least 8) | none")(
      "nuclei-flips", po::value<int>(&nuclei_flips)->default_value(1),
      "nucleus network passes per tile, averaged over mirrored copies: 1, 2, 4 or 8 (a little more accurate, up "
      "to that many times the nucleus stage's time)")(
      "nuclei-network", po::value<std::string>(&nuclei_network)->default_value("fast"),
      "nucleus segmentation network: fast | accurate (higher scores on every data set held out, about 2.7 times the "
      "nucleus stage's time)")(
      "mitosis-threshold", po::value<double>(&mitosis_threshold), "classifier probability for a mitosis (default: the model's operating point)")(
      "out,o", po::value<std::string>(&out_dir), "output folder (default: <slide name>.grade in the current folder)")(
      "quiet,q", "no progress on stderr")("version", "print the version");
  po::options_description hidden;
  hidden.add_options()("slide", po::value<std::string>(&slide_path));
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description pos;
  pos.add("slide", 1);

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    if (vm.count("help") || argc == 1) {
      std::cout << visible << "\nSubtypes known to --subtype (score, name):\n" << subtypes.str();
      return argc == 1 ? 2 : 0;
    }
    if (vm.count("version")) {
      std::cout << kTool << " (libgrade) " << grade::version_string << "\n";
      return 0;
    }
    if (vm.count("list-subtypes")) {
      std::cout << subtypes.str();
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    grade::cli::print_error(kTool, std::string(e.what()) + " (see --help)");
    return 2;
  }
  quiet = vm.count("quiet") > 0;

  auto usage = [](const std::string& msg) {
    grade::cli::print_error(kTool, msg + " (see --help)");
    return 2;
  };
  if (slide_path.empty()) return usage("no slide given");
  if (vm.count("differentiation") && (differentiation < 1 || differentiation > 3))
    return usage("--differentiation must be 1, 2 or 3, got " + std::to_string(differentiation));
  if (vm.count("mpp") && !(mpp > 0.0 && mpp < 100.0)) return usage("--mpp must be a number in (0, 100), got " + fixed(mpp, 4));
  if (threads < 0) return usage("--threads must be >= 0, got " + std::to_string(threads));
  if (vm.count("mitosis-threshold") && !(mitosis_threshold >= 0.0 && mitosis_threshold <= 1.0))
    return usage("--mitosis-threshold must be in [0, 1]");

  grade::GradeParams params;
  if (vm.count("differentiation")) params.differentiation = differentiation;
  params.subtype = subtype;
  if (!subtype.empty() && !params.differentiation) {
    try {
      if (!grade::differentiation_from_subtype(subtype))
        return usage("unknown subtype '" + subtype + "'; give --differentiation 1|2|3 or one of --list-subtypes");
    } catch (const std::exception& e) {
      return usage(std::string("--subtype: ") + e.what());
    }
  }
  if (std::string err = grade::cli::apply_nuclei_option(nuclei_mode, params.nuclei_sampling); !err.empty())
    return usage(err);
  if (std::string err = grade::cli::check_flips_option("--nuclei-flips", nuclei_flips); !err.empty()) return usage(err);
  params.nuclei.flips = nuclei_flips;
  if (std::string err = grade::cli::parse_network_option("--nuclei-network", nuclei_network, &params.nuclei.network);
      !err.empty())
    return usage(err);
  if (std::string err = grade::cli::apply_hpf_options(vm.count("hpf-area-mm2") > 0, hpf_area,
                                                      vm.count("field-diameter-mm") > 0, field_diameter, fields,
                                                      params.hpf);
      !err.empty())
    return usage(err);
  if (mitosis_threshold >= 0.0) params.mitosis.threshold = mitosis_threshold;
  params.threads = threads;
  params.mpp_override = mpp;
  grade::cli::set_up_tile_workers();

  if (out_dir.empty()) out_dir = fs::path(slide_path).filename().string() + ".grade";

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  ProgressPrinter printer(quiet);
  try {
    if (!roi_path.empty()) params.roi = grade::read_roi_geojson(roi_path);

    grade::SlideOpenParams op;
    op.mpp_override = mpp;
    const grade::Slide slide = grade::Slide::open(slide_path, op);
    const grade::SlideReport report =
        grade::grade_slide(slide, params, [&](const grade::Progress& p) { printer(p); }, &g_cancel);
    printer.end_line();
    if (g_cancel.load()) throw grade::Error(grade::ErrorCode::cancelled, slide_path + ": grading cancelled");
    grade::write_slide_outputs(slide, report, out_dir);
    print_summary(report, out_dir);
    return 0;
  } catch (const grade::Error& e) {
    printer.end_line();
    if (e.code() == grade::ErrorCode::cancelled) {
      std::cerr << kTool << ": interrupted; no report written\n";
      return 130;
    }
    std::string msg = e.what();
    if (e.code() == grade::ErrorCode::missing_mpp && msg.find("--mpp") == std::string::npos)
      msg += " (give it with --mpp)";
    grade::cli::print_error(kTool, msg);
    return 1;
  } catch (const std::exception& e) {
    printer.end_line();
    grade::cli::print_error(kTool, slide_path + ": " + e.what());
    return 1;
  }
}
