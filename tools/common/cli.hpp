#pragma once
// Small helpers shared by the command-line tools.
#include <filesystem>
#include <functional>
#include <string>

#include <opencv2/core.hpp>

#include "grade/count.hpp"
#include "grade/pipeline.hpp"

namespace grade::cli {

// Writes a file atomically: `write` fills a temporary file beside `path` (same directory), which is then renamed over
// `path`. A crash or kill leaves either the old file or the new one, never half of one. Throws grade::Error(io).
void write_atomically(const std::filesystem::path& path, const std::function<void(const std::filesystem::path&)>& write);
void write_text_atomically(const std::filesystem::path& path, const std::string& text);
// cv::imwrite through write_atomically; the extension of `path` chooses the format.
void write_image_atomically(const std::filesystem::path& path, const cv::Mat& image);

// Creates `dir` (and parents) or throws grade::Error(io) naming it.
void ensure_directory(const std::filesystem::path& dir);

// Quotes a CSV field when it needs it (comma, quote, newline).
std::string csv_field(const std::string& s);

// A number with `digits` decimals, for messages.
std::string fixed(double v, int digits);

// --hpf-area-mm2 A | --field-diameter-mm D, --fields N (grade-slide and grade-batch): checks the values and sets `hpf`.
// Returns "" or the message for a usage error.
std::string apply_hpf_options(bool has_area, double area_mm2, bool has_diameter, double diameter_mm, int fields,
                              HpfParams& hpf);

// --nuclei all|sample|none; "" or the message for a usage error.
std::string apply_nuclei_option(const std::string& mode, NucleiSampling& sampling);

// --flips / --nuclei-flips N (NucleiParams::flips: 1, 2, 4 or 8 network passes per tile); `option` names the option in
// the message. "" or the message for a usage error.
std::string check_flips_option(const std::string& option, int flips);

// --network / --nuclei-network fast|accurate (NucleiParams::network), parsed into `network`; "" or the message for a
// usage error.
std::string parse_network_option(const std::string& option, const std::string& name, NucleiNetwork* network);

// The tools parallelise over tiles (--threads workers), so OpenCV's own parallel loops are turned off: otherwise a
// stage's convolutions spread over every core on top of the workers, and --threads 1 used ~1.3 cores (measured:
// 36 CPU-s in 28 s wall on a 20k x 20k slide). With it, --threads N means N cores; all cores (the default) is as fast.
// Also keeps freed tile buffers in the process (grade::tune_allocator, grade/allocator.hpp).
void set_up_tile_workers();

// Prints "<tool>: error: <message>" to stderr.
void print_error(const std::string& tool, const std::string& message);

}  // namespace grade::cli
