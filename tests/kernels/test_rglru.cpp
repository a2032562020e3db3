// tests/kernels/test_rglru.cpp — RG-LRU (DESIGN §3.1): the reference against the equations
// written independently (a = σ(−Λ)^{8r}), fast == reference on awkward shapes with document
// resets, backward == central finite differences in double, the √ derivative cap, and any split
// of the sequence chained through the chunk API (h_in/h_out, dh_out/dh_in, carry fix-up) == one pass.
#include "helpers.hpp"
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
  for (auto [B, T, R, Hb] : {std::tuple<i64, i64, i64, i64>{1, 1, 8, 2}, {3, 7, 20, 4}, {2, 13, 72, 3}}) {
    Lru p(B, T, R, Hb, 300 + unsigned(T));
    const i64 N = B * T * R, S = R / Hb;
    const auto dy = kt::randn(N, 310), dho = kt::randn(B * R, 311);
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

    std::vector<float> dx(N, 0), dhi(B * R, 0), dwa(Hb * S * S, 0), dba(R, 0), dwx(Hb * S * S, 0), dbx(R, 0),
        dl(R, 0), work(2 * N);
    auto rdx = dx, rdhi = dhi, rdwa = dwa, rdba = dba, rdwx = dwx, rdbx = dbx, rdl = dl;
    k::fast::rglru_backward(dx.data(), dhi.data(), dwa.data(), dba.data(), dwx.data(), dbx.data(), dl.data(),
                            work.data(), dy.data(), dho.data(), y_fast.data(), ga_fast.data(), gx_fast.data(),
                            p.x.data(), p.h_in.data(), p.reset.data(), p.wa.data(), p.wx.data(), p.lambda.data(),
                            B, T, R, Hb);
    k::ref::rglru_backward(rdx.data(), rdhi.data(), rdwa.data(), rdba.data(), rdwx.data(), rdbx.data(), rdl.data(),
                           work.data(), dy.data(), dho.data(), y_ref.data(), ga_ref.data(), gx_ref.data(), p.x.data(),
                           p.h_in.data(), p.reset.data(), p.wa.data(), p.wx.data(), p.lambda.data(), B, T, R, Hb);
    KT_CHECK_CLOSE(dx, rdx, 1e-4, 1e-3);
    KT_CHECK_CLOSE(dhi, rdhi, 1e-4, 1e-3);
    KT_CHECK_CLOSE(dwa, rdwa, 1e-4, 1e-3);
    KT_CHECK_CLOSE(dl, rdl, 1e-4, 1e-3);

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
