// program/names.hpp — the names of a small vocabulary (an enum's YAML and flag spellings), one
// table per enum: Names<E, N> = {{"gpipe", Schedule::gpipe}, ...}. The table is the only place a
// spelling is written; to_string, the YAML reader (YamlMap::optional_choice / required_choice) and
// the CLI flags (parse_choice in yaml_reader.hpp) all read it, and an unknown value's message lists
// the table's names.
// For: enums a user types. Not for: the meaning of the values (their own headers say that).
#pragma once
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace scanshard {

template <class E, std::size_t N>
using Names = std::array<std::pair<const char*, E>, N>;

// The name of `value` ("?" if the table lacks it).
template <class E, std::size_t N>
[[nodiscard]] constexpr const char* name_of(const Names<E, N>& names, E value) {
  for (const auto& [name, v] : names)
    if (v == value) return name;
  return "?";
}

// The value named `text`, or nullopt.
template <class E, std::size_t N>
[[nodiscard]] constexpr std::optional<E> find_name(const Names<E, N>& names, std::string_view text) {
  for (const auto& [name, v] : names)
    if (text == name) return v;
  return std::nullopt;
}

// "gpipe, 1f1b": every name, in table order, for messages.
template <class E, std::size_t N>
[[nodiscard]] std::string name_list(const Names<E, N>& names) {
  std::string s;
  for (const auto& [name, v] : names) s += (s.empty() ? "" : ", ") + std::string(name);
  return s;
}

// "unknown value 'x' (one of: a, b)": the reason an unknown name is refused, the same for a YAML
// key and a flag.
template <class E, std::size_t N>
[[nodiscard]] std::string unknown_name(const Names<E, N>& names, std::string_view text) {
  return "unknown value '" + std::string(text) + "' (one of: " + name_list(names) + ")";
}

}  // namespace scanshard
