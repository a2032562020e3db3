// tests/unit/test_transformer.cpp — the transformer family's lowering and the Megatron options
// (sequence parallelism as tensor_comm: rs_ag, selective recompute, materialized attention)
// against the closed forms of Narayanan et al. 2021 and Korthikanti et al. 2022, derived here.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "program/lower.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/cost.hpp"
#include "sim/network.hpp"
#include "sim/simulate.hpp"

using namespace scanshard;

namespace {

Plan plan(const std::string& mesh, std::int64_t batch, std::int64_t micro, std::int64_t seq) {
  Plan p;
  p.mesh = parse_mesh(mesh, "--mesh");
  p.global_batch = batch;
  p.micro_batch = micro;
  p.seq_len = seq;
  return p;
}

double matmul(const std::vector<Step>& steps) {
  double s = 0;
  for (const auto& st : steps) s += st.matmul_flops;
  return s;
}

// The one layer group of a transformer stage (every layer lowers alike).
const LayerLowering& layer_of(const ModelSpec& m, const Plan& p) {
  static std::vector<StageSummary> keep;
  keep.push_back(lower_stage(m, p, 0, 0));
  REQUIRE(keep.back().groups.size() == 1);
  return *keep.back().groups[0].lowered;
}

}  // namespace

TEST_CASE("transformer FLOPs per iteration with full recomputation follow Narayanan et al. 2021", "[lower][transformer]") {
  // Narayanan et al. 2021 (arXiv 2104.04473) §5.1: with full activation recomputation one
  // iteration costs 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)) FLOPs: per layer forward 24·B·s·h²
  // (QKV 6, O 2, MLP 16) + 4·B·s²·h (QKᵀ and P·V over the whole s×s square, as Megatron
  // computes it), ×4 for forward, recompute and a backward of twice the forward; the logits
  // 2·B·s·h·V ×3 (not recomputed). A materialized attention core counts the whole square.
  for (const char* name : {"megatron-22b", "gpt3-175b"}) {
    INFO(name);
    const auto m = load_model(name);
    const double B = 2, s = 2048, l = static_cast<double>(m.depth), h = static_cast<double>(m.width),
                 V = static_cast<double>(m.vocab);
    Plan p = plan("data=1", 2, 2, 2048);
    p.remat = Remat::block;
    p.attention = AttentionKernel::materialized;
    const auto prog = lower(m, p, 0);
    const double expected = 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h));
    REQUIRE(matmul(prog.forward) + matmul(prog.backward) == Approx(expected).epsilon(1e-12));
  }
}

TEST_CASE("GPT-3 175B activation memory per layer follows Korthikanti et al. 2022 in every mode", "[lower][transformer]") {
  // Korthikanti et al. 2022 (arXiv 2205.05198) §4: per layer, with bf16 activations and 1-byte
  // dropout masks, s·b·h·(34 + 5·a·s/h) bytes unsharded. Under tensor parallelism t the
  // LayerNorm/dropout/residual part (10·s·b·h) stays replicated: s·b·h·(10 + 24/t + 5as/(ht))
  // (eq. 2); sequence parallelism shards it too: s·b·h·(34 + 5as/h)/t (eq. 3); selective
  // recompute drops the 5as²b attention-core term (34·s·b·h/t with sequence parallelism, eq. 4);
  // full recompute keeps the layer input, 2·s·b·h (Table 2), sharded to 2·s·b·h/t under rs_ag.
  const auto m = load_model("gpt3-175b");
  const double s = 2048, b = 1, h = 12288, a = 96, t = 8;
  REQUIRE(m.width == h);
  REQUIRE(m.heads == a);
  REQUIRE(m.dropout > 0);
  const double sbh = s * b * h;
  struct Mode { Remat remat; TensorComm comm; double expected; const char* what; };
  const Mode modes[] = {
      {Remat::none, TensorComm::allreduce, sbh * (10 + 24 / t + 5 * a * s / (h * t)), "tensor parallel"},
      {Remat::none, TensorComm::rs_ag, sbh * (34 + 5 * a * s / h) / t, "tensor + sequence parallel"},
      {Remat::selective, TensorComm::rs_ag, 34 * sbh / t, "sequence parallel + selective recompute"},
      {Remat::selective, TensorComm::allreduce, sbh * (10 + 24 / t), "tensor parallel + selective recompute"},
      {Remat::block, TensorComm::allreduce, 2 * sbh, "full recompute"},
      {Remat::block, TensorComm::rs_ag, 2 * sbh / t, "full recompute, sequence-sharded input"},
  };
  for (const auto& mode : modes) {
    INFO(mode.what);
    Plan p = plan("tensor=8", 1, 1, 2048);
    p.remat = mode.remat;
    p.tensor_comm = mode.comm;
    p.attention = AttentionKernel::materialized;
    REQUIRE(layer_of(m, p).saved_bytes == Approx(mode.expected).epsilon(1e-12));
  }
  // Unsharded: 34·s·b·h + 5·a·s²·b.
  Plan p = plan("data=1", 1, 1, 2048);
  p.attention = AttentionKernel::materialized;
  REQUIRE(layer_of(m, p).saved_bytes == Approx(sbh * (34 + 5 * a * s / h)).epsilon(1e-12));
}

