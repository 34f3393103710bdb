#pragma once
// The grade-batch manifest: a CSV file with a header row. Columns: `slide` (required), `id`, `differentiation`,
// `subtype`, `mpp` (optional, any order). Other columns are ignored (with a warning). Blank lines and lines starting
// with '#' are skipped. Fields may be quoted ("a, b" and "" for a quote), as spreadsheets write them.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace grade::batch {

struct ManifestEntry {
  int line = 0;                  // 1-based line of the row in the manifest (for messages)
  std::size_t index = 0;         // 0-based position among the slides (for --shard)
  std::string slide;             // as written in the manifest
  std::filesystem::path path;    // resolved: relative paths are relative to the manifest's folder
  std::string id;                // output folder name: the `id` column, else the slide's file name without extension
  std::optional<int> differentiation;
  std::string subtype;
  double mpp = 0.0;              // 0 = the file's
};

struct Manifest {
  std::vector<ManifestEntry> entries;
  std::vector<std::string> warnings;  // e.g. ignored columns
};

// Reads and validates the whole manifest. Throws grade::Error(invalid_argument) whose message is
// "<file>:<line>: column '<name>': <what is wrong>" (or "<file>:<line>: ..." for row-level problems), or
// Error(file_not_found) when the manifest cannot be read. Checks: header has `slide`, no duplicate columns, every row
// has as many fields as the header, slide not empty, id a safe folder name ([A-Za-z0-9._-], not starting with '.'),
// ids unique (case-insensitively, as on macOS/Windows file systems), differentiation 1..3, a subtype known to the FNCLCC
// table when no differentiation is given, mpp a number in (0, 100), at least one slide.
Manifest read_manifest(const std::filesystem::path& file);
Manifest parse_manifest(const std::string& text, const std::string& what, const std::filesystem::path& base_dir);

}  // namespace grade::batch
