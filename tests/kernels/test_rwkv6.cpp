// tests/kernels/test_rwkv6.cpp — RWKV-6 matrix-state WKV: reference backward vs central finite
// differences in double, reference forward vs the unrolled sum in long double, the chunked fast
// kernel (chunk 1, 2, 3, 4, 7, 16, 32, 64, 128; T not a multiple) vs the reference, sequence chunks chained or
// composed from zero-state summaries == one pass, and stability for extreme keys and decays.
// Not for: the block composition or the tiny model (test_rwkv_model.cpp).
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv6_count.hpp"

#include <cmath>
#include <vector>

#include "helpers.hpp"

using namespace scanshard::kernels;
using kt::i64;

namespace {

struct Wkv6Case {
  i64 B, T, H, N;
  std::vector<float> r, k, v, logw, u, dy;
};

// logw = −exp(d) with d ~ N(−1, 0.7²): decays w between ~0.2 and ~0.98, like a trained model.
Wkv6Case make_case(i64 B, i64 T, i64 H, i64 N, unsigned seed) {
  const i64 n = B * T * H * N;
  Wkv6Case c{B, T, H, N, kt::randn(n, seed), kt::randn(n, seed + 1), kt::randn(n, seed + 2),
             kt::randn(n, seed + 3, 0.7f, -1.0f), kt::randn(H * N, seed + 4, 0.5f),
             kt::randn(n, seed + 5)};
  for (auto& x : c.logw) x = -std::exp(x);
  return c;
}

// The unrolled definition in long double (zero initial state):
//   y_t[j] = Σ_i r_t[i] (Σ_{s<t} (Π_{s<q<t} w_q[i]) k_s[i] v_s[j] + u[i] k_t[i] v_t[j])
std::vector<long double> wkv6_direct(const Wkv6Case& c) {
  const i64 D = c.H * c.N;
  std::vector<long double> y(size_t(c.B * c.T * D));
  for (i64 b = 0; b < c.B; ++b)
    for (i64 h = 0; h < c.H; ++h)
      for (i64 t = 0; t < c.T; ++t)
        for (i64 j = 0; j < c.N; ++j) {
          long double acc = 0;
          const i64 ot = (b * c.T + t) * D + h * c.N;
          for (i64 i = 0; i < c.N; ++i) {
            long double inner = (long double)c.u[h * c.N + i] * c.k[ot + i] * c.v[ot + j];
            for (i64 s = 0; s < t; ++s) {
              const i64 os = (b * c.T + s) * D + h * c.N;
              long double lsum = 0;
              for (i64 q = s + 1; q < t; ++q) lsum += c.logw[(b * c.T + q) * D + h * c.N + i];
              inner += std::exp(lsum) * c.k[os + i] * c.v[os + j];
            }
            acc += (long double)c.r[ot + i] * inner;
          }
          y[ot + j] = acc;
        }
  return y;
}

struct Grads6 {
  std::vector<double> y, sout, dr, dk, dv, dlw, du, dsin;
};

Grads6 ref_double(const Wkv6Case& c, const std::vector<float>* sin, const std::vector<float>* dso) {
  const i64 n = c.B * c.T * c.H * c.N, ns = c.B * c.H * c.N * c.N;
  auto r = kt::to_d(c.r), k = kt::to_d(c.k), v = kt::to_d(c.v), lw = kt::to_d(c.logw),
       u = kt::to_d(c.u), g = kt::to_d(c.dy);
  std::vector<double> s0 = sin ? kt::to_d(*sin) : std::vector<double>(),
                      d0 = dso ? kt::to_d(*dso) : std::vector<double>();
  Grads6 o{std::vector<double>(n), std::vector<double>(ns), std::vector<double>(n),
           std::vector<double>(n), std::vector<double>(n), std::vector<double>(n),
           std::vector<double>(c.H * c.N), std::vector<double>(ns)};
  ref::wkv6_forward<double>(o.y.data(), o.sout.data(), r.data(), k.data(), v.data(), lw.data(),
                            u.data(), sin ? s0.data() : nullptr, c.B, c.T, c.H, c.N);
  ref::wkv6_backward<double>(o.dr.data(), o.dk.data(), o.dv.data(), o.dlw.data(), o.du.data(),
                             o.dsin.data(), g.data(), dso ? d0.data() : nullptr, r.data(),
                             k.data(), v.data(), lw.data(), u.data(),
                             sin ? s0.data() : nullptr, c.B, c.T, c.H, c.N);
  return o;
}

}  // namespace

