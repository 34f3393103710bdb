#pragma once
// Shared helpers for the test programs.
#include <filesystem>
#include <string>

namespace grade::test {

// ../shared/data beside the project (GRADE_SHARED_DATA), or "" when it is absent.
std::filesystem::path shared_data();
// shared_data(), or: print "SKIPPED: <why>" and exit with 77, which ctest reports as a skipped test.
std::filesystem::path shared_data_or_skip(const std::string& why);

// A fresh, empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "grade-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// The built command-line tool `name` (e.g. "grade-inspect").
std::filesystem::path tool(const std::string& name);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
// Runs a shell command line, capturing its output.
CommandResult run(const std::string& command_line);

// Quotes a path or argument for the shell.
std::string quote(const std::string& s);

}  // namespace grade::test
