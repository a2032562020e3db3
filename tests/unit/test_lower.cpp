// tests/unit/test_lower.cpp — the lowering's FLOP and byte counts against closed forms from the
// papers, compared under each paper's counting convention (expected values derived here).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "kernels/attention.hpp"
#include "program/lower.hpp"
#include "program/param_layout.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/simulate.hpp"
#include "tests/unit/plans.hpp"

using namespace scanshard;

namespace {

using test::single_device;

double sum_matmul(const std::vector<Step>& steps, bool (*keep)(const Step&) = nullptr) {
  double s = 0;
  for (const auto& st : steps)
    if (!keep || keep(st)) s += st.matmul_flops;
  return s;
}

bool not_score_recompute(const Step& s) { return std::strcmp(s.name, "attn.scores_recompute") != 0; }

ModelSpec model_from(const std::string& yaml) { return parse_model(parse_yaml(yaml, "t.yaml"), "t.yaml"); }


// A choice-valued plan key in a plan file: `base` + "key: value" parses to `want` and plan_to_yaml
// writes it back; `base` alone gives `fallback`; `bad` is refused naming the file, the key and
// `listed` (one of the valid names); `illegal` parses but check_plan refuses it naming the key.
template <class E>
void check_plan_key(const ModelSpec& m, const std::string& base, const std::string& key, E Plan::*field, const std::string& value,
                    E want, E fallback, const std::string& bad, const std::string& listed, const std::string& illegal) {
  const Plan p = parse_plan(parse_yaml(base + key + ": " + value + "\n", "p.yaml"), "p.yaml");
  CHECK(p.*field == want);
  CHECK(parse_plan(parse_yaml(plan_to_yaml(p), "q.yaml"), "q.yaml").*field == want);
  CHECK(parse_plan(parse_yaml(base, "p.yaml"), "p.yaml").*field == fallback);
  CHECK_THROWS_WITH(parse_plan(parse_yaml(base + key + ": " + bad + "\n", "p.yaml"), "p.yaml"),
                    Catch::Contains("p.yaml") && Catch::Contains(key) && Catch::Contains(listed));
  try {
    check_plan(m, parse_plan(parse_yaml(base + illegal, "p.yaml"), "p.yaml"), 0);
    FAIL(illegal << " passed check_plan");
  } catch (const PlanError& e) {
    CHECK(e.key() == key);
  }
}

}  // namespace

TEST_CASE("RWKV-4 forward FLOPs per token are 2(VD + 13D²L) for every Table 2 size", "[lower]") {
  // RWKV paper (arXiv 2305.13048) Table 2 counts matrix multiplies only: 13D² weights per layer
  // and the V×D head (e.g. 169M -> 2.613e8, 14B -> 2.778e10).
  const std::int64_t T = 16;
  for (const char* name : {"rwkv4-169m", "rwkv4-430m", "rwkv4-1.5b", "rwkv4-3b", "rwkv4-7b", "rwkv4-14b"}) {
    INFO(name);
    const auto m = load_model(name);
    const double D = static_cast<double>(m.width), L = static_cast<double>(m.depth), V = static_cast<double>(m.vocab);
    const auto prog = lower(m, single_device(1, T), 0);
    REQUIRE(sum_matmul(prog.forward) / T == Approx(2 * (V * D + 13 * D * D * L)).epsilon(1e-12));
  }
  const auto m = load_model("rwkv4-169m");
  REQUIRE(sum_matmul(lower(m, single_device(1, T), 0).forward) / T == Approx(2.613e8).epsilon(5e-4));
}

TEST_CASE("RWKV-6 Finch training FLOPs per token follow App. E under the paper's convention", "[lower]") {
  // Eagle and Finch (arXiv 2404.05892) App. E: 78D²L + 2784DL + 24D + 12DV + 18D²L/h, with
  // 1.6B -> 9.66e9 and 3B -> 1.87e10. The paper counts 6 FLOPs per parameter per token (also for
  // the 16D per-layer and 4D global vectors and the input embedding, which we do not multiply)
  // plus 3 × the forward WKV state work (6·D·N per token per layer, N = D/h).
  const std::int64_t T = 8;
  struct Row { const char* name; double printed; };
  for (const Row r : {Row{"rwkv6-1.6b", 9.66e9}, Row{"rwkv6-3b", 1.87e10}}) {
    INFO(r.name);
    const auto m = load_model(r.name);
    const double D = static_cast<double>(m.width), L = static_cast<double>(m.depth), V = static_cast<double>(m.vocab);
    const double h = D / static_cast<double>(m.head_size);
    const auto prog = lower(m, single_device(1, T), 0);
    double wkv = 0;
    for (const auto& s : prog.forward) if (std::strcmp(s.op, "wkv6.scan") == 0) wkv += s.vector_flops;
    const double ours = (3 * sum_matmul(prog.forward) + 3 * wkv) / T;
    const double paper_extras = 6 * (16 * D * L + 4 * D) + 6 * D * V;  // vectors and the embedding
    const double formula = 78 * D * D * L + 2784 * D * L + 24 * D + 12 * D * V + 18 * D * D * L / h;
    REQUIRE(ours + paper_extras == Approx(formula).epsilon(1e-12));
    REQUIRE(formula == Approx(r.printed).epsilon(5e-3));
    // backward of every GEMM is twice its forward
    double bwd_gemm = 0;
    for (const auto& s : prog.backward) if (s.cls == OpClass::gemm) bwd_gemm += s.matmul_flops;
    REQUIRE(bwd_gemm == Approx(2 * sum_matmul(prog.forward)).epsilon(1e-12));
  }
}

TEST_CASE("Megatron FLOPs per iteration with full recomputation for a GPT-style MHA model", "[lower]") {
  // Narayanan et al. 2021: 96·B·s·l·h²·(1 + s/6h + V/16lh) with full activation recomputation.
  // An MQA-family model with kv_heads = heads (MHA), global attention and a gated MLP of width
  // 8h/3 has Megatron's 12h² weights per layer. Megatron counts attention over all s keys and
  // materialises scores; we count what the blocked kernel multiplies — whole tiles of τ queries
  // against every key the tile sees, τ²·n(n+1)/2 pairs per sequence with n = s/τ — and recompute
  // the scores blockwise in backward (excluded here), so the attention term 16·B·s²·l·h becomes
  // 4 passes × 4·B·h·l·τ²·n(n+1)/2.
  const auto m = model_from("name: gpt\nfamily: mqa\nwidth: 384\ndepth: 3\nvocab: 1000\nheads: 6\nkv_heads: 6\n"
                            "window: 0\nmlp_width: 1024\n");
  const double B = 2, s = 64, l = 3, h = 384, V = 1000;
  Plan p = single_device(2, 64);
  p.remat = Remat::block;
  const auto prog = lower(m, p, 0);
  const double ours = sum_matmul(prog.forward) + sum_matmul(prog.backward, not_score_recompute);
  const double tau = static_cast<double>(kAttentionQueryTile), n = s / tau;
  const double causal = 96 * B * s * l * h * h + 4 * 4 * B * h * l * tau * tau * n * (n + 1) / 2 + 6 * B * s * h * V;
  REQUIRE(ours == Approx(causal).epsilon(1e-12));
  // Without recomputation the layer part is 3/4 of that while the logit part is unchanged.
  p.remat = Remat::none;
  const auto plain = lower(m, p, 0);
  const double ours_plain = sum_matmul(plain.forward) + sum_matmul(plain.backward, not_score_recompute);
  REQUIRE(ours_plain == Approx(0.75 * (causal - 6 * B * s * h * V) + 6 * B * s * h * V).epsilon(1e-12));
}

TEST_CASE("RG-LRU scan follows the Griffin paper's per-element accounting", "[lower]") {
  // Griffin paper §4: per element the scan reads a, i, x and writes h: in bf16 6 B read + 2 B
  // written for 6 FLOPs -> 0.75 FLOP/byte (memory-bound on TPU-v3, ridge ~4.2).
  const auto m = load_model("griffin-tiny");
  Plan p = single_device(3, 32);
  p.act_dtype = DType::bf16;
  const auto prog = lower(m, p, 0);
  int scans = 0;
  for (const auto& st : prog.forward) {
    if (std::strcmp(st.op, "rglru.scan") != 0) continue;
    ++scans;
    const double elems = 3.0 * 32 * static_cast<double>(m.recurrent_width);
    REQUIRE(st.bytes_read == Approx(6 * elems));
    REQUIRE(st.bytes_written == Approx(2 * elems));
    REQUIRE(st.vector_flops == Approx(6 * elems));
    REQUIRE(st.vector_flops / (st.bytes_read + st.bytes_written) == Approx(0.75));
  }
  REQUIRE(scans == 2);  // layers 0 and 1 are recurrent, layer 2 is local attention
}

TEST_CASE("visible keys count the exact causal window", "[lower]") {
  // brute force over queries
  for (std::int64_t W : {0, 1, 3, 16}) {
    for (std::int64_t q0 : {0, 5, 17}) {
      const std::int64_t q1 = q0 + 23;
      std::int64_t expected = 0;
      for (std::int64_t q = q0; q < q1; ++q)
        for (std::int64_t k = 0; k <= q; ++k)
          if (W == 0 || q - k <= W) ++expected;
      INFO("W=" << W << " q0=" << q0);
      REQUIRE(visible_keys(q0, q1, W) == expected);
    }
  }
}

