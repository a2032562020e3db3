// tests/mpi/test_executor_model.cpp — the executor computes the model, not just the same thing on
// every mesh: the loss of the first training step (before any update) of a 1-rank run equals the
// kernel tests' plain composition of each model (tests/kernels/tiny_model.hpp, rwkv_tiny_model.hpp,
// written from DESIGN §3 independently of program/lower.cpp), evaluated in double with the
// reference kernels on the same parameters and tokens.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "../kernels/rwkv_tiny_model.hpp"
#include "../kernels/tiny_model.hpp"
#include "program/param_layout.hpp"
#include "program/presets.hpp"
#include "train/runner.hpp"

using namespace scanshard;

namespace {

struct Batch { std::vector<std::int32_t> tokens, targets; std::vector<std::uint8_t> reset; };
Batch first_batch(const std::vector<std::int32_t>& data, std::int64_t G, std::int64_t T) {
  // the runner's cursor for step 0: sequence i starts at (i·(T+1)) mod (size − T)
  const std::int64_t span = static_cast<std::int64_t>(data.size()) - T;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(G * T)), targets(tokens.size());
  std::vector<std::uint8_t> reset(tokens.size(), 0);
  for (std::int64_t i = 0; i < G; ++i) {
    const std::int64_t start = (i * (T + 1)) % span;
    reset[static_cast<std::size_t>(i * T)] = 1;
    for (std::int64_t t = 0; t < T; ++t) {
      tokens[static_cast<std::size_t>(i * T + t)] = data[static_cast<std::size_t>(start + t)];
      targets[static_cast<std::size_t>(i * T + t)] = data[static_cast<std::size_t>(start + t + 1)];
    }
  }
  return {tokens, targets, reset};
}

double reference_loss(const ModelSpec& m, const std::vector<float>& params, const std::vector<std::int32_t>& data,
                      std::int64_t G, std::int64_t T) {
  const auto [tokens, targets, reset] = first_batch(data, G, T);
  const Layout lay(m);
  const std::vector<double> p(params.begin(), params.end());
  if (m.is_rwkv()) return kt::RwkvModel<double, kt::RwkvRefOps>(m, lay, G, T).forward(p.data(), tokens, targets);
  return kt::Model<double, kt::RefOps>(m, lay, G, T).forward(p.data(), tokens, targets, reset);
}

}  // namespace

TEST_CASE("train: the executor's first loss equals the plain model composition for every family", "[train]") {
  const auto bytes = train::load_bytes(train::default_corpus_path(), 1000);
  const std::vector<std::int32_t> data(bytes.begin(), bytes.end());
  for (const char* name : {"griffin-tiny", "hawk-tiny", "mqa-tiny", "rwkv4-tiny", "rwkv6-tiny", "transformer-tiny", "gpt-tiny", "palm-tiny"}) {
    const ModelSpec m = load_model(name);
    Plan p;
    p.model = name;
    p.global_batch = 2;
    p.micro_batch = 1;
    p.seq_len = 16;
    p.param_dtype = p.act_dtype = DType::fp32;
    train::Options o;
    o.steps = 1;
    o.seed = 11;
    const auto res = train::run(m, p, data, o, nullptr);
    const double ref = reference_loss(m, init_params(Layout(m), o.seed), data, p.global_batch, p.seq_len);
    INFO(name << ": executor " << res.losses[0] << " vs plain composition " << ref);
    CHECK(std::abs(res.losses[0] - ref) <= 1e-5 * std::abs(ref));
  }
}

// The backward too: the gradient of the first step (one micro-batch of the whole batch, so the
// runner's accumulated gradient is the mean-loss gradient), before any reduction or update,
// equals the plain composition's double-precision backward for every parameter tensor — every
// backward handler of the executor (biases, positions, LayerNorm, GeLU, the RWKV time and channel
// mixes included) against an independent implementation whose own gradients are
// finite-difference checked (kernel tests).
TEST_CASE("train: the executor's first gradient equals the plain model composition's backward", "[train]") {
  const auto bytes = train::load_bytes(train::default_corpus_path(), 1000);
  const std::vector<std::int32_t> data(bytes.begin(), bytes.end());
  ModelSpec windowed = load_model("gpt-tiny");  // a local-attention transformer (window 5 of 16 tokens)
  windowed.window = 5;
  for (const ModelSpec& m : {load_model("griffin-tiny"), load_model("mqa-tiny"), load_model("transformer-tiny"), load_model("palm-tiny"),
                             load_model("gpt-tiny"), windowed, load_model("rwkv4-tiny"), load_model("rwkv6-tiny")}) {
    const std::string name = m.name + (m.window > 0 && m.family == Family::transformer ? " (window 5)" : "");
    Plan p;
    p.model = m.name;
    p.global_batch = 2;
    p.micro_batch = 2;
    p.seq_len = 16;
    p.param_dtype = p.act_dtype = DType::fp32;
    train::Options o;
    o.steps = 1;
    o.seed = 11;
    std::vector<double> got;
    o.gradient_hook = [&](std::int64_t, std::span<double> g) { got.assign(g.begin(), g.end()); };
    train::run(m, p, data, o, nullptr);
    const Layout lay(m);
    REQUIRE(got.size() == static_cast<std::size_t>(lay.total));
    const auto [tokens, targets, reset] = first_batch(data, p.global_batch, p.seq_len);
    const auto pf = init_params(lay, o.seed);
    const std::vector<double> pd(pf.begin(), pf.end());
    std::vector<double> want(pd.size(), 0.0);
    if (m.is_rwkv()) {
      kt::RwkvModel<double, kt::RwkvRefOps> ref(m, lay, p.global_batch, p.seq_len);
      ref.forward(pd.data(), tokens, targets);
      ref.backward(want.data());
    } else {
      kt::Model<double, kt::RefOps> ref(m, lay, p.global_batch, p.seq_len);
      ref.forward(pd.data(), tokens, targets, reset);
      ref.backward(pd.data(), want.data());
    }
    for (std::size_t ti = 0; ti < lay.tensors.size(); ++ti) {
      const auto off = static_cast<std::size_t>(lay.offset[ti]);
      const auto n = static_cast<std::size_t>(lay.tensors[ti].count());
      double scale = 1e-9, worst = 0, biggest = 0;
      for (std::size_t j = 0; j < n; ++j) scale = std::max(scale, std::abs(want[off + j]));
      for (std::size_t j = 0; j < n; ++j) worst = std::max(worst, std::abs(got[off + j] - want[off + j]) / scale);
      for (std::size_t j = 0; j < n; ++j) biggest = std::max(biggest, std::abs(got[off + j]));
      INFO(name << " " << lay.tensors[ti].block << "/" << lay.tensors[ti].name << ": worst difference " << worst
                << " of the tensor's largest gradient " << scale << " (executor's largest " << biggest << ")");
      // The key bias's gradient is zero in exact arithmetic: q·(k + b_k) shifts every score of a
      // query by q·b_k, and softmax ignores the shift. Both sides must be rounding-level zeros.
      if (lay.tensors[ti].name == "attn.bk") {
        CHECK(biggest < 1e-7);
        CHECK(scale < 1e-7);
        continue;
      }
      CHECK(worst < 1e-3);
      CHECK(scale > 1e-8);  // every other tensor gets a gradient
    }
  }
}
