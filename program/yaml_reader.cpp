// program/yaml_reader.cpp — see yaml_reader.hpp.
#include "program/yaml_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace scanshard {
namespace {

std::string located(const std::string& file, int line, int column, const std::string& key,
                    const std::string& reason) {
  std::string s = file;
  if (line > 0) s.append(":").append(std::to_string(line));
  if (line > 0 && column > 0) s.append(":").append(std::to_string(column));
  s.append(": ");
  if (!key.empty()) s.append(key).append(": ");
  return s.append(reason);
}

const char* kind_name(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Null: return "nothing (null)";
    case YAML::NodeType::Scalar: return "a scalar";
    default: return "an undefined value";
  }
}

// Edit distance counting a swap of two neighbours as one edit (optimal string alignment), for
// "did you mean" hints on misspelt keys.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

bool similar(const std::string& a, const std::string& b) {
  return a != b && edit_distance(a, b) <= std::max<size_t>(1, std::min(a.size(), b.size()) / 4);
}

}  // namespace

ConfigError::ConfigError(const std::string& file, int line, int column, const std::string& key,
                         const std::string& reason)
    : std::runtime_error(located(file, line, column, key, reason)) {}

std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

YAML::Node parse_yaml(const std::string& text, const std::string& file) {
  try {
    const std::vector<YAML::Node> docs = YAML::LoadAll(text);
    // `---` starts a second document, which YAML::Load would drop without a word
    for (std::size_t i = 1; i < docs.size(); ++i)
      if (docs[i].IsDefined() && !docs[i].IsNull())
        throw ConfigError(file, docs[i].Mark().line + 1, 0, "",
                          "a second YAML document (after `---`): scanshard reads one document per file; remove the `---` line");
    YAML::Node n = docs.empty() ? YAML::Node() : docs.front();
    if (!n.IsDefined() || n.IsNull())
      throw ConfigError(file, 0, 0, "", "file is empty (expected a YAML mapping)");
    return n;
  } catch (const YAML::ParserException& e) {
    throw ConfigError(file, e.mark.line + 1, e.mark.column + 1, "", "YAML syntax error: " + e.msg);
  }
}

YAML::Node load_yaml_file(const std::string& path) { return parse_yaml(read_regular_file(path), path); }

std::string read_regular_file(const std::string& path, std::int64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw ConfigError(path, 0, 0, "", std::string("cannot open file (") + std::strerror(errno) + ")");
  auto fail = [&](const std::string& why) {
    ::close(fd);
    throw ConfigError(path, 0, 0, "", why);
  };
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail("cannot read file");
  if (!S_ISREG(st.st_mode)) fail(S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file (a FIFO or a device)");
  if (st.st_size > max_bytes) fail("larger than " + std::to_string(max_bytes) + " bytes");
  std::string text;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(std::string("cannot read file (") + std::strerror(errno) + ")");
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (static_cast<std::int64_t>(text.size()) > max_bytes) fail("larger than " + std::to_string(max_bytes) + " bytes");
  }
  ::close(fd);
  return text;
}

YamlMap::YamlMap(YAML::Node node, std::string file, std::string path)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)) {
  if (!node_.IsMap()) {
    const auto m = node_.Mark();
    throw ConfigError(file_, m.is_null() ? 0 : m.line + 1, m.is_null() ? 0 : m.column + 1, path_,
                      std::string("expected a mapping of keys to values, got ") + kind_name(node_));
  }
  std::map<std::string, int> count;
  for (const auto& kv : node_) {
    if (!kv.first.IsScalar())
      throw ConfigError(file_, kv.first.Mark().line + 1, kv.first.Mark().column + 1, path_,
                        "keys must be plain names");
    const auto k = kv.first.as<std::string>();
    if (++count[k] > 1)
      throw ConfigError(file_, kv.first.Mark().line + 1, kv.first.Mark().column + 1, key_path(k),
                        "duplicate key");
  }
}

