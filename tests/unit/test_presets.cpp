// tests/unit/test_presets.cpp — every preset loads, cites a source and satisfies its invariants.
#include <catch2/catch.hpp>

#include <set>

#include "program/presets.hpp"
#include "program/yaml_reader.hpp"

using namespace scanshard;

TEST_CASE("every model preset loads is named after its file and cites a source", "[presets]") {
  const auto names = preset_names(PresetKind::models);
  REQUIRE(names.size() >= 30);
  for (const auto& n : names) {
    INFO(n);
    const auto m = load_model(n);
    REQUIRE(m.name == n);
    REQUIRE(!m.source.empty());
    REQUIRE(count_parameters(m).total > 0);
  }
}

TEST_CASE("the preset set covers the sizes the issue promises", "[presets]") {
  const auto names = preset_names(PresetKind::models);
  const std::set<std::string> have(names.begin(), names.end());
  for (const char* fam : {"mqa", "hawk", "griffin"})
    for (const char* size : {"100m", "200m", "400m", "1.3b", "3b", "7b"})
      REQUIRE(have.count(std::string(fam) + "-" + size));
  for (const char* n : {"gpt3-175b", "megatron-22b", "turing-nlg-530b", "megatron-1t", "llama2-70b",
                        "griffin-14b", "recurrentgemma-2b", "rwkv4-169m", "rwkv4-14b", "rwkv6-1.6b",
                        "rwkv6-3b", "griffin-tiny", "hawk-tiny", "mqa-tiny", "rwkv4-tiny", "rwkv6-tiny"})
    REQUIRE(have.count(n));
}

TEST_CASE("tiny models stay small enough to train in tests", "[presets]") {
  for (const char* n : {"griffin-tiny", "hawk-tiny", "mqa-tiny", "rwkv4-tiny", "rwkv6-tiny", "transformer-tiny", "gpt-tiny"}) {
    INFO(n);
    REQUIRE(count_parameters(load_model(n)).total <= 2'100'000);
  }
}

TEST_CASE("every cluster preset loads with a sourced chip and a consistent topology", "[presets]") {
  const auto names = preset_names(PresetKind::clusters);
  REQUIRE(names.size() >= 8);
  for (const auto& n : names) {
    INFO(n);
    const auto c = load_cluster(n);
    REQUIRE(c.name == n);
    REQUIRE(!c.source.empty());
    REQUIRE(!c.chip.source.empty());
    REQUIRE(c.devices() > 0);
    REQUIRE(c.chip.memory_bytes > 0);
    REQUIRE(c.chip.vector_flops_per_s <= c.chip.peak(c.chip.peak_flops_per_s.count("bf16") ? "bf16" : "fp32"));
    if (c.topology.kind == TopologyKind::torus) REQUIRE(c.topology.wraparound.size() == c.topology.dims.size());
  }
}

TEST_CASE("cluster device counts match their names and DESIGN §5 shapes", "[presets]") {
  REQUIRE(load_cluster("tpu-v5p-4096").devices() == 16 * 16 * 16);
  REQUIRE(load_cluster("tpu-v5p-256").devices() == 4 * 8 * 8);
  REQUIRE(load_cluster("tpu-v3-1024").devices() == 32 * 32);
  REQUIRE(load_cluster("dgx-h100-32").devices() == 32 * 8);
  // Island presets take a node count: dgx-a100-64 is 64 DGX A100 nodes of 8 GPUs.
  const auto a100 = load_cluster("dgx-a100-64");
  REQUIRE(a100.name == "dgx-a100-64");
  REQUIRE(a100.devices() == 64 * 8);
  REQUIRE(a100.chip.peak("bf16") == 312e12);                     // A100 datasheet, dense bf16
  REQUIRE(a100.chip.memory_bytes_per_s == 2.0e12);               // 80 GB HBM2e
  REQUIRE(a100.topology.island_link_bytes_per_s == 600e9 / 2);   // NVLink 3: 600 GB/s bidirectional
  REQUIRE(a100.topology.network_bytes_per_s == 8 * 200e9 / 8 / 8);  // 8 x 200 Gb/s HDR per node, per GPU
  REQUIRE(load_cluster("dgx-h100-4").devices() == 4 * 8);
  REQUIRE_THROWS_AS(load_cluster("tpu-v5p-256-2"), ConfigError);  // a torus preset takes no node count
  // TPU v3: matrix 1.23e14 vs vector 3.8e12 → elementwise ridge 3.8e12 / 9e11 ≈ 4.2 FLOP/byte.
  const auto v3 = load_cluster("tpu-v3-256").chip;
  REQUIRE(v3.vector_flops_per_s / v3.memory_bytes_per_s == Approx(4.2).epsilon(0.01));
}

TEST_CASE("unknown preset names list the available presets", "[presets]") {
  try {
    load_model("griffin-9000");
    FAIL("no error");
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    REQUIRE(msg.find("griffin-9000") != std::string::npos);
    REQUIRE(msg.find("griffin-400m") != std::string::npos);
  }
  REQUIRE_THROWS_AS(load_cluster("tpu-v99"), ConfigError);
}
