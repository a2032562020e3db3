// tests/kernels/test_decode_steps.cpp — the single-token state updates of decoding (issue 26):
// running a sequence one token at a time through each kernel's state API (T = 1, the outgoing
// state fed back in) reproduces the full-sequence fast kernel and the plain reference loop (in
// double) at every position — RG-LRU from h, Conv1D with its rolling window of K − 1 inputs,
// WKV-4 with the (a, b, p) state, WKV-6 with the per-head N×N matrix — and the KV-cache attention
// of kv_cache.hpp (one query against a cache, a ring of W + 1 rows for local attention, MQA / GQA)
// equals its reference loop and, token by token, the causal sequence attention.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "helpers.hpp"
#include "kernels/attention.hpp"
#include "kernels/conv1d.hpp"
#include "kernels/embedding.hpp"
#include "kernels/kv_cache.hpp"
#include "kernels/linear.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "program/inference.hpp"

namespace K = scanshard::kernels;
using kt::i64;

namespace {
// Row t of x [B,T,C] for every b → [B,1,C]
std::vector<float> step_rows(const std::vector<float>& x, i64 B, i64 T, i64 C, i64 t) {
  std::vector<float> out(static_cast<std::size_t>(B * C));
  for (i64 b = 0; b < B; ++b) std::copy_n(x.data() + (b * T + t) * C, C, out.data() + b * C);
  return out;
}
void put_rows(std::vector<float>& y, const std::vector<float>& row, i64 B, i64 T, i64 C, i64 t) {
  for (i64 b = 0; b < B; ++b) std::copy_n(row.data() + b * C, C, y.data() + (b * T + t) * C);
}
}  // namespace

TEST_CASE("decode step: RG-LRU one token at a time from h equals the sequence scan and the reference", "[decode]") {
  const i64 B = 2, T = 11, R = 24, Hb = 4, S = R / Hb;
  const auto x = kt::randn(B * T * R, 1), wa = kt::randn(Hb * S * S, 2, 0.5f), ba = kt::randn(R, 3, 0.5f),
             wx = kt::randn(Hb * S * S, 4, 0.5f), bx = kt::randn(R, 5, 0.5f);
  std::mt19937 g(6);
  std::uniform_real_distribution<double> u(0.9, 0.999);
  std::vector<float> lambda(R);
  for (auto& l : lambda) l = float(std::log(std::expm1(-std::log(u(g)))));
  std::vector<std::uint8_t> reset(B * T, 0);
  for (i64 b = 0; b < B; ++b) reset[b * T] = 1;  // position 0 starts the document, as in decoding
  std::vector<float> y(B * T * R), ga(B * T * R), gx(B * T * R);
  K::fast::rglru_forward(y.data(), nullptr, nullptr, ga.data(), gx.data(), x.data(), nullptr, reset.data(), wa.data(),
                         ba.data(), wx.data(), bx.data(), lambda.data(), B, T, R, Hb);
  std::vector<double> yd(B * T * R), gad(B * T * R), gxd(B * T * R);
  const auto xd = kt::to_d(x), wad = kt::to_d(wa), bad = kt::to_d(ba), wxd = kt::to_d(wx), bxd = kt::to_d(bx),
             ld = kt::to_d(lambda);
  K::ref::rglru_forward(yd.data(), (double*)nullptr, (double*)nullptr, gad.data(), gxd.data(), xd.data(), (const double*)nullptr,
                        reset.data(), wad.data(), bad.data(), wxd.data(), bxd.data(), ld.data(), B, T, R, Hb);
  std::vector<float> steps(B * T * R), h(B * R, 0.0f), h_next(B * R), y1(B * R), ga1(B * R), gx1(B * R);
  for (i64 t = 0; t < T; ++t) {
    const auto xt = step_rows(x, B, T, R, t);
    std::vector<std::uint8_t> r1(B, t == 0);
    K::fast::rglru_forward(y1.data(), h_next.data(), nullptr, ga1.data(), gx1.data(), xt.data(), h.data(), r1.data(),
                           wa.data(), ba.data(), wx.data(), bx.data(), lambda.data(), B, 1, R, Hb);
    h.swap(h_next);
    put_rows(steps, y1, B, T, R, t);
  }
  KT_CHECK_CLOSE(steps, y, 1e-6, 1e-5);
  KT_CHECK_CLOSE(steps, yd, 1e-5, 1e-5);  // fp32 against double: rounding of O(1) values
  // The decoder's path: the gates, then the scan with the decay exponents computed once up front
  // (rglru_decay_exponents) and no decay product wanted — the same numbers bit for bit.
  std::vector<float> exps(R), steps2(B * T * R);
  K::fast::rglru_decay_exponents(exps.data(), lambda.data(), R);
  std::fill(h.begin(), h.end(), 0.0f);
  for (i64 t = 0; t < T; ++t) {
    const auto xt = step_rows(x, B, T, R, t);
    std::vector<std::uint8_t> r1(B, t == 0);
    K::fast::blockdiag_forward(ga1.data(), xt.data(), wa.data(), ba.data(), B, R, Hb);
    K::fast::blockdiag_forward(gx1.data(), xt.data(), wx.data(), bx.data(), B, R, Hb);
    K::fast::rglru_scan_forward(y1.data(), h_next.data(), nullptr, xt.data(), ga1.data(), gx1.data(), h.data(), r1.data(),
                                lambda.data(), B, 1, R, exps.data());
    h.swap(h_next);
    put_rows(steps2, y1, B, T, R, t);
  }
  CHECK(steps2 == steps);
}