TEST_CASE("tensor sharding splits the matrix FLOPs and adds Megatron all-reduces", "[lower]") {
  // Every block's GEMM work (heads, recurrent width, MLP) divides by t; the tied head is
  // vocab-parallel; MQA's single K/V head is replicated, so its two projections (2·2·n·D·N
  // FLOPs in the one attention layer) are not split. Two forward all-reduces of [B·T, D] per
  // layer (temporal block and MLP) plus one for the embedding.
  const auto m = load_model("griffin-tiny");
  Plan p = single_device(2, 32);
  const double full = sum_matmul(lower(m, p, 0).forward);
  const double kv_proj = 2 * 2 * (2.0 * 32) * 128 * 32;
  p.mesh[Axis::tensor] = 2;
  const auto prog = lower(m, p, 0);
  REQUIRE(sum_matmul(prog.forward) == Approx((full - kv_proj) / 2 + kv_proj).epsilon(1e-12));
  int ar = 0;
  for (const auto& s : prog.forward)
    if (s.comm == CommKind::all_reduce && s.axis == Axis::tensor && s.comm_bytes == 2 * 32 * 128 * 2.0) ++ar;
  REQUIRE(ar == 2 * m.depth + 1);
}

TEST_CASE("a one-device plan has no communication", "[lower]") {
  for (const char* name : {"griffin-tiny", "hawk-tiny", "mqa-tiny", "rwkv4-tiny", "rwkv6-tiny"}) {
    INFO(name);
    const auto prog = lower(load_model(name), single_device(2, 16), 0);
    for (const auto* list : {&prog.forward, &prog.backward, &prog.step_end})
      for (const auto& s : *list) REQUIRE(s.kind == StepKind::compute);
  }
}

TEST_CASE("sequence sharding adds carries and halos with the DESIGN §4 sizes", "[lower]") {
  // Hawk on 4 sequence shards, ring carry: each scan passes the combined state h (B·R fp32
  // values) P−1 = 3 sequential hops; the all-gather variant gathers every shard's summary
  // (Π a, h_last) = 2·B·R values forward, dh = B·R backward; Conv1D needs K−1 = 3 tokens of R
  // channels.
  const auto m = load_model("hawk-tiny");
  Plan p = single_device(2, 64);
  p.mesh[Axis::sequence] = 4;
  const auto prog = lower(m, p, 3);  // last shard: has a left neighbour
  const double B = 2, R = static_cast<double>(m.recurrent_width);
  int carries = 0, halos = 0;
  for (const auto& s : prog.forward) {
    if (s.kind != StepKind::p2p) continue;
    if (std::strcmp(s.name, "scan.carry") == 0) { ++carries; REQUIRE(s.hops == 3); REQUIRE(s.comm_bytes == B * R * 4); }
    if (std::strcmp(s.name, "rec.conv_halo") == 0) { ++halos; REQUIRE(s.comm_bytes == B * 3 * R * 2); }
  }
  REQUIRE(carries == m.depth);
  REQUIRE(halos == m.depth);
  p.carry = CarryScheme::allgather;
  int gathers = 0;
  for (const auto& s : lower(m, p, 3).forward)
    if (s.comm == CommKind::all_gather && std::strcmp(s.name, "scan.carry") == 0) { ++gathers; REQUIRE(s.comm_bytes == 4 * 2 * B * R * 4); }
  REQUIRE(gathers == m.depth);
  // backward: every shard's dh_loc (B·R values); the decays are the forward's, kept
  gathers = 0;
  for (const auto& s : lower(m, p, 3).backward)
    if (s.comm == CommKind::all_gather && std::strcmp(s.name, "scan.carry") == 0) { ++gathers; REQUIRE(s.comm_bytes == 4 * B * R * 4); }
  REQUIRE(gathers == m.depth);
}

TEST_CASE("a local-attention window longer than a shard takes its K/V halo from every shard it reaches", "[lower]") {
  // griffin-tiny (window W = 32, one K/V head of N channels) on 4 shards of T = 12 tokens: shard
  // s needs positions s·T − 32 .. s·T − 1, i.e. 12 rows from s−1, 12 from s−2 and 32 − 24 = 8 from
  // s−3. It receives min(32, 12·s) rows and sends 12 + 12 + 8 to the shards that exist on its
  // right, all peers at once; the p2p step is priced on the larger direction, one round, B·rows·2·N
  // values each way, in fp32 activations here.
  const auto m = load_model("griffin-tiny");
  const std::int64_t W = m.window, T = 12, P = 4;
  REQUIRE(W == 32);
  CHECK(kv_halo_hops(W, T) == 3);
  CHECK(kv_halo_rows(W, T, 1) == 12);
  CHECK(kv_halo_rows(W, T, 2) == 12);
  CHECK(kv_halo_rows(W, T, 3) == 8);
  CHECK(kv_halo_rows(W, T, 4) == 0);
  const std::int64_t received[] = {0, 12, 24, 32}, sent[] = {32, 24, 12, 0};
  Plan p = single_device(2, T * P);
  p.mesh[Axis::sequence] = P;
  p.act_dtype = DType::fp32;
  const double B = 2, N = static_cast<double>(m.head_dim);
  for (std::int64_t s = 0; s < P; ++s) {
    const KvHalo k = kv_halo(W, T, s, P);
    CHECK(k.received == received[s]);
    CHECK(k.sent == sent[s]);
    const auto prog = lower(m, p, s);  // tensor innermost, tensor = 1: rank s is shard s
    int halos = 0;
    for (const auto* steps : {&prog.forward, &prog.backward})
      for (const auto& st : *steps)
        if (std::strcmp(st.name, "attn.kv_halo") == 0) {
          ++halos;
          CHECK(st.hops == 1);
          CHECK(st.comm_bytes == B * static_cast<double>(std::max(received[s], sent[s])) * 2 * N * 4);
        }
    CHECK(halos == 2);  // one attention layer: forward rows, backward gradients
  }
  // a window inside one shard: the left neighbour's last W rows, as before
  CHECK(kv_halo(W, 40, 1, 4).received == W);
  CHECK(kv_halo(W, 40, 1, 4).sent == W);
}

TEST_CASE("RWKV-6 under tensor sums the replicated LoRA and mix gradients and under sequence carries the matrix state", "[lower]") {
  // tensor: μ_x [D], μ_□ [5, D], LoRA A [D, 5r], LoRA B [5, r, D] and the decay LoRA A [D, rw] are
  // whole on every rank but their consumers are column-split: one backward all-reduce of
  // (6 + 10r + rw)·D fp32 gradients per layer (tm.mu_grads). sequence: the WKV state of this
  // rank's heads, B·H·N² fp32 per ring hop; the all-gather takes every shard's (S, log Π w),
  // B·H·(N² + N) each; the token-shift halos are one token of D.
  const auto m = load_model("rwkv6-tiny");
  const double D = static_cast<double>(m.width), r = static_cast<double>(m.lora_rank_mix),
               rw = static_cast<double>(m.lora_rank_decay), N = static_cast<double>(m.head_size), B = 2;
  Plan p = single_device(2, 64);
  p.mesh[Axis::tensor] = 2;
  int mu = 0;
  for (const auto& s : lower(m, p, 0).backward)
    if (std::strcmp(s.name, "tm.mu_grads") == 0) {
      ++mu;
      REQUIRE(s.comm == CommKind::all_reduce);
      REQUIRE(s.axis == Axis::tensor);
      REQUIRE(s.comm_bytes == (D + 5 * D + D * 5 * r + 5 * r * D + D * rw) * 4);
    }
  REQUIRE(mu == m.depth);
  const double H = D / N / 2;  // heads per tensor rank
  p.mesh[Axis::sequence] = 2;
  for (ScanAlgo scan : {ScanAlgo::sequential, ScanAlgo::chunked}) {
    p.scan = scan;
    for (CarryScheme carry : {CarryScheme::ring, CarryScheme::allgather}) {
      p.carry = carry;
      int carries = 0, halos = 0;
      for (const auto& s : lower(m, p, 0).forward) {
        if (std::strcmp(s.name, "scan.carry") == 0) {
          ++carries;
          REQUIRE(s.axis == Axis::sequence);
          REQUIRE(s.comm_bytes == (carry == CarryScheme::ring ? B * H * N * N * 4 : 2 * B * H * (N * N + N) * 4));
        }
        if (std::strcmp(s.name, "tm.shift_halo") == 0 || std::strcmp(s.name, "cm.shift_halo") == 0) {
          ++halos;
          REQUIRE(s.comm_bytes == B * D * 2);
        }
      }
      REQUIRE(carries == m.depth);
      REQUIRE(halos == 2 * m.depth);
      // backward: the state's gradient (B·H·N²) per hop; the all-gather only the local gradients —
      // every rank kept the summaries its forward fold gathered
      int grads = 0;
      for (const auto& s : lower(m, p, 0).backward)
        if (std::strcmp(s.name, "scan.carry") == 0) {
          ++grads;
          REQUIRE(s.comm_bytes == (carry == CarryScheme::ring ? 1 : 2) * B * H * N * N * 4);
        }
      REQUIRE(grads == m.depth);
    }
  }
}

