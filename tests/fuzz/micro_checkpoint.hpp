// tests/fuzz/micro_checkpoint.hpp — what the checkpoint fuzz targets share: a micro Hawk model
// whose checkpoint is a few KB (small enough for a seed corpus and a fast copy per input), and
// buffers for all of its tensors read or written whole (one process, no sharding).
#pragma once
#include <vector>

#include "program/param_layout.hpp"
#include "program/yaml_reader.hpp"
#include "train/checkpoint.hpp"

namespace scanshard::fuzz {

inline constexpr const char* kMicroModel =
    "name: micro\nfamily: hawk\nwidth: 8\ndepth: 1\nvocab: 16\nrecurrent_width: 8\ngate_blocks: 2\n"
    "conv_width: 2\nmlp_width: 16\n";

inline ModelSpec micro_model(const char* yaml = kMicroModel) { return parse_model(parse_yaml(yaml, "micro.yaml"), "micro.yaml"); }

// Zero-filled parameters and both AdamW moments of every tensor of `lay`, whole-tensor slabs.
struct Buffers {
  std::vector<train::Slab> slabs;
  std::vector<std::vector<float>> store[3];
  std::vector<float*> ptr[3];
  explicit Buffers(const Layout& lay) {
    for (const auto& t : lay.tensors) {
      slabs.push_back(train::whole_tensor(t));
      for (int s = 0; s < 3; ++s) store[s].emplace_back(static_cast<std::size_t>(t.count()), 0.0f);
    }
    for (int s = 0; s < 3; ++s)
      for (auto& v : store[s]) ptr[s].push_back(v.data());
  }
  std::vector<const float*> cptr(int s) const { return {ptr[s].begin(), ptr[s].end()}; }
};

}  // namespace scanshard::fuzz