TEST_CASE("rs_ag replaces each tensor all-reduce by a reduce-scatter and an all-gather of the same bytes", "[lower][sim][transformer]") {
  // Korthikanti et al. 2022 §4.2.2: on a ring, all-reduce = reduce-scatter + all-gather, each
  // moving (t−1)/t of the buffer, so sequence parallelism costs the same communication as
  // tensor parallelism. Check it for every family's layer on a ring (an NVSwitch island and a
  // TPU torus axis): the exposed tensor-axis seconds of a layer are equal, and the byte sums
  // agree (reduce-scatter and all-gather bytes each equal the all-reduce bytes). RWKV is left
  // out: its channel mix gates the gathered value on a channel slice, which needs an exchange
  // beyond Megatron's pattern under rs_ag (lower.cpp prices it as an all-gather).
  for (const char* cluster : {"dgx-a100-1", "tpu-v5e-64"}) {
    const auto c = load_cluster(cluster);
    for (const char* name : {"gpt3-175b", "llama2-70b", "griffin-7b", "hawk-7b", "mqa-7b"}) {
      INFO(name << " on " << cluster);
      const auto m = load_model(name);
      Plan p = plan("tensor=8", 1, 1, 2048);
      p.mesh[Axis::data] = c.devices() / 8;
      p.global_batch = p.micro_batch = p.mesh[Axis::data];
      p.micro_batch = 1;
      const Network net(Topology(c), c, p.mesh, p.placement);
      auto tensor_comm = [&](TensorComm comm) {
        p.tensor_comm = comm;
        const auto st = lower_stage(m, p, 0, 0);
        std::array<double, 4> out{};  // exposed seconds, all-reduce bytes, reduce-scatter bytes, all-gather bytes
        for (const auto& g : st.groups)
          for (const auto* steps : {&g.lowered->forward, &g.lowered->backward})
            for (const auto& s : *steps) {
              if (s.kind != StepKind::collective || s.axis != Axis::tensor || s.overlappable) continue;
              out[0] += static_cast<double>(g.count) * comm_seconds(s, net.axis(Axis::tensor));
              const int k = s.comm == CommKind::all_reduce ? 1 : s.comm == CommKind::reduce_scatter ? 2 : 3;
              out[static_cast<std::size_t>(k)] += static_cast<double>(g.count) * s.comm_bytes;
            }
        return out;
      };
      const auto ar = tensor_comm(TensorComm::allreduce), rs = tensor_comm(TensorComm::rs_ag);
      REQUIRE(ar[0] > 0);
      REQUIRE(rs[0] == Approx(ar[0]).epsilon(1e-12));
      REQUIRE(rs[2] > 0);
      REQUIRE(rs[1] + rs[2] == Approx(ar[1] + ar[3]).epsilon(1e-12));  // each all-reduce became one reduce-scatter...
      REQUIRE(rs[1] + rs[3] == Approx(ar[1] + ar[3]).epsilon(1e-12));  // ...and one all-gather of the same bytes
    }
  }
}

