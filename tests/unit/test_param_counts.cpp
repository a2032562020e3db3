// tests/unit/test_param_counts.cpp — the parameter counter (program/model.cpp, which sums the
// parameter tensor list) against closed-form formulas and published totals. Expected values are
// derived here from each paper's formula, never copied from the program's output.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>

#include "program/presets.hpp"

using namespace scanshard;

namespace {

// Round to `digits` significant digits, as a paper's table prints it.
double sig(double v, int digits) {
  const double p = std::pow(10.0, digits - 1 - static_cast<int>(std::floor(std::log10(v))));
  return std::round(v * p) / p;
}

}  // namespace

TEST_CASE("RWKV-4 parameter counts follow 2VD + 13D²L + D(11L+4) and the printed Table 2", "[params]") {
  // RWKV paper (arXiv 2305.13048) Table 2, V = 50277; printed to 4 significant digits.
  struct Row { const char* preset; std::int64_t L, D; double printed; };
  const Row rows[] = {{"rwkv4-169m", 12, 768, 1.693e8}, {"rwkv4-430m", 24, 1024, 4.304e8},
                      {"rwkv4-1.5b", 24, 2048, 1.515e9}, {"rwkv4-3b", 32, 2560, 2.985e9},
                      {"rwkv4-7b", 32, 4096, 7.393e9}, {"rwkv4-14b", 40, 5120, 1.415e10}};
  const std::int64_t V = 50277;
  for (const auto& r : rows) {
    INFO(r.preset);
    const auto m = load_model(r.preset);
    REQUIRE(m.depth == r.L);
    REQUIRE(m.width == r.D);
    const std::int64_t formula = 2 * V * r.D + 13 * r.D * r.D * r.L + r.D * (11 * r.L + 4);
    const auto c = count_parameters(m);
    REQUIRE(c.total == formula);
    REQUIRE(sig(static_cast<double>(c.total), 4) == Approx(r.printed).epsilon(1e-12));
    REQUIRE(c.non_embedding == formula - 2 * V * r.D);
  }
}

TEST_CASE("RWKV-6 Finch parameter counts follow 13D²L + 464DL + 4D + 2DV", "[params]") {
  // Eagle and Finch paper (arXiv 2404.05892) App. E, V = 65536: 1.60e9 and 3.10e9 parameters.
  struct Row { const char* preset; std::int64_t L, D; double printed; };
  const Row rows[] = {{"rwkv6-1.6b", 24, 2048, 1.60e9}, {"rwkv6-3b", 32, 2560, 3.10e9}};
  const std::int64_t V = 65536;
  for (const auto& r : rows) {
    INFO(r.preset);
    const auto m = load_model(r.preset);
    const std::int64_t formula = 13 * r.D * r.D * r.L + 464 * r.D * r.L + 4 * r.D + 2 * r.D * V;
    const auto c = count_parameters(m);
    REQUIRE(c.total == formula);
    REQUIRE(sig(static_cast<double>(c.total), 3) == Approx(r.printed).epsilon(1e-12));
  }
}

TEST_CASE("RecurrentGemma-2B has exactly the published parameter count", "[params]") {
  // RecurrentGemma model card / google-deepmind/recurrentgemma: 2,682,862,080 parameters in
  // total; the embedding table is 256000 × 2560 = 655,360,000 of them.
  const auto c = count_parameters(load_model("recurrentgemma-2b"));
  REQUIRE(c.total == 2682862080LL);
  REQUIRE(c.embedding == 256000LL * 2560LL);
  REQUIRE(c.non_embedding == 2027502080LL);
}

