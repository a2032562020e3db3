// tests/kernels/test_rglru.cpp — RG-LRU (DESIGN §3.1): the reference against the equations
// written independently (a = σ(−Λ)^{8r}), fast == reference on awkward shapes with document
// resets, backward == central finite differences in double, the √ derivative cap, and any split
// of the sequence chained through the chunk API (h_in/h_out, dh_out/dh_in, carry fix-up) == one pass.
#include "helpers.hpp"
#include "kernels/linear.hpp"
#include "kernels/rglru.hpp"

namespace k = scanshard::kernels;
using kt::i64;

namespace {

struct Lru {
  i64 B, T, R, Hb;
  std::vector<float> x, wa, ba, wx, bx, lambda, h_in;
  std::vector<std::uint8_t> reset;
  Lru(i64 B_, i64 T_, i64 R_, i64 Hb_, unsigned seed) : B(B_), T(T_), R(R_), Hb(Hb_) {
    const i64 S = R / Hb;
    x = kt::randn(B * T * R, seed);
    wa = kt::randn(Hb * S * S, seed + 1, 0.5f);
    ba = kt::randn(R, seed + 2, 0.5f);
    wx = kt::randn(Hb * S * S, seed + 3, 0.5f);
    bx = kt::randn(R, seed + 4, 0.5f);
    h_in = kt::randn(B * R, seed + 5);
    // Λ such that a = σ(−Λ) ∈ [0.9, 0.999] (the paper's init): softplus(Λ) = −log a
    std::mt19937 g(seed + 6);
    std::uniform_real_distribution<double> u(0.9, 0.999);
    lambda.resize(R);
    for (auto& l : lambda) l = float(std::log(std::expm1(-std::log(u(g)))));
    reset.resize(B * T);
    for (auto& r : reset) r = (g() % 4 == 0);
  }
};

// p's fast forward and backward (rglru_forward / rglru_backward) against ref:: in float; returns
// the fast gradients (for finite-difference checks).
struct LruGrads {
  std::vector<float> dx, dhi, dwa, dba, dwx, dbx, dl;
};
LruGrads check_fast_equals_reference(const Lru& p, const std::vector<float>& dy, const std::vector<float>& dho) {
  const i64 B = p.B, T = p.T, R = p.R, Hb = p.Hb, N = B * T * R, S = R / Hb;
  std::vector<float> y_ref(N), ga_ref(N), gx_ref(N), ho_ref(B * R), dc_ref(B * R);
  std::vector<float> y_fast(N), ga_fast(N), gx_fast(N), ho_fast(B * R), dc_fast(B * R);
  k::ref::rglru_forward(y_ref.data(), ho_ref.data(), dc_ref.data(), ga_ref.data(), gx_ref.data(), p.x.data(),
                        p.h_in.data(), p.reset.data(), p.wa.data(), p.ba.data(), p.wx.data(), p.bx.data(),
                        p.lambda.data(), B, T, R, Hb);
  k::fast::rglru_forward(y_fast.data(), ho_fast.data(), dc_fast.data(), ga_fast.data(), gx_fast.data(), p.x.data(),
                         p.h_in.data(), p.reset.data(), p.wa.data(), p.ba.data(), p.wx.data(), p.bx.data(),
                         p.lambda.data(), B, T, R, Hb);
  KT_CHECK_CLOSE(y_fast, y_ref, 1e-5, 1e-4);
  KT_CHECK_CLOSE(ho_fast, ho_ref, 1e-5, 1e-4);
  KT_CHECK_CLOSE(dc_fast, dc_ref, 1e-6, 1e-4);
  LruGrads f{std::vector<float>(N, 0), std::vector<float>(B * R, 0), std::vector<float>(Hb * S * S, 0),
             std::vector<float>(R, 0), std::vector<float>(Hb * S * S, 0), std::vector<float>(R, 0),
             std::vector<float>(R, 0)};
  LruGrads r = f;
  std::vector<float> work(2 * N);
  k::fast::rglru_backward(f.dx.data(), f.dhi.data(), f.dwa.data(), f.dba.data(), f.dwx.data(), f.dbx.data(),
                          f.dl.data(), work.data(), dy.data(), dho.data(), y_fast.data(), ga_fast.data(),
                          gx_fast.data(), p.x.data(), p.h_in.data(), p.reset.data(), p.wa.data(), p.wx.data(),
                          p.lambda.data(), B, T, R, Hb);
  k::ref::rglru_backward(r.dx.data(), r.dhi.data(), r.dwa.data(), r.dba.data(), r.dwx.data(), r.dbx.data(),
                         r.dl.data(), work.data(), dy.data(), dho.data(), y_ref.data(), ga_ref.data(), gx_ref.data(),
                         p.x.data(), p.h_in.data(), p.reset.data(), p.wa.data(), p.wx.data(), p.lambda.data(), B, T,
                         R, Hb);
  KT_CHECK_CLOSE(f.dx, r.dx, 1e-4, 1e-3);
  KT_CHECK_CLOSE(f.dhi, r.dhi, 1e-4, 1e-3);
  KT_CHECK_CLOSE(f.dwa, r.dwa, 1e-4, 1e-3);
  KT_CHECK_CLOSE(f.dba, r.dba, 1e-4, 1e-3);
  KT_CHECK_CLOSE(f.dwx, r.dwx, 1e-4, 1e-3);
  KT_CHECK_CLOSE(f.dbx, r.dbx, 1e-4, 1e-3);
  KT_CHECK_CLOSE(f.dl, r.dl, 1e-4, 1e-3);
  return f;
}

}  // namespace

