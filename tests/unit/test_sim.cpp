// tests/unit/test_sim.cpp — the simulator's cost functions against closed forms (DESIGN §5,
// Scaling Book), and the qualitative facts of the Griffin paper.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/cost.hpp"
#include "sim/simulate.hpp"

using namespace scanshard;

namespace {

Plan plan_for(std::string mesh, std::int64_t batch, std::int64_t seq) {
  Plan p;
  p.mesh = parse_mesh(mesh, "--mesh");
  p.global_batch = batch;
  p.micro_batch = batch / p.replicas();
  p.seq_len = seq;
  return p;
}

double step(const char* model, const char* cluster, const Plan& p) {
  return simulate(load_model(model), p, load_cluster(cluster)).step_seconds;
}

// Plan at fixed tokens per batch: batch·seq = tokens.
Plan fixed_tokens(const char* mesh, double tokens, std::int64_t seq) {
  return plan_for(mesh, static_cast<std::int64_t>(tokens / static_cast<double>(seq)), seq);
}

}  // namespace

TEST_CASE("ring all-reduce on a wrapped torus axis matches the closed form", "[sim]") {
  // DESIGN §5: 2(P−1)/P · bytes / bw + 2(P−1) · hop latency, where a wrapped ring uses both
  // directions of every link: bw = 2 × link × network efficiency.
  const auto c = load_cluster("tpu-v5p-4096");
  const Network net(c, parse_mesh("tensor=16,data=256", "--mesh"));
  const auto& ax = net.axis(Axis::tensor);
  const double bytes = 64.0 * 1024 * 1024, P = 16;
  const double bw = 2 * c.topology.link_bytes_per_s * c.chip.efficiency.network;
  REQUIRE(all_reduce_seconds(bytes, ax) == Approx(2 * (P - 1) / P * bytes / bw + 2 * (P - 1) * 1e-6).epsilon(1e-9));
  REQUIRE(all_reduce_seconds(bytes, ax) == Approx(reduce_scatter_seconds(bytes, ax) + all_gather_seconds(bytes, ax)));
}

TEST_CASE("a bandwidth-bound all-gather over a full torus axis costs bytes over bidirectional bandwidth", "[sim]") {
  // Scaling Book (sharding chapter): AllGather over a full axis with wraparound takes
  // ≈ bytes / (2 · link bandwidth) whatever the axis length; a small one is latency-bound.
  const double big = 1e9;
  for (const auto& [cluster, mesh] : {std::pair{"tpu-v5p-256", "tensor=4,data=64"}, std::pair{"tpu-v5p-4096", "tensor=16,data=256"}}) {
    INFO(cluster);
    const auto c = load_cluster(cluster);
    const Network net(c, parse_mesh(mesh, "--mesh"));
    const double ideal = big / (2 * c.topology.link_bytes_per_s * c.chip.efficiency.network);
    const double t = all_gather_seconds(big, net.axis(Axis::tensor));
    REQUIRE(t / ideal > 0.74);  // (P−1)/P ≥ 3/4
    REQUIRE(t / ideal < 1.01);
    const double P = static_cast<double>(net.axis(Axis::tensor).size);
    REQUIRE(all_gather_seconds(1024, net.axis(Axis::tensor)) == Approx((P - 1) * 1e-6).epsilon(0.01));
  }
}

TEST_CASE("without wraparound a ring costs about double", "[sim]") {
  // tpu-v5e-64 is an 8x8 slice without wraparound: the ring's closing hop crosses the line back.
  const auto nowrap = load_cluster("tpu-v5e-64");
  auto wrap = nowrap;
  wrap.topology.wraparound = {true, true};
  const Plan p = plan_for("tensor=8,data=8", 8, 128);
  const double a = all_gather_seconds(1e9, Network(nowrap, p.mesh).axis(Axis::tensor));
  const double b = all_gather_seconds(1e9, Network(wrap, p.mesh).axis(Axis::tensor));
  REQUIRE(a / b > 1.7);  // link load (7 + 7)/8 = 1.75 vs 1
  REQUIRE(a / b < 2.01);
}

TEST_CASE("a one-device mesh prices no communication", "[sim]") {
  auto c = load_cluster("cpu-local");
  c.topology.devices_per_island = 1;
  const auto e = simulate(load_model("griffin-tiny"), plan_for("data=1", 2, 64), c);
  for (Bucket b : {Bucket::comm_data, Bucket::comm_fsdp, Bucket::comm_tensor, Bucket::comm_sequence, Bucket::comm_pipeline, Bucket::bubble})
    REQUIRE(e.seconds[static_cast<int>(b)] == 0);
  REQUIRE(e.step_seconds > 0);
}

TEST_CASE("on TPU-v3 the RG-LRU scan is memory-bound and large GEMMs compute-bound", "[sim]") {
  const auto chip = load_cluster("tpu-v3-256").chip;
  const auto prog = lower(load_model("griffin-1.3b"), plan_for("data=1", 4, 2048), 0);
  bool saw_scan = false, saw_gemm = false;
  for (const auto& s : prog.forward) {
    Step flops_only = s, bytes_only = s;
    flops_only.bytes_read = flops_only.bytes_written = 0;
    bytes_only.matmul_flops = bytes_only.vector_flops = 0;
    const double tf = compute_seconds(flops_only, chip, DType::bf16), tb = compute_seconds(bytes_only, chip, DType::bf16);
    if (std::strcmp(s.op, "rglru.scan") == 0) { saw_scan = true; REQUIRE(tb > 2 * tf); }
    if (std::strcmp(s.name, "mlp.w1") == 0) { saw_gemm = true; REQUIRE(tf > 2 * tb); }
  }
  REQUIRE(saw_scan);
  REQUIRE(saw_gemm);
}

TEST_CASE("a per-kernel efficiency replaces the class value for that op only", "[sim]") {
  // Roofline by hand: max(vector FLOPs / (vector peak · eff), bytes / bandwidth) + launch.
  ChipSpec chip = load_cluster("cpu-local").chip;
  chip.efficiency.scan = 0.5;
  Step s;
  s.cls = OpClass::scan;
  s.op = "wkv4.scan";
  s.vector_flops = 1e9;
  s.bytes_read = 1e3;
  auto by_hand = [&](double eff) {
    return std::max(1e9 / (chip.vector_flops_per_s * eff), 1e3 / (chip.memory_bytes_per_s * chip.efficiency.memory)) +
           chip.launch_overhead_seconds;
  };
  CHECK(compute_seconds(s, chip, DType::fp32) == Approx(by_hand(0.5)).epsilon(1e-12));
  chip.efficiency.ops["wkv4.scan"] = 0.125;
  CHECK(compute_seconds(s, chip, DType::fp32) == Approx(by_hand(0.125)).epsilon(1e-12));
  s.op = "rglru.scan";  // another op of the same class keeps the class value
  CHECK(compute_seconds(s, chip, DType::fp32) == Approx(by_hand(0.5)).epsilon(1e-12));
}

