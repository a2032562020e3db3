// tests/unit/test_inference.cpp — the inference lowering (program/inference.hpp) and its pricing
// (sim/inference.hpp) against independent references: the training lowering's forward steps,
// closed forms of the weights, caches and states written here from the papers' equations, and
// the roofline's bandwidth bound, and the decode kernels' prices in closed form.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "program/inference.hpp"
#include "program/lower.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/cost.hpp"
#include "sim/inference.hpp"
#include "tests/unit/plans.hpp"

using namespace scanshard;

namespace {

Plan serving(std::int64_t tensor = 1, std::int64_t pipeline = 1, std::int64_t data = 1) {
  Plan p;
  p.mesh[Axis::tensor] = tensor;
  p.mesh[Axis::pipeline] = pipeline;
  p.mesh[Axis::data] = data;
  return p;
}

Plan training(std::int64_t batch, std::int64_t seq) { return test::single_device(batch, seq); }

double flops(const Step& s) { return s.matmul_flops + s.vector_flops; }
double bytes(const Step& s) { return s.bytes_read + s.bytes_written; }

// Σ over every stage of the pipeline of f(step) for a decode step / a prefill.
template <class F>
double decode_sum(const ModelSpec& m, const Plan& p, std::int64_t batch, std::int64_t n, F f) {
  double s = 0;
  for (std::int64_t st = 0; st < p.mesh[Axis::pipeline]; ++st) s += lower_decode(m, p, st, batch, n).sum(f);
  return s;
}

ModelSpec model_from(const std::string& yaml) { return parse_model(parse_yaml(yaml, "t.yaml"), "t.yaml"); }

const char* const kFamilies[] = {"griffin-tiny", "hawk-tiny", "mqa-tiny", "rwkv4-tiny", "rwkv6-tiny", "transformer-tiny"};

}  // namespace

TEST_CASE("prefill FLOPs equal the training forward's for the same tokens, the head runs on the last token", "[inference]") {
  const std::int64_t B = 3, P = 40;
  for (const char* name : kFamilies) {
    for (std::int64_t pp : {1, 2}) {
      INFO(name << " pipeline " << pp);
      ModelSpec m = load_model(name);
      m.dropout = 0;  // inference has none; the training forward then has the same steps
      // training forward: every layer's steps and the embedding (layer −1 steps before layer 0)
      const auto prog = lower(m, training(B, P), 0);
      double train_body = 0;
      bool before_layers = true;
      for (const auto& s : prog.forward) {
        if (s.layer >= 0) before_layers = false;
        if (s.layer >= 0 || before_layers) train_body += flops(s);
      }
      double prefill_body = 0, head_matmul = 0;
      for (std::int64_t st = 0; st < pp; ++st) {
        const auto pass = lower_prefill(m, serving(1, pp), st, B, P);
        prefill_body += pass.sum([&](const Step& s) { return s.kind == StepKind::compute ? flops(s) : 0.0; });
        for (const auto& s : pass.post) {
          prefill_body -= flops(s);
          head_matmul += s.matmul_flops;
        }
      }
      CHECK(prefill_body == Approx(train_body).epsilon(1e-12));
      // logits of one token per sequence: 2·B·D·V
      CHECK(head_matmul == Approx(2.0 * B * m.width * m.vocab).epsilon(1e-12));
    }
  }
}

TEST_CASE("state sizes equal the papers' closed forms and split over tensor", "[inference]") {
  const DType bf16 = DType::bf16, fp32 = DType::fp32;
  const auto g = load_model("griffin-1.3b");
  const double R = 2560, K = 4;
  // Griffin §2.4: h_t ∈ R^R per sequence, fp32; the Conv1D (width K) keeps its last K − 1 inputs
  CHECK(rglru_state_bytes(g, 1, fp32) == R * 4);
  CHECK(conv_state_bytes(g, 1, bf16) == (K - 1) * R * 2);
  CHECK(rglru_state_bytes(g, 2, fp32) == R * 4 / 2);
  CHECK(layer_state_bytes(g, 0, 5000, 1, bf16, fp32).recurrent == R * 4 + (K - 1) * R * 2);
  // RWKV-4 (arXiv 2305.13048, App. "numerically stable" WKV): per channel a (numerator),
  // b (denominator) and p (max exponent); plus the two token-shift vectors (time and channel mix)
  const auto r4 = load_model("rwkv4-1.5b");
  const double D4 = 2048;
  CHECK(wkv4_state_bytes(r4, 1, fp32) == 3 * D4 * 4);
  CHECK(layer_state_bytes(r4, 3, 100, 1, bf16, fp32).recurrent == 3 * D4 * 4 + 2 * D4 * 2);
  CHECK(wkv4_state_bytes(r4, 4, fp32) == 3 * D4 * 4 / 4);
  // RWKV-6 (arXiv 2404.05892 §4): S ∈ R^{N×N} per head, N = 64, H = D/64
  const auto r6 = load_model("rwkv6-1.6b");
  const double D6 = 2048, N = 64;
  CHECK(wkv6_state_bytes(r6, 1, fp32) == (D6 / N) * N * N * 4);
  CHECK(wkv6_state_bytes(r6, 2, fp32) == (D6 / N) / 2 * N * N * 4);
  // recurrent layers keep no cache, whatever the context
  CHECK(layer_state_bytes(g, 0, 1 << 20, 1, bf16, fp32).kv_cache == 0);
}