TEST_CASE("RG-LRU reference follows the Griffin equations", "[rglru]") {
  Lru p(2, 9, 6, 2, 200);
  const i64 N = p.B * p.T * p.R, S = p.R / p.Hb;
  std::vector<float> y(N), ga(N), gx(N), hout(p.B * p.R), dec(p.B * p.R);
  k::ref::rglru_forward(y.data(), hout.data(), dec.data(), ga.data(), gx.data(), p.x.data(), p.h_in.data(),
                        p.reset.data(), p.wa.data(), p.ba.data(), p.wx.data(), p.bx.data(), p.lambda.data(), p.B,
                        p.T, p.R, p.Hb);
  for (i64 b = 0; b < p.B; ++b)
    for (i64 c = 0; c < p.R; ++c) {
      double h = p.h_in[b * p.R + c], prod = 1;
      for (i64 t = 0; t < p.T; ++t) {
        const i64 blk = c / S;
        double za = p.ba[c], zx = p.bx[c];
        for (i64 i = 0; i < S; ++i) {
          const double xi = p.x[(b * p.T + t) * p.R + blk * S + i];
          za += xi * p.wa[(blk * S + i) * S + c % S];
          zx += xi * p.wx[(blk * S + i) * S + c % S];
        }
        const double r = 1 / (1 + std::exp(-za)), ig = 1 / (1 + std::exp(-zx));
        const double a = std::pow(1 / (1 + std::exp(double(p.lambda[c]))), 8 * r);  // σ(−Λ)^{8r}
        const double xt = p.x[(b * p.T + t) * p.R + c];
        if (p.reset[b * p.T + t]) { h = ig * xt; prod = 0; }
        else { h = a * h + std::sqrt(1 - a * a) * ig * xt; prod *= a; }
        CHECK(std::fabs(y[(b * p.T + t) * p.R + c] - h) < 1e-5);
      }
      CHECK(std::fabs(hout[b * p.R + c] - h) < 1e-5);
      CHECK(std::fabs(dec[b * p.R + c] - prod) < 1e-6);
    }
}

TEST_CASE("RG-LRU fast equals reference and backward matches finite differences", "[rglru]") {
  kt::on_every_simd_target([&] {
    for (auto [B, T, R, Hb] : {std::tuple<i64, i64, i64, i64>{1, 1, 8, 2}, {3, 7, 20, 4}, {2, 13, 72, 3}}) {
      Lru p(B, T, R, Hb, 300 + unsigned(T));
      const i64 N = B * T * R;
      const auto dy = kt::randn(N, 310), dho = kt::randn(B * R, 311);
      const auto [dx, dhi, dwa, dba, dwx, dbx, dl] = check_fast_equals_reference(p, dy, dho);

      auto xd = kt::to_d(p.x), wad = kt::to_d(p.wa), bad = kt::to_d(p.ba), wxd = kt::to_d(p.wx), bxd = kt::to_d(p.bx),
           ld = kt::to_d(p.lambda), hid = kt::to_d(p.h_in), dyd = kt::to_d(dy), dhod = kt::to_d(dho);
      auto loss = [&] {
        std::vector<double> y(N), ga(N), gx(N), ho(B * R);
        k::ref::rglru_forward(y.data(), ho.data(), static_cast<double*>(nullptr), ga.data(), gx.data(), xd.data(),
                              hid.data(), p.reset.data(), wad.data(), bad.data(), wxd.data(), bxd.data(), ld.data(), B,
                              T, R, Hb);
        return kt::dot(y, dyd) + kt::dot(ho, dhod);
      };
      auto check = [&](const std::vector<float>& grad, std::vector<double>& q, unsigned seed) {
        const auto idx = kt::sample_indices(i64(q.size()), 40, seed);
        KT_CHECK_CLOSE(kt::pick(grad, idx), kt::fd_grad(q, idx, loss), 2e-4, 2e-3);
      };
      check(dx, xd, 320); check(dhi, hid, 321); check(dwa, wad, 322); check(dba, bad, 323);
      check(dwx, wxd, 324); check(dbx, bxd, 325); check(dl, ld, 326);
    }
  });
}

TEST_CASE("RG-LRU fast equals reference over several blocks of channels", "[rglru]") {
  // The fast forward walks each task's channels in blocks of 64 vectors (two passes per block):
  // R = 2120 gives a task (1 or 2 threads) more than one block on every target (AVX-512: 1024
  // channels per block) plus a partial block and a tail vector.
  kt::on_every_simd_target([&] {
    Lru p(2, 4, 2120, 265, 900);  // S = 8: |ga| mostly below 5 (at −16 see the next test)
    check_fast_equals_reference(p, kt::randn(2 * 4 * 2120, 910), kt::randn(2 * 2120, 911));
  });
}

