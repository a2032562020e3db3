// tests/mpi/test_decode.cpp — decoding equals the training forward (issue 26): for every family,
// feeding a sequence to train::Decoder token by token (and as a prefill followed by single tokens)
// gives, at every position, the distribution the Executor's training forward computes over the
// whole sequence at once (its softmax probabilities, Executor::head_probs). At one rank without
// MPI communication, and under tensor = world size (2 in ctest) with the same full parameters cut
// by ShardLayout: the references are the executor's full-sequence kernels, an independent path
// (blocked attention with a causal mask vs a KV cache; chunked WKV-6 vs one token at a time).
// Pipeline stages (world size 2: layers split over two stages) against the one-rank forward.
// Local-attention caches never hold more than window + 1 rows.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "program/lower.hpp"
#include "program/param_layout.hpp"
#include "program/presets.hpp"
#include "train/decode.hpp"
#include "train/executor.hpp"
#include "train/runner.hpp"

using namespace scanshard;

namespace {

constexpr std::int64_t kBatch = 2, kLen = 20;

// Local attention with a window shorter than the test sequence, so the ring buffer wraps.
ModelSpec windowed(ModelSpec m) {
  m.window = 5;
  m.name += " (window 5)";
  return m;
}

std::vector<ModelSpec> families() {
  return {load_model("griffin-tiny"), windowed(load_model("griffin-tiny")), load_model("hawk-tiny"),
          load_model("mqa-tiny"),     load_model("rwkv4-tiny"),             load_model("rwkv6-tiny"),
          load_model("transformer-tiny"), load_model("gpt-tiny"),          windowed(load_model("gpt-tiny")),
          load_model("palm-tiny")};
}

bool divides(const ModelSpec& m, std::int64_t t) {
  for (std::int64_t n : {m.width, m.heads, m.recurrent_width, m.mlp_width, m.gate_blocks})
    if (n % t != 0) return false;
  return !(m.family == Family::rwkv6 && (m.width / t) % m.head_size != 0);
}

struct Fixture {
  ModelSpec m;
  Layout lay;
  train::ShardLayout sl;
  std::vector<float> params;
  std::vector<std::int32_t> tokens, targets;  // [B, kLen]
  Fixture(const ModelSpec& m_, std::int64_t t, std::int64_t tc) : m(m_), lay(m), sl(m, lay, t, tc) {
    params.resize(static_cast<std::size_t>(sl.total));
    sl.extract(init_params(lay, 7).data(), params.data());
    const auto bytes = train::load_bytes(train::default_corpus_path(), 1000);
    for (std::int64_t b = 0; b < kBatch; ++b)
      for (std::int64_t i = 0; i < kLen; ++i) {
        tokens.push_back(bytes[static_cast<std::size_t>(100 * b + i)] % static_cast<int>(m.vocab));
        targets.push_back(bytes[static_cast<std::size_t>(100 * b + i + 1)] % static_cast<int>(m.vocab));
      }
  }
};

// log p of this rank's vocab columns [B·kLen, Vl] from the executor's training forward
std::vector<double> executor_logp(Fixture& f, std::int64_t t, std::int64_t tc, const mpi::Comm* comm) {
  Plan p;
  p.model = f.m.name;
  p.mesh[Axis::tensor] = t;
  p.global_batch = kBatch;
  p.micro_batch = kBatch;
  p.seq_len = kLen;
  p.param_dtype = p.act_dtype = DType::fp32;
  const StepProgram prog = lower(f.m, p, tc);
  train::MeshComms mc;
  if (t > 1) mc.axis[static_cast<int>(Axis::tensor)] = comm;
  train::Executor ex(f.m, p, prog, f.sl, mc);
  ex.forward(0, f.params.data(), f.tokens.data(), f.targets.data(), nullptr);
  const auto probs = ex.head_probs(0);
  std::vector<double> out(probs.size());
  for (std::size_t i = 0; i < probs.size(); ++i) out[i] = std::log(static_cast<double>(probs[i]));
  return out;
}

// log softmax of a row of V logits, in double
std::vector<double> log_softmax(const float* z, std::int64_t V) {
  double mx = -1e300, sum = 0;
  for (std::int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(z[v]));
  for (std::int64_t v = 0; v < V; ++v) sum += std::exp(z[v] - mx);
  std::vector<double> out(static_cast<std::size_t>(V));
  for (std::int64_t v = 0; v < V; ++v) out[static_cast<std::size_t>(v)] = z[v] - mx - std::log(sum);
  return out;
}

// Decodes the fixture's sequences (the first `prefill` tokens at once when > 1, then one at a
// time) and returns the worst |log p_decode − log p_executor| / (1 + |log p_executor|) over
// every position, batch row and this rank's vocab columns.
double decode_error(Fixture& f, const std::vector<double>& want, std::int64_t t, std::int64_t tc, const mpi::Comm* comm,
                    std::int64_t prefill, const mpi::Comm* pipeline = nullptr) {
  train::Decoder dec(f.m, f.sl, f.params.data(), t > 1 ? comm : nullptr, kBatch, kLen, pipeline);
  const Range mine = split_range(f.m.depth, pipeline ? pipeline->size() : 1, pipeline ? pipeline->rank() : 0);
  const Range vr = split_range(f.m.vocab, t, tc);
  double worst = 0;
  auto compare = [&](std::int64_t b, std::int64_t pos, const float* z) {
    const auto lp = log_softmax(z, f.m.vocab);
    for (std::int64_t v = vr.begin; v < vr.end; ++v) {
      const double e = want[static_cast<std::size_t>((b * kLen + pos) * vr.size() + v - vr.begin)];
      worst = std::max(worst, std::abs(lp[static_cast<std::size_t>(v)] - e) / (1 + std::abs(e)));
    }
  };
  std::vector<float> logits;
  std::int64_t pos = 0;
  if (prefill > 1) {
    std::vector<std::int32_t> first;
    for (std::int64_t b = 0; b < kBatch; ++b)
      first.insert(first.end(), f.tokens.begin() + b * kLen, f.tokens.begin() + b * kLen + prefill);
    dec.feed(first.data(), prefill, logits, false);
    for (std::int64_t b = 0; b < kBatch; ++b)
      for (std::int64_t i = 0; i < prefill; ++i) compare(b, i, logits.data() + (b * prefill + i) * f.m.vocab);
    // the same prefill asking for each sequence's last position only (the head on kBatch rows)
    train::Decoder last(f.m, f.sl, f.params.data(), t > 1 ? comm : nullptr, kBatch, kLen, pipeline);
    std::vector<float> tail;
    last.feed(first.data(), prefill, tail, true);
    REQUIRE(tail.size() == static_cast<std::size_t>(kBatch * f.m.vocab));
    for (std::int64_t b = 0; b < kBatch; ++b) compare(b, prefill - 1, tail.data() + b * f.m.vocab);
    pos = prefill;
  }
  for (; pos < kLen; ++pos) {
    std::int32_t tok[kBatch];
    for (std::int64_t b = 0; b < kBatch; ++b) tok[b] = f.tokens[static_cast<std::size_t>(b * kLen + pos)];
    dec.feed(tok, 1, logits, true);
    for (std::int64_t b = 0; b < kBatch; ++b) compare(b, pos, logits.data() + b * f.m.vocab);
    for (std::int64_t l = 0; l < f.m.depth; ++l)
      if (temporal_kind(f.m, l) == Temporal::local_attention) REQUIRE(dec.cache_rows(l) <= f.m.window + 1);
  }
  for (std::int64_t l = mine.begin; l < mine.end; ++l) {  // this stage's layers
    const Temporal k = temporal_kind(f.m, l);
    if (k == Temporal::local_attention) CHECK(dec.cache_rows(l) == std::min<std::int64_t>(f.m.window + 1, kLen));
    if (k == Temporal::global_attention) CHECK(dec.cache_rows(l) == kLen);
  }
  return worst;
}

void check_all(std::int64_t t, std::int64_t tc, const mpi::Comm* comm) {
  for (const ModelSpec& m : families()) {
    if (!divides(m, t)) continue;
    Fixture f(m, t, tc);
    const auto want = executor_logp(f, t, tc, comm);
    for (std::int64_t prefill : {std::int64_t(1), std::int64_t(7)}) {
      const double worst = decode_error(f, want, t, tc, comm, prefill);
      INFO(m.name << " tensor=" << t << " prefill " << prefill << ": worst |Δ log p| / (1 + |log p|) = " << worst);
      // fp32 on both sides, different summation orders (GEMMs of 1 row vs 40, chunked vs
      // per-token scans, blocked online softmax vs a two-pass one over the cache)
      CHECK(worst <= 1e-5);
    }
  }
}

}  // namespace