TEST_CASE("a materialized attention core's softmax and dropout passes add to its products, not overlap them", "[sim]") {
  // Megatron-LM's core is QKᵀ (baddbmm), a fused scale-mask-softmax kernel, a dropout kernel and
  // P'·V: kernels one after another. The scores step is max(products, their own bytes) plus the
  // softmax and dropout passes' bytes at the memory bandwidth: 2a + (2a + 1) bytes per (query,
  // key) pair forward with dropout (read scores, write P; read P, write mask and P').
  ModelSpec m = load_model("gpt-tiny");
  m.dropout = 0.1;
  Plan p = plan_for("data=1", 2, 128);
  p.attention = AttentionKernel::materialized;
  const StepProgram prog = lower(m, p, 0);
  const ChipSpec chip = load_cluster("dgx-a100-1").chip;
  int seen = 0;
  for (const auto& s : prog.forward) {
    if (std::string_view(s.op) != "attention.scores") continue;
    ++seen;
    const double pairs = 2.0 * 128 * 128 * m.heads, a = 2;  // batch 2, T = 128, bf16
    REQUIRE(s.unfused_bytes == Approx(pairs * (2 * a + 2 * a + 1)));
    const double bw = chip.memory_bytes_per_s;
    const double rest = s.bytes_read + s.bytes_written - s.unfused_bytes;
    const double products = s.matmul_flops / (chip.peak("bf16") * chip.efficiency.attention) +
                            s.vector_flops / (chip.vector_flops_per_s * chip.efficiency.elementwise);
    CHECK(compute_seconds(s, chip, DType::bf16) ==
          Approx(std::max(products, rest / (bw * chip.efficiency.memory_at(rest))) +
                 s.unfused_bytes / (bw * chip.efficiency.memory_at(s.unfused_bytes)) + chip.launch_overhead_seconds * s.calls)
              .epsilon(1e-12));
  }
  CHECK(seen == m.depth);
  p.attention = AttentionKernel::flash;  // blockwise: one fused kernel, nothing unfused
  for (const auto& s : lower(m, p, 0).forward) CHECK(s.unfused_bytes == 0);
}

TEST_CASE("the fused gelu ⊙ value prices the recurrent gate's two steps and every MLP activation that runs it", "[sim]") {
  // The runner computes rec.gate (gelu) and rec.gated (⊙) in one kernel, gelu_mul, the kernel of
  // the gated MLP's mlp.act too, and of the transformer MLP's plain gelu (gelu_mul without its
  // second operand, train/exec_attention.cpp gelu_act_fwd): its own value must reach those steps of
  // every layer, forward and backward, and leave every other elementwise step at the class value.
  ChipSpec chip = load_cluster("cpu-local").chip;
  const double slow = chip.efficiency.elementwise / 16;
  int tagged = 0;
  for (const char* model : {"griffin-tiny", "gpt-tiny"}) {
    const StepProgram prog = lower(load_model(model), plan_for("data=1", 4, 128), 0);
    for (const auto* list : {&prog.forward, &prog.backward})
      for (const Step& s : *list) {
        if (s.kind != StepKind::compute || s.cls != OpClass::elementwise) continue;
        const bool gate = std::strcmp(s.name, "rec.gate") == 0 || std::strcmp(s.name, "rec.gated") == 0 ||
                          std::strcmp(s.name, "mlp.act") == 0;
        ChipSpec tuned = chip;
        tuned.efficiency.ops["gelu_mul"] = slow;
        Step vector_only = s;  // the compute side alone, so the efficiency decides
        vector_only.bytes_read = vector_only.bytes_written = vector_only.spill_bytes = 0;
        INFO(model << " " << s.name);
        const double calls_s = chip.launch_overhead_seconds * s.calls;  // (rec.gate's call is rec.gated's: none)
        const double base = compute_seconds(vector_only, chip, DType::fp32) - calls_s;
        const double with = compute_seconds(vector_only, tuned, DType::fp32) - calls_s;
        CHECK(with == Approx(gate ? 16 * base : base).epsilon(1e-9));
        tagged += gate;
      }
  }
  // griffin-tiny: 2 recurrent layers x 2 gate steps + 3 MLPs; gpt-tiny: 4 MLPs; forward and backward
  CHECK(tagged == (2 * 2 + 3 + 4) * 2);
}

TEST_CASE("attention_softmax prices the attention core's per-score work and nothing else", "[sim]") {
  // Roofline by hand: matrix FLOPs / (peak · attention) + vector FLOPs / (vector peak · softmax);
  // unset (0), the vector part keeps the elementwise value like every other step with matrix FLOPs.
  ChipSpec chip = load_cluster("cpu-local").chip;
  chip.efficiency.attention = 0.5;
  chip.efficiency.elementwise = 0.25;
  Step s;
  s.cls = OpClass::attention;
  s.op = "attention.global";
  s.matmul_flops = 4e8;
  s.vector_flops = 1e7;
  auto by_hand = [&](double vector_eff) {
    return 4e8 / (chip.peak("fp32") * 0.5) + 1e7 / (chip.vector_flops_per_s * vector_eff) + chip.launch_overhead_seconds;
  };
  CHECK(compute_seconds(s, chip, DType::fp32) == Approx(by_hand(0.25)).epsilon(1e-12));
  chip.efficiency.attention_softmax = 0.02;
  CHECK(compute_seconds(s, chip, DType::fp32) == Approx(by_hand(0.02)).epsilon(1e-12));
  Step g = s;  // a GEMM's vector part (bias, ...) keeps the elementwise value
  g.cls = OpClass::gemm;
  g.op = "linear";
  chip.efficiency.gemm = 0.5;
  CHECK(compute_seconds(g, chip, DType::fp32) == Approx(by_hand(0.25)).epsilon(1e-12));
  // the lowering gives a head-size-16 core twice the per-score work per matrix FLOP of size 32
  auto core_ratio = [](const char* model) {
    double mm = 0, vec = 0;
    const StepProgram prog = lower(load_model(model), plan_for("data=1", 4, 128), 0);
    for (const auto* list : {&prog.forward, &prog.backward})
      for (const Step& st : *list)
        if (st.kind == StepKind::compute && st.cls == OpClass::attention) mm += st.matmul_flops, vec += st.vector_flops;
    return vec / mm;
  };
  CHECK(core_ratio("gpt-tiny") == Approx(2 * core_ratio("mqa-tiny")).epsilon(1e-12));
}