TEST_CASE("RG-LRU fast equals reference when the recurrence gate is closed (a rounds to 1)", "[rglru]") {
  // ga ≈ −30 in every other channel: r = σ(ga) ≈ 1e-13, a = σ(−Λ)^{8r} = 1 − O(1e-14) (1 in
  // float). The fast 2^y gave 1 + 2^−23 there and √(1 − a²) was NaN (found by the test above
  // when its gates were wider: one of 17k reached −16).
  kt::on_every_simd_target([&] {
    Lru p(2, 9, 24, 2, 950);
    for (std::size_t c = 0; c < p.ba.size(); c += 2) p.ba[c] = -30.0f;
    check_fast_equals_reference(p, kt::randn(2 * 9 * 24, 960), kt::randn(2 * 24, 961));
  });
}

TEST_CASE("RG-LRU caps the derivative of the square root at 1000", "[rglru]") {
  // One channel, Λ very negative → softplus(Λ) ≈ e^Λ, a ≈ 1, z = 1 − a² ≈ 16·r·e^Λ far below
  // 1/(4·1000²) = 2.5e-7. Then dy_1/dx_1 ... the gradient w.r.t. Λ through m = √z must use
  // d√z/dz = 1000, not 1/(2√z). Expected value derived here by hand.
  const i64 B = 1, T = 1, R = 1, Hb = 1;
  const double lam = -25.0;  // softplus ≈ 1.4e-11
  const std::vector<double> x = {0.7}, wa = {0.0}, ba = {0.0}, wx = {0.0}, bx = {0.0}, L = {lam}, hin = {0.3};
  std::vector<double> y(1), ga(1), gx(1), work(2);
  k::ref::rglru_forward(y.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr), ga.data(), gx.data(),
                        x.data(), hin.data(), static_cast<const std::uint8_t*>(nullptr), wa.data(), ba.data(), wx.data(),
                        bx.data(), L.data(), B, T, R, Hb);
  const std::vector<float> xf = {0.7f}, waf = {0}, baf = {0}, wxf = {0}, bxf = {0}, Lf = {float(lam)}, hinf = {0.3f};
  std::vector<float> yf(1), gaf(1), gxf(1), workf(2);
  k::fast::rglru_forward(yf.data(), nullptr, nullptr, gaf.data(), gxf.data(), xf.data(), hinf.data(), nullptr, waf.data(),
                         baf.data(), wxf.data(), bxf.data(), Lf.data(), B, T, R, Hb);
  // r = i = σ(0) = ½;  log a = −8·½·sp = −4 sp;  a = e^{−4 sp}
  const double sp = std::log1p(std::exp(lam)), a = std::exp(-4 * sp);
  // dL/dΛ with dy = 1: dy/da = h_in + (i x)·dm/da, dm/da = −a·(2·1000) (capped: 1/√(4 zmin) = 2000... see below)
  // d√z/dz capped at 1000 → dm/da = d√z/dz · dz/da = 1000 · (−2a)
  const double dy_da = 0.3 + 0.5 * 0.7 * (1000.0 * -2.0 * a);
  const double dlog_a = dy_da * a;
  const double expect_dlambda = dlog_a * (-8.0 * 0.5) * (1 / (1 + std::exp(-lam)));
  const std::vector<double> dy = {1.0};
  std::vector<double> dx(1, 0), dl(1, 0);
  k::ref::rglru_backward(dx.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr), static_cast<double*>(nullptr),
                         static_cast<double*>(nullptr), static_cast<double*>(nullptr), dl.data(), work.data(), dy.data(),
                         static_cast<const double*>(nullptr), y.data(), ga.data(), gx.data(), x.data(), hin.data(),
                         static_cast<const std::uint8_t*>(nullptr), wa.data(), wx.data(), L.data(), B, T, R, Hb);
  CHECK(std::fabs(dl[0] - expect_dlambda) <= 1e-9 * std::fabs(expect_dlambda) + 1e-20);
  const std::vector<float> dyf = {1.0f};
  std::vector<float> dxf(1, 0), dlf(1, 0);
  k::fast::rglru_backward(dxf.data(), nullptr, nullptr, nullptr, nullptr, nullptr, dlf.data(), workf.data(), dyf.data(),
                          nullptr, yf.data(), gaf.data(), gxf.data(), xf.data(), hinf.data(), nullptr, waf.data(),
                          wxf.data(), Lf.data(), B, T, R, Hb);
  CHECK(std::fabs(dlf[0] - expect_dlambda) <= 1e-3 * std::fabs(expect_dlambda));
  // and the uncapped derivative would be far larger: 1/(2√z) ≫ 1000 here
  CHECK(1.0 / (2 * std::sqrt(1 - a * a)) > 1e4);
}

