// cli/calibrate_command.cpp — `scanshard calibrate`: measure this machine and write it as a cluster
// YAML (DESIGN §7) that `simulate`, `plan`, `validate` and `report` read like any preset. Run as
//   mpirun -n N scanshard calibrate [--out cpu-local.yaml] [--name cpu-local] [--quick]
// or plainly (one rank: no network measurements; the link numbers stay the cpu-local preset's
// placeholders and `source:` says so). One rank = one core = one device, so every benchmark runs
// single-threaded (OpenMP and OpenBLAS), on all ranks at once (as they will when training).
//
// What is measured, and what it becomes in the cluster file:
//   * OpenBLAS cblas_sgemm at several shapes -> peak_flops_per_s.fp32 (the best rate);
//   * a STREAM-triad loop at working sets from L2-sized to DRAM-sized -> memory_bytes_per_s (the
//     best rate: the roofline ceiling) and efficiency.memory_curve (each working set's rate as a
//     fraction of it, so a step's bandwidth follows the bytes it moves);
//   * an FMA loop on registers -> vector_flops_per_s;
//   * a tiny kernel call -> launch_overhead_seconds;
//   * per op class, the kernels the runner's executor calls for one layer's steps (kernels::fast,
//     same call pattern) on griffin-tiny / mqa-tiny shapes (4 sequences x 128 tokens), priced
//     with the same lowering and cost function the simulator uses: the class efficiency is the
//     value at which the roofline price of those steps equals the measured (best) time
//     (bisection; clamped to (0, 1]). Benchmarks: elementwise = gelu ⊙ of the recurrent gate,
//     Conv1D, RoPE (with the executor's staging copies), softmax cross-entropy and a residual
//     add, together; norm = RMSNorm and LayerNorm (rwkv4-tiny); gemm = the gated MLP and the recurrent projections
//     (fitted together, time-weighted; each one's own value is recorded); scan = the fused
//     RG-LRU scan; attention = local (griffin-tiny) and global (mqa-tiny) attention together.
//     Order: elementwise, norm, gemm (the MLP contains a gelu ⊙), scan, attention. Then the
//     kernels priced on their own (efficiency.ops): the fused gelu ⊙ (gelu_mul), Conv1D, RoPE,
//     the cross-entropy, the residual add, RMSNorm and LayerNorm (each also in its class's fit,
//     which prices the kernels not timed here: one class value mixes kernels 25x apart per
//     priced FLOP), the RG-LRU's block-diagonal gates (blockdiag: thin GEMMs, ~half the square
//     GEMMs' rate), AdamW (adamw: measured 40 % slower than the elementwise class prices it), the
//     runner's gradient accumulation (grad_accumulate: 2-3x slower than the class prices it), the
//     clear of a layer's gradient buffers (zero: a cold memset), and the other recurrence kernels (wkv4.scan on rwkv4-tiny; the
//     RWKV-6 kernel the runner calls, fitted as both wkv6.scan and wkv6.chunked, which the
//     lowering prices differently): per element they do 3x to 30x the RG-LRU's work, so the
//     RG-LRU's class value priced RWKV-6's WKV at 1/7 of its measured time;
//   * MPI (N > 1): all-reduce, all-gather, reduce-scatter and ring send/recv at 8 B … 64 MiB
//     (buffer per rank; all-gather: the gathered result), each call timed as a step makes it:
//     after a stretch of sgemm, the ranks released together by a barrier (time_collective),
//     each fitted to latency + bytes/bandwidth
//     on relative residuals; the island link (bytes/s, per-step latency) comes from the
//     all-reduce fit — the collective data/fsdp training uses — through the simulator's ring
//     formula 2(P−1)/P·bytes/bw + 2(P−1)·latency; efficiency.network = 1.
// The peaks (sgemm, triad, FMA) are the best of repeated runs: other processes on the machine only
// ever slow a run down, and a cluster file describes the hardware, not the moment's load
// (recorded under measurements: load_average_1min). The kernels' times, which become
// efficiencies against those peaks, and the collectives' are the median call: a training step
// is a hundred-odd kernels and collectives each at its typical speed.
// Raw numbers go under `measurements:` (free-form; the loader accepts and ignores it). The text
// is read back by the strict cluster loader, then written to --out atomically (output_file.hpp).
// --quick: fewer shapes and repetitions, messages up to 1 MiB (seconds, for tests).
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include <mpi.h>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "cli/compare.hpp"
#include "cli/format.hpp"
#include "cli/probe.hpp"
#include "cli/vector_loops.hpp"
#include "kernels/adamw.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/attention.hpp"
#include "kernels/conv1d.hpp"
#include "kernels/embedding.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv_ops.hpp"
#include "program/param_layout.hpp"
#include "program/lower.hpp"
#include "program/output_file.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "sim/cost.hpp"
#include "sim/stats.hpp"
#include "train/comm.hpp"