TEST_CASE("RWKV6 WKV reference backward matches finite differences in double", "[rwkv6]") {
  const i64 B = 2, T = 5, H = 2, N = 3, D = H * N, NS = B * H * N * N;
  auto c = make_case(B, T, H, N, 101);
  auto r = kt::to_d(c.r), k = kt::to_d(c.k), v = kt::to_d(c.v), lw = kt::to_d(c.logw),
       u = kt::to_d(c.u), dy = kt::to_d(c.dy);
  auto sin = kt::to_d(kt::randn(NS, 102)), dso = kt::to_d(kt::randn(NS, 103));
  std::vector<double> y(B * T * D), sout(NS);
  auto loss = [&] {
    ref::wkv6_forward<double>(y.data(), sout.data(), r.data(), k.data(), v.data(), lw.data(),
                              u.data(), sin.data(), B, T, H, N);
    return kt::dot(y, dy) + kt::dot(sout, dso);
  };
  const i64 n = B * T * D;
  std::vector<double> dr(n), dk(n), dv(n), dlw(n), du(H * N), dsin(NS);
  ref::wkv6_backward<double>(dr.data(), dk.data(), dv.data(), dlw.data(), du.data(), dsin.data(),
                             dy.data(), dso.data(), r.data(), k.data(), v.data(), lw.data(),
                             u.data(), sin.data(), B, T, H, N);
  auto all = [](i64 m) { return kt::sample_indices(m, m, 0); };
  KT_CHECK_CLOSE(dr, kt::fd_grad(r, all(n), loss), 1e-7, 1e-6);
  KT_CHECK_CLOSE(dk, kt::fd_grad(k, all(n), loss), 1e-7, 1e-6);
  KT_CHECK_CLOSE(dv, kt::fd_grad(v, all(n), loss), 1e-7, 1e-6);
  KT_CHECK_CLOSE(dlw, kt::fd_grad(lw, all(n), loss), 1e-7, 1e-6);
  KT_CHECK_CLOSE(du, kt::fd_grad(u, all(H * N), loss), 1e-7, 1e-6);
  KT_CHECK_CLOSE(dsin, kt::fd_grad(sin, all(NS), loss), 1e-7, 1e-6);
}

TEST_CASE("RWKV6 WKV reference forward equals the unrolled sum in long double", "[rwkv6]") {
  auto c = make_case(1, 9, 2, 4, 111);
  std::vector<float> y(c.r.size());
  ref::wkv6_forward<float>(y.data(), nullptr, c.r.data(), c.k.data(), c.v.data(), c.logw.data(),
                           c.u.data(), nullptr, c.B, c.T, c.H, c.N);
  KT_CHECK_CLOSE(y, wkv6_direct(c), 1e-5, 1e-4);
}

