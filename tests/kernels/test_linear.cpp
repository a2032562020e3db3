// tests/kernels/test_linear.cpp — linear and block-diagonal linear: fast (sgemm) == reference
// loops, and both backwards == central finite differences of the double reference forward.
#include "helpers.hpp"
#include "kernels/linear.hpp"

namespace k = scanshard::kernels;
using kt::i64;

TEST_CASE("linear fast equals reference and backward matches finite differences", "[linear]") {
  for (auto [M, C, OC] : {std::tuple<i64, i64, i64>{7, 19, 13}, {1, 5, 3}, {3, 33, 17}}) {
    const auto x = kt::randn(M * C, 1), w = kt::randn(C * OC, 2, 0.3f), b = kt::randn(OC, 3);
    const auto dy = kt::randn(M * OC, 4);
    for (bool bias : {true, false}) {
      std::vector<float> y_ref(M * OC), y_fast(M * OC);
      k::ref::linear_forward(y_ref.data(), x.data(), w.data(), bias ? b.data() : nullptr, M, C, OC);
      k::fast::linear_forward(y_fast.data(), x.data(), w.data(), bias ? b.data() : nullptr, M, C, OC);
      KT_CHECK_CLOSE(y_fast, y_ref, 1e-5, 1e-5);

      // backward accumulates: start from a nonzero buffer and subtract it afterwards
      std::vector<float> dx(M * C, 0.5f), dw(C * OC, 0.5f), db(OC, 0.5f);
      k::fast::linear_backward(dx.data(), dw.data(), bias ? db.data() : nullptr, dy.data(), x.data(), w.data(), M, C, OC);
      for (auto* v : {&dx, &dw, &db}) for (auto& e : *v) e -= 0.5f;

      auto xd = kt::to_d(x), wd = kt::to_d(w), bd = kt::to_d(b), dyd = kt::to_d(dy);
      auto loss = [&] {
        std::vector<double> y(M * OC);
        k::ref::linear_forward(y.data(), xd.data(), wd.data(), bias ? bd.data() : nullptr, M, C, OC);
        return kt::dot(y, dyd);
      };
      const auto ix = kt::sample_indices(M * C, 40, 5), iw = kt::sample_indices(C * OC, 40, 6);
      KT_CHECK_CLOSE(kt::pick(dx, ix), kt::fd_grad(xd, ix, loss), 1e-4, 1e-4);
      KT_CHECK_CLOSE(kt::pick(dw, iw), kt::fd_grad(wd, iw, loss), 1e-4, 1e-4);
      if (bias) KT_CHECK_CLOSE(kt::to_d(db), kt::fd_grad(bd, kt::sample_indices(OC, OC, 7), loss), 1e-4, 1e-4);

      std::vector<double> rdx(M * C), rdw(C * OC), rdb(OC);
      k::ref::linear_backward(rdx.data(), rdw.data(), rdb.data(), dyd.data(), xd.data(), wd.data(), M, C, OC);
      KT_CHECK_CLOSE(kt::pick(rdx, ix), kt::fd_grad(xd, ix, loss), 1e-7, 1e-7);
      KT_CHECK_CLOSE(dx, rdx, 1e-4, 1e-4);
      KT_CHECK_CLOSE(dw, rdw, 1e-4, 1e-4);
    }
  }
}

TEST_CASE("block-diagonal linear fast equals reference and backward matches finite differences", "[linear]") {
  for (auto [M, R, Hb] : {std::tuple<i64, i64, i64>{5, 12, 3}, {1, 8, 1}, {9, 20, 4}}) {
    const i64 S = R / Hb;
    const auto x = kt::randn(M * R, 11), w = kt::randn(Hb * S * S, 12, 0.4f), b = kt::randn(R, 13);
    const auto dy = kt::randn(M * R, 14);
    std::vector<float> y_ref(M * R), y_fast(M * R);
    k::ref::blockdiag_forward(y_ref.data(), x.data(), w.data(), b.data(), M, R, Hb);
    k::fast::blockdiag_forward(y_fast.data(), x.data(), w.data(), b.data(), M, R, Hb);
    KT_CHECK_CLOSE(y_fast, y_ref, 1e-5, 1e-5);

    // block structure: y restricted to block h depends only on x in block h (independent check)
    std::vector<double> y_dense(M * R, 0.0);
    for (i64 m = 0; m < M; ++m)
      for (i64 o = 0; o < R; ++o) {
        double acc = b[o];
        for (i64 c = 0; c < R; ++c)
          if (c / S == o / S) acc += double(x[m * R + c]) * w[(c / S) * S * S + (c % S) * S + (o % S)];
        y_dense[m * R + o] = acc;
      }
    KT_CHECK_CLOSE(y_ref, y_dense, 1e-5, 1e-5);

    std::vector<float> dx(M * R, 0.0f), dw(Hb * S * S, 0.0f), db(R, 0.0f);
    k::fast::blockdiag_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), M, R, Hb);
    auto xd = kt::to_d(x), wd = kt::to_d(w), bd = kt::to_d(b), dyd = kt::to_d(dy);
    auto loss = [&] {
      std::vector<double> y(M * R);
      k::ref::blockdiag_forward(y.data(), xd.data(), wd.data(), bd.data(), M, R, Hb);
      return kt::dot(y, dyd);
    };
    const auto ix = kt::sample_indices(M * R, 40, 15), iw = kt::sample_indices(Hb * S * S, 40, 16);
    KT_CHECK_CLOSE(kt::pick(dx, ix), kt::fd_grad(xd, ix, loss), 1e-4, 1e-4);
    KT_CHECK_CLOSE(kt::pick(dw, iw), kt::fd_grad(wd, iw, loss), 1e-4, 1e-4);
    KT_CHECK_CLOSE(kt::to_d(db), kt::fd_grad(bd, kt::sample_indices(R, R, 17), loss), 1e-4, 1e-4);
    std::vector<double> rdx(M * R), rdw(Hb * S * S), rdb(R);
    k::ref::blockdiag_backward(rdx.data(), rdw.data(), rdb.data(), dyd.data(), xd.data(), wd.data(), M, R, Hb);
    KT_CHECK_CLOSE(dx, rdx, 1e-4, 1e-4);
    KT_CHECK_CLOSE(dw, rdw, 1e-4, 1e-4);
    KT_CHECK_CLOSE(db, rdb, 1e-4, 1e-4);
  }
}

