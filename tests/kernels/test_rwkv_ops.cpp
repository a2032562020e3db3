// tests/kernels/test_rwkv_ops.cpp — the elementwise RWKV pieces (receptance gate, relu², SiLU gate,
// tanh, RWKV-6 ddlerp token shift and decay): reference forward against the formula written here,
// reference backward against central finite differences in double on Σ out·dout, fast == reference.
// Not for: the recurrences (test_rwkv4.cpp, test_rwkv6.cpp).
#include "kernels/rwkv_ops.hpp"

#include <cmath>
#include <functional>
#include <vector>

#include "helpers.hpp"

using namespace scanshard::kernels;
using kt::i64;
using VD = std::vector<double>;

namespace {
// All-index finite-difference check of one input.
void check_fd(VD& x, const VD& analytic, const std::function<double()>& loss) {
  KT_CHECK_CLOSE(analytic, kt::fd_grad(x, kt::sample_indices(x.size(), x.size(), 0), loss), 1e-8, 1e-6);
}
double sig(double x) { return 1 / (1 + std::exp(-x)); }
}  // namespace

TEST_CASE("RWKV elementwise gates match formulas and finite differences", "[rwkv][ops]") {
  const i64 n = 23;
  auto a = kt::to_d(kt::randn(n, 301, 2.0f)), b = kt::to_d(kt::randn(n, 302)), dout = kt::to_d(kt::randn(n, 303));
  a[3] = 1e-3;  // relu² near (not at) its kink
  VD out(n), e(n);
  SECTION("sigmoid_mul") {
    ref::sigmoid_mul_forward<double>(out.data(), a.data(), b.data(), n);
    for (i64 i = 0; i < n; ++i) e[i] = sig(a[i]) * b[i];
    KT_CHECK_CLOSE(out, e, 1e-14, 1e-14);
    VD da(n), db(n);
    ref::sigmoid_mul_backward<double>(da.data(), db.data(), dout.data(), a.data(), b.data(), n);
    auto loss = [&] { ref::sigmoid_mul_forward<double>(out.data(), a.data(), b.data(), n); return kt::dot(out, dout); };
    check_fd(a, da, loss);
    check_fd(b, db, loss);
  }
  SECTION("relu_square") {
    ref::relu_square_forward<double>(out.data(), a.data(), n);
    for (i64 i = 0; i < n; ++i) e[i] = a[i] > 0 ? a[i] * a[i] : 0.0;
    KT_CHECK_CLOSE(out, e, 1e-14, 1e-14);
    VD da(n);
    ref::relu_square_backward<double>(da.data(), dout.data(), a.data(), n);
    auto loss = [&] { ref::relu_square_forward<double>(out.data(), a.data(), n); return kt::dot(out, dout); };
    check_fd(a, da, loss);
  }
  SECTION("silu_mul") {
    ref::silu_mul_forward<double>(out.data(), b.data(), a.data(), n);
    for (i64 i = 0; i < n; ++i) e[i] = b[i] * a[i] * sig(a[i]);
    KT_CHECK_CLOSE(out, e, 1e-14, 1e-14);
    VD da(n), db(n);
    ref::silu_mul_backward<double>(db.data(), da.data(), dout.data(), b.data(), a.data(), n);
    auto loss = [&] { ref::silu_mul_forward<double>(out.data(), b.data(), a.data(), n); return kt::dot(out, dout); };
    check_fd(a, da, loss);
    check_fd(b, db, loss);
  }
  SECTION("tanh") {
    ref::tanh_forward<double>(out.data(), a.data(), n);
    VD da(n);
    ref::tanh_backward<double>(da.data(), dout.data(), out.data(), n);
    auto loss = [&] { ref::tanh_forward<double>(out.data(), a.data(), n); return kt::dot(out, dout); };
    check_fd(a, da, loss);
  }
}