TEST_CASE("decode step: Conv1D with a rolling window of K-1 inputs equals the sequence conv", "[decode]") {
  const i64 B = 2, T = 9, R = 13, Kc = 4;
  const auto x = kt::randn(B * T * R, 11), w = kt::randn(Kc * R, 12), bias = kt::randn(R, 13);
  std::vector<float> y(B * T * R);
  K::fast::conv1d_forward(y.data(), nullptr, x.data(), nullptr, nullptr, w.data(), bias.data(), B, T, R, Kc);
  std::vector<double> yd(B * T * R);
  const auto xd = kt::to_d(x), wd = kt::to_d(w), bd = kt::to_d(bias);
  K::ref::conv1d_forward(yd.data(), (double*)nullptr, xd.data(), (const double*)nullptr, nullptr, wd.data(), bd.data(), B, T, R, Kc);
  std::vector<float> steps(B * T * R), st(B * (Kc - 1) * R, 0.0f), st_next(st.size()), y1(B * R);
  for (i64 t = 0; t < T; ++t) {
    const auto xt = step_rows(x, B, T, R, t);
    K::fast::conv1d_forward(y1.data(), st_next.data(), xt.data(), st.data(), nullptr, w.data(), bias.data(), B, 1, R, Kc);
    st.swap(st_next);
    put_rows(steps, y1, B, T, R, t);
  }
  KT_CHECK_CLOSE(steps, y, 1e-6, 1e-6);
  KT_CHECK_CLOSE(steps, yd, 1e-5, 1e-5);
}

TEST_CASE("decode step: WKV-4 with the (a, b, p) state equals the sequence recurrence", "[decode]") {
  const i64 B = 2, T = 10, D = 19;
  const auto k = kt::randn(B * T * D, 21, 2.0f), v = kt::randn(B * T * D, 22), decay = kt::randn(D, 23, 0.7f, -0.5f),
             bonus = kt::randn(D, 24, 0.5f);
  std::vector<float> y(B * T * D);
  K::fast::wkv4_forward(y.data(), nullptr, k.data(), v.data(), decay.data(), bonus.data(), nullptr, B, T, D);
  std::vector<double> yd(B * T * D);
  const auto kd = kt::to_d(k), vd = kt::to_d(v), dd = kt::to_d(decay), bd = kt::to_d(bonus);
  K::ref::wkv4_forward(yd.data(), (double*)nullptr, kd.data(), vd.data(), dd.data(), bd.data(), (const double*)nullptr, B, T, D);
  std::vector<float> st(3 * B * D, 0.0f), st_next(st.size()), y1(B * D), steps(B * T * D);
  std::fill(st.begin() + 2 * B * D, st.end(), K::kWkv4NoState);  // the zero state: a = b = 0, p = −1e38
  for (i64 t = 0; t < T; ++t) {
    const auto kt_ = step_rows(k, B, T, D, t), vt = step_rows(v, B, T, D, t);
    K::fast::wkv4_forward(y1.data(), st_next.data(), kt_.data(), vt.data(), decay.data(), bonus.data(), st.data(), B, 1, D);
    st.swap(st_next);
    put_rows(steps, y1, B, T, D, t);
  }
  KT_CHECK_CLOSE(steps, y, 1e-5, 1e-5);
  KT_CHECK_CLOSE(steps, yd, 1e-5, 1e-5);
}