TEST_CASE("RWKV-4's WKV forward saves its checkpoints (3 state values per 16 tokens) and the backward reads them", "[lower]") {
  // kernels/rwkv4.hpp: the state (a, b, q) [3,B,Dl] before tokens 16, 32, 48 of 64 — 3 checkpoints;
  // none at 16 tokens. Every other term of the step is linear in T, so the 64-token step minus four
  // times the 16-token one is the checkpoints alone, in the scan-state dtype.
  const auto m = load_model("rwkv4-tiny");
  const double B = 2;
  auto wkv = [&](const std::vector<Step>& list) {
    for (const auto& s : list)
      if (std::strcmp(s.op, "wkv4.scan") == 0 && std::strcmp(s.name, "tm.wkv") == 0) return s;
    FAIL("no wkv4.scan step");
    return Step{};
  };
  for (std::int64_t t : {1, 2})
    for (DType st : {DType::fp32, DType::bf16}) {
      INFO("tensor " << t << " " << to_string(st));
      auto plan = [&](std::int64_t T) {
        Plan p = single_device(2, T);
        p.mesh[Axis::tensor] = t;
        p.state_dtype = st;
        return lower(m, p, 0);
      };
      const auto p64 = plan(64), p16 = plan(16);
      const double ck = 3 * B * (static_cast<double>(m.width) / static_cast<double>(t)) * 3 * (st == DType::fp32 ? 4 : 2);
      CHECK(wkv(p64.forward).saved_bytes - 4 * wkv(p16.forward).saved_bytes == Approx(ck));
      CHECK(wkv(p64.forward).bytes_written - 4 * wkv(p16.forward).bytes_written == Approx(ck));
      CHECK(wkv(p64.backward).bytes_read - 4 * wkv(p16.backward).bytes_read == Approx(ck));
    }
}

TEST_CASE("RWKV-4 under sequence carries (a, b, p) forward and (da, db) backward, never the decay summary", "[lower]") {
  // kernels/rwkv4.hpp: a chunk state is the scaled numerator a, denominator b and running maximum
  // exponent p per (sequence, channel), B·D/t each; its gradient is (da, db) with p held fixed.
  // The decay summary −T·exp(decay) is a parameter times the shard length, the same on every
  // shard, so neither scheme sends it: a ring hop carries 3·B·D/t forward and 2·B·D/t backward,
  // the all-gather P times that. The scan-state dtype sets the element size.
  const auto m = load_model("rwkv4-tiny");
  const double D = static_cast<double>(m.width), B = 2;
  for (std::int64_t t : {1, 2})
    for (std::int64_t P : {2, 4})
      for (DType st : {DType::fp32, DType::bf16})
        for (CarryScheme carry : {CarryScheme::ring, CarryScheme::allgather}) {
          Plan p = single_device(2, 64);
          p.mesh[Axis::tensor] = t;
          p.mesh[Axis::sequence] = P;
          p.carry = carry;
          p.state_dtype = st;
          INFO("tensor " << t << " sequence " << P << " " << to_string(st) << " " << to_string(carry));
          const double elem_bytes = st == DType::fp32 ? 4 : 2, Dl = D / static_cast<double>(t);
          const double shards = carry == CarryScheme::ring ? 1 : static_cast<double>(P);
          const auto prog = lower(m, p, 1);
          for (const auto* list : {&prog.forward, &prog.backward}) {
            const double per_shard = (list == &prog.forward ? 3 : 2) * B * Dl * elem_bytes;
            int carries = 0;
            for (const auto& s : *list)
              if (std::strcmp(s.name, "scan.carry") == 0) {
                ++carries;
                CHECK(s.axis == Axis::sequence);
                CHECK(s.comm == (carry == CarryScheme::ring ? CommKind::send_recv : CommKind::all_gather));
                CHECK(s.comm_bytes == shards * per_shard);
              }
            CHECK(carries == m.depth);
          }
        }
}

TEST_CASE("illegal plans name the rule that failed", "[lower]") {
  const auto m = load_model("griffin-tiny");
  Plan p = single_device(4, 32);
  p.mesh[Axis::tensor] = 3;
  try {
    check_plan(m, p, 0);
    FAIL("no error");
  } catch (const PlanError& e) {
    REQUIRE(e.rule() == "tensor divides heads");  // 384 = 3·128 divides, 4 heads do not
    REQUIRE_THAT(e.what(), Catch::Contains("tensor = 3 does not divide heads 4"));
  }
  p.mesh[Axis::tensor] = 1;
  p.mesh[Axis::pipeline] = m.depth + 1;
  REQUIRE(std::string(plan_violation(m, p, 0)) == "each pipeline stage holds a layer");
  p.mesh[Axis::pipeline] = 1;
  p.mesh[Axis::data] = 3;
  REQUIRE(std::string(plan_violation(m, p, 3)) == "data*fsdp divides global_batch");
  p.mesh[Axis::data] = 2;
  REQUIRE(std::string(plan_violation(m, p, 8)) == "mesh size equals the cluster's device count");
}

TEST_CASE("a WKV carry fix is priced as the scan it re-runs, an RG-LRU fix as one elementwise pass", "[lower]") {
  // train/exec_rwkv4.cpp fixes a WKV shard by running its chunk again from the true incoming state
  // (forward; the first shard copies) and its chunk backward once more for d state_in; the RG-LRU
  // adds Π a · h_in to each output (2 FLOPs per element).
  Plan p = single_device(2, 64);
  p.mesh[Axis::sequence] = 2;
  auto steps_named = [](const std::vector<Step>& list, const char* op, const char* name) {
    std::vector<Step> out;
    for (const auto& s : list)
      if (std::strcmp(s.op, op) == 0 && std::strcmp(s.name, name) == 0) out.push_back(s);
    return out;
  };
  for (const char* model : {"rwkv4-tiny", "rwkv6-tiny"}) {
    for (ScanAlgo scan : {ScanAlgo::sequential, ScanAlgo::chunked}) {
      INFO(model << " scan " << to_string(scan));
      p.scan = scan;
      const auto m = load_model(model);
      const char* kernel = m.family == Family::rwkv4 ? "wkv4.scan" : scan == ScanAlgo::chunked ? "wkv6.chunked" : "wkv6.scan";
      for (std::int64_t shard : {0, 1}) {
        const auto prog = lower(m, p, shard);
        const auto fwd = steps_named(prog.forward, kernel, "tm.wkv"), bwd = steps_named(prog.backward, kernel, "tm.wkv");
        const auto fix_f = steps_named(prog.forward, "scan.carry_fix", "tm.wkv");
        const auto fix_b = steps_named(prog.backward, "scan.carry_fix", "tm.wkv");
        REQUIRE(fwd.size() == static_cast<std::size_t>(m.depth));
        REQUIRE(fix_f.size() == fwd.size());
        REQUIRE(fix_b.size() == bwd.size());
        for (std::size_t i = 0; i < fwd.size(); ++i) {
          REQUIRE(fix_b[i].kernel != nullptr);
          CHECK(std::strcmp(fix_b[i].kernel, kernel) == 0);
          CHECK(fix_b[i].vector_flops == bwd[i].vector_flops);
          CHECK(fix_b[i].matmul_flops == bwd[i].matmul_flops);
          if (shard == 0) {  // the first shard's state is already true: a copy
            CHECK(fix_f[i].matmul_flops == 0);
            CHECK(fix_f[i].vector_flops < fwd[i].vector_flops);
          } else {
            CHECK(fix_f[i].vector_flops == fwd[i].vector_flops);
            CHECK(fix_f[i].matmul_flops == fwd[i].matmul_flops);
            CHECK(fix_f[i].bytes_read == fwd[i].bytes_read);
            CHECK(fix_f[i].saved_bytes == 0);
          }
        }
      }
    }
  }
  const auto hawk = load_model("hawk-tiny");
  p.scan = ScanAlgo::sequential;
  const double elems = 2.0 * 32 * static_cast<double>(hawk.recurrent_width);  // B · local tokens · R
  const auto rg_fix = steps_named(lower(hawk, p, 1).forward, "scan.carry_fix", "rec.scan");
  REQUIRE(rg_fix.size() == static_cast<std::size_t>(hawk.depth));
  for (const auto& s : rg_fix) {
    CHECK(s.kernel == nullptr);
    CHECK(s.vector_flops == 2 * elems);
  }
}

TEST_CASE("a blocked attention kernel multiplies whole query tiles", "[lower]") {
  // Tile 1 is the exact count; otherwise every query of a tile meets every key its tile sees:
  // counted here pair by pair over the (query, key) grid.
  auto brute = [](std::int64_t q0, std::int64_t q1, std::int64_t W, std::int64_t tile) {
    std::int64_t n = 0;
    for (std::int64_t t0 = q0; t0 < q1; t0 += tile) {
      const std::int64_t t1 = std::min(q1, t0 + tile);
      for (std::int64_t q = t0; q < t1; ++q)
        for (std::int64_t key = 0; key < t1; ++key) {
          bool seen_by_tile = false;
          for (std::int64_t r = t0; r < t1; ++r) seen_by_tile = seen_by_tile || (key <= r && (W == 0 || key >= r - W));
          n += seen_by_tile ? 1 : 0;
        }
    }
    return n;
  };
  for (std::int64_t W : {0, 5, 32, 100})
    for (auto [q0, q1] : {std::pair<std::int64_t, std::int64_t>{0, 1}, {0, 45}, {0, 128}, {64, 200}, {7, 70}}) {
      INFO("W " << W << " queries " << q0 << ".." << q1);
      CHECK(tiled_attention_pairs(q0, q1, W, 1) == visible_keys(q0, q1, W));
      for (std::int64_t tile : {2, 7, 32}) CHECK(tiled_attention_pairs(q0, q1, W, tile) == brute(q0, q1, W, tile));
    }
  // causal, 32-query tiles from 0: 32²·n(n+1)/2 with n = T/32, against T(T+1)/2
  CHECK(tiled_attention_pairs(0, 128, 0, 32) == 1024 * 10);
  CHECK(tiled_attention_pairs(0, 512, 0, 32) == 1024 * 136);
  CHECK(kAttentionQueryTile == scanshard::kernels::fast::kAttentionQueryBlock);  // the runner's kernel
}