TEST_CASE("a local-attention cache never exceeds the window", "[inference]") {
  const auto m = load_model("griffin-tiny");  // (R, R, A): layer 2 is local attention, W = 32
  const std::int64_t W = m.window;
  for (std::int64_t n : {0, 1, 5, 31, 32, 33, 100, 10000}) {
    INFO("context " << n);
    CHECK(kv_cache_rows(n, W) <= W);
    CHECK(kv_cache_rows(n, W) == std::min(n, W));
    CHECK(kv_cache_rows(n, 0) == n);  // global: every row
  }
  // memory of the cache and the bytes of a decode step stop growing once n passes the window
  const double row = 2.0 * static_cast<double>(m.kv_heads) * static_cast<double>(m.head_dim) * 2;  // K and V, bf16
  CHECK(kv_cache_bytes(m, 2, 10 * W, 1, DType::bf16) == W * row);
  const auto at = [&](std::int64_t n) { return decode_sum(m, serving(), 2, n, bytes); };
  CHECK(at(W) == at(W + 1));
  CHECK(at(W) == at(50 * W));
  CHECK(at(W - 1) < at(W));
  // and the attention step reads at most the window plus the new row
  for (const auto& g : lower_decode(m, serving(), 0, 1, 50 * W).groups)
    for (const auto& s : g.steps)
      if (s.cls == OpClass::attention) CHECK(s.matmul_flops == 4.0 * m.head_dim * m.heads * (W + 1));
}

TEST_CASE("KV-cache bytes scale with kv_heads (MHA, GQA, MQA)", "[inference]") {
  const std::string base =
      "name: t\nfamily: transformer\nwidth: 128\ndepth: 2\nvocab: 256\nheads: 8\nhead_dim: 16\npositions: rotary\n"
      "mlp: swiglu\nmlp_width: 256\nnorm: rmsnorm\nbias: false\ntied_embeddings: true\n";
  const auto one = model_from(base + "kv_heads: 1\n");
  for (std::int64_t kv : {1, 2, 4, 8}) {
    INFO("kv_heads " << kv);
    const auto m = model_from(base + "kv_heads: " + std::to_string(kv) + "\n");
    // per layer per sequence: rows × 2 (K, V) × kv_heads × N × 2 bytes
    CHECK(kv_cache_bytes(m, 0, 1000, 1, DType::bf16) == 1000.0 * 2 * kv * 16 * 2);
    CHECK(kv_cache_bytes(m, 0, 1000, 1, DType::bf16) == kv * kv_cache_bytes(one, 0, 1000, 1, DType::bf16));
    // a decode step reads the cache: 100 more positions read 100 rows more in each of the 2 layers
    const double grow = decode_sum(m, serving(), 3, 600, bytes) - decode_sum(m, serving(), 3, 500, bytes);
    CHECK(grow == Approx(3.0 * 2 * 100 * 2 * kv * 16 * 2).epsilon(1e-12));
  }
}

