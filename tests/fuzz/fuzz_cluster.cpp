// tests/fuzz/fuzz_cluster.cpp — libFuzzer target: a cluster YAML file through load_cluster (what
// `scanshard clusters FILE` and every --cluster FILE do), then the numbers the CLI prints.
#include "fuzz_common.hpp"
#include "program/presets.hpp"

using namespace scanshard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = fuzz::write_input(data, size, ".yaml");
  fuzz::expect_input_errors_only([&] {
    const ClusterSpec c = load_cluster(path);
    if (c.devices() <= 0) std::abort();
    (void)c.topology.describe();
    (void)c.chip.peak(c.chip.peak_flops_per_s.count("bf16") ? "bf16" : "fp32");
  });
  return 0;
}
