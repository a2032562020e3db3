// train/model.cpp — Griffin / Hawk / MQA forward and backward of one micro-batch from kernels::fast,
// each call timed under its StepProgram (op, name). See model.hpp.
#include "train/model.hpp"

#include <cmath>
#include <random>
#include <stdexcept>

#include "kernels/attention.hpp"
#include "kernels/conv1d.hpp"
#include "kernels/embedding.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rmsnorm.hpp"

namespace scanshard::train {

namespace K = scanshard::kernels::fast;

namespace {
constexpr float* nul() { return static_cast<float*>(nullptr); }
constexpr const float* cnul() { return static_cast<const float*>(nullptr); }
using S = Trace::Scope;
constexpr const char* kF = "forward";
constexpr const char* kB = "backward";
}  // namespace

Model::Model(const ModelSpec& m, const Layout& lay, i64 B, i64 T) : m_(m), lay_(lay), B_(B), T_(T), M_(B * T) {
  if (m.is_rwkv()) throw std::runtime_error("train::Model: RWKV is not supported by this runner yet");
}

float Model::forward(const float* p, const std::vector<std::int32_t>& tokens, const std::vector<std::int32_t>& targets,
                     Trace* tr) {
  tokens_ = tokens; targets_ = targets;
  reset_.assign(M_, 0);
  for (i64 b = 0; b < B_; ++b) reset_[b * T_] = 1;  // each sequence starts a document
  pos_.assign(M_, 0);
  for (i64 b = 0; b < B_; ++b)
    for (i64 t = 0; t < T_; ++t) pos_[b * T_ + t] = std::int32_t(t);
  const i64 D = m_.width, V = m_.vocab, M = M_;
  const float* E = p + lay_.off("embed", "embed.table");
  const float escale = m_.scale_embedding ? float(std::sqrt(double(D))) : 1.0f;
  x0_.assign(M * D, 0.0f);
  { S s(tr, kF, "embedding", "embed.table"); K::embedding_forward(x0_.data(), tokens.data(), E, M, D, escale); }
  std::vector<float> x = x0_;
  acts_.resize(m_.depth);
  for (i64 l = 0; l < m_.depth; ++l) layer_forward(p, l, x, tr);
  xf_ = x;
  nf_.assign(M * D, 0.0f); rstdf_.assign(M, 0.0f);
  { S s(tr, kF, "rmsnorm", "final_norm");
    K::rmsnorm_forward(nf_.data(), rstdf_.data(), xf_.data(), p + lay_.off("final", "final_norm.scale"), M, D, 1e-6f); }
  probs_.assign(M * V, 0.0f); losses_.assign(M, 0.0f);
  { S s(tr, kF, "logits", "embed.table"); K::logits_tied_forward(probs_.data(), nf_.data(), E, M, D, V); }
  { S s(tr, kF, "softmax_xent", "loss");
    K::softmax_ce_forward(losses_.data(), probs_.data(), probs_.data(), targets.data(), M, V); }
  double sum = 0;
  for (auto v : losses_) sum += v;
  return float(sum / double(M));
}

void Model::backward(const float* p, float* g, Trace* tr) {
  const i64 D = m_.width, V = m_.vocab, M = M_;
  const float* E = p + lay_.off("embed", "embed.table");
  float* dE = g + lay_.off("embed", "embed.table");
  std::vector<float> dl(M, float(1.0 / double(M))), dlogits(M * V, 0.0f), dnf(M * D, 0.0f), dx(M * D, 0.0f);
  { S s(tr, kB, "softmax_xent", "loss");
    K::softmax_ce_backward(dlogits.data(), dl.data(), probs_.data(), targets_.data(), M, V); }
  { S s(tr, kB, "logits", "embed.table");
    K::logits_tied_backward(dnf.data(), dE, dlogits.data(), nf_.data(), E, M, D, V); }
  { S s(tr, kB, "rmsnorm", "final_norm");
    K::rmsnorm_backward(dx.data(), g + lay_.off("final", "final_norm.scale"), dnf.data(), xf_.data(), rstdf_.data(),
                        p + lay_.off("final", "final_norm.scale"), M, D); }
  for (i64 l = m_.depth - 1; l >= 0; --l) layer_backward(p, g, l, dx, tr);
  { S s(tr, kB, "embedding", "embed.table");
    K::embedding_backward(dE, dx.data(), tokens_.data(), M, D, m_.scale_embedding ? float(std::sqrt(double(D))) : 1.0f); }
}

void Model::layer_forward(const float* p, i64 l, std::vector<float>& x, Trace* tr) {
  const std::string blk = "layer." + std::to_string(l);
  auto P = [&](const char* n) { return p + lay_.off(blk, n); };
  const i64 D = m_.width, M = M_, Fh = m_.mlp_width;
  Acts& A = acts_[l];
  A.x_in = x;
  A.n1.assign(M * D, 0.0f); A.rstd1.assign(M, 0.0f);
  { S s(tr, kF, "rmsnorm", "norm1");
    K::rmsnorm_forward(A.n1.data(), A.rstd1.data(), x.data(), P("norm1.scale"), M, D, 1e-6f); }
  std::vector<float> tout(M * D, 0.0f);
  if (temporal_kind(m_, l) == Temporal::recurrent) {
    const i64 R = m_.recurrent_width, Kc = m_.conv_width, Hb = m_.gate_blocks;
    for (auto* v : {&A.gy, &A.u, &A.cu, &A.hs, &A.ga, &A.gx, &A.pr}) v->assign(M * R, 0.0f);
    { S s(tr, kF, "linear", "rec.wy"); K::linear_forward(A.gy.data(), A.n1.data(), P("rec.wy"), P("rec.by"), M, D, R); }
    { S s(tr, kF, "linear", "rec.wx"); K::linear_forward(A.u.data(), A.n1.data(), P("rec.wx"), P("rec.bx"), M, D, R); }
    { S s(tr, kF, "conv1d", "rec.conv");
      K::conv1d_forward(A.cu.data(), nul(), A.u.data(), cnul(), reset_.data(), P("rec.conv_w"), P("rec.conv_b"), B_, T_,
                        R, Kc); }
    { S s(tr, kF, "rglru.scan", "rec.scan");  // gates, decay and scan are one fused kernel here
      K::rglru_forward(A.hs.data(), nul(), nul(), A.ga.data(), A.gx.data(), A.cu.data(), cnul(), reset_.data(),
                       P("rec.gate_a_w"), P("rec.gate_a_b"), P("rec.gate_x_w"), P("rec.gate_x_b"), P("rec.lambda"), B_,
                       T_, R, Hb); }
    { S s(tr, kF, "mul", "rec.gated"); K::gelu_mul_forward(A.pr.data(), A.gy.data(), A.hs.data(), M * R); }
    { S s(tr, kF, "linear", "rec.wo"); K::linear_forward(tout.data(), A.pr.data(), P("rec.wo"), P("rec.bo"), M, R, D); }
  } else {
    const i64 H = m_.heads, Hk = m_.kv_heads, N = m_.head_dim;
    const i64 rot = i64(std::lround(m_.rope_fraction * double(N)));
    A.qr.assign(M * H * N, 0.0f); A.q = A.qr; A.a = A.qr;
    A.kr.assign(M * Hk * N, 0.0f); A.k = A.kr; A.v = A.kr;
    A.lse.assign(B_ * H * T_, 0.0f);
    { S s(tr, kF, "linear", "attn.wq"); K::linear_forward(A.qr.data(), A.n1.data(), P("attn.wq"), cnul(), M, D, H * N); }
    { S s(tr, kF, "linear", "attn.wk"); K::linear_forward(A.kr.data(), A.n1.data(), P("attn.wk"), cnul(), M, D, Hk * N); }
    { S s(tr, kF, "linear", "attn.wv"); K::linear_forward(A.v.data(), A.n1.data(), P("attn.wv"), cnul(), M, D, Hk * N); }
    { S s(tr, kF, "rope", "attn.rope");
      K::rope_forward(A.q.data(), A.qr.data(), pos_.data(), B_, T_, H, N, rot, m_.rope_base);
      K::rope_forward(A.k.data(), A.kr.data(), pos_.data(), B_, T_, Hk, N, rot, m_.rope_base); }
    { S s(tr, kF, m_.window > 0 ? "attention.local" : "attention.global", "attn.core");
      K::attention_forward(A.a.data(), A.lse.data(), A.q.data(), A.k.data(), A.v.data(), reset_.data(), B_, T_, H, Hk, N,
                           m_.window); }
    { S s(tr, kF, "linear", "attn.wo");
      K::linear_forward(tout.data(), A.a.data(), P("attn.wo"), P("attn.bo"), M, H * N, D); }
  }
  for (i64 i = 0; i < M * D; ++i) x[i] += tout[i];
  A.x_mid = x;
  A.n2.assign(M * D, 0.0f); A.rstd2.assign(M, 0.0f);
  { S s(tr, kF, "rmsnorm", "norm2");
    K::rmsnorm_forward(A.n2.data(), A.rstd2.data(), x.data(), P("norm2.scale"), M, D, 1e-6f); }
  A.h1.assign(M * Fh, 0.0f); A.h2 = A.h1; A.gm = A.h1;
  std::vector<float> y(M * D, 0.0f);
  { S s(tr, kF, "gated_mlp", "mlp");  // mlp.w1, mlp.w2, gelu_mul, mlp.w3 fused in one kernel
    K::gated_mlp_forward(y.data(), A.h1.data(), A.h2.data(), A.gm.data(), A.n2.data(), P("mlp.w1"), P("mlp.b1"),
                         P("mlp.w2"), P("mlp.b2"), P("mlp.w3"), P("mlp.b3"), M, D, Fh); }
  for (i64 i = 0; i < M * D; ++i) x[i] += y[i];
}

void Model::layer_backward(const float* p, float* g, i64 l, std::vector<float>& dx, Trace* tr) {
  const std::string blk = "layer." + std::to_string(l);
  auto P = [&](const char* n) { return p + lay_.off(blk, n); };
  auto G = [&](const char* n) { return g + lay_.off(blk, n); };
  const i64 D = m_.width, M = M_, Fh = m_.mlp_width;
  Acts& A = acts_[l];
  std::vector<float> dn2(M * D, 0.0f), work(3 * M * Fh);
  { S s(tr, kB, "gated_mlp", "mlp");
    K::gated_mlp_backward(dn2.data(), G("mlp.w1"), G("mlp.b1"), G("mlp.w2"), G("mlp.b2"), G("mlp.w3"), G("mlp.b3"),
                          work.data(), dx.data(), A.n2.data(), A.h1.data(), A.h2.data(), A.gm.data(), P("mlp.w1"),
                          P("mlp.w2"), P("mlp.w3"), M, D, Fh); }
  { S s(tr, kB, "rmsnorm", "norm2");
    K::rmsnorm_backward(dx.data(), G("norm2.scale"), dn2.data(), A.x_mid.data(), A.rstd2.data(), P("norm2.scale"), M,
                        D); }
  std::vector<float> dn1(M * D, 0.0f);
  if (temporal_kind(m_, l) == Temporal::recurrent) {
    const i64 R = m_.recurrent_width, Kc = m_.conv_width, Hb = m_.gate_blocks;
    std::vector<float> dpr(M * R, 0.0f), dgy(M * R, 0.0f), dhs(M * R, 0.0f), dcu(M * R, 0.0f), du(M * R, 0.0f),
        w2(2 * M * R);
    { S s(tr, kB, "linear", "rec.wo");
      K::linear_backward(dpr.data(), G("rec.wo"), G("rec.bo"), dx.data(), A.pr.data(), P("rec.wo"), M, R, D); }
    { S s(tr, kB, "mul", "rec.gated");
      K::gelu_mul_backward(dgy.data(), dhs.data(), dpr.data(), A.gy.data(), A.hs.data(), M * R); }
    { S s(tr, kB, "rglru.scan", "rec.scan");
      K::rglru_backward(dcu.data(), nul(), G("rec.gate_a_w"), G("rec.gate_a_b"), G("rec.gate_x_w"), G("rec.gate_x_b"),
                        G("rec.lambda"), w2.data(), dhs.data(), cnul(), A.hs.data(), A.ga.data(), A.gx.data(),
                        A.cu.data(), cnul(), reset_.data(), P("rec.gate_a_w"), P("rec.gate_x_w"), P("rec.lambda"), B_,
                        T_, R, Hb); }
    { S s(tr, kB, "conv1d", "rec.conv");
      K::conv1d_backward(du.data(), nul(), G("rec.conv_w"), G("rec.conv_b"), dcu.data(), cnul(), A.u.data(), cnul(),
                         reset_.data(), P("rec.conv_w"), B_, T_, R, Kc); }
    { S s(tr, kB, "linear", "rec.wx");
      K::linear_backward(dn1.data(), G("rec.wx"), G("rec.bx"), du.data(), A.n1.data(), P("rec.wx"), M, D, R); }
    { S s(tr, kB, "linear", "rec.wy");
      K::linear_backward(dn1.data(), G("rec.wy"), G("rec.by"), dgy.data(), A.n1.data(), P("rec.wy"), M, D, R); }
  } else {
    const i64 H = m_.heads, Hk = m_.kv_heads, N = m_.head_dim;
    const i64 rot = i64(std::lround(m_.rope_fraction * double(N)));
    std::vector<float> da(M * H * N, 0.0f), dq = da, dqr = da, dk(M * Hk * N, 0.0f), dkr = dk, dv = dk;
    { S s(tr, kB, "linear", "attn.wo");
      K::linear_backward(da.data(), G("attn.wo"), G("attn.bo"), dx.data(), A.a.data(), P("attn.wo"), M, H * N, D); }
    { S s(tr, kB, m_.window > 0 ? "attention.local" : "attention.global", "attn.core");
      K::attention_backward(dq.data(), dk.data(), dv.data(), da.data(), A.a.data(), A.lse.data(), A.q.data(), A.k.data(),
                            A.v.data(), reset_.data(), B_, T_, H, Hk, N, m_.window); }
    { S s(tr, kB, "rope", "attn.rope");
      K::rope_backward(dqr.data(), dq.data(), pos_.data(), B_, T_, H, N, rot, m_.rope_base);
      K::rope_backward(dkr.data(), dk.data(), pos_.data(), B_, T_, Hk, N, rot, m_.rope_base); }
    { S s(tr, kB, "linear", "attn.wq");
      K::linear_backward(dn1.data(), G("attn.wq"), nul(), dqr.data(), A.n1.data(), P("attn.wq"), M, D, H * N); }
    { S s(tr, kB, "linear", "attn.wk");
      K::linear_backward(dn1.data(), G("attn.wk"), nul(), dkr.data(), A.n1.data(), P("attn.wk"), M, D, Hk * N); }
    { S s(tr, kB, "linear", "attn.wv");
      K::linear_backward(dn1.data(), G("attn.wv"), nul(), dv.data(), A.n1.data(), P("attn.wv"), M, D, Hk * N); }
  }
  { S s(tr, kB, "rmsnorm", "norm1");
    K::rmsnorm_backward(dx.data(), G("norm1.scale"), dn1.data(), A.x_in.data(), A.rstd1.data(), P("norm1.scale"), M, D); }
}

}  // namespace scanshard::train
