// grade-inspect STAGE --mpp X --out DIR IMAGE...
// Runs one stage (tissue, stain, nuclei, mitoses, necrosis) on plain images or slides, many per process, and writes
// the stage's outputs (DESIGN.md §3). An input that fails is reported with its file name; the others go on, and the
// exit status is 1 when any failed.
#include <boost/program_options.hpp>

#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "cli.hpp"
#include "grade/allocator.hpp"
#include "grade/error.hpp"
#include "grade/slide.hpp"
#include "stages.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kTool = "grade-inspect";

// Reads a CSV with columns image,mpp (header required; image matched by path, file name or stem).
std::map<std::string, double> read_mpp_csv(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw grade::Error(grade::ErrorCode::file_not_found, path.string() + ": cannot open the mpp CSV");
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) header.push_back(cell);
  }
  int ci = -1, cm = -1;
  for (int i = 0; i < static_cast<int>(header.size()); ++i) {
    if (header[static_cast<size_t>(i)] == "image" || header[static_cast<size_t>(i)] == "name") ci = i;
    if (header[static_cast<size_t>(i)] == "mpp" || header[static_cast<size_t>(i)] == "mpp_approx") cm = i;
  }
  if (ci < 0 || cm < 0)
    throw grade::Error(grade::ErrorCode::invalid_argument, path.string() + ": line 1: expected columns 'image' and 'mpp'");
  std::map<std::string, double> out;
  int lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    if (static_cast<int>(cells.size()) <= std::max(ci, cm))
      throw grade::Error(grade::ErrorCode::invalid_argument, path.string() + ": line " + std::to_string(lineno) + ": too few columns");
    char* end = nullptr;
    const double v = std::strtod(cells[static_cast<size_t>(cm)].c_str(), &end);
    if (end == cells[static_cast<size_t>(cm)].c_str() || !(v > 0.0))
      throw grade::Error(grade::ErrorCode::invalid_argument, path.string() + ": line " + std::to_string(lineno) +
                                                                 ": mpp must be a number > 0, got '" +
                                                                 cells[static_cast<size_t>(cm)] + "'");
    out[cells[static_cast<size_t>(ci)]] = v;
  }
  return out;
}

