#pragma once
// grade-inspect runs one stage on many images in one process. main.cpp parses the command line, opens each input
// (plain image or whole slide) with its mpp, and hands it to the stage's Inspector, one input at a time, in order.
// Each stage lives in its own inspect_<stage>.cpp and writes the outputs DESIGN.md §3 fixes for it.
#include <filesystem>
#include <memory>
#include <string>

#include "grade/nuclei.hpp"
#include "grade/slide.hpp"

namespace grade::inspect {

struct Options {
  std::filesystem::path out_dir;  // exists when an Inspector is made
  int threads = 1;
  int flips = 1;  // nuclei: NucleiParams::flips
  NucleiNetwork network = NucleiNetwork::fast;  // nuclei: NucleiParams::network
  bool overlay = false;  // nuclei: also write <stem>.overlay.png (render_nuclei_overlay)
};

struct Input {
  std::filesystem::path path;
  std::string stem;            // file name without its extension: names the per-image outputs
  const grade::Slide* slide;   // opened with the image's mpp (slide->require_mpp() is valid)
};

class Inspector {
 public:
  virtual ~Inspector() = default;
  // Processes one input; may throw grade::Error (main reports it, naming the file, and goes on to the next input).
  virtual void process(const Input& input) = 0;
  // Writes the stage's CSV (through a temporary name and a rename). Called once, after every input.
  virtual void finish() = 0;
};

std::unique_ptr<Inspector> make_tissue_inspector(const Options& options);
std::unique_ptr<Inspector> make_stain_inspector(const Options& options);
std::unique_ptr<Inspector> make_nuclei_inspector(const Options& options);
std::unique_ptr<Inspector> make_mitoses_inspector(const Options& options);
std::unique_ptr<Inspector> make_necrosis_inspector(const Options& options);

}  // namespace grade::inspect