TEST_CASE("the token_shift and ddlerp values price RWKV's shifts and mixes and nothing else", "[sim]") {
  ChipSpec chip = load_cluster("cpu-local").chip;
  int shifts = 0, mixes = 0;
  for (const char* model : {"rwkv4-tiny", "rwkv6-tiny", "griffin-tiny"}) {
    const StepProgram prog = lower(load_model(model), plan_for("data=1", 4, 128), 0);
    for (const auto* list : {&prog.forward, &prog.backward})
      for (const Step& s : *list) {
        if (s.kind != StepKind::compute) continue;
        const std::string name = s.name;
        const bool shift = name == "tm.shift" || name == "cm.shift", mix = name == "tm.mix";
        for (const char* op : {"token_shift", "ddlerp"}) {
          ChipSpec tuned = chip;
          tuned.efficiency.ops[op] = 1e-4;  // far slower than any class value
          Step compute_only = s;
          compute_only.bytes_read = compute_only.bytes_written = compute_only.spill_bytes = 0;
          const bool hit = std::strcmp(op, "token_shift") == 0 ? shift : mix;
          INFO(model << " " << name << " " << op);
          CHECK((compute_seconds(compute_only, tuned, DType::fp32) > compute_seconds(compute_only, chip, DType::fp32)) == hit);
        }
        shifts += shift;
        mixes += mix;
      }
  }
  CHECK(shifts == (2 * 2 + 2 * 2) * 2);  // rwkv4-tiny and rwkv6-tiny: 2 layers x (tm, cm), forward and backward
  CHECK(mixes == 2 * 2);
}

TEST_CASE("a memory-bound step's bandwidth follows the bytes it moves on a memory_curve", "[sim]") {
  ChipSpec chip = load_cluster("cpu-local").chip;
  chip.efficiency.memory_curve = {{1e6, 1.0}, {1e8, 0.25}};
  Step s;
  s.cls = OpClass::elementwise;
  s.vector_flops = 1;  // negligible: the memory side decides
  for (const auto& [bytes, fraction] : {std::pair{5e5, 1.0}, {1e7, 0.625}, {4e8, 0.25}}) {
    s.bytes_read = bytes;
    INFO(bytes << " bytes");
    CHECK(compute_seconds(s, chip, DType::fp32) ==
          Approx(bytes / (chip.memory_bytes_per_s * fraction) + chip.launch_overhead_seconds).epsilon(1e-12));
  }
}

TEST_CASE("the fused scan is priced faster than the naive one and the associative one slower", "[sim]") {
  const auto chip = load_cluster("tpu-v3-256").chip;
  auto scan_seconds = [&](ScanAlgo algo) {
    Plan p = plan_for("data=1", 4, 2048);
    p.scan = algo;
    double t = 0;
    for (const auto& s : lower(load_model("hawk-400m"), p, 0).forward)
      if (s.cls == OpClass::scan) t += compute_seconds(s, chip, DType::bf16);
    return t;
  };
  const double fused = scan_seconds(ScanAlgo::sequential);
  REQUIRE(scan_seconds(ScanAlgo::naive) > 2.5 * fused);  // paper: the fused scan was ~3x faster
  REQUIRE(scan_seconds(ScanAlgo::associative) > 1.2 * fused);
  REQUIRE(scan_seconds(ScanAlgo::associative) < 2.0 * fused);  // paper: up to ~50 % slower
}

TEST_CASE("at fixed tokens per batch MQA slows with sequence length while Griffin stays flat", "[sim]") {
  // Griffin paper Figure 3 setup on TPU-v3, 400M: 2K -> 8K at the same tokens per batch.
  const double tokens = 256.0 * 2048;
  const char* mesh = "data=64,tensor=4";
  const double mqa2 = step("mqa-400m", "tpu-v3-256", fixed_tokens(mesh, tokens, 2048));
  const double mqa8 = step("mqa-400m", "tpu-v3-256", fixed_tokens(mesh, tokens, 8192));
  const double gr2 = step("griffin-400m", "tpu-v3-256", fixed_tokens(mesh, tokens, 2048));
  const double gr8 = step("griffin-400m", "tpu-v3-256", fixed_tokens(mesh, tokens, 8192));
  REQUIRE(mqa8 / mqa2 > 1.1);
  REQUIRE(gr8 / gr2 < 1.03);
  REQUIRE(gr8 < mqa8);
}

TEST_CASE("at 7B and 2K tokens Griffin is not faster than MQA", "[sim]") {
  Plan p = plan_for("data=64,tensor=4", 256, 2048);
  p.remat = Remat::block;
  REQUIRE(step("griffin-7b", "tpu-v3-256", p) >= step("mqa-7b", "tpu-v3-256", p));
}

TEST_CASE("every model preset on every cluster preset gives a finite estimate that adds up", "[sim][property]") {
  for (const auto& c : all_cluster_presets()) {
    for (const auto& m : all_model_presets()) {
      INFO(m.name << " on " << c.name);
      const Plan p = plan_for("data=" + std::to_string(c.devices()), c.devices(), m.width < 512 ? 128 : 2048);
      const auto e = simulate(m, p, c);
      REQUIRE(std::isfinite(e.step_seconds));
      REQUIRE(e.step_seconds > 0);
      REQUIRE(e.tokens_per_s > 0);
      REQUIRE(e.mfu > 0);
      REQUIRE(e.mfu < 1);
      double sum = 0;
      for (double s : e.seconds) { REQUIRE(s >= 0); sum += s; }
      REQUIRE(sum == Approx(e.step_seconds).epsilon(1e-9));
      const auto& mem = e.memory;
      REQUIRE(mem.total_bytes == Approx(mem.params_bytes + mem.grads_bytes + mem.optimizer_bytes + mem.activations_bytes +
                                        mem.state_bytes + mem.buffers_bytes));
      REQUIRE(mem.capacity_bytes == c.chip.memory_bytes);
      REQUIRE(mem.fits == (mem.total_bytes <= 0.9 * c.chip.memory_bytes));  // the limit plan and simulate share
    }
  }
}

