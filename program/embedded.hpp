// program/embedded.hpp — the preset YAML files compiled into the binary (see cmake/Embed.cmake).
// For: finding presets without reading the source tree at run time. Not for: parsing them
// (program/presets.hpp does that).
#pragma once
#include <string_view>
#include <vector>

namespace scanshard {

struct EmbeddedFile {
  std::string_view path;  // e.g. "configs/models/griffin-400m.yaml"
  std::string_view text;
};

// Every file listed in configs/CMakeLists.txt, in that order.
const std::vector<EmbeddedFile>& embedded_files();

}  // namespace scanshard