namespace scanshard {
namespace {

namespace K = kernels::fast;
using i64 = std::int64_t;

struct CalibrateOptions {
  std::string out = "cpu-local.yaml";
  std::string name = "cpu-local";
  bool quick = false;
};

std::vector<float> random_vector(std::size_t n, float scale, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

// ─── compute benchmarks ─────────────────────────────────────────────────────────────────────────

struct GemmSample { i64 m, n, k; double seconds, flops_per_s; };

std::vector<GemmSample> bench_sgemm(bool quick) {
  std::vector<std::array<i64, 3>> shapes = {{512, 384, 128}, {512, 128, 128}, {256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024}};
  if (!quick) shapes.insert(shapes.end(), {{64, 64, 64}, {2048, 384, 128}, {2048, 128, 384}, {2048, 2048, 512}});
  std::vector<GemmSample> out;
  for (const auto& shape : shapes) {
    const i64 m = shape[0], n = shape[1], k = shape[2];  // plain names: lambdas may capture them (clang 14)
    auto a = random_vector(m * k, 1, 1), b = random_vector(k * n, 1, 2);
    std::vector<float> c(m * n);
    const double s = best_seconds([&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.0f, a.data(), int(k), b.data(), int(n),
                  0.0f, c.data(), int(n));
    }, quick ? 0.02 : 0.1);
    out.push_back({m, n, k, s, 2.0 * double(m) * double(n) * double(k) / s});
  }
  return out;
}

struct TriadSample { double bytes, bytes_per_s; };

// a = b + s·c over three float arrays of `bytes` in total; counts 12 bytes per element.
std::vector<TriadSample> bench_triad(bool quick) {
  std::vector<double> sizes = {384.0 * 1024, 3.0 * 1024 * 1024, 24.0 * 1024 * 1024};
  if (!quick) sizes.push_back(192.0 * 1024 * 1024);
  std::vector<TriadSample> out;
  for (double bytes : sizes) {
    const std::size_t n = static_cast<std::size_t>(bytes / 12);
    std::vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
    const float s = 0.5f;
    const double t = best_seconds([&] { vector_loops::triad(a.data(), b.data(), c.data(), s, n); },
                                  quick ? 0.02 : 0.1);
    volatile float sink = a[n / 2];
    (void)sink;
    out.push_back({12.0 * double(n), 12.0 * double(n) / t});
  }
  return out;
}

// Multiply-adds on 128 independent lanes held in registers: the vector unit's FLOP/s.
double bench_vector_flops(bool quick) {
  constexpr int kLanes = 128;
  alignas(64) float acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = 1.0f + 1e-3f * float(j);
  const float mul = 0.999999f, add = 1e-7f;
  const long reps = 20000;  // ~1-2 ms per timed call
  const double t = best_seconds([&] { vector_loops::fma_lanes128(acc, reps, mul, add); }, quick ? 0.02 : 0.1);
  float sum = 0;
  for (float x : acc) sum += x;
  volatile float sink = sum;
  (void)sink;
  return 2.0 * kLanes * double(reps) / t;
}

// Per-call cost of a kernel on a tiny input (what a step costs beyond its FLOPs and bytes).
double bench_launch_overhead() {
  const i64 M = 1, D = 16;
  auto x = random_vector(M * D, 1, 3), scale = random_vector(D, 0.1f, 4);
  std::vector<float> y(M * D), rstd(M);
  constexpr int kCalls = 2000;
  return best_seconds([&] {
    for (int i = 0; i < kCalls; ++i) K::rmsnorm_forward(y.data(), rstd.data(), x.data(), scale.data(), M, D);
  }, 0.02) / kCalls;
}

// ─── per-class efficiency from the runner's kernels ────────────────────────────────────────────

struct KernelBench {
  std::string cls;      // efficiency field fitted: elementwise, norm, gemm, scan, attention
  std::string model;    // preset whose shapes (and lowering) are used
  std::string group;    // label: the program steps the kernels implement
  std::vector<std::string> names;  // those steps' names (forward and backward of one layer)
  std::function<void()> run;  // the kernels train/executor.cpp calls for them, one micro-batch
  double seconds = 0;   // measured (median of repeated cold calls, mean over ranks)
  double efficiency = 0;
  bool clamped = false;
  std::string op{};  // non-empty: fits efficiency.ops[op], its own value (kTunedOps) ...
  bool also_class = false;  // ... and, if set, joins its class's fit too (else only its own)
  // Inputs that the step's previous op has just written (the forward input, the incoming
  // gradient): rewritten, untimed, after the eviction pass, so they are in cache as in a step.
  std::vector<std::pair<float*, std::size_t>> hot{};
  ScanAlgo scan = ScanAlgo::sequential;  // the plan whose lowering prices it
};

constexpr i64 kBenchBatch = 4, kBenchSeq = 128;

Plan bench_plan(const std::string& model, ScanAlgo scan = ScanAlgo::sequential) {
  Plan p;
  p.scan = scan;
  p.model = model;
  p.global_batch = kBenchBatch;
  p.micro_batch = kBenchBatch;
  p.seq_len = kBenchSeq;
  p.param_dtype = p.act_dtype = DType::fp32;
  return p;
}

// Compute steps named in `names` (forward, backward and step end), of the first layer that has
// them (−1 for the embedding, head, loss and optimizer).
std::vector<Step> named_steps(const ModelSpec& m, const std::vector<std::string>& names,
                              ScanAlgo scan = ScanAlgo::sequential) {
  const StepProgram prog = lower(m, bench_plan(m.name, scan), 0);
  auto wanted = [&](const Step& s) { return std::find(names.begin(), names.end(), std::string(s.name)) != names.end(); };
  std::int32_t layer = -2;
  for (const auto* list : {&prog.forward, &prog.backward, &prog.step_end})
    for (const auto& s : *list)
      if (layer == -2 && wanted(s)) layer = s.layer;
  std::vector<Step> out;
  for (const auto* list : {&prog.forward, &prog.backward, &prog.step_end})
    for (const auto& s : *list)
      if (wanted(s) && s.layer == layer && s.kind == StepKind::compute) out.push_back(s);
  if (out.empty()) throw std::runtime_error("calibrate: the lowering of " + m.name + " has no steps named " + names.front());
  return out;
}

// `cls` is an op class, or a recurrence kernel's op (efficiency.ops).
double& efficiency_field(Efficiency& e, const std::string& cls) {
  for (const char* op : kTunedOps)
    if (cls == op) return e.ops[cls];
  if (cls == "gemm") return e.gemm;
  if (cls == "elementwise") return e.elementwise;
  if (cls == "scan") return e.scan;
  if (cls == "attention") return e.attention;
  if (cls == "norm") return e.norm;
  throw std::logic_error("calibrate: no efficiency field " + cls);
}

// The efficiency at which the roofline price of `steps` equals `measured` (bisection in log space;
// the price falls as the efficiency grows). Clamped to [1e-4, 1].
double fit_efficiency(const std::vector<Step>& steps, ChipSpec chip, const std::string& cls, double measured, bool* clamped) {
  auto price = [&](double eff) {
    efficiency_field(chip.efficiency, cls) = eff;
    double t = 0;
    for (const auto& s : steps)
      if (s.kind == StepKind::compute) t += compute_seconds(s, chip, DType::fp32);
    return t;
  };
  *clamped = false;
  if (price(1.0) >= measured) { *clamped = true; return 1.0; }
  if (price(1e-4) <= measured) { *clamped = true; return 1e-4; }
  double lo = std::log(1e-4), hi = 0;
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    (price(std::exp(mid)) > measured ? lo : hi) = mid;
  }
  return std::exp(0.5 * (lo + hi));
}

// efficiency.attention and efficiency.attention_softmax together, from the attention benchmarks
// (KernelBench::cls == "attention"): for each softmax value on a log grid (refined twice), the
// attention value that prices the benchmarks' total (fit_efficiency), scored by the sum of squared
// relative errors of the benchmarks one by one; the best pair is kept. With benchmarks at two head
// sizes the two are separable: a score costs the same vector work whatever the head size, a matrix
// FLOP the same whatever the score count. Each benchmark's recorded value is then its own
// attention value at the chosen softmax value.
void fit_attention_softmax(std::vector<KernelBench>& benches, ChipSpec& chip) {
  std::vector<std::pair<std::vector<Step>, KernelBench*>> att;
  std::vector<Step> all;
  double total = 0;
  for (auto& k : benches)
    if (k.cls == "attention") {
      att.emplace_back(named_steps(load_model(k.model), k.names), &k);
      all.insert(all.end(), att.back().first.begin(), att.back().first.end());
      total += k.seconds;
    }
  if (att.size() < 2) return;
  auto priced = [&](double softmax, double* attention) {
    chip.efficiency.attention_softmax = softmax;
    bool clamped = false;
    *attention = fit_efficiency(all, chip, "attention", total, &clamped);
    chip.efficiency.attention = *attention;
    double sq = 0;
    for (const auto& [steps, k] : att) {
      double t = 0;
      for (const auto& s : steps) t += compute_seconds(s, chip, DType::fp32);
      sq += (t / k->seconds - 1) * (t / k->seconds - 1);
    }
    return sq;
  };
  double lo = std::log(1e-4), hi = 0, best_x = hi, best_sq = 1e300, best_att = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const int n = 40;
    for (int i = 0; i <= n; ++i) {
      const double x = lo + (hi - lo) * i / n;
      double a = 0;
      const double sq = priced(std::exp(x), &a);
      if (sq < best_sq) best_sq = sq, best_x = x, best_att = a;
    }
    const double step = (hi - lo) / n;
    lo = std::max(std::log(1e-4), best_x - step);
    hi = std::min(0.0, best_x + step);
  }
  chip.efficiency.attention_softmax = std::exp(best_x);
  chip.efficiency.attention = best_att;
  for (auto& [steps, k] : att) k->efficiency = fit_efficiency(steps, chip, "attention", k->seconds, &k->clamped);
}

// Buffers of one benchmark, kept alive by the closure.
struct Buffers {
  std::vector<std::vector<float>> f;
  std::vector<std::uint8_t> reset;
  float* add(std::size_t n, float scale = 0.5f) {
    f.push_back(random_vector(n, scale, static_cast<unsigned>(f.size() + 11)));
    return f.back().data();
  }
};