TEST_CASE("gradient reductions move each parameter in the plan's gradient dtype", "[lower][plan]") {
  // dtypes: grads: params (default) follows the parameters (bf16: 2 bytes, fp32: 4); fp32 and fp64
  // are 4 and 8 bytes whatever the parameters. Every grads collective (data all-reduce, ZeRO
  // reduce-scatter) scales with it; no other step changes.
  const auto m = load_model("griffin-tiny");
  auto grads_bytes = [&](int zero, DType params, GradDType grads) {
    Plan p = single_device(4, 32);
    p.mesh[Axis::fsdp] = 2;
    p.micro_batch = 2;
    p.zero_stage = zero;
    p.param_dtype = params;
    p.grad_dtype = grads;
    double bytes = 0;  // the step end's, and ZeRO-2/3's per-block reduce-scatters in every micro-batch's backward
    const StepProgram prog = lower(m, p, 0);
    for (const auto& s : prog.step_end)
      if (std::strcmp(s.name, "grads") == 0) bytes += s.comm_bytes;
    for (const auto& s : prog.backward)
      if (s.kind == StepKind::collective && std::string_view(s.name).find("grads") != std::string_view::npos && s.axis == Axis::fsdp)
        bytes += static_cast<double>(prog.micro_batches) * s.comm_bytes;
    return bytes;
  };
  for (int zero : {0, 3}) {
    INFO("ZeRO " << zero);
    const double bf16 = grads_bytes(zero, DType::bf16, GradDType::params);
    REQUIRE(bf16 > 0);
    CHECK(grads_bytes(zero, DType::bf16, GradDType::bf16) == bf16);
    CHECK(grads_bytes(zero, DType::fp32, GradDType::params) == 2 * bf16);
    CHECK(grads_bytes(zero, DType::bf16, GradDType::fp32) == 2 * bf16);
    CHECK(grads_bytes(zero, DType::fp32, GradDType::fp64) == 4 * bf16);
  }
  // the plan file: parsed, written back, refused with the key named
  Plan p = parse_plan(parse_yaml("model: griffin-tiny\nglobal_batch: 4\nseq_len: 32\ndtypes:\n  grads: fp64\n", "p.yaml"), "p.yaml");
  CHECK(p.grad_dtype == GradDType::fp64);
  CHECK(parse_plan(parse_yaml(plan_to_yaml(p), "q.yaml"), "q.yaml").grad_dtype == GradDType::fp64);
  CHECK(parse_plan(parse_yaml("model: griffin-tiny\nglobal_batch: 4\nseq_len: 32\n", "p.yaml"), "p.yaml").grad_dtype ==
        GradDType::params);
  CHECK_THROWS_WITH(parse_plan(parse_yaml("model: m\nglobal_batch: 4\nseq_len: 32\ndtypes:\n  grads: fp16\n", "p.yaml"), "p.yaml"),
                    Catch::Contains("p.yaml") && Catch::Contains("grads") && Catch::Contains("fp64"));
}

TEST_CASE("each micro-batch's gradients are accumulated once: a step priced on every parameter", "[lower]") {
  // Per micro-batch the runner clears the fp32 gradient buffer (write 4 B), reads it (4 B) and
  // reads and writes the accumulator (fp32, or fp64 when the plan reduces in fp64); once per step
  // it clears the accumulator (one store of `acc` bytes per parameter): on one device every
  // parameter of the model (count_parameters, tested against the papers' counts).
  const auto m = load_model("griffin-tiny");
  const double P = static_cast<double>(count_parameters(m).total);
  for (auto [mb, grads, acc] : {std::tuple{4, GradDType::params, 4.0}, std::tuple{1, GradDType::fp64, 8.0}}) {
    Plan p = single_device(4, 32);
    p.micro_batch = mb;
    p.grad_dtype = grads;
    const double mbs = 4.0 / mb;
    int found = 0;
    for (const auto& s : lower(m, p, 0).step_end)
      if (std::strcmp(s.op, "grad_accumulate") == 0) {
        ++found;
        CHECK(s.kind == StepKind::compute);
        CHECK(s.bytes_read == Approx(mbs * P * (4 + acc)));
        CHECK(s.bytes_written == Approx(mbs * P * (4 + acc) + P * acc));
        CHECK(s.vector_flops == Approx(mbs * P + P));
      }
    CHECK(found == 1);
  }
  // ZeRO-2/3 keep a 1/fsdp shard of the gradients: the accumulator is that shard. The runner still
  // clears its whole local accumulator at the step's start, and (ZeRO-2/3) its part of the
  // gradient buffer that the last update left.
  auto accum = [&](int zero) {
    Plan p = single_device(4, 32);
    p.mesh[Axis::fsdp] = 2;
    p.micro_batch = 1;
    p.zero_stage = zero;
    for (const auto& s : lower(m, p, 0).step_end)
      if (std::strcmp(s.op, "grad_accumulate") == 0) return std::pair{s.bytes_read, s.bytes_written};
    return std::pair{-1.0, -1.0};
  };
  CHECK(accum(1).first == Approx(2 * P * 8));  // 2 micro-batches per replica, fp32 accumulator
  CHECK(accum(1).second == Approx(2 * P * 8 + P * 4));
  for (int zero : {2, 3}) {
    CHECK(accum(zero).first == Approx(accum(1).first / 2));
    CHECK(accum(zero).second == Approx(2 * (P / 2) * 8 + P * 4 + (P / 2) * 4));
  }
}

TEST_CASE("grad_accumulation prices each framework's accumulation in closed form", "[lower][grad_accumulation]") {
  // gpt-tiny on one device, 4 micro-batches, P parameters (count_parameters) of which W are
  // weights of its linears, whose gradients the weight-gradient GEMMs write: per layer
  // Wq, Wo (D·D), Wk, Wv (D·kv·D/H), W1, W2 (D·F); and the tied head (V·D).
  const auto m = load_model("gpt-tiny");
  const double P = static_cast<double>(count_parameters(m).total);
  const double D = static_cast<double>(m.width), F = static_cast<double>(m.mlp_width), V = static_cast<double>(m.vocab);
  const double kvD = static_cast<double>(m.kv_heads) * D / static_cast<double>(m.heads);
  const double W = static_cast<double>(m.depth) * (2 * D * D + 2 * D * kvD + 2 * D * F) + V * D;
  const double mbs = 4;
  auto priced = [&](GradAccumulation acc, GradDType grads) {
    Plan p = single_device(4, 32);
    p.micro_batch = 1;
    p.grad_dtype = grads;
    p.grad_accumulation = acc;
    const StepProgram prog = lower(m, p, 0);
    struct { double read = -1, written = -1, dw_read = 0, dw_written = 0; } r;
    for (const auto& s : prog.step_end)
      if (std::strcmp(s.op, "grad_accumulate") == 0) r.read = s.bytes_read, r.written = s.bytes_written;
    for (const auto& s : prog.backward)
      if (std::strcmp(s.op, "linear.dw") == 0) r.dw_read += s.bytes_read, r.dw_written += s.bytes_written;
    return r;
  };
  // separate (the default): the runner's 16 B per parameter and micro-batch, fp32
  const auto sep = priced(GradAccumulation::separate, GradDType::fp32);
  CHECK(sep.read == Approx(mbs * P * 8));
  CHECK(sep.written == Approx(mbs * P * 8 + P * 4));
  CHECK(sep.dw_written == Approx(W * 4));
  // hook (Megatron-LM's main_grad.add_(grad)): bf16 .grad read, main_grad read and written; main_grad
  // zeroed once per step. fp32 main_grad: 10 B per micro-batch; bf16 (fp16 in 2021): 6 B.
  for (auto [grads, a] : {std::pair{GradDType::fp32, 4.0}, std::pair{GradDType::params, 2.0}}) {
    const auto hook = priced(GradAccumulation::hook, grads);
    CHECK(hook.read == Approx(mbs * P * (2 + a)));
    CHECK(hook.written == Approx(mbs * P * a + P * a));
    CHECK(hook.read + hook.written - P * a == Approx(mbs * P * (a == 4 ? 10 : 6)));
    CHECK(hook.dw_written == Approx(W * 2));  // the weight-gradient GEMMs write the bf16 .grad
    CHECK(hook.dw_read == Approx(sep.dw_read));
    // autograd (.grad += grad): the first micro-batch's gradient is kept (cast when it is narrower
    // than the accumulator), nothing zeroed
    const auto ag = priced(GradAccumulation::autograd, grads);
    const double cast = a == 2 ? 0.0 : 1.0;
    CHECK(ag.read == Approx((mbs - 1) * P * (2 + a) + cast * P * 2));
    CHECK(ag.written == Approx((mbs - 1) * P * a + cast * P * a));
  }
  // fused (gradient_accumulation_fusion): the GEMMs read main_grad (C, β = 1) and write it in fp32;
  // only the other P − W parameters pay the hook's 10 B
  const auto fused = priced(GradAccumulation::fused, GradDType::fp32);
  CHECK(fused.dw_written == Approx(W * 4));
  CHECK(fused.dw_read - sep.dw_read == Approx(W * 4));
  CHECK(fused.read == Approx(mbs * (P - W) * 6));
  CHECK(fused.written == Approx(mbs * (P - W) * 4 + P * 4));
  // FSDP (ZeRO-3 over fsdp 2, per-block reduce-scatter): autograd adds the arriving bf16 shard
  // into the fp32 sharded .grad (FSDP's _cast_grad_to_param_dtype, then +=): P/2 elements, 2 micro-batches
  {
    Plan p = single_device(4, 32);
    p.mesh[Axis::fsdp] = 2;
    p.micro_batch = 1;
    p.zero_stage = 3;
    p.grad_accumulation = GradAccumulation::autograd;
    for (const auto& s : lower(m, p, 0).step_end)
      if (std::strcmp(s.op, "grad_accumulate") == 0) {
        CHECK(s.bytes_read == Approx((2 - 1) * (P / 2) * (2 + 4) + (P / 2) * 2));
        CHECK(s.bytes_written == Approx((2 - 1) * (P / 2) * 4 + (P / 2) * 4));
      }
  }
  // the plan file: parsed, written back; a bad value names the key; fused under the per-block
  // reduce-scatter is a PlanError keyed grad_accumulation, allowed once per step (last_microbatch)
  const std::string base = "model: gpt-tiny\nmesh: {fsdp: 2}\nglobal_batch: 4\nseq_len: 32\n";
  check_plan_key(m, base, "grad_accumulation", &Plan::grad_accumulation, "hook", GradAccumulation::hook, GradAccumulation::separate,
                 "megatron", "fused", "zero_stage: 2\ngrad_accumulation: fused\n");
  CHECK_NOTHROW(check_plan(m, parse_plan(parse_yaml(base + "zero_stage: 2\ngradient_sync: last_microbatch\ngrad_accumulation: fused\n", "p.yaml"), "p.yaml"), 0));
}