TEST_CASE("decode step: WKV-6 with the per-head N x N state equals the chunked sequence kernel", "[decode]") {
  const i64 B = 2, T = 21, H = 3, N = 32, n = B * T * H * N;
  const auto r = kt::randn(n, 31), k = kt::randn(n, 32), v = kt::randn(n, 33), u = kt::randn(H * N, 34, 0.5f);
  auto logw = kt::randn(n, 35, 0.7f, -1.0f);
  for (auto& x : logw) x = -std::exp(x);
  std::vector<float> y(n);
  K::fast::wkv6_forward(y.data(), nullptr, r.data(), k.data(), v.data(), logw.data(), u.data(), nullptr, B, T, H, N);
  std::vector<double> yd(n);
  const auto rd = kt::to_d(r), kd = kt::to_d(k), vd = kt::to_d(v), ld = kt::to_d(logw), ud = kt::to_d(u);
  K::ref::wkv6_forward(yd.data(), (double*)nullptr, rd.data(), kd.data(), vd.data(), ld.data(), ud.data(), (const double*)nullptr,
                       B, T, H, N);
  std::vector<float> st(B * H * N * N, 0.0f), st_next(st.size()), y1(B * H * N), steps(n);
  for (i64 t = 0; t < T; ++t) {
    const i64 C = H * N;
    const auto rt = step_rows(r, B, T, C, t), kt_ = step_rows(k, B, T, C, t), vt = step_rows(v, B, T, C, t),
               lt = step_rows(logw, B, T, C, t);
    K::fast::wkv6_forward(y1.data(), st_next.data(), rt.data(), kt_.data(), vt.data(), lt.data(), u.data(), st.data(), B, 1,
                          H, N);
    st.swap(st_next);
    put_rows(steps, y1, B, T, C, t);
  }
  KT_CHECK_CLOSE(steps, y, 1e-5, 1e-4);
  KT_CHECK_CLOSE(steps, yd, 1e-5, 1e-4);
}

TEST_CASE("decode step: KV-cache attention equals its reference loop on awkward shapes", "[decode]") {
  kt::on_every_simd_target([] {  // the softmax rows are dispatched
  for (auto [H, Hk, C, n] : {std::tuple<i64, i64, i64, i64>{6, 1, 17, 13}, {6, 2, 17, 13}, {6, 3, 17, 13}, {5, 5, 17, 13},
                             {4, 2, 300, 290}, {4, 1, 300, 1}}) {  // 290 keys: three 128-key blocks
    const i64 B = 3, N = 24;
    const auto q = kt::randn(B * H * N, 41), k = kt::randn(B * C * Hk * N, 42), v = kt::randn(B * C * Hk * N, 43);
    std::vector<double> od(B * H * N);
    const auto qd = kt::to_d(q), kd = kt::to_d(k), vd = kt::to_d(v);
    K::ref::attention_decode(od.data(), qd.data(), kd.data(), vd.data(), B, C, n, H, Hk, N);
    // the shape the decoder calls it with, then every key block and both product forms
    const auto g = scanshard::decode_attention_gemms(H, Hk, N, B, n);
    std::vector<std::pair<i64, bool>> forms = {{g.key_block, g.gemv}, {1, false}, {7, false}, {128, false}, {n, false}, {n, true}};
    for (auto [block, gemv] : forms) {
      std::vector<float> out(B * H * N);
      const i64 calls = K::fast::attention_decode(out.data(), q.data(), k.data(), v.data(), B, C, n, H, Hk, N, block, gemv);
      INFO("H " << H << " Hk " << Hk << " n " << n << " block " << block << " gemv " << gemv);
      KT_CHECK_CLOSE(out, od, 1e-6, 1e-5);
      // per (sequence, K/V head): a GEMV per query head and product, or a Q·Kᵀ call per block and one P·V
      const i64 G = H / Hk, blocks = (n + block - 1) / block;
      CHECK(calls == B * Hk * (gemv ? 2 * G : blocks + 1));
    }
  }
  });
}