TEST_CASE("ZeRO divides optimizer state gradients and parameters by the fsdp size", "[sim]") {
  // DESIGN §5: stage 1 shards optimizer state, 2 also gradients, 3 also parameters.
  const auto m = load_model("griffin-1.3b");
  const auto c = load_cluster("tpu-v5p-256");
  Plan p = plan_for("fsdp=256", 256, 2048);
  p.zero_stage = 0;
  const auto z0 = simulate(m, p, c).memory;
  for (int stage = 1; stage <= 3; ++stage) {
    p.zero_stage = stage;
    const auto z = simulate(m, p, c).memory;
    INFO("stage " << stage);
    REQUIRE(z.optimizer_bytes == Approx(z0.optimizer_bytes / 256));
    REQUIRE(z.grads_bytes == Approx(stage >= 2 ? z0.grads_bytes / 256 : z0.grads_bytes));
    REQUIRE(z.params_bytes == Approx(stage >= 3 ? z0.params_bytes / 256 : z0.params_bytes));
  }
}

// Makespan of m identical jobs through a chain of stages taking t[s] each (a flow shop): job j
// leaves stage s when both job j left stage s − 1 and job j − 1 left stage s.
double flow_shop_makespan(const std::vector<double>& t, int m) {
  std::vector<double> done(t.size(), 0.0);
  for (int j = 0; j < m; ++j)
    for (std::size_t s = 0; s < t.size(); ++s) done[s] = std::max(done[s], s ? done[s - 1] : 0.0) + t[s];
  return done.back();
}

TEST_CASE("the pipeline's micro-batches and bubble take the flow shop's makespan over the stages", "[sim]") {
  // DESIGN §4 (bubble fraction (p−1)/(m+p−1) for equal stages). The stages here are not equal:
  // the first holds the embedding, the last the head and loss (in a 2-stage tiny model the head is
  // a large part of the last stage).
  for (auto [model, mesh, batch, cluster] : {std::tuple{"hawk-1.3b", "pipeline=4,data=64", 256, "tpu-v5p-256"},
                                             std::tuple{"hawk-tiny", "pipeline=2", 4, "cpu-local"},
                                             std::tuple{"mqa-tiny", "pipeline=2", 8, "cpu-local"}}) {
    INFO(model << " " << mesh);
    const ModelSpec m = load_model(model);
    const ClusterSpec c = load_cluster(cluster);
    Plan p = plan_for(mesh, batch, 256);
    p.micro_batch = 1;
    const int mb = static_cast<int>(p.micro_batches());
    const auto stages = stage_summaries(m, p);
    const Network net(Topology(c), c, p.mesh, p.placement);
    std::vector<double> t;  // one micro-batch's forward + backward on each stage alone
    for (const auto& s : stages) t.push_back(price_passes({s}, c, net, p.act_dtype).microbatch_seconds);
    const double slowest = *std::max_element(t.begin(), t.end()), fastest = *std::min_element(t.begin(), t.end());
    REQUIRE(fastest < 0.99 * slowest);  // unequal stages, or the test shows nothing
    const auto e = simulate(m, p, c);
    REQUIRE(e.microbatch_seconds == Approx(slowest));
    REQUIRE(mb * e.microbatch_seconds + e.seconds[static_cast<int>(Bucket::bubble)] ==
            Approx(flow_shop_makespan(t, mb)).epsilon(1e-9));
  }
}

TEST_CASE("ranks wait for the slowest: jitter times the expected maximum of P normals times the step's compute", "[sim]") {
  // Closed forms: E[max of 2 standard normals] = 1/√π, of 3 = 3/(2√π); none for one rank.
  CHECK(expected_max_standard_normal(1) == 0);
  CHECK(expected_max_standard_normal(2) == Approx(1 / std::sqrt(M_PI)).epsilon(1e-4));
  CHECK(expected_max_standard_normal(3) == Approx(1.5 / std::sqrt(M_PI)).epsilon(1e-4));
  for (std::int64_t P = 2; P < 4096; P *= 2) CHECK(expected_max_standard_normal(2 * P) > expected_max_standard_normal(P));
  ClusterSpec c = load_cluster("cpu-local");
  const ModelSpec m = load_model("hawk-tiny");  // depth 2: two pipeline stages
  const int wait = static_cast<int>(Bucket::sync_wait);
  const auto quiet = simulate(m, plan_for("data=2", 4, 128), c);
  CHECK(quiet.seconds[wait] == 0);  // presets: no jitter
  c.chip.compute_jitter = 0.05;
  for (const char* mesh : {"data=2", "tensor=2", "pipeline=2"}) {
    const auto e = simulate(m, plan_for(mesh, 4, 128), c);
    double compute = 0;
    for (Bucket b : {Bucket::gemm, Bucket::attention, Bucket::scan, Bucket::elementwise, Bucket::norm, Bucket::embedding,
                     Bucket::recompute, Bucket::optimizer}) {
      CHECK(is_compute(b));
      compute += e.seconds[static_cast<int>(b)];
    }
    for (Bucket b : {Bucket::comm_data, Bucket::comm_fsdp, Bucket::comm_tensor, Bucket::comm_sequence, Bucket::comm_pipeline,
                     Bucket::bubble, Bucket::sync_wait})
      CHECK(!is_compute(b));
    INFO(mesh);
    CHECK(e.seconds[wait] == Approx(0.05 * compute / std::sqrt(M_PI)).epsilon(1e-3));
  }
  c.topology.devices_per_island = 1;  // one rank waits for nobody
  CHECK(simulate(m, plan_for("data=1", 4, 128), c).seconds[wait] == 0);
}

TEST_CASE("collective prices as lines equal the collective prices", "[sim]") {
  // The planner's bounds price collectives as fixed + per_byte · bytes (cost.hpp).
  for (const char* name : {"tpu-v5p-256", "tpu-v5e-64", "dgx-h100-32", "cpu-local"}) {
    const auto c = load_cluster(name);
    for (const char* mesh : {"data=2", "tensor=4,data=2", "fsdp=16", "sequence=8,tensor=8", "pipeline=2,data=4,tensor=4"}) {
      Mesh m = parse_mesh(mesh, "--mesh");
      if (c.devices() % m.devices() != 0) continue;
      m[Axis::data] *= c.devices() / m.devices();
      const Network net(c, m);
      for (int a = 0; a < kAxisCount; ++a) {
        const AxisNetwork& n = net.axis(static_cast<Axis>(a));
        INFO(name << " " << m.describe() << " axis " << to_string(static_cast<Axis>(a)));
        const CommLine g = all_gather_line(n), h = p2p_hop_line(n);
        for (double bytes : {1.0, 4096.0, 3e8}) {
          CHECK(g.fixed + g.per_byte * bytes == Approx(all_gather_seconds(bytes, n)).epsilon(1e-12).margin(1e-300));
          CHECK(2 * (g.fixed + g.per_byte * bytes) == Approx(all_reduce_seconds(bytes, n)).epsilon(1e-12).margin(1e-300));
          CHECK(3 * (h.fixed + h.per_byte * bytes) == Approx(p2p_seconds(bytes, 3, n)).epsilon(1e-12).margin(1e-300));
        }
      }
    }
  }
}