TEST_CASE("RG-LRU over any split of the sequence chained through the chunk API equals one pass", "[rglru][chunk]") {
  const i64 B = 3, T = 9, R = 20, Hb = 2, S = R / Hb;
  Lru p(B, T, R, Hb, 400);
  const i64 N = B * T * R;
  const auto dy = kt::randn(N, 410);
  auto run = [&](const std::vector<i64>& cut, bool carry_fixup) {
    auto slice = [&](const auto& v, i64 a, i64 e) {
      const i64 W = i64(v.size()) / (B * T);
      std::vector<std::decay_t<decltype(v[0])>> r;
      for (i64 b = 0; b < B; ++b) r.insert(r.end(), v.begin() + (b * T + a) * W, v.begin() + (b * T + e) * W);
      return r;
    };
    auto unslice = [&](std::vector<float>& dst, const std::vector<float>& src, i64 a, i64 n) {
      for (i64 b = 0; b < B; ++b) std::copy(src.begin() + b * n * R, src.begin() + (b + 1) * n * R, dst.begin() + (b * T + a) * R);
    };
    std::vector<float> y(N), h = p.h_in, dx(N, 0), dwa(Hb * S * S, 0), dba(R, 0), dwx(Hb * S * S, 0), dbx(R, 0), dl(R, 0);
    struct Saved { std::vector<float> y, ga, gx, h_in; };
    std::vector<Saved> saved;
    for (size_t c = 0; c + 1 < cut.size(); ++c) {
      const i64 a = cut[c], n = cut[c + 1] - a;
      Saved s{std::vector<float>(B * n * R), std::vector<float>(B * n * R), std::vector<float>(B * n * R), h};
      const auto xc = slice(p.x, a, a + n);
      const auto rc = slice(p.reset, a, a + n);
      std::vector<float> ho(B * R), dec(B * R);
      if (carry_fixup) {  // DESIGN §4: local scan from zero, then y_t += (Π ā) h_in
        k::fast::rglru_forward(s.y.data(), ho.data(), dec.data(), s.ga.data(), s.gx.data(), xc.data(), nullptr, rc.data(),
                               p.wa.data(), p.ba.data(), p.wx.data(), p.bx.data(), p.lambda.data(), B, n, R, Hb);
        k::fast::rglru_carry(s.y.data(), ho.data(), h.data(), dec.data(), s.ga.data(), rc.data(), p.lambda.data(), B, n, R);
      } else {
        k::fast::rglru_forward(s.y.data(), ho.data(), dec.data(), s.ga.data(), s.gx.data(), xc.data(), h.data(), rc.data(),
                               p.wa.data(), p.ba.data(), p.wx.data(), p.bx.data(), p.lambda.data(), B, n, R, Hb);
      }
      unslice(y, s.y, a, n);
      saved.push_back(std::move(s));
      h = ho;
    }
    std::vector<float> dh(B * R, 0.0f);  // gradient arriving at the last state: none
    for (size_t c = cut.size() - 1; c-- > 0;) {
      const i64 a = cut[c], n = cut[c + 1] - a;
      const auto xc = slice(p.x, a, a + n);
      const auto rc = slice(p.reset, a, a + n);
      const auto dyc = slice(dy, a, a + n);
      std::vector<float> dxc(B * n * R, 0), dhi(B * R, 0), work(2 * B * n * R);
      k::fast::rglru_backward(dxc.data(), dhi.data(), dwa.data(), dba.data(), dwx.data(), dbx.data(), dl.data(),
                              work.data(), dyc.data(), dh.data(), saved[c].y.data(), saved[c].ga.data(),
                              saved[c].gx.data(), xc.data(), saved[c].h_in.data(), rc.data(), p.wa.data(), p.wx.data(),
                              p.lambda.data(), B, n, R, Hb);
      unslice(dx, dxc, a, n);
      dh = dhi;
    }
    return std::tuple{y, h, dx, dh, dwa, dl};
  };
  const auto [y1, h1, dx1, dh1, dwa1, dl1] = run({0, T}, false);
  // the one-pass fast result equals the double reference (so the chain is compared with the truth)
  std::vector<double> yr(N), gar(N), gxr(N);
  auto xd = kt::to_d(p.x), wad = kt::to_d(p.wa), bad = kt::to_d(p.ba), wxd = kt::to_d(p.wx), bxd = kt::to_d(p.bx),
       ld = kt::to_d(p.lambda), hid = kt::to_d(p.h_in);
  k::ref::rglru_forward(yr.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr), gar.data(), gxr.data(),
                        xd.data(), hid.data(), p.reset.data(), wad.data(), bad.data(), wxd.data(), bxd.data(), ld.data(),
                        B, T, R, Hb);
  KT_CHECK_CLOSE(y1, yr, 1e-5, 1e-4);
  for (bool fix : {false, true})
    for (i64 s1 = 1; s1 < T; ++s1)
      for (i64 s2 = s1 + 1; s2 <= T; ++s2) {
        std::vector<i64> cut = {0, s1};
        if (s2 < T) cut.push_back(s2);
        cut.push_back(T);
        const auto [y, h, dx, dh, dwa, dl] = run(cut, fix);
        INFO("split " << s1 << "," << s2 << " carry fix-up " << fix);
        KT_CHECK_CLOSE(y, y1, 1e-6, 1e-5);
        KT_CHECK_CLOSE(h, h1, 1e-6, 1e-5);
        KT_CHECK_CLOSE(dx, dx1, 1e-6, 1e-5);
        KT_CHECK_CLOSE(dh, dh1, 1e-6, 1e-5);
        KT_CHECK_CLOSE(dwa, dwa1, 1e-5, 1e-4);
        KT_CHECK_CLOSE(dl, dl1, 1e-5, 1e-4);
      }
}