TEST_CASE("decode attention: the kernel makes the BLAS calls program/ prices (decode_attention_gemms)", "[decode]") {
  // shapes of validate's and calibrate's decode plans: GQA, MQA, MHA, past one key block and not
  for (auto [H, Hk, N, B, n] : {std::tuple<i64, i64, i64, i64, i64>{4, 2, 32, 4, 1040}, {4, 1, 32, 1, 2064}, {2, 1, 32, 4, 544},
                                {4, 4, 32, 2, 700}, {8, 1, 64, 1, 300}, {4, 2, 32, 1, 1}}) {
    const auto g = scanshard::decode_attention_gemms(H, Hk, N, B, n);
    const i64 C = n + 3;
    const auto q = kt::randn(B * H * N, 71), k = kt::randn(B * C * Hk * N, 72), v = kt::randn(B * C * Hk * N, 73);
    std::vector<float> out(B * H * N);
    INFO("H " << H << " Hk " << Hk << " N " << N << " B " << B << " n " << n);
    CHECK(K::fast::attention_decode(out.data(), q.data(), k.data(), v.data(), B, C, n, H, Hk, N, g.key_block, g.gemv) ==
          g.blas_calls());
    // each Q·Kᵀ call within the small-matrix bound: G · block ≤ kDecodeAttentionScoreBlock scores
    if (!g.gemv) CHECK(g.rows * g.key_block <= scanshard::kDecodeAttentionScoreBlock);
    CHECK(g.gemv == (H == Hk));
  }
}

TEST_CASE("decode step: token-by-token attention over a KV cache equals causal sequence attention", "[decode]") {
  const i64 B = 2, T = 15, N = 16;
  for (i64 W : {i64(0), i64(4)})
    for (auto [H, Hk] : {std::pair<i64, i64>{4, 1}, {4, 2}}) {
      const auto q = kt::randn(B * T * H * N, 51), k = kt::randn(B * T * Hk * N, 52), v = kt::randn(B * T * Hk * N, 53);
      // the sequence reference: query t sees keys t − W … t (all earlier keys when W = 0)
      std::vector<double> want(B * T * H * N), lse(B * H * T);
      const auto qd = kt::to_d(q), kd = kt::to_d(k), vd = kt::to_d(v);
      K::ref::attention_forward(want.data(), lse.data(), qd.data(), kd.data(), vd.data(), nullptr, B, T, H, Hk, N, W);
      const i64 C = K::kv_cache_capacity(W, T), kw = Hk * N;
      CHECK(C == (W > 0 ? W + 1 : T));
      std::vector<float> kc(B * C * kw, 0.0f), vc(kc.size(), 0.0f), got(B * T * H * N), o1(B * H * N);
      for (i64 t = 0; t < T; ++t) {
        for (i64 b = 0; b < B; ++b) {
          const i64 row = K::kv_cache_row(t, C);
          std::copy_n(k.data() + (b * T + t) * kw, kw, kc.data() + (b * C + row) * kw);
          std::copy_n(v.data() + (b * T + t) * kw, kw, vc.data() + (b * C + row) * kw);
        }
        const auto qt = step_rows(q, B, T, H * N, t);
        const i64 valid = K::kv_cache_valid(t, C);
        CHECK(valid <= C);
        const auto g = scanshard::decode_attention_gemms(H, Hk, N, B, valid);
        K::fast::attention_decode(o1.data(), qt.data(), kc.data(), vc.data(), B, C, valid, H, Hk, N, g.key_block, g.gemv);
        put_rows(got, o1, B, T, H * N, t);
      }
      INFO("window " << W << " H " << H << " Hk " << Hk);
      KT_CHECK_CLOSE(got, want, 1e-6, 1e-5);
    }
}

TEST_CASE("decode step: one-row linear and tied logits (the GEMV paths) equal their references", "[decode]") {
  const i64 C = 37, OC = 29, V = 41;
  const auto x = kt::randn(C, 61), w = kt::randn(C * OC, 62), b = kt::randn(OC, 63);
  const auto xd = kt::to_d(x), wd = kt::to_d(w), bd = kt::to_d(b);
  for (bool bias : {false, true}) {
    std::vector<float> y(OC);
    std::vector<double> yd(OC);
    K::fast::linear_forward(y.data(), x.data(), w.data(), bias ? b.data() : nullptr, 1, C, OC);
    K::ref::linear_forward(yd.data(), xd.data(), wd.data(), bias ? bd.data() : nullptr, 1, C, OC);
    KT_CHECK_CLOSE(y, yd, 1e-5, 1e-5);
  }
  // V = 2500: more than one span of table rows (split over threads), the last one partial
  for (i64 vocab : {V, i64(2500)}) {
    const auto tab = kt::randn(vocab * C, 64);
    const auto tabd = kt::to_d(tab);
    std::vector<float> z(vocab);
    std::vector<double> zd(vocab);
    K::fast::logits_tied_forward(z.data(), x.data(), tab.data(), 1, C, vocab);
    K::ref::logits_tied_forward(zd.data(), xd.data(), tabd.data(), 1, C, vocab);
    INFO("V " << vocab);
    KT_CHECK_CLOSE(z, zd, 1e-5, 1e-5);
  }
}
