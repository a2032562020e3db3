// tests/kernels/test_attention.cpp — RoPE and causal MQA/MHA attention (local window and global,
// with document mask): the reference against a dense masked softmax written here, fast ==
// reference on awkward shapes (T = 1, T < W, odd T, odd N), backward == finite differences, and
// RoPE's defining property (scores depend only on the position difference).
#include <tuple>

#include "helpers.hpp"
#include "kernels/attention.hpp"

namespace k = scanshard::kernels;
using kt::i64;

TEST_CASE("RoPE rotates the first half of each head and makes scores relative", "[attention]") {
  const i64 B = 2, T = 6, H = 3, N = 10, rot = 6;
  const auto x = kt::randn(B * T * H * N, 501), dy = kt::randn(B * T * H * N, 502);
  const std::vector<std::int32_t> pos = {0, 1, 2, 3, 4, 5, 7, 8, 0, 1, 2, 3};
  std::vector<float> y_ref(x.size()), y_fast(x.size());
  k::ref::rope_forward(y_ref.data(), x.data(), pos.data(), B, T, H, N, rot, 10000.0);
  k::fast::rope_forward(y_fast.data(), x.data(), pos.data(), B, T, H, N, rot, 10000.0);
  KT_CHECK_CLOSE(y_fast, y_ref, 1e-5, 1e-5);
  // explicit element: b=0, t=3, h=1, j=1 (θ = 3·10000^{−2/6}); dims ≥ rot untouched
  {
    const i64 o = ((0 * T + 3) * H + 1) * N;
    const double th = 3 * std::pow(10000.0, -2.0 / 6.0);
    CHECK(std::fabs(y_ref[o + 1] - (x[o + 1] * std::cos(th) - x[o + 4] * std::sin(th))) < 1e-5);
    CHECK(std::fabs(y_ref[o + 4] - (x[o + 4] * std::cos(th) + x[o + 1] * std::sin(th))) < 1e-5);
    CHECK(y_ref[o + 8] == x[o + 8]);
  }
  // relative: rotate the same vectors a, c at positions (p, p−2) for several p → same dot product
  {
    const auto a = kt::randn(N, 503), c = kt::randn(N, 504);
    double first = 0;
    for (std::int32_t p = 2; p < 9; ++p) {
      std::vector<double> ra(N), rc(N);
      const std::int32_t pa[1] = {p}, pc[1] = {p - 2};
      const auto ad = kt::to_d(a), cd = kt::to_d(c);
      k::ref::rope_forward(ra.data(), ad.data(), pa, 1, 1, 1, N, rot, 10000.0);
      k::ref::rope_forward(rc.data(), cd.data(), pc, 1, 1, 1, N, rot, 10000.0);
      const double d = kt::dot(ra, rc);
      if (p == 2) first = d;
      CHECK(std::fabs(d - first) < 1e-9);
    }
  }
  std::vector<float> dx(x.size(), 0.0f);
  k::fast::rope_backward(dx.data(), dy.data(), pos.data(), B, T, H, N, rot, 10000.0);
  auto xd = kt::to_d(x), dyd = kt::to_d(dy);
  auto loss = [&] {
    std::vector<double> y(xd.size());
    k::ref::rope_forward(y.data(), xd.data(), pos.data(), B, T, H, N, rot, 10000.0);
    return kt::dot(y, dyd);
  };
  const auto idx = kt::sample_indices(i64(x.size()), 80, 505);
  KT_CHECK_CLOSE(kt::pick(dx, idx), kt::fd_grad(xd, idx, loss), 1e-5, 1e-5);
}