TEST_CASE("selective recompute reruns only the attention core", "[lower][transformer]") {
  // Korthikanti et al. 2022 §5: the recompute pass costs the attention core's forward only —
  // 4·B·s²·h/t matmul FLOPs per layer for a materialized core (QKᵀ and P·V over the square).
  const auto m = load_model("gpt3-175b");
  Plan p = plan("tensor=8", 1, 1, 2048);
  p.attention = AttentionKernel::materialized;
  p.remat = Remat::selective;
  p.tensor_comm = TensorComm::rs_ag;
  const auto& l = layer_of(m, p);
  double recompute = 0;
  for (const auto& s : l.backward)
    if (s.phase == Phase::recompute) {
      REQUIRE(s.cls == OpClass::attention);
      recompute += s.matmul_flops;
    }
  const double s = 2048, h = 12288, t = 8;
  REQUIRE(recompute == Approx(4 * s * s * h / t).epsilon(1e-12));
}

TEST_CASE("interleaving v model chunks per stage shrinks the bubble to (p − 1)/(v·m)", "[sim][transformer]") {
  // Narayanan et al. 2021 §2.2.2: with v chunks per device a micro-batch's pass through one chunk
  // takes t/v, so the bubble is (p − 1)·t/v against m·t of work: fraction (p − 1)/(v·m). The
  // per-micro-batch compute is the same for every v (only the number of pipeline transfers and
  // their tensor-axis gathers grows), and each stage still holds depth/p layers.
  const auto m = load_model("gpt3-175b");
  const auto c = load_cluster("dgx-a100-8");
  const double pp = 8, mb = 16;
  Estimate base;
  for (std::int64_t v : {1, 2, 4}) {
    INFO("v = " << v);
    Plan p = plan("tensor=8,pipeline=8", 16, 1, 2048);
    p.remat = Remat::block;
    p.virtual_stages = v;
    const auto e = simulate(m, p, c);
    // The stages differ by the embedding (first) and the head (last, ~1/3 of a layer against
    // 12 layers per stage): the bubble is within 5 % of (p − 1) slots of the slowest stage, and
    // at most that.
    const double bubble = e.seconds[static_cast<int>(Bucket::bubble)];
    REQUIRE(bubble / (mb * e.microbatch_seconds) == Approx((pp - 1) / (static_cast<double>(v) * mb)).epsilon(0.05));
    REQUIRE(bubble <= (pp - 1) * e.microbatch_seconds / static_cast<double>(v));
    const auto stages = stage_summaries(m, p);
    std::int64_t layers = 0;
    for (const auto& g : stages[3].groups) layers += g.count;
    REQUIRE(layers == 96 / 8);
    const auto prog = expand(stages[3], m);  // stage 3 holds chunks 3, 11, 19, ... of 96/(8v) layers
    REQUIRE(prog.forward.front().kind == StepKind::p2p);
    std::int64_t receives = 0;  // one per chunk, one hop each, at the chunk's start
    for (const Range& r : prog.forward_chunk) {
      const Step& first = prog.forward[static_cast<std::size_t>(r.begin)];
      REQUIRE(std::string(first.name) == "pipeline.recv_activations");
      REQUIRE(first.hops == 1);
      ++receives;
    }
    REQUIRE(receives == v);
    if (v == 1) { base = e; continue; }
    for (Bucket b : {Bucket::gemm, Bucket::attention})
      REQUIRE(e.seconds[static_cast<int>(b)] == Approx(base.seconds[static_cast<int>(b)]).epsilon(1e-12));
    REQUIRE(e.seconds[static_cast<int>(Bucket::comm_tensor)] > base.seconds[static_cast<int>(Bucket::comm_tensor)]);
    REQUIRE(e.step_seconds < base.step_seconds);
  }
  Plan bad = plan("tensor=8,pipeline=8", 16, 1, 2048);
  bad.virtual_stages = 13;  // 8·13 chunks for 96 layers
  REQUIRE_THROWS_AS(check_plan(m, bad, 64), PlanError);
}