TEST_CASE("a data axis over islands runs one ring at min(NVLink, NICs per island), not level after level", "[sim]") {
  // 4 DGX A100 nodes, data = 32: 8 members per island, 4 islands. NCCL's ring through all 32
  // members is pipelined over NVLink and the eight NICs of each node, so an all-reduce of S bytes
  // (reduce-scatter + all-gather) takes 2·(31/32)·S / min(island busbw, 8 × NIC busbw), plus the
  // ring's 31 steps' latencies: 3 of them between nodes, 28 inside (NCCL's tuning model).
  const ClusterSpec c = load_cluster("dgx-a100-4");
  const auto& t = c.topology;
  REQUIRE(t.island_busbw_bytes_per_s > 0);
  REQUIRE(t.network_busbw_bytes_per_s > 0);
  const double S = 3.4e9;
  const double latency = 4 * 7 * 2 * t.island_latency_seconds + 3 * (2 * t.network_latency_seconds + 2 * t.island_latency_seconds);
  {
    const Network net(c, parse_mesh("data=32", "--mesh"));
    const double ring = std::min(t.island_busbw_bytes_per_s, 8 * t.network_busbw_bytes_per_s);
    CHECK(ring == 8 * t.network_busbw_bytes_per_s);  // the NICs bound it: 192 < 232.5 GB/s
    CHECK(all_reduce_seconds(S, net.axis(Axis::data)) == Approx(2 * (31.0 / 32 * S / ring + latency)).epsilon(1e-12));
    // the bus bandwidth nccl-tests would report for it, algbw · 2(P−1)/P: 8 × NIC busbw, less
    // the ring latency's share (0.4 % at 3.4 GB)
    const double busbw = S / all_reduce_seconds(S, net.axis(Axis::data)) * 2 * 31 / 32;
    CHECK(busbw < 8 * t.network_busbw_bytes_per_s);
    CHECK(busbw == Approx(8 * t.network_busbw_bytes_per_s).epsilon(1e-2));
  }
  {  // tensor = 2 inside the node: the data ring has 4 members per node, driving 4 NICs
    const Network net(c, parse_mesh("tensor=2,data=16", "--mesh"));
    const double ring = std::min(t.island_busbw_bytes_per_s, 4 * t.network_busbw_bytes_per_s);
    const double lat = 4 * 3 * 2 * t.island_latency_seconds + 3 * (2 * t.network_latency_seconds + 2 * t.island_latency_seconds);
    CHECK(all_gather_seconds(S, net.axis(Axis::data)) == Approx(15.0 / 16 * S / ring + lat).epsilon(1e-12));
  }
  {  // tensor = 8 fills the node: one data member per node, a ring over the NICs alone
    const Network net(c, parse_mesh("tensor=8,data=4", "--mesh"));
    const double lat = 3 * (2 * t.network_latency_seconds + 2 * t.island_latency_seconds);
    CHECK(all_reduce_seconds(S, net.axis(Axis::data)) == Approx(2 * (0.75 * S / t.network_busbw_bytes_per_s + lat)).epsilon(1e-12));
    // inside the node, the tensor axis runs at the measured NVLink busbw
    CHECK(all_gather_seconds(S, net.axis(Axis::tensor)) ==
          Approx(7.0 / 8 * S / t.island_busbw_bytes_per_s + 7 * 2 * t.island_latency_seconds).epsilon(1e-12));
  }
}

TEST_CASE("a ring through N islands has P - 1 steps, N - 1 of them between islands (NCCL's latency model)", "[sim]") {
  // NCCL src/graph/tuning.cc prices a ring all-gather / reduce-scatter over nRanks ranks on nNodes
  // nodes as (nsteps - nInterSteps)·intraLat + nInterSteps·interLat with nsteps = nRanks - 1 and
  // nInterSteps = nNodes - 1: the fixed part of scanshard's price line. A step inside a
  // node costs 2 × island latency (there and back through the NVSwitch), one between nodes adds
  // 2 × network latency.
  for (std::int64_t nodes : {2, 4, 16, 128}) {
    const ClusterSpec c = load_cluster("dgx-a100-" + std::to_string(nodes));
    const auto& t = c.topology;
    const double intra = 2 * t.island_latency_seconds, inter = 2 * t.network_latency_seconds + intra;
    for (std::int64_t inside : {8, 4, 2}) {
      const std::int64_t P = nodes * inside;
      const std::string mesh = (inside == 8 ? std::string() : "tensor=" + std::to_string(8 / inside) + ",") + "fsdp=" + std::to_string(P);
      const Network net(c, parse_mesh(mesh, "--mesh"));
      const AxisNetwork& ax = net.axis(Axis::fsdp);
      REQUIRE(ax.size == P);
      REQUIRE(ax.ring_bytes_per_s > 0);
      const double nccl = static_cast<double>((P - 1) - (nodes - 1)) * intra + static_cast<double>(nodes - 1) * inter;
      CHECK(all_gather_line(ax).fixed == Approx(nccl).epsilon(1e-12));
      // one byte: the latency plus that byte's share of the ring's bandwidth
      const double one = (static_cast<double>(P) - 1) / static_cast<double>(P) / ax.ring_bytes_per_s;
      CHECK(all_gather_seconds(1, ax) == Approx(nccl + one).epsilon(1e-12));
      CHECK(reduce_scatter_seconds(1, ax) == Approx(nccl + one).epsilon(1e-12));
      CHECK(all_reduce_seconds(1, ax) == Approx(2 * (nccl + one)).epsilon(1e-12));  // nsteps 2(nRanks - 1), nInterSteps 2(nNodes - 1)
    }
  }
}