// One layer's worth of each op class, run with the kernels and call pattern of the executor's
// handlers (linear forward; backward as separate dx and dw calls; the gelu of the recurrent gate
// fused into gelu ⊙ h; the RG-LRU decay fused into the scan; scores recomputed inside the
// attention backward).
std::vector<KernelBench> kernel_benches() {
  std::vector<KernelBench> out;
  // A bench whose kernel is the only one behind its op: its own value too (efficiency.ops), since
  // a class mixes kernels 25x apart per priced FLOP (RoPE's sin/cos tables against a residual add).
  auto own = [](KernelBench& kb, const char* op) {
    kb.op = op;
    kb.also_class = true;
  };
  const ModelSpec g = load_model("griffin-tiny"), q = load_model("mqa-tiny");
  const i64 B = kBenchBatch, T = kBenchSeq, M = B * T;
  auto make_reset = [&] {
    std::vector<std::uint8_t> r(M, 0);
    for (i64 b = 0; b < B; ++b) r[b * T] = 1;
    return r;
  };
  // y = x W + b forward, then dx and dw as two calls: [M, C] -> [M, OC].
  struct Linear {
    float *y, *x, *w, *b, *dx, *dw, *db, *dy;
    i64 M, C, OC;
    void fwd() const { K::linear_forward(y, x, w, b, M, C, OC); }
    void bwd() const {
      K::linear_backward(dx, nullptr, nullptr, dy, x, w, M, C, OC);
      K::linear_backward(nullptr, dw, db, dy, x, w, M, C, OC);
    }
  };
  auto linear = [](Buffers& buf, i64 M, i64 C, i64 OC) {
    const float ws = 1.0f / std::sqrt(float(C));
    return Linear{buf.add(M * OC), buf.add(M * C), buf.add(C * OC, ws), buf.add(OC), buf.add(M * C), buf.add(C * OC), buf.add(OC),
                  buf.add(M * OC), M, C, OC};
  };
  {  // elementwise: gelu(gy) ⊙ h of the recurrent block (lowered: rec.gate + rec.gated)
    auto buf = std::make_shared<Buffers>();
    const i64 n = M * g.recurrent_width;
    float *o = buf->add(n), *a = buf->add(n), *b = buf->add(n), *da = buf->add(n), *db = buf->add(n), *dout = buf->add(n);
    out.push_back({"elementwise", g.name, "rec.gate + rec.gated", {"rec.gate", "rec.gated"}, [=, keep = buf] {
      K::gelu_mul_forward(o, a, b, n);
      K::gelu_mul_backward(da, db, dout, a, b, n);
    }});
    out.back().hot = {{a, n}, {b, n}, {dout, n}};
    own(out.back(), "gelu_mul");
  }
  {  // elementwise: the recurrent block's causal depthwise Conv1D
    auto buf = std::make_shared<Buffers>();
    const i64 R = g.recurrent_width, Kc = g.conv_width;
    buf->reset = make_reset();
    const std::uint8_t* reset = buf->reset.data();
    float *y = buf->add(M * R), *x = buf->add(M * R), *w = buf->add(Kc * R, 0.3f), *b = buf->add(R), *dx = buf->add(M * R),
          *dw = buf->add(Kc * R), *db = buf->add(R), *dy = buf->add(M * R);
    out.push_back({"elementwise", g.name, "rec.conv", {"rec.conv"}, [=, keep = buf] {
      K::conv1d_forward(y, nullptr, x, nullptr, reset, w, b, B, T, R, Kc);
      K::conv1d_backward(dx, nullptr, dw, db, dy, nullptr, x, nullptr, reset, w, B, T, R, Kc);
    }});
    out.back().hot = {{x, std::size_t(M * R)}, {dy, std::size_t(M * R)}};
    own(out.back(), "conv1d");
  }
  {  // elementwise: RoPE on q and k, with the executor's staging copies (forward and backward)
    auto buf = std::make_shared<Buffers>();
    const i64 H = g.heads, Hk = g.kv_heads, N = g.head_dim, rot = i64(std::lround(g.rope_fraction * double(N)));
    const double base = g.rope_base;
    auto pos = std::make_shared<std::vector<std::int32_t>>(M);
    for (i64 i = 0; i < M; ++i) (*pos)[i] = std::int32_t(i % T);
    float *qr = buf->add(M * H * N), *kr = buf->add(M * Hk * N), *qe = buf->add(M * H * N), *ke = buf->add(M * Hk * N),
          *dqr = buf->add(M * H * N), *dkr = buf->add(M * Hk * N), *dqe = buf->add(M * H * N), *dke = buf->add(M * Hk * N);
    out.push_back({"elementwise", g.name, "attn.rope", {"attn.rope"}, [=, keep = buf] {
      std::vector<float> q(M * H * N), k(M * Hk * N);
      K::rope_forward(q.data(), qr, pos->data(), B, T, H, N, rot, base);
      K::rope_forward(k.data(), kr, pos->data(), B, T, Hk, N, rot, base);
      std::copy(q.begin(), q.end(), qe);
      std::copy(k.begin(), k.end(), ke);
      std::vector<float> dq(dqe, dqe + M * H * N), dk(dke, dke + M * Hk * N);
      K::rope_backward(dqr, dq.data(), pos->data(), B, T, H, N, rot, base);
      K::rope_backward(dkr, dk.data(), pos->data(), B, T, Hk, N, rot, base);
    }});
    out.back().hot = {{qr, std::size_t(M * H * N)}, {kr, std::size_t(M * Hk * N)}, {dqe, std::size_t(M * H * N)},
                      {dke, std::size_t(M * Hk * N)}};
    own(out.back(), "rope");
  }
  {  // elementwise: softmax cross-entropy over the vocabulary (finish, backward). The per-token
     // (max, Σ exp) are the logits step's (lower.cpp prices them there; the executor computes them
     // in its logits handler): taken once here, untimed. Timed with the loss, they priced the loss
     // at twice what validate measured (+80-105 % in every run).
    auto buf = std::make_shared<Buffers>();
    const i64 V = g.vocab;
    auto targets = std::make_shared<std::vector<std::int32_t>>(M);
    for (i64 i = 0; i < M; ++i) (*targets)[i] = std::int32_t((i * 7) % V);
    float *logits = buf->add(M * V, 2.0f), *stats = buf->add(2 * M), *losses = buf->add(M), *dlosses = buf->add(M),
          *dlogits = buf->add(M * V);
    K::softmax_stats(stats, logits, M, V);
    out.push_back({"elementwise", g.name, "loss", {"loss"}, [=, keep = buf] {
      // probabilities in place of the logits, as the executor's handler (later calls take the
      // exp of probabilities against stale stats: the same work, finite values)
      K::softmax_ce_shard_finish(losses, logits, logits, stats, targets->data(), 0, M, V);
      K::softmax_ce_shard_backward(dlogits, dlosses, logits, targets->data(), 0, M, V);
    }});
    out.back().hot = {{logits, std::size_t(M * V)}};
    own(out.back(), "softmax_xent");
  }
  {  // elementwise: a residual add (forward) and its gradient copies (backward)
    auto buf = std::make_shared<Buffers>();
    const i64 D = g.width, n = M * D;
    float *xm = buf->add(n), *x = buf->add(n), *t = buf->add(n), *dxm = buf->add(n), *dt = buf->add(n), *dx = buf->add(n);
    out.push_back({"elementwise", g.name, "rec.residual", {"rec.residual"}, [=, keep = buf] {
      for (i64 i = 0; i < n; ++i) xm[i] = x[i] + t[i];
      std::copy(dxm, dxm + n, dt);
      std::copy(dxm, dxm + n, dx);
    }});
    out.back().hot = {{x, std::size_t(n)}, {t, std::size_t(n)}, {dxm, std::size_t(n)}};
    own(out.back(), "add");
  }
  {  // optimizer (efficiency.ops.adamw): mean gradient from the fp32 sums (the runner's for
     // fp32 plans), its norm, AdamW — over all of griffin-tiny's parameters, tensor by tensor as
     // the runner calls them (the lowering prices the calls' launch overhead apart: Step::calls)
    auto buf = std::make_shared<Buffers>();
    const i64 n = count_parameters(g).total;
    float *param = buf->add(n), *m1 = buf->add(n, 0.0f), *m2 = buf->add(n, 0.0f), *grad = buf->add(n), *gacc = buf->add(n);
    const Layout lay(g);
    auto ranges = std::make_shared<std::vector<std::pair<i64, i64>>>();
    for (std::size_t t = 0; t < lay.tensors.size(); ++t) ranges->push_back({lay.offset[t], lay.tensors[t].count()});
    KernelBench kb{"elementwise", g.name, "params (adamw)", {"params"}, [=, keep = buf] {
      for (i64 i = 0; i < n; ++i) grad[i] = float(double(gacc[i]) * 0.5);
      double sq = 0;
      for (const auto& [off, cnt] : *ranges) sq += kernels::sum_squares(grad + off, cnt);
      for (const auto& [off, cnt] : *ranges)
        kernels::fast::adamw_update(param + off, m1 + off, m2 + off, grad + off, cnt, 1, kernels::AdamW{}, 0.1f,
                                    kernels::clip_scale(sq, 1.0f));
    }};
    kb.op = "adamw";
    out.push_back(kb);
  }
  {  // elementwise (efficiency.ops.grad_accumulate): the runner's clear of the gradient buffer and
     // its sum into the fp32 accumulator after a micro-batch's backward, over griffin-tiny's parameters
    auto buf = std::make_shared<Buffers>();
    const i64 n = count_parameters(g).total;
    float *grad = buf->add(n), *gacc = buf->add(n);
    KernelBench kb{"elementwise", g.name, "grads (accumulate)", {"grads"}, [=, keep = buf] {
      std::fill(grad, grad + n, 0.0f);
      kernels::accumulate(gacc, grad, n);
    }};
    kb.op = "grad_accumulate";
    out.push_back(kb);
  }
  {  // elementwise (efficiency.ops.zero): the clear of a layer's activation-gradient buffers
     // before its backward, as many bytes as the lowering prices for griffin-tiny's first layer;
     // cold, as in a step (untouched since the previous step's backward)
    auto buf = std::make_shared<Buffers>();
    const auto steps = named_steps(g, {"grad_buffers"});
    const auto n = static_cast<std::size_t>(steps.front().vector_flops);  // the lowering's elements, one store each
    float* z = buf->add(n);
    KernelBench kb{"elementwise", g.name, "grad_buffers (zero)", {"grad_buffers"}, [=, keep = buf] { std::fill(z, z + n, 0.0f); }};
    kb.op = "zero";
    out.push_back(kb);
  }
  {  // norm: LayerNorm forward + backward (RWKV's pre-norms, the transformer's)
    const ModelSpec r4 = load_model("rwkv4-tiny");
    auto buf = std::make_shared<Buffers>();
    const i64 D = r4.width;
    const float eps = static_cast<float>(r4.norm_eps);
    float *y = buf->add(M * D), *mean = buf->add(M), *rstd = buf->add(M), *x = buf->add(M * D), *scale = buf->add(D, 0.1f),
          *bias = buf->add(D, 0.1f), *dx = buf->add(M * D), *dscale = buf->add(D), *dbias = buf->add(D), *dy = buf->add(M * D);
    out.push_back({"norm", r4.name, "norm1", {"norm1"}, [=, keep = buf] {
      K::layer_norm_forward(y, mean, rstd, x, scale, bias, M, D, eps);
      K::layer_norm_backward(dx, dscale, dbias, dy, mean, rstd, x, scale, M, D);
    }});
    out.back().hot = {{x, std::size_t(M * D)}, {dy, std::size_t(M * D)}};
    own(out.back(), "layernorm");
  }
  {  // elementwise (efficiency.ops.token_shift): RWKV-4's channel-mix token shift, its two mixes
     // forward and backward as the executor's cm.shift handler runs them (the time mix's three and
     // RWKV-6's shifts are priced with the same value); the class value priced them 2x fast
    const ModelSpec r4 = load_model("rwkv4-tiny");
    auto buf = std::make_shared<Buffers>();
    const i64 D = r4.width, n = M * D;
    float *x = buf->add(n), *xk = buf->add(n), *xr = buf->add(n), *muk = buf->add(D), *mur = buf->add(D), *dx = buf->add(n),
          *dmuk = buf->add(D), *dmur = buf->add(D), *dxk = buf->add(n), *dxr = buf->add(n);
    KernelBench kb{"elementwise", r4.name, "cm.shift (token_shift)", {"cm.shift"}, [=, keep = buf] {
      K::token_shift_forward(xk, x, nullptr, muk, B, T, D);
      K::token_shift_forward(xr, x, nullptr, mur, B, T, D);
      K::token_shift_backward(dx, nullptr, dmuk, dxk, x, nullptr, muk, B, T, D);
      K::token_shift_backward(dx, nullptr, dmur, dxr, x, nullptr, mur, B, T, D);
    }};
    kb.op = "token_shift";
    kb.hot = {{x, std::size_t(n)}, {dxk, std::size_t(n)}, {dxr, std::size_t(n)}};
    out.push_back(kb);
  }
  {  // elementwise (efficiency.ops.ddlerp): RWKV-6's data-dependent mixes of the five targets,
     // forward and backward as the executor's tm.mix handler (the class value priced them 2x fast)
    const ModelSpec r6 = load_model("rwkv6-tiny");
    auto buf = std::make_shared<Buffers>();
    const i64 D = r6.width, n = M * D, J = 5;
    float *o5 = buf->add(J * n), *x = buf->add(n), *xx = buf->add(n), *mu = buf->add(J * D), *m = buf->add(J * n),
          *dx = buf->add(n), *dxx = buf->add(n), *dmu = buf->add(J * D), *dm = buf->add(J * n), *dout = buf->add(J * n);
    KernelBench kb{"elementwise", r6.name, "tm.mix (ddlerp)", {"tm.mix"}, [=, keep = buf] {
      K::ddlerp_mix_forward(o5, x, xx, mu, m, J, M, D);
      K::ddlerp_mix_backward(dx, dxx, dmu, dm, dout, xx, mu, m, J, M, D);
    }};
    kb.op = "ddlerp";
    kb.hot = {{x, std::size_t(n)}, {xx, std::size_t(n)}, {m, std::size_t(J * n)}, {dout, std::size_t(J * n)}};
    out.push_back(kb);
  }
  {  // norm: RMSNorm forward + backward
    auto buf = std::make_shared<Buffers>();
    const i64 D = g.width;
    float *y = buf->add(M * D), *rstd = buf->add(M), *x = buf->add(M * D), *scale = buf->add(D, 0.1f), *dx = buf->add(M * D),
          *dscale = buf->add(D), *dy = buf->add(M * D);
    out.push_back({"norm", g.name, "norm1", {"norm1"}, [=, keep = buf] {
      K::rmsnorm_forward(y, rstd, x, scale, M, D);
      K::rmsnorm_backward(dx, dscale, dy, x, rstd, scale, M, D);
    }});
    out.back().hot = {{x, std::size_t(M * D)}, {dy, std::size_t(M * D)}};
    own(out.back(), "rmsnorm");
  }
  {  // gemm: the gated MLP — W1, W2, gelu ⊙, W3 and their backward
    auto buf = std::make_shared<Buffers>();
    const i64 D = g.width, F = g.mlp_width;
    const Linear w1 = linear(*buf, M, D, F), w2 = linear(*buf, M, D, F), w3 = linear(*buf, M, F, D);
    float *da = buf->add(M * F), *db = buf->add(M * F);
    out.push_back({"gemm", g.name, "mlp.w1 + w2 + act + w3", {"mlp.w1", "mlp.w2", "mlp.act", "mlp.w3"}, [=, keep = buf] {
      w1.fwd();
      w2.fwd();
      K::gelu_mul_forward(w3.x, w1.y, w2.y, M * F);
      w3.fwd();
      w3.bwd();
      K::gelu_mul_backward(da, db, w3.dx, w1.y, w2.y, M * F);
      w2.bwd();
      w1.bwd();
    }});
  }
  {  // gemm: the recurrent block's projections D -> R (wx, wy) and R -> D (wo)
    auto buf = std::make_shared<Buffers>();
    const i64 D = g.width, R = g.recurrent_width;
    const Linear wx = linear(*buf, M, D, R), wy = linear(*buf, M, D, R), wo = linear(*buf, M, R, D);
    out.push_back({"gemm", g.name, "rec.wx + wy + wo", {"rec.wx", "rec.wy", "rec.wo"}, [=, keep = buf] {
      wy.fwd();
      wx.fwd();
      wo.fwd();
      wo.bwd();
      wx.bwd();
      wy.bwd();
    }});
  }
  {  // gemm: the RG-LRU's block-diagonal gates (Hb blocks of R/Hb)
    auto buf = std::make_shared<Buffers>();
    const i64 R = g.recurrent_width, Hb = g.gate_blocks, Rb = R / Hb;
    float *ya = buf->add(M * R), *yx = buf->add(M * R), *x = buf->add(M * R), *wa = buf->add(Hb * Rb * Rb, 0.2f),
          *ba = buf->add(R), *wx = buf->add(Hb * Rb * Rb, 0.2f), *bx = buf->add(R), *dx = buf->add(M * R),
          *dwa = buf->add(Hb * Rb * Rb), *dba = buf->add(R), *dwx = buf->add(Hb * Rb * Rb), *dbx = buf->add(R),
          *dya = buf->add(M * R), *dyx = buf->add(M * R);
    KernelBench kb{"gemm", g.name, "rec.gate_a + gate_x (blockdiag)", {"rec.gate_a", "rec.gate_x"}, [=, keep = buf] {
      K::blockdiag_forward(ya, x, wa, ba, M, R, Hb);
      K::blockdiag_forward(yx, x, wx, bx, M, R, Hb);
      K::blockdiag_backward(dx, nullptr, nullptr, dyx, x, wx, M, R, Hb);
      K::blockdiag_backward(nullptr, dwx, dbx, dyx, x, wx, M, R, Hb);
      K::blockdiag_backward(dx, nullptr, nullptr, dya, x, wa, M, R, Hb);
      K::blockdiag_backward(nullptr, dwa, dba, dya, x, wa, M, R, Hb);
    }};
    kb.op = "blockdiag";  // thin GEMMs: their own value, not part of the gemm class's fit
    out.push_back(kb);
  }
  {  // scan: the fused RG-LRU scan (σ, softplus decay, √(1−a²), recurrence), forward + reverse
    auto buf = std::make_shared<Buffers>();
    const i64 R = g.recurrent_width;
    buf->reset = make_reset();
    const std::uint8_t* reset = buf->reset.data();
    float *y = buf->add(M * R), *x = buf->add(M * R), *ga = buf->add(M * R), *gx = buf->add(M * R), *lambda = buf->add(R),
          *dx = buf->add(M * R), *dga = buf->add(M * R), *dgx = buf->add(M * R), *dlambda = buf->add(R), *dy = buf->add(M * R);
    for (i64 i = 0; i < R; ++i) lambda[i] = -3.0f + 0.5f * lambda[i];  // a = σ(−Λ)^(8r) well inside (0, 1)
    out.push_back({"scan", g.name, "rec.decay + rec.scan", {"rec.decay", "rec.scan"}, [=, keep = buf] {
      K::rglru_scan_forward(y, nullptr, nullptr, x, ga, gx, nullptr, reset, lambda, B, T, R);
      K::rglru_scan_backward(dx, dga, dgx, nullptr, dlambda, dy, nullptr, y, x, ga, gx, nullptr, reset, lambda, B, T, R);
    }});
  }
  {  // wkv4.scan: RWKV-4's WKV with the running maximum exponent, forward + backward
    auto buf = std::make_shared<Buffers>();
    const ModelSpec r4 = load_model("rwkv4-tiny");
    const i64 D = r4.width;
    float *y = buf->add(M * D), *k = buf->add(M * D), *v = buf->add(M * D), *decay = buf->add(D), *bonus = buf->add(D),
          *dk = buf->add(M * D), *dv = buf->add(M * D), *ddecay = buf->add(D), *dbonus = buf->add(D), *dy = buf->add(M * D);
    KernelBench kb{"scan", r4.name, "tm.wkv (wkv4.scan)", {"tm.wkv"}, [=, keep = buf] {
      K::wkv4_forward(y, nullptr, k, v, decay, bonus, nullptr, B, T, D);
      K::wkv4_backward(dk, dv, ddecay, dbonus, nullptr, dy, nullptr, k, v, decay, bonus, nullptr, B, T, D);
    }};
    kb.op = "wkv4.scan";
    out.push_back(kb);
  }
  {  // wkv6: RWKV-6's matrix-state WKV; the runner calls the chunked kernel under either scan
     // setting, and the lowering prices the two forms differently, so both ops are fitted to it
    auto buf = std::make_shared<Buffers>();
    const ModelSpec r6 = load_model("rwkv6-tiny");
    const i64 N = r6.head_size, H = r6.width / N, E = M * H * N;
    float *y = buf->add(E), *r = buf->add(E), *k = buf->add(E), *v = buf->add(E), *logw = buf->add(E), *u = buf->add(H * N),
          *dr = buf->add(E), *dk = buf->add(E), *dv = buf->add(E), *dlogw = buf->add(E), *du = buf->add(H * N), *dy = buf->add(E);
    for (i64 i = 0; i < E; ++i) logw[i] = -0.05f - std::fabs(logw[i]);  // log w = −exp(d) < 0
    auto run = [=, keep = buf] {
      K::wkv6_forward(y, nullptr, r, k, v, logw, u, nullptr, B, T, H, N);
      K::wkv6_backward(dr, dk, dv, dlogw, du, nullptr, dy, nullptr, r, k, v, logw, u, nullptr, B, T, H, N);
    };
    for (const ScanAlgo scan : {ScanAlgo::sequential, ScanAlgo::chunked}) {
      // the chunked entry is fitted to the sequential entry's time (run empty: timed once)
      KernelBench kb{"scan", r6.name, scan == ScanAlgo::chunked ? "tm.wkv (wkv6.chunked)" : "tm.wkv (wkv6.scan)", {"tm.wkv"},
                     scan == ScanAlgo::chunked ? std::function<void()>() : std::function<void()>(run)};
      kb.op = scan == ScanAlgo::chunked ? "wkv6.chunked" : "wkv6.scan";
      kb.scan = scan;
      out.push_back(kb);
    }
  }
  // attention: local (griffin-tiny) and global (mqa-tiny) at head size 32, and global at head size
  // 16 with two query heads per K/V head (gpt-tiny): twice the scores per matrix FLOP, so the
  // per-score vector work (efficiency.attention_softmax) separates from the products' (attention)
  const ModelSpec gpt = load_model("gpt-tiny");
  for (const ModelSpec* m : {&g, &q, &gpt}) {
    auto buf = std::make_shared<Buffers>();
    const i64 H = m->heads, Hk = m->kv_heads, N = m->head_dim, W = m->window;
    buf->reset = make_reset();
    const std::uint8_t* reset = buf->reset.data();
    float *o = buf->add(M * H * N), *lse = buf->add(B * H * T), *qq = buf->add(M * H * N), *k = buf->add(M * Hk * N),
          *v = buf->add(M * Hk * N), *dq = buf->add(M * H * N), *dk = buf->add(M * Hk * N), *dv = buf->add(M * Hk * N),
          *dout = buf->add(M * H * N);
    out.push_back({"attention", m->name, "attn.core", {"attn.core", "attn.scores_recompute"}, [=, keep = buf] {
      K::attention_forward(o, lse, qq, k, v, reset, B, T, H, Hk, N, W);
      K::attention_backward(dq, dk, dv, dout, o, lse, qq, k, v, reset, B, T, H, Hk, N, W);
    }});
  }
  return out;
}