TEST_CASE("the step's loss is summed over every mesh axis of size > 1 before the update: 3 doubles each", "[lower]") {
  // The runner sums (loss, lost data, stop) over the whole mesh one axis after another; the
  // lowering prices exactly those calls, after the gradient accumulation and before any gradient
  // reduction (the first meeting after the last backward pass: where the ranks wait).
  const auto m = load_model("griffin-tiny");
  for (const char* mesh : {"data=1", "data=2", "tensor=2,data=2", "fsdp=2,sequence=2,pipeline=2"}) {
    Plan p = single_device(8, 32);
    p.mesh = parse_mesh(mesh, "test");
    p.micro_batch = 1;
    const StepProgram prog = lower(m, p, 0);
    std::vector<Axis> axes;
    std::size_t first = prog.step_end.size(), first_grads = prog.step_end.size();
    for (std::size_t i = 0; i < prog.step_end.size(); ++i) {
      const Step& s = prog.step_end[i];
      if (std::strcmp(s.name, "step.metrics") == 0) {
        first = std::min(first, i);
        axes.push_back(s.axis);
        CHECK(s.kind == StepKind::collective);
        CHECK(s.comm == CommKind::all_reduce);
        CHECK(s.comm_bytes == 24);
        CHECK(!s.overlappable);
      } else if (s.kind != StepKind::compute && first_grads == prog.step_end.size()) {
        first_grads = i;
      }
    }
    INFO(mesh);
    std::vector<Axis> want;
    for (Axis a : {Axis::tensor, Axis::sequence, Axis::fsdp, Axis::data, Axis::pipeline})
      if (p.mesh[a] > 1) want.push_back(a);
    CHECK(axes == want);
    if (!want.empty()) {
      CHECK(std::strcmp(prog.step_end.front().op, "grad_accumulate") == 0);
      CHECK(first == 1);
      CHECK(first < first_grads);
    }
  }
}

TEST_CASE("the optimizer step makes two calls per parameter tensor, as the runner does", "[lower]") {
  // Independent count: the parameter layout the runner walks (program/param_layout.hpp).
  for (const char* name : {"griffin-tiny", "hawk-tiny", "mqa-tiny", "rwkv4-tiny", "rwkv6-tiny", "transformer-tiny", "gpt-tiny"}) {
    const ModelSpec m = load_model(name);
    Plan p = single_device(2, 16);
    p.model = name;
    const StepProgram prog = lower(m, p, 0);
    double calls = -1;
    for (const auto& s : prog.step_end)
      if (std::strcmp(s.op, "adamw") == 0) calls = s.calls;
    INFO(name);
    CHECK(calls == 2.0 * static_cast<double>(Layout(m).tensors.size()));
  }
}

TEST_CASE("pipeline chunks split the layers evenly, one layer short at the ends first", "[lower]") {
  // Llama 3 (Dubey et al. 2024 §3.3.2): 126 layers on 16 stages, the first and the last stage one
  // layer fewer than the others (8). Every split covers the layers once, in order, and differs
  // from an even split by at most one layer per chunk.
  for (std::int64_t s = 0; s < 16; ++s)
    REQUIRE(pipeline_chunk_layers(126, 16, s).size() == (s == 0 || s == 15 ? 7 : 8));
  for (std::int64_t depth : {1, 3, 7, 24, 96, 105, 126})
    for (std::int64_t chunks = 1; chunks <= std::min<std::int64_t>(depth, 40); ++chunks) {
      INFO("depth " << depth << " chunks " << chunks);
      std::int64_t next = 0, lo = depth, hi = 0;
      for (std::int64_t c = 0; c < chunks; ++c) {
        const Range r = pipeline_chunk_layers(depth, chunks, c);
        REQUIRE(r.begin == next);
        REQUIRE(r.size() >= 1);
        lo = std::min(lo, r.size());
        hi = std::max(hi, r.size());
        next = r.end;
      }
      REQUIRE(next == depth);
      REQUIRE(hi - lo <= 1);
      if (depth % chunks == 0) REQUIRE(hi == lo);
    }
  // a stage summary holds its chunk's layers: 126 layers on 16 stages, stage 0 layers 0..6
  Plan p = single_device(16, 64);
  p.mesh = parse_mesh("pipeline=16", "--mesh");
  const auto m = load_model("llama3-405b");
  const auto first = lower_stage(m, p, 0, 0), second = lower_stage(m, p, 1, 0);
  REQUIRE((first.first_layer == 0 && first.end_layer == 7 && second.first_layer == 7 && second.end_layer == 15));
}

TEST_CASE("a pipelined plan that names no micro-batch gets at least 4 micro-batches per stage", "[plan]") {
  // GPipe (Huang et al. 2019 §2.3): the bubble (p − 1)/(m + p − 1) is negligible once m ≥ 4·p.
  // The default is the largest micro-batch that keeps m ≥ 4·p: doubling it would not.
  for (std::int64_t local : {1, 6, 16, 64, 96, 100}) {
    for (std::int64_t p : {1, 2, 4, 8}) {
      INFO("per-replica batch " << local << ", pipeline " << p);
      const std::int64_t mb = default_micro_batch(local, p);
      REQUIRE(mb >= 1);
      REQUIRE(local % mb == 0);
      if (p == 1) { CHECK(mb == local); continue; }
      const std::int64_t m = local / mb;
      if (local >= 4 * p) CHECK(m >= 4 * p);
      else CHECK(mb == 1);
      for (std::int64_t bigger = mb + 1; bigger <= local; ++bigger)
        if (local % bigger == 0) CHECK(local / bigger < 4 * p);
    }
  }
  // and a plan file without micro_batch uses it
  const Plan p = parse_plan(YAML::Load("mesh: {pipeline: 4}\nglobal_batch: 64\nseq_len: 128\n"), "p.yaml");
  CHECK(p.micro_batch == 4);
}

