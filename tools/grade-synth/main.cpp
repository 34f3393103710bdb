// grade-synth --out SLIDE.tiff --truth TRUTH.json [--seed N] [--width W --height H] [--mpp X] ...
// Writes a synthetic H&E whole-slide image (tiled, pyramidal, JPEG TIFF that OpenSlide opens, mpp recorded) and its
// ground truth (every nucleus and mitotic figure, necrosis and tissue polygons, the densest 10-HPF window, necrosis
// percentage, FNCLCC mitosis and necrosis scores). Deterministic for a seed.
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <iostream>

#include "cli.hpp"
#include "grade/error.hpp"
#include "grade/synth.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  constexpr const char* kTool = "grade-synth";
  grade::SynthParams p;
  std::string out, truth;
  bool quiet = false;
  po::options_description opts(
      "Usage: grade-synth --out SLIDE.tiff --truth TRUTH.json [options]\n"
      "Renders a synthetic H&E slide of a spindle-cell sarcoma with its ground truth.\nOptions");
  opts.add_options()
      ("help,h", "show this help")
      ("out,o", po::value(&out), "output slide (tiled pyramidal JPEG TIFF, Aperio-style description)")
      ("truth,t", po::value(&truth), "output ground-truth JSON")
      ("seed", po::value(&p.seed)->default_value(p.seed), "random seed (same seed -> identical files)")
      ("width", po::value(&p.width_px)->default_value(p.width_px), "level-0 width, px")
      ("height", po::value(&p.height_px)->default_value(p.height_px), "level-0 height, px")
      ("mpp", po::value(&p.mpp)->default_value(p.mpp), "micrometres per level-0 pixel (0.25 = 40x, 0.5 = 20x)")
      ("hotspot-mitoses-per-10hpf", po::value(&p.hotspot_mitoses_per_10hpf)->default_value(p.hotspot_mitoses_per_10hpf),
       "mean mitotic density inside the hotspot disc, per 10 HPF")
      ("background-mitoses-per-10hpf", po::value(&p.background_mitoses_per_10hpf)->default_value(p.background_mitoses_per_10hpf),
       "mean mitotic density elsewhere in viable tumour, per 10 HPF")
      ("hotspot-diameter-mm", po::value(&p.hotspot_diameter_mm)->default_value(p.hotspot_diameter_mm), "diameter of the hotspot disc")
      ("hpf-area-mm2", po::value(&p.hpf_area_mm2)->default_value(p.hpf_area_mm2), "area of one HPF for the truth's window")
      ("necrosis-percent", po::value(&p.necrosis_percent)->default_value(p.necrosis_percent), "necrotic area, % of tissue (0-80)")
      ("spindle-fraction", po::value(&p.spindle_fraction)->default_value(p.spindle_fraction), "fraction of tumour nuclei that are spindle-shaped")
      ("pleomorphic-fraction", po::value(&p.pleomorphic_fraction)->default_value(p.pleomorphic_fraction), "of the non-spindle nuclei, fraction that are pleomorphic")
      ("lymphocyte-fraction", po::value(&p.lymphocyte_fraction)->default_value(p.lymphocyte_fraction), "fraction of nuclei that are lymphocytes")
      ("nuclei-per-mm2", po::value(&p.nuclei_per_mm2)->default_value(p.nuclei_per_mm2), "mean density of nuclei in viable tumour")
      ("tissue-fraction", po::value(&p.tissue_fraction)->default_value(p.tissue_fraction), "extent of the tissue towards the slide's edges (0.3-1)")
      ("tile-px", po::value(&p.tile_px)->default_value(p.tile_px), "TIFF tile size")
      ("jpeg-quality", po::value(&p.jpeg_quality)->default_value(p.jpeg_quality), "JPEG quality 1-100")
      ("quiet,q", po::bool_switch(&quiet), "no progress on stderr");
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    if (vm.count("help")) {
      std::cout << opts << "\n";
      return 0;
    }
    po::notify(vm);
    if (out.empty()) throw grade::Error(grade::ErrorCode::invalid_argument, "--out SLIDE.tiff is required");
    if (truth.empty()) throw grade::Error(grade::ErrorCode::invalid_argument, "--truth TRUTH.json is required");
    grade::validate(p);
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    int last = -1;
    const grade::SynthSummary s = grade::synthesize_slide(p, out, truth, [&](double f) {
      const int pct = static_cast<int>(f * 100);
      if (!quiet && pct / 10 != last / 10) {
        std::fprintf(stderr, "%s: %d%%\n", kTool, pct);
        last = pct;
      }
    });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double mp = static_cast<double>(s.width_px) * static_cast<double>(s.height_px) / 1e6;
    std::printf("%s: wrote %s (%lldx%lld, %d levels, mpp %.4g) and %s\n", kTool, out.c_str(),
                static_cast<long long>(s.width_px), static_cast<long long>(s.height_px), s.levels, p.mpp, truth.c_str());
    std::printf("  nuclei %lld, mitoses %lld, hotspot %d per %d HPF (score %d), necrosis %.2f %% of %.3f mm2 tissue (score %d)\n",
                static_cast<long long>(s.nuclei), static_cast<long long>(s.mitoses), s.hotspot_count, p.hpf_fields,
                s.mitosis_score, s.necrosis_percent, s.tissue_area_mm2, s.necrosis_score);
    const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
    std::printf("  %.1f MP in %.2f s: %.1f MP/s (%.2f s of CPU: %.1f MP/s per core)\n", mp, secs, mp / secs, cpu,
                mp / std::max(cpu, 1e-9));
    return 0;
  } catch (const po::error& e) {
    grade::cli::print_error(kTool, std::string(e.what()) + " (see --help)");
    return 2;
  } catch (const std::exception& e) {
    grade::cli::print_error(kTool, e.what());
    return 1;
  }
}