// ─── MPI benchmarks ─────────────────────────────────────────────────────────────────────────────

struct CommFit {
  std::string kind;
  std::vector<std::pair<double, double>> samples;  // (bytes, seconds)
  stats::AffineFit fit;
  double link_bytes_per_s = 0, link_latency_seconds = 0;  // implied by the simulator's formula
};

// A stretch of compute as a training step has between two collectives: three sgemm of a
// griffin-tiny MLP's shape (~1.6 ms here, ~1.2 MB touched).
struct ComputeStretch {
  static constexpr int M = 512, N = 384, K = 128;
  std::vector<float> a = std::vector<float>(static_cast<std::size_t>(M * K), 0.5f),
                     b = std::vector<float>(static_cast<std::size_t>(K * N), 0.01f),
                     c = std::vector<float>(static_cast<std::size_t>(M * N));
  void operator()() {
    for (int g = 0; g < 3; ++g)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(), N);
  }
};

// Seconds of one call of op() as a step makes it: after a compute stretch, all ranks released
// together by a barrier (so no rank waits for another: the sync wait is measured apart), then the
// call alone is timed. The median over reps (3-15, ~target seconds of calls), the max over ranks.
// Back to back, with the MPI buffers and queues in cache, a 256 KB all-reduce took 49 us here;
// after a stretch, 69 us: the fit priced the collectives of a step ~1.4-2x fast.
template <class F>
double time_collective(const mpi::Comm& w, F&& op, double target, ComputeStretch& stretch) {
  op();
  w.barrier();
  double t0 = now_seconds();
  op();
  double one = now_seconds() - t0;
  w.allreduce_max(std::span<double>(&one, 1));
  const int reps = static_cast<int>(std::clamp(std::ceil(target / std::max(one, 1e-7)), 3.0, 15.0));
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    stretch();
    w.barrier();
    t0 = now_seconds();
    op();
    t.push_back(now_seconds() - t0);
  }
  double med = stats::median(t);
  w.allreduce_max(std::span<double>(&med, 1));
  return med;
}

