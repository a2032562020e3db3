// tests/unit/test_config_errors.cpp — malformed model and cluster YAML gives
// `file:line:col: key: reason` (positions are 1-based, as editors show them).
#include <catch2/catch.hpp>

#include <string>

#include "program/cluster.hpp"
#include "program/model.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"

using namespace scanshard;

namespace {

const std::string kHawk =
    "name: t\n"
    "family: hawk\n"
    "width: 64\n"
    "depth: 2\n"
    "vocab: 256\n"
    "recurrent_width: 64\n"
    "gate_blocks: 4\n";

std::string model_error(const std::string& text) {
  try {
    parse_model(parse_yaml(text, "m.yaml"), "m.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const auto pos = s.find(from);
  REQUIRE(pos != std::string::npos);
  return s.replace(pos, from.size(), to);
}

}  // namespace

TEST_CASE("the base fixture is valid", "[config]") {
  REQUIRE(model_error(kHawk) == "<no error>");
}

TEST_CASE("model errors name file line column key and reason", "[config]") {
  // Exact messages where the position is part of the contract.
  CHECK(model_error(replace(kHawk, "width: 64\n", "width: wide\n")) ==
        "m.yaml:3:8: width: expected an integer, got 'wide'");
  // A misspelt required key points at the misspelling.
  CHECK(model_error(replace(kHawk, "width: 64\n", "widht: 64\n")) ==
        "m.yaml:3:1: width: missing required key (did you mean 'width' instead of 'widht'?)");
  CHECK(model_error(kHawk + "conv_widht: 4\n").starts_with("m.yaml:8:1: conv_widht: unknown key (did you mean 'conv_width'?"));
  CHECK(model_error(replace(kHawk, "depth: 2\n", "depth: -2\n")) == "m.yaml:4:8: depth: must be positive, got -2");
  CHECK(model_error(replace(kHawk, "gate_blocks: 4\n", "gate_blocks: 5\n")) ==
        "m.yaml:7:14: gate_blocks: 5 does not divide recurrent_width 64");
  CHECK(model_error(replace(kHawk, "width: 64\n", "")) == "m.yaml:1:1: width: missing required key");
}

TEST_CASE("model errors: reasons for each kind of bad value", "[config]") {
  struct Case { std::string text; std::string fragment; };
  const Case cases[] = {
      {"name: t\nfamily: [hawk\n", "YAML syntax error"},
      {"", "file is empty"},
      {"- a\n- b\n", "expected a mapping"},
      {replace(kHawk, "family: hawk", "family: gryffin"), "family: unknown value 'gryffin' (one of: griffin, hawk, mqa, rwkv4, rwkv6, transformer)"},
      {replace(kHawk, "width: 64", "width: [1, 2]"), "width: expected an integer, got a list"},
      {replace(kHawk, "width: 64", "width: 1.5"), "width: expected an integer, got '1.5'"},
      {replace(kHawk, "width: 64", "width: 0"), "width: must be positive, got 0"},
      {replace(kHawk, "width: 64", "width: 99999999999"), "width: 99999999999 is larger than the supported maximum"},
      {replace(kHawk, "width: 64", "width: 99999999999999999999999"), "width: expected an integer"},
      {kHawk + "norm_eps: .nan\n", "norm_eps: must be a finite number"},
      {kHawk + "norm_eps: -1e-6\n", "norm_eps: must be in (0, 1]"},
      {kHawk + "mlp_expansion: 3.3\n", "mlp_expansion: expansion × width = 211.2 is not a whole number"},
      {kHawk + "mlp_width: 100\nmlp_expansion: 3\n", "give mlp_width or mlp_expansion, not both"},
      {kHawk + "heads: 4\n", "heads: unknown key"},  // hawk has no attention
      {kHawk + "width: 32\n", "width: duplicate key"},
      {kHawk + "tied_embeddings: maybe\n", "tied_embeddings: expected true or false"},
      {"name: t\nfamily: mqa\nwidth: 64\ndepth: 2\nvocab: 256\nheads: 7\n", "heads: 7 does not divide width 64"},
      {"name: t\nfamily: mqa\nwidth: 64\ndepth: 2\nvocab: 256\nheads: 4\nkv_heads: 3\n", "kv_heads: 3 does not divide heads 4"},
      {"name: t\nfamily: griffin\nwidth: 64\ndepth: 3\nvocab: 256\nrecurrent_width: 64\nheads: 4\n", "window: missing required key"},
      {"name: t\nfamily: rwkv6\nwidth: 100\ndepth: 2\nvocab: 256\n", "head_size: 64 does not divide width 100"},
      {"name: t\nfamily: mqa\nwidth: 64\ndepth: 2\nvocab: 256\nheads: 4\nrope_fraction: 0.3\n", "rope_fraction"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    const auto msg = model_error(c.text);
    CHECK(msg.find(c.fragment) != std::string::npos);
    CHECK(msg.starts_with("m.yaml"));
  }
}

namespace {

const std::string kCluster =
    "name: c\n"
    "chip: tpu-v5e\n"
    "topology:\n"
    "  kind: torus\n"
    "  dims: [4, 4]\n"
    "  wraparound: true\n"
    "  link_bytes_per_s: 4.5e10\n"
    "  hop_latency_seconds: 1.0e-6\n";

std::string cluster_error(const std::string& text) {
  try {
    parse_cluster(parse_yaml(text, "c.yaml"), "c.yaml", [](const std::string& name) {
      if (name != "tpu-v5e") throw std::invalid_argument("unknown chip preset '" + name + "'");
      return std::pair<YAML::Node, std::string>(
          parse_yaml("name: v5e\npeak_flops_per_s: {bf16: 1.97e14}\nvector_flops_per_s: 6e12\n"
                     "memory_bytes: 1.6e10\nmemory_bytes_per_s: 8.1e11\nonchip_memory_bytes: 1.3e8\n",
                     "chip.yaml"),
          "chip.yaml");
    });
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST_CASE("cluster errors name file key and reason", "[config]") {
  REQUIRE(cluster_error(kCluster) == "<no error>");
  struct Case { std::string text; std::string fragment; };
  const Case cases[] = {
      {replace(kCluster, "chip: tpu-v5e", "chip: tpu-v99"), "c.yaml:2:7: chip: unknown chip preset 'tpu-v99'"},
      {replace(kCluster, "kind: torus", "kind: hypercube"), "c.yaml:4:9: topology.kind: unknown value 'hypercube' (one of: torus, islands)"},
      {replace(kCluster, "wraparound: true", "wraparound: [true]"), "topology.wraparound: expected true/false or one true/false per dimension (2)"},
      {replace(kCluster, "dims: [4, 4]", "dims: [4, 0]"), "topology.dims: each dimension must be in 1..4096, got 0"},
      {replace(kCluster, "link_bytes_per_s: 4.5e10", "link_bytes_per_s: -1"), "topology.link_bytes_per_s: must be positive"},
      {replace(kCluster, "  hop_latency_seconds: 1.0e-6\n", ""), "topology.hop_latency_seconds: missing required key"},
      {replace(kCluster, "chip: tpu-v5e", "chip: {name: x}"), "chip.peak_flops_per_s: missing required key"},
      {kCluster + "extra: 1\n", "extra: unknown key"},
      {kCluster + "  pods: 2\n", "topology.dcn_bytes_per_s: required with pods > 1"},
      {kCluster + "  pods: 2\n  dcn_bytes_per_s: 1.6e9\n", "topology.dcn_latency_seconds: required with pods > 1"},
      {kCluster + "  pods: 0\n", "topology.pods: must be in 1..4096, got 0"},
      {kCluster + "  pods: 2\n  dcn_bytes_per_s: 0\n  dcn_latency_seconds: 1e-5\n", "topology.dcn_bytes_per_s: must be positive"},
      {replace(kCluster, "kind: torus\n  dims: [4, 4]\n  wraparound: true\n  link_bytes_per_s: 4.5e10\n  hop_latency_seconds: 1.0e-6\n",
               "kind: islands\n  islands: 2\n  devices_per_island: 8\n  island_link_bytes_per_s: 3e11\n  island_latency_seconds: 2e-6\n"
               "  network_bytes_per_s: 2.5e10\n  network_latency_seconds: 5e-6\n  network_busbw_bytes_per_s: -2.4e10\n"),
       "topology.network_busbw_bytes_per_s: must be positive"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CHECK_THAT(cluster_error(c.text), Catch::Contains(c.fragment));
  }
}

TEST_CASE("chip efficiencies must be fractions", "[config]") {
  const std::string chip =
      "name: x\npeak_flops_per_s: {fp32: 1e11}\nvector_flops_per_s: 5e10\nmemory_bytes: 1e9\n"
      "memory_bytes_per_s: 1e10\nonchip_memory_bytes: 1e6\nefficiency: {gemm: 1.5}\n";
  try {
    parse_chip(parse_yaml(chip, "x.yaml"), "x.yaml", "");
    FAIL("no error");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Catch::Contains("x.yaml:7:20: efficiency.gemm: must be a fraction in [1e-6, 1]"));
  }
}

namespace {
// A chip file up to an open `efficiency: {`, and the error message (or "no error") of that file
// completed by `rest`.
const std::string kChipToEfficiency =
      "name: x\npeak_flops_per_s: {fp32: 1e11}\nvector_flops_per_s: 5e10\nmemory_bytes: 1e9\n"
      "memory_bytes_per_s: 1e10\nonchip_memory_bytes: 1e6\nefficiency: {";
std::string chip_error(const std::string& rest) {
  try {
    parse_chip(parse_yaml(kChipToEfficiency + rest, "x.yaml"), "x.yaml", "");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("per-kernel efficiencies name a recurrence kernel and are fractions", "[config]") {
  const std::string chip = kChipToEfficiency + "scan: 0.5, ops: {";
  const ChipSpec ok = parse_chip(parse_yaml(chip + "wkv4.scan: 0.25, wkv6.chunked: 1}}\n", "x.yaml"), "x.yaml", "");
  CHECK(ok.efficiency.scan == 0.5);
  CHECK(ok.efficiency.ops.at("wkv4.scan") == 0.25);
  CHECK(ok.efficiency.ops.at("wkv6.chunked") == 1.0);
  CHECK(ok.efficiency.ops.size() == 2);
  auto error_of = [](const std::string& ops) { return chip_error("scan: 0.5, ops: {" + ops + "}}\n"); };
  CHECK_THAT(error_of("linear: 0.5"), Catch::Contains("efficiency.ops.linear: no per-kernel efficiency for 'linear' (one of: rglru.scan, wkv4.scan"));
  CHECK_THAT(error_of("wkv6.scan: 0"), Catch::Contains("efficiency.ops.wkv6.scan: must be a fraction in [1e-6, 1]"));
}

TEST_CASE("attention_kernels: measured rates of the named flash kernels, fractions", "[config]") {
  const ChipSpec ok =
      parse_chip(parse_yaml(kChipToEfficiency + "attention_kernels: {flash_v1: 0.25, flash_triton: 0.2}}\n", "x.yaml"), "x.yaml", "");
  CHECK(ok.efficiency.attention_kernels.at("flash_v1") == 0.25);
  CHECK(ok.efficiency.attention_kernels.at("flash_triton") == 0.2);
  CHECK(ok.efficiency.attention_kernels.size() == 2);
  CHECK(parse_chip(parse_yaml(kChipToEfficiency + "}\n", "x.yaml"), "x.yaml", "").efficiency.attention_kernels.empty());
  auto error_of = [](const std::string& k) { return chip_error("attention_kernels: {" + k + "}}\n"); };
  CHECK_THAT(error_of("flash: 0.5"),
             Catch::Contains("efficiency.attention_kernels.flash: no measured attention kernel 'flash' (one of: flash_v1, flash_v2, flash_triton)"));
  CHECK_THAT(error_of("flash_v2: 1.5"), Catch::Contains("efficiency.attention_kernels.flash_v2: must be a fraction in [1e-6, 1]"));
}

TEST_CASE("memory_curve: pairs of increasing bytes and fractions, not beside memory", "[config]") {
  const std::string& chip = kChipToEfficiency;
  const ChipSpec ok = parse_chip(parse_yaml(chip + "memory_curve: [[1.0e6, 1], [1.0e8, 0.25]]}\n", "x.yaml"), "x.yaml", "");
  CHECK(ok.efficiency.memory_at(1e5) == 1.0);   // held below the first point
  CHECK(ok.efficiency.memory_at(1e9) == 0.25);  // and beyond the last
  CHECK(ok.efficiency.memory_at(1e7) == Approx(0.625).epsilon(1e-12));  // halfway in log(bytes)
  CHECK(ok.efficiency.memory == 0.25);
  auto error_of = [](const std::string& e) { return chip_error(e + "}\n"); };
  CHECK_THAT(error_of("memory: 0.5, memory_curve: [[1.0e6, 1]]"), Catch::Contains("give memory or memory_curve, not both"));
  CHECK_THAT(error_of("memory_curve: [[1.0e8, 1], [1.0e6, 0.5]]"), Catch::Contains("bytes must increase from entry to entry"));
  CHECK_THAT(error_of("memory_curve: [[1.0e6, 1.5]]"), Catch::Contains("fraction must be in [1e-6, 1]"));
  CHECK_THAT(error_of("memory_curve: 3"), Catch::Contains("expected a list of [bytes, fraction] pairs"));
}

TEST_CASE("decode_attention_rows_curve: optional, pairs by rows, unset = 1 for every G", "[config]") {
  const std::string& chip = kChipToEfficiency;
  const ChipSpec ok = parse_chip(parse_yaml(chip + "decode_attention_rows_curve: [[1, 0.5], [4, 1.0]]}\n", "x.yaml"), "x.yaml", "");
  CHECK(ok.efficiency.decode_attention_rows_at(1) == 0.5);
  CHECK(ok.efficiency.decode_attention_rows_at(2) == Approx(0.75).epsilon(1e-12));  // halfway in log(G)
  CHECK(ok.efficiency.decode_attention_rows_at(16) == 1.0);                         // held beyond
  const ChipSpec unset = parse_chip(parse_yaml(chip + "memory: 0.5}\n", "x.yaml"), "x.yaml", "");
  CHECK(unset.efficiency.decode_attention_rows_curve.empty());
  CHECK(unset.efficiency.decode_attention_rows_at(2) == 1.0);
  CHECK_THAT(chip_error("decode_attention_rows_curve: [[4, 1], [2, 0.5]]}\n"), Catch::Contains("decode_attention_rows_curve"));
  CHECK_THAT(chip_error("decode_attention_rows_curve: [[2, 0]]}\n"), Catch::Contains("fraction must be in [1e-6, 1]"));
  CHECK_THAT(chip_error("decode_attention_rows_curve: [[0, 1]]}\n"), Catch::Contains("rows must be positive"));
}

TEST_CASE("decode_attention_memory_curve: optional, pairs as memory_curve, unset = memory_curve", "[config]") {
  const std::string& chip = kChipToEfficiency;
  const ChipSpec ok = parse_chip(
      parse_yaml(chip + "memory_curve: [[1.0e6, 1], [1.0e8, 0.25]], decode_attention_memory_curve: [[1.0e6, 0.8], [1.0e8, 0.1]]}\n", "x.yaml"),
      "x.yaml", "");
  CHECK(ok.efficiency.decode_attention_memory_at(1e9) == 0.1);
  CHECK(ok.efficiency.decode_attention_memory_at(1e7) == Approx(0.45).epsilon(1e-12));  // halfway in log(bytes)
  CHECK(ok.efficiency.memory_at(1e9) == 0.25);
  CHECK(ok.efficiency.gemv_memory_at(1e9) == 0.25);
  const ChipSpec unset = parse_chip(parse_yaml(chip + "memory_curve: [[1.0e6, 1], [1.0e8, 0.25]]}\n", "x.yaml"), "x.yaml", "");
  CHECK(unset.efficiency.decode_attention_memory_curve.empty());
  CHECK(unset.efficiency.decode_attention_memory_at(1e9) == 0.25);
  CHECK_THAT(chip_error("decode_attention_memory_curve: [[1.0e8, 1], [1.0e6, 0.5]]}\n"), Catch::Contains("decode_attention_memory_curve"));
  CHECK_THAT(chip_error("decode_attention_memory_curve: [[1.0e6, 0]]}\n"), Catch::Contains("fraction must be in [1e-6, 1]"));
}

TEST_CASE("gemv_memory_curve: optional, pairs as memory_curve, unset = memory_curve", "[config]") {
  const std::string& chip = kChipToEfficiency;
  const ChipSpec ok = parse_chip(parse_yaml(chip + "memory_curve: [[1.0e6, 1], [1.0e8, 0.25]], gemv_memory_curve: [[1.0e6, 0.8], [1.0e8, 0.1]]}\n",
                                            "x.yaml"), "x.yaml", "");
  CHECK(ok.efficiency.gemv_memory_at(1e9) == 0.1);
  CHECK(ok.efficiency.gemv_memory_at(1e7) == Approx(0.45).epsilon(1e-12));  // halfway in log(bytes)
  CHECK(ok.efficiency.memory_at(1e9) == 0.25);  // the other steps' curve stays
  const ChipSpec unset = parse_chip(parse_yaml(chip + "memory_curve: [[1.0e6, 1], [1.0e8, 0.25]]}\n", "x.yaml"), "x.yaml", "");
  CHECK(unset.efficiency.gemv_memory_at(1e9) == 0.25);
  CHECK_THAT(chip_error("gemv_memory_curve: [[1.0e8, 1], [1.0e6, 0.5]]}\n"), Catch::Contains("gemv_memory_curve"));
  CHECK_THAT(chip_error("gemv_memory_curve: [[1.0e6, 2]]}\n"), Catch::Contains("fraction must be in [1e-6, 1]"));
}

TEST_CASE("attention_softmax is an optional fraction, unset = the elementwise value", "[config]") {
  const ChipSpec unset = parse_chip(parse_yaml(kChipToEfficiency + "attention: 0.5}\n", "x.yaml"), "x.yaml", "");
  CHECK(unset.efficiency.attention_softmax == 0);
  const ChipSpec ok = parse_chip(parse_yaml(kChipToEfficiency + "attention_softmax: 0.02}\n", "x.yaml"), "x.yaml", "");
  CHECK(ok.efficiency.attention_softmax == 0.02);
  CHECK_THAT(chip_error("attention_softmax: 0}\n"), Catch::Contains("efficiency.attention_softmax: must be a fraction in [1e-6, 1]"));
  CHECK_THAT(chip_error("attention_softmax: 2}\n"), Catch::Contains("efficiency.attention_softmax: must be a fraction in [1e-6, 1]"));
}

TEST_CASE("compute_jitter is an optional fraction from 0 up to but not including 1", "[config]") {
  const std::string chip =
      "name: x\npeak_flops_per_s: {fp32: 1e11}\nvector_flops_per_s: 5e10\nmemory_bytes: 1e9\n"
      "memory_bytes_per_s: 1e10\nonchip_memory_bytes: 1e6\n";
  CHECK(parse_chip(parse_yaml(chip, "x.yaml"), "x.yaml", "").compute_jitter == 0);
  CHECK(parse_chip(parse_yaml(chip + "compute_jitter: 0.02\n", "x.yaml"), "x.yaml", "").compute_jitter == 0.02);
  for (const char* bad : {"compute_jitter: -0.1\n", "compute_jitter: 1\n"}) {
    try {
      parse_chip(parse_yaml(chip + bad, "x.yaml"), "x.yaml", "");
      FAIL("accepted " << bad);
    } catch (const ConfigError& e) {
      CHECK_THAT(e.what(), Catch::Contains("x.yaml:7:17: compute_jitter: must be in [0, 1)"));
    }
  }
}