TEST_CASE("measured bus bandwidths price collectives, link x network efficiency without them, and p2p keeps the link", "[sim]") {
  const std::string head =
      "name: two-nodes\nchip: a100-sxm-80gb\ntopology: {kind: islands, islands: 2, devices_per_island: 4,\n"
      "  island_link_bytes_per_s: 3.0e11, island_latency_seconds: 2.0e-6, network_bytes_per_s: 2.5e10,\n"
      "  network_latency_seconds: 5.0e-6";
  const ClusterSpec plain = parse_cluster_text(head + "}\n", "plain.yaml");
  const ClusterSpec measured =
      parse_cluster_text(head + ", island_busbw_bytes_per_s: 1.0e11, network_busbw_bytes_per_s: 4.0e10}\n", "measured.yaml");
  const double eff = plain.chip.efficiency.network, S = 1e9, il = 2e-6, nl = 5e-6;
  const Mesh mesh = parse_mesh("data=8", "--mesh");
  // one ring over 8 members, 4 per island: min(island rate, 4 × NIC rate); 7 steps, 1 between islands
  CHECK(all_gather_seconds(S, Network(plain, mesh).axis(Axis::data)) ==
        Approx(7.0 / 8 * S / std::min(3e11 * eff, 4 * 2.5e10 * eff) + 2 * 3 * 2 * il + (2 * nl + 2 * il)).epsilon(1e-12));
  // measured: the island's 100 GB/s now binds (4 × 40 = 160 GB/s of NICs)
  CHECK(all_gather_seconds(S, Network(measured, mesh).axis(Axis::data)) ==
        Approx(7.0 / 8 * S / 1e11 + 2 * 3 * 2 * il + (2 * nl + 2 * il)).epsilon(1e-12));
  // pipeline = 2 outermost: a neighbour in the other island, sent at the NIC's link × efficiency
  const Mesh pipe = parse_mesh("data=4,pipeline=2", "--mesh");
  for (const ClusterSpec* c : {&plain, &measured})
    CHECK(p2p_seconds(S, 1, Network(*c, pipe).axis(Axis::pipeline)) == Approx(2 * nl + 2 * il + S / (2.5e10 * eff)).epsilon(1e-12));
}

namespace {
// Two 4x4 wrapped torus pods (32 chips) joined by a datacenter network.
ClusterSpec two_pods() {
  return parse_cluster_text(
      "name: two-pods\nchip: tpu-v4\ntopology: {kind: torus, dims: [4, 4], wraparound: true, link_bytes_per_s: 4.5e10,\n"
      "  hop_latency_seconds: 1.0e-6, pods: 2, dcn_bytes_per_s: 2.0e9, dcn_latency_seconds: 1.0e-5}\n",
      "two-pods.yaml");
}
}  // namespace

TEST_CASE("torus pods over DCN: an axis inside a pod prices as on one pod, one across pods adds a DCN level on its share", "[sim]") {
  const ClusterSpec c = two_pods();
  REQUIRE(c.devices() == 32);
  REQUIRE(c.topology.describe() == "2 pods x torus 4x4 (wrap) over DCN");
  const auto& t = c.topology;
  const double eff = c.chip.efficiency.network, S = 1e8;
  const double ici = 2 * t.link_bytes_per_s * eff, dcn = t.dcn_bytes_per_s * eff;
  // data = 2 is outermost (stride 16): one rank per pod, the ring is DCN only.
  {
    const Network net(c, parse_mesh("tensor=4,fsdp=4,data=2", "--mesh"));
    CHECK(all_reduce_seconds(S, net.axis(Axis::data)) == Approx(2 * (0.5 * S / dcn + t.dcn_latency_seconds)).epsilon(1e-12));
    // the inside axes see exactly what one pod gives them
    const ClusterSpec one = cluster_slice(c, 16);
    REQUIRE(one.topology.pods == 1);
    const Network alone(one, parse_mesh("tensor=4,fsdp=4", "--mesh"));
    for (Axis a : {Axis::tensor, Axis::fsdp})
      CHECK(all_reduce_seconds(S, net.axis(a)) == Approx(all_reduce_seconds(S, alone.axis(a))).epsilon(1e-12));
    CHECK(all_reduce_seconds(S, net.axis(Axis::fsdp)) == Approx(2 * (0.75 * S / ici + 3 * t.hop_latency_seconds)).epsilon(1e-12));
    // neighbours in different pods send over DCN
    CHECK(p2p_seconds(S, 1, net.axis(Axis::data)) == Approx(t.dcn_latency_seconds + S / dcn).epsilon(1e-12));
  }
  // fsdp = 8 with tensor = 4 innermost: 4 members along a full torus dimension in each pod, then
  // 2 pods: reduce-scatter + all-gather, the ICI ring over the whole buffer, DCN over a quarter.
  {
    const Network net(c, parse_mesh("tensor=4,fsdp=8", "--mesh"));
    const double expect = 2 * (0.75 * S / ici + 3 * t.hop_latency_seconds + 0.5 * (S / 4) / dcn + t.dcn_latency_seconds);
    CHECK(all_reduce_seconds(S, net.axis(Axis::fsdp)) == Approx(expect).epsilon(1e-12));
  }
  // an axis that does not split evenly over the pods (3 ranks on 2 pods) rings at the DCN rate at every step
  {
    const Network net(c, parse_mesh("tensor=8,fsdp=3", "--mesh"));
    CHECK(all_reduce_seconds(S, net.axis(Axis::fsdp)) == Approx(2 * (2.0 / 3 * S / dcn + 2 * t.dcn_latency_seconds)).epsilon(1e-12));
  }
  // slices: whole pods, or a part of one
  CHECK(cluster_slice(c, 32).topology.pods == 2);
  CHECK_THROWS_WITH(cluster_slice(c, 24), Catch::Contains("neither part of one pod nor whole pods of 16"));
}

TEST_CASE("a pass prices compute and exposed communication, and hides overlappable communication behind its compute", "[sim]") {
  // pass_seconds (a layer's forward or backward, as validate --published prices Korthikanti's
  // per-layer times): Σ compute + Σ exposed comm + max(0, Σ overlappable comm − Σ compute).
  const auto m = load_model("megatron-22b");
  const auto c = load_cluster("dgx-a100-1");
  Plan p = plan_for("tensor=8", 4, 2048);
  p.tensor_comm = TensorComm::rs_ag;  // its backward re-gathers the input, overlappable
  const auto st = lower_stage(m, p, 0, 0);
  const Network net(c, p.mesh);
  const auto& bwd = st.groups.at(0).lowered->backward;
  const auto each = step_seconds(bwd, c, net, p.act_dtype);
  double compute = 0, exposed = 0, hidden = 0;
  for (std::size_t i = 0; i < bwd.size(); ++i)
    (bwd[i].kind == StepKind::compute ? compute : bwd[i].overlappable ? hidden : exposed) += each[i];
  REQUIRE(hidden > 0);
  // The hidden all-gather slows the compute beside it by the chip's overlap_compute_slowdown s:
  // the compute done while it runs is hidden/(1+s), the rest at the full rate after it.
  const double s = c.chip.overlap_compute_slowdown;
  REQUIRE(s > 0);
  REQUIRE(hidden < compute);
  const double overlapped = hidden + (compute - hidden / (1 + s));
  REQUIRE(pass_seconds(bwd, c, net, p.act_dtype) == Approx(compute + exposed + std::max(0.0, overlapped - compute)).epsilon(1e-12));
  ClusterSpec free_overlap = c;
  free_overlap.chip.overlap_compute_slowdown = 0;
  REQUIRE(pass_seconds(bwd, free_overlap, net, p.act_dtype) == Approx(compute + exposed + std::max(0.0, hidden - compute)).epsilon(1e-12));
}