TEST_CASE("a GEMM efficiency curve from the chip file prices small GEMMs slower", "[sim]") {
  // Efficiency::gemm_curve: linear in log(FLOPs of one GEMM) between points, held beyond them.
  const auto chip = parse_chip(parse_yaml("name: c\nsource: s\npeak_flops_per_s: {bf16: 1.0e14}\nvector_flops_per_s: 1.0e12\n"
                                          "memory_bytes: 1.0e10\nmemory_bytes_per_s: 1.0e15\nonchip_memory_bytes: 1.0e6\n"
                                          "efficiency:\n  gemm_curve: [[1.0e6, 0.2], [1.0e10, 0.8]]\n", "c.yaml"),
                               "c.yaml", "");
  const Efficiency& e = chip.efficiency;
  REQUIRE(e.gemm_at(1e3) == 0.2);
  REQUIRE(e.gemm_at(1e6) == 0.2);
  REQUIRE(e.gemm_at(1e8) == Approx(0.5).epsilon(1e-12));  // halfway in log between 1e6 and 1e10
  REQUIRE(e.gemm_at(1e10) == 0.8);
  REQUIRE(e.gemm_at(1e14) == 0.8);
  // A linear of m = 128 tokens, k = n = 128: 2·128³ FLOPs, compute-bound here (huge bandwidth).
  Step s;
  s.cls = OpClass::gemm;
  s.m = s.n = s.k = 128;
  s.matmul_flops = 2.0 * 128 * 128 * 128;
  const double eff = 0.2 + 0.6 * (std::log(s.matmul_flops) - std::log(1e6)) / (std::log(1e10) - std::log(1e6));
  REQUIRE(compute_seconds(s, chip, DType::bf16) == Approx(s.matmul_flops / (1e14 * eff)).epsilon(1e-12));
  // Chips without a curve keep the single gemm fraction (0.6 by default).
  const auto flat = load_cluster("tpu-v5p-256").chip;
  REQUIRE(flat.efficiency.gemm_curve.empty());
  REQUIRE(flat.efficiency.gemm_at(1e3) == flat.efficiency.gemm);
  // Bad curves are input errors naming the key.
  for (const char* bad : {"[[1.0e6, 0.2], [1.0e5, 0.8]]", "[[1.0e6, 1.5]]", "[1.0e6, 0.2]", "[]"}) {
    INFO(bad);
    const std::string y = std::string("name: c\npeak_flops_per_s: {bf16: 1.0e14}\nvector_flops_per_s: 1.0e12\nmemory_bytes: 1.0e10\n"
                                      "memory_bytes_per_s: 1.0e12\nonchip_memory_bytes: 1.0e6\nefficiency:\n  gemm_curve: ") + bad + "\n";
    try {
      parse_chip(parse_yaml(y, "c.yaml"), "c.yaml", "");
      FAIL("no error");
    } catch (const ConfigError& err) {
      REQUIRE(std::string(err.what()).find("gemm_curve") != std::string::npos);
    }
  }
}

TEST_CASE("rs_ag shards the token-wise regions of the linear-recurrence families too", "[lower]") {
  // Under rs_ag a layer's input and its two norm outputs (the regions between tensor-parallel
  // blocks; Griffin's residual adds keep nothing) hold n/t tokens instead of n: the layer keeps
  // (1 − 1/t)·3·n·D·a bytes less with every activation kept, (1 − 1/t)·n·D·a less under full
  // recompute. The stages exchange n/t tokens.
  const auto m = load_model("griffin-7b");
  const double t = 8, n = 2 * 2048, D = static_cast<double>(m.width), a = 2;
  for (Remat remat : {Remat::none, Remat::block}) {
    Plan p = plan("tensor=8,pipeline=2", 4, 2, 2048);
    p.remat = remat;
    const auto ar = lower_stage(m, p, 1, 0);
    p.tensor_comm = TensorComm::rs_ag;
    const auto rs = lower_stage(m, p, 1, 0);
    REQUIRE(ar.groups.size() == 2);  // recurrent and local-attention layers
    for (std::size_t g = 0; g < ar.groups.size(); ++g) {
      INFO(to_string(ar.groups[g].kind) << " remat " << to_string(remat));
      const double regions = remat == Remat::block ? 1 : 3;
      REQUIRE(ar.groups[g].lowered->saved_bytes - rs.groups[g].lowered->saved_bytes ==
              Approx((1 - 1 / t) * regions * n * D * a).epsilon(1e-12));
    }
    // allreduce: Megatron's scatter/gather sends n/t tokens' worth too, then all-gathers them
    REQUIRE(ar.pre_forward.front().comm_bytes == Approx(n * D * a / t));
    REQUIRE(rs.pre_forward.front().comm_bytes == Approx(n * D * a / t));
  }
}

