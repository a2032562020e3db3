// tests/kernels/test_embedding.cpp — embedding, tied head and softmax cross-entropy: fast ==
// reference, loss == −log softmax written out directly, gradients == finite differences.
#include "helpers.hpp"
#include "kernels/embedding.hpp"

namespace k = scanshard::kernels;
using kt::i64;

TEST_CASE("embedding and tied head fast equal reference and backward matches finite differences", "[embedding]") {
  const i64 M = 7, D = 11, V = 13;
  const std::vector<std::int32_t> tok = {3, 0, 12, 3, 5, 3, 7};
  const auto table = kt::randn(V * D, 21), dout = kt::randn(M * D, 22), x = kt::randn(M * D, 23);
  const float scale = 1.7f;
  std::vector<float> e_ref(M * D), e_fast(M * D);
  k::ref::embedding_forward(e_ref.data(), tok.data(), table.data(), M, D, scale);
  k::fast::embedding_forward(e_fast.data(), tok.data(), table.data(), M, D, scale);
  KT_CHECK_CLOSE(e_fast, e_ref, 0.0, 1e-7);
  for (i64 m = 0; m < M; ++m) CHECK(e_ref[m * D + 2] == scale * table[tok[m] * D + 2]);

  std::vector<float> dtab(V * D, 0.0f);
  k::fast::embedding_backward(dtab.data(), dout.data(), tok.data(), M, D, scale);
  auto td = kt::to_d(table), dd = kt::to_d(dout);
  auto loss = [&] {
    std::vector<double> e(M * D);
    k::ref::embedding_forward(e.data(), tok.data(), td.data(), M, D, double(scale));
    return kt::dot(e, dd);
  };
  const auto it = kt::sample_indices(V * D, V * D, 24);
  KT_CHECK_CLOSE(kt::to_d(dtab), kt::fd_grad(td, it, loss), 1e-5, 1e-5);

  // tied head
  const auto dl = kt::randn(M * V, 25);
  std::vector<float> l_ref(M * V), l_fast(M * V);
  k::ref::logits_tied_forward(l_ref.data(), x.data(), table.data(), M, D, V);
  k::fast::logits_tied_forward(l_fast.data(), x.data(), table.data(), M, D, V);
  KT_CHECK_CLOSE(l_fast, l_ref, 1e-5, 1e-5);
  std::vector<float> dx(M * D, 0.0f), dt(V * D, 0.0f);
  k::fast::logits_tied_backward(dx.data(), dt.data(), dl.data(), x.data(), table.data(), M, D, V);
  auto xd = kt::to_d(x), dld = kt::to_d(dl);
  auto loss2 = [&] {
    std::vector<double> l(M * V);
    k::ref::logits_tied_forward(l.data(), xd.data(), td.data(), M, D, V);
    return kt::dot(l, dld);
  };
  KT_CHECK_CLOSE(kt::to_d(dx), kt::fd_grad(xd, kt::sample_indices(M * D, M * D, 26), loss2), 1e-4, 1e-4);
  KT_CHECK_CLOSE(kt::to_d(dt), kt::fd_grad(td, it, loss2), 1e-4, 1e-4);
}

TEST_CASE("softmax cross-entropy is stable and its backward matches finite differences", "[embedding]") {
  const i64 M = 5, V = 37;
  auto logits = kt::randn(M * V, 31, 3.0f);
  logits[2 * V + 4] = 1000.0f;  // would overflow exp without the max shift
  logits[3 * V + 1] = -1000.0f;
  const std::vector<std::int32_t> tg = {0, 36, 4, 1, -1};  // -1: no target
  std::vector<float> loss_ref(M), loss_fast(M), p_ref(M * V), p_fast = logits;
  k::ref::softmax_ce_forward(loss_ref.data(), p_ref.data(), logits.data(), tg.data(), M, V);
  k::fast::softmax_ce_forward(loss_fast.data(), p_fast.data(), p_fast.data(), tg.data(), M, V);  // in place
  KT_CHECK_CLOSE(loss_fast, loss_ref, 1e-5, 1e-5);
  KT_CHECK_CLOSE(p_fast, p_ref, 1e-7, 1e-5);
  // independent: loss = −log(e^{l_t} / Σ e^{l_v}) in long double
  for (i64 m = 0; m < M; ++m) {
    if (tg[m] < 0) { CHECK(loss_ref[m] == 0.0f); continue; }
    long double mx = -1e30L, s = 0;
    for (i64 v = 0; v < V; ++v) mx = std::max<long double>(mx, logits[m * V + v]);
    for (i64 v = 0; v < V; ++v) s += std::exp((long double)logits[m * V + v] - mx);
    const double expect = double(std::log(s) + mx - logits[m * V + tg[m]]);
    CHECK(std::fabs(loss_fast[m] - expect) <= 1e-4 * (1 + std::fabs(expect)));
  }
  const auto dls = kt::randn(M, 32);
  std::vector<float> dlog(M * V, 0.0f);
  k::fast::softmax_ce_backward(dlog.data(), dls.data(), p_fast.data(), tg.data(), M, V);
  std::vector<float> dlog_inplace = p_fast;
  k::fast::softmax_ce_backward(dlog_inplace.data(), dls.data(), dlog_inplace.data(), tg.data(), M, V);
  KT_CHECK_CLOSE(dlog_inplace, dlog, 1e-7, 1e-6);
  // finite differences on the moderate rows only (the ±1000 rows are flat to double precision)
  auto ld = kt::to_d(logits), dd = kt::to_d(dls);
  auto loss = [&] {
    std::vector<double> l(M), p(M * V);
    k::ref::softmax_ce_forward(l.data(), p.data(), ld.data(), tg.data(), M, V);
    return kt::dot(l, dd);
  };
  std::vector<i64> idx;
  for (i64 i = 0; i < M * V; ++i) idx.push_back(i);
  KT_CHECK_CLOSE(kt::to_d(dlog), kt::fd_grad(ld, idx, loss), 1e-5, 1e-4);
}
