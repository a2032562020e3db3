// tests/kernels/test_conv1d.cpp — causal depthwise Conv1D with document mask: reference == the
// definition written as a dense masked sum, fast == reference, backward == finite differences,
// and any split of the sequence chained through the state API == one pass (forward and backward).
#include "helpers.hpp"
#include "kernels/conv1d.hpp"

namespace k = scanshard::kernels;
using kt::i64;

namespace {

std::vector<std::uint8_t> make_reset(i64 B, i64 T, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<std::uint8_t> r(B * T);
  for (auto& v : r) v = (g() % 5 == 0);
  return r;
}

}  // namespace

TEST_CASE("Conv1D fast equals reference with document mask and backward matches finite differences", "[conv1d]") {
  kt::on_every_simd_target([&] {
    const i64 K = 4;
    for (auto [B, T, R] : {std::tuple<i64, i64, i64>{1, 1, 5}, {3, 2, 17}, {3, 11, 19}, {2, 9, 300}}) {
      const auto x = kt::randn(B * T * R, 81), w = kt::randn(K * R, 82), bias = kt::randn(R, 83),
                 st = kt::randn(B * (K - 1) * R, 84), dy = kt::randn(B * T * R, 85),
                 dso = kt::randn(B * (K - 1) * R, 86);
      const auto reset = make_reset(B, T, 87);
      std::vector<float> y_ref(B * T * R), y_fast(B * T * R), so_ref(B * (K - 1) * R), so_fast(B * (K - 1) * R);
      k::ref::conv1d_forward(y_ref.data(), so_ref.data(), x.data(), st.data(), reset.data(), w.data(), bias.data(), B, T, R, K);
      k::fast::conv1d_forward(y_fast.data(), so_fast.data(), x.data(), st.data(), reset.data(), w.data(), bias.data(), B, T, R, K);
      KT_CHECK_CLOSE(y_fast, y_ref, 1e-5, 1e-5);
      KT_CHECK_CLOSE(so_fast, so_ref, 0.0, 0.0);
      // independent definition: document id per position (state = document −1), y sums same-doc taps
      for (i64 b = 0; b < B; ++b) {
        std::vector<int> doc(T);
        int d = 0;
        for (i64 t = 0; t < T; ++t) { if (reset[b * T + t]) ++d; doc[t] = d; }
        for (i64 t = 0; t < T; ++t)
          for (i64 r = 0; r < R; r += 7) {
            double acc = bias[r];
            for (i64 j = 0; j < K; ++j) {
              const i64 p = t - j;
              const int dp = p >= 0 ? doc[p] : 0;  // the state belongs to document 0 (before any reset)
              if (dp != doc[t]) continue;
              acc += double(w[(K - 1 - j) * R + r]) * (p >= 0 ? x[(b * T + p) * R + r] : st[(b * (K - 1) + p + K - 1) * R + r]);
            }
            CHECK(std::fabs(acc - y_ref[(b * T + t) * R + r]) < 1e-4);
          }
      }
      std::vector<float> dx(B * T * R, 0), dst(B * (K - 1) * R, 0), dw(K * R, 0), db(R, 0);
      std::vector<float> rdx = dx, rdst = dst, rdw = dw, rdb = db;
      k::fast::conv1d_backward(dx.data(), dst.data(), dw.data(), db.data(), dy.data(), dso.data(), x.data(), st.data(),
                               reset.data(), w.data(), B, T, R, K);
      k::ref::conv1d_backward(rdx.data(), rdst.data(), rdw.data(), rdb.data(), dy.data(), dso.data(), x.data(), st.data(),
                              reset.data(), w.data(), B, T, R, K);
      KT_CHECK_CLOSE(dx, rdx, 1e-5, 1e-5);
      KT_CHECK_CLOSE(dst, rdst, 1e-5, 1e-5);
      KT_CHECK_CLOSE(dw, rdw, 1e-4, 1e-4);
      KT_CHECK_CLOSE(db, rdb, 1e-4, 1e-4);
      auto xd = kt::to_d(x), wd = kt::to_d(w), bd = kt::to_d(bias), sd = kt::to_d(st), dyd = kt::to_d(dy), dsod = kt::to_d(dso);
      auto loss = [&] {
        std::vector<double> y(B * T * R), so(B * (K - 1) * R);
        k::ref::conv1d_forward(y.data(), so.data(), xd.data(), sd.data(), reset.data(), wd.data(), bd.data(), B, T, R, K);
        return kt::dot(y, dyd) + kt::dot(so, dsod);
      };
      auto check = [&](const std::vector<float>& grad, std::vector<double>& p, unsigned seed) {
        const auto idx = kt::sample_indices(i64(p.size()), 60, seed);
        KT_CHECK_CLOSE(kt::pick(grad, idx), kt::fd_grad(p, idx, loss), 1e-4, 1e-4);
      };
      check(dx, xd, 88); check(dw, wd, 89); check(db, bd, 90); check(dst, sd, 91);
    }
  });
}