double lookup_mpp(const std::map<std::string, double>& table, const fs::path& image) {
  for (const std::string& key : {image.string(), image.filename().string(), image.stem().string()}) {
    auto it = table.find(key);
    if (it != table.end()) return it->second;
  }
  return 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string stage;
  std::vector<std::string> images;
  double mpp = 0.0;
  std::string mpp_csv, out_dir, network_name = "fast";
  int threads = 1, flips = 1;
  bool overlay = false;

  po::options_description visible(
      "Usage: grade-inspect STAGE --mpp X --out DIR IMAGE...\n"
      "Runs one stage on plain images (PNG/JPEG/TIFF) or slides.\n"
      "STAGE: tissue | stain | nuclei | mitoses | necrosis\n\nOptions");
  visible.add_options()("help,h", "show this help")(
      "mpp", po::value<double>(&mpp), "micrometres per pixel of the inputs (overrides what a file says)")(
      "mpp-csv", po::value<std::string>(&mpp_csv),
      "CSV with columns image,mpp giving each input its own mpp (image = path, file name or stem)")(
      "out", po::value<std::string>(&out_dir), "output directory (created if needed)")(
      "threads", po::value<int>(&threads)->default_value(1), "worker threads for stages that tile whole slides")(
      "flips", po::value<int>(&flips)->default_value(1),
      "nuclei: network passes per tile, averaged over mirrored (2, 4) and transposed (8) copies; 4 is more accurate "
      "and takes about 3.5 times the CPU (benchmarks/README.md)")(
      "network", po::value<std::string>(&network_name)->default_value("fast"),
      "nuclei: fast | accurate; the accurate network scores higher on every data set held out and takes about 2.7 "
      "times the CPU (benchmarks/README.md)")(
      "overlay", po::bool_switch(&overlay),
      "nuclei: also write DIR/<image-stem>.overlay.png, the image with each nucleus outlined (spindle yellow, others "
      "cyan), to check the segmentation by eye");
  po::options_description hidden;
  hidden.add_options()("stage", po::value<std::string>(&stage))("images", po::value<std::vector<std::string>>(&images));
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description pos;
  pos.add("stage", 1).add("images", -1);

  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    if (vm.count("help") || argc == 1) {
      std::cout << visible << "\n";
      return argc == 1 ? 2 : 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    grade::cli::print_error(kTool, std::string(e.what()) + " (see --help)");
    return 2;
  }

  using Factory = std::unique_ptr<grade::inspect::Inspector> (*)(const grade::inspect::Options&);
  const std::map<std::string, Factory> factories = {{"tissue", &grade::inspect::make_tissue_inspector},
                                                    {"stain", &grade::inspect::make_stain_inspector},
                                                    {"nuclei", &grade::inspect::make_nuclei_inspector},
                                                    {"mitoses", &grade::inspect::make_mitoses_inspector},
                                                    {"necrosis", &grade::inspect::make_necrosis_inspector}};
  const auto factory = factories.find(stage);
  if (factory == factories.end()) {
    grade::cli::print_error(kTool, "unknown stage '" + stage + "' (expected tissue, stain, nuclei, mitoses or necrosis)");
    return 2;
  }
  if (out_dir.empty()) {
    grade::cli::print_error(kTool, "--out DIR is required");
    return 2;
  }
  if (images.empty()) {
    grade::cli::print_error(kTool, "no input images given");
    return 2;
  }
  if (threads < 1) {
    grade::cli::print_error(kTool, "--threads must be >= 1, got " + std::to_string(threads));
    return 2;
  }
  if (std::string err = grade::cli::check_flips_option("--flips", flips); !err.empty()) {
    grade::cli::print_error(kTool, err);
    return 2;
  }
  if (flips != 1 && stage != "nuclei") {
    grade::cli::print_error(kTool, "--flips applies to the nuclei stage only");
    return 2;
  }
  grade::NucleiNetwork network = grade::NucleiNetwork::fast;
  if (std::string err = grade::cli::parse_network_option("--network", network_name, &network); !err.empty()) {
    grade::cli::print_error(kTool, err);
    return 2;
  }
  if (network != grade::NucleiNetwork::fast && stage != "nuclei") {
    grade::cli::print_error(kTool, "--network applies to the nuclei stage only");
    return 2;
  }
  if (overlay && stage != "nuclei") {
    grade::cli::print_error(kTool, "--overlay applies to the nuclei stage only");
    return 2;
  }
  if (mpp < 0.0) {
    grade::cli::print_error(kTool, "--mpp must be > 0, got " + std::to_string(mpp));
    return 2;
  }

  grade::tune_allocator();  // freed tile buffers kept for the next tile (grade/allocator.hpp)
  std::unique_ptr<grade::inspect::Inspector> inspector;
  std::map<std::string, double> mpp_table;
  try {
    if (!mpp_csv.empty()) mpp_table = read_mpp_csv(mpp_csv);
    grade::cli::ensure_directory(out_dir);
    inspector = factory->second(grade::inspect::Options{out_dir, threads, flips, network, overlay});
  } catch (const std::exception& e) {
    grade::cli::print_error(kTool, e.what());
    return 2;
  }

  int failed = 0;
  for (const std::string& image : images) {
    try {
      grade::SlideOpenParams params;
      params.mpp_override = mpp_table.empty() ? mpp : lookup_mpp(mpp_table, image);
      if (params.mpp_override <= 0.0) params.mpp_override = mpp;
      const grade::Slide slide = grade::Slide::open(image, params);
      slide.require_mpp();
      inspector->process({image, fs::path(image).stem().string(), &slide});
    } catch (const grade::Error& e) {
      ++failed;
      std::string message = e.what();
      if (e.code() == grade::ErrorCode::missing_mpp)  // the library's message names --mpp only
        message += mpp_csv.empty() ? ", or give each image its own with --mpp-csv FILE (columns image,mpp)"
                                   : "; " + mpp_csv + " does not name this image (by path, file name or stem)";
      grade::cli::print_error(kTool, message);
    } catch (const std::exception& e) {
      ++failed;
      grade::cli::print_error(kTool, image + ": " + e.what());
    }
  }
  if (failed == static_cast<int>(images.size())) {
    // Nothing to report: leave DIR as it was, rather than replace an earlier run's table with an empty one.
    std::cerr << kTool << ": none of the " << images.size() << " input(s) could be processed; nothing written to "
              << out_dir << "\n";
    return 1;
  }
  try {
    inspector->finish();
  } catch (const std::exception& e) {
    grade::cli::print_error(kTool, e.what());
    return 1;
  }
  if (failed > 0) {
    std::cerr << kTool << ": " << failed << " of " << images.size() << " input(s) failed\n";
    return 1;
  }
  return 0;
}