namespace {
// One attention problem: q [B,T,H,N], k/v [B,T,Hk,N], dout like q, the document resets.
struct Problem {
  const std::vector<float>&q, &k, &v, &dout;
  const std::vector<std::uint8_t>& reset;
  i64 B, T, H, Hk, N, W;
};
// dq, dk, dv (sampled entries) against central finite differences of Σ out·dout through the
// double-precision reference forward (with `drop`'s fixed mask).
void check_fd(const Problem& a, const k::AttnDropout& drop, const std::vector<float>& dq, const std::vector<float>& dk,
              const std::vector<float>& dv, unsigned seed) {
  auto qd = kt::to_d(a.q), kd = kt::to_d(a.k), vd = kt::to_d(a.v), dod = kt::to_d(a.dout);
  auto loss = [&] {
    std::vector<double> o(qd.size()), l(a.B * a.H * a.T);
    k::ref::attention_forward(o.data(), l.data(), qd.data(), kd.data(), vd.data(), a.reset.data(), a.B, a.T, a.H, a.Hk, a.N,
                              a.W, drop);
    return kt::dot(o, dod);
  };
  auto check = [&](const std::vector<float>& grad, std::vector<double>& p, unsigned s) {
    const auto idx = kt::sample_indices(i64(p.size()), 24, s);
    KT_CHECK_CLOSE(kt::pick(grad, idx), kt::fd_grad(p, idx, loss), 1e-4, 1e-3);
  };
  check(dq, qd, seed);
  check(dk, kd, seed + 1);
  check(dv, vd, seed + 2);
}
// The fast blocked forward and backward of `a` against ref:: in float (no dropout); returns the
// reference output and the fast gradients.
struct FastVsRef {
  std::vector<float> o_ref, dq, dk, dv;
};
FastVsRef check_fast_equals_reference(const Problem& a) {
  const auto [B, T, H, Hk, N, W] = std::tuple(a.B, a.T, a.H, a.Hk, a.N, a.W);
  std::vector<float> o_ref(a.q.size()), o_fast(a.q.size()), l_ref(B * H * T), l_fast(B * H * T);
  k::ref::attention_forward(o_ref.data(), l_ref.data(), a.q.data(), a.k.data(), a.v.data(), a.reset.data(), B, T, H, Hk,
                            N, W);
  k::fast::attention_forward(o_fast.data(), l_fast.data(), a.q.data(), a.k.data(), a.v.data(), a.reset.data(), B, T, H,
                             Hk, N, W);
  KT_CHECK_CLOSE(o_fast, o_ref, 1e-5, 1e-4);
  KT_CHECK_CLOSE(l_fast, l_ref, 1e-5, 1e-5);
  std::vector<float> dq(a.q.size(), 0), dk(a.k.size(), 0), dv(a.v.size(), 0);
  auto rdq = dq, rdk = dk, rdv = dv;
  k::fast::attention_backward(dq.data(), dk.data(), dv.data(), a.dout.data(), o_fast.data(), l_fast.data(), a.q.data(),
                              a.k.data(), a.v.data(), a.reset.data(), B, T, H, Hk, N, W);
  k::ref::attention_backward(rdq.data(), rdk.data(), rdv.data(), a.dout.data(), o_ref.data(), l_ref.data(), a.q.data(),
                             a.k.data(), a.v.data(), a.reset.data(), B, T, H, Hk, N, W);
  KT_CHECK_CLOSE(dq, rdq, 1e-4, 1e-3);
  KT_CHECK_CLOSE(dk, rdk, 1e-4, 1e-3);
  KT_CHECK_CLOSE(dv, rdv, 1e-4, 1e-3);
  return {o_ref, dq, dk, dv};
}
}  // namespace

TEST_CASE("attention fast equals reference on awkward shapes and backward matches finite differences", "[attention]") {
  struct Shape { i64 B, T, H, Hk, N, W; };
  for (const Shape& s : {Shape{1, 1, 2, 1, 8, 4}, Shape{3, 7, 4, 1, 6, 3}, Shape{2, 13, 4, 2, 10, 0},
                         Shape{1, 5, 3, 3, 5, 20}, Shape{1, 70, 2, 1, 16, 0}, Shape{2, 75, 2, 1, 8, 66}}) {
    const auto [B, T, H, Hk, N, W] = s;
    INFO("B " << B << " T " << T << " H " << H << " Hk " << Hk << " N " << N << " W " << W);
    const auto q = kt::randn(B * T * H * N, 510), kk = kt::randn(B * T * Hk * N, 511), v = kt::randn(B * T * Hk * N, 512),
               dout = kt::randn(B * T * H * N, 513);
    std::mt19937 g(514);
    std::vector<std::uint8_t> reset(B * T);
    for (auto& r : reset) r = (g() % 6 == 0);
    const auto [o_ref, dq, dk, dv] = check_fast_equals_reference({q, kk, v, dout, reset, B, T, H, Hk, N, W});
    // independent dense masked softmax for a few rows (document id + window + causality)
    for (i64 b = 0; b < B; ++b) {
      std::vector<int> doc(T);
      int d = 0;
      for (i64 t = 0; t < T; ++t) { if (reset[b * T + t]) ++d; doc[t] = d; }
      for (i64 t = 0; t < T; t += 3)
        for (i64 h = 0; h < H; ++h) {
          const i64 hk = h / (H / Hk);
          std::vector<double> sc(T, -1e300);
          double mx = -1e300;
          for (i64 u = 0; u < T; ++u) {
            if (u > t || doc[u] != doc[t] || (W > 0 && t - u > W)) continue;
            double dd = 0;
            for (i64 j = 0; j < N; ++j) dd += double(q[((b * T + t) * H + h) * N + j]) * kk[((b * T + u) * Hk + hk) * N + j];
            sc[u] = dd / std::sqrt(double(N));
            mx = std::max(mx, sc[u]);
          }
          double z = 0;
          for (i64 u = 0; u < T; ++u) if (sc[u] > -1e299) z += std::exp(sc[u] - mx);
          for (i64 j = 0; j < N; j += 2) {
            double acc = 0;
            for (i64 u = 0; u < T; ++u)
              if (sc[u] > -1e299) acc += std::exp(sc[u] - mx) / z * v[((b * T + u) * Hk + hk) * N + j];
            CHECK(std::fabs(acc - o_ref[((b * T + t) * H + h) * N + j]) < 1e-5);
          }
        }
    }
    check_fd({q, kk, v, dout, reset, B, T, H, Hk, N, W}, {}, dq, dk, dv, 520);
  }
}

