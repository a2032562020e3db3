// bench/bench_gemm.cpp — GEMM-dominated kernels (linear with bias, gated MLP forward/backward,
// tied head logits) against bare cblas_sgemm calls of the same shapes in the same run.
// Ratio = t(bare sgemms) / t(op); goal ≥ 0.8. Shapes: Griffin-100M (D 768, F 2304), M = 2048 tokens.
// Not for: correctness (tests/kernels).
#include <cblas.h>

#include <cstdio>
#include <vector>

#include "bench_util.hpp"
#include "kernels/linear.hpp"
#include "kernels/mlp.hpp"

namespace k = scanshard::kernels;
using k::i64;

namespace {
void sgemm(bool ta, bool tb, i64 M, i64 N, i64 K, const float* A, i64 lda, const float* B, i64 ldb, float* C, i64 ldc, float beta) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(M), int(N), int(K), 1.0f,
              A, int(lda), B, int(ldb), beta, C, int(ldc));
}
}  // namespace

int main() {
  const i64 M = 2048, D = 768, F = 2304;
  std::vector<float> x(M * D, 0.01f), w1(D * F, 0.02f), b1(F, 0.1f), w2(D * F, 0.01f), b2(F, 0.1f), w3(F * D, 0.01f),
      b3(D, 0.1f), y(M * D), h1(M * F), h2(M * F), g(M * F), dy(M * D, 0.01f), dx(M * D), dw1(D * F), db1(F),
      dw2(D * F), db2(F), dw3(F * D), db3(D), work(3 * M * F);
  std::printf("bench_gemm: M=%ld D=%ld F=%ld\n", long(M), long(D), long(F));
  for (int th : bench::thread_counts()) {
    bench::set_threads(th);
    // linear D→F with bias
    const double t_lin = bench::best_of(5, [&] { k::fast::linear_forward(h1.data(), x.data(), w1.data(), b1.data(), M, D, F); });
    const double t_lin0 = bench::best_of(5, [&] { sgemm(false, false, M, F, D, x.data(), D, w1.data(), F, h1.data(), F, 0.0f); });
    // gated MLP forward: 3 sgemms
    const double t_mf = bench::best_of(3, [&] {
      k::fast::gated_mlp_forward(y.data(), h1.data(), h2.data(), g.data(), x.data(), w1.data(), b1.data(), w2.data(),
                                 b2.data(), w3.data(), b3.data(), M, D, F);
    });
    const double t_mf0 = bench::best_of(3, [&] {
      sgemm(false, false, M, F, D, x.data(), D, w1.data(), F, h1.data(), F, 0.0f);
      sgemm(false, false, M, F, D, x.data(), D, w2.data(), F, h2.data(), F, 0.0f);
      sgemm(false, false, M, D, F, g.data(), F, w3.data(), D, y.data(), D, 0.0f);
    });
    // gated MLP backward: 6 sgemms (dg, dW3, dx×2, dW1, dW2)
    const double t_mb = bench::best_of(3, [&] {
      k::fast::gated_mlp_backward(dx.data(), dw1.data(), db1.data(), dw2.data(), db2.data(), dw3.data(), db3.data(),
                                  work.data(), dy.data(), x.data(), h1.data(), h2.data(), g.data(), w1.data(), w2.data(),
                                  w3.data(), M, D, F);
    });
    const double t_mb0 = bench::best_of(3, [&] {
      sgemm(false, true, M, F, D, dy.data(), D, w3.data(), D, work.data(), F, 0.0f);
      sgemm(true, false, F, D, M, g.data(), F, dy.data(), D, dw3.data(), D, 1.0f);
      sgemm(false, true, M, D, F, work.data(), F, w1.data(), F, dx.data(), D, 1.0f);
      sgemm(true, false, D, F, M, x.data(), D, work.data(), F, dw1.data(), F, 1.0f);
      sgemm(false, true, M, D, F, work.data(), F, w2.data(), F, dx.data(), D, 1.0f);
      sgemm(true, false, D, F, M, x.data(), D, work.data(), F, dw2.data(), F, 1.0f);
    });
    const double fl_mlp = 2.0 * 3 * M * D * F;
    std::printf("threads %d: linear+bias %.2f ms vs sgemm %.2f ms ratio %.2f | MLP fwd %.1f GFLOP/s ratio %.2f | "
                "MLP bwd %.1f GFLOP/s ratio %.2f\n",
                th, t_lin * 1e3, t_lin0 * 1e3, t_lin0 / t_lin, fl_mlp / t_mf / 1e9, t_mf0 / t_mf,
                2 * fl_mlp / t_mb / 1e9, t_mb0 / t_mb);
  }
  return 0;
}