TEST_CASE("a decode step's bytes are the weights plus the caches and states read and written", "[inference]") {
  SECTION("the part independent of the batch is every GEMM weight once (closed forms from the shapes)") {
    struct Case { const char* name; double weights; };  // bf16: 2 bytes per weight
    const auto mqa = load_model("mqa-tiny"), hawk = load_model("hawk-tiny"), r4 = load_model("rwkv4-tiny");
    auto d = [](std::int64_t x) { return static_cast<double>(x); };
    const double Dm = d(mqa.width), Fm = d(mqa.mlp_width), Hm = d(mqa.heads), Nm = d(mqa.head_dim), KVm = d(mqa.kv_heads);
    // MQA layer: Q, K, V, O and the gated MLP's W1, W2, W3; the tied head reads the V×D table
    const double w_mqa = d(mqa.depth) * (Dm * Hm * Nm + 2 * Dm * KVm * Nm + Hm * Nm * Dm + 3 * Dm * Fm) + d(mqa.vocab) * Dm;
    const double Dh = d(hawk.width), Fh = d(hawk.mlp_width), R = d(hawk.recurrent_width), Hb = d(hawk.gate_blocks);
    // recurrent block: Wy, Wx, the two block-diagonal gates (Hb blocks of (R/Hb)²), Wo; MLP
    const double w_hawk = d(hawk.depth) * (2 * Dh * R + 2 * Hb * (R / Hb) * (R / Hb) + R * Dh + 3 * Dh * Fh) + d(hawk.vocab) * Dh;
    const double D4 = d(r4.width), F4 = d(r4.mlp_width);
    // RWKV-4: time mix Wr, Wk, Wv, Wo; channel mix Wk (D×F), Wv (F×D), Wr (D×D); untied head
    const double w_r4 = d(r4.depth) * (4 * D4 * D4 + 2 * D4 * F4 + D4 * D4) + d(r4.vocab) * D4;
    for (const auto& [m, w] : {std::pair{mqa, w_mqa}, std::pair{hawk, w_hawk}, std::pair{r4, w_r4}}) {
      INFO(m.name);
      // bytes(B) = weights + B·per_sequence, so weights = 2·bytes(B) − bytes(2B)
      const double fixed = 2 * decode_sum(m, serving(), 4, 300, bytes) - decode_sum(m, serving(), 8, 300, bytes);
      CHECK(fixed == Approx(2 * w).epsilon(1e-9));
    }
  }
  SECTION("the part per sequence is one token's forward plus the cache rows and the state round trip") {
    for (const char* name : kFamilies) {
      INFO(name);
      const auto m = load_model(name);
      const std::int64_t B = 3, n = 45;
      // the training lowering's forward of one token (position 0: attention reads its own row)
      double one_token = 0;
      for (const auto& s : lower(m, training(B, 1), 0).forward)
        if (std::string(s.name) != tensors::loss) one_token += bytes(s);  // decoding computes no loss
      double extra = 0;  // per sequence, closed forms
      for (std::int64_t l = 0; l < m.depth; ++l) {
        const double N = static_cast<double>(m.head_dim), KV = static_cast<double>(m.kv_heads), D = static_cast<double>(m.width);
        switch (temporal_kind(m, l)) {
          case Temporal::global_attention: extra += n * 2 * KV * N * 2; break;                       // n cached rows read
          case Temporal::local_attention: extra += std::min<std::int64_t>(n, m.window) * 2 * KV * N * 2; break;
          case Temporal::recurrent:  // h (fp32) and the conv window (bf16), each read and written
            extra += 2 * (m.recurrent_width * 4.0 + (m.conv_width - 1) * m.recurrent_width * 2.0); break;
          case Temporal::rwkv4_time_mix:  // WKV (a, b, p) read and written; two shift vectors written
            extra += 2 * 3 * D * 4 + 2 * D * 2; break;
          case Temporal::rwkv6_time_mix:
            extra += 2 * (D / m.head_size) * m.head_size * m.head_size * 4.0 + 2 * D * 2; break;
        }
      }
      extra += static_cast<double>(m.vocab) * 4 + 4;  // sampling: the fp32 logits read, the token written
      CHECK(decode_sum(m, serving(), B, n, bytes) == Approx(one_token + B * extra).epsilon(1e-12));
    }
  }
}

TEST_CASE("tensor = 2 halves per-device weights and a split KV cache, an MQA head stays whole", "[inference]") {
  const ServingShape s{8, 512, 512};
  const auto g = load_model("griffin-1.3b");
  const auto m1 = inference_memory(g, serving(1), 0, s), m2 = inference_memory(g, serving(2), 0, s);
  // the matrices halve; norms, Λ, conv biases and the single K/V head (replicated) do not
  CHECK(m2.weights_bytes / m1.weights_bytes == Approx(0.5).margin(0.01));
  CHECK(m2.weights_bytes > m1.weights_bytes / 2);
  CHECK(m2.state_bytes == Approx(m1.state_bytes / 2).epsilon(1e-12));
  CHECK(m2.kv_cache_bytes == m1.kv_cache_bytes);  // kv_heads 1 < tensor 2: replicated
  const auto t = load_model("transformer-tiny");  // kv_heads 2: split over tensor = 2
  CHECK(inference_memory(t, serving(2), 0, s).kv_cache_bytes == inference_memory(t, serving(1), 0, s).kv_cache_bytes / 2);
  // the tied table's memory: 2 stages each hold it (embedding, head); tensor splits it
  const auto gm = load_model("griffin-tiny");
  CHECK(stage_parameters(gm, 1, 2, 0) + stage_parameters(gm, 1, 2, 1) ==
        count_parameters(gm).total + gm.vocab * gm.width);
}

TEST_CASE("serving plans: only data, tensor and pipeline, errors name the key", "[inference]") {
  const auto m = load_model("griffin-tiny");
  Plan p = serving();
  p.mesh[Axis::sequence] = 2;
  auto v = serving_violations(m, p, {4, 16, 16}, 0);
  REQUIRE(!v.empty());
  CHECK(std::string(v[0].key) == "mesh.sequence");
  v = serving_violations(m, serving(1, 3), {4, 16, 16}, 0);
  REQUIRE(!v.empty());
  CHECK(std::string(v[0].rule) == "pipeline divides the batch");
  v = serving_violations(m, serving(8), {4, 16, 16}, 0);  // 4 heads
  REQUIRE(!v.empty());
  CHECK(std::string(v[0].key) == "mesh.tensor");
  CHECK(serving_violations(m, serving(2, 3), {6, 16, 16}, 6).empty());
}

