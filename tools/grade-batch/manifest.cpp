#include "manifest.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "grade/error.hpp"
#include "grade/fnclcc.hpp"

namespace grade::batch {

namespace fs = std::filesystem;

namespace {

struct Row {
  int line = 0;
  std::vector<std::string> fields;
};

// RFC 4180 CSV: quoted fields may hold commas, quotes ("") and newlines; CRLF and LF line ends.
std::vector<Row> split_csv(const std::string& text, const std::string& what) {
  std::vector<Row> rows;
  std::size_t i = 0;
  int line = 1;
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) i = 3;  // UTF-8 byte-order mark (Excel)
  while (i < text.size()) {
    Row row;
    row.line = line;
    std::string field;
    bool quoted_field = false;
    for (;;) {
      if (i >= text.size()) {
        row.fields.push_back(field);
        break;
      }
      char c = text[i];
      if (field.empty() && !quoted_field && c == '"') {
        quoted_field = true;
        ++i;
        bool closed = false;
        while (i < text.size()) {
          c = text[i++];
          if (c == '"') {
            if (i < text.size() && text[i] == '"') {
              field += '"';
              ++i;
            } else {
              closed = true;
              break;
            }
          } else {
            if (c == '\n') ++line;
            field += c;
          }
        }
        if (!closed) throw Error(ErrorCode::invalid_argument, what + ":" + std::to_string(row.line) + ": unterminated quoted field");
        continue;
      }
      if (c == ',') {
        row.fields.push_back(field);
        field.clear();
        quoted_field = false;
        ++i;
        continue;
      }
      if (c == '\r' || c == '\n') {
        row.fields.push_back(field);
        if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
        ++i;
        ++line;
        break;
      }
      if (quoted_field)
        throw Error(ErrorCode::invalid_argument,
                    what + ":" + std::to_string(line) + ": text after a closing quote (write \"\" for a quote inside a quoted field)");
      field += c;
      ++i;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string trim(const std::string& s) {
  std::size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool blank_or_comment(const Row& r) {
  // Blank lines, and lines of empty fields only (",,,", as spreadsheets export them).
  if (std::all_of(r.fields.begin(), r.fields.end(), [](const std::string& f) { return trim(f).empty(); })) return true;
  return !r.fields.empty() && !trim(r.fields[0]).empty() && trim(r.fields[0])[0] == '#';
}

bool safe_id(const std::string& id) {
  if (id.empty() || id[0] == '.' || id.size() > 200) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// The default id: the file name without its extension, unsafe characters replaced by '_'.
std::string id_from_slide(const std::string& slide) {
  std::string stem = fs::path(slide).stem().string();
  for (char& c : stem)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) c = '_';
  while (!stem.empty() && stem[0] == '.') stem.erase(0, 1);
  return stem;
}

}  // namespace

Manifest parse_manifest(const std::string& text, const std::string& what, const fs::path& base_dir) {
  const std::vector<Row> rows = split_csv(text, what);
  auto fail_at = [&](int line, const std::string& msg) -> Error {
    return Error(ErrorCode::invalid_argument, what + ":" + std::to_string(line) + ": " + msg);
  };

  std::size_t r = 0;
  while (r < rows.size() && blank_or_comment(rows[r])) ++r;
  if (r == rows.size()) throw Error(ErrorCode::invalid_argument, what + ": the manifest is empty (it needs a header row with a 'slide' column)");
  const Row& header = rows[r++];

  Manifest m;
  std::map<std::string, std::size_t> col;
  static const char* known[] = {"slide", "id", "differentiation", "subtype", "mpp"};
  for (std::size_t c = 0; c < header.fields.size(); ++c) {
    const std::string name = lower(trim(header.fields[c]));
    if (name.empty()) continue;
    if (col.count(name)) throw fail_at(header.line, "column '" + name + "' appears twice in the header");
    col[name] = c;
    if (std::find(std::begin(known), std::end(known), name) == std::end(known))
      m.warnings.push_back(what + ":" + std::to_string(header.line) + ": column '" + name +
                           "' is not used (known columns: slide, id, differentiation, subtype, mpp)");
  }
  if (!col.count("slide"))
    throw fail_at(header.line, "the header has no 'slide' column (columns: slide required; id, differentiation, subtype, mpp optional)");

  auto get = [&](const Row& row, const char* name) -> std::string {
    const auto it = col.find(name);
    return it == col.end() ? std::string() : trim(row.fields[it->second]);
  };

  std::map<std::string, int> ids;  // lower-cased id -> line
  for (; r < rows.size(); ++r) {
    const Row& row = rows[r];
    if (blank_or_comment(row)) continue;
    if (row.fields.size() != header.fields.size())
      throw fail_at(row.line, "expected " + std::to_string(header.fields.size()) + " fields as in the header, got " +
                                  std::to_string(row.fields.size()));
    ManifestEntry e;
    e.line = row.line;
    e.index = m.entries.size();
    e.slide = get(row, "slide");
    if (e.slide.empty()) throw fail_at(row.line, "column 'slide': empty (a slide path is required)");
    e.path = fs::path(e.slide);
    if (e.path.is_relative()) e.path = base_dir / e.path;

    e.id = get(row, "id");
    if (e.id.empty()) {
      e.id = id_from_slide(e.slide);
      if (!safe_id(e.id))
        throw fail_at(row.line, "column 'slide': cannot make an output folder name from '" + e.slide + "'; give an 'id' column");
    } else if (!safe_id(e.id)) {
      throw fail_at(row.line, "column 'id': '" + e.id +
                                  "' is not a valid folder name (letters, digits, '.', '_', '-'; not starting with '.')");
    }
    if (lower(e.id) == "summary.csv") throw fail_at(row.line, "column 'id': 'summary.csv' is reserved");
    const auto [it, inserted] = ids.emplace(lower(e.id), row.line);
    if (!inserted)
      throw fail_at(row.line, "column 'id': duplicate id '" + e.id + "' (already used on line " + std::to_string(it->second) +
                                  "; ids name the output folders and must be unique)");

    const std::string d = get(row, "differentiation");
    if (!d.empty()) {
      if (d != "1" && d != "2" && d != "3")
        throw fail_at(row.line, "column 'differentiation': must be 1, 2 or 3 (or empty), got '" + d + "'");
      e.differentiation = d[0] - '0';
    }
    e.subtype = get(row, "subtype");
    if (!e.subtype.empty() && !e.differentiation && !differentiation_from_subtype(e.subtype))
      throw fail_at(row.line, "column 'subtype': unknown subtype '" + e.subtype +
                                  "' (see grade-slide --list-subtypes), and no differentiation score is given");

    const std::string mpp = get(row, "mpp");
    if (!mpp.empty()) {
      std::size_t used = 0;
      double v = 0.0;
      try {
        v = std::stod(mpp, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != mpp.size() || !(v > 0.0 && v < 100.0) || !std::isfinite(v))
        throw fail_at(row.line, "column 'mpp': must be a number of micrometres per pixel in (0, 100), got '" + mpp + "'");
      e.mpp = v;
    }
    m.entries.push_back(std::move(e));
  }
  if (m.entries.empty()) throw Error(ErrorCode::invalid_argument, what + ": the manifest lists no slides");
  return m;
}

Manifest read_manifest(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::file_not_found, file.string() + ": cannot read the manifest");
  std::ostringstream text;
  text << in.rdbuf();
  fs::path base = file.parent_path();
  if (base.empty()) base = ".";
  return parse_manifest(text.str(), file.string(), base);
}

}  // namespace grade::batch
