#include "test_support.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <sys/wait.h>

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

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace grade::test
