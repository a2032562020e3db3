// program/yaml_reader.hpp — strict, position-aware reading of YAML mappings into typed values.
// For: turning config files into structs with errors of the form `file:line:col: key: reason`
// (ConfigError), rejecting unknown keys, wrong types and non-finite numbers. Not for: the meaning
// of any particular key (model.cpp, cluster.cpp and plan code decide that).
#pragma once
#include <cstdint>
#include <set>
#include <stdexcept>
#include <array>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "program/names.hpp"

namespace scanshard {

// An input error: bad file, bad key, bad value. The CLI maps it to exit code 2.
class ConfigError : public std::runtime_error {
 public:
  // line/column are 1-based; 0 means "unknown" and is omitted from the message.
  ConfigError(const std::string& file, int line, int column, const std::string& key,
              const std::string& reason);
  explicit ConfigError(const std::string& message) : std::runtime_error(message) {}
};

// Shortest readable form of a number for messages ("227.5", "1e-06").
std::string format_number(double v);

// Parses YAML text; syntax errors become ConfigError with the parser's position.
YAML::Node parse_yaml(const std::string& text, const std::string& file);
// Reads a file from disk and parses it; a missing, unreadable or non-regular file is a ConfigError.
YAML::Node load_yaml_file(const std::string& path);
// The whole content of a regular file. A FIFO, device or directory is refused before anything is
// read (opening does not wait for a FIFO's writer), as is a file over max_bytes; ConfigError
// "<path>: <reason>".
std::string read_regular_file(const std::string& path, std::int64_t max_bytes = std::int64_t{1} << 30);

// A view of one YAML mapping. Every key that is read is remembered; finish() rejects the rest.
class YamlMap {
 public:
  // `path` is the dotted prefix used in messages ("" at top level, "chip", "topology", ...).
  YamlMap(YAML::Node node, std::string file, std::string path);

  bool has(const std::string& key) const;
  std::string required_string(const std::string& key);
  std::string optional_string(const std::string& key, const std::string& fallback);
  std::int64_t required_int(const std::string& key);
  std::int64_t optional_int(const std::string& key, std::int64_t fallback);
  double required_double(const std::string& key);
  double optional_double(const std::string& key, double fallback);
  bool optional_bool(const std::string& key, bool fallback);
  std::vector<std::int64_t> required_int_list(const std::string& key);
  // A sub-mapping. Call finish() on it too.
  YamlMap required_map(const std::string& key);
  // The raw node of a key (marks it as known); undefined node when absent.
  YAML::Node raw(const std::string& key);
  // One of a fixed set of names (program/names.hpp), as its value; `fallback` when absent (the key
  // is known either way, so a misspelt key's error can suggest it). An unknown name is an error
  // listing the table's names.
  template <class E, std::size_t N>
  E optional_choice(const std::string& key, E fallback, const Names<E, N>& names) {
    if (!has(key)) {
      raw(key);
      return fallback;
    }
    return required_choice(key, names);
  }
  template <class E, std::size_t N>
  E required_choice(const std::string& key, const Names<E, N>& names) {
    const auto s = required_string(key);
    if (const auto v = find_name(names, s)) return *v;
    throw error(key, unknown_name(names, s));
  }
  std::vector<std::string> keys() const;

  // Throws for any key that was never asked for, naming the allowed ones.
  void finish() const;

  // An error located at `key`'s value (or at the mapping itself if the key is absent).
  [[nodiscard]] ConfigError error(const std::string& key, const std::string& reason) const;
  [[nodiscard]] std::string key_path(const std::string& key) const;
  const std::string& file() const { return file_; }

 private:
  YAML::Node value(const std::string& key) const;
  ConfigError missing(const std::string& key) const;
  std::int64_t to_int(const std::string& key, const YAML::Node& v) const;
  double to_double(const std::string& key, const YAML::Node& v) const;

  YAML::Node node_;
  std::string file_;
  std::string path_;
  std::set<std::string> asked_;
};

// A flag's value (or any text outside a YAML file) looked up in a names table; an unknown name is
// ConfigError "<where>: unknown value 'x' (one of: a, b)".
template <class E, std::size_t N>
E parse_choice(const Names<E, N>& names, const std::string& text, const std::string& where) {
  if (const auto v = find_name(names, text)) return *v;
  throw ConfigError(where + ": " + unknown_name(names, text));
}

}  // namespace scanshard