TEST_CASE("Megatron's scatter/gather: each tensor rank sends 1/t of the activation, the next stage all-gathers it", "[lower]") {
  // Narayanan et al. 2021 §4.1: without it every one of the t tensor ranks sends the whole
  // b·s·h activation to its peer; with it each sends b·s·h/t over its own link and the receiver
  // all-gathers the t slices over NVLink (an all-gather whose full buffer is b·s·h).
  const auto m = load_model("gpt3-175b");
  const double t = 8, n = 2 * 2048, h = static_cast<double>(m.width), a = 2;
  Plan p = plan("tensor=8,pipeline=8", 16, 2, 2048);
  const auto mid = lower_stage(m, p, 3, 0);
  const Step& recv = mid.pre_forward.at(0);
  const Step& gather = mid.pre_forward.at(1);
  REQUIRE(std::string(recv.name) == "pipeline.recv_activations");
  REQUIRE(recv.comm_bytes == Approx(n * h * a / t));
  REQUIRE((gather.comm == CommKind::all_gather && gather.axis == Axis::tensor));
  REQUIRE(gather.comm_bytes == Approx(n * h * a));
  const Step& grecv = mid.post_backward.at(0);
  REQUIRE(std::string(grecv.name) == "pipeline.recv_gradients");
  REQUIRE(grecv.comm_bytes == Approx(n * h * a / t));
  REQUIRE((mid.post_backward.at(1).comm == CommKind::all_gather && mid.post_backward.at(1).axis == Axis::tensor));
  p.scatter_gather = false;
  const auto whole = lower_stage(m, p, 3, 0);
  REQUIRE(whole.pre_forward.at(0).comm_bytes == Approx(n * h * a));
  REQUIRE(whole.pre_forward.size() == 1);
  // On DGX A100 nodes the stage transfer crosses InfiniBand (25 GB/s per GPU) and the gather runs
  // on NVLink: the scattered transfer is priced faster.
  const auto c = load_cluster("dgx-a100-8");
  REQUIRE(simulate(m, plan("tensor=8,pipeline=8", 16, 2, 2048), c).step_seconds < simulate(m, p, c).step_seconds);
}

TEST_CASE("interleaved 1F1B holds Megatron-LM's warm-up of chunk passes in flight", "[lower]") {
  // Megatron-LM (schedules.py, interleaved): stage s runs (p − s − 1)·2 + (v − 1)·p warm-up
  // chunk passes before its first backward, so it holds that many plus one, each 1/v of the
  // stage's layers, capped at all m·v; plain 1F1B holds p − s micro-batches, GPipe all m.
  Plan p = plan("pipeline=8", 16, 1, 2048);
  const double pp = 8, m = 16;
  for (std::int64_t s = 0; s < 8; ++s) {
    p.virtual_stages = 1;
    REQUIRE(in_flight_micro_batches(p, s) == pp - static_cast<double>(s));
    p.virtual_stages = 2;
    REQUIRE(in_flight_micro_batches(p, s) == std::min(m * 2, (pp - static_cast<double>(s) - 1) * 2 + (2 - 1) * pp + 1) / 2);
  }
  p.global_batch = 4;  // m = 4 < the warm-up: every chunk pass of every micro-batch is in flight
  p.virtual_stages = 4;
  REQUIRE(in_flight_micro_batches(p, 0) == 4);
  p.virtual_stages = 1;
  p.schedule = Schedule::gpipe;
  REQUIRE(in_flight_micro_batches(p, 0) == 4);
}

TEST_CASE("Llama 3 405B activation memory per layer: Korthikanti's count with flash attention, SwiGLU, grouped K/V", "[lower][transformer]") {
  // Korthikanti et al. 2022 §4.1's count (each tensor a backward needs, bf16), for the Llama 3 block
  // (Dubey et al. 2024 Table 3: h 16384, FFN f 53248, a 128 heads, g 8 K/V heads of d 128; no
  // dropout, RMSNorm, SwiGLU) under tensor + sequence parallelism t (eq. 3's sharding: all /t) with
  // a flash-attention core (no a·s² term; its output and the fp32 log-sum-exp per head):
  //   norm1 input h, QKV input (norm1 output) h, Q h, K and V 2·g·d, core output h, norm2 input h,
  //   MLP input (norm2 output) h, W1 and W2 outputs 2f, silu(x W1) ⊙ x W2 (W3's input) f
  //   → s·b·[2·(6h + 2gd + 3f) + 4a]/t bytes; no remat. Selective recompute keeps the core output but not
  //   its log-sum-exp: s·b·2·(6h + 2gd + 3f)/t.
  const auto m = load_model("llama3-405b");
  const double s = 8192, b = 1, h = 16384, f = 53248, a = 128, g = 8, d = 128, t = 8;
  REQUIRE((m.width == h && m.mlp_width == f && m.heads == a && m.kv_heads == g && m.head_dim == d && m.dropout == 0));
  Plan p = plan("tensor=8", 1, 1, 8192);
  p.tensor_comm = TensorComm::rs_ag;
  p.attention = AttentionKernel::flash;
  p.remat = Remat::none;
  REQUIRE(layer_of(m, p).saved_bytes == Approx(s * b * (2 * (6 * h + 2 * g * d + 3 * f) + 4 * a) / t).epsilon(1e-12));
  p.remat = Remat::selective;
  REQUIRE(layer_of(m, p).saved_bytes == Approx(s * b * 2 * (6 * h + 2 * g * d + 3 * f) / t).epsilon(1e-12));
}

