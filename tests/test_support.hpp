#pragma once
// Shared helpers for the test programs.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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

// The whole file as bytes ("" when it cannot be read).
std::string slurp(const std::filesystem::path& path);
// A CSV file with a header row, as rows of column -> value (fields may be quoted, with "" for a quote; no line breaks
// inside fields). Empty when the file cannot be read.
std::vector<std::map<std::string, std::string>> read_csv(const std::filesystem::path& path);
// The file parsed as JSON; throws (failing the test case) when it cannot be opened or parsed.
nlohmann::json read_json(const std::filesystem::path& path);

// Writes a plain PNG test image of size x size: glass, and (when `tissue`) an elliptic piece of pink tissue full of
// purple spindle-shaped nuclei placed by `seed`, plus `dark_blobs` dark round blobs. Throws when it cannot be written.
void draw_tissue_png(const std::filesystem::path& path, int size, bool tissue, unsigned seed, int dark_blobs = 0);

// Quotes a path or argument for the shell.
std::string quote(const std::string& s);

}  // namespace grade::test
