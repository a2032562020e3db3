// tests/kernels/test_rwkv_norm.cpp — LayerNorm (with bias) and GroupNorm over heads: the
// reference against the textbook formula written out here, its backward against central finite
// differences in double, and the fast kernels against the reference on awkward shapes on every
// SIMD target.
// Not for: RMSNorm (Griffin kernels).
#include "kernels/layernorm.hpp"

#include <cmath>
#include <utility>
#include <vector>

#include "helpers.hpp"

using namespace scanshard::kernels;
using kt::i64;

TEST_CASE("RWKV GroupNorm reference equals the textbook formula", "[rwkv][norm]") {
  const i64 M = 3, G = 2, N = 5, D = G * N;
  auto x = kt::to_d(kt::randn(M * D, 201, 2.0f, 1.0f));
  auto sc = kt::to_d(kt::randn(D, 202)), bi = kt::to_d(kt::randn(D, 203));
  std::vector<double> y(M * D), mean(M * G), rstd(M * G), e(M * D);
  ref::group_norm_forward<double>(y.data(), mean.data(), rstd.data(), x.data(), sc.data(),
                                  bi.data(), M, G, N, 64e-5);
  // textbook: population variance of each group, eps inside the square root
  for (i64 m = 0; m < M; ++m)
    for (i64 g = 0; g < G; ++g) {
      double s = 0, s2 = 0;
      for (i64 n = 0; n < N; ++n) s += x[m * D + g * N + n];
      const double mu = s / N;
      for (i64 n = 0; n < N; ++n) s2 += std::pow(x[m * D + g * N + n] - mu, 2);
      for (i64 n = 0; n < N; ++n) {
        const i64 c = g * N + n;
        e[m * D + c] = (x[m * D + c] - mu) / std::sqrt(s2 / N + 64e-5) * sc[c] + bi[c];
      }
    }
  KT_CHECK_CLOSE(y, e, 1e-12, 1e-12);
}

TEST_CASE("RWKV LayerNorm and GroupNorm backward match finite differences in double",
          "[rwkv][norm]") {
  for (i64 G : {1, 3}) {
    INFO("groups " << G);
    const i64 M = 4, N = 6, D = G * N;
    auto x = kt::to_d(kt::randn(M * D, 211, 1.5f, 0.3f));
    auto sc = kt::to_d(kt::randn(D, 212, 0.5f, 1.0f)), bi = kt::to_d(kt::randn(D, 213));
    auto dy = kt::to_d(kt::randn(M * D, 214));
    std::vector<double> y(M * D), mean(M * G), rstd(M * G);
    auto loss = [&] {
      ref::group_norm_forward<double>(y.data(), mean.data(), rstd.data(), x.data(), sc.data(),
                                      bi.data(), M, G, N, 1e-5);
      return kt::dot(y, dy);
    };
    loss();
    std::vector<double> dx(M * D), dsc(D), dbi(D);
    ref::group_norm_backward<double>(dx.data(), dsc.data(), dbi.data(), dy.data(), mean.data(),
                                     rstd.data(), x.data(), sc.data(), M, G, N);
    auto all = [](i64 n) { return kt::sample_indices(n, n, 0); };
    KT_CHECK_CLOSE(dx, kt::fd_grad(x, all(M * D), loss), 1e-7, 1e-6);
    KT_CHECK_CLOSE(dsc, kt::fd_grad(sc, all(D), loss), 1e-7, 1e-6);
    KT_CHECK_CLOSE(dbi, kt::fd_grad(bi, all(D), loss), 1e-7, 1e-6);
  }
}

TEST_CASE("RWKV LayerNorm and GroupNorm fast equal reference on every SIMD target", "[rwkv][norm]") {
  kt::on_every_simd_target([&] {
    for (auto [G, N] : {std::pair<i64, i64>{1, 19}, {4, 19}, {1, 70}, {2, 35}}) {
      INFO("groups " << G << " of " << N);
      const i64 M = 37, D = G * N;  // odd sizes: rows and channels off the vector width
      auto x = kt::randn(M * D, 221, 3.0f, 2.0f), sc = kt::randn(D, 222), bi = kt::randn(D, 223);
      auto dy = kt::randn(M * D, 224);
      auto xd = kt::to_d(x), sd = kt::to_d(sc), bd = kt::to_d(bi), gd = kt::to_d(dy);
      std::vector<double> y(M * D), mean(M * G), rstd(M * G), dx(M * D), ds(D), db(D);
      ref::group_norm_forward<double>(y.data(), mean.data(), rstd.data(), xd.data(), sd.data(),
                                      bd.data(), M, G, N, 64e-5);
      ref::group_norm_backward<double>(dx.data(), ds.data(), db.data(), gd.data(), mean.data(),
                                       rstd.data(), xd.data(), sd.data(), M, G, N);
      std::vector<float> yf(M * D), mf(M * G), rf(M * G), dxf(M * D), dsf(D), dbf(D);
      fast::group_norm_forward(yf.data(), mf.data(), rf.data(), x.data(), sc.data(), bi.data(), M,
                               G, N, 64e-5f);
      fast::group_norm_backward(dxf.data(), dsf.data(), dbf.data(), dy.data(), mf.data(), rf.data(),
                                x.data(), sc.data(), M, G, N);
      KT_CHECK_CLOSE(yf, y, 1e-5, 1e-5);
      KT_CHECK_CLOSE(dxf, dx, 1e-5, 1e-4);
      KT_CHECK_CLOSE(dsf, ds, 1e-4, 1e-4);
      KT_CHECK_CLOSE(dbf, db, 1e-4, 1e-4);
    }
  });
}
