// tests/unit/test_planner.cpp — the planner finds answers that are known analytically, never
// returns an illegal or over-memory plan, explains rejections, and is deterministic.
#include <catch2/catch.hpp>

#include <random>
#include <set>

#include "planner/search.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/simulate.hpp"

using namespace scanshard;

namespace {
SearchOptions opts(std::int64_t batch, std::int64_t seq) {
  SearchOptions o;
  o.global_batch = batch;
  o.seq_len = seq;
  o.top = 5;
  return o;
}
}  // namespace

TEST_CASE("a compute-bound model on a small slice is sharded over the batch only", "[planner]") {
  // Hawk-100M with 512 sequences on 64 chips: 8 sequences of 2K per chip keep every GEMM large;
  // tensor, sequence or pipeline sharding only add communication or bubbles.
  const auto r = search(load_model("hawk-100m"), load_cluster("tpu-v5e-64"), opts(512, 2048));
  REQUIRE(!r.top.empty());
  const auto& mesh = r.top.front().plan.mesh;
  CHECK(mesh[Axis::tensor] == 1);
  CHECK(mesh[Axis::sequence] == 1);
  CHECK(mesh[Axis::pipeline] == 1);
  CHECK(mesh[Axis::data] * mesh[Axis::fsdp] == 64);
}

TEST_CASE("tensor parallelism is not chosen beyond the Scaling-Book threshold", "[planner]") {
  // Scaling Book (training chapter): Megatron sharding of an MLP of width F over t chips stays
  // compute-bound while F / t > C / W_ici. TPU v5p: C = 4.59e14 FLOP/s, W_ici = 2 × 9e10 B/s
  // (bidirectional) -> F / t > 2550. Griffin-400M has F = 4608, so t = 2 is the most that can
  // pay off and larger t is comm-bound.
  const auto c = load_cluster("tpu-v5p-256");
  const double threshold = c.chip.peak("bf16") / (2 * c.topology.link_bytes_per_s);
  const auto m = load_model("griffin-400m");
  REQUIRE(static_cast<double>(m.mlp_width) / 4 < threshold);
  const auto r = search(m, c, opts(256, 2048));
  REQUIRE(!r.top.empty());
  CHECK(r.top.front().plan.mesh[Axis::tensor] <= 2);
  // and the simulator agrees that at t = 4 the tensor all-reduces outweigh a chip's MLP GEMMs.
  Plan p = r.top.front().plan;
  p.mesh = parse_mesh("tensor=4,data=64", "--mesh");
  p.zero_stage = 0;
  p.micro_batch = 4;
  const auto e = simulate(m, p, c);
  CHECK(e.seconds[static_cast<int>(Bucket::comm_tensor)] > 0.2 * e.seconds[static_cast<int>(Bucket::gemm)]);
}

TEST_CASE("long-sequence Griffin shards the sequence when activations would not fit otherwise", "[planner]") {
  // Griffin-1.3B, 8 sequences of 64K tokens on 64 TPU v5e chips (16 GiB): at most 8 replicas,
  // and without sequence sharding the per-chip activations only fit with heavy tensor sharding.
  const auto m = load_model("griffin-1.3b");
  const auto c = load_cluster("tpu-v5e-64");
  const auto r = search(m, c, opts(8, 65536));
  REQUIRE(!r.top.empty());
  CHECK(r.top.front().plan.mesh[Axis::sequence] > 1);
  SearchOptions no_seq = opts(8, 65536);
  no_seq.fixed[static_cast<int>(Axis::sequence)] = 1;
  const auto r1 = search(m, c, no_seq);
  REQUIRE(!r1.top.empty());
  CHECK(r1.top.front().step_seconds > 1.5 * r.top.front().step_seconds);
}