std::vector<CommFit> bench_mpi(const mpi::Comm& w, bool quick) {
  const int P = w.size();
  std::vector<double> sizes;
  const double max_bytes = quick ? 1024.0 * 1024 : 64.0 * 1024 * 1024;
  for (double b = 8; b <= max_bytes; b *= (quick ? 8 : 4)) sizes.push_back(b);
  if (sizes.back() != max_bytes) sizes.push_back(max_bytes);
  const double target = quick ? 0.004 : 0.02;
  ComputeStretch stretch;
  std::vector<CommFit> fits;
  for (const char* kind : {"all_reduce", "all_gather", "reduce_scatter", "send_recv"}) {
    CommFit f;
    f.kind = kind;
    for (double bytes : sizes) {
      // Whole floats, a multiple of P for the gather/scatter (the buffer per rank is `bytes`).
      const std::size_t n = std::max<std::size_t>(P, static_cast<std::size_t>(bytes / 4) / P * P);
      std::vector<float> a(n, 0.0f), b(n, 0.0f);  // zeros: repeated in-place sums stay finite
      const std::size_t part = n / P;
      double s = 0;
      const std::string k = kind;
      if (k == "all_reduce") s = time_collective(w, [&] { w.allreduce_sum(std::span<float>(a)); }, target, stretch);
      else if (k == "all_gather") s = time_collective(w, [&] { w.allgather(std::span<const float>(a.data(), part), std::span<float>(b)); }, target, stretch);
      else if (k == "reduce_scatter") s = time_collective(w, [&] { w.reduce_scatter_sum(std::span<const float>(a), std::span<float>(b.data(), part)); }, target, stretch);
      else s = time_collective(w, [&] {
        w.sendrecv(std::span<const float>(a), (w.rank() + 1) % P, std::span<float>(b), (w.rank() + P - 1) % P);
      }, target, stretch);
      f.samples.push_back({4.0 * double(n), s});
    }
    std::vector<double> x, y;
    for (const auto& [bytes, s] : f.samples) { x.push_back(bytes); y.push_back(s); }
    f.fit = stats::fit_affine_relative(x, y);
    // Simulator formulas (sim/cost.cpp) on one island of P devices:
    //   all-reduce 2(P−1)/P·b/bw + 2(P−1)·lat; all-gather, reduce-scatter (P−1)/P·b/bw + (P−1)·lat;
    //   send/recv lat + b/bw.
    const double Pd = P;
    double bw_factor = 1, lat_factor = 1;
    if (f.kind == "all_reduce") { bw_factor = 2 * (Pd - 1) / Pd; lat_factor = 2 * (Pd - 1); }
    else if (f.kind != "send_recv") { bw_factor = (Pd - 1) / Pd; lat_factor = Pd - 1; }
    const double smallest = f.samples.front().second;
    f.link_bytes_per_s = f.fit.slope > 0 ? bw_factor / f.fit.slope : 0;
    // A negative fitted intercept (noise) falls back to half the smallest message's time.
    f.link_latency_seconds = (f.fit.intercept > 0 ? f.fit.intercept : 0.5 * smallest) / lat_factor;
    fits.push_back(std::move(f));
  }
  return fits;
}