// ─── rglru_carry_backward: the gradient reaching h_in from a chunk's own dy (dh_out = 0) ───────

namespace {

// Resets that hit every case: row 0 starts a document at t = 0 (a chunk start when chunks are cut
// there) and again at t = at2; row 1 has one document start inside; row 2 has none.
std::vector<std::uint8_t> carry_resets(i64 B, i64 T, i64 at1, i64 at2) {
  std::vector<std::uint8_t> r(B * T, 0);
  r[0 * T + 0] = 1;
  if (at2 < T) r[0 * T + at2] = 1;
  if (B > 1) r[1 * T + at1] = 1;
  return r;
}

}  // namespace

TEST_CASE("RG-LRU carry backward equals the reference dh_in with no dh_out and finite differences",
          "[rglru][chunk]") {
  for (auto [B, T, R, Hb] : {std::tuple<i64, i64, i64, i64>{1, 7, 20, 4}, {3, 11, 36, 3}, {3, 1, 20, 2},
                             {1, 13, 100, 5}}) {
    INFO("B " << B << " T " << T << " R " << R);
    Lru p(B, T, R, Hb, 500 + unsigned(T + R));
    // row 0: document start at t = 0 and at T/2; row 1: inside at 2 (or 0 if T is tiny)
    p.reset = carry_resets(B, T, T > 2 ? 2 : 0, T / 2 > 0 ? T / 2 : T);
    if (B == 1 && T > 4) p.reset[0] = 0;  // one B = 1 case with no start at t = 0 but one inside
    const i64 N = B * T * R;
    const auto dy = kt::randn(N, 510);

    // gates and states of the real chunk (the carry backward only needs ga)
    std::vector<float> y(N), ga(N), gx(N), ho(B * R), dec(B * R);
    k::fast::rglru_forward(y.data(), ho.data(), dec.data(), ga.data(), gx.data(), p.x.data(), p.h_in.data(),
                           p.reset.data(), p.wa.data(), p.ba.data(), p.wx.data(), p.bx.data(), p.lambda.data(), B, T,
                           R, Hb);
    std::vector<float> dhi(B * R, 123.0f);  // garbage: the carry backward WRITES dh_in
    k::fast::rglru_carry_backward(dhi.data(), dy.data(), ga.data(), p.reset.data(), p.lambda.data(), B, T, R);

    // (a1) the double reference backward with dh_out = nullptr, its dh_in alone
    auto xd = kt::to_d(p.x), wad = kt::to_d(p.wa), bad = kt::to_d(p.ba), wxd = kt::to_d(p.wx),
         bxd = kt::to_d(p.bx), ld = kt::to_d(p.lambda), hid = kt::to_d(p.h_in), dyd = kt::to_d(dy);
    std::vector<double> yd(N), gad(N), gxd(N);
    k::ref::rglru_forward(yd.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr), gad.data(),
                          gxd.data(), xd.data(), hid.data(), p.reset.data(), wad.data(), bad.data(), wxd.data(),
                          bxd.data(), ld.data(), B, T, R, Hb);
    std::vector<double> rdx(N, 0.0), rdhi(B * R, 0.0), work(2 * N);
    k::ref::rglru_backward(rdx.data(), rdhi.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr),
                           static_cast<double*>(nullptr), static_cast<double*>(nullptr),
                           static_cast<double*>(nullptr), work.data(), dyd.data(), static_cast<const double*>(nullptr),
                           yd.data(), gad.data(), gxd.data(), xd.data(), hid.data(), p.reset.data(), wad.data(),
                           wxd.data(), ld.data(), B, T, R, Hb);
    KT_CHECK_CLOSE(dhi, rdhi, 1e-6, 1e-5);

    // (a2) finite differences of Σ y·dy w.r.t. h_in, x and gates fixed (the whole forward in double)
    auto loss = [&] {
      std::vector<double> yy(N), g1(N), g2(N);
      k::ref::rglru_forward(yy.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr), g1.data(),
                            g2.data(), xd.data(), hid.data(), p.reset.data(), wad.data(), bad.data(), wxd.data(),
                            bxd.data(), ld.data(), B, T, R, Hb);
      return kt::dot(yy, dyd);
    };
    const auto idx = kt::sample_indices(B * R, 60, 511);
    KT_CHECK_CLOSE(kt::pick(dhi, idx), kt::fd_grad(hid, idx, loss), 1e-5, 1e-4);

    // rows whose first token starts a document receive no gradient at all
    for (i64 b = 0; b < B; ++b)
      if (p.reset[b * T])
        for (i64 c = 0; c < R; ++c) CHECK(dhi[b * R + c] == 0.0f);
    // and the others do (so the checks above are not comparing zeros)
    for (i64 b = 0; b < B; ++b)
      if (!p.reset[b * T]) {
        double mx = 0;
        for (i64 c = 0; c < R; ++c) mx = std::max(mx, std::fabs(double(dhi[b * R + c])));
        CHECK(mx > 1e-2);
      }

    // no reset mask at all (nullptr) == an all-zero mask, against the reference
    std::vector<float> dhi0(B * R, -5.0f);
    k::fast::rglru_carry_backward(dhi0.data(), dy.data(), ga.data(), nullptr, p.lambda.data(), B, T, R);
    std::vector<double> y0(N), ga0(N), gx0(N), rdhi0(B * R, 0.0), rdx0(N, 0.0);
    k::ref::rglru_forward(y0.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr), ga0.data(),
                          gx0.data(), xd.data(), hid.data(), static_cast<const std::uint8_t*>(nullptr), wad.data(),
                          bad.data(), wxd.data(), bxd.data(), ld.data(), B, T, R, Hb);
    k::ref::rglru_backward(rdx0.data(), rdhi0.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr),
                           static_cast<double*>(nullptr), static_cast<double*>(nullptr),
                           static_cast<double*>(nullptr), work.data(), dyd.data(), static_cast<const double*>(nullptr),
                           y0.data(), ga0.data(), gx0.data(), xd.data(), hid.data(),
                           static_cast<const std::uint8_t*>(nullptr), wad.data(), wxd.data(), ld.data(), B, T, R, Hb);
    KT_CHECK_CLOSE(dhi0, rdhi0, 1e-6, 1e-5);
  }
}