TEST_CASE("plans returned are legal and fit for random models clusters and batches", "[planner][property]") {
  std::mt19937 rng(12345);
  const std::vector<std::string> models = {"griffin-tiny", "hawk-tiny", "mqa-tiny", "rwkv4-tiny", "rwkv6-tiny", "griffin-100m", "rwkv4-169m", "mqa-200m"};
  const std::vector<std::string> clusters = {"cpu-local", "tpu-v5e-64", "tpu-v3-256"};
  for (int i = 0; i < 12; ++i) {
    const auto m = load_model(models[rng() % models.size()]);
    const auto c = load_cluster(clusters[rng() % clusters.size()]);
    const std::int64_t batch = c.devices() * (1 + static_cast<std::int64_t>(rng() % 4));
    const std::int64_t seq = 256 << (rng() % 3);
    INFO(m.name << " on " << c.name << " batch " << batch << " seq " << seq);
    SearchOptions o = opts(batch, seq);
    o.max_memory_fraction = 0.5;
    const auto r = search(m, c, o);
    REQUIRE(!r.top.empty());
    for (const auto& cand : r.top) {
      REQUIRE(plan_violation(m, cand.plan, c.devices()) == nullptr);
      const auto e = simulate(m, cand.plan, c);  // the CLI's path prices it the same
      REQUIRE(e.step_seconds == Approx(cand.step_seconds).epsilon(1e-9));
      REQUIRE(e.memory.total_bytes <= 0.5 * c.chip.memory_bytes);
    }
    for (std::size_t k = 1; k < r.pareto.size(); ++k) {  // front: more memory buys a faster step
      REQUIRE(r.pareto[k].memory_bytes >= r.pareto[k - 1].memory_bytes);
      REQUIRE(r.pareto[k].step_seconds < r.pareto[k - 1].step_seconds);
    }
  }
}

TEST_CASE("the search is deterministic", "[planner]") {
  const auto m = load_model("griffin-100m");
  const auto c = load_cluster("tpu-v5e-64");
  const auto a = search(m, c, opts(128, 2048)), b = search(m, c, opts(128, 2048));
  REQUIRE(a.top.size() == b.top.size());
  for (std::size_t i = 0; i < a.top.size(); ++i) {
    REQUIRE(plan_to_yaml(a.top[i].plan) == plan_to_yaml(b.top[i].plan));
    REQUIRE(a.top[i].step_seconds == b.top[i].step_seconds);
  }
  REQUIRE(a.why_not == b.why_not);
}

TEST_CASE("impossible constraints and hopeless searches explain themselves", "[planner]") {
  const auto m = load_model("griffin-tiny");
  auto c = load_cluster("tpu-v5e-64");
  SearchOptions o = opts(64, 128);
  o.fixed[static_cast<int>(Axis::tensor)] = 3;
  REQUIRE_THROWS_AS(search(m, c, o), ConfigError);
  // A 14B model cannot fit on 8 GPUs' worth of 1 GB chips: no plan, but a reason per family.
  auto tiny_memory = load_cluster("dgx-h100-32");
  tiny_memory.chip.memory_bytes = 1e9;
  tiny_memory.topology.islands = 1;
  const auto r = search(load_model("griffin-14b"), tiny_memory, opts(8, 2048));
  REQUIRE(r.top.empty());
  REQUIRE(!r.why_not.empty());
  bool memory_reason = false;
  for (const auto& w : r.why_not) memory_reason = memory_reason || w.find("GiB") != std::string::npos;
  REQUIRE(memory_reason);
}

TEST_CASE("why-not lines name the cost that binds: recompute for block remat, tensor communication for tensor sharding", "[planner]") {
  // griffin-tiny on this machine's two cores (the demo's search): keeping only each layer's input
  // costs a recomputed forward, and tensor sharding costs its all-reduces — each family's line must
  // name that bucket, the one that grew most against the winner, not merely a large one.
  const auto r = search(load_model("griffin-tiny"), load_cluster("cpu-local"), opts(8, 128));
  REQUIRE(!r.top.empty());
  auto line = [&](const std::string& family) {
    for (const auto& w : r.why_not)
      if (w.starts_with(family + ":")) return w;
    FAIL("no why-not line for " << family);
    return std::string();
  };
  CHECK_THAT(line("remat=block"), Catch::Contains("recompute is"));
  CHECK_THAT(line("tensor=2"), Catch::Contains("comm tensor is"));
  CHECK_THAT(line("pipeline=2"), Catch::Contains("slower"));
}