TEST_CASE("attention fast equals reference on every SIMD target (the softmax rows are dispatched)", "[attention]") {
  struct Shape { i64 B, T, H, Hk, N, W; };
  kt::on_every_simd_target([&] {
    for (const Shape& s : {Shape{1, 1, 2, 1, 8, 4}, Shape{3, 7, 4, 1, 6, 3}, Shape{2, 13, 4, 2, 10, 0},
                           Shape{1, 70, 2, 1, 16, 0}, Shape{2, 75, 2, 1, 8, 66}, Shape{1, 150, 2, 2, 8, 0}}) {
      const auto [B, T, H, Hk, N, W] = s;
      INFO("B " << B << " T " << T << " H " << H << " Hk " << Hk << " N " << N << " W " << W);
      const auto q = kt::randn(B * T * H * N, 530, 2.0f), kk = kt::randn(B * T * Hk * N, 531, 2.0f),
                 v = kt::randn(B * T * Hk * N, 532), dout = kt::randn(B * T * H * N, 533);
      std::mt19937 g(534);
      std::vector<std::uint8_t> reset(B * T);
      for (auto& r : reset) r = (g() % 9 == 0);
      check_fast_equals_reference({q, kk, v, dout, reset, B, T, H, Hk, N, W});
    }
  });
}