// compute_jitter (ChipSpec): the ranks alternate a stretch of sgemm (~1.5 ms, the order of a tiny
// plan's compute between collectives) with an 8-byte all-reduce. The time a rank spends in the
// all-reduce beyond the call's own latency (`latency_seconds`, the smallest all-reduce sample) is
// its wait for the slowest rank; averaged over iterations and ranks it is E[max] − E[duration] of
// the ranks' stretches, so jitter = mean wait / (mean stretch · E[max of P standard normals]).
struct Jitter {
  double jitter = 0, stretch_seconds = 0, wait_seconds = 0;
};
Jitter measure_jitter(const mpi::Comm& w, double latency_seconds, bool quick) {
  const int iters = quick ? 20 : 200;
  ComputeStretch work;
  float token[2] = {0, 0};
  double stretch = 0, wait = 0;
  w.barrier();
  for (int i = 0; i < iters; ++i) {
    const double t0 = now_seconds();
    work();
    const double t1 = now_seconds();
    w.allreduce_sum(std::span<float>(token, 2));
    stretch += t1 - t0;
    wait += std::max(0.0, now_seconds() - t1 - latency_seconds);
  }
  double v[2] = {stretch / iters, wait / iters};
  w.allreduce_sum(std::span<double>(v, 2));
  Jitter j;
  j.stretch_seconds = v[0] / w.size();
  j.wait_seconds = v[1] / w.size();
  j.jitter = std::min(0.5, j.wait_seconds / (j.stretch_seconds * expected_max_standard_normal(w.size())));
  return j;
}

// ─── the cluster file ───────────────────────────────────────────────────────────────────────────

struct Measured {
  int ranks = 1;
  std::vector<GemmSample> gemm;
  std::vector<TriadSample> triad;
  double vector_flops = 0, launch = 0;
  double probe_seconds = 0;  // machine_probe_seconds() (cli/probe.hpp), mean over ranks
  std::vector<KernelBench> kernels;
  std::vector<CommFit> comm;
  Jitter jitter;
  double seconds = 0;
  double load_start = -1, load_end = -1;  // machine load average around the run
};

std::string hostname() {
  char h[256] = {0};
  if (::gethostname(h, sizeof h - 1) != 0) return "unknown-host";
  return h;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char b[64];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return b;
}

std::string yaml_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) o += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return o + "\"";
}

std::string cluster_yaml(const CalibrateOptions& o, const Measured& r, const ChipSpec& chip, const TopologySpec& topo,
                         const std::string& host, const std::string& date) {
  std::ostringstream y;
  const bool net = !r.comm.empty();
  y << "# Written by `scanshard calibrate` (" << (o.quick ? "--quick, " : "") << r.ranks << " rank(s)) on " << host << " at " << date << ".\n"
    << "# One device = one core running one MPI rank single-threaded. Re-run calibrate to refresh; the raw numbers\n"
    << "# are under `measurements:` (free-form, ignored by the loader).\n"
    << "name: " << yaml_string(o.name) << "\n"
    << "source: " << yaml_string("measured by scanshard calibrate on " + host + " at " + date + " with " + std::to_string(r.ranks) +
                                  " MPI rank(s)" + (o.quick ? " (--quick)" : "") +
                                  (net ? "" : "; network NOT measured (one rank): link numbers are the cpu-local placeholders")) << "\n"
    << "chip:\n"
    << "  name: " << yaml_string(chip.name) << "\n"
    << "  source: " << yaml_string(chip.source) << "\n"
    << "  peak_flops_per_s:\n"
    << "    fp32: " << fmt(chip.peak_flops_per_s.at("fp32")) << "          # best OpenBLAS sgemm rate, one thread\n"
    << "  vector_flops_per_s: " << fmt(chip.vector_flops_per_s) << "      # FMA loop on registers\n"
    << "  memory_bytes: " << fmt(chip.memory_bytes) << "            # physical memory / devices\n"
    << "  memory_bytes_per_s: " << fmt(chip.memory_bytes_per_s) << "      # best STREAM-triad rate over working sets (an in-cache one: the runner's test-size models live in cache; DRAM rates under measurements: triad)\n"
    << "  onchip_memory_bytes: " << fmt(chip.onchip_memory_bytes) << "\n"
    << "  matrix_tile: 1\n"
    << "  launch_overhead_seconds: " << fmt(chip.launch_overhead_seconds) << "\n"
    << "  compute_jitter: " << fmt(chip.compute_jitter) << "   # rank-to-rank spread of compute time: waits at collectives\n"
    << "  efficiency:                     # roofline price of the runner's kernels = measured time\n"
    << "    gemm: " << fmt(chip.efficiency.gemm) << "\n"
    << "    elementwise: " << fmt(chip.efficiency.elementwise) << "\n"
    << "    scan: " << fmt(chip.efficiency.scan) << "\n"
    << "    attention: " << fmt(chip.efficiency.attention) << "\n"
    << "    attention_softmax: " << fmt(chip.efficiency.attention_softmax) << "   # the attention core's per-score vector work\n"
    << "    norm: " << fmt(chip.efficiency.norm) << "\n"
    << "    memory_curve: [" << [&] {
         std::string c;
         for (const auto& [bytes, f] : chip.efficiency.memory_curve)
           c += (c.empty() ? "[" : ", [") + fmt(bytes) + ", " + fmt(f) + "]";
         return c;
       }() << "]   # [bytes a step moves, fraction of memory_bytes_per_s]: the triad working sets\n"
    << "    network: " << fmt(chip.efficiency.network) << "\n";
  if (!chip.efficiency.ops.empty()) {
    y << "    ops:                          # kernels priced with their own value (kTunedOps)\n";
    for (const auto& [op, eff] : chip.efficiency.ops) y << "      " << op << ": " << fmt(eff) << "\n";
  }
  y << "topology:\n"
    << "  kind: islands\n"
    << "  islands: 1\n"
    << "  devices_per_island: " << topo.devices_per_island << "\n"
    << "  island_link_bytes_per_s: " << fmt(topo.island_link_bytes_per_s) << (net ? "   # from the all-reduce fit" : "   # placeholder") << "\n"
    << "  island_latency_seconds: " << fmt(topo.island_latency_seconds) << "\n"
    << "  network_bytes_per_s: " << fmt(topo.network_bytes_per_s) << "       # one island: unused\n"
    << "  network_latency_seconds: " << fmt(topo.network_latency_seconds) << "\n"
    << "measurements:\n"
    << "  date: " << yaml_string(date) << "\n"
    << "  host: " << yaml_string(host) << "\n"
    << "  ranks: " << r.ranks << "\n"
    << "  threads_per_rank: 1\n"
    << "  quick: " << (o.quick ? "true" : "false") << "\n"
    << "  load_average_1min: [" << fmt(r.load_start) << ", " << fmt(r.load_end) << "]   # at start and end; > cores: timings inflated\n"
    << "  probe_seconds: " << fmt(r.probe_seconds) << "   # cli/probe.hpp: sgemm 256^3 + 3 MiB triad, median; validate's drift reference\n"
    << "  seconds: " << fmt(r.seconds) << "\n"
    << "  sgemm:                          # [m, n, k, seconds, flop/s], mean over ranks\n";
  for (const auto& g : r.gemm)
    y << "    - [" << g.m << ", " << g.n << ", " << g.k << ", " << fmt(g.seconds) << ", " << fmt(g.flops_per_s) << "]\n";
  y << "  triad:                          # [bytes streamed, bytes/s]\n";
  for (const auto& t : r.triad) y << "    - [" << fmt(t.bytes) << ", " << fmt(t.bytes_per_s) << "]\n";
  y << "  vector_fma_flops_per_s: " << fmt(r.vector_flops) << "\n"
    << "  launch_overhead_seconds: " << fmt(r.launch) << "\n"
    << "  jitter: {stretch_seconds: " << fmt(r.jitter.stretch_seconds) << ", wait_seconds: " << fmt(r.jitter.wait_seconds)
    << "}   # sgemm stretch, then the mean wait at an 8-byte all-reduce\n"
    << "  kernels:                        # forward + backward of one layer, 4 x 128 tokens\n";
  for (const auto& k : r.kernels)
    y << "    - {class: " << k.cls << ", model: " << k.model << ", steps: " << yaml_string(k.group) << ", seconds: " << fmt(k.seconds)
      << ", efficiency: " << fmt(k.efficiency) << ", clamped: " << (k.clamped ? "true" : "false") << "}\n";
  if (net) {
    y << "  mpi:                            # bytes = buffer per rank (all-gather: the gathered result)\n";
    for (const auto& c : r.comm) {
      y << "    " << c.kind << ":\n"
        << "      fit_latency_seconds: " << fmt(c.fit.intercept) << "\n"
        << "      fit_seconds_per_byte: " << fmt(c.fit.slope) << "\n"
        << "      fit_max_relative_residual: " << fmt(c.fit.max_abs_relative_residual) << "\n"
        << "      link_bytes_per_s: " << fmt(c.link_bytes_per_s) << "\n"
        << "      link_latency_seconds: " << fmt(c.link_latency_seconds) << "\n"
        << "      samples:                  # [bytes, seconds]\n";
      for (const auto& [b, s] : c.samples) y << "        - [" << fmt(b) << ", " << fmt(s) << "]\n";
    }
  }
  return y.str();
}

