// tests/kernels/tiny_model.hpp — a whole Griffin / Hawk / MQA / transformer model assembled from kernels/ ops,
// for tests only: parameter names and shapes come from program/'s parameter_tensors(), so the
// test follows the one source of model shapes. The model is a template over the scalar type and
// the op set (Ref = kernels::ref in double for finite differences, Fast = kernels::fast in float).
// Not for: the runner (train/ walks the StepProgram); this is the simplest faithful composition:
//   x = E[tokens]; per layer: x += Temporal(RMSNorm(x)); x += MLP(RMSNorm(x));
//   loss = mean CE(softmax(RMSNorm(x) Eᵀ), targets)                          (DESIGN §3.1)
// The transformer family (GPT-style pre-LN block, model.hpp) the same way, with its choices:
//   x = E[tokens] (+ P[position] with a learned table); Norm = RMSNorm or LayerNorm (bias);
//   Temporal = attention with biases on Q, K, V, O (if linear_bias) and rotary positions only
//   if rope_fraction > 0; MLP = gelu(x W1 + b1) W3 + b3, or (silu(x W1) ⊙ x W2) W3 (+ biases);
//   block: parallel — x += Temporal(Norm1(x)) + MLP(Norm1(x)) (PaLM), no Norm2.
#pragma once
#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/conv1d.hpp"
#include "kernels/embedding.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rwkv_ops.hpp"
#include "program/model.hpp"
#include "program/param_layout.hpp"

namespace kt {

using i64 = std::int64_t;
namespace kk = scanshard::kernels;

#define KT_FWD(ns, name) \
  template <class... A> static void name(A&&... a) { ns::name(std::forward<A>(a)...); }
#define KT_OPS(ns)                                                                                  \
  KT_FWD(ns, embedding_forward) KT_FWD(ns, embedding_backward) KT_FWD(ns, logits_tied_forward)      \
  KT_FWD(ns, logits_tied_backward) KT_FWD(ns, softmax_ce_forward) KT_FWD(ns, softmax_ce_backward)   \
  KT_FWD(ns, linear_forward) KT_FWD(ns, linear_backward) KT_FWD(ns, rmsnorm_forward)                \
  KT_FWD(ns, rmsnorm_backward) KT_FWD(ns, gelu_mul_forward) KT_FWD(ns, gelu_mul_backward)           \
  KT_FWD(ns, gated_mlp_forward) KT_FWD(ns, gated_mlp_backward) KT_FWD(ns, conv1d_forward)           \
  KT_FWD(ns, conv1d_backward) KT_FWD(ns, rglru_forward) KT_FWD(ns, rglru_backward)                  \
  KT_FWD(ns, rope_forward) KT_FWD(ns, rope_backward) KT_FWD(ns, attention_forward)                  \
  KT_FWD(ns, attention_backward) KT_FWD(ns, layer_norm_forward) KT_FWD(ns, layer_norm_backward)     \
  KT_FWD(ns, silu_mul_forward) KT_FWD(ns, silu_mul_backward)
struct RefOps { KT_OPS(kk::ref) };
struct FastOps { KT_OPS(kk::fast) };
#undef KT_OPS
#undef KT_FWD

// One flat parameter buffer and its deterministic init: the runner's (program/param_layout.hpp).
using scanshard::Layout;
using scanshard::init_params;

template <class F, class K>
class Model {
 public:
  Model(const scanshard::ModelSpec& m, const Layout& lay, i64 B, i64 T)
      : m_(m), lay_(lay), B_(B), T_(T), M_(B * T) {}