// Materialized attention (plan `attention: materialized`): the whole probability matrix written,
// then P·V; backward through the stored matrix. Compared with the reference (itself checked
// against a dense softmax and finite differences above) on the rows q0.. it computes; rows below
// q0 are a halo of keys only (their dout is zero in the reference, their out / dq untouched).
TEST_CASE("materialized attention equals the reference forward and backward, with a key-only halo", "[attention]") {
  struct Shape { i64 B, T, q0, H, Hk, N, W; };
  for (const Shape& s : {Shape{1, 1, 0, 2, 1, 8, 0}, Shape{3, 7, 0, 4, 1, 6, 3}, Shape{2, 13, 5, 4, 2, 10, 0},
                         Shape{1, 9, 4, 3, 3, 5, 2}, Shape{2, 40, 24, 4, 2, 8, 0}}) {
    const auto [B, T, q0, H, Hk, N, W] = s;
    INFO("B " << B << " T " << T << " q0 " << q0 << " H " << H << " Hk " << Hk << " N " << N << " W " << W);
    const auto q = kt::randn(B * T * H * N, 610), kk = kt::randn(B * T * Hk * N, 611), v = kt::randn(B * T * Hk * N, 612);
    auto dout = kt::randn(B * T * H * N, 613);
    for (i64 b = 0; b < B; ++b)  // the halo rows are keys only: no gradient flows into their outputs
      std::fill(dout.begin() + b * T * H * N, dout.begin() + (b * T + q0) * H * N, 0.0f);
    std::mt19937 g(614);
    std::vector<std::uint8_t> reset(B * T);
    for (auto& r : reset) r = (g() % 5 == 0);
    const auto qd = kt::to_d(q), kd = kt::to_d(kk), vd = kt::to_d(v), dod = kt::to_d(dout);
    std::vector<double> o_ref(qd.size()), l_ref(B * H * T), dq_ref(qd.size(), 0), dk_ref(kd.size(), 0), dv_ref(vd.size(), 0);
    k::ref::attention_forward(o_ref.data(), l_ref.data(), qd.data(), kd.data(), vd.data(), reset.data(), B, T, H, Hk, N, W);
    k::ref::attention_backward(dq_ref.data(), dk_ref.data(), dv_ref.data(), dod.data(), o_ref.data(), l_ref.data(), qd.data(),
                               kd.data(), vd.data(), reset.data(), B, T, H, Hk, N, W);
    const i64 Tq = T - q0;
    std::vector<float> P(B * H * Tq * T, -1.0f), dP(P.size()), out(q.size(), 7.0f), dq(q.size(), 0), dk(kk.size(), 0),
        dv(v.size(), 0);
    k::fast::attention_scores_forward(P.data(), q.data(), kk.data(), reset.data(), B, T, q0, H, Hk, N, W);
    k::fast::attention_context_forward(out.data(), P.data(), v.data(), B, T, q0, H, Hk, N);
    k::fast::attention_context_backward(dP.data(), dv.data(), dout.data(), P.data(), v.data(), B, T, q0, H, Hk, N);
    k::fast::attention_scores_backward(dq.data(), dk.data(), dP.data(), P.data(), q.data(), kk.data(), B, T, q0, H, Hk, N);
    for (i64 b = 0; b < B; ++b)
      for (i64 h = 0; h < H; ++h)
        for (i64 i = 0; i < Tq; ++i) {  // every row of the matrix is a distribution over visible keys
          double sum = 0;
          for (i64 u = 0; u < T; ++u) sum += P[((b * H + h) * Tq + i) * T + u];
          CHECK(std::fabs(sum - 1) < 1e-5);
          for (i64 u = q0 + i + 1; u < T; ++u) CHECK(P[((b * H + h) * Tq + i) * T + u] == 0.0f);  // causal
        }
    std::vector<float> out_rows, ref_rows, dq_rows, dqr_rows;
    for (i64 b = 0; b < B; ++b)
      for (i64 x = (b * T + q0) * H * N; x < (b * T + T) * H * N; ++x) {
        out_rows.push_back(out[x]); ref_rows.push_back(float(o_ref[x]));
        dq_rows.push_back(dq[x]); dqr_rows.push_back(float(dq_ref[x]));
      }
    for (i64 b = 0; b < B; ++b)  // the halo rows' outputs are untouched
      for (i64 x = b * T * H * N; x < (b * T + q0) * H * N; ++x) CHECK(out[x] == 7.0f);
    KT_CHECK_CLOSE(out_rows, ref_rows, 1e-5, 1e-4);
    KT_CHECK_CLOSE(dq_rows, dqr_rows, 1e-4, 1e-3);
    KT_CHECK_CLOSE(dk, kt::to_f(dk_ref), 1e-4, 1e-3);
    KT_CHECK_CLOSE(dv, kt::to_f(dv_ref), 1e-4, 1e-3);
  }
}