TEST_CASE("decode pricing: memory-bound at batch 1, MQA slows with the sample, Hawk does not", "[inference]") {
  const auto cl = load_cluster("tpu-v5e-64");
  auto one = cluster_slice(cl, 1, "devices");
  const auto hawk = load_model("hawk-1.3b"), mqa = load_model("mqa-1.3b"), griffin = load_model("griffin-1.3b");
  const ServingShape shortS{1, 128, 128}, longS{1, 128, 4096};
  const auto h = simulate_inference(hawk, serving(), one, shortS), hl = simulate_inference(hawk, serving(), one, longS);
  // no step moves bytes faster than HBM: a decode round takes at least everything it moves / bandwidth
  const double moved = decode_sum(hawk, serving(), 1, 200, bytes);
  CHECK(h.per_token_seconds >= moved / one.chip.memory_bytes_per_s);
  CHECK(hl.per_token_seconds == Approx(h.per_token_seconds).epsilon(1e-12));  // fixed state
  const auto q = simulate_inference(mqa, serving(), one, shortS), ql = simulate_inference(mqa, serving(), one, longS);
  CHECK(ql.per_token_seconds > q.per_token_seconds);
  // Griffin's local caches stop growing at the window (1024): flat once the sample is past it
  const auto g1 = simulate_inference(griffin, serving(), one, {1, 2048, 1024}), g2 = simulate_inference(griffin, serving(), one, {1, 2048, 8192});
  CHECK(g2.per_token_seconds == Approx(g1.per_token_seconds).epsilon(1e-12));
  // throughput = batch / latency; generate = S tokens after the first-token time
  CHECK(h.decode_tokens_per_s == Approx(1 / h.per_token_seconds));
  CHECK(h.generate_seconds == Approx(h.ttft_seconds + 128 * h.per_token_seconds));
}

TEST_CASE("the largest batch that fits is the last one under the memory limit", "[inference]") {
  const auto cl = cluster_slice(load_cluster("tpu-v5e-64"), 2, "devices");
  const auto m = load_model("mqa-1.3b");
  for (std::int64_t pp : {1, 2}) {
    INFO("pipeline " << pp);
    const Plan p = serving(1, pp, 2 / pp);
    const ServingShape s{1, 2048, 2048};
    const std::int64_t most = max_batch_that_fits(m, p, s, cl.chip);
    REQUIRE(most >= pp);
    CHECK(most % pp == 0);
    auto with = [&](std::int64_t b) { ServingShape x = s; x.batch = b; return inference_memory_estimate(m, p, x, cl.chip); };
    CHECK(with(most).fits);
    CHECK(!with(most + pp).fits);
  }
}

TEST_CASE("pipelined decode: the busy cycle is p times the slowest stage", "[inference]") {
  const auto cl = cluster_slice(load_cluster("tpu-v5e-64"), 2, "devices");
  const auto m = load_model("hawk-1.3b");
  const Plan p = serving(1, 2);
  const ServingShape s{4, 4096, 8};  // prefill: passes of 8192 / 4096 = 2 sequences
  const auto e = simulate_inference(m, p, cl, s);
  // each stage's pass of 2 sequences, priced alone; the round is 2 × the slower one (flow-shop
  // steady state with 2 micro-batches in 2 stages); prefill: 2 passes of 2 sequences through the
  // 2 stages, t0 + t1 + (2 − 1)·max
  const Network net(Topology(cl), cl, p.mesh, p.placement);
  auto pass_time = [&](const InferencePass& x) {
    double t = 0;
    for (const auto* list : {&x.pre, &x.post}) t += pass_seconds(*list, cl, net, DType::bf16);
    for (const auto& g : x.groups) t += static_cast<double>(g.count) * pass_seconds(g.steps, cl, net, DType::bf16);
    return t;
  };
  double round = 0;
  for (std::int64_t n : decode_positions(4096, 8, kDecodePoints))
    round += 2 * std::max(pass_time(lower_decode(m, p, 0, 2, n)), pass_time(lower_decode(m, p, 1, 2, n))) / 8;
  CHECK(e.per_token_seconds == Approx(round).epsilon(1e-9));
  const double f0 = pass_time(lower_prefill(m, p, 0, 2, 4096)), f1 = pass_time(lower_prefill(m, p, 1, 2, 4096));
  CHECK(e.ttft_seconds == Approx(f0 + f1 + std::max(f0, f1)).epsilon(1e-9));
}

TEST_CASE("a decode step ends with the sampling: argmax over the fp32 logits, the tokens broadcast over tensor", "[inference]") {
  const auto m = load_model("hawk-tiny");  // width, vocab and heads divide by 4
  const std::int64_t B = 3;
  const double V = static_cast<double>(m.vocab);
  for (const auto& [t, hops] : {std::pair{1, 0}, std::pair{2, 1}, std::pair{4, 2}}) {  // a binomial tree: ⌈log2 t⌉
    INFO("tensor " << t);
    const InferencePass pass = lower_decode(m, serving(t), 0, B, 20);
    REQUIRE(pass.post.size() >= 2);
    const Step& pick = pass.post[pass.post.size() - 2];
    const Step& send = pass.post.back();
    CHECK(std::string(pick.name) == tensors::sample_token);
    CHECK(pick.kind == StepKind::compute);
    CHECK(pick.vector_flops == B * V);              // one comparison per logit
    CHECK(pick.bytes_read == B * V * 4);            // the fp32 logits of every sequence
    CHECK(pick.bytes_written == B * 4);             // one int32 token each
    CHECK(std::string(send.name) == tensors::sample_broadcast);
    CHECK(send.kind == StepKind::p2p);
    CHECK(send.axis == Axis::tensor);
    CHECK(send.comm_bytes == B * 4);
    CHECK(send.hops == hops);
    // the decoder's head: no loss, no (max, Σexp) merge; the logits all-gathered over tensor
    int gathers = 0;
    for (const auto& x : pass.post) {
      CHECK(std::string(x.name) != tensors::loss);
      CHECK(std::string(x.name) != tensors::loss_stats);
      if (x.comm == CommKind::all_gather) {
        ++gathers;
        CHECK(x.comm_bytes == B * V * 4);
      }
    }
    CHECK(gathers == (t > 1 ? 1 : 0));
  }
  // a pipeline's first stage has no head, so no sampling
  for (const auto& s : lower_decode(m, serving(1, 2), 0, 2, 20).post) CHECK(std::string(s.name) != tensors::sample_token);
}