TEST_CASE("Griffin-paper non-embedding counts (400M and 7B rows) match DESIGN §3.1", "[params]") {
  // Griffin paper Table 2 shapes with 16 gate blocks, head dim 128 and biases: the non-embedding
  // counts these imply, in millions with one decimal.
  struct Row { const char* preset; double millions; };
  const Row rows[] = {{"mqa-400m", 316.3}, {"hawk-400m", 374.8}, {"griffin-400m", 355.3},
                      {"mqa-7b", 5940.4}, {"hawk-7b", 7176.4}, {"griffin-7b", 6790.2}};
  for (const auto& r : rows) {
    INFO(r.preset);
    const auto c = count_parameters(load_model(r.preset));
    REQUIRE(std::round(static_cast<double>(c.non_embedding) / 1e5) / 10.0 == Approx(r.millions).epsilon(1e-12));
  }
}

TEST_CASE("Griffin-family counts equal the per-block closed form for every preset", "[params]") {
  // Per layer: two RMSNorm scales (2D) + gated MLP (2·(D·F + F) + F·D + D);
  // recurrent block: Wx, Wy, Wo (3·D·R) + their biases (2R + D) + Conv1D (K·R + R)
  //   + two block-diagonal gates (2·(R²/H_b + R)) + Λ (R);
  // attention block: Q and O (2·D·H·N) + K, V (2·D·Hkv·N) + output bias (D);
  // plus the final norm (D) and the tied embedding (V·D).
  for (const auto& m : all_model_presets()) {
    if (m.is_rwkv() || m.family == Family::transformer) continue;
    INFO(m.name);
    const std::int64_t D = m.width, R = m.recurrent_width, F = m.mlp_width, K = m.conv_width;
    const std::int64_t Hb = m.gate_blocks, H = m.heads, Hkv = m.kv_heads, N = m.head_dim;
    std::int64_t n_att = 0;
    for (std::int64_t i = 0; i < m.depth; ++i) {
      const bool att = m.family == Family::mqa || (m.family == Family::griffin && i % 3 == 2);
      n_att += att ? 1 : 0;
    }
    const std::int64_t n_rec = m.depth - n_att;
    const std::int64_t per_layer = 2 * D + 2 * (D * F + F) + F * D + D;
    const std::int64_t rec = n_rec ? 3 * D * R + 2 * R + D + K * R + R + 2 * (R * R / Hb + R) + R : 0;
    const std::int64_t att = n_att ? 2 * D * H * N + 2 * D * Hkv * N + D : 0;
    const std::int64_t expected = m.depth * per_layer + n_rec * rec + n_att * att + D;
    const auto c = count_parameters(m);
    REQUIRE(c.non_embedding == expected);
    REQUIRE(c.embedding == m.vocab * D * (m.tied_embeddings ? 1 : 2));
  }
}

TEST_CASE("Griffin interleaves two recurrent blocks and one local attention block", "[params]") {
  const auto m = load_model("griffin-tiny");
  REQUIRE(temporal_kind(m, 0) == Temporal::recurrent);
  REQUIRE(temporal_kind(m, 1) == Temporal::recurrent);
  REQUIRE(temporal_kind(m, 2) == Temporal::local_attention);
  REQUIRE(temporal_kind(load_model("mqa-400m"), 5) == Temporal::global_attention);
  REQUIRE(temporal_kind(load_model("hawk-400m"), 2) == Temporal::recurrent);
}