namespace {
void require_same(const std::vector<Candidate>& a, const std::vector<Candidate>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("rank " << i);
    REQUIRE(plan_to_yaml(a[i].plan) == plan_to_yaml(b[i].plan));
    REQUIRE(a[i].step_seconds == b[i].step_seconds);  // bit for bit: the same pricing calls
    REQUIRE(a[i].memory_bytes == b[i].memory_bytes);
    REQUIRE(a[i].mfu == b[i].mfu);
    REQUIRE(a[i].bottleneck == b[i].bottleneck);
    REQUIRE(a[i].seconds == b[i].seconds);
  }
}
}  // namespace

TEST_CASE("the pruned search returns exactly what pricing every plan returns", "[planner][property]") {
  // The bounds only skip plans that cannot enter the top k, the Pareto front or any family's best;
  // ties go to the first plan in enumeration order on both paths.
  std::mt19937 rng(2024);
  const std::vector<std::string> models = {"griffin-tiny", "hawk-tiny",   "mqa-tiny",     "rwkv4-tiny", "rwkv6-tiny",
                                           "griffin-100m", "hawk-100m",   "mqa-200m",     "rwkv4-169m", "griffin-400m",
                                           "transformer-tiny"};
  std::vector<ClusterSpec> clusters = {load_cluster("cpu-local"), load_cluster("tpu-v5e-64"), load_cluster("tpu-v4-256")};
  ClusterSpec islands = load_cluster("dgx-h100-32");  // hierarchical network: 4 islands of 8
  islands.topology.islands = 4;
  clusters.push_back(islands);
  std::int64_t bounded = 0;
  for (int i = 0; i < 14; ++i) {
    const auto m = load_model(models[rng() % models.size()]);
    const auto& c = clusters[rng() % clusters.size()];
    SearchOptions o = opts(c.devices() * (1 + static_cast<std::int64_t>(rng() % 4)), 256 << (rng() % 4));
    const double fractions[] = {0.9, 0.5, 0.05, 0.01};
    o.max_memory_fraction = fractions[rng() % 4];
    const std::size_t tops[] = {1, 3, 10, 20};
    o.top = tops[rng() % 4];
    if (rng() % 4 == 0) o.dtype = DType::fp32;
    if (rng() % 4 == 0) o.fixed[static_cast<int>(Axis::pipeline)] = 1;
    INFO(m.name << " on " << c.name << " batch " << o.global_batch << " seq " << o.seq_len << " memory " << o.max_memory_fraction
                << " top " << o.top);
    SearchOptions x = o;
    x.prune = false;
    const auto pruned = search(m, c, o), all = search(m, c, x);
    require_same(pruned.top, all.top);
    require_same(pruned.pareto, all.pareto);
    REQUIRE(pruned.why_not == all.why_not);
    REQUIRE(pruned.considered == all.considered);
    REQUIRE(pruned.illegal == all.illegal);
    REQUIRE(pruned.pruned == all.pruned);
    REQUIRE(all.bounded == 0);
    REQUIRE(pruned.considered == pruned.illegal + pruned.pruned + pruned.over_memory + pruned.bounded + pruned.priced);
    REQUIRE(all.considered == all.illegal + all.pruned + all.over_memory + all.priced);
    if (all.priced > 5000) CHECK(pruned.bounded > 0);  // not a fallback to pricing everything
    bounded += pruned.bounded;
  }
  CHECK(bounded > 0);  // and the bounds do skip plans
}