  // Mean cross-entropy over the B·T tokens; saves the activations for backward().
  F forward(const F* p, const std::vector<std::int32_t>& tokens, const std::vector<std::int32_t>& targets,
            const std::vector<std::uint8_t>& reset) {
    tokens_ = tokens; targets_ = targets; reset_ = reset;
    pos_.assign(M_, 0);
    for (i64 b = 0; b < B_; ++b)
      for (i64 t = 0, s = 0; t < T_; ++t) { if (reset[b * T_ + t]) s = t; pos_[b * T_ + t] = std::int32_t(t - s); }
    const i64 D = m_.width, V = m_.vocab, M = M_;
    const F* E = p + lay_.off("embed", "embed.table");
    x0_.assign(M * D, F(0));
    K::embedding_forward(x0_.data(), tokens.data(), E, M, D, m_.scale_embedding ? F(std::sqrt(double(D))) : F(1));
    if (m_.max_positions > 0) {  // learned positions: row pos of the table added to each token
      const F* Pt = p + lay_.off("embed", "embed.positions");
      for (i64 i = 0; i < M; ++i)
        for (i64 d = 0; d < D; ++d) x0_[i * D + d] += Pt[i64(pos_[i]) * D + d];
    }
    std::vector<F> x = x0_;
    acts_.resize(m_.depth);  // buffers are reused from step to step (assign keeps capacity)
    for (i64 l = 0; l < m_.depth; ++l) layer_forward(p, l, x);
    xf_ = x;
    nf_.assign(M * D, F(0)); rstdf_.assign(M, F(0)); meanf_.assign(M, F(0));
    norm_forward(p, "final", "final_norm", nf_, meanf_, rstdf_, xf_);
    probs_.assign(M * V, F(0)); losses_.assign(M, F(0));
    K::logits_tied_forward(probs_.data(), nf_.data(), E, M, D, V);
    K::softmax_ce_forward(losses_.data(), probs_.data(), probs_.data(), targets.data(), M, V);
    double s = 0;
    for (auto v : losses_) s += v;
    return F(s / double(M));
  }

  // Accumulates d(mean loss)/d params into g.
  void backward(const F* p, F* g) {
    const i64 D = m_.width, V = m_.vocab, M = M_;
    const F* E = p + lay_.off("embed", "embed.table");
    F* dE = g + lay_.off("embed", "embed.table");
    std::vector<F> dl(M, F(1.0 / double(M))), dlogits(M * V, F(0)), dnf(M * D, F(0)), dx(M * D, F(0));
    K::softmax_ce_backward(dlogits.data(), dl.data(), probs_.data(), targets_.data(), M, V);
    K::logits_tied_backward(dnf.data(), dE, dlogits.data(), nf_.data(), E, M, D, V);
    norm_backward(p, g, "final", "final_norm", dx, dnf, meanf_, rstdf_, xf_);
    for (i64 l = m_.depth - 1; l >= 0; --l) layer_backward(p, g, l, dx);
    if (m_.max_positions > 0) {
      F* dP = g + lay_.off("embed", "embed.positions");
      for (i64 i = 0; i < M; ++i)
        for (i64 d = 0; d < D; ++d) dP[i64(pos_[i]) * D + d] += dx[i * D + d];
    }
    K::embedding_backward(dE, dx.data(), tokens_.data(), M, D, m_.scale_embedding ? F(std::sqrt(double(D))) : F(1));
  }

 private:
  struct Acts {
    std::vector<F> x_in, n1, mean1, rstd1, gy, u, cu, hs, ga, gx, pr, qr, q, kr, k, v, a, lse, x_mid, n2, mean2, rstd2, h1,
        h2, gm;
  };
  bool transformer() const { return m_.family == scanshard::Family::transformer; }
  bool layernorm() const { return transformer() && m_.norm == scanshard::NormKind::layernorm; }
  // A parameter the model may not have (transformer biases): nullptr when absent.
  const F* opt(const F* base, const std::string& blk, const char* n) const {
    return lay_.index.count(blk + "/" + n) ? base + lay_.off(blk, n) : nullptr;
  }
  F* opt(F* base, const std::string& blk, const char* n) const {
    return lay_.index.count(blk + "/" + n) ? base + lay_.off(blk, n) : nullptr;
  }
  // RMSNorm(scale) or the transformer's LayerNorm(scale, bias), both with the model's norm_eps.
  void norm_forward(const F* p, const std::string& blk, const std::string& name, std::vector<F>& y, std::vector<F>& mean,
                    std::vector<F>& rstd, const std::vector<F>& x) {
    const i64 D = m_.width, M = M_;
    const F* sc = p + lay_.off(blk, name + ".scale");
    if (layernorm())
      K::layer_norm_forward(y.data(), mean.data(), rstd.data(), x.data(), sc, p + lay_.off(blk, name + ".bias"), M, D,
                            F(m_.norm_eps));
    else
      K::rmsnorm_forward(y.data(), rstd.data(), x.data(), sc, M, D, F(m_.norm_eps));
  }
  // dx += d norm / d x · dy; the scale (and bias) gradients accumulate into g.
  void norm_backward(const F* p, F* g, const std::string& blk, const std::string& name, std::vector<F>& dx,
                     const std::vector<F>& dy, const std::vector<F>& mean, const std::vector<F>& rstd,
                     const std::vector<F>& x) {
    const i64 D = m_.width, M = M_;
    const F* sc = p + lay_.off(blk, name + ".scale");
    F* dsc = g + lay_.off(blk, name + ".scale");
    if (layernorm())
      K::layer_norm_backward(dx.data(), dsc, g + lay_.off(blk, name + ".bias"), dy.data(), mean.data(), rstd.data(),
                             x.data(), sc, M, D);
    else
      K::rmsnorm_backward(dx.data(), dsc, dy.data(), x.data(), rstd.data(), sc, M, D);
  }