TEST_CASE("a stage holds its chunks' activations as the schedule runs them", "[lower][sim]") {
  // Closed forms (Megatron-LM's interleaved schedule; m a multiple of p):
  // - stage 0 with v equal chunks of b bytes holds p·v + p − 1 chunk passes at its peak, i.e.
  //   p·(1 + (p − 1)/(p·v)) micro-batches of the stage — Korthikanti et al. 2022 §4.2.3's factor;
  // - the last stage holds p micro-batches of chunks 0..v−2 but one of chunk v−1 (each of its
  //   forwards is followed by its backward): p·Σ_{j<v−1} b_j + b_{v−1};
  // - 1F1B (v = 1): p − s micro-batches; GPipe: all m.
  const std::int64_t pp = 4, v = 3, m = 8;
  const std::vector<double> chunk = {5, 7, 11};
  const double equal = 2;
  REQUIRE(peak_held_bytes(pipeline_schedule(Schedule::one_f_one_b, m, pp, v, 0), std::vector<double>(v, equal)) ==
          Approx(pp * (1 + (pp - 1.0) / (pp * v)) * v * equal));
  REQUIRE(peak_held_bytes(pipeline_schedule(Schedule::one_f_one_b, m, pp, v, pp - 1), chunk) == Approx(pp * (5 + 7) + 11));
  for (std::int64_t s = 0; s < pp; ++s)
    REQUIRE(peak_held_bytes(pipeline_schedule(Schedule::one_f_one_b, m, pp, 1, s), {3.0}) == Approx(3.0 * (pp - s)));
  REQUIRE(peak_held_bytes(pipeline_schedule(Schedule::gpipe, m, pp, 1, 2), {3.0}) == Approx(3.0 * m));

  // Llama 3 405B on 16 stages × 4 chunks (Dubey et al. 2024 §3.3.2: the first and last stages one
  // layer short), m = p = 16 micro-batches: stage 15 holds chunks of 2, 2, 2 and 1 layers (L bytes
  // each per micro-batch), the last with the logits, n·V/t fp32: 16·6·L + (L + logits) — where a
  // stage-wide average of ((v − 1)·p + 1)/v micro-batches would give 12.25·(7·L + logits). (With
  // m ≥ 2p the next group's chunk 0 can follow before chunk v − 2's backwards: the order decides.)
  const auto l3 = load_model("llama3-405b");
  Plan p = plan("fsdp=2,tensor=8,pipeline=16", 64, 1, 8192);
  p.tensor_comm = TensorComm::rs_ag;
  p.attention = AttentionKernel::flash;
  p.virtual_stages = 4;
  p.zero_stage = 2;
  const double L = 8192.0 * (2 * (6 * 16384.0 + 2 * 8 * 128 + 3 * 53248.0) + 4 * 128) / 8;
  const double logits = 8192.0 * std::ceil(128256.0 / 8) * 4;
  auto stage_mem = [&](std::int64_t stage) {
    for (const auto& st : stage_summaries(l3, p))
      if (st.stage == stage) return stage_memory({st}, p, ChipSpec{});
    FAIL("no stage " << stage);
    return MemoryBreakdown{};
  };
  p.global_batch = 32;
  REQUIRE(p.micro_batches() == 16);
  REQUIRE(stage_mem(15).activations_bytes == Approx(16 * 6 * L + L + logits).epsilon(1e-12));
  // stage 1, four chunks of 2 layers: all m·v = 64 chunk passes at m = 16 (below the warm-up);
  // Megatron's warm-up (p − 2)·2 + (v − 1)·p chunk passes plus one at m = 32
  REQUIRE(stage_mem(1).activations_bytes == Approx(64 * 2 * L).epsilon(1e-12));
  p.global_batch = 64;
  REQUIRE(stage_mem(1).activations_bytes == Approx((2 * 14 + 3 * 16 + 1) * 2 * L).epsilon(1e-12));

  // gradient_sync last_microbatch: the step end reduce-scatters the whole fp32 gradient after the
  // last backward, when at most one micro-batch's activations are left, so the activation peak
  // sits beside the passes' largest buffer only — the tensor collectives' whole [n, h] bf16.
  p.gradient_sync = GradientSync::last_microbatch;
  p.grad_dtype = GradDType::fp32;
  for (const auto& st : stage_summaries(l3, p))
    if (st.stage == 1) {
      const MemoryBreakdown mem = stage_memory({st}, p, ChipSpec{});
      REQUIRE(mem.buffers_bytes == Approx(8192.0 * 16384 * 2));
      REQUIRE(static_cast<double>(st.local_params) * 4 > mem.activations_bytes / 8);  // the buffer left out is not small
    }
}