TEST_CASE("RG-LRU sequence shards: carry backward + decay ⊙ dh_out chains the backward to the one-pass result",
          "[rglru][chunk]") {
  // Forward per chunk as a sequence shard runs it: local scan from h_in = 0, then rglru_carry with
  // the previous chunk's h_out. Backward from the last chunk: dh_out_s = carry_backward(chunk s+1)
  // + decay_{s+1} ⊙ dh_out_{s+1}; each chunk's reference backward with that dh_out must give the
  // one-pass dx and parameter gradients.
  struct Case { i64 B, T, R, Hb; std::vector<i64> cut; };
  const std::vector<Case> cases = {
      {3, 11, 20, 4, {0, 4, 11}},     // 2 chunks; row 0 starts a document at chunk start t = 4
      {3, 11, 36, 3, {0, 3, 4, 11}},  // 3 uneven chunks, one of length 1
      {1, 13, 20, 2, {0, 5, 9, 13}},  // B = 1, 3 chunks, a document start inside chunk 1
      {1, 9, 100, 5, {0, 8, 9}},      // B = 1, wide R (several channel tasks), last chunk of one token
  };
  for (const auto& cs : cases) {
    const i64 B = cs.B, T = cs.T, R = cs.R, Hb = cs.Hb, S = R / Hb;
    INFO("B " << B << " T " << T << " R " << R << " chunks " << cs.cut.size() - 1);
    Lru p(B, T, R, Hb, 600 + unsigned(T * R));
    // row 0: document start at the start of chunk 1 and inside the last chunk; row 1 inside chunk 0
    p.reset.assign(B * T, 0);
    if (B == 1) {
      p.reset[cs.cut[1] + 1 < cs.cut[2] ? cs.cut[1] + 1 : cs.cut[1]] = 1;  // inside chunk 1 when it is long
    } else {
      p.reset[0 * T + cs.cut[1]] = 1;
      p.reset[0 * T + T - 2] = 1;
      p.reset[1 * T + 1] = 1;
    }
    const i64 N = B * T * R;
    const auto dy = kt::randn(N, 610);

    // one pass (float reference), with a nonzero incoming state for the whole sequence
    std::vector<float> y1(N), ga1(N), gx1(N), ho1(B * R);
    k::ref::rglru_forward(y1.data(), ho1.data(), static_cast<float*>(nullptr), ga1.data(), gx1.data(), p.x.data(),
                          p.h_in.data(), p.reset.data(), p.wa.data(), p.ba.data(), p.wx.data(), p.bx.data(),
                          p.lambda.data(), B, T, R, Hb);
    std::vector<float> dx1(N, 0), dh1(B * R, 0), dwa1(Hb * S * S, 0), dba1(R, 0), dwx1(Hb * S * S, 0), dbx1(R, 0),
        dl1(R, 0), work1(2 * N);
    k::ref::rglru_backward(dx1.data(), dh1.data(), dwa1.data(), dba1.data(), dwx1.data(), dbx1.data(), dl1.data(),
                           work1.data(), dy.data(), static_cast<const float*>(nullptr), y1.data(), ga1.data(),
                           gx1.data(), p.x.data(), p.h_in.data(), p.reset.data(), p.wa.data(), p.wx.data(),
                           p.lambda.data(), B, T, R, Hb);

    auto slice = [&](const auto& v, i64 a, i64 e) {
      const i64 W = i64(v.size()) / (B * T);
      std::vector<std::decay_t<decltype(v[0])>> r;
      for (i64 b = 0; b < B; ++b) r.insert(r.end(), v.begin() + (b * T + a) * W, v.begin() + (b * T + e) * W);
      return r;
    };
    auto unslice = [&](std::vector<float>& dst, const std::vector<float>& src, i64 a, i64 n) {
      for (i64 b = 0; b < B; ++b)
        std::copy(src.begin() + b * n * R, src.begin() + (b + 1) * n * R, dst.begin() + (b * T + a) * R);
    };
    const i64 C = i64(cs.cut.size()) - 1;
    struct Chunk { i64 a, n; std::vector<float> x, dy, y, ga, gx, h_in, decay; std::vector<std::uint8_t> reset; };
    std::vector<Chunk> ch(C);
    std::vector<float> y(N), h = p.h_in;
    for (i64 s = 0; s < C; ++s) {
      Chunk& c = ch[s];
      c.a = cs.cut[s];
      c.n = cs.cut[s + 1] - c.a;
      c.x = slice(p.x, c.a, c.a + c.n);
      c.dy = slice(dy, c.a, c.a + c.n);
      c.reset = slice(p.reset, c.a, c.a + c.n);
      const i64 Nc = B * c.n * R;
      c.y.resize(Nc); c.ga.resize(Nc); c.gx.resize(Nc); c.decay.resize(B * R);
      c.h_in = h;
      std::vector<float> ho(B * R);
      k::fast::rglru_forward(c.y.data(), ho.data(), c.decay.data(), c.ga.data(), c.gx.data(), c.x.data(), nullptr,
                             c.reset.data(), p.wa.data(), p.ba.data(), p.wx.data(), p.bx.data(), p.lambda.data(), B,
                             c.n, R, Hb);
      k::fast::rglru_carry(c.y.data(), ho.data(), c.h_in.data(), c.decay.data(), c.ga.data(), c.reset.data(),
                           p.lambda.data(), B, c.n, R);
      unslice(y, c.y, c.a, c.n);
      h = ho;
    }
    KT_CHECK_CLOSE(y, y1, 1e-5, 1e-4);  // the forward chain itself is right
    KT_CHECK_CLOSE(h, ho1, 1e-5, 1e-4);

    // every chunk's carry backward is computable before any dh_out is known (independently)
    std::vector<std::vector<float>> loc(C, std::vector<float>(B * R));
    for (i64 s = 0; s < C; ++s)
      k::fast::rglru_carry_backward(loc[s].data(), ch[s].dy.data(), ch[s].ga.data(), ch[s].reset.data(),
                                    p.lambda.data(), B, ch[s].n, R);
    // dh_out of the last chunk is 0; dh_out_s = loc_{s+1} + decay_{s+1} ⊙ dh_out_{s+1}
    std::vector<std::vector<float>> dh_out(C, std::vector<float>(B * R, 0.0f));
    for (i64 s = C - 2; s >= 0; --s)
      for (i64 j = 0; j < B * R; ++j) dh_out[s][j] = loc[s + 1][j] + ch[s + 1].decay[j] * dh_out[s + 1][j];
    std::vector<float> dh_first(B * R);
    for (i64 j = 0; j < B * R; ++j) dh_first[j] = loc[0][j] + ch[0].decay[j] * dh_out[0][j];

    std::vector<float> dx(N, 0), dwa(Hb * S * S, 0), dba(R, 0), dwx(Hb * S * S, 0), dbx(R, 0), dl(R, 0);
    for (i64 s = C - 1; s >= 0; --s) {
      const Chunk& c = ch[s];
      const i64 Nc = B * c.n * R;
      std::vector<float> dxc(Nc, 0), dhi(B * R, 0), work(2 * Nc);
      k::ref::rglru_backward(dxc.data(), dhi.data(), dwa.data(), dba.data(), dwx.data(), dbx.data(), dl.data(),
                             work.data(), c.dy.data(), s == C - 1 ? static_cast<const float*>(nullptr)
                                                                  : dh_out[s].data(),
                             c.y.data(), c.ga.data(), c.gx.data(), c.x.data(), c.h_in.data(), c.reset.data(),
                             p.wa.data(), p.wx.data(), p.lambda.data(), B, c.n, R, Hb);
      unslice(dx, dxc, c.a, c.n);
      // the reference's own dh_in of chunk s is what the carry formula promised the previous chunk
      INFO("chunk " << s);
      if (s > 0) KT_CHECK_CLOSE(dhi, dh_out[s - 1], 1e-5, 1e-4);
      else KT_CHECK_CLOSE(dhi, dh_first, 1e-5, 1e-4);
    }
    KT_CHECK_CLOSE(dh_first, dh1, 1e-5, 1e-4);
    KT_CHECK_CLOSE(dx, dx1, 1e-5, 1e-4);
    KT_CHECK_CLOSE(dwa, dwa1, 1e-4, 1e-4);
    KT_CHECK_CLOSE(dba, dba1, 1e-4, 1e-4);
    KT_CHECK_CLOSE(dwx, dwx1, 1e-4, 1e-4);
    KT_CHECK_CLOSE(dbx, dbx1, 1e-4, 1e-4);
    KT_CHECK_CLOSE(dl, dl1, 1e-4, 1e-4);
  }
}

