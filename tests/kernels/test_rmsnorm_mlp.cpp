// tests/kernels/test_rmsnorm_mlp.cpp — RMSNorm and the gated MLP: fast == reference on awkward
// widths on every SIMD target, backward == central finite differences of the double reference forward.
#include "helpers.hpp"
#include "kernels/mlp.hpp"
#include "kernels/rmsnorm.hpp"

namespace k = scanshard::kernels;
using kt::i64;

TEST_CASE("RMSNorm fast equals reference and backward matches finite differences", "[rmsnorm]") {
  kt::on_every_simd_target([&] {
    for (auto [M, D] : {std::pair<i64, i64>{1, 1}, {5, 17}, {3, 130}}) {
      const auto x = kt::randn(M * D, 51, 2.0f), s = kt::randn(D, 52, 0.3f), dy = kt::randn(M * D, 53);
      std::vector<float> y_ref(M * D), y_fast(M * D), r_ref(M), r_fast(M);
      k::ref::rmsnorm_forward(y_ref.data(), r_ref.data(), x.data(), s.data(), M, D);
      k::fast::rmsnorm_forward(y_fast.data(), r_fast.data(), x.data(), s.data(), M, D);
      KT_CHECK_CLOSE(y_fast, y_ref, 1e-5, 1e-5);
      // independent: mean of (y/(1+s))² ≈ mean x²/(mean x² + eps) per row
      for (i64 m = 0; m < M; ++m) {
        double ms = 0, my = 0;
        for (i64 d = 0; d < D; ++d) {
          ms += double(x[m * D + d]) * x[m * D + d] / D;
          const double u = y_ref[m * D + d] / (1.0 + s[d]);
          my += u * u / D;
        }
        CHECK(std::fabs(my - ms / (ms + 1e-6)) < 1e-4);
      }
      std::vector<float> dx(M * D, 0.0f), ds(D, 0.0f);
      k::fast::rmsnorm_backward(dx.data(), ds.data(), dy.data(), x.data(), r_fast.data(), s.data(), M, D);
      auto xd = kt::to_d(x), sd = kt::to_d(s), dyd = kt::to_d(dy);
      auto loss = [&] {
        std::vector<double> y(M * D), r(M);
        k::ref::rmsnorm_forward(y.data(), r.data(), xd.data(), sd.data(), M, D, 1e-6);
        return kt::dot(y, dyd);
      };
      const auto ix = kt::sample_indices(M * D, 60, 54), is = kt::sample_indices(D, 60, 55);
      KT_CHECK_CLOSE(kt::pick(dx, ix), kt::fd_grad(xd, ix, loss), 1e-4, 1e-3);
      KT_CHECK_CLOSE(kt::pick(ds, is), kt::fd_grad(sd, is, loss), 1e-4, 1e-3);
      std::vector<double> rdx(M * D, 0.0), rds(D, 0.0), rr(M), ry(M * D);
      k::ref::rmsnorm_forward(ry.data(), rr.data(), xd.data(), sd.data(), M, D, 1e-6);
      k::ref::rmsnorm_backward(rdx.data(), rds.data(), dyd.data(), xd.data(), rr.data(), sd.data(), M, D);
      KT_CHECK_CLOSE(kt::pick(rdx, ix), kt::fd_grad(xd, ix, loss), 1e-7, 1e-6);
      KT_CHECK_CLOSE(dx, rdx, 1e-4, 1e-4);
    }
  });
}

TEST_CASE("gated MLP fast equals reference and backward matches finite differences", "[mlp]") {
  kt::on_every_simd_target([&] {
    for (auto [M, D, F] : {std::tuple<i64, i64, i64>{1, 3, 9}, {7, 10, 30}}) {
      const auto x = kt::randn(M * D, 61), w1 = kt::randn(D * F, 62, 0.5f), b1 = kt::randn(F, 63, 0.5f),
                 w2 = kt::randn(D * F, 64, 0.5f), b2 = kt::randn(F, 65, 0.5f), w3 = kt::randn(F * D, 66, 0.3f),
                 b3 = kt::randn(D, 67), dy = kt::randn(M * D, 68);
      std::vector<float> y_ref(M * D), y_fast(M * D), h1(M * F), h2(M * F), g(M * F), h1f(M * F), h2f(M * F), gf(M * F);
      k::ref::gated_mlp_forward(y_ref.data(), h1.data(), h2.data(), g.data(), x.data(), w1.data(), b1.data(), w2.data(),
                                b2.data(), w3.data(), b3.data(), M, D, F);
      k::fast::gated_mlp_forward(y_fast.data(), h1f.data(), h2f.data(), gf.data(), x.data(), w1.data(), b1.data(),
                                 w2.data(), b2.data(), w3.data(), b3.data(), M, D, F);
      KT_CHECK_CLOSE(y_fast, y_ref, 1e-5, 1e-5);
      // gelu against the erf-free closed form at a few points (tanh approximation, not erf)
      for (double a : {-3.0, -0.5, 0.0, 0.7, 2.5}) {
        const double expect = 0.5 * a * (1 + std::tanh(std::sqrt(2 / M_PI) * (a + 0.044715 * a * a * a)));
        CHECK(std::fabs(k::gelu_fast(float(a)) - expect) < 1e-6);
        CHECK(std::fabs(k::gelu_ref(a) - expect) < 1e-12);
      }
      std::vector<float> dx(M * D, 0), dw1(D * F, 0), db1(F, 0), dw2(D * F, 0), db2(F, 0), dw3(F * D, 0), db3(D, 0),
          work(3 * M * F);
      k::fast::gated_mlp_backward(dx.data(), dw1.data(), db1.data(), dw2.data(), db2.data(), dw3.data(), db3.data(),
                                  work.data(), dy.data(), x.data(), h1f.data(), h2f.data(), gf.data(), w1.data(),
                                  w2.data(), w3.data(), M, D, F);
      auto xd = kt::to_d(x), w1d = kt::to_d(w1), b1d = kt::to_d(b1), w2d = kt::to_d(w2), b2d = kt::to_d(b2),
           w3d = kt::to_d(w3), b3d = kt::to_d(b3), dyd = kt::to_d(dy);
      auto loss = [&] {
        std::vector<double> y(M * D), a(M * F), b(M * F), c(M * F);
        k::ref::gated_mlp_forward(y.data(), a.data(), b.data(), c.data(), xd.data(), w1d.data(), b1d.data(),
                                  w2d.data(), b2d.data(), w3d.data(), b3d.data(), M, D, F);
        return kt::dot(y, dyd);
      };
      auto check = [&](const std::vector<float>& grad, std::vector<double>& p, unsigned seed) {
        const auto idx = kt::sample_indices(i64(p.size()), 30, seed);
        KT_CHECK_CLOSE(kt::pick(grad, idx), kt::fd_grad(p, idx, loss), 1e-4, 1e-3);
      };
      check(dx, xd, 70); check(dw1, w1d, 71); check(db1, b1d, 72); check(dw2, w2d, 73);
      check(db2, b2d, 74); check(dw3, w3d, 75); check(db3, b3d, 76);
    }
  });
}