TEST_CASE("interleaved 1F1B runs Megatron's order and its bubble is 1/v of the 1F1B bubble", "[lower][pipeline]") {
  // Narayanan et al. 2021 §2.2: with m a multiple of p, the k-th forward pass of a stage runs
  // micro-batch ⌊k/(p·v)⌋·p + k mod p on chunk ⌊(k mod p·v)/p⌋, the k-th backward the same
  // micro-batch on chunk v − 1 − that; (p − s − 1)·2 + (v − 1)·p warm-up forwards, then
  // alternating, then the cool-down.
  for (std::int64_t pp : {2, 3, 4})
    for (std::int64_t v : {1, 2, 3})
      for (std::int64_t m : {pp, 2 * pp, 3 * pp})
        for (std::int64_t s = 0; s < pp; ++s) {
          const std::int64_t total = m * v;
          auto fwd = [&](std::int64_t k) { return PipelinePass{true, k / (pp * v) * pp + k % pp, k % (pp * v) / pp}; };
          auto bwd = [&](std::int64_t k) { return PipelinePass{false, k / (pp * v) * pp + k % pp, v - 1 - k % (pp * v) / pp}; };
          const std::int64_t warm = std::min(total, v == 1 ? pp - s - 1 : (pp - s - 1) * 2 + (v - 1) * pp);
          std::vector<PipelinePass> want;
          for (std::int64_t k = 0; k < warm; ++k) want.push_back(fwd(k));
          for (std::int64_t k = warm; k < total; ++k) { want.push_back(fwd(k)); want.push_back(bwd(k - warm)); }
          for (std::int64_t k = total - warm; k < total; ++k) want.push_back(bwd(k));
          INFO("p=" << pp << " v=" << v << " m=" << m << " stage " << s);
          CHECK(pipeline_schedule(Schedule::one_f_one_b, m, pp, v, s) == want);
        }
  // The bubble: run every stage's order with a forward chunk pass of 1 unit and a backward of 2,
  // each pass waiting for the one it depends on (the previous model chunk's forward; the next
  // one's backward, or its own forward on the model's last chunk). With the same work per stage —
  // 1F1B's passes are v times longer — each stage idles (p − 1)·3·v units under 1F1B and
  // (p − 1)·3 interleaved: the bubble shrinks by v (§2.2), and the orders never wait on each
  // other in a cycle (the runner's blocking receives would hang). With m not a multiple of p the
  // last group is longer than p: the orders can wait in a cycle (p = 4, v = 3, m = 9), which is
  // why check_plan requires pipeline to divide the micro-batches of an interleaved plan.
  // idle() returns each stage's idle units, or nothing when some stage can never go on.
  auto idle = [](std::int64_t m, std::int64_t pp, std::int64_t v, double f, double b) {
    std::vector<std::vector<PipelinePass>> orders;
    for (std::int64_t s = 0; s < pp; ++s) orders.push_back(pipeline_schedule(Schedule::one_f_one_b, m, pp, v, s));
    std::map<std::tuple<bool, std::int64_t, std::int64_t>, double> done;  // (forward, micro, model chunk) -> end
    std::vector<double> free(static_cast<std::size_t>(pp), 0), busy = free;
    std::vector<std::size_t> at(static_cast<std::size_t>(pp), 0);
    for (bool moved = true; moved;) {
      moved = false;
      for (std::int64_t s = 0; s < pp; ++s) {
        auto& i = at[static_cast<std::size_t>(s)];
        for (; i < orders[static_cast<std::size_t>(s)].size(); ++i) {
          const PipelinePass q = orders[static_cast<std::size_t>(s)][i];
          const std::int64_t g = q.chunk * pp + s, last = pp * v - 1;
          std::optional<std::tuple<bool, std::int64_t, std::int64_t>> dep;
          if (q.forward && g > 0) dep = {true, q.micro, g - 1};
          if (!q.forward) dep = g < last ? std::tuple{false, q.micro, g + 1} : std::tuple{true, q.micro, g};
          if (dep && !done.count(*dep)) break;
          const double start = std::max(free[static_cast<std::size_t>(s)], dep ? done.at(*dep) : 0.0), d = q.forward ? f : b;
          done[{q.forward, q.micro, g}] = start + d;
          free[static_cast<std::size_t>(s)] = start + d;
          busy[static_cast<std::size_t>(s)] += d;
          moved = true;
        }
      }
    }
    std::vector<double> out;
    for (std::int64_t s = 0; s < pp; ++s)
      if (at[static_cast<std::size_t>(s)] != orders[static_cast<std::size_t>(s)].size()) return out;
    const double makespan = *std::max_element(free.begin(), free.end());
    for (double x : busy) out.push_back(makespan - x);
    return out;
  };
  for (std::int64_t pp : {2, 3, 4})
    for (std::int64_t v : {2, 3})
      for (std::int64_t m : {pp, 2 * pp, 3 * pp}) {
        const auto plain = idle(m, pp, 1, 1.0 * static_cast<double>(v), 2.0 * static_cast<double>(v));
        const auto inter = idle(m, pp, v, 1.0, 2.0);
        INFO("p=" << pp << " v=" << v << " m=" << m);
        REQUIRE(plain.size() == static_cast<std::size_t>(pp));
        REQUIRE(inter.size() == static_cast<std::size_t>(pp));
        for (std::int64_t s = 0; s < pp; ++s) {
          const auto i = static_cast<std::size_t>(s);
          CHECK(plain[i] == Approx(static_cast<double>((pp - 1) * 3 * v)));
          CHECK(inter[i] == Approx(static_cast<double>((pp - 1) * 3)));
        }
      }
  CHECK(idle(9, 4, 3, 1.0, 2.0).empty());  // a last group of 5 on 4 stages: a cycle
  CHECK(idle(9, 4, 1, 3.0, 6.0).size() == 4);  // plain 1F1B runs any m
  // GPipe: every forward, then every backward, in micro-batch order
  const auto g = pipeline_schedule(Schedule::gpipe, 3, 2, 1, 0);
  CHECK(g == std::vector<PipelinePass>{{true, 0, 0}, {true, 1, 0}, {true, 2, 0}, {false, 0, 0}, {false, 1, 0}, {false, 2, 0}});
  // the micro-batches alive at once: 1F1B p − s; interleaved more (the executor's activation slots)
  CHECK(live_micro_batches(pipeline_schedule(Schedule::one_f_one_b, 8, 4, 1, 0)) == 4);
  CHECK(live_micro_batches(pipeline_schedule(Schedule::one_f_one_b, 8, 4, 1, 3)) == 1);
  CHECK(live_micro_batches(g) == 3);
}

