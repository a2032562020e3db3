// measure/microbench.cpp — see microbench.hpp.
#include "measure/microbench.hpp"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "kernels/adamw.hpp"
#include "kernels/attention.hpp"
#include "kernels/conv1d.hpp"
#include "kernels/embedding.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv_ops.hpp"
#include "measure/probe.hpp"
#include "measure/vector_loops.hpp"
#include "program/param_layout.hpp"
#include "program/presets.hpp"
#include "reports/stats.hpp"
#include "sim/cost.hpp"

namespace scanshard::measure {
namespace {

namespace K = kernels::fast;
using i64 = std::int64_t;

std::vector<float> random_vector(std::size_t n, float scale, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

}  // namespace

// ─── compute benchmarks ─────────────────────────────────────────────────────────────────────────

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

namespace {
// Buffers of one benchmark, kept alive by the closure.
struct Buffers {
  std::vector<std::vector<float>> f;
  std::vector<std::uint8_t> reset;
  float* add(std::size_t n, float scale = 0.5f) {
    f.push_back(random_vector(n, scale, static_cast<unsigned>(f.size() + 11)));
    return f.back().data();
  }
};
}  // namespace

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
    out.push_back({"elementwise", g.name, "rec.gate + rec.gated", {tensors::rec_gate, tensors::rec_gated}, [=, keep = buf] {
      K::gelu_mul_forward(o, a, b, n);
      K::gelu_mul_backward(da, db, dout, a, b, n);
    }});
    out.back().hot = {{a, n}, {b, n}, {dout, n}};
    own(out.back(), ops::gelu_mul);
  }
  {  // elementwise: the recurrent block's causal depthwise Conv1D
    auto buf = std::make_shared<Buffers>();
    const i64 R = g.recurrent_width, Kc = g.conv_width;
    buf->reset = make_reset();
    const std::uint8_t* reset = buf->reset.data();
    float *y = buf->add(M * R), *x = buf->add(M * R), *w = buf->add(Kc * R, 0.3f), *b = buf->add(R), *dx = buf->add(M * R),
          *dw = buf->add(Kc * R), *db = buf->add(R), *dy = buf->add(M * R);
    out.push_back({"elementwise", g.name, "rec.conv", {tensors::rec_conv}, [=, keep = buf] {
      K::conv1d_forward(y, nullptr, x, nullptr, reset, w, b, B, T, R, Kc);
      K::conv1d_backward(dx, nullptr, dw, db, dy, nullptr, x, nullptr, reset, w, B, T, R, Kc);
    }});
    out.back().hot = {{x, std::size_t(M * R)}, {dy, std::size_t(M * R)}};
    own(out.back(), ops::conv1d);
  }
  {  // elementwise: RoPE on q and k, with the executor's staging copies (forward and backward)
    auto buf = std::make_shared<Buffers>();
    const i64 H = g.heads, Hk = g.kv_heads, N = g.head_dim, rot = i64(std::lround(g.rope_fraction * double(N)));
    const double base = g.rope_base;
    auto pos = std::make_shared<std::vector<std::int32_t>>(M);
    for (i64 i = 0; i < M; ++i) (*pos)[i] = std::int32_t(i % T);
    float *qr = buf->add(M * H * N), *kr = buf->add(M * Hk * N), *qe = buf->add(M * H * N), *ke = buf->add(M * Hk * N),
          *dqr = buf->add(M * H * N), *dkr = buf->add(M * Hk * N), *dqe = buf->add(M * H * N), *dke = buf->add(M * Hk * N);
    out.push_back({"elementwise", g.name, "attn.rope", {tensors::attn_rope}, [=, keep = buf] {
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
    own(out.back(), ops::rope);
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
    out.push_back({"elementwise", g.name, "loss", {tensors::loss}, [=, keep = buf] {
      // probabilities in place of the logits, as the executor's handler (later calls take the
      // exp of probabilities against stale stats: the same work, finite values)
      K::softmax_ce_shard_finish(losses, logits, logits, stats, targets->data(), 0, M, V);
      K::softmax_ce_shard_backward(dlogits, dlosses, logits, targets->data(), 0, M, V);
    }});
    out.back().hot = {{logits, std::size_t(M * V)}};
    own(out.back(), ops::softmax_xent);
  }
  {  // elementwise: a residual add (forward) and its gradient copies (backward)
    auto buf = std::make_shared<Buffers>();
    const i64 D = g.width, n = M * D;
    float *xm = buf->add(n), *x = buf->add(n), *t = buf->add(n), *dxm = buf->add(n), *dt = buf->add(n), *dx = buf->add(n);
    out.push_back({"elementwise", g.name, "rec.residual", {tensors::rec_residual}, [=, keep = buf] {
      for (i64 i = 0; i < n; ++i) xm[i] = x[i] + t[i];
      std::copy(dxm, dxm + n, dt);
      std::copy(dxm, dxm + n, dx);
    }});
    out.back().hot = {{x, std::size_t(n)}, {t, std::size_t(n)}, {dxm, std::size_t(n)}};
    own(out.back(), ops::add);
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
    KernelBench kb{"elementwise", g.name, "params (adamw)", {tensors::params}, [=, keep = buf] {
      for (i64 i = 0; i < n; ++i) grad[i] = float(double(gacc[i]) * 0.5);
      double sq = 0;
      for (const auto& [off, cnt] : *ranges) sq += kernels::sum_squares(grad + off, cnt);
      for (const auto& [off, cnt] : *ranges)
        kernels::fast::adamw_update(param + off, m1 + off, m2 + off, grad + off, cnt, 1, kernels::AdamW{}, 0.1f,
                                    kernels::clip_scale(sq, 1.0f));
    }};
    kb.op = ops::adamw;
    out.push_back(kb);
  }
  {  // elementwise (efficiency.ops.grad_accumulate): the runner's clear of the gradient buffer and
     // its sum into the fp32 accumulator after a micro-batch's backward, over griffin-tiny's parameters
    auto buf = std::make_shared<Buffers>();
    const i64 n = count_parameters(g).total;
    float *grad = buf->add(n), *gacc = buf->add(n);
    KernelBench kb{"elementwise", g.name, "grads (accumulate)", {tensors::grads}, [=, keep = buf] {
      std::fill(grad, grad + n, 0.0f);
      kernels::accumulate(gacc, grad, n);
    }};
    kb.op = ops::grad_accumulate;
    out.push_back(kb);
  }
  {  // elementwise (efficiency.ops.zero): the clear of a layer's activation-gradient buffers
     // before its backward, as many bytes as the lowering prices for griffin-tiny's first layer;
     // cold, as in a step (untouched since the previous step's backward)
    auto buf = std::make_shared<Buffers>();
    const auto steps = named_steps(g, {tensors::grad_buffers});
    const auto n = static_cast<std::size_t>(steps.front().vector_flops);  // the lowering's elements, one store each
    float* z = buf->add(n);
    KernelBench kb{"elementwise", g.name, "grad_buffers (zero)", {tensors::grad_buffers}, [=, keep = buf] { std::fill(z, z + n, 0.0f); }};
    kb.op = ops::zero;
    out.push_back(kb);
  }
  {  // norm: LayerNorm forward + backward (RWKV's pre-norms, the transformer's)
    const ModelSpec r4 = load_model("rwkv4-tiny");
    auto buf = std::make_shared<Buffers>();
    const i64 D = r4.width;
    const float eps = static_cast<float>(r4.norm_eps);
    float *y = buf->add(M * D), *mean = buf->add(M), *rstd = buf->add(M), *x = buf->add(M * D), *scale = buf->add(D, 0.1f),
          *bias = buf->add(D, 0.1f), *dx = buf->add(M * D), *dscale = buf->add(D), *dbias = buf->add(D), *dy = buf->add(M * D);
    out.push_back({"norm", r4.name, "norm1", {tensors::norm1}, [=, keep = buf] {
      K::layer_norm_forward(y, mean, rstd, x, scale, bias, M, D, eps);
      K::layer_norm_backward(dx, dscale, dbias, dy, mean, rstd, x, scale, M, D);
    }});
    out.back().hot = {{x, std::size_t(M * D)}, {dy, std::size_t(M * D)}};
    own(out.back(), ops::layernorm);
  }
  {  // elementwise (efficiency.ops.token_shift): RWKV-4's channel-mix token shift, its two mixes
     // forward and backward as the executor's cm.shift handler runs them (the time mix's three and
     // RWKV-6's shifts are priced with the same value); the class value priced them 2x fast
    const ModelSpec r4 = load_model("rwkv4-tiny");
    auto buf = std::make_shared<Buffers>();
    const i64 D = r4.width, n = M * D;
    float *x = buf->add(n), *xk = buf->add(n), *xr = buf->add(n), *muk = buf->add(D), *mur = buf->add(D), *dx = buf->add(n),
          *dmuk = buf->add(D), *dmur = buf->add(D), *dxk = buf->add(n), *dxr = buf->add(n);
    KernelBench kb{"elementwise", r4.name, "cm.shift (token_shift)", {tensors::cm_shift}, [=, keep = buf] {
      K::token_shift_forward(xk, x, nullptr, muk, B, T, D);
      K::token_shift_forward(xr, x, nullptr, mur, B, T, D);
      K::token_shift_backward(dx, nullptr, dmuk, dxk, x, nullptr, muk, B, T, D);
      K::token_shift_backward(dx, nullptr, dmur, dxr, x, nullptr, mur, B, T, D);
    }};
    kb.op = ops::token_shift;
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
    KernelBench kb{"elementwise", r6.name, "tm.mix (ddlerp)", {tensors::tm_mix}, [=, keep = buf] {
      K::ddlerp_mix_forward(o5, x, xx, mu, m, J, M, D);
      K::ddlerp_mix_backward(dx, dxx, dmu, dm, dout, xx, mu, m, J, M, D);
    }};
    kb.op = ops::ddlerp;
    kb.hot = {{x, std::size_t(n)}, {xx, std::size_t(n)}, {m, std::size_t(J * n)}, {dout, std::size_t(J * n)}};
    out.push_back(kb);
  }
  {  // norm: RMSNorm forward + backward
    auto buf = std::make_shared<Buffers>();
    const i64 D = g.width;
    float *y = buf->add(M * D), *rstd = buf->add(M), *x = buf->add(M * D), *scale = buf->add(D, 0.1f), *dx = buf->add(M * D),
          *dscale = buf->add(D), *dy = buf->add(M * D);
    out.push_back({"norm", g.name, "norm1", {tensors::norm1}, [=, keep = buf] {
      K::rmsnorm_forward(y, rstd, x, scale, M, D);
      K::rmsnorm_backward(dx, dscale, dy, x, rstd, scale, M, D);
    }});
    out.back().hot = {{x, std::size_t(M * D)}, {dy, std::size_t(M * D)}};
    own(out.back(), ops::rmsnorm);
  }
  {  // gemm: the gated MLP — W1, W2, gelu ⊙, W3 and their backward
    auto buf = std::make_shared<Buffers>();
    const i64 D = g.width, F = g.mlp_width;
    const Linear w1 = linear(*buf, M, D, F), w2 = linear(*buf, M, D, F), w3 = linear(*buf, M, F, D);
    float *da = buf->add(M * F), *db = buf->add(M * F);
    out.push_back({"gemm", g.name, "mlp.w1 + w2 + act + w3", {tensors::mlp_w1, tensors::mlp_w2, tensors::mlp_act, tensors::mlp_w3}, [=, keep = buf] {
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
    out.push_back({"gemm", g.name, "rec.wx + wy + wo", {tensors::rec_wx, tensors::rec_wy, tensors::rec_wo}, [=, keep = buf] {
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
    KernelBench kb{"gemm", g.name, "rec.gate_a + gate_x (blockdiag)", {tensors::rec_gate_a, tensors::rec_gate_x}, [=, keep = buf] {
      K::blockdiag_forward(ya, x, wa, ba, M, R, Hb);
      K::blockdiag_forward(yx, x, wx, bx, M, R, Hb);
      K::blockdiag_backward(dx, nullptr, nullptr, dyx, x, wx, M, R, Hb);
      K::blockdiag_backward(nullptr, dwx, dbx, dyx, x, wx, M, R, Hb);
      K::blockdiag_backward(dx, nullptr, nullptr, dya, x, wa, M, R, Hb);
      K::blockdiag_backward(nullptr, dwa, dba, dya, x, wa, M, R, Hb);
    }};
    kb.op = ops::blockdiag;  // thin GEMMs: their own value, not part of the gemm class's fit
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
    out.push_back({"scan", g.name, "rec.decay + rec.scan", {tensors::rec_decay, tensors::rec_scan}, [=, keep = buf] {
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
    KernelBench kb{"scan", r4.name, "tm.wkv (wkv4.scan)", {tensors::tm_wkv}, [=, keep = buf] {
      K::wkv4_forward(y, nullptr, k, v, decay, bonus, nullptr, B, T, D);
      K::wkv4_backward(dk, dv, ddecay, dbonus, nullptr, dy, nullptr, k, v, decay, bonus, nullptr, B, T, D);
    }};
    kb.op = ops::wkv4_scan;
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
      KernelBench kb{"scan", r6.name, scan == ScanAlgo::chunked ? "tm.wkv (wkv6.chunked)" : "tm.wkv (wkv6.scan)", {tensors::tm_wkv},
                     scan == ScanAlgo::chunked ? std::function<void()>() : std::function<void()>(run)};
      kb.op = scan == ScanAlgo::chunked ? ops::wkv6_chunked : ops::wkv6_scan;
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
    out.push_back({"attention", m->name, "attn.core", {tensors::attn_core, tensors::attn_scores_recompute}, [=, keep = buf] {
      K::attention_forward(o, lse, qq, k, v, reset, B, T, H, Hk, N, W);
      K::attention_backward(dq, dk, dv, dout, o, lse, qq, k, v, reset, B, T, H, Hk, N, W);
    }});
  }
  return out;
}

// ─── MPI benchmarks ─────────────────────────────────────────────────────────────────────────────

namespace {
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

}  // namespace

std::vector<CommFit> bench_mpi(const mpi::Comm& w, bool quick) {
  const int P = w.size();
  std::vector<double> sizes;
  const double max_bytes = quick ? 1024.0 * 1024 : 64.0 * 1024 * 1024;
  for (double b = 8; b <= max_bytes; b *= (quick ? 8 : 4)) sizes.push_back(b);
  if (sizes.back() != max_bytes) sizes.push_back(max_bytes);
  const double target = quick ? 0.004 : 0.02;
  ComputeStretch stretch;
  std::vector<CommFit> fits;
  for (const char* kind : {ops::all_reduce, ops::all_gather, ops::reduce_scatter, ops::send_recv}) {
    CommFit f;  // the samples; fit_collective (reports/calibration.hpp) fits them
    for (double bytes : sizes) {
      // Whole floats, a multiple of P for the gather/scatter (the buffer per rank is `bytes`).
      const std::size_t n = std::max<std::size_t>(P, static_cast<std::size_t>(bytes / 4) / P * P);
      std::vector<float> a(n, 0.0f), b(n, 0.0f);  // zeros: repeated in-place sums stay finite
      const std::size_t part = n / P;
      double s = 0;
      const std::string k = kind;
      if (k == ops::all_reduce) s = time_collective(w, [&] { w.allreduce_sum(std::span<float>(a)); }, target, stretch);
      else if (k == ops::all_gather) s = time_collective(w, [&] { w.allgather(std::span<const float>(a.data(), part), std::span<float>(b)); }, target, stretch);
      else if (k == ops::reduce_scatter) s = time_collective(w, [&] { w.reduce_scatter_sum(std::span<const float>(a), std::span<float>(b.data(), part)); }, target, stretch);
      else s = time_collective(w, [&] {
        w.sendrecv(std::span<const float>(a), (w.rank() + 1) % P, std::span<float>(b), (w.rank() + P - 1) % P);
      }, target, stretch);
      f.samples.push_back({4.0 * double(n), s});
    }
    fits.push_back(fit_collective(kind, std::move(f.samples), P));
  }
  return fits;
}

// compute_jitter (ChipSpec): the ranks alternate a stretch of sgemm (~1.5 ms, the order of a tiny
// plan's compute between collectives) with an 8-byte all-reduce. The time a rank spends in the
// all-reduce beyond the call's own latency (`latency_seconds`, the smallest all-reduce sample) is
// its wait for the slowest rank; averaged over iterations and ranks it is E[max] − E[duration] of
// the ranks' stretches, so jitter = mean wait / (mean stretch · E[max of P standard normals]).
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
  return jitter_from(v[0] / w.size(), v[1] / w.size(), w.size());
}

// Mean over ranks, in place.
void mean_over_ranks(const mpi::Comm& w, std::vector<double>& v) {
  if (w.size() == 1 || v.empty()) return;
  w.allreduce_sum(std::span<double>(v));
  for (auto& x : v) x /= w.size();
}

void time_kernel_benches(const mpi::Comm& world, std::vector<KernelBench>& benches, bool quick) {
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
  std::vector<std::vector<double>> calls(benches.size());
  world.barrier();
  const double budget_seconds = quick ? 0.5 : 10.0, t_start = now_seconds();
  for (int round = 0; round < 9 || (round < 400 && now_seconds() - t_start < budget_seconds); ++round)
    for (std::size_t i = 0; i < benches.size(); ++i) {
      if (!benches[i].run) continue;
      if (round == 0) benches[i].run();  // warm-up (first-touch of its buffers)
      evict_l2();
      for (const auto& [p, n] : benches[i].hot)
        for (std::size_t j = 0; j < n; ++j) p[j] += 0.0f;
      const double t0 = now_seconds();
      benches[i].run();
      calls[i].push_back(now_seconds() - t0);
    }
  for (std::size_t i = 0; i < benches.size(); ++i)  // an entry without run: the entry before it's kernels
    v.push_back(benches[i].run ? stats::median(calls[i]) : v.back());
  mean_over_ranks(world, v);
  for (std::size_t i = 0; i < v.size(); ++i) benches[i].seconds = v[i];
}

}  // namespace scanshard::measure