TEST_CASE("decode collectives are priced back to back, prefill's as a training step's", "[inference]") {
  // cpu-local's 2 devices on one island: a ring step inside it is 2 hops (sim/network.cpp), so an
  // all-reduce on t = 2 costs 2·(t−1) steps of 2·L latency, an all-gather (t−1) steps, the
  // broadcast's hop 2·L. With L_b2b the decode step is cheaper by exactly the latency difference of
  // its collectives; prefill does not change.
  ClusterSpec slow = load_cluster("cpu-local");
  slow.chip.compute_jitter = 0;
  slow.topology.island_latency_seconds = 20e-6;
  ClusterSpec fast = slow;
  fast.topology.island_latency_back_to_back_seconds = 1e-6;
  CHECK(has_back_to_back_latency(fast));
  CHECK_FALSE(has_back_to_back_latency(slow));
  CHECK(decode_cluster(fast).topology.island_latency_seconds == 1e-6);
  const auto m = load_model("hawk-tiny");
  const Plan p = serving(2);
  const ServingShape s{4, 16, 4};
  const auto a = simulate_inference(m, p, slow, s), b = simulate_inference(m, p, fast, s);
  CHECK(b.ttft_seconds == Approx(a.ttft_seconds).epsilon(1e-12));
  const double dL = 20e-6 - 1e-6;
  double steps = 0;  // ring steps (or hops) of the decode step's collectives, each 2 hops inside the island
  lower_decode(m, p, 0, 4, 17).for_each_list([&](const std::vector<Step>& list, std::int64_t times) {
    for (const auto& x : list) {
      if (x.comm == CommKind::all_reduce) steps += static_cast<double>(times) * 2 * (2 - 1);
      else if (x.comm == CommKind::all_gather || x.comm == CommKind::reduce_scatter) steps += static_cast<double>(times) * (2 - 1);
      else if (x.comm == CommKind::send_recv) steps += static_cast<double>(times) * x.hops;
    }
  });
  REQUIRE(steps > 0);
  CHECK(a.per_token_seconds - b.per_token_seconds == Approx(steps * 2 * dL).epsilon(1e-9));
}

TEST_CASE("decode recurrences are priced at their one-token values, the fused decay without a call of its own", "[inference]") {
  // A chip where only the vector unit can bind (bandwidth 1e30 B/s): a step's price is
  // vector_flops / (vector peak · its value) + calls · the per-call cost.
  ChipSpec chip = load_cluster("cpu-local").chip;
  chip.memory_bytes_per_s = 1e30;
  chip.efficiency.memory_curve.clear();
  chip.vector_flops_per_s = 1e11;
  chip.launch_overhead_seconds = 1e-6;
  chip.efficiency.scan = 0.5;
  chip.efficiency.ops = {{"rglru.scan", 0.2}, {"wkv4.scan", 0.3}, {"wkv6.scan", 0.4}};
  const std::int64_t B = 4;
  auto find = [](const InferencePass& pass, const char* op) {
    for (const auto& g : pass.groups)
      for (const auto& s : g.steps)
        if (std::string_view(s.op) == op) return s;
    FAIL("no step " << op);
    return Step{};
  };
  const auto hawk = load_model("hawk-tiny");
  const auto pass = lower_decode(hawk, serving(), 0, B, 17);
  const Step scan = find(pass, ops::rglru_scan), decay = find(pass, ops::rglru_decay);
  CHECK(std::string_view(scan.kernel) == ops::rglru_decode);
  CHECK(std::string_view(decay.kernel) == ops::rglru_decode);
  // log a = −8·r·softplus(Λ) and friends: 6 FLOPs per channel of each sequence, inside the scan's call
  CHECK(decay.vector_flops == 6.0 * B * hawk.recurrent_width);
  CHECK(decay.calls == 0);
  CHECK(scan.calls == 1);
  // without a one-token value: the training kernel's (the scan's op), the decay at the class value
  CHECK(compute_seconds(scan, chip, DType::fp32) == Approx(scan.vector_flops / (1e11 * 0.2) + 1e-6));
  CHECK(compute_seconds(decay, chip, DType::fp32) == Approx(decay.vector_flops / (1e11 * 0.5)));
  // with one: both at it
  chip.efficiency.ops["rglru.decode"] = 0.05;
  CHECK(compute_seconds(scan, chip, DType::fp32) == Approx(scan.vector_flops / (1e11 * 0.05) + 1e-6));
  CHECK(compute_seconds(decay, chip, DType::fp32) == Approx(decay.vector_flops / (1e11 * 0.05)));
  // the WKV state updates likewise
  chip.efficiency.ops["wkv4.decode"] = 0.07;
  const Step wkv4 = find(lower_decode(load_model("rwkv4-tiny"), serving(), 0, B, 17), ops::wkv4_scan);
  CHECK(std::string_view(wkv4.kernel) == ops::wkv4_decode);
  CHECK(compute_seconds(wkv4, chip, DType::fp32) == Approx(wkv4.vector_flops / (1e11 * 0.07) + 1e-6));
  const Step wkv6 = find(lower_decode(load_model("rwkv6-tiny"), serving(), 0, B, 17), ops::wkv6_scan);
  CHECK(std::string_view(wkv6.kernel) == ops::wkv6_decode);
  CHECK(compute_seconds(wkv6, chip, DType::fp32) == Approx(wkv6.vector_flops / (1e11 * 0.4) + 1e-6));  // no wkv6.decode: wkv6.scan's
  // the training lowering keeps the training kernels
  const StepProgram train = lower(hawk, training(B, 16), 0);
  for (const auto& s : train.forward) CHECK((s.kernel == nullptr || std::string_view(s.kernel) != ops::rglru_decode));
}