TEST_CASE("overlapped compute and communication: compute slowed while the communication runs, work conserved", "[sim]") {
  // Independent reference: a time-stepped simulation of the two streams (compute progresses at
  // 1/(1+s) per unit of time while communication remains, at 1 afterwards).
  auto stepped = [](double compute, double comm, double s) {
    const double dt = 1e-5;
    double t = 0, done = 0;
    while (done < compute || t < comm) {
      done += (t < comm ? 1 / (1 + s) : 1.0) * dt;
      t += dt;
    }
    return t;
  };
  for (double s : {0.0, 0.189, 0.4})
    for (auto [compute, comm] : {std::pair{1.0, 0.3}, {1.0, 1.0}, {1.0, 1.1}, {0.5, 2.0}, {1.0, 0.0}}) {
      INFO("s " << s << " compute " << compute << " comm " << comm);
      CHECK(overlapped_seconds(compute, comm, s) == Approx(stepped(compute, comm, s)).margin(2e-5));
    }
  CHECK(overlapped_seconds(1.0, 0.4, 0.0) == 1.0);  // free overlap: the longer one
  CHECK(overlapped_seconds(0.3, 1.0, 0.0) == 1.0);
}

TEST_CASE("async tensor-parallel collectives save 1/(1 + s) of their time from a backward pass that can hide them", "[sim]") {
  // Korthikanti et al. 2022 Table 4's layer (22B, t = 8 on one DGX A100, micro-batch 4 × 2048):
  // the two input-gradient all-reduces of [B·T, D] run beside the weight-gradient GEMMs. Each
  // is a ring over the 8 GPUs: 2·(7/8·S/busbw + 7·2·latency). Hidden behind compute C, a
  // collective of time A < C·(1 + s) costs A·s/(1 + s) (the compute's slowdown beside it), so the
  // pass is A/(1 + s) shorter than with both all-reduces exposed.
  const auto m = load_model("megatron-22b");
  const auto c = load_cluster("dgx-a100-1");
  Plan p = plan_for("tensor=8", 4, 2048);
  const Network net(c, p.mesh);
  const double S = 4.0 * 2048 * 6144 * 2;
  const auto& t = c.topology;
  const double A = 2 * 2 * (7.0 / 8 * S / t.island_busbw_bytes_per_s + 7 * 2 * t.island_latency_seconds);
  const double s = c.chip.overlap_compute_slowdown;
  const double sync = pass_seconds(lower_stage(m, p, 0, 0).groups.at(0).lowered->backward, c, net, p.act_dtype);
  p.async_tensor_comm = true;
  const auto st_async = lower_stage(m, p, 0, 0);
  const auto& bwd = st_async.groups.at(0).lowered->backward;
  double compute = 0;
  for (const auto& st : bwd) compute += st.kind == StepKind::compute ? compute_seconds(st, c.chip, p.act_dtype) : 0.0;
  REQUIRE(A < compute * (1 + s));
  CHECK(sync - pass_seconds(bwd, c, net, p.act_dtype) == Approx(A / (1 + s)).epsilon(1e-9));
}

TEST_CASE("a named attention kernel is priced at its measured forward + backward rate, softmax included", "[sim]") {
  // Dao 2023 (FlashAttention-2) Fig. 4 times the whole kernel, forward + backward, and counts
  // 4·N FLOPs per (query, key) pair forward and 2.5× that backward: at rate r the core of one
  // layer takes 3.5 · 4·N·pairs·H·B / r, with nothing added for the softmax. Pairs: the causal
  // keys over whole query tiles of 32 (program/lower), counted here by a plain loop.
  const ModelSpec m = load_model("mpt-125m");
  const std::int64_t T = 2048, B = 2;
  Plan p = plan_for("data=1", B, T);
  const ChipSpec chip = load_cluster("mosaicml-a100-40gb-1").chip;
  const double eff = chip.efficiency.attention_kernels.at("flash_triton");
  REQUIRE(eff == Approx(79.0 / 312).epsilon(1e-3));  // (77 + 81) / 2 TFLOP/s over the 312 TFLOP/s peak
  double pairs = 0;
  for (std::int64_t q0 = 0; q0 < T; q0 += 32) pairs += 32.0 * static_cast<double>(std::min(q0 + 32, T));
  int tagged = 0;
  auto core_seconds = [&](AttentionKernel k, const ChipSpec& c) {
    p.attention = k;
    const StepProgram prog = lower(m, p, 0);
    double seconds = 0;
    tagged = 0;
    for (const auto* list : {&prog.forward, &prog.backward})
      for (const Step& s : *list) {
        if (s.kind != StepKind::compute || s.cls != OpClass::attention) continue;
        seconds += compute_seconds(s, c, DType::bf16) - c.launch_overhead_seconds * s.calls;
        tagged += s.kernel != nullptr && std::string_view(s.kernel) == "flash_triton";
      }
    return seconds;
  };
  const double H = static_cast<double>(m.heads), N = static_cast<double>(m.head_dim);
  const double by_hand = static_cast<double>(m.depth) * 3.5 * 4 * N * pairs * H * B / (chip.peak("bf16") * eff);
  CHECK(core_seconds(AttentionKernel::flash_triton, chip) == Approx(by_hand).epsilon(1e-9));
  CHECK(tagged == 3 * m.depth);  // forward, backward and the backward's recomputed scores
  // plain flash: the class value for the products, the per-score work at the elementwise value
  const double plain = core_seconds(AttentionKernel::flash, chip);
  CHECK(tagged == 0);
  double vector_flops = 0;
  {
    const StepProgram prog = lower(m, p, 0);
    for (const auto* list : {&prog.forward, &prog.backward})
      for (const Step& s : *list)
        if (s.kind == StepKind::compute && s.cls == OpClass::attention) vector_flops += s.vector_flops;
  }
  CHECK(plain == Approx(by_hand * eff / chip.efficiency.attention +
                        vector_flops / (chip.vector_flops_per_s * chip.efficiency.elementwise))
                     .epsilon(1e-9));
  // a chip without a measured rate for the kernel prices it as plain flash
  ChipSpec unmeasured = chip;
  unmeasured.efficiency.attention_kernels.clear();
  CHECK(core_seconds(AttentionKernel::flash_triton, unmeasured) == Approx(plain).epsilon(1e-12));
}