TEST_CASE("RWKV6 WKV chunked fast kernel equals the sequential reference", "[rwkv6][chunk]") {
  kt::on_every_simd_target([&] {
    // T = 50 and 37 are not multiples of 7, 16 or 64 (and 64 > T); N = 32 and 64 take the
    // compile-time head size paths, N = 12, 9 and 72 the runtime one (rows_acc_n): rows of one
    // partial vector (12 on AVX-512, 9 on AVX2), whole vectors and a partial one (12 and 9 on
    // AVX2, 9 on SSE4), and several blocks of 4 vectors with a partial last one (72 on AVX-512)
    // or whole ones (72 on AVX2, SSE4).
    struct Shape { i64 B, T, H, N; };
    for (Shape sh : {Shape{2, 50, 2, 12}, Shape{1, 37, 2, 32}, Shape{1, 37, 2, 64}, Shape{1, 37, 3, 9},
                     Shape{1, 37, 2, 72}}) {
    const i64 B = sh.B, T = sh.T, H = sh.H, N = sh.N, NS = B * H * N * N, n = B * T * H * N;
    INFO("B " << B << " T " << T << " H " << H << " N " << N);
    auto c = make_case(B, T, H, N, 121);
    auto sin = kt::randn(NS, 122), dso = kt::randn(NS, 123);
    const auto e = ref_double(c, &sin, &dso);
    // 1-3 run as kWkv6MinChunk = 4; chunk 7's last chunk (T % 7 = 2, 1) is 1-2 tokens (the
    // backward's 4x4-block transposes then run on their scalar edges only); 16, 32, 64 (128 on
    // AVX-512): fixed-width score rows
    for (i64 chunk : {1, 2, 3, 4, 7, 16, 32, 64, 128}) {
      INFO("chunk " << chunk);
      std::vector<float> y(n), so(NS), dr(n), dk(n), dv(n), dlw(n), du(H * N), dsi(NS);
      fast::wkv6_forward(y.data(), so.data(), c.r.data(), c.k.data(), c.v.data(), c.logw.data(),
                         c.u.data(), sin.data(), B, T, H, N, chunk);
      fast::wkv6_backward(dr.data(), dk.data(), dv.data(), dlw.data(), du.data(), dsi.data(),
                          c.dy.data(), dso.data(), c.r.data(), c.k.data(), c.v.data(),
                          c.logw.data(), c.u.data(), sin.data(), B, T, H, N, chunk);
      KT_CHECK_CLOSE(y, e.y, 1e-4, 1e-4);
      KT_CHECK_CLOSE(so, e.sout, 1e-4, 1e-4);
      KT_CHECK_CLOSE(dr, e.dr, 1e-4, 1e-4);
      KT_CHECK_CLOSE(dk, e.dk, 1e-4, 1e-4);
      KT_CHECK_CLOSE(dv, e.dv, 1e-4, 1e-4);
      KT_CHECK_CLOSE(dlw, e.dlw, 1e-3, 1e-3);
      KT_CHECK_CLOSE(du, e.du, 1e-3, 1e-4);
      KT_CHECK_CLOSE(dsi, e.dsin, 1e-4, 1e-4);
    }
    }
  });
}