TEST_CASE("decode attention: the step carries the kernel's GEMM shape, its K/V bytes are what the kernel reads", "[inference]") {
  // per rank and layer, from the models' numbers: G = (H/t)/(K/V heads on the rank), keys = n + 1
  // (global) or min(n, W) + 1 (local), K/V bytes = 2 × K/V heads on the rank × N × keys × B × bytes
  struct Case { const char* model; std::int64_t t, B, n, G, kv_per_rank; };
  const Case cases[] = {
      {"transformer-tiny", 1, 4, 1039, 2, 2},  // D08: GQA, two query heads per K/V head
      {"transformer-tiny", 2, 4, 1039, 2, 1},  // K/V heads split over tensor
      {"mqa-tiny", 1, 1, 2063, 4, 1},          // MQA
      {"mqa-tiny", 2, 4, 543, 2, 1},           // one K/V head replicated on both ranks
      {"griffin-tiny", 1, 4, 1055, 4, 1},      // local: the window's rows
  };
  for (const auto& c : cases) {
    INFO(c.model << " tensor " << c.t);
    const auto m = load_model(c.model);
    const Plan p = serving(c.t);
    const double a = bytes_of(p.act_dtype), N = static_cast<double>(m.head_dim);
    const InferencePass pass = lower_decode(m, p, 0, c.B, c.n);
    double kv_read = 0, closed = 0;
    std::int64_t layers = 0;
    for (const auto& g : pass.groups) {
      if (g.kind != Temporal::global_attention && g.kind != Temporal::local_attention) continue;
      const std::int64_t keys = g.kind == Temporal::local_attention ? std::min(c.n, m.window) + 1 : c.n + 1;
      for (const auto& s : g.steps) {
        if (s.cls != OpClass::attention) continue;
        CHECK(std::string_view(s.kernel) == ops::attention_decode);
        CHECK(s.m == c.G);
        CHECK(s.n == keys);
        CHECK(s.k == m.head_dim);
        const auto gm = decode_attention_gemms(m, static_cast<std::int64_t>(s.layer), c.t, c.B, c.n);
        CHECK(gm.pairs == c.B * c.kv_per_rank);
        // Q·Kᵀ and P·V: 2·G·keys·N each per pair
        CHECK(s.matmul_flops == Approx(4.0 * c.G * keys * N * c.B * c.kv_per_rank).epsilon(1e-12));
        const double q_bytes = c.B * (m.heads / c.t) * N * a;  // the queries in; the output is bytes_written
        kv_read += static_cast<double>(g.count) * (s.bytes_read - q_bytes);
        CHECK(s.bytes_read - q_bytes == Approx(gm.cache_elements_read() * a).epsilon(1e-12));
        closed += static_cast<double>(g.count) * 2 * c.kv_per_rank * N * keys * c.B * a;
      }
      layers += g.count;
    }
    REQUIRE(layers > 0);
    CHECK(kv_read == Approx(closed).epsilon(1e-12));
  }
  // the one global-cache case in the closed form: 2 × layers × kv_heads/t × N × (n + 1) × B × bytes
  const auto tr = load_model("transformer-tiny");
  const Plan p2 = serving(2);
  double read = 0;
  for (const auto& g : lower_decode(tr, p2, 0, 4, 1039).groups)
    for (const auto& s : g.steps)
      if (s.cls == OpClass::attention) read += static_cast<double>(g.count) * (s.bytes_read - 4.0 * (tr.heads / 2) * tr.head_dim * bytes_of(p2.act_dtype));
  CHECK(read == Approx(2.0 * tr.depth * (tr.kv_heads / 2) * tr.head_dim * 1040 * 4 * bytes_of(p2.act_dtype)).epsilon(1e-12));
}