TEST_CASE("an interleaved stage's program runs each chunk's receive then layers then send priced as before", "[lower][pipeline]") {
  // gpt-tiny at 8 layers on 2 stages of 2 chunks: stage 0 holds layers 0-1 and 4-5, stage 1
  // layers 2-3 and 6-7. Stage 0's chunk 1 receives from stage 1 and sends on; stage 1's chunk 0
  // sends to stage 0. Every transfer is one hop: a middle boundary costs what one chunk of
  // 1F1B's multi-hop step cost per hop.
  ModelSpec m = load_model("gpt-tiny");
  m.depth = 8;
  Plan p = single_device(4, 32);
  p.micro_batch = 1;
  p.mesh[Axis::pipeline] = 2;
  p.virtual_stages = 2;
  const auto s0 = lower(m, p, 0), s1 = lower(m, p, 1);
  auto layers = [](const StepProgram& prog) {
    std::vector<std::int64_t> out;
    for (const Range& r : prog.chunk_layers) out.insert(out.end(), {r.begin, r.end});
    return out;
  };
  REQUIRE(layers(s0) == std::vector<std::int64_t>{0, 2, 4, 6});
  REQUIRE(layers(s1) == std::vector<std::int64_t>{2, 4, 6, 8});
  auto names = [](const StepProgram& prog, bool forward, std::size_t j) {
    const Range r = (forward ? prog.forward_chunk : prog.backward_chunk)[j];
    const auto& steps = forward ? prog.forward : prog.backward;
    std::vector<std::string> out;
    for (std::int64_t i = r.begin; i < r.end; ++i)
      if (steps[static_cast<std::size_t>(i)].kind == StepKind::p2p || steps[static_cast<std::size_t>(i)].layer < 0)
        out.push_back(steps[static_cast<std::size_t>(i)].name);
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(names(s0, true, 0).back() == "pipeline.send_activations");
  CHECK(names(s0, true, 1).front() == "pipeline.recv_activations");
  CHECK(names(s0, true, 1).back() == "pipeline.send_activations");
  CHECK(names(s1, true, 0) == V{"pipeline.recv_activations", "pipeline.send_activations"});
  CHECK(names(s1, true, 1).front() == "pipeline.recv_activations");
  CHECK(names(s1, false, 0) == V{"pipeline.recv_gradients", "pipeline.send_gradients"});
  CHECK(names(s0, false, 1) == V{"pipeline.recv_gradients", "pipeline.send_gradients"});
  // the chunks tile the whole stage's lists: backward runs chunk 1 first
  CHECK(s0.forward_chunk[0].begin == 0);
  CHECK(s0.forward_chunk[1].begin == s0.forward_chunk[0].end);
  CHECK(s0.forward_chunk[1].end == static_cast<std::int64_t>(s0.forward.size()));
  CHECK(s0.backward_chunk[1].begin == 0);
  CHECK(s0.backward_chunk[0].begin == s0.backward_chunk[1].end);
  CHECK(s0.backward_chunk[0].end == static_cast<std::int64_t>(s0.backward.size()));
  // every transfer is one hop of one micro-batch's activations [B·T, D] (fp32 here)
  int sends = 0;
  for (const auto& st : s1.forward)
    if (st.kind == StepKind::p2p) {
      CHECK(st.hops == 1);
      CHECK(st.comm_bytes == 1.0 * 32 * static_cast<double>(m.width) * bytes_of(p.act_dtype));
      ++sends;
    }
  CHECK(sends == 3);  // receive chunk 0, send chunk 0, receive chunk 1 (chunk 1 ends with the head)
}

TEST_CASE("a parallel block has one norm and one tensor-parallel entry and exit per layer, and the same GEMM work", "[lower]") {
  // PaLM (Chowdhery et al. 2022 §2): y = x + Attention(LN(x)) + MLP(LN(x)). Against the
  // sequential block of the same shapes: no second norm (and no norm2 parameters), one forward
  // all-reduce of [B·T, D] per layer instead of two, one backward input-gradient all-reduce
  // instead of two, and every GEMM unchanged (W3 accumulates into the attention output: it also
  // reads that [B·T, D] output).
  const std::string base =
      "name: t\nfamily: transformer\nwidth: 64\ndepth: 3\nheads: 4\nvocab: 256\npositions: rotary\nmlp: swiglu\n"
      "mlp_width: 128\nnorm: layernorm\nbias: false\n";
  const ModelSpec seq = model_from(base), par = model_from(base + "block: parallel\n");
  REQUIRE(par.parallel_block);
  CHECK(count_parameters(seq).total - count_parameters(par).total == seq.depth * 2 * seq.width);  // norm2 scale + bias
  Plan p = single_device(2, 32);
  p.mesh[Axis::tensor] = 2;
  const auto a = lower(seq, p, 0), b = lower(par, p, 0);
  CHECK(sum_matmul(b.forward) == Approx(sum_matmul(a.forward)).epsilon(1e-12));
  CHECK(sum_matmul(b.backward) == Approx(sum_matmul(a.backward)).epsilon(1e-12));
  auto count = [](const std::vector<Step>& steps, auto&& keep) {
    return std::count_if(steps.begin(), steps.end(), keep);
  };
  const double act = 2 * 32 * 64 * 2.0;  // [B·T, D] in bf16
  auto tensor_ar = [act](const Step& s) { return s.comm == CommKind::all_reduce && s.axis == Axis::tensor && s.comm_bytes == act; };
  auto norms = [](const Step& s) { return s.cls == OpClass::norm && s.layer >= 0; };
  CHECK(count(a.forward, tensor_ar) - count(b.forward, tensor_ar) == seq.depth);
  CHECK(count(a.backward, tensor_ar) - count(b.backward, tensor_ar) == seq.depth);
  CHECK(count(a.forward, norms) == 2 * seq.depth);
  CHECK(count(b.forward, norms) == seq.depth);
  // PaLM 540B's parameter count, Table 1: 540.35B (scanshard keeps a LayerNorm bias the paper drops:
  // 2·118·18432 = 4.35M more, plus the final norm's)
  CHECK(static_cast<double>(count_parameters(load_model("palm-540b")).total) == Approx(540.35e9).epsilon(1e-4));
}

TEST_CASE("ZeRO-2/3 reduce-scatter every block gradient in every micro-batch and the comm buffer is one block", "[lower][zero]") {
  // Closed forms from the model's parameter tensors (program/model.cpp parameter_tensors), not from
  // the lowering: in each micro-batch's backward the fsdp reduce-scatters carry every block's
  // parameters once (a layer's, the embedding's, the final norm's and head's) in the gradient
  // dtype — over a step Σ blocks × micro-batches, of which a ring puts (f−1)/f on each rank's
  // link (sim/cost.cpp) — and the step end reduce-scatters nothing more; ZeRO-1 keeps its one
  // reduce-scatter of the whole gradient at the step end. Memory's comm buffer is the largest
  // block's gradient (ZeRO-2) or, under ZeRO-3, that beside the layer's gathered parameters.
  for (const char* name : {"griffin-tiny", "gpt-tiny"}) {
    const auto m = load_model(name);
    std::map<std::string, double> block;  // parameters per block: "layer.<i>", "embed", "final" (with an untied head)
    double total = 0;
    for (const auto& t : parameter_tensors(m)) {
      block[t.block == "head" ? "final" : t.block] += static_cast<double>(t.count());
      total += static_cast<double>(t.count());
    }
    double largest_layer = 0;
    for (std::int64_t l = 0; l < m.depth; ++l) largest_layer = std::max(largest_layer, block.at("layer." + std::to_string(l)));
    const double largest_block = std::max({largest_layer, block.at("embed"), block.at("final")});
    const double f = 4, gb = 4, w = 2;  // fsdp; fp32 gradient messages, bf16 parameters
    Plan p = single_device(16, 32);
    p.mesh[Axis::fsdp] = static_cast<std::int64_t>(f);
    p.micro_batch = 1;  // 4 sequences per replica: 4 micro-batches
    p.param_dtype = DType::bf16;
    p.grad_dtype = GradDType::fp32;
    for (int zero : {1, 2, 3}) {
      INFO(name << ", ZeRO " << zero);
      p.zero_stage = zero;
      const StepProgram prog = lower(m, p, 0);
      REQUIRE(prog.micro_batches == 4);
      double per_micro = 0, at_end = 0;
      for (const Step& s : prog.backward) {
        if (s.comm != CommKind::reduce_scatter || s.axis != Axis::fsdp) continue;
        per_micro += s.comm_bytes;
        CHECK(s.overlappable);  // behind the backward compute, whatever the step end's `overlap`
        if (s.layer >= 0) CHECK(s.comm_bytes == block.at("layer." + std::to_string(s.layer)) * gb);
      }
      for (const Step& s : prog.step_end)
        if (s.comm == CommKind::reduce_scatter && s.axis == Axis::fsdp) at_end += s.comm_bytes;
      const double step_bytes = per_micro * static_cast<double>(prog.micro_batches) + at_end;
      CHECK(step_bytes == (zero == 1 ? 1.0 : 4.0) * total * gb);
      CHECK(at_end == (zero == 1 ? total * gb : 0.0));
      CHECK(step_bytes * (f - 1) / f == Approx((zero == 1 ? 1 : 4) * total * gb * 3 / 4));  // a ring rank's link
      const MemoryBreakdown mem = stage_memory(stage_summaries(m, p), p, ChipSpec{});
      if (zero == 1) CHECK(mem.buffers_bytes == total * gb);  // the step end's reduce-scatter of the whole gradient
      if (zero == 2) CHECK(mem.buffers_bytes == largest_block * gb);
      if (zero == 3) CHECK(mem.buffers_bytes == std::max(largest_layer * (gb + w), largest_block * gb));
      CHECK(mem.grads_bytes == total * 4 / (zero >= 2 ? f : 1));  // the fp32 accumulator: a shard from ZeRO-2 on
    }
  }
}

TEST_CASE("async_tensor_comm makes each column-split block's input-gradient collective overlappable and nothing else", "[lower]") {
  // Megatron-LM's asynchronous tensor-parallel communication (Plan::async_tensor_comm): per
  // layer, attention's and the MLP's entry each have one backward collective of the input
  // gradient, [B·T, D] in the activation dtype: an all-reduce, or under rs_ag a reduce-scatter.
  // Those two become overlappable; every step keeps its kind, bytes and FLOPs.
  const auto m = load_model("megatron-22b");
  for (auto [comm, remat] : {std::pair{TensorComm::allreduce, Remat::block}, {TensorComm::rs_ag, Remat::selective}}) {
    INFO("tensor_comm " << to_string(comm) << " remat " << to_string(remat));
    Plan p = single_device(4, 2048);
    p.mesh[Axis::tensor] = 8;
    p.tensor_comm = comm;
    p.remat = remat;
    const auto sync = lower_stage(m, p, 0, 0).groups.at(0).lowered->backward;
    p.async_tensor_comm = true;
    const auto async = lower_stage(m, p, 0, 0).groups.at(0).lowered->backward;
    REQUIRE(sync.size() == async.size());
    const double entry_bytes = 4.0 * 2048 * 6144 * 2;
    const CommKind kind = comm == TensorComm::allreduce ? CommKind::all_reduce : CommKind::reduce_scatter;
    int newly_hidden = 0;
    for (std::size_t i = 0; i < sync.size(); ++i) {
      const Step &a = sync[i], &b = async[i];
      REQUIRE(std::strcmp(a.name, b.name) == 0);
      REQUIRE(a.kind == b.kind);
      REQUIRE(a.comm_bytes == b.comm_bytes);
      REQUIRE(a.matmul_flops == b.matmul_flops);
      if (a.overlappable == b.overlappable) continue;
      ++newly_hidden;
      CHECK(b.overlappable);
      CHECK(b.phase == Phase::backward);
      CHECK(b.axis == Axis::tensor);
      CHECK(b.comm == kind);
      CHECK(b.comm_bytes == entry_bytes);
      CHECK((std::strcmp(b.name, "attn.in_grad") == 0 || std::strcmp(b.name, "mlp.in_grad") == 0));
    }
    CHECK(newly_hidden == 2);
  }
}

TEST_CASE("gradient_sync last_microbatch reduce-scatters the whole gradient once per step and holds it whole", "[lower][zero]") {
  // Closed forms from the model's parameter tensors (P parameters in all), f = fsdp, m = 4
  // micro-batches, fp32 gradient messages (gb = 4 B), bf16 parameters (w = 2 B). With
  // `gradient_sync: last_microbatch` (PyTorch FSDP under its pipeline schedules; Llama 3) a step
  // moves each parameter's gradient over fsdp once — P·gb, of which a ring rank's link carries
  // (f−1)/f — where every_microbatch moves it m times; the reduce-scatter is the step end's (ZeRO-1's)
  // and hides behind the last backward when `overlap` says so. The fp32 accumulator is whole
  // through the step: (1 − 1/f)·P·4 B more than every_microbatch's shard; ZeRO-3's parameters stay
  // gathered (no per-layer gathers, one gather of P·w at the step end), (1 − 1/f)·P·w B more.
  for (const char* name : {"griffin-tiny", "gpt-tiny"}) {
    const auto m = load_model(name);
    double total = 0;
    for (const auto& t : parameter_tensors(m)) total += static_cast<double>(t.count());
    const double f = 4, gb = 4, w = 2, micro = 4;
    Plan p = single_device(16, 32);
    p.mesh[Axis::fsdp] = static_cast<std::int64_t>(f);
    p.micro_batch = 1;
    p.param_dtype = DType::bf16;
    p.grad_dtype = GradDType::fp32;
    for (int zero : {2, 3})
      for (bool overlap : {true, false}) {
        INFO(name << ", ZeRO " << zero << ", overlap " << overlap);
        p.zero_stage = zero;
        p.overlap = overlap;
        auto fsdp_bytes = [](const std::vector<Step>& steps, CommKind kind) {
          double b = 0;
          for (const Step& s : steps)
            if (s.kind == StepKind::collective && s.axis == Axis::fsdp && s.comm == kind) b += s.comm_bytes;
          return b;
        };
        p.gradient_sync = GradientSync::every_microbatch;
        const StepProgram every = lower(m, p, 0);
        const MemoryBreakdown every_mem = stage_memory(stage_summaries(m, p), p, ChipSpec{});
        p.gradient_sync = GradientSync::last_microbatch;
        const StepProgram last = lower(m, p, 0);
        const MemoryBreakdown last_mem = stage_memory(stage_summaries(m, p), p, ChipSpec{});
        REQUIRE(last.micro_batches == micro);
        // per micro-batch: no reduce-scatter, no gather
        CHECK(fsdp_bytes(last.backward, CommKind::reduce_scatter) == 0);
        CHECK(fsdp_bytes(last.forward, CommKind::all_gather) + fsdp_bytes(last.backward, CommKind::all_gather) == 0);
        // per step: each parameter's gradient once, against m times
        const double every_step = micro * fsdp_bytes(every.backward, CommKind::reduce_scatter) + fsdp_bytes(every.step_end, CommKind::reduce_scatter);
        const double last_step = micro * fsdp_bytes(last.backward, CommKind::reduce_scatter) + fsdp_bytes(last.step_end, CommKind::reduce_scatter);
        CHECK(last_step == total * gb);
        CHECK(every_step == micro * total * gb);
        CHECK(last_step * (f - 1) / f == Approx(total * gb * 3 / 4));  // a ring rank's link
        for (const Step& s : last.step_end)
          if (s.comm == CommKind::reduce_scatter && s.axis == Axis::fsdp) CHECK(s.overlappable == overlap);
        // the parameters: gathered once per step, whole (ZeRO-2 as before; ZeRO-3 instead of 2·m per layer)
        CHECK(fsdp_bytes(last.step_end, CommKind::all_gather) == total * w);
        // memory: the accumulator (and ZeRO-3's parameters) whole; the buffer is the whole gradient's (ZeRO-1's)
        CHECK(last_mem.grads_bytes - every_mem.grads_bytes == Approx((1 - 1 / f) * total * 4));
        CHECK(last_mem.params_bytes - every_mem.params_bytes == Approx(zero == 3 ? (1 - 1 / f) * total * w : 0.0));
        CHECK(last_mem.optimizer_bytes == every_mem.optimizer_bytes);
        // the step end's reduce-scatter of the whole gradient (ZeRO-1's buffer) runs beside at most
        // the last backward's activations — one micro-batch's, all this one-stage plan holds
        CHECK(last_mem.buffers_bytes == total * gb);
      }
  }
  // the plan file: parsed, written back, refused with the key named (ZeRO-1 with last_microbatch)
  check_plan_key(load_model("griffin-tiny"), "model: griffin-tiny\nmesh: {fsdp: 2}\nglobal_batch: 4\nseq_len: 32\n",
                 "gradient_sync", &Plan::gradient_sync, "last_microbatch", GradientSync::last_microbatch,
                 GradientSync::every_microbatch, "once", "last_microbatch", "zero_stage: 1\ngradient_sync: last_microbatch\n");
}

TEST_CASE("ZeRO-2/3 with gradient_sync last_microbatch are ZeRO-1 during the step: the same price and memory", "[lower][zero][sim]") {
  // What the planner's zero=1 family prices is the once-per-step reduce-scatter: ZeRO-2 or 3 with
  // `gradient_sync: last_microbatch` hold the whole fp32 accumulator (and ZeRO-3 the whole
  // parameters) through the step and reduce-scatter once at its end, which is ZeRO-1's step
  // (zero_stage_during_step). Closed forms on P local parameters, f = 32: state P·(2 + 4 + 12/f)
  // bytes; fsdp bytes per step: the whole gradient reduce-scattered (P·4) and the parameters
  // gathered (P·2) once — against ZeRO-2 every_microbatch's m·P·4 reduce-scattered.
  const auto m = load_model("mqa-200m");
  const auto c = load_cluster("dgx-h100-32");
  Plan p;
  p.mesh = parse_mesh("fsdp=32,tensor=4,pipeline=2", "--mesh");  // 256 H100s
  p.global_batch = 256;
  p.micro_batch = 2;
  p.seq_len = 1024;
  p.param_dtype = p.act_dtype = DType::bf16;
  p.grad_dtype = GradDType::fp32;
  const double micro = 4, f = 32;
  REQUIRE(p.micro_batches() == micro);
  auto fsdp_step_bytes = [&](const Plan& q, CommKind kind) {
    const StepProgram prog = lower(m, q, 0);
    double b = 0;
    for (const auto* list : {&prog.forward, &prog.backward})
      for (const Step& s : *list)
        if (s.kind == StepKind::collective && s.axis == Axis::fsdp && s.comm == kind) b += micro * s.comm_bytes;
    for (const Step& s : prog.step_end)
      if (s.kind == StepKind::collective && s.axis == Axis::fsdp && s.comm == kind) b += s.comm_bytes;
    return std::pair{b, static_cast<double>(prog.local_params)};
  };
  p.zero_stage = 1;
  const Estimate one = simulate(m, p, c);
  const auto [one_rs, P] = fsdp_step_bytes(p, CommKind::reduce_scatter);
  CHECK(one_rs == Approx(P * 4));
  CHECK(fsdp_step_bytes(p, CommKind::all_gather).first == Approx(P * 2));
  p.zero_stage = 2;
  CHECK(fsdp_step_bytes(p, CommKind::reduce_scatter).first == Approx(micro * P * 4));
  for (int zero : {2, 3}) {
    INFO("ZeRO " << zero);
    p.zero_stage = zero;
    p.gradient_sync = GradientSync::last_microbatch;
    const Estimate last = simulate(m, p, c);
    CHECK(last.step_seconds == one.step_seconds);
    CHECK(last.memory.total_bytes == one.memory.total_bytes);
    CHECK(fsdp_step_bytes(p, CommKind::reduce_scatter).first == Approx(P * 4));
    CHECK(fsdp_step_bytes(p, CommKind::all_gather).first == Approx(P * 2));
    p.gradient_sync = GradientSync::every_microbatch;
  }
  // the critical stage's state, ZeRO-1 = last_microbatch: P·(2 + 4 + 12/f)
  const StageSummary st = lower_stage(m, p, p.mesh[Axis::pipeline] - 1, 0);
  const double Pc = static_cast<double>(st.local_params);
  p.zero_stage = 3;
  p.gradient_sync = GradientSync::last_microbatch;
  const MemoryBreakdown mem = stage_memory({st}, p, ChipSpec{});
  CHECK(mem.params_bytes + mem.grads_bytes + mem.optimizer_bytes == Approx(Pc * (2 + 4 + 12 / f)));
}

TEST_CASE("logit_metrics adds that many no-grad cross-entropies over the logits before the loss, 14 B per bf16 logit", "[lower][plan]") {
  // Composer's train metrics (Plan::logit_metrics): each a torch cross_entropy over the last
  // stage's n × V/t logits under autocast — the fp32 copy of the logits (read a, write 4 B), then
  // log_softmax over it (read 4, write 4 B); fp32 logits skip the copy. Forward only, nothing kept.
  const auto m = load_model("mpt-125m");
  const double V = static_cast<double>(m.vocab);
  for (auto [t, act, read, written, calls] :
       {std::tuple{1, DType::bf16, 6.0, 8.0, 3.0}, std::tuple{2, DType::bf16, 6.0, 8.0, 3.0}, std::tuple{1, DType::fp32, 4.0, 4.0, 2.0}}) {
    INFO("tensor " << t << " activations " << to_string(act));
    Plan p = single_device(2, 256);
    p.mesh[Axis::tensor] = t;
    p.act_dtype = act;
    const StepProgram base = lower(m, p, 0);
    p.logit_metrics = 2;
    const StepProgram with = lower(m, p, 0);
    REQUIRE(with.forward.size() == base.forward.size() + 2);
    CHECK(with.backward.size() == base.backward.size());
    const double logits = 2.0 * 256 * std::ceil(V / t);
    int metrics = 0;
    bool loss_seen = false;
    for (const Step& s : with.forward) {
      if (std::string_view(s.op) == "softmax_xent") loss_seen = true;
      if (std::string_view(s.op) != "metric_xent") continue;
      ++metrics;
      CHECK_FALSE(loss_seen);  // before the loss turns the logits into probabilities in place
      CHECK(s.cls == OpClass::elementwise);
      CHECK(s.bytes_read == logits * read);
      CHECK(s.bytes_written == logits * written);
      CHECK(s.calls == calls);
      CHECK(s.saved_bytes == 0);
      CHECK(s.matmul_flops == 0);
    }
    CHECK(metrics == 2);
    for (const Step& s : with.backward) CHECK(std::string_view(s.op) != "metric_xent");
    CHECK(with.saved_activation_bytes == base.saved_activation_bytes);
    CHECK(with.model_flops_per_step == base.model_flops_per_step);
  }
  // the plan file: parsed, written back, refused out of range with the key named
  const Plan p = parse_plan(parse_yaml("global_batch: 4\nseq_len: 32\nlogit_metrics: 2\n", "p.yaml"), "p.yaml");
  CHECK(p.logit_metrics == 2);
  CHECK(parse_plan(parse_yaml(plan_to_yaml(p), "q.yaml"), "q.yaml").logit_metrics == 2);
  CHECK(parse_plan(parse_yaml("global_batch: 4\nseq_len: 32\n", "p.yaml"), "p.yaml").logit_metrics == 0);
  CHECK_THROWS_WITH(parse_plan(parse_yaml("global_batch: 4\nseq_len: 32\nlogit_metrics: -1\n", "p.yaml"), "p.yaml"),
                    Catch::Contains("p.yaml") && Catch::Contains("logit_metrics"));
}
