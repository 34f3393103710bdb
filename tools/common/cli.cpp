#include "cli.hpp"

#include <iostream>
#include <vector>

#include <opencv2/imgcodecs.hpp>

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

void print_error(const std::string& tool, const std::string& message) {
  std::cerr << tool << ": error: " << message << "\n";
}

}  // namespace grade::cli