TEST_CASE("decode attention GEMMs: rows, key blocks within the small-matrix bound, BLAS calls", "[inference]") {
  // G = 2: Q·Kᵀ in blocks of 1152 / 2 = 576 keys; 1040 keys → 2 blocks, then one P·V; 8 pairs
  const auto g = decode_attention_gemms(4, 2, 32, 4, 1040);
  CHECK(g.rows == 2);
  CHECK(g.pairs == 8);
  CHECK(g.key_block == 576);
  CHECK(g.blocks() == 2);
  CHECK(g.blas_calls() == 8 * (2 + 1));
  CHECK(g.cache_elements_read() == 8.0 * 1040 * 2 * 32);
  // one query head per K/V head: GEMVs, one per head and product, the keys whole
  const auto v = decode_attention_gemms(4, 4, 32, 2, 700);
  CHECK(v.gemv);
  CHECK(v.blas_calls() == 2 * 4 * 2);
  // no key yet: no call
  CHECK(decode_attention_gemms(4, 1, 32, 1, 0).blas_calls() == 0);
  CHECK_THROWS_AS(decode_attention_gemms(4, 3, 32, 1, 10), std::logic_error);
}

// A chip with round numbers for the decode attention's price: matrix peak 2e11 FLOP/s,
// attention.decode 0.5, 1 µs per call, no decode attention curves.
ChipSpec round_decode_chip(double vector_flops_per_s, double memory_bytes_per_s, double attention_softmax) {
  ChipSpec chip = load_cluster("cpu-local").chip;
  chip.peak_flops_per_s = {{"fp32", 2e11}};
  chip.vector_flops_per_s = vector_flops_per_s;
  chip.memory_bytes_per_s = memory_bytes_per_s;
  chip.launch_overhead_seconds = 1e-6;
  chip.efficiency.ops = {{"attention.decode", 0.5}};
  chip.efficiency.attention_softmax = attention_softmax;
  chip.efficiency.decode_attention_memory_curve.clear();
  chip.efficiency.decode_attention_rows_curve.clear();
  return chip;
}

TEST_CASE("decode attention: its cache bytes at the decode attention memory curve by working set", "[inference][sim]") {
  // The price is max(matrix FLOPs / (peak · attention.decode), bytes / (bandwidth · the curve at
  // the working set)) + calls · the per-call cost.
  ChipSpec chip = round_decode_chip(1e30, 1e11, 0);
  chip.efficiency.memory_curve = {{1e6, 1.0}, {1e8, 0.25}};
  chip.efficiency.decode_attention_memory_curve = {{1e6, 1.0}, {1e7, 0.01}};
  // transformer-tiny (H 4, K/V 2, N 32) at batch 4, position 1039, four layers: D08's shape
  const auto m = load_model("transformer-tiny");
  const InferencePass pass = lower_decode(m, serving(), 0, 4, 1039);
  const Step* att = nullptr;
  for (const auto& g : pass.groups)
    for (const auto& s : g.steps)
      if (s.cls == OpClass::attention) att = &s;
  REQUIRE(att != nullptr);
  CHECK(is_decode_attention(*att));
  const double N = 32, keys = 1040, B = 4, kv = 2, G = 2;
  const double flops = 4.0 * G * keys * N * B * kv;
  const double cache = 2.0 * kv * N * keys * B * bytes_of(serving().act_dtype);  // K and V rows read
  const double bytes = att->bytes_read + att->bytes_written;
  CHECK(bytes > cache);  // the cache, the queries in, the output
  CHECK(bytes < cache * 1.01);
  const double ws = std::max(bytes, att->reuse_bytes);
  CHECK(att->reuse_bytes > 4 * cache);  // four layers' caches and the weights: what one token streams
  // the curve at the working set: linear in log(bytes) between (1e6, 1) and (1e7, 0.01)
  const double fraction = 1.0 + (0.01 - 1.0) * std::log(ws / 1e6) / std::log(10.0);
  const double compute_s = flops / (2e11 * 0.5), memory_s = bytes / (1e11 * fraction);
  REQUIRE(memory_s > compute_s);  // the curve binds
  CHECK(compute_seconds(*att, chip, DType::fp32) == Approx(memory_s + 1e-6 * att->calls).epsilon(1e-9));
  // without the curve: the triad's at the same working set (compute-bound here), as before
  chip.efficiency.decode_attention_memory_curve.clear();
  const double triad_s = bytes / (1e11 * (1.0 + (0.25 - 1.0) * std::log(ws / 1e6) / std::log(100.0)));
  CHECK(compute_seconds(*att, chip, DType::fp32) == Approx(std::max(compute_s, triad_s) + 1e-6 * att->calls).epsilon(1e-9));
  // the curve is the decode attention's only: the same step under the training kernel's tag, and
  // every other decode step, keep the triad's
  chip.efficiency.decode_attention_memory_curve = {{1e6, 1e-6}, {1e8, 1e-6}};
  Step training = *att;
  training.kernel = nullptr;
  CHECK_FALSE(is_decode_attention(training));
  for (const auto& g : pass.groups)
    for (const auto& s : g.steps)
      if (s.kind == StepKind::compute && !is_decode_attention(s)) CHECK(compute_seconds(s, chip, DType::fp32) < 1e-3);
}

