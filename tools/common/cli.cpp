#include "cli.hpp"

#include <iomanip>
#include <iostream>
#include <sstream>
#include <vector>

#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>

#include "grade/allocator.hpp"
#include "grade/error.hpp"
#include "report_detail.hpp"

namespace grade::cli {

namespace fs = std::filesystem;

// The library's report writers already do this (report_detail.hpp); the tools share that one implementation.
void write_atomically(const fs::path& path, const std::function<void(const fs::path&)>& write) {
  detail::write_file_atomically(path, write);
}

void write_text_atomically(const fs::path& path, const std::string& text) { detail::write_text_atomically(path, text); }

void write_image_atomically(const fs::path& path, const cv::Mat& image) {
  write_atomically(path, [&](const fs::path& tmp) {
    bool ok = false;
    try {
      ok = cv::imwrite(tmp.string(), image);
    } catch (const cv::Exception& e) {
      throw Error(ErrorCode::io, path.string() + ": cannot write image (" + e.what() + ")");
    }
    if (!ok) throw Error(ErrorCode::io, path.string() + ": cannot write image");
  });
}

void ensure_directory(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) throw Error(ErrorCode::io, dir.string() + ": cannot create directory (" + ec.message() + ")");
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string apply_hpf_options(bool has_area, double area_mm2, bool has_diameter, double diameter_mm, int fields,
                              HpfParams& hpf) {
  if (has_area && has_diameter) return "give --hpf-area-mm2 or --field-diameter-mm, not both";
  if (has_area && !(area_mm2 > 0.0 && area_mm2 < 10.0)) return "--hpf-area-mm2 must be in (0, 10), got " + fixed(area_mm2, 4);
  if (has_diameter && !(diameter_mm > 0.0 && diameter_mm < 5.0))
    return "--field-diameter-mm must be in (0, 5), got " + fixed(diameter_mm, 4);
  if (fields < 1 || fields > 100) return "--fields must be in 1..100, got " + std::to_string(fields);
  try {
    if (has_diameter) {
      hpf = HpfParams::from_field_diameter_mm(diameter_mm, fields);
    } else {
      if (has_area) hpf.hpf_area_mm2 = area_mm2;
      hpf.fields = fields;
    }
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string apply_nuclei_option(const std::string& mode, NucleiSampling& sampling) {
  if (mode == "all") sampling = NucleiSampling::all_tissue;
  else if (mode == "sample") sampling = NucleiSampling::sample;
  else if (mode == "none") sampling = NucleiSampling::none;
  else return "--nuclei must be all, sample or none, got '" + mode + "'";
  return "";
}

std::string check_flips_option(const std::string& option, int flips) {
  if (!valid_flips(flips))
    return option + " must be 1, 2, 4 or 8, got " + std::to_string(flips);
  return "";
}

std::string parse_network_option(const std::string& option, const std::string& name, NucleiNetwork* network) {
  if (!parse_nuclei_network(name, network)) return option + " must be fast or accurate, got '" + name + "'";
  return "";
}

void print_error(const std::string& tool, const std::string& message) {
  std::cerr << tool << ": error: " << message << "\n";
}

void set_up_tile_workers() {
  cv::setNumThreads(1);
  grade::tune_allocator();
}

}  // namespace grade::cli