TEST_CASE("GPT-3 175B on eight DGX A100 nodes gets a Megatron-like plan", "[planner]") {
  // Narayanan et al. 2021 §3.3 (takeaways 1 and 2): tensor parallelism up to the GPUs of a node
  // (NVLink), pipeline parallelism across nodes. On 64 A100s an NVLink island holds 8 GPUs whose
  // links are 12x faster than the per-GPU InfiniBand share (300 vs 25 GB/s), and the model's
  // parameter state (~16 bytes per parameter, 2.8 TB) needs at least 39 of the 72 GB devices.
  const auto c = load_cluster("dgx-a100-8");
  const auto m = load_model("gpt3-175b");
  REQUIRE(c.topology.island_link_bytes_per_s / c.topology.network_bytes_per_s == 12);
  const auto r = search(m, c, opts(64, 2048));
  REQUIRE(!r.top.empty());
  const Plan& best = r.top.front().plan;
  INFO(best.mesh.describe());
  CHECK(best.mesh[Axis::tensor] > 1);
  CHECK(8 % best.mesh[Axis::tensor] == 0);          // tensor groups inside one node
  CHECK(best.placement[0] == Axis::tensor);          // on the NVLink island
  CHECK(best.mesh[Axis::pipeline] * best.mesh[Axis::tensor] >= 32);  // the rest mostly pipeline across nodes
}

TEST_CASE("the pruned search equals pricing every plan with tensor_comm and interleaving in play", "[planner][property]") {
  // transformer-tiny (4 layers: pipeline 2 allows 2 chunks per stage, 4 heads: tensor up to 4)
  // on 4 islands of 8 and on a TPU torus: rs_ag, elementwise/selective remat and interleaved
  // chunks are all enumerated; both paths must agree exactly.
  ClusterSpec islands = load_cluster("dgx-a100-4");
  for (const auto& c : {islands, load_cluster("tpu-v5e-64")}) {
    for (double fraction : {0.9, 0.0005}) {
      const auto m = load_model("transformer-tiny");
      SearchOptions o = opts(c.devices() * 2, 512);
      o.max_memory_fraction = fraction;
      INFO(c.name << " memory fraction " << fraction);
      SearchOptions x = o;
      x.prune = false;
      const auto pruned = search(m, c, o), all = search(m, c, x);
      require_same(pruned.top, all.top);
      require_same(pruned.pareto, all.pareto);
      REQUIRE(pruned.why_not == all.why_not);
      REQUIRE(pruned.considered == all.considered);
      REQUIRE(pruned.considered == pruned.illegal + pruned.pruned + pruned.over_memory + pruned.bounded + pruned.priced);
    }
  }
}

TEST_CASE("a rule no plan can pass is named once as the reason, with its numbers", "[planner]") {
  // gpt-tiny has a learned position table of 128 entries: at 256 tokens every plan breaks that
  // rule, whatever the mesh, so it is the answer; a per-family list blaming whatever rule a mesh
  // happened to break first (pipeline, heads) would send the user to the wrong key.
  const auto m = load_model("gpt-tiny");
  REQUIRE(m.max_positions < 256);
  const auto c = load_cluster("tpu-v5e-64");
  const auto r = search(m, c, opts(64, 256));
  REQUIRE(r.top.empty());
  CHECK_THAT(r.blocking, Catch::Contains("seq_len fits the learned position table"));
  CHECK_THAT(r.blocking, Catch::Contains("256") && Catch::Contains("128"));
  for (const auto& w : r.why_not) CHECK_THAT(w, !Catch::Contains("illegal"));
}