TEST_CASE("RWKV6 WKV sequence chunks chained equal one pass", "[rwkv6][chunk]") {
  const i64 B = 2, T = 45, H = 2, N = 8, D = H * N, NS = B * H * N * N, n = B * T * D;
  auto c = make_case(B, T, H, N, 131);
  std::vector<float> y(n), dr(n), dk(n), dv(n), dlw(n), du(H * N);
  fast::wkv6_forward(y.data(), nullptr, c.r.data(), c.k.data(), c.v.data(), c.logw.data(),
                     c.u.data(), nullptr, B, T, H, N);
  fast::wkv6_backward(dr.data(), dk.data(), dv.data(), dlw.data(), du.data(), nullptr,
                      c.dy.data(), nullptr, c.r.data(), c.k.data(), c.v.data(), c.logw.data(),
                      c.u.data(), nullptr, B, T, H, N);
  auto slice = [&](const std::vector<float>& x, i64 t0, i64 m) {
    std::vector<float> s(B * m * D);
    for (i64 b = 0; b < B; ++b)
      std::copy_n(x.begin() + (b * T + t0) * D, m * D, s.begin() + b * m * D);
    return s;
  };
  auto unslice = [&](std::vector<float>& x, const std::vector<float>& s, i64 t0, i64 m) {
    for (i64 b = 0; b < B; ++b)
      std::copy_n(s.begin() + b * m * D, m * D, x.begin() + (b * T + t0) * D);
  };
  for (i64 L : {1, 2, 7, 16, 64}) {
    INFO("sequence chunk " << L);
    std::vector<i64> st;
    for (i64 t0 = 0; t0 < T; t0 += L) st.push_back(t0);
    const i64 P = i64(st.size());
    auto len = [&](i64 j) { return std::min(L, T - st[j]); };
    // (1) state passed along; (2) zero-state summaries composed, then the chunk re-run
    std::vector<std::vector<float>> states(P + 1, std::vector<float>(NS, 0.0f));
    std::vector<float> y1(n), y2(n), comp(NS, 0.0f);
    for (i64 j = 0; j < P; ++j) {
      const i64 m = len(j);
      auto rc = slice(c.r, st[j], m), kc = slice(c.k, st[j], m), vc = slice(c.v, st[j], m),
           lc = slice(c.logw, st[j], m);
      std::vector<float> yc(B * m * D), local(NS), ld(B * D), sin = comp;
      wkv6_chunk_forward(yc.data(), states[j + 1].data(), nullptr, rc.data(), kc.data(),
                         vc.data(), lc.data(), c.u.data(), j ? states[j].data() : nullptr, B, m,
                         H, N);
      unslice(y1, yc, st[j], m);
      wkv6_chunk_forward(yc.data(), local.data(), ld.data(), rc.data(), kc.data(), vc.data(),
                         lc.data(), c.u.data(), nullptr, B, m, H, N);
      wkv6_chunk_forward(yc.data(), nullptr, nullptr, rc.data(), kc.data(), vc.data(),
                         lc.data(), c.u.data(), j ? sin.data() : nullptr, B, m, H, N);
      unslice(y2, yc, st[j], m);
      wkv6_state_combine(comp.data(), j ? sin.data() : nullptr, local.data(), ld.data(), B, H, N);
    }
    KT_CHECK_CLOSE(y1, y, 1e-5, 1e-4);
    KT_CHECK_CLOSE(y2, y, 1e-5, 1e-4);
    KT_CHECK_CLOSE(comp, states[P], 1e-5, 1e-4);
    // (3) backward chained in reverse; (4) local dstate_in composed in reverse
    std::vector<float> dr1(n), dk1(n), dv1(n), dlw1(n), du1(H * N), dS(NS), dcomp(NS);
    for (i64 j = P - 1; j >= 0; --j) {
      const i64 m = len(j);
      auto rc = slice(c.r, st[j], m), kc = slice(c.k, st[j], m), vc = slice(c.v, st[j], m),
           lc = slice(c.logw, st[j], m), gc = slice(c.dy, st[j], m);
      std::vector<float> a(B * m * D), bb(B * m * D), cc(B * m * D), dd(B * m * D), din(NS);
      wkv6_chunk_backward(a.data(), bb.data(), cc.data(), dd.data(), du1.data(), din.data(),
                          gc.data(), j + 1 < P ? dS.data() : nullptr, rc.data(), kc.data(),
                          vc.data(), lc.data(), c.u.data(), j ? states[j].data() : nullptr, B, m,
                          H, N);
      unslice(dr1, a, st[j], m);
      unslice(dk1, bb, st[j], m);
      unslice(dv1, cc, st[j], m);
      unslice(dlw1, dd, st[j], m);
      std::vector<float> local(NS), ld(B * D), junk(B * m * D), ju(H * N);
      wkv6_chunk_backward(junk.data(), junk.data(), junk.data(), junk.data(), ju.data(),
                          local.data(), gc.data(), nullptr, rc.data(), kc.data(), vc.data(),
                          lc.data(), c.u.data(), j ? states[j].data() : nullptr, B, m, H, N);
      wkv6_chunk_forward(junk.data(), nullptr, ld.data(), rc.data(), kc.data(), vc.data(),
                         lc.data(), c.u.data(), nullptr, B, m, H, N);
      if (j + 1 < P) wkv6_grad_state_combine(dcomp.data(), dcomp.data(), local.data(), ld.data(), B, H, N);
      else dcomp.assign(local.begin(), local.end());
      std::copy(din.begin(), din.end(), dS.begin());
      KT_CHECK_CLOSE(dcomp, dS, 1e-5, 1e-4);
    }
    KT_CHECK_CLOSE(dr1, dr, 1e-5, 1e-4);
    KT_CHECK_CLOSE(dk1, dk, 1e-5, 1e-4);
    KT_CHECK_CLOSE(dv1, dv, 1e-5, 1e-4);
    KT_CHECK_CLOSE(dlw1, dlw, 1e-4, 1e-3);
    KT_CHECK_CLOSE(du1, du, 1e-4, 1e-4);
  }
}