TEST_CASE("RWKV elementwise gates fast equal reference", "[rwkv][ops]") {
  kt::on_every_simd_target([&] {
    const i64 n = 1001;
    auto a = kt::randn(n, 311, 3.0f), b = kt::randn(n, 312), g = kt::randn(n, 313);
    auto ad = kt::to_d(a), bd = kt::to_d(b), gd = kt::to_d(g);
    std::vector<float> o(n), d1(n), d2(n);
    VD oe(n), e1(n), e2(n);
    fast::sigmoid_mul_forward(o.data(), a.data(), b.data(), n);
    fast::sigmoid_mul_backward(d1.data(), d2.data(), g.data(), a.data(), b.data(), n);
    ref::sigmoid_mul_forward<double>(oe.data(), ad.data(), bd.data(), n);
    ref::sigmoid_mul_backward<double>(e1.data(), e2.data(), gd.data(), ad.data(), bd.data(), n);
    KT_CHECK_CLOSE(o, oe, 1e-6, 1e-5);
    KT_CHECK_CLOSE(d1, e1, 1e-6, 1e-5);
    KT_CHECK_CLOSE(d2, e2, 1e-6, 1e-5);
    std::fill(d1.begin(), d1.end(), 0.f); std::fill(d2.begin(), d2.end(), 0.f);
    std::fill(e1.begin(), e1.end(), 0.0); std::fill(e2.begin(), e2.end(), 0.0);
    fast::silu_mul_forward(o.data(), b.data(), a.data(), n);
    fast::silu_mul_backward(d1.data(), d2.data(), g.data(), b.data(), a.data(), n);
    ref::silu_mul_forward<double>(oe.data(), bd.data(), ad.data(), n);
    ref::silu_mul_backward<double>(e1.data(), e2.data(), gd.data(), bd.data(), ad.data(), n);
    KT_CHECK_CLOSE(o, oe, 1e-6, 1e-5);
    KT_CHECK_CLOSE(d1, e1, 1e-6, 1e-5);
    KT_CHECK_CLOSE(d2, e2, 1e-6, 1e-5);
    std::fill(d1.begin(), d1.end(), 0.f); std::fill(e1.begin(), e1.end(), 0.0);
    fast::relu_square_forward(o.data(), a.data(), n);
    fast::relu_square_backward(d1.data(), g.data(), a.data(), n);
    ref::relu_square_forward<double>(oe.data(), ad.data(), n);
    ref::relu_square_backward<double>(e1.data(), gd.data(), ad.data(), n);
    KT_CHECK_CLOSE(o, oe, 1e-6, 1e-5);
    KT_CHECK_CLOSE(d1, e1, 1e-6, 1e-5);
    std::fill(d1.begin(), d1.end(), 0.f); std::fill(e1.begin(), e1.end(), 0.0);
    fast::tanh_forward(o.data(), a.data(), n);
    ref::tanh_forward<double>(oe.data(), ad.data(), n);
    KT_CHECK_CLOSE(o, oe, 1e-6, 1e-5);
    fast::tanh_backward(d1.data(), g.data(), o.data(), n);
    ref::tanh_backward<double>(e1.data(), gd.data(), oe.data(), n);
    KT_CHECK_CLOSE(d1, e1, 1e-6, 1e-5);
  });
}