TEST_CASE("decode: token-by-token decoding gives the training forward's distribution, one rank", "[decode]") {
  check_all(1, 0, nullptr);
}

TEST_CASE("decode: split into pipeline stages decoding gives the training forward's distribution", "[decode]") {
  const mpi::Comm world = mpi::Comm::world();
  if (world.size() < 2) return;
  for (const ModelSpec& m : families()) {
    if (m.depth < world.size()) continue;
    Fixture f(m, 1, 0);
    const auto want = executor_logp(f, 1, 0, nullptr);  // the one-rank training forward
    for (std::int64_t prefill : {std::int64_t(1), std::int64_t(7)}) {
      const double worst = decode_error(f, want, 1, 0, nullptr, prefill, &world);
      INFO(m.name << " pipeline=" << world.size() << " prefill " << prefill << ": worst |Δ log p| / (1 + |log p|) = " << worst);
      CHECK(worst <= 1e-5);
    }
  }
}

TEST_CASE("decode: under tensor parallelism decoding gives the training forward's distribution", "[decode]") {
  const mpi::Comm world = mpi::Comm::world();
  if (world.size() < 2) return;  // the one-rank case above
  check_all(world.size(), world.rank(), &world);
}

// DESIGN §8: per sequence, a recurrent layer keeps h (R floats) and the Conv1D window ((K−1)·R);
// an attention layer K and V of kv_heads heads for min(context, W + 1) rows (local) or the whole
// context (global); RWKV-4 (a, b, p) per channel and two token-shift rows of D; RWKV-6 an N×N
// matrix per head and the two token-shift rows.
TEST_CASE("decode: cache and state bytes equal their closed forms", "[decode]") {
  const std::int64_t B = 3, len = 20;
  for (const ModelSpec& m : families()) {
    Fixture f(m, 1, 0);
    train::Decoder dec(m, f.sl, f.params.data(), nullptr, B, len);
    std::int64_t floats = 0;
    for (std::int64_t l = 0; l < m.depth; ++l) switch (temporal_kind(m, l)) {
        case Temporal::recurrent: floats += B * (m.recurrent_width + (m.conv_width - 1) * m.recurrent_width); break;
        case Temporal::local_attention: floats += 2 * B * std::min(m.window + 1, len) * m.kv_heads * m.head_dim; break;
        case Temporal::global_attention: floats += 2 * B * len * m.kv_heads * m.head_dim; break;
        case Temporal::rwkv4_time_mix: floats += B * (3 * m.width + 2 * m.width); break;
        case Temporal::rwkv6_time_mix: floats += B * ((m.width / m.head_size) * m.head_size * m.head_size + 2 * m.width); break;
      }
    INFO(m.name);
    CHECK(dec.state_bytes() == 4 * floats);
  }
}