TEST_CASE("why-not lines name the reason that binds: memory when a family has legal meshes, else the rule every mesh breaks", "[planner]") {
  // Griffin-1.3B at 64K tokens on 32 A100s: plans exist, and families run out for different reasons.
  const auto m = load_model("griffin-1.3b");
  const auto c = load_cluster("dgx-a100-4");
  const auto r = search(m, c, opts(32, 65536));
  REQUIRE(!r.top.empty());
  CHECK(r.blocking.empty());
  auto line = [&](const std::string& family) {
    for (const auto& w : r.why_not)
      if (w.starts_with(family + ":")) return w;
    FAIL("no why-not line for " << family);
    return std::string();
  };
  // data=32 (one sequence per replica, nothing else sharded) is a legal mesh, so legality cannot be
  // why that family has no plan: the line must give its memory need against the limit.
  Plan alone;
  alone.mesh = parse_mesh("data=32", "--mesh");
  alone.global_batch = 32;
  alone.micro_batch = 1;
  alone.seq_len = 65536;
  REQUIRE(plan_violations(m, alone, c.devices()).empty());
  const std::string data32 = line("data=32");
  CHECK_THAT(data32, Catch::Contains("no plan survived") && Catch::Contains("GiB per device"));
  CHECK_THAT(data32, !Catch::Contains("illegal:"));
  // tensor=32 cannot split the 16 heads on any mesh: the named rule is the one each such mesh breaks.
  REQUIRE(m.heads % 32 != 0);
  Plan t32 = alone;
  t32.mesh = parse_mesh("tensor=32", "--mesh");
  bool heads_rule = false;
  for (const auto& f : plan_violations(m, t32, c.devices())) heads_rule = heads_rule || std::string(f.rule) == "tensor divides heads";
  REQUIRE(heads_rule);
  CHECK_THAT(line("tensor=32"), Catch::Contains("illegal: tensor divides heads") && Catch::Contains("does not divide heads 16"));
}

TEST_CASE("for_each_legal_plan yields exactly the plans the exhaustive search prices, placement aside", "[planner][property]") {
  // The property test's sampler (tests/mpi/test_plan_property.cpp) draws from for_each_legal_plan;
  // it must be the planner's own space: every plan search() may return (top k as large as the
  // space, nothing over memory for a tiny model), and no other. Placement only moves the price,
  // so plans are compared without it. griffin-tiny has attention (selective remat), a scan
  // (four algorithms) and 3 layers (pipeline 2, no interleaving); at 4 sequences of 12 tokens on
  // 2 devices every axis is legal.
  const auto m = load_model("griffin-tiny");
  const auto c = cluster_slice(load_cluster("dgx-h100"), 2);
  SearchOptions o = opts(4, 12);
  o.dtype = DType::fp32;
  o.prune = false;
  o.top = 1'000'000;
  auto key = [](Plan p) {
    p.placement = Plan{}.placement;
    return plan_to_yaml(p);
  };
  const auto r = search(m, c, o);
  REQUIRE(r.over_memory == 0);
  REQUIRE(r.pruned == 0);
  std::set<std::string> searched, enumerated;
  for (const auto& cand : r.top) searched.insert(key(cand.plan));
  std::size_t count = 0;
  for_each_legal_plan(m, 2, o, [&](const Plan& p) {
    ++count;
    CHECK(plan_violation(m, p, 2) == nullptr);
    CHECK(p.param_dtype == DType::fp32);
    enumerated.insert(key(p));
  });
  CHECK(count == enumerated.size());  // each plan once
  CHECK(enumerated.size() > 100);
  CHECK(enumerated == searched);
  // every axis and every per-plan choice appears
  std::set<std::string> seen;
  for_each_legal_plan(m, 2, o, [&](const Plan& p) {
    for (int a = 0; a < kAxisCount; ++a)
      if (p.mesh.size[static_cast<std::size_t>(a)] > 1) seen.insert(to_string(static_cast<Axis>(a)));
    seen.insert(to_string(p.remat));
    seen.insert(to_string(p.scan));
    if (p.mesh[Axis::sequence] > 1) seen.insert(to_string(p.carry));
    if (p.mesh[Axis::pipeline] > 1) seen.insert(to_string(p.schedule));
    if (p.mesh[Axis::tensor] > 1) seen.insert(to_string(p.tensor_comm));
  });
  for (const char* want : {"data", "fsdp", "tensor", "sequence", "pipeline", "none", "selective", "block", "elementwise", "sequential",
                           "chunked", "associative", "naive", "ring", "allgather", "gpipe", "1f1b", "allreduce", "rs_ag"})
    CHECK(seen.count(want) == 1);
  SearchOptions bad = o;
  bad.fixed[static_cast<std::size_t>(Axis::tensor)] = 3;  // does not divide 2 devices: as search() says
  CHECK_THROWS_AS(for_each_legal_plan(m, 2, bad, [](const Plan&) {}), ConfigError);
}