std::string YamlMap::key_path(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

ConfigError YamlMap::error(const std::string& key, const std::string& reason) const {
  YAML::Node v = value(key);
  const auto m = v.IsDefined() ? v.Mark() : node_.Mark();
  const bool known = !m.is_null();
  return ConfigError(file_, known ? m.line + 1 : 0, known ? m.column + 1 : 0, key_path(key), reason);
}

ConfigError YamlMap::missing(const std::string& key) const {
  for (const auto& kv : node_) {
    const auto k = kv.first.as<std::string>();
    if (similar(k, key))
      return ConfigError(file_, kv.first.Mark().line + 1, kv.first.Mark().column + 1, key_path(key),
                         "missing required key (did you mean '" + key + "' instead of '" + k + "'?)");
  }
  return error(key, "missing required key");
}

YAML::Node YamlMap::value(const std::string& key) const {
  for (const auto& kv : node_)
    if (kv.first.as<std::string>() == key) return kv.second;
  return YAML::Node(YAML::NodeType::Undefined);
}

bool YamlMap::has(const std::string& key) const { return value(key).IsDefined(); }

std::vector<std::string> YamlMap::keys() const {
  std::vector<std::string> out;
  for (const auto& kv : node_) out.push_back(kv.first.as<std::string>());
  return out;
}

YAML::Node YamlMap::raw(const std::string& key) {
  asked_.insert(key);
  return value(key);
}

std::string YamlMap::required_string(const std::string& key) {
  asked_.insert(key);
  YAML::Node v = value(key);
  if (!v.IsDefined()) throw missing(key);
  if (!v.IsScalar()) throw error(key, std::string("expected text, got ") + kind_name(v));
  auto s = v.as<std::string>();
  if (s.empty()) throw error(key, "must not be empty");
  return s;
}

std::string YamlMap::optional_string(const std::string& key, const std::string& fallback) {
  return has(key) ? required_string(key) : (asked_.insert(key), fallback);
}

std::int64_t YamlMap::to_int(const std::string& key, const YAML::Node& v) const {
  if (!v.IsScalar()) throw error(key, std::string("expected an integer, got ") + kind_name(v));
  const auto text = v.Scalar();
  std::int64_t i = 0;
  if (YAML::convert<std::int64_t>::decode(v, i)) return i;
  double d = 0;
  // Accept integral values written in exponent form (e.g. 2.56e5), nothing fractional.
  if (YAML::convert<double>::decode(v, d) && std::isfinite(d) && d == std::floor(d) &&
      std::fabs(d) < 9.0e18)
    return static_cast<std::int64_t>(d);
  throw error(key, "expected an integer, got '" + text + "'");
}

double YamlMap::to_double(const std::string& key, const YAML::Node& v) const {
  if (!v.IsScalar()) throw error(key, std::string("expected a number, got ") + kind_name(v));
  double d = 0;
  if (!YAML::convert<double>::decode(v, d))
    throw error(key, "expected a number, got '" + v.Scalar() + "'");
  if (!std::isfinite(d)) throw error(key, "must be a finite number, got '" + v.Scalar() + "'");
  return d;
}

std::int64_t YamlMap::required_int(const std::string& key) {
  asked_.insert(key);
  YAML::Node v = value(key);
  if (!v.IsDefined()) throw missing(key);
  return to_int(key, v);
}

std::int64_t YamlMap::optional_int(const std::string& key, std::int64_t fallback) {
  return has(key) ? required_int(key) : (asked_.insert(key), fallback);
}

double YamlMap::required_double(const std::string& key) {
  asked_.insert(key);
  YAML::Node v = value(key);
  if (!v.IsDefined()) throw missing(key);
  return to_double(key, v);
}

double YamlMap::optional_double(const std::string& key, double fallback) {
  return has(key) ? required_double(key) : (asked_.insert(key), fallback);
}

bool YamlMap::optional_bool(const std::string& key, bool fallback) {
  asked_.insert(key);
  YAML::Node v = value(key);
  if (!v.IsDefined()) return fallback;
  bool b = false;
  if (!v.IsScalar() || !YAML::convert<bool>::decode(v, b))
    throw error(key, "expected true or false, got '" + (v.IsScalar() ? v.Scalar() : kind_name(v)) + "'");
  return b;
}

std::vector<std::int64_t> YamlMap::required_int_list(const std::string& key) {
  asked_.insert(key);
  YAML::Node v = value(key);
  if (!v.IsDefined()) throw missing(key);
  if (!v.IsSequence()) throw error(key, std::string("expected a list of integers, got ") + kind_name(v));
  std::vector<std::int64_t> out;
  for (const auto& e : v) out.push_back(to_int(key, e));
  return out;
}

YamlMap YamlMap::required_map(const std::string& key) {
  asked_.insert(key);
  YAML::Node v = value(key);
  if (!v.IsDefined()) throw missing(key);
  if (!v.IsMap()) throw error(key, std::string("expected a mapping, got ") + kind_name(v));
  return YamlMap(v, file_, key_path(key));
}

void YamlMap::finish() const {
  for (const auto& kv : node_) {
    const auto k = kv.first.as<std::string>();
    if (asked_.count(k)) continue;
    std::string allowed, hint;
    for (const auto& a : asked_) {
      allowed += (allowed.empty() ? "" : ", ") + a;
      if (hint.empty() && similar(k, a)) hint = "did you mean '" + a + "'? ";
    }
    throw ConfigError(file_, kv.first.Mark().line + 1, kv.first.Mark().column + 1, key_path(k),
                      "unknown key (" + hint + "allowed here: " + allowed + ")");
  }
}

}  // namespace scanshard