TEST_CASE("Conv1D over any split of the sequence chained through the state equals one pass", "[conv1d][chunk]") {
  kt::on_every_simd_target([&] {
    const i64 K = 4, B = 3, T = 10, R = 21;
    const auto x = kt::randn(B * T * R, 101), w = kt::randn(K * R, 102), bias = kt::randn(R, 103),
               dy = kt::randn(B * T * R, 104);
    const auto reset = make_reset(B, T, 105);
    std::vector<float> y1(B * T * R), dx1(B * T * R, 0), dw1(K * R, 0), db1(R, 0);
    k::ref::conv1d_forward(y1.data(), static_cast<float*>(nullptr), x.data(), static_cast<const float*>(nullptr), reset.data(), w.data(),
                           bias.data(), B, T, R, K);
    k::ref::conv1d_backward(dx1.data(), static_cast<float*>(nullptr), dw1.data(), db1.data(), dy.data(),
                            static_cast<const float*>(nullptr), x.data(), static_cast<const float*>(nullptr),
                            reset.data(), w.data(), B, T, R, K);
    // split points: every pair 0 < s1 ≤ s2 < T (chunks of length 1 or 2 are shorter than K−1)
    for (i64 s1 = 1; s1 < T; ++s1)
      for (i64 s2 = s1; s2 < T; ++s2) {
        const std::vector<i64> cut = {0, s1, s2, T};
        auto slice = [&](const auto& v, i64 a, i64 e) {  // [B, a:e, R] of a [B,T,*] tensor (R or 1 wide)
          const i64 W = i64(v.size()) / (B * T);
          std::vector<std::decay_t<decltype(v[0])>> r;
          for (i64 b = 0; b < B; ++b) r.insert(r.end(), v.begin() + (b * T + a) * W, v.begin() + (b * T + e) * W);
          return r;
        };
        std::vector<float> state(B * (K - 1) * R, 0.0f), y(B * T * R);
        std::vector<std::vector<float>> states_in;
        for (size_t c = 0; c + 1 < cut.size(); ++c) {
          const i64 a = cut[c], e = cut[c + 1], n = e - a;
          if (n == 0) continue;
          const auto xc = slice(x, a, e);
          const auto rc = slice(reset, a, e);
          std::vector<float> yc(B * n * R), so(B * (K - 1) * R);
          states_in.push_back(state);
          k::fast::conv1d_forward(yc.data(), so.data(), xc.data(), state.data(), rc.data(), w.data(), bias.data(), B, n, R, K);
          for (i64 b = 0; b < B; ++b) std::copy(yc.begin() + b * n * R, yc.begin() + (b + 1) * n * R, y.begin() + (b * T + a) * R);
          state = so;
        }
        KT_CHECK_CLOSE(y, y1, 1e-5, 1e-5);
        // backward in reverse chunk order, dstate_in of chunk c+1 is dstate_out of chunk c
        std::vector<float> dx(B * T * R, 0), dw(K * R, 0), db(R, 0), dstate(B * (K - 1) * R, 0.0f);
        size_t si = states_in.size();
        for (size_t c = cut.size() - 1; c-- > 0;) {
          const i64 a = cut[c], e = cut[c + 1], n = e - a;
          if (n == 0) continue;
          const auto xc = slice(x, a, e);
          const auto rc = slice(reset, a, e);
          const auto dyc = slice(dy, a, e);
          std::vector<float> dxc(B * n * R, 0), dsi(B * (K - 1) * R, 0);
          k::fast::conv1d_backward(dxc.data(), dsi.data(), dw.data(), db.data(), dyc.data(), dstate.data(), xc.data(),
                                   states_in[--si].data(), rc.data(), w.data(), B, n, R, K);
          for (i64 b = 0; b < B; ++b) std::copy(dxc.begin() + b * n * R, dxc.begin() + (b + 1) * n * R, dx.begin() + (b * T + a) * R);
          dstate = dsi;
        }
        KT_CHECK_CLOSE(dx, dx1, 1e-5, 1e-5);
        KT_CHECK_CLOSE(dw, dw1, 1e-4, 1e-4);
        KT_CHECK_CLOSE(db, db1, 1e-4, 1e-4);
      }
  });
}