// Wave quantization (NVIDIA "Matrix Multiplication Background" §3): on A100 (108 SMs, 128 x 256
// tiles) a GEMM costs ceil(tiles / 108) waves of 108 tiles, each tile 2·128·256·k FLOPs.
TEST_CASE("a GPU GEMM is priced by whole waves of 128 x 256 tiles over the SMs", "[sim]") {
  const ChipSpec a100 = load_cluster("dgx-a100-1").chip;
  REQUIRE(a100.sm_count == 108);
  REQUIRE(a100.matrix_tile == 1);
  const double tile = 128.0 * 256.0;
  auto flops = [](double m, double n, double k) { return 2 * m * n * k; };
  // 2048 x 6912: 16 x 27 = 432 tiles = 4 full waves, nothing wasted
  CHECK(wave_padded_gemm_flops(flops(2048, 6912, 2304), 2048, 6912, 2304, a100) == Approx(flops(2048, 6912, 2304)));
  // 2048 x 2304: 16 x 9 = 144 tiles (either orientation) → 2 waves = 216 tile slots
  CHECK(wave_padded_gemm_flops(flops(2048, 2304, 4096), 2048, 2304, 4096, a100) == Approx(216 * tile * 2 * 4096));
  // 2000 x 2000: 128 x 256 gives 16 x 8 = 128 tiles → 2 waves; 256 x 128 gives 8 x 16 = 128 too
  CHECK(wave_padded_gemm_flops(flops(2000, 2000, 1024), 2000, 2000, 1024, a100) == Approx(216 * tile * 2 * 1024));
  // 300 x 600: 128 x 256 → 3 x 3 = 9 tiles, 256 x 128 → 2 x 5 = 10; one wave either way, split-K into
  // min(⌊108/9⌋, ⌊4096/256⌋) = 12 slices → 108 units, 1 wave of k/12 against ⌊108/10⌋ = 10 → 100 units
  CHECK(wave_padded_gemm_flops(flops(300, 600, 4096), 300, 600, 4096, a100) == Approx(108 * tile * 2 * 4096 / 12.0));
  // a weight gradient 768 x 768 with k = 32768 tokens: 6 x 3 = 18 tiles, 6 slices fill one wave exactly
  CHECK(wave_padded_gemm_flops(flops(768, 768, 32768), 768, 768, 32768, a100) == Approx(flops(768, 768, 32768)));
  // split-K is capped at k / 256 slices: 1 tile, k = 512 → 2 slices, 1 wave of k/2
  CHECK(wave_padded_gemm_flops(flops(100, 100, 512), 100, 100, 512, a100) == Approx(108 * tile * 2 * 256));
  // a batched GEMM: 4 groups of 2048 x 2304 → 576 tiles → 6 waves = 648 slots
  CHECK(wave_padded_gemm_flops(4 * flops(2048, 2304, 64), 2048, 2304, 64, a100) == Approx(648 * tile * 2 * 64));
  // no wave model (a chip without sm_count) leaves the FLOPs alone
  ChipSpec plain = a100;
  plain.sm_count = 0;
  CHECK(wave_padded_gemm_flops(flops(300, 600, 4096), 300, 600, 4096, plain) == flops(300, 600, 4096));
  // compute_seconds uses it: a compute-bound 2048 x 2304 x 4096 GEMM at 1.5 x its FLOPs
  Step s;
  s.kind = StepKind::compute;
  s.cls = OpClass::gemm;
  s.m = 2048, s.n = 2304, s.k = 4096;
  s.matmul_flops = flops(2048, 2304, 4096);
  s.bytes_read = 2.0 * (2048 * 4096 + 4096 * 2304), s.bytes_written = 2.0 * 2048 * 2304;
  const double expect = 216 * tile * 2 * 4096 / (3.12e14 * a100.efficiency.gemm) + a100.launch_overhead_seconds;
  CHECK(compute_seconds(s, a100, DType::bf16) == Approx(expect));
  // a GEMV (one row: a decode step's linear) is not cut into tiles: its plain FLOPs, or its memory
  Step v = s;
  v.m = 1;
  v.matmul_flops = flops(1, 2304, 4096);
  v.bytes_read = 2.0 * (4096 + 4096 * 2304), v.bytes_written = 2.0 * 2304;
  const double gemv_matrix = v.matmul_flops / (3.12e14 * a100.efficiency.gemm);
  const double gemv_memory = (v.bytes_read + v.bytes_written) / (a100.memory_bytes_per_s * a100.efficiency.gemv_memory_at(v.bytes_read + v.bytes_written));
  CHECK(compute_seconds(v, a100, DType::bf16) == Approx(std::max(gemv_matrix, gemv_memory) + a100.launch_overhead_seconds));
}

TEST_CASE("train metrics over the logits add their memory-bound passes to the step, once per micro-batch", "[sim]") {
  // Plan::logit_metrics on one A100 40GB: each metric moves n·V·(2 + 4 + 4 + 4) bytes (bf16 logits
  // read, fp32 copy written and read, fp32 log-probabilities written) at the chip's HBM rate times
  // its streaming fraction, plus three kernel launches; its vector work (6 FLOPs per logit at
  // 19.5 TFLOP/s) is far below that. m micro-batches, M metrics: the step grows by m·M of them.
  const ModelSpec m = load_model("mpt-125m");
  const ClusterSpec c = cluster_slice(load_cluster("mosaicml-a100-40gb-1"), 1);  // one GPU: no communication
  const ChipSpec& chip = c.chip;
  const std::int64_t T = 2048, mb = 4, micro_batches = 3;
  Plan p = plan_for("data=1", mb * micro_batches, T);
  p.micro_batch = mb;
  const double base = simulate(m, p, c).step_seconds;
  p.logit_metrics = 2;
  const double with = simulate(m, p, c).step_seconds;
  const double logits = static_cast<double>(mb * T * m.vocab);
  const double bytes = logits * 14;
  const double one = bytes / (chip.memory_bytes_per_s * chip.efficiency.memory_at(bytes)) + 3 * chip.launch_overhead_seconds;
  REQUIRE(6 * logits / (chip.vector_flops_per_s * chip.efficiency.elementwise) < bytes / chip.memory_bytes_per_s);
  CHECK(with - base == Approx(static_cast<double>(micro_batches) * 2 * one).epsilon(1e-6));
}