TEST_CASE("RWKV6 WKV is stable for extreme keys and decays", "[rwkv6][stability]") {
  // Per channel: decays within 1e-6 of 1 (logw = −1e-6), moderate, e^{−10} per token (the
  // chunked form must cut chunks: e^{−A} would reach e^{70} within 7 tokens), e^{−80} and
  // e^{−1000} per token (w underflows in fp32); keys up to ±60.
  const i64 B = 1, T = 40, H = 2, N = 5, D = H * N;
  auto c = make_case(B, T, H, N, 141);
  const float lws[N] = {-1e-6f, -0.05f, -10.0f, -80.0f, -1000.0f};
  std::mt19937 g(142);
  std::uniform_real_distribution<float> uk(-60.0f, 60.0f);
  for (i64 t = 0; t < T; ++t)
    for (i64 d = 0; d < D; ++d) {
      c.logw[t * D + d] = lws[d % N];
      c.k[t * D + d] = uk(g);
    }
  const auto expect = wkv6_direct(c);
  std::vector<float> yr(B * T * D);
  ref::wkv6_forward<float>(yr.data(), nullptr, c.r.data(), c.k.data(), c.v.data(),
                           c.logw.data(), c.u.data(), nullptr, B, T, H, N);
  // scale of the outputs: |y| ~ Σ|r k v| over many tokens, so the tolerance is relative to it
  double scale = 0;
  for (auto x : expect) scale = std::max(scale, double(std::fabs(x)));
  KT_CHECK_CLOSE(yr, expect, 1e-5 * scale, 1e-4);
  const auto e = ref_double(c, nullptr, nullptr);
  for (i64 chunk : {1, 7, 16, 64}) {
    INFO("chunk " << chunk);
    std::vector<float> y(B * T * D), dr(y.size()), dk(y.size()), dv(y.size()), dlw(y.size()),
        du(H * N);
    fast::wkv6_forward(y.data(), nullptr, c.r.data(), c.k.data(), c.v.data(), c.logw.data(),
                       c.u.data(), nullptr, B, T, H, N, chunk);
    KT_CHECK_CLOSE(y, expect, 1e-5 * scale, 1e-4);
    fast::wkv6_backward(dr.data(), dk.data(), dv.data(), dlw.data(), du.data(), nullptr,
                        c.dy.data(), nullptr, c.r.data(), c.k.data(), c.v.data(), c.logw.data(),
                        c.u.data(), nullptr, B, T, H, N, chunk);
    for (auto* gv : {&dr, &dk, &dv, &dlw}) {
      double gs = 0;
      for (float x : *gv) {
        REQUIRE(std::isfinite(x));
        gs = std::max(gs, double(std::fabs(x)));
      }
    }
    auto tol = [](const std::vector<double>& v) {
      double m = 0;
      for (double x : v) m = std::max(m, std::fabs(x));
      return 1e-5 * m;
    };
    KT_CHECK_CLOSE(dr, e.dr, tol(e.dr), 1e-4);
    KT_CHECK_CLOSE(dk, e.dk, tol(e.dk), 1e-4);
    KT_CHECK_CLOSE(dv, e.dv, tol(e.dv), 1e-4);
    KT_CHECK_CLOSE(dlw, e.dlw, tol(e.dlw), 1e-3);
    KT_CHECK_CLOSE(du, e.du, tol(e.du), 1e-4);
  }
}

TEST_CASE("RWKV6 chunked forward operation count equals the hand count", "[rwkv6][count]") {
  using scanshard::kernels::wkv6_chunked_forward_mul_ops;
  // docs/kernels-wkv-2026-12-07.md §7.4, counted by hand at N = 64, L = 16: 4096 + 4096 + 256 +
  // 1024 + 544 + 1920 + 128
  CHECK(wkv6_chunked_forward_mul_ops(64, 16) == 12064.0);
  // the same section's ceilings, counted 2N² over the own count: 0.71 at chunk 8, 0.50 at chunk 64
  CHECK(2.0 * 64 * 64 / wkv6_chunked_forward_mul_ops(64, 8) == Approx(0.71).margin(0.005));
  CHECK(2.0 * 64 * 64 / wkv6_chunked_forward_mul_ops(64, 64) == Approx(0.50).margin(0.005));
}

TEST_CASE("RWKV6 tiled forward operation count equals the hand count", "[rwkv6][count]") {
  // docs/kernels-wkv6-tiled-2026-12-07.md, by hand at N = 64, L = 16: the tile's two products
  // 2·4096, the chunk end 2·4096/16 = 512, two exps of 9 per element 1152, RT and KT 128, d_t 128
  CHECK(scanshard::kernels::wkv6_tiled_forward_mul_ops(64, 16) == 10112.0);
  CHECK(scanshard::kernels::wkv6_forward_mul_ops(64, 16) == 10112.0);
  CHECK(scanshard::kernels::wkv6_forward_mul_ops(48, 16) == scanshard::kernels::wkv6_chunked_forward_mul_ops(48, 16));
}