TEST_CASE("decode attention: its compute at the rows curve's value for its G, other steps untouched", "[inference][sim]") {
  // A chip where only compute binds: the price is (matrix FLOPs / (peak · attention.decode) +
  // softmax vector FLOPs / (vector peak · attention_softmax)) / (the rows curve at G) + calls · the
  // per-call cost.
  ChipSpec chip = round_decode_chip(1e10, 1e18, 0.25);
  chip.efficiency.decode_attention_rows_curve = {{1, 0.5}, {4, 1.0}};
  // mqa-tiny (H 4, one K/V head, N 32): tensor 1 gives G = 4, tensor 2 (the K/V head replicated) G = 2
  const auto m = load_model("mqa-tiny");
  auto attention_of = [](const InferencePass& pass) {
    const Step* att = nullptr;
    for (const auto& g : pass.groups)
      for (const auto& s : g.steps)
        if (s.cls == OpClass::attention) att = &s;
    REQUIRE(att != nullptr);
    return *att;
  };
  const Plan t2 = serving(2);
  const Step g4 = attention_of(lower_decode(m, serving(), 0, 4, 544)), g2 = attention_of(lower_decode(m, t2, 0, 4, 544));
  REQUIRE(g4.m == 4);
  REQUIRE(g2.m == 2);
  for (const Step* s : {&g4, &g2}) {
    const double G = double(s->m), keys = 545, N = 32, B = 4;
    CHECK(s->matmul_flops == Approx(4.0 * G * keys * N * B));
    const double compute_s = s->matmul_flops / (2e11 * 0.5) + s->vector_flops / (1e10 * 0.25);
    // the curve at G: linear in log G between (1, 0.5) and (4, 1): at 2, 0.75; at 4, 1
    const double rows = G == 4 ? 1.0 : 0.75;
    CHECK(compute_seconds(*s, chip, DType::fp32) == Approx(compute_s / rows + 1e-6 * s->calls).epsilon(1e-9));
  }
  // no curve: every G at the kernel value alone
  chip.efficiency.decode_attention_rows_curve.clear();
  CHECK(compute_seconds(g2, chip, DType::fp32) ==
        Approx(g2.matmul_flops / 1e11 + g2.vector_flops / 2.5e9 + 1e-6 * g2.calls).epsilon(1e-9));
  // the curve is the decode attention's only: the training tag's step and the decode GEMMs keep their price
  chip.efficiency.decode_attention_rows_curve = {{1, 1e-6}, {8, 1e-6}};
  Step training = g2;
  training.kernel = nullptr;
  ChipSpec flat = chip;
  flat.efficiency.decode_attention_rows_curve.clear();
  CHECK(compute_seconds(training, chip, DType::fp32) == compute_seconds(training, flat, DType::fp32));
  for (const auto& g : lower_decode(m, t2, 0, 4, 544).groups)
    for (const auto& s : g.steps)
      if (s.kind == StepKind::compute && !is_decode_attention(s))
        CHECK(compute_seconds(s, chip, DType::fp32) == compute_seconds(s, flat, DType::fp32));
}

TEST_CASE("a one-row GEMM (GEMV) streams at the GEMV memory curve, other steps at the triad's", "[inference][sim]") {
  // A chip where only memory can bind: the price is bytes / (bandwidth · the curve at the working
  // set) + calls · the per-call cost.
  ChipSpec chip = load_cluster("cpu-local").chip;
  chip.peak_flops_per_s = {{"fp32", 1e30}};
  chip.vector_flops_per_s = 1e30;
  chip.memory_bytes_per_s = 1e11;
  chip.launch_overhead_seconds = 0;
  chip.efficiency.ops.clear();
  chip.efficiency.gemm_curve.clear();
  chip.efficiency.memory_curve = {{1e6, 1.0}, {1e8, 0.25}};
  chip.efficiency.gemv_memory_curve = {{1e6, 1.0}, {1e8, 0.125}};
  Step gemv;
  gemv.cls = OpClass::gemm;
  gemv.m = 1, gemv.n = 1536, gemv.k = 512;
  gemv.matmul_flops = 2.0 * 1536 * 512;
  gemv.bytes_read = 4.0 * 1536 * 512;  // the weights (3 MiB), with every other weight of the token since
  gemv.reuse_bytes = 5e8;
  CHECK(is_gemv(gemv));
  CHECK(compute_seconds(gemv, chip, DType::fp32) == Approx(gemv.bytes_read / (1e11 * 0.125)).epsilon(1e-12));
  Step rows4 = gemv;  // four rows: sgemm, the triad's curve
  rows4.m = 4;
  CHECK_FALSE(is_gemv(rows4));
  CHECK(compute_seconds(rows4, chip, DType::fp32) == Approx(rows4.bytes_read / (1e11 * 0.25)).epsilon(1e-12));
  // without a GEMV curve the GEMV takes the triad's
  chip.efficiency.gemv_memory_curve.clear();
  CHECK(compute_seconds(gemv, chip, DType::fp32) == Approx(gemv.bytes_read / (1e11 * 0.25)).epsilon(1e-12));
  // a batch-1 decode step's linears are GEMVs, batch 4's are not
  const auto h = load_model("hawk-tiny");
  for (std::int64_t B : {1, 4}) {
    std::int64_t gemvs = 0, linears = 0;
    for (const auto& g : lower_decode(h, serving(), 0, B, 20).groups)
      for (const auto& s : g.steps)
        if (s.cls == OpClass::gemm && std::string_view(s.op) == ops::linear) ++linears, gemvs += is_gemv(s) ? 1 : 0;
    REQUIRE(linears > 0);
    CHECK(gemvs == (B == 1 ? linears : 0));
  }
}