TEST_CASE("RG-LRU backward with streaming stores (aligned rows) equals the reference", "[rglru]") {
  kt::on_every_simd_target([&] {
    // stream_min_bytes = 0 forces the non-temporal path wherever a row of dga and dgx is 64-byte
    // aligned (R a multiple of 16 and AlignedVec storage); R = 40 also runs the masked tail, and an
    // unaligned view of the same buffers takes the ordinary stores. Both against ref::rglru_backward.
    for (i64 offset : {i64(0), i64(1)})
      for (auto [B, T, R, Hb] : {std::tuple<i64, i64, i64, i64>{3, 7, 32, 4}, {2, 11, 40, 2}}) {
        Lru p(B, T, R, Hb, 700 + unsigned(R));
        const i64 N = B * T * R, S = R / Hb;
        const auto dy = kt::randn(N, 710), dho = kt::randn(B * R, 711);
        std::vector<float> y(N), ga(N), gx(N);
        k::ref::rglru_forward(y.data(), static_cast<float*>(nullptr), static_cast<float*>(nullptr), ga.data(), gx.data(),
                              p.x.data(), p.h_in.data(), p.reset.data(), p.wa.data(), p.ba.data(), p.wx.data(),
                              p.bx.data(), p.lambda.data(), B, T, R, Hb);
        std::vector<float> rdx(N, 0), rdhi(B * R, 0), rdwa(Hb * S * S, 0), rdba(R, 0), rdwx(Hb * S * S, 0), rdbx(R, 0),
            rdl(R, 0), rwork(2 * N);
        k::ref::rglru_backward(rdx.data(), rdhi.data(), rdwa.data(), rdba.data(), rdwx.data(), rdbx.data(), rdl.data(),
                               rwork.data(), dy.data(), dho.data(), y.data(), ga.data(), gx.data(), p.x.data(),
                               p.h_in.data(), p.reset.data(), p.wa.data(), p.wx.data(), p.lambda.data(), B, T, R, Hb);
        k::AlignedVec dga(N + 16), dgx(N + 16);
        std::vector<float> dx(N, 0), dhi(B * R, 0), dwa(Hb * S * S, 0), dba(R, 0), dwx(Hb * S * S, 0), dbx(R, 0), dl(R, 0);
        k::fast::rglru_scan_backward(dx.data(), dga.data() + offset, dgx.data() + offset, dhi.data(), dl.data(), dy.data(),
                                     dho.data(), y.data(), p.x.data(), ga.data(), gx.data(), p.h_in.data(),
                                     p.reset.data(), p.lambda.data(), B, T, R, /*stream_min_bytes=*/0);
        k::fast::blockdiag_backward(dx.data(), dwa.data(), dba.data(), dga.data() + offset, p.x.data(), p.wa.data(),
                                    B * T, R, Hb);
        k::fast::blockdiag_backward(dx.data(), dwx.data(), dbx.data(), dgx.data() + offset, p.x.data(), p.wx.data(),
                                    B * T, R, Hb);
        KT_CHECK_CLOSE(dx, rdx, 1e-4, 1e-3);
        KT_CHECK_CLOSE(dhi, rdhi, 1e-4, 1e-3);
        KT_CHECK_CLOSE(dwa, rdwa, 1e-4, 1e-3);
        KT_CHECK_CLOSE(dba, rdba, 1e-4, 1e-3);
        KT_CHECK_CLOSE(dwx, rdwx, 1e-4, 1e-3);
        KT_CHECK_CLOSE(dbx, rdbx, 1e-4, 1e-3);
        KT_CHECK_CLOSE(dl, rdl, 1e-4, 1e-3);
      }
  });
}

TEST_CASE("RG-LRU fast equals reference when a channel's decay exponent can leave the float range", "[rglru]") {
  // softplus(Λ) > 10.7 makes −8 softplus(Λ) r log2 e reach below −124 for r near 1: the fast scan
  // then floors 2^y (its no-floor path assumes every channel of a task stays above −124). Channels
  // with Λ from 11 to 40 beside ordinary ones, against ref:: in float on every SIMD target.
  kt::on_every_simd_target([&] {
    const i64 B = 2, T = 11, R = 24, Hb = 2, N = B * T * R;
    Lru p(B, T, R, Hb, 900);
    for (i64 c = 0; c < R; c += 3) p.lambda[c] = 11.0f + float(c);
    check_fast_equals_reference(p, kt::randn(N, 910), kt::randn(B * R, 911));
  });
}