TEST_CASE("one device holds every parameter of every preset", "[lower]") {
  // The stage's local parameters (memory and gradient sync) on a 1-device mesh equal the
  // parameter tensor list's total: embedding, learned positions, layers, final norm, head.
  for (const auto& m : all_model_presets()) {
    INFO(m.name);
    const auto st = lower_stage(m, plan("data=1", 1, 1, 64), 0, 0);
    REQUIRE(st.local_params == count_parameters(m).total);
  }
}

TEST_CASE("rs_ag all-reduces the gradients of the norms and the position table once per step", "[lower][transformer]") {
  // Under sequence parallelism the norms run on n/t tokens and the positions are added to them:
  // each tensor rank's gradient of those replicated tensors covers its tokens only (Megatron-LM
  // all-reduces them over the tensor group). GPT-3 175B on one stage: 96 layers × two LayerNorms
  // (scale, bias) + the final LayerNorm + the 2048 × D position table, in the plan's gradient
  // dtype (bf16 parameters: 2 bytes; `dtypes: grads: fp32`: 4). Under allreduce there is no such step.
  const auto m = load_model("gpt3-175b");
  Plan p = plan("tensor=8", 1, 1, 2048);
  auto step_bytes = [&](TensorComm tc) {
    p.tensor_comm = tc;
    double bytes = -1;
    for (const auto& s : lower_stage(m, p, 0, 0).step_end)
      if (s.kind == StepKind::collective && std::strcmp(s.name, "tp.replicated_grads") == 0) {
        CHECK(s.axis == Axis::tensor);
        CHECK(s.comm == CommKind::all_reduce);
        bytes = s.comm_bytes;
      }
    return bytes;
  };
  const double D = static_cast<double>(m.width);
  CHECK(step_bytes(TensorComm::rs_ag) == Approx((96 * 4 * D + 2 * D + 2048 * D) * 2));
  p.grad_dtype = GradDType::fp32;
  CHECK(step_bytes(TensorComm::rs_ag) == Approx((96 * 4 * D + 2 * D + 2048 * D) * 4));
  CHECK(step_bytes(TensorComm::allreduce) == -1);
}

TEST_CASE("a learned position table bounds seq_len for every command, not only the runner", "[plan][transformer]") {
  const auto m = load_model("gpt-tiny");  // max_positions 128
  REQUIRE(m.max_positions == 128);
  Plan p;
  p.global_batch = 2;
  p.micro_batch = 1;
  p.seq_len = m.max_positions;
  CHECK(plan_violation(m, p, 1) == nullptr);
  p.seq_len = m.max_positions + 1;
  const char* rule = plan_violation(m, p, 1);
  REQUIRE(rule != nullptr);
  CHECK(std::string(rule) == "seq_len fits the learned position table");
  CHECK_THROWS_WITH(check_plan(m, p, 1), Catch::Contains("seq_len 129 is longer than the model's learned position table (max_positions 128)"));
  const auto rotary = load_model("transformer-tiny");  // rotary: no table, no bound
  REQUIRE(rotary.max_positions == 0);
  p.seq_len = 1 << 16;
  CHECK(plan_violation(rotary, p, 1) == nullptr);
}