TEST_CASE("grouped linear equals one plain linear per copied column block, backward matches finite differences",
          "[linear]") {
  for (auto [M, G, C, OC] : {std::tuple<i64, i64, i64, i64>{7, 5, 3, 11}, {1, 1, 4, 2}, {9, 2, 8, 16}}) {
    const auto x = kt::randn(M * G * C, 21), w = kt::randn(G * C * OC, 22, 0.4f), dy = kt::randn(G * M * OC, 23);
    std::vector<float> y_fast(G * M * OC), y_ref(G * M * OC);
    k::fast::grouped_linear_forward(y_fast.data(), x.data(), w.data(), M, G, C, OC);
    k::ref::grouped_linear_forward(y_ref.data(), x.data(), w.data(), M, G, C, OC);
    // independent: group g's columns copied out, then the plain reference linear with W_g
    std::vector<float> y_plain(G * M * OC), dx_plain(M * G * C, 0.0f), dw_plain(G * C * OC, 0.0f);
    for (i64 g = 0; g < G; ++g) {
      std::vector<float> xg(M * C), dxg(M * C, 0.0f);
      for (i64 m = 0; m < M; ++m)
        for (i64 c = 0; c < C; ++c) xg[m * C + c] = x[m * G * C + g * C + c];
      k::ref::linear_forward(y_plain.data() + g * M * OC, xg.data(), w.data() + g * C * OC, static_cast<const float*>(nullptr),
                             M, C, OC);
      k::ref::linear_backward(dxg.data(), dw_plain.data() + g * C * OC, static_cast<float*>(nullptr), dy.data() + g * M * OC,
                              xg.data(), w.data() + g * C * OC, M, C, OC);
      for (i64 m = 0; m < M; ++m)
        for (i64 c = 0; c < C; ++c) dx_plain[m * G * C + g * C + c] = dxg[m * C + c];
    }
    KT_CHECK_CLOSE(y_ref, y_plain, 1e-5, 1e-5);
    KT_CHECK_CLOSE(y_fast, y_plain, 1e-5, 1e-5);

    // backward accumulates: start from a nonzero buffer and subtract it afterwards
    std::vector<float> dx(M * G * C, 0.5f), dw(G * C * OC, 0.5f);
    k::fast::grouped_linear_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), M, G, C, OC);
    for (auto* v : {&dx, &dw}) for (auto& e : *v) e -= 0.5f;
    KT_CHECK_CLOSE(dx, dx_plain, 1e-4, 1e-4);
    KT_CHECK_CLOSE(dw, dw_plain, 1e-4, 1e-4);
    auto xd = kt::to_d(x), wd = kt::to_d(w), dyd = kt::to_d(dy);
    auto loss = [&] {
      std::vector<double> y(G * M * OC);
      k::ref::grouped_linear_forward(y.data(), xd.data(), wd.data(), M, G, C, OC);
      return kt::dot(y, dyd);
    };
    const auto ix = kt::sample_indices(M * G * C, 40, 24), iw = kt::sample_indices(G * C * OC, 40, 25);
    KT_CHECK_CLOSE(kt::pick(dx, ix), kt::fd_grad(xd, ix, loss), 1e-4, 1e-4);
    KT_CHECK_CLOSE(kt::pick(dw, iw), kt::fd_grad(wd, iw, loss), 1e-4, 1e-4);
    std::vector<double> rdx(M * G * C), rdw(G * C * OC);
    k::ref::grouped_linear_backward(rdx.data(), rdw.data(), dyd.data(), xd.data(), wd.data(), M, G, C, OC);
    KT_CHECK_CLOSE(dx, rdx, 1e-4, 1e-4);
    KT_CHECK_CLOSE(dw, rdw, 1e-4, 1e-4);
  }
}