TEST_CASE("GPT-style transformer counts follow Narayanan et al. 2021's 12·l·h²(1 + 13/(12h) + (V+s)/(12·l·h))", "[params]") {
  // Narayanan et al. 2021 (arXiv 2104.04473) §5.1: a GPT layer has Q, K, V, O (4h²) and a 4h MLP
  // (8h²) = 12h² weights plus 13h biases and LayerNorm parameters (QKV 3h, O h, MLP 4h + h, two
  // LayerNorms 4h); the tied embedding V·h and the learned positions s·h complete
  //   P = 12·l·h² (1 + 13/(12h) + (V + s)/(12·l·h)).
  // The formula leaves out the final LayerNorm (2h), which the model has.
  struct Row { const char* preset; std::int64_t l, h, heads, s; };
  const Row rows[] = {{"megatron-22b", 48, 6144, 64, 2048}, {"gpt3-175b", 96, 12288, 96, 2048},
                      {"turing-nlg-530b", 105, 20480, 128, 2048}, {"megatron-1t", 128, 25600, 160, 2048}};
  for (const auto& r : rows) {
    INFO(r.preset);
    const auto m = load_model(r.preset);
    REQUIRE(m.family == Family::transformer);
    REQUIRE(m.depth == r.l);
    REQUIRE(m.width == r.h);
    REQUIRE(m.heads == r.heads);
    REQUIRE(m.max_positions == r.s);
    const double l = static_cast<double>(r.l), h = static_cast<double>(r.h), V = static_cast<double>(m.vocab),
                 s = static_cast<double>(r.s);
    const double formula = 12 * l * h * h * (1 + 13 / (12 * h) + (V + s) / (12 * l * h));
    const auto c = count_parameters(m);
    REQUIRE(static_cast<double>(c.total) == Approx(formula + 2 * h).epsilon(1e-15));
    REQUIRE(c.embedding == (m.vocab + r.s) * r.h);  // token table and position table
  }
  // Narayanan et al. 2021 Table 1 prints 1008 billion parameters for the 1T model.
  REQUIRE(std::round(static_cast<double>(count_parameters(load_model("megatron-1t")).total) / 1e9) == 1008);
}

TEST_CASE("Llama-2-70B (grouped-query attention, SwiGLU, untied head) has its published count", "[params]") {
  // Per layer: Q and O 2·h² , K and V 2·h·(kv·h/heads), SwiGLU 3·h·F, two RMSNorm scales 2h; no
  // biases. Embedding and untied head 2·V·h, final RMSNorm h. The released checkpoint
  // (meta-llama/Llama-2-70b-hf) has 68,976,648,192 parameters.
  const auto m = load_model("llama2-70b");
  const std::int64_t h = 8192, l = 80, kv_dim = 8 * 128, F = 28672, V = 32000;
  REQUIRE(m.kv_heads == 8);
  REQUIRE(m.head_dim == 128);
  const std::int64_t per_layer = 2 * h * h + 2 * h * kv_dim + 3 * h * F + 2 * h;
  const std::int64_t expected = l * per_layer + 2 * V * h + h;
  REQUIRE(count_parameters(m).total == expected);
  REQUIRE(expected == 68'976'648'192);
}

TEST_CASE("the MPT presets have the NumParams of llm-foundry's benchmark table", "[params]") {
  // mosaicml/llm-foundry scripts/train/benchmarking/README.md prints NumParams for every run; at
  // sequence 2048 the runs' MPT had biases, learned positions (2048 × d) and a tied embedding:
  // per layer 12d² (QKV, out, 4× MLP) + 9d biases + 4d LayerNorm weights and biases, then
  // (50368 + 2048)·d embeddings and the final LayerNorm's 2d.
  struct Row { const char* preset; std::int64_t d, L, printed; };
  const Row rows[] = {{"mpt-125m", 768, 12, 125311488},      {"mpt-350m", 1024, 24, 355985408},
                      {"mpt-760m", 1536, 24, 760470528},     {"mpt-1b", 2048, 24, 1315950592},
                      {"mpt-3b", 2560, 32, 2651837440},      {"mpt-7b", 4096, 32, 6658859008},
                      {"mpt-13b", 5120, 40, 12853954560},    {"mpt-30b", 7168, 48, 29975214080},
                      {"mpt-70b", 8192, 80, 64862437376}};
  for (const auto& r : rows) {
    INFO(r.preset);
    const auto m = load_model(r.preset);
    REQUIRE(m.width == r.d);
    REQUIRE(m.depth == r.L);
    const std::int64_t formula = r.L * (12 * r.d * r.d + 13 * r.d) + (50368 + 2048) * r.d + 2 * r.d;
    REQUIRE(formula == r.printed);
    REQUIRE(count_parameters(m).total == r.printed);
  }
}
