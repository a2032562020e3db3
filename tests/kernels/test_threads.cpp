// tests/kernels/test_threads.cpp — the fast kernels that split work or reduce across OpenMP
// threads give the same result with 2 threads as with 1 (this test is about threading, so it
// sets the thread count itself; the rest of the suite runs single-threaded).
#include <omp.h>

#include "helpers.hpp"
#include "kernels/attention.hpp"
#include "kernels/conv1d.hpp"
#include "kernels/linear.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rmsnorm.hpp"

namespace k = scanshard::kernels;
using kt::i64;

namespace {
// Runs f() with 1 and with 2 threads and returns both outputs.
template <class Fn>
std::pair<std::vector<float>, std::vector<float>> one_and_two(Fn&& f) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  auto a = f();
  omp_set_num_threads(2);
  auto b = f();
  omp_set_num_threads(saved);
  return {a, b};
}
}  // namespace

TEST_CASE("fast kernels give the same results with 2 threads as with 1", "[threads]") {
  const i64 B = 3, T = 37, R = 40, Hb = 4, S = R / Hb, D = 24, H = 4, N = 8, K = 4;
  const auto x = kt::randn(B * T * R, 601), dy = kt::randn(B * T * R, 602), w = kt::randn(R * D, 603);
  std::vector<std::uint8_t> reset(B * T, 0);
  reset[0] = reset[T + 11] = reset[2 * T] = 1;
  {  // linear backward (bias reduction)
    const auto g = kt::randn(B * T * D, 604);
    auto [a, b] = one_and_two([&] {
      std::vector<float> dx(B * T * R, 0), dw(R * D, 0), db(D, 0);
      k::fast::linear_backward(dx.data(), dw.data(), db.data(), g.data(), x.data(), w.data(), B * T, R, D);
      dx.insert(dx.end(), dw.begin(), dw.end());
      dx.insert(dx.end(), db.begin(), db.end());
      return dx;
    });
    KT_CHECK_CLOSE(b, a, 1e-5, 1e-5);
  }
  {  // RMSNorm backward (dscale reduction)
    const auto s = kt::randn(R, 605, 0.2f);
    auto [a, b] = one_and_two([&] {
      std::vector<float> y(B * T * R), r(B * T), dx(B * T * R, 0), ds(R, 0);
      k::fast::rmsnorm_forward(y.data(), r.data(), x.data(), s.data(), B * T, R);
      k::fast::rmsnorm_backward(dx.data(), ds.data(), dy.data(), x.data(), r.data(), s.data(), B * T, R);
      y.insert(y.end(), dx.begin(), dx.end());
      y.insert(y.end(), ds.begin(), ds.end());
      return y;
    });
    KT_CHECK_CLOSE(b, a, 1e-5, 1e-5);
  }
  {  // Conv1D forward + backward (dw, dbias reduction)
    const auto cw = kt::randn(K * R, 606), cb = kt::randn(R, 607);
    auto [a, b] = one_and_two([&] {
      std::vector<float> y(B * T * R), dx(B * T * R, 0), dw(K * R, 0), db(R, 0);
      k::fast::conv1d_forward(y.data(), nullptr, x.data(), nullptr, reset.data(), cw.data(), cb.data(), B, T, R, K);
      k::fast::conv1d_backward(dx.data(), nullptr, dw.data(), db.data(), dy.data(), nullptr, x.data(), nullptr,
                               reset.data(), cw.data(), B, T, R, K);
      y.insert(y.end(), dx.begin(), dx.end());
      y.insert(y.end(), dw.begin(), dw.end());
      y.insert(y.end(), db.begin(), db.end());
      return y;
    });
    KT_CHECK_CLOSE(b, a, 1e-5, 1e-5);
  }
  {  // RG-LRU forward + backward (channel split, dΛ reduction)
    const auto wa = kt::randn(Hb * S * S, 608, 0.3f), wx = kt::randn(Hb * S * S, 609, 0.3f), ba = kt::randn(R, 610),
               bx = kt::randn(R, 611), lam = kt::randn(R, 612, 0.5f, -3.0f), hin = kt::randn(B * R, 613);
    for (i64 b1 : {i64(1), B}) {
      auto [a, b] = one_and_two([&] {
        const i64 n = b1 * T * R;
        std::vector<float> y(n), ga(n), gx(n), ho(b1 * R), dc(b1 * R), dx(n, 0), dhi(b1 * R, 0), dl(R, 0), work(2 * n);
        k::fast::rglru_forward(y.data(), ho.data(), dc.data(), ga.data(), gx.data(), x.data(), hin.data(), reset.data(),
                               wa.data(), ba.data(), wx.data(), bx.data(), lam.data(), b1, T, R, Hb);
        k::fast::rglru_backward(dx.data(), dhi.data(), nullptr, nullptr, nullptr, nullptr, dl.data(), work.data(),
                                dy.data(), nullptr, y.data(), ga.data(), gx.data(), x.data(), hin.data(), reset.data(),
                                wa.data(), wx.data(), lam.data(), b1, T, R, Hb);
        for (auto* v : {&ho, &dc, &dx, &dhi, &dl}) y.insert(y.end(), v->begin(), v->end());
        return y;
      });
      KT_CHECK_CLOSE(b, a, 1e-5, 1e-5);
    }
  }
  {  // attention forward + backward (thread-private dk/dv)
    const auto q = kt::randn(B * T * H * N, 614), kk = kt::randn(B * T * N, 615), v = kt::randn(B * T * N, 616),
               dout = kt::randn(B * T * H * N, 617);
    for (i64 W : {i64(0), i64(5)}) {
      auto [a, b] = one_and_two([&] {
        std::vector<float> o(q.size()), l(B * H * T), dq(q.size(), 0), dk(kk.size(), 0), dv(v.size(), 0);
        k::fast::attention_forward(o.data(), l.data(), q.data(), kk.data(), v.data(), reset.data(), B, T, H, 1, N, W);
        k::fast::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), o.data(), l.data(), q.data(),
                                    kk.data(), v.data(), reset.data(), B, T, H, 1, N, W);
        for (auto* vv : {&l, &dq, &dk, &dv}) o.insert(o.end(), vv->begin(), vv->end());
        return o;
      });
      KT_CHECK_CLOSE(b, a, 1e-5, 1e-5);
    }
  }
}
