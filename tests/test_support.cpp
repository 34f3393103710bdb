#include "test_support.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <sys/wait.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace grade::test {

namespace fs = std::filesystem;

fs::path shared_data() {
  const char* env = std::getenv("GRADE_SHARED_DATA");
  fs::path p = env ? fs::path(env) : fs::path("../shared/data");
  std::error_code ec;
  return fs::is_directory(p, ec) ? p : fs::path();
}

fs::path shared_data_or_skip(const std::string& why) {
  fs::path p = shared_data();
  if (p.empty()) {
    std::cout << "SKIPPED: ../shared/data is absent (" << why << ")\n";
    std::exit(77);
  }
  return p;
}

TempDir::TempDir(const std::string& tag) {
  std::random_device rd;
  for (int i = 0; i < 100; ++i) {
    fs::path p = fs::temp_directory_path() / (tag + "-" + std::to_string(rd()));
    if (fs::create_directory(p)) {
      path_ = p;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty() && !std::getenv("GRADE_KEEP_TEMP")) fs::remove_all(path_, ec);
}

fs::path tool(const std::string& name) {
  const char* env = std::getenv("GRADE_TOOLS_DIR");
  return (env ? fs::path(env) : fs::path("tools")) / name;
}

CommandResult run(const std::string& command_line) {
  CommandResult r;
  FILE* pipe = popen((command_line + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return r;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::map<std::string, std::string>> read_csv(const fs::path& path) {
  auto split = [](const std::string& s) {
    std::vector<std::string> f;
    std::string cur;
    bool q = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
      const char c = s[i];
      if (q) {
        if (c == '"' && i + 1 < s.size() && s[i + 1] == '"') {
          cur += '"';
          ++i;
        } else if (c == '"') {
          q = false;
        } else {
          cur += c;
        }
      } else if (c == '"') {
        q = true;
      } else if (c == ',') {
        f.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    f.push_back(cur);
    return f;
  };
  std::istringstream in(slurp(path));
  std::string line;
  std::vector<std::string> header;
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    if (header.empty()) {
      header = split(line);
      continue;
    }
    const auto f = split(line);
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < header.size() && i < f.size(); ++i) row[header[i]] = f[i];
    rows.push_back(row);
  }
  return rows;
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in.good()) throw std::runtime_error(path.string() + ": cannot open");
  return nlohmann::json::parse(in);
}

void draw_tissue_png(const fs::path& path, int size, bool tissue, unsigned seed, int dark_blobs) {
  cv::Mat bgr(size, size, CV_8UC3, cv::Scalar(242, 242, 242));
  if (tissue) {
    cv::ellipse(bgr, cv::Point(size / 2, size / 2), cv::Size(size * 2 / 5, size / 3), 20, 0, 360,
                cv::Scalar(200, 150, 230), cv::FILLED);
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> pos(size / 6, size * 5 / 6);
    for (int i = 0; i < size * 2; ++i) {
      const cv::Point c(pos(rng), pos(rng));
      if (bgr.at<cv::Vec3b>(c)[0] > 230) continue;  // glass
      cv::ellipse(bgr, c, cv::Size(10, 4), (i * 37) % 180, 0, 360, cv::Scalar(150, 60, 90), cv::FILLED);
    }
    for (int i = 0; i < dark_blobs; ++i) {
      const cv::Point c(pos(rng), pos(rng));
      if (bgr.at<cv::Vec3b>(c)[0] > 230) continue;
      cv::circle(bgr, c, 6, cv::Scalar(90, 20, 40), cv::FILLED);
    }
  }
  if (!cv::imwrite(path.string(), bgr)) throw std::runtime_error(path.string() + ": cannot write the test image");
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace grade::test