// Mean over ranks, in place.
void mean_over_ranks(const mpi::Comm& w, std::vector<double>& v) {
  if (w.size() == 1 || v.empty()) return;
  w.allreduce_sum(std::span<double>(v));
  for (auto& x : v) x /= w.size();
}

void run_calibrate(const CalibrateOptions& o) {
  const MpiSession session;
  const mpi::Comm world = mpi::Comm::world();
  const int rank = world.rank();

  // Input checks: the same on every rank, before any communication.
  namespace fs = std::filesystem;
  const fs::path out_path(o.out);
  ClusterSpec placeholder;
  check_inputs_on_every_rank(rank, [&] {
    if (o.name.empty()) throw ConfigError("--name: must not be empty");
    if (!looks_like_path(o.out) || !(o.out.ends_with(".yaml") || o.out.ends_with(".yml")))
      throw ConfigError("--out: '" + o.out + "' must name a .yaml file");
    check_output_file(o.out);
    placeholder = load_cluster("cpu-local");
  });

  try {
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    const double t_start = now_seconds();
    Measured r;
    r.ranks = world.size();
    r.load_start = load_average_1min();
    double t_phase = t_start;
    auto say = [&](const std::string& s) {  // progress, with the seconds the previous phase took
      const double t = now_seconds();
      if (rank == 0) {
        if (s.starts_with(" ")) std::cout << " (" << format_seconds(t - t_phase) << ")";
        std::cout << s << std::flush;
      }
      t_phase = t;
    };
    say("calibrate: " + std::to_string(r.ranks) + " rank(s), one thread each" + (o.quick ? ", --quick" : "") + "\n");

    world.barrier();
    say("sgemm ...");
    r.gemm = bench_sgemm(o.quick);
    {
      std::vector<double> v;
      for (const auto& g : r.gemm) v.push_back(g.seconds);
      mean_over_ranks(world, v);
      for (std::size_t i = 0; i < v.size(); ++i)
        r.gemm[i] = {r.gemm[i].m, r.gemm[i].n, r.gemm[i].k, v[i], 2.0 * double(r.gemm[i].m * r.gemm[i].n * r.gemm[i].k) / v[i]};
    }
    world.barrier();
    say(" triad ...");
    r.triad = bench_triad(o.quick);
    {
      std::vector<double> v;
      for (const auto& t : r.triad) v.push_back(t.bytes / t.bytes_per_s);
      mean_over_ranks(world, v);
      for (std::size_t i = 0; i < v.size(); ++i) r.triad[i].bytes_per_s = r.triad[i].bytes / v[i];
    }
    world.barrier();
    say(" vector ...");
    {
      std::vector<double> v = {1.0 / bench_vector_flops(o.quick), bench_launch_overhead()};
      mean_over_ranks(world, v);
      r.vector_flops = 1.0 / v[0];
      r.launch = v[1];
    }
    world.barrier();
    {  // the reference for validate's drift check, run on every rank at once as validate runs it
      std::vector<double> v = {machine_probe_seconds()};
      mean_over_ranks(world, v);
      r.probe_seconds = v[0];
    }

    ChipSpec chip;
    chip.name = "CPU core (" + hostname() + ", calibrated)";
    const std::string host = hostname(), date = utc_now();
    chip.source = "measured by scanshard calibrate on " + host + " at " + date;
    double peak = 0, bw = 0;
    for (const auto& g : r.gemm) peak = std::max(peak, g.flops_per_s);
    for (const auto& t : r.triad) bw = std::max(bw, t.bytes_per_s);
    chip.peak_flops_per_s["fp32"] = peak;
    chip.vector_flops_per_s = r.vector_flops;
    const double phys = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
    const int cores = std::max(1u, std::thread::hardware_concurrency());
    const std::int64_t devices = r.ranks > 1 ? r.ranks : cores;
    chip.memory_bytes = phys > 0 ? phys / double(devices) : placeholder.chip.memory_bytes;
    chip.memory_bytes_per_s = bw;
    const long l2 = ::sysconf(_SC_LEVEL2_CACHE_SIZE);
    chip.onchip_memory_bytes = l2 > 0 ? double(l2) : placeholder.chip.onchip_memory_bytes;
    chip.matrix_tile = 1;
    chip.launch_overhead_seconds = r.launch;
    chip.efficiency.memory = 1.0;
    // The fraction of that rate each triad working set reached: a step streaming tens of MB is
    // priced at the DRAM rate, a small one at the in-cache rate.
    for (const auto& t : r.triad) chip.efficiency.memory_curve.emplace_back(t.bytes, std::min(1.0, t.bytes_per_s / bw));
    chip.efficiency.memory = chip.efficiency.memory_curve.back().second;
    chip.efficiency.network = 1.0;

    // Per-class efficiencies, in dependency order.
    say(" kernels ...");
    r.kernels = kernel_benches();
    {
      std::vector<double> v;
      // A training step's kernels do not find their inputs in the core's cache as a kernel repeated
      // back to back does: a step keeps every layer's activations and touches every parameter,
      // gradient and optimizer moment, tens of MB even for the tiny models, far more than L2. Each
      // timed call follows a pass over 8x L2, which evicts it from L2 but, like a step, leaves
      // part of it in the shared last level cache. (A 64 MiB pass, which empties that cache too,
      // priced the runner's steps as if every input came from DRAM. Two alternating pairs of
      // calibrations: each size's values repeat within 1-2 %; 8x L2 prices norms 15-20 %, the
      // optimizer 10-14 %, GEMMs 5-6 % faster; in the pair whose validate ran at the machine's
      // usual speed the class biases moved norm +16 -> -6 %, optimizer +12 -> +3 %, gemm +4.4 ->
      // +1.8 %, scan +3.3 -> -1.0 %.)
      // The input an op's predecessor has just written is in L2: benchmarks list those buffers
      // (KernelBench::hot; the elementwise and norm kernels), rewritten after the pass. Cold
      // inputs priced them 20-130 % slower than validate measured them.
      const long l2 = ::sysconf(_SC_LEVEL2_CACHE_SIZE);
      const std::size_t evict_bytes = static_cast<std::size_t>(8 * (l2 > 0 ? l2 : 1L << 20));
      std::vector<float> evict(evict_bytes / sizeof(float), 1.0f);
      auto evict_l2 = [&evict] {
        float acc = 0;
        for (std::size_t i = 0; i < evict.size(); i += 16) acc += (evict[i] += 1.0f);
        volatile float sink = acc;
        (void)sink;
      };
      // The median call, not the fastest: validate compares a plan's median step, whose hundred-odd
      // kernels each run at their typical speed (the sum of per-kernel minima undercut it by
      // 10-20 % on this VM: every class's bias was negative).
      // Round-robin: every round calls each kernel once, so all of them sample the same stretch of
      // time and their ratios do not depend on which kernel met a slow second of a shared machine.
      // It does not remove the machine's drift over minutes: calibrations minutes apart still
      // differ by 5-25 % per value, mostly in one direction (so do validate's measured steps).
      std::vector<std::vector<double>> calls(r.kernels.size());
      world.barrier();
      const double budget_seconds = o.quick ? 0.5 : 10.0, t_start = now_seconds();
      for (int round = 0; round < 9 || (round < 400 && now_seconds() - t_start < budget_seconds); ++round)
        for (std::size_t i = 0; i < r.kernels.size(); ++i) {
          if (!r.kernels[i].run) continue;
          if (round == 0) r.kernels[i].run();  // warm-up (first-touch of its buffers)
          evict_l2();
          for (const auto& [p, n] : r.kernels[i].hot)
            for (std::size_t j = 0; j < n; ++j) p[j] += 0.0f;
          const double t0 = now_seconds();
          r.kernels[i].run();
          calls[i].push_back(now_seconds() - t0);
        }
      for (std::size_t i = 0; i < r.kernels.size(); ++i)  // an entry without run: the entry before it's kernels
        v.push_back(r.kernels[i].run ? stats::median(calls[i]) : v.back());
      mean_over_ranks(world, v);
      for (std::size_t i = 0; i < v.size(); ++i) r.kernels[i].seconds = v[i];
    }
    for (const char* cls : {"elementwise", "norm", "gemm", "scan", "attention"}) {
      // Each benchmark's own efficiency (recorded), then one for the class: the value at which the
      // benchmarks' steps together cost their measured total (time-weighted, so the larger kernels
      // the runner spends its time in count most).
      std::vector<Step> all;
      double total = 0;
      for (auto& k : r.kernels) {
        if (k.cls != cls || (!k.op.empty() && !k.also_class)) continue;
        const auto steps = named_steps(load_model(k.model), k.names);
        k.efficiency = fit_efficiency(steps, chip, cls, k.seconds, &k.clamped);
        all.insert(all.end(), steps.begin(), steps.end());
        total += k.seconds;
      }
      bool clamped = false;
      efficiency_field(chip.efficiency, cls) = fit_efficiency(all, chip, cls, total, &clamped);
    }
    fit_attention_softmax(r.kernels, chip);
    for (auto& k : r.kernels) {  // the tuned kernels' own values, once every class is known
      if (k.op.empty()) continue;
      std::vector<Step> steps;
      for (const auto& s : named_steps(load_model(k.model), k.names, k.scan))
        if (k.op == (s.kernel ? s.kernel : s.op)) steps.push_back(s);
      k.efficiency = fit_efficiency(steps, chip, k.op, k.seconds, &k.clamped);
      chip.efficiency.ops[k.op] = k.efficiency;
    }

    TopologySpec topo = placeholder.topology;
    topo.kind = TopologyKind::islands;
    topo.islands = 1;
    topo.devices_per_island = devices;
    if (r.ranks > 1) {
      say(" mpi ...");
      r.comm = bench_mpi(world, o.quick);
      const CommFit& ar = r.comm.front();
      if (ar.link_bytes_per_s > 0) topo.island_link_bytes_per_s = topo.network_bytes_per_s = ar.link_bytes_per_s;
      if (ar.link_latency_seconds > 0) topo.island_latency_seconds = topo.network_latency_seconds = ar.link_latency_seconds;
      r.jitter = measure_jitter(world, ar.samples.front().second, o.quick);
      chip.compute_jitter = r.jitter.jitter;
    }
    r.seconds = now_seconds() - t_start;
    r.load_end = load_average_1min();
    say(" done (" + format_seconds(r.seconds) + ")\n");

    if (rank == 0) {
      const std::string text = cluster_yaml(o, r, chip, topo, host, date);
      const ClusterSpec back = parse_cluster_text(text, out_path.string());  // round trip through the strict loader
      try {
        write_output_file(out_path.string(), text);
      } catch (const ConfigError& e) {  // after the last collective call: the other ranks are finishing
        if (world.size() == 1) throw;
        std::cerr << "scanshard: error: " << e.what() << "\n" << std::flush;
        finalize_and_exit(2);
      }
      const auto& e = back.chip.efficiency;
      Table t({"measured", "value"}, {false, true});
      t.add({"sgemm peak (fp32, 1 thread)", format_si(back.chip.peak("fp32"), "FLOP/s")});
      t.add({"vector FMA", format_si(back.chip.vector_flops_per_s, "FLOP/s")});
      {  // the roofline prices the best working set (in cache); the largest is nearest DRAM
        const auto& big = r.triad.back();
        t.add({"stream triad (best; priced as memory_bytes_per_s)", format_si(back.chip.memory_bytes_per_s, "B/s")});
        t.add({"stream triad at " + format_si(big.bytes, "B") + " (largest working set)", format_si(big.bytes_per_s, "B/s")});
      }
      t.add({"launch overhead", format_seconds(back.chip.launch_overhead_seconds)});
      char effs[200];
      std::snprintf(effs, sizeof effs, "gemm %.2f  elementwise %.2f  norm %.2f  scan %.2f  attention %.2f (softmax %.3f)", e.gemm,
                    e.elementwise, e.norm, e.scan, e.attention, e.attention_softmax);
      t.add({"efficiency", effs});
      std::string ops;
      for (const auto& [op, eff] : e.ops) { char b[32]; std::snprintf(b, sizeof b, " %.3g", eff); ops += (ops.empty() ? "" : "  ") + op + b; }
      if (!ops.empty()) t.add({"efficiency of recurrence kernels", ops});
      if (!r.comm.empty()) {
        for (const auto& c : r.comm)
          t.add({c.kind + " (fit)", format_seconds(c.fit.intercept > 0 ? c.fit.intercept : 0) + " + bytes / " +
                                        format_si(c.fit.slope > 0 ? 1.0 / c.fit.slope : 0, "B/s")});
        t.add({"island link (from all-reduce)", format_si(back.topology.island_link_bytes_per_s, "B/s") + ", " +
                                                   format_seconds(back.topology.island_latency_seconds) + " per step"});
      } else {
        t.add({"network", "not measured (1 rank; run under mpirun -n 2)"});
      }
      std::cout << "\n" << t.str() << "wrote " << out_path.string() << " (cluster '" << back.name << "', " << back.devices()
                << " devices; use it with --cluster " << out_path.string() << ")\n";
    }
  } catch (const std::exception& e) {
    if (world.size() == 1) throw;
    std::cerr << "scanshard: rank " << rank << ": runtime failure: " << e.what() << "\n" << std::flush;
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

}  // namespace

void register_calibrate_command(CLI::App& app) {
  auto o = std::make_shared<CalibrateOptions>();
  auto* cmd = app.add_subcommand("calibrate", "measure this machine (sgemm, stream, kernels, MPI) and write a cluster YAML; "
                                              "run as mpirun -n N scanshard calibrate");
  cmd->add_option("--out", o->out, "cluster YAML to write (atomically)")->capture_default_str();
  cmd->add_option("--name", o->name, "cluster name inside the file")->capture_default_str();
  cmd->add_flag("--quick", o->quick, "fewer shapes and repetitions, messages up to 1 MiB (a few seconds)");
  cmd->callback([o] { run_calibrate(*o); });
}

}  // namespace scanshard
