// tests/kernels/rwkv_tiny_model.hpp — a whole RWKV-4 or RWKV-6 model assembled from kernels/ ops,
// for tests only. Parameter names and shapes come from program/'s parameter_tensors() (Layout in
// tiny_model.hpp). A template over the scalar type and the op set (RwkvRefOps = kernels::ref in
// double for finite differences, RwkvFastOps = kernels::fast in float). DESIGN §3.2–3.3:
//   x = LN_embed(E[tokens]); per layer: x += TimeMix(LN1(x)); x += ChannelMix(LN2(x));
//   loss = mean CE(softmax(LN_final(x) W_head), targets)          (untied head W_head [D,V])
// Not for: the runner (train/ walks the StepProgram); document resets (RWKV has none here).
#pragma once
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/embedding.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/linear.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv_ops.hpp"
#include "program/model.hpp"
#include "tiny_model.hpp"

namespace kt {

#define KT_RWKV_FWD(ns, name) \
  template <class... A> static void name(A&&... a) { ns::name(std::forward<A>(a)...); }
#define KT_RWKV_OPS(ns)                                                                            \
  KT_RWKV_FWD(ns, embedding_forward) KT_RWKV_FWD(ns, embedding_backward)                           \
  KT_RWKV_FWD(ns, softmax_ce_forward) KT_RWKV_FWD(ns, softmax_ce_backward)                         \
  KT_RWKV_FWD(ns, linear_forward) KT_RWKV_FWD(ns, linear_backward)                                 \
  KT_RWKV_FWD(ns, group_norm_forward) KT_RWKV_FWD(ns, group_norm_backward)                         \
  KT_RWKV_FWD(ns, token_shift_forward) KT_RWKV_FWD(ns, token_shift_backward)                       \
  KT_RWKV_FWD(ns, wkv4_forward) KT_RWKV_FWD(ns, wkv4_backward)                                     \
  KT_RWKV_FWD(ns, wkv6_forward) KT_RWKV_FWD(ns, wkv6_backward)                                     \
  KT_RWKV_FWD(ns, sigmoid_mul_forward) KT_RWKV_FWD(ns, sigmoid_mul_backward)                       \
  KT_RWKV_FWD(ns, relu_square_forward) KT_RWKV_FWD(ns, relu_square_backward)                       \
  KT_RWKV_FWD(ns, silu_mul_forward) KT_RWKV_FWD(ns, silu_mul_backward)                             \
  KT_RWKV_FWD(ns, tanh_forward) KT_RWKV_FWD(ns, tanh_backward)                                     \
  KT_RWKV_FWD(ns, ddlerp_shift_forward) KT_RWKV_FWD(ns, ddlerp_shift_backward)                     \
  KT_RWKV_FWD(ns, ddlerp_mix_forward) KT_RWKV_FWD(ns, ddlerp_mix_backward)                         \
  KT_RWKV_FWD(ns, decay_forward) KT_RWKV_FWD(ns, decay_backward)
struct RwkvRefOps { KT_RWKV_OPS(kk::ref) };
struct RwkvFastOps { KT_RWKV_OPS(kk::fast) };
#undef KT_RWKV_OPS
#undef KT_RWKV_FWD

// RWKV-flavoured deterministic init: matrices N(0, 1/fan_in); LayerNorm/GroupNorm scales
// 1 + N(0, 0.1²), biases N(0, 0.1²); token-shift μ ∈ U(0.2, 0.8); RWKV-4 time_decay ∈ U(−2, 1)
// (w = e^{decay}); RWKV-6 decay λ ∈ U(−3, −0.5) (w = e^{−e^{λ}} ∈ [0.55, 0.95]); bonus N(0, 0.3²);
// LoRA matrices N(0, 0.3²/fan_in) so the data-dependent terms are small but non-zero.
inline std::vector<float> init_rwkv_params(const Layout& lay, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<double> nd(0, 1);
  std::uniform_real_distribution<double> u01(0, 1);
  std::vector<float> p(lay.total);
  auto ends = [](const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  for (size_t i = 0; i < lay.tensors.size(); ++i) {
    const auto& t = lay.tensors[i];
    float* d = p.data() + lay.offset[i];
    const auto& n = t.name;
    const bool rwkv6 = lay.index.count(t.block + "/tm.lora_a") > 0;
    for (i64 j = 0; j < t.count(); ++j) {
      double x;
      if (ends(n, ".scale")) x = 1.0 + 0.1 * nd(g);
      else if (ends(n, ".bias")) x = 0.1 * nd(g);
      else if (n.find("mu") != std::string::npos) x = 0.2 + 0.6 * u01(g);
      else if (n == "tm.decay") x = rwkv6 ? -3.0 + 2.5 * u01(g) : -2.0 + 3.0 * u01(g);
      else if (n == "tm.bonus") x = 0.3 * nd(g);
      else if (n.find("lora") != std::string::npos || n == "tm.decay_a" || n == "tm.decay_b")
        x = 0.3 * nd(g) / std::sqrt(double(t.shape[t.shape.size() - 2]));
      else x = nd(g) / std::sqrt(double(t.shape[t.shape.size() - 2]));  // matrices [in, out]
      d[j] = float(x);
    }
  }
  return p;
}

template <class F, class K>
class RwkvModel {
 public:
  RwkvModel(const scanshard::ModelSpec& m, const Layout& lay, i64 B, i64 T)
      : m_(m), lay_(lay), B_(B), T_(T), M_(B * T), rwkv6_(m.family == scanshard::Family::rwkv6) {}

  F forward(const F* p, const std::vector<std::int32_t>& tokens, const std::vector<std::int32_t>& targets) {
    p_ = p;
    tokens_ = tokens;
    targets_ = targets;
    const i64 D = m_.width, V = m_.vocab, M = M_;
    x0_.assign(M * D, F(0));
    K::embedding_forward(x0_.data(), tokens.data(), P("embed", "embed.table"), M, D, F(1));
    ln0_.fwd(x0_, P("embed", "embed_norm.scale"), P("embed", "embed_norm.bias"), M, D, F(m_.norm_eps));
    std::vector<F> x = ln0_.y;
    acts_.assign(m_.depth, Acts{});
    for (i64 l = 0; l < m_.depth; ++l) layer_forward(l, x);
    lnf_.fwd(x, P("final", "final_norm.scale"), P("final", "final_norm.bias"), M, D, F(m_.norm_eps));
    probs_.assign(M * V, F(0));
    losses_.assign(M, F(0));
    K::linear_forward(probs_.data(), lnf_.y.data(), P("head", "head.w"), cnul(), M, D, V);
    K::softmax_ce_forward(losses_.data(), probs_.data(), probs_.data(), targets.data(), M, V);
    double s = 0;
    for (auto v : losses_) s += v;
    return F(s / double(M));
  }

  void backward(F* g) {
    const i64 D = m_.width, V = m_.vocab, M = M_;
    std::vector<F> dl(M, F(1.0 / double(M))), dlogits(M * V, F(0)), dxf(M * D, F(0)), dx(M * D, F(0));
    K::softmax_ce_backward(dlogits.data(), dl.data(), probs_.data(), targets_.data(), M, V);
    K::linear_backward(dxf.data(), G(g, "head", "head.w"), nul(), dlogits.data(), lnf_.y.data(),
                       P("head", "head.w"), M, D, V);
    lnf_.bwd(dx, G(g, "final", "final_norm.scale"), G(g, "final", "final_norm.bias"), dxf,
             P("final", "final_norm.scale"), M, D);
    for (i64 l = m_.depth - 1; l >= 0; --l) layer_backward(g, l, dx);
    std::vector<F> dx0(M * D, F(0));
    ln0_.bwd(dx0, G(g, "embed", "embed_norm.scale"), G(g, "embed", "embed_norm.bias"), dx,
             P("embed", "embed_norm.scale"), M, D);
    K::embedding_backward(G(g, "embed", "embed.table"), dx0.data(), tokens_.data(), M, D, F(1));
  }

 private:
  struct LN {
    std::vector<F> x, y, mean, rstd;
    void fwd(const std::vector<F>& in, const F* sc, const F* bi, i64 M, i64 D, F eps) {
      x = in;
      y.assign(M * D, F(0));
      mean.assign(M, F(0));
      rstd.assign(M, F(0));
      K::group_norm_forward(y.data(), mean.data(), rstd.data(), x.data(), sc, bi, M, i64(1), D, eps);
    }
    void bwd(std::vector<F>& dx, F* dsc, F* dbi, const std::vector<F>& dy, const F* sc, i64 M, i64 D) {
      K::group_norm_backward(dx.data(), dsc, dbi, dy.data(), mean.data(), rstd.data(), x.data(), sc, M,
                             i64(1), D);
    }
  };
  struct Acts {
    LN ln1, ln2, gn;
    // time mix (RWKV-4: xs[0..2] = x_r, x_k, x_v; RWKV-6: xs = x_w, x_k, x_v, x_r, x_g [5,M,D])
    std::vector<F> xs, r, k, v, g, wkv, o, xx, xxx, tz, mz, dlt, logw;
    // channel mix
    std::vector<F> cxk, cxr, ck, ch, cv, cr;
  };

  static constexpr F* nul() { return static_cast<F*>(nullptr); }
  static constexpr const F* cnul() { return static_cast<const F*>(nullptr); }
  const F* P(const std::string& blk, const char* n) const { return p_ + lay_.off(blk, n); }
  F* G(F* g, const std::string& blk, const char* n) const { return g + lay_.off(blk, n); }

  void layer_forward(i64 l, std::vector<F>& x) {
    const std::string blk = "layer." + std::to_string(l);
    auto Q = [&](const char* n) { return P(blk, n); };
    const i64 D = m_.width, M = M_, Fh = m_.mlp_width;
    Acts& A = acts_[l];
    A.ln1.fwd(x, Q("norm1.scale"), Q("norm1.bias"), M, D, F(m_.norm_eps));
    const std::vector<F>& n1 = A.ln1.y;
    std::vector<F> tout(M * D, F(0));
    for (auto* v : {&A.r, &A.k, &A.v, &A.wkv, &A.o}) v->assign(M * D, F(0));
    if (!rwkv6_) {
      // x_□ = μ_□ x_t + (1 − μ_□) x_{t−1};  r, k, v = x_□ W_□;  o = (σ(r) ⊙ wkv) W_o
      A.xs.assign(3 * M * D, F(0));
      const char* mus[3] = {"tm.mu_r", "tm.mu_k", "tm.mu_v"};
      const char* ws[3] = {"tm.wr", "tm.wk", "tm.wv"};
      std::vector<F>* outs[3] = {&A.r, &A.k, &A.v};
      for (int j = 0; j < 3; ++j) {
        K::token_shift_forward(A.xs.data() + j * M * D, n1.data(), cnul(), Q(mus[j]), B_, T_, D);
        K::linear_forward(outs[j]->data(), A.xs.data() + j * M * D, Q(ws[j]), cnul(), M, D, D);
      }
      K::wkv4_forward(A.wkv.data(), nul(), A.k.data(), A.v.data(), Q("tm.decay"), Q("tm.bonus"), cnul(),
                      B_, T_, D);
      K::sigmoid_mul_forward(A.o.data(), A.r.data(), A.wkv.data(), M * D);
    } else {
      const i64 r = m_.lora_rank_mix, rw = m_.lora_rank_decay, H = D / m_.head_size, N = m_.head_size;
      // xx = x_{t−1} − x;  m = tanh((x + xx μ_x) A) B;  x_□ = x + xx (μ_□ + m_□)
      A.xx.assign(M * D, F(0));
      A.xxx.assign(M * D, F(0));
      K::ddlerp_shift_forward(A.xx.data(), A.xxx.data(), n1.data(), cnul(), Q("tm.mu_x"), B_, T_, D);
      std::vector<F> z(M * 5 * r, F(0));
      A.tz.assign(M * 5 * r, F(0));
      K::linear_forward(z.data(), A.xxx.data(), Q("tm.lora_a"), cnul(), M, D, 5 * r);
      K::tanh_forward(A.tz.data(), z.data(), M * 5 * r);
      A.mz.assign(5 * M * D, F(0));
      for (i64 j = 0; j < 5; ++j) {
        std::vector<F> tj = take_cols(A.tz, M, 5 * r, j * r, r);
        K::linear_forward(A.mz.data() + j * M * D, tj.data(), Q("tm.lora_b") + j * r * D, cnul(), M, r, D);
      }
      A.xs.assign(5 * M * D, F(0));
      K::ddlerp_mix_forward(A.xs.data(), n1.data(), A.xx.data(), Q("tm.mu"), A.mz.data(), i64(5), M, D);
      const F* xw = A.xs.data();
      // d = λ + tanh(x_w A_w) B_w;  log w = −exp(d)
      std::vector<F> dz(M * rw, F(0));
      A.dlt.assign(M * rw, F(0));
      K::linear_forward(dz.data(), xw, Q("tm.decay_a"), cnul(), M, D, rw);
      K::tanh_forward(A.dlt.data(), dz.data(), M * rw);
      std::vector<F> dd(M * D, F(0));
      K::linear_forward(dd.data(), A.dlt.data(), Q("tm.decay_b"), cnul(), M, rw, D);
      A.logw.assign(M * D, F(0));
      K::decay_forward(A.logw.data(), Q("tm.decay"), dd.data(), M, D);
      A.g.assign(M * D, F(0));
      K::linear_forward(A.k.data(), A.xs.data() + 1 * M * D, Q("tm.wk"), cnul(), M, D, D);
      K::linear_forward(A.v.data(), A.xs.data() + 2 * M * D, Q("tm.wv"), cnul(), M, D, D);
      K::linear_forward(A.r.data(), A.xs.data() + 3 * M * D, Q("tm.wr"), cnul(), M, D, D);
      K::linear_forward(A.g.data(), A.xs.data() + 4 * M * D, Q("tm.wg"), cnul(), M, D, D);
      K::wkv6_forward(A.wkv.data(), nul(), A.r.data(), A.k.data(), A.v.data(), A.logw.data(), Q("tm.bonus"),
                      cnul(), B_, T_, H, N);
      // o = (GroupNorm_H(y) ⊙ silu(g)) W_o
      A.gn.x = A.wkv;
      A.gn.y.assign(M * D, F(0));
      A.gn.mean.assign(M * H, F(0));
      A.gn.rstd.assign(M * H, F(0));
      K::group_norm_forward(A.gn.y.data(), A.gn.mean.data(), A.gn.rstd.data(), A.wkv.data(), Q("tm.gn_scale"),
                            Q("tm.gn_bias"), M, H, N, F(m_.group_norm_eps));
      K::silu_mul_forward(A.o.data(), A.gn.y.data(), A.g.data(), M * D);
    }
    K::linear_forward(tout.data(), A.o.data(), Q("tm.wo"), cnul(), M, D, D);
    for (i64 i = 0; i < M * D; ++i) x[i] += tout[i];
    // channel mix: σ(x_r W_r) ⊙ (relu(x_k W_k)² W_v)
    A.ln2.fwd(x, Q("norm2.scale"), Q("norm2.bias"), M, D, F(m_.norm_eps));
    const std::vector<F>& n2 = A.ln2.y;
    for (auto* v : {&A.cxk, &A.cxr, &A.cv, &A.cr}) v->assign(M * D, F(0));
    A.ck.assign(M * Fh, F(0));
    A.ch.assign(M * Fh, F(0));
    K::token_shift_forward(A.cxk.data(), n2.data(), cnul(), Q("cm.mu_k"), B_, T_, D);
    K::token_shift_forward(A.cxr.data(), n2.data(), cnul(), Q("cm.mu_r"), B_, T_, D);
    K::linear_forward(A.ck.data(), A.cxk.data(), Q("cm.wk"), cnul(), M, D, Fh);
    K::relu_square_forward(A.ch.data(), A.ck.data(), M * Fh);
    K::linear_forward(A.cv.data(), A.ch.data(), Q("cm.wv"), cnul(), M, Fh, D);
    K::linear_forward(A.cr.data(), A.cxr.data(), Q("cm.wr"), cnul(), M, D, D);
    std::vector<F> cout(M * D, F(0));
    K::sigmoid_mul_forward(cout.data(), A.cr.data(), A.cv.data(), M * D);
    for (i64 i = 0; i < M * D; ++i) x[i] += cout[i];
  }

  void layer_backward(F* g, i64 l, std::vector<F>& dx) {
    const std::string blk = "layer." + std::to_string(l);
    auto Q = [&](const char* n) { return P(blk, n); };
    auto dQ = [&](const char* n) { return G(g, blk, n); };
    const i64 D = m_.width, M = M_, Fh = m_.mlp_width;
    Acts& A = acts_[l];
    // channel mix (dx is the gradient of the residual stream after the block)
    {
      std::vector<F> dcr(M * D, F(0)), dcv(M * D, F(0)), dch(M * Fh, F(0)), dck(M * Fh, F(0)),
          dxk(M * D, F(0)), dxr(M * D, F(0)), dn2(M * D, F(0));
      K::sigmoid_mul_backward(dcr.data(), dcv.data(), dx.data(), A.cr.data(), A.cv.data(), M * D);
      K::linear_backward(dxr.data(), dQ("cm.wr"), nul(), dcr.data(), A.cxr.data(), Q("cm.wr"), M, D, D);
      K::linear_backward(dch.data(), dQ("cm.wv"), nul(), dcv.data(), A.ch.data(), Q("cm.wv"), M, Fh, D);
      K::relu_square_backward(dck.data(), dch.data(), A.ck.data(), M * Fh);
      K::linear_backward(dxk.data(), dQ("cm.wk"), nul(), dck.data(), A.cxk.data(), Q("cm.wk"), M, D, Fh);
      K::token_shift_backward(dn2.data(), nul(), dQ("cm.mu_k"), dxk.data(), A.ln2.y.data(), cnul(), Q("cm.mu_k"),
                              B_, T_, D);
      K::token_shift_backward(dn2.data(), nul(), dQ("cm.mu_r"), dxr.data(), A.ln2.y.data(), cnul(), Q("cm.mu_r"),
                              B_, T_, D);
      A.ln2.bwd(dx, dQ("norm2.scale"), dQ("norm2.bias"), dn2, Q("norm2.scale"), M, D);  // dx += (residual kept)
    }
    // time mix
    std::vector<F> do_(M * D, F(0)), dn1(M * D, F(0)), dr(M * D, F(0)), dk(M * D, F(0)), dv(M * D, F(0)),
        dwkv(M * D, F(0));
    K::linear_backward(do_.data(), dQ("tm.wo"), nul(), dx.data(), A.o.data(), Q("tm.wo"), M, D, D);
    if (!rwkv6_) {
      K::sigmoid_mul_backward(dr.data(), dwkv.data(), do_.data(), A.r.data(), A.wkv.data(), M * D);
      K::wkv4_backward(dk.data(), dv.data(), dQ("tm.decay"), dQ("tm.bonus"), nul(), dwkv.data(), cnul(),
                       A.k.data(), A.v.data(), Q("tm.decay"), Q("tm.bonus"), cnul(), B_, T_, D);
      const char* mus[3] = {"tm.mu_r", "tm.mu_k", "tm.mu_v"};
      const char* ws[3] = {"tm.wr", "tm.wk", "tm.wv"};
      std::vector<F>* grads[3] = {&dr, &dk, &dv};
      for (int j = 0; j < 3; ++j) {
        std::vector<F> dxs(M * D, F(0));
        K::linear_backward(dxs.data(), dQ(ws[j]), nul(), grads[j]->data(), A.xs.data() + j * M * D, Q(ws[j]),
                           M, D, D);
        K::token_shift_backward(dn1.data(), nul(), dQ(mus[j]), dxs.data(), A.ln1.y.data(), cnul(), Q(mus[j]),
                                B_, T_, D);
      }
    } else {
      const i64 r = m_.lora_rank_mix, rw = m_.lora_rank_decay, H = D / m_.head_size, N = m_.head_size;
      std::vector<F> dyn(M * D, F(0)), dgg(M * D, F(0)), dlogw(M * D, F(0));
      K::silu_mul_backward(dyn.data(), dgg.data(), do_.data(), A.gn.y.data(), A.g.data(), M * D);
      K::group_norm_backward(dwkv.data(), dQ("tm.gn_scale"), dQ("tm.gn_bias"), dyn.data(), A.gn.mean.data(),
                             A.gn.rstd.data(), A.gn.x.data(), Q("tm.gn_scale"), M, H, N);
      K::wkv6_backward(dr.data(), dk.data(), dv.data(), dlogw.data(), dQ("tm.bonus"), nul(), dwkv.data(), cnul(),
                       A.r.data(), A.k.data(), A.v.data(), A.logw.data(), Q("tm.bonus"), cnul(), B_, T_, H, N);
      std::vector<F> dxs(5 * M * D, F(0));
      K::linear_backward(dxs.data() + 1 * M * D, dQ("tm.wk"), nul(), dk.data(), A.xs.data() + 1 * M * D,
                         Q("tm.wk"), M, D, D);
      K::linear_backward(dxs.data() + 2 * M * D, dQ("tm.wv"), nul(), dv.data(), A.xs.data() + 2 * M * D,
                         Q("tm.wv"), M, D, D);
      K::linear_backward(dxs.data() + 3 * M * D, dQ("tm.wr"), nul(), dr.data(), A.xs.data() + 3 * M * D,
                         Q("tm.wr"), M, D, D);
      K::linear_backward(dxs.data() + 4 * M * D, dQ("tm.wg"), nul(), dgg.data(), A.xs.data() + 4 * M * D,
                         Q("tm.wg"), M, D, D);
      // decay: logw = −exp(λ + tanh(x_w A_w) B_w)
      std::vector<F> ddd(M * D, F(0)), ddlt(M * rw, F(0)), ddz(M * rw, F(0));
      K::decay_backward(dQ("tm.decay"), ddd.data(), dlogw.data(), A.logw.data(), M, D);
      K::linear_backward(ddlt.data(), dQ("tm.decay_b"), nul(), ddd.data(), A.dlt.data(), Q("tm.decay_b"), M, rw, D);
      K::tanh_backward(ddz.data(), ddlt.data(), A.dlt.data(), M * rw);
      K::linear_backward(dxs.data(), dQ("tm.decay_a"), nul(), ddz.data(), A.xs.data(), Q("tm.decay_a"), M, D, rw);
      // ddlerp
      std::vector<F> dxx(M * D, F(0)), dmz(5 * M * D, F(0)), dtz(M * 5 * r, F(0)), dz(M * 5 * r, F(0)),
          dxxx(M * D, F(0));
      K::ddlerp_mix_backward(dn1.data(), dxx.data(), dQ("tm.mu"), dmz.data(), dxs.data(), A.xx.data(), Q("tm.mu"),
                             A.mz.data(), i64(5), M, D);
      for (i64 j = 0; j < 5; ++j) {
        std::vector<F> tj = take_cols(A.tz, M, 5 * r, j * r, r), dtj(M * r, F(0));
        K::linear_backward(dtj.data(), dQ("tm.lora_b") + j * r * D, nul(), dmz.data() + j * M * D, tj.data(),
                           Q("tm.lora_b") + j * r * D, M, r, D);
        for (i64 m = 0; m < M; ++m)
          for (i64 c = 0; c < r; ++c) dtz[m * 5 * r + j * r + c] += dtj[m * r + c];
      }
      K::tanh_backward(dz.data(), dtz.data(), A.tz.data(), M * 5 * r);
      K::linear_backward(dxxx.data(), dQ("tm.lora_a"), nul(), dz.data(), A.xxx.data(), Q("tm.lora_a"), M, D, 5 * r);
      K::ddlerp_shift_backward(dn1.data(), nul(), dQ("tm.mu_x"), dxx.data(), dxxx.data(), A.ln1.y.data(), cnul(),
                               Q("tm.mu_x"), B_, T_, D);
    }
    A.ln1.bwd(dx, dQ("norm1.scale"), dQ("norm1.bias"), dn1, Q("norm1.scale"), M, D);
  }

  static std::vector<F> take_cols(const std::vector<F>& a, i64 M, i64 C, i64 c0, i64 n) {
    std::vector<F> r(M * n);
    for (i64 m = 0; m < M; ++m)
      for (i64 c = 0; c < n; ++c) r[m * n + c] = a[m * C + c0 + c];
    return r;
  }

  const scanshard::ModelSpec& m_;
  const Layout& lay_;
  i64 B_, T_, M_;
  bool rwkv6_;
  const F* p_ = nullptr;
  std::vector<std::int32_t> tokens_, targets_;
  std::vector<F> x0_, probs_, losses_;
  LN ln0_, lnf_;
  std::vector<Acts> acts_;
};

}  // namespace kt