TEST_CASE("RWKV6 ddlerp token shift and decay match finite differences and fast equals reference",
          "[rwkv6][ops]") {
  kt::on_every_simd_target([&] {
    const i64 B = 2, T = 4, D = 5, M = B * T, J = 5;
    auto x = kt::to_d(kt::randn(M * D, 321)), prev = kt::to_d(kt::randn(B * D, 322));
    auto mux = kt::to_d(kt::randn(D, 323, 0.3f, 0.5f)), mu = kt::to_d(kt::randn(J * D, 324, 0.3f, 0.5f));
    auto m = kt::to_d(kt::randn(J * M * D, 325, 0.2f)), lam = kt::to_d(kt::randn(D, 326, 0.5f, -1.0f));
    auto dout = kt::to_d(kt::randn(J * M * D, 327)), dlw = kt::to_d(kt::randn(M * D, 328));
    auto dxxo = kt::to_d(kt::randn(M * D, 329));
    // loss = Σ out·dout + Σ logw(x_w)·dlw + Σ xx·dxxo, with z = x_w (the first mix target) feeding
    // the decay so the three ops are checked in one chain
    VD xx(M * D), xxx(M * D), out(J * M * D), lw(M * D);
    auto fwd = [&] {
      ref::ddlerp_shift_forward<double>(xx.data(), xxx.data(), x.data(), prev.data(), mux.data(), B, T, D);
      VD m2 = m;  // m depends on xxx through a fixed elementwise map (stands in for the LoRA)
      for (i64 j = 0; j < J; ++j)
        for (i64 i = 0; i < M * D; ++i) m2[j * M * D + i] += 0.1 * xxx[i];
      ref::ddlerp_mix_forward<double>(out.data(), x.data(), xx.data(), mu.data(), m2.data(), J, M, D);
      ref::decay_forward<double>(lw.data(), lam.data(), out.data(), M, D);
      return kt::dot(out, dout) + kt::dot(lw, dlw) + kt::dot(xx, dxxo);
    };
    fwd();
    // backward by hand through the same chain
    VD m2 = m;
    for (i64 j = 0; j < J; ++j)
      for (i64 i = 0; i < M * D; ++i) m2[j * M * D + i] += 0.1 * xxx[i];
    VD dO = dout, dlam(D), dx(M * D), dprev(B * D), dmux(D), dmu(J * D), dm(J * M * D), dxx = dxxo, dxxx(M * D);
    ref::decay_backward<double>(dlam.data(), dO.data(), dlw.data(), lw.data(), M, D);  // into out[0] = x_w
    ref::ddlerp_mix_backward<double>(dx.data(), dxx.data(), dmu.data(), dm.data(), dO.data(), xx.data(), mu.data(),
                                     m2.data(), J, M, D);
    for (i64 j = 0; j < J; ++j)
      for (i64 i = 0; i < M * D; ++i) dxxx[i] += 0.1 * dm[j * M * D + i];
    ref::ddlerp_shift_backward<double>(dx.data(), dprev.data(), dmux.data(), dxx.data(), dxxx.data(), x.data(),
                                       prev.data(), mux.data(), B, T, D);
    check_fd(x, dx, fwd);
    check_fd(prev, dprev, fwd);
    check_fd(mux, dmux, fwd);
    check_fd(mu, dmu, fwd);
    check_fd(m, dm, fwd);
    check_fd(lam, dlam, fwd);
    // fast == reference on the same chain's pieces
    auto xf = kt::to_f(x), pf = kt::to_f(prev), muxf = kt::to_f(mux), muf = kt::to_f(mu), mf = kt::to_f(m2),
         lamf = kt::to_f(lam), dof = kt::to_f(dout), dlwf = kt::to_f(dlw), dxxof = kt::to_f(dxxo),
         dxxxf = kt::to_f(dxxx);
    std::vector<float> xxf(M * D), xxxf(M * D), outf(J * M * D), lwf(M * D);
    fast::ddlerp_shift_forward(xxf.data(), xxxf.data(), xf.data(), pf.data(), muxf.data(), B, T, D);
    fast::ddlerp_mix_forward(outf.data(), xf.data(), xxf.data(), muf.data(), mf.data(), J, M, D);
    fast::decay_forward(lwf.data(), lamf.data(), outf.data(), M, D);
    KT_CHECK_CLOSE(xxf, xx, 1e-6, 1e-5);
    KT_CHECK_CLOSE(xxxf, xxx, 1e-6, 1e-5);
    KT_CHECK_CLOSE(outf, out, 1e-6, 1e-5);
    KT_CHECK_CLOSE(lwf, lw, 1e-6, 1e-5);
    std::vector<float> dOf = dof, dlamf(D), dxf(M * D), dprevf(B * D), dmuxf(D), dmuf(J * D), dmf(J * M * D),
                       dxxf = dxxof;
    fast::decay_backward(dlamf.data(), dOf.data(), dlwf.data(), lwf.data(), M, D);
    fast::ddlerp_mix_backward(dxf.data(), dxxf.data(), dmuf.data(), dmf.data(), dOf.data(), xxf.data(), muf.data(),
                              mf.data(), J, M, D);
    fast::ddlerp_shift_backward(dxf.data(), dprevf.data(), dmuxf.data(), dxxf.data(), dxxxf.data(), xf.data(),
                                pf.data(), muxf.data(), B, T, D);
    KT_CHECK_CLOSE(dlamf, dlam, 1e-5, 1e-5);
    KT_CHECK_CLOSE(dmf, dm, 1e-5, 1e-5);
    KT_CHECK_CLOSE(dmuf, dmu, 1e-5, 1e-5);
    KT_CHECK_CLOSE(dxf, dx, 1e-5, 1e-5);
    KT_CHECK_CLOSE(dprevf, dprev, 1e-5, 1e-5);
    KT_CHECK_CLOSE(dmuxf, dmux, 1e-5, 1e-5);
  });
}