  static constexpr F* nul() { return static_cast<F*>(nullptr); }
  static constexpr const F* cnul() { return static_cast<const F*>(nullptr); }

  void layer_forward(const F* p, i64 l, std::vector<F>& x) {
    const std::string blk = "layer." + std::to_string(l);
    auto P = [&](const char* n) { return p + lay_.off(blk, n); };
    const i64 D = m_.width, M = M_, Fh = m_.mlp_width;
    Acts& A = acts_[l];
    A.x_in = x;
    A.n1.assign(M * D, F(0)); A.rstd1.assign(M, F(0)); A.mean1.assign(M, F(0));
    norm_forward(p, blk, "norm1", A.n1, A.mean1, A.rstd1, x);
    std::vector<F> tout(M * D, F(0));
    if (scanshard::temporal_kind(m_, l) == scanshard::Temporal::recurrent) {
      const i64 R = m_.recurrent_width, Kc = m_.conv_width, Hb = m_.gate_blocks;
      for (auto* v : {&A.gy, &A.u, &A.cu, &A.hs, &A.ga, &A.gx, &A.pr}) v->assign(M * R, F(0));
      K::linear_forward(A.gy.data(), A.n1.data(), P("rec.wy"), P("rec.by"), M, D, R);   // gate branch
      K::linear_forward(A.u.data(), A.n1.data(), P("rec.wx"), P("rec.bx"), M, D, R);    // input branch
      K::conv1d_forward(A.cu.data(), nul(), A.u.data(), cnul(), reset_.data(), P("rec.conv_w"), P("rec.conv_b"), B_, T_, R, Kc);
      K::rglru_forward(A.hs.data(), nul(), nul(), A.ga.data(), A.gx.data(), A.cu.data(), cnul(), reset_.data(),
                       P("rec.gate_a_w"), P("rec.gate_a_b"), P("rec.gate_x_w"), P("rec.gate_x_b"), P("rec.lambda"),
                       B_, T_, R, Hb);
      K::gelu_mul_forward(A.pr.data(), A.gy.data(), A.hs.data(), M * R);               // gelu(gy) ⊙ h
      K::linear_forward(tout.data(), A.pr.data(), P("rec.wo"), P("rec.bo"), M, R, D);
    } else {
      const i64 H = m_.heads, Hk = m_.kv_heads, N = m_.head_dim;
      const i64 rot = i64(std::lround(m_.rope_fraction * double(N)));
      A.qr.assign(M * H * N, F(0)); A.q = A.qr; A.a = A.qr;
      A.kr.assign(M * Hk * N, F(0)); A.k = A.kr; A.v = A.kr;
      A.lse.assign(B_ * H * T_, F(0));
      K::linear_forward(A.qr.data(), A.n1.data(), P("attn.wq"), opt(p, blk, "attn.bq"), M, D, H * N);
      K::linear_forward(A.kr.data(), A.n1.data(), P("attn.wk"), opt(p, blk, "attn.bk"), M, D, Hk * N);
      K::linear_forward(A.v.data(), A.n1.data(), P("attn.wv"), opt(p, blk, "attn.bv"), M, D, Hk * N);
      if (rot > 0) {
        K::rope_forward(A.q.data(), A.qr.data(), pos_.data(), B_, T_, H, N, rot, m_.rope_base);
        K::rope_forward(A.k.data(), A.kr.data(), pos_.data(), B_, T_, Hk, N, rot, m_.rope_base);
      } else {  // no rotary positions
        A.q = A.qr;
        A.k = A.kr;
      }
      K::attention_forward(A.a.data(), A.lse.data(), A.q.data(), A.k.data(), A.v.data(), reset_.data(), B_, T_, H, Hk,
                           N, m_.window);
      K::linear_forward(tout.data(), A.a.data(), P("attn.wo"), opt(p, blk, "attn.bo"), M, H * N, D);
    }
    // Parallel block (PaLM): y = x + Attn(norm1(x)) + MLP(norm1(x)) — the MLP reads norm1's output
    // and both branches add to the input at the end.
    const bool par = m_.parallel_block;
    if (!par) {
      for (i64 i = 0; i < M * D; ++i) x[i] += tout[i];
      A.x_mid = x;
      A.n2.assign(M * D, F(0)); A.rstd2.assign(M, F(0)); A.mean2.assign(M, F(0));
      norm_forward(p, blk, "norm2", A.n2, A.mean2, A.rstd2, x);
    } else {
      A.n2 = A.n1;
    }
    A.h1.assign(M * Fh, F(0)); A.h2 = A.h1; A.gm = A.h1;
    std::vector<F> y(M * D, F(0));
    if (!transformer()) {
      K::gated_mlp_forward(y.data(), A.h1.data(), A.h2.data(), A.gm.data(), A.n2.data(), P("mlp.w1"), P("mlp.b1"),
                           P("mlp.w2"), P("mlp.b2"), P("mlp.w3"), P("mlp.b3"), M, D, Fh);
    } else {
      K::linear_forward(A.h1.data(), A.n2.data(), P("mlp.w1"), opt(p, blk, "mlp.b1"), M, D, Fh);
      if (m_.mlp == scanshard::MlpKind::gelu) {
        K::gelu_mul_forward(A.gm.data(), A.h1.data(), cnul(), M * Fh);  // gelu(h1)
      } else {  // swiglu: silu(h1) ⊙ h2
        K::linear_forward(A.h2.data(), A.n2.data(), P("mlp.w2"), opt(p, blk, "mlp.b2"), M, D, Fh);
        K::silu_mul_forward(A.gm.data(), A.h2.data(), A.h1.data(), M * Fh);
      }
      K::linear_forward(y.data(), A.gm.data(), P("mlp.w3"), opt(p, blk, "mlp.b3"), M, Fh, D);
    }
    for (i64 i = 0; i < M * D; ++i) x[i] += y[i] + (par ? tout[i] : F(0));
  }