// Probability dropout inside the blocked kernels (AttnDropout: FlashAttention's dropout_p, the mask
// regenerated in backward) against an independent composition: the materialized core's P, the
// mask drawn element by element from kernels/dropout.hpp as the executor draws it for
// `attention: materialized`, P' = P ⊙ mask/(1 − p), P'·V and its backward. The offsets (first
// sequence, position of row 0, first head) are those of a sequence / tensor shard.
TEST_CASE("attention with probability dropout: blocked == reference == materialized with the drawn mask, and finite differences", "[attention][dropout]") {
  // every SIMD target: the blocked backward's dropout rows are dispatched
  kt::on_every_simd_target([&] {
    struct Shape { i64 B, T, H, Hk, N, W; };
    for (const Shape& s : {Shape{1, 1, 2, 1, 8, 4}, Shape{3, 7, 4, 1, 6, 3}, Shape{2, 13, 4, 2, 10, 0}, Shape{2, 75, 2, 1, 8, 66}}) {
      const auto [B, T, H, Hk, N, W] = s;
      INFO("B " << B << " T " << T << " H " << H << " Hk " << Hk << " N " << N << " W " << W);
      k::AttnDropout drop;
      drop.p = 0.3;
      drop.key = k::dropout_key(77, 4, 1, k::DropSite::attn_probs);
      drop.first_seq = 5;
      drop.pos0 = 3;
      drop.head0 = 2;
      drop.seq_len = 100;
      const auto q = kt::randn(B * T * H * N, 710), kk = kt::randn(B * T * Hk * N, 711), v = kt::randn(B * T * Hk * N, 712),
                 dout = kt::randn(B * T * H * N, 713);
      std::mt19937 g(714);
      std::vector<std::uint8_t> reset(B * T);
      for (auto& r : reset) r = (g() % 6 == 0);
      // materialized with the mask drawn here
      std::vector<float> P(B * H * T * T), Pd(P.size()), dP(P.size()), o_mat(q.size()), dq_mat(q.size(), 0),
          dk_mat(kk.size(), 0), dv_mat(v.size(), 0);
      std::vector<std::uint8_t> mask(P.size());
      const std::uint64_t thr = k::dropout_threshold(drop.p);
      i64 dropped = 0, visible = 0;
      for (i64 b = 0; b < B; ++b)
        for (i64 h = 0; h < H; ++h)
          for (i64 t = 0; t < T; ++t) {
            const std::uint64_t row = k::dropout_row(drop.key, drop.first_seq + b, drop.pos0 + t);
            for (i64 u = 0; u < T; ++u)
              mask[((b * H + h) * T + t) * T + u] = k::dropout_keep(row, (drop.head0 + h) * drop.seq_len + drop.pos0 + u, thr);
          }
      k::fast::attention_scores_forward(P.data(), q.data(), kk.data(), reset.data(), B, T, 0, H, Hk, N, W);
      for (std::size_t i = 0; i < P.size(); ++i)
        if (P[i] > 0) { ++visible; dropped += mask[i] == 0; }
      k::dropout_apply(Pd.data(), P.data(), mask.data(), i64(P.size()), drop.p);
      k::fast::attention_context_forward(o_mat.data(), Pd.data(), v.data(), B, T, 0, H, Hk, N);
      k::fast::attention_context_backward(dP.data(), dv_mat.data(), dout.data(), Pd.data(), v.data(), B, T, 0, H, Hk, N);
      k::dropout_apply(dP.data(), dP.data(), mask.data(), i64(dP.size()), drop.p);
      k::fast::attention_scores_backward(dq_mat.data(), dk_mat.data(), dP.data(), P.data(), q.data(), kk.data(), B, T, 0, H,
                                         Hk, N);
      if (T > 10) CHECK(dropped > 0);  // the mask does drop something (p = 0.3 of the visible pairs)
      CHECK(dropped < visible);
      // blocked and reference with the kernel's own mask
      std::vector<float> o_fast(q.size()), o_ref(q.size()), l_fast(B * H * T), l_ref(B * H * T);
      k::fast::attention_forward(o_fast.data(), l_fast.data(), q.data(), kk.data(), v.data(), reset.data(), B, T, H, Hk, N, W,
                                 drop);
      k::ref::attention_forward(o_ref.data(), l_ref.data(), q.data(), kk.data(), v.data(), reset.data(), B, T, H, Hk, N, W, drop);
      KT_CHECK_CLOSE(o_fast, o_mat, 1e-5, 1e-4);
      KT_CHECK_CLOSE(o_ref, o_mat, 1e-5, 1e-4);
      std::vector<float> dq(q.size(), 0), dk(kk.size(), 0), dv(v.size(), 0);
      auto rdq = dq, rdk = dk, rdv = dv;
      k::fast::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), o_fast.data(), l_fast.data(), q.data(),
                                  kk.data(), v.data(), reset.data(), B, T, H, Hk, N, W, drop);
      k::ref::attention_backward(rdq.data(), rdk.data(), rdv.data(), dout.data(), o_ref.data(), l_ref.data(), q.data(),
                                 kk.data(), v.data(), reset.data(), B, T, H, Hk, N, W, drop);
      KT_CHECK_CLOSE(dq, dq_mat, 1e-4, 1e-3);
      KT_CHECK_CLOSE(dk, dk_mat, 1e-4, 1e-3);
      KT_CHECK_CLOSE(dv, dv_mat, 1e-4, 1e-3);
      KT_CHECK_CLOSE(rdq, dq_mat, 1e-4, 1e-3);
      KT_CHECK_CLOSE(rdk, dk_mat, 1e-4, 1e-3);
      KT_CHECK_CLOSE(rdv, dv_mat, 1e-4, 1e-3);
      // the reference's backward against finite differences of Σ out·dout (the mask is fixed)
      check_fd({q, kk, v, dout, reset, B, T, H, Hk, N, W}, drop, rdq, rdk, rdv, 720);
    }
  });
}