  void layer_backward(const F* p, F* g, i64 l, std::vector<F>& dx) {
    const std::string blk = "layer." + std::to_string(l);
    auto P = [&](const char* n) { return p + lay_.off(blk, n); };
    auto G = [&](const char* n) { return g + lay_.off(blk, n); };
    const i64 D = m_.width, M = M_, Fh = m_.mlp_width;
    Acts& A = acts_[l];
    // x2 = x1 + MLP(RMSNorm(x1)); parallel: the MLP's input gradient joins norm1's (dn1), and the
    // temporal branch's output gradient is dx itself (no norm2 between)
    const bool par = m_.parallel_block;
    std::vector<F> dn1(M * D, F(0));
    std::vector<F> dn2_own(par ? 0 : M * D, F(0)), work(3 * M * Fh);
    std::vector<F>& dn2 = par ? dn1 : dn2_own;
    if (!transformer()) {
      K::gated_mlp_backward(dn2.data(), G("mlp.w1"), G("mlp.b1"), G("mlp.w2"), G("mlp.b2"), G("mlp.w3"), G("mlp.b3"),
                            work.data(), dx.data(), A.n2.data(), A.h1.data(), A.h2.data(), A.gm.data(), P("mlp.w1"),
                            P("mlp.w2"), P("mlp.w3"), M, D, Fh);
    } else {
      std::vector<F> dgm(M * Fh, F(0)), dh1(M * Fh, F(0)), dh2(M * Fh, F(0));
      K::linear_backward(dgm.data(), G("mlp.w3"), opt(g, blk, "mlp.b3"), dx.data(), A.gm.data(), P("mlp.w3"), M, Fh, D);
      if (m_.mlp == scanshard::MlpKind::gelu) {
        K::gelu_mul_backward(dh1.data(), nul(), dgm.data(), A.h1.data(), cnul(), M * Fh);
      } else {
        K::silu_mul_backward(dh2.data(), dh1.data(), dgm.data(), A.h2.data(), A.h1.data(), M * Fh);
        K::linear_backward(dn2.data(), G("mlp.w2"), opt(g, blk, "mlp.b2"), dh2.data(), A.n2.data(), P("mlp.w2"), M, D, Fh);
      }
      K::linear_backward(dn2.data(), G("mlp.w1"), opt(g, blk, "mlp.b1"), dh1.data(), A.n2.data(), P("mlp.w1"), M, D, Fh);
    }
    if (!par) norm_backward(p, g, blk, "norm2", dx, dn2, A.mean2, A.rstd2, A.x_mid);
    // x1 = x0 + Temporal(RMSNorm(x0))
    if (scanshard::temporal_kind(m_, l) == scanshard::Temporal::recurrent) {
      const i64 R = m_.recurrent_width, Kc = m_.conv_width, Hb = m_.gate_blocks;
      std::vector<F> dpr(M * R, F(0)), dgy(M * R, F(0)), dhs(M * R, F(0)), dcu(M * R, F(0)), du(M * R, F(0)),
          w2(2 * M * R);
      K::linear_backward(dpr.data(), G("rec.wo"), G("rec.bo"), dx.data(), A.pr.data(), P("rec.wo"), M, R, D);
      K::gelu_mul_backward(dgy.data(), dhs.data(), dpr.data(), A.gy.data(), A.hs.data(), M * R);
      K::rglru_backward(dcu.data(), nul(), G("rec.gate_a_w"), G("rec.gate_a_b"), G("rec.gate_x_w"), G("rec.gate_x_b"),
                        G("rec.lambda"), w2.data(), dhs.data(), cnul(), A.hs.data(), A.ga.data(), A.gx.data(),
                        A.cu.data(), cnul(), reset_.data(), P("rec.gate_a_w"), P("rec.gate_x_w"), P("rec.lambda"), B_,
                        T_, R, Hb);
      K::conv1d_backward(du.data(), nul(), G("rec.conv_w"), G("rec.conv_b"), dcu.data(), cnul(), A.u.data(), cnul(),
                         reset_.data(), P("rec.conv_w"), B_, T_, R, Kc);
      K::linear_backward(dn1.data(), G("rec.wx"), G("rec.bx"), du.data(), A.n1.data(), P("rec.wx"), M, D, R);
      K::linear_backward(dn1.data(), G("rec.wy"), G("rec.by"), dgy.data(), A.n1.data(), P("rec.wy"), M, D, R);
    } else {
      const i64 H = m_.heads, Hk = m_.kv_heads, N = m_.head_dim;
      const i64 rot = i64(std::lround(m_.rope_fraction * double(N)));
      std::vector<F> da(M * H * N, F(0)), dq = da, dqr = da, dk(M * Hk * N, F(0)), dkr = dk, dv = dk;
      K::linear_backward(da.data(), G("attn.wo"), opt(g, blk, "attn.bo"), dx.data(), A.a.data(), P("attn.wo"), M, H * N, D);
      K::attention_backward(dq.data(), dk.data(), dv.data(), da.data(), A.a.data(), A.lse.data(), A.q.data(),
                            A.k.data(), A.v.data(), reset_.data(), B_, T_, H, Hk, N, m_.window);
      if (rot > 0) {
        K::rope_backward(dqr.data(), dq.data(), pos_.data(), B_, T_, H, N, rot, m_.rope_base);
        K::rope_backward(dkr.data(), dk.data(), pos_.data(), B_, T_, Hk, N, rot, m_.rope_base);
      } else {
        dqr = dq;
        dkr = dk;
      }
      K::linear_backward(dn1.data(), G("attn.wq"), opt(g, blk, "attn.bq"), dqr.data(), A.n1.data(), P("attn.wq"), M, D, H * N);
      K::linear_backward(dn1.data(), G("attn.wk"), opt(g, blk, "attn.bk"), dkr.data(), A.n1.data(), P("attn.wk"), M, D, Hk * N);
      K::linear_backward(dn1.data(), G("attn.wv"), opt(g, blk, "attn.bv"), dv.data(), A.n1.data(), P("attn.wv"), M, D, Hk * N);
    }
    norm_backward(p, g, blk, "norm1", dx, dn1, A.mean1, A.rstd1, A.x_in);
  }

  const scanshard::ModelSpec& m_;
  const Layout& lay_;
  i64 B_, T_, M_;
  std::vector<std::int32_t> tokens_, targets_, pos_;
  std::vector<std::uint8_t> reset_;
  std::vector<F> x0_, xf_, nf_, meanf_, rstdf_, probs_, losses_;
  std::vector<Acts> acts_;
};

}  // namespace kt
