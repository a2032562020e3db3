// bench/bench_decode_attention.cpp — the decode attention kernel (kernels/kv_cache.hpp
// fast::attention_decode) at the shapes the decode plans call it with, one thread, cache in L2:
// time per (sequence, K/V head) pair against G (query heads per K/V head) and keys, and per pair
// the least-squares line t = a + b·G·keys over the key counts of one G (a: the fixed cost of a
// pair — its BLAS calls, the softmax rows' set-up; b: seconds per key and query head). Also the
// parts of one pair alone (Q·Kᵀ sgemm, the softmax rows, P·V sgemm) at D05's shape. Never run by
// ctest; no assertions. Usage: bench_decode_attention [rounds] (default 5).
#include <cblas.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.hpp"
#include "kernels/kv_cache.hpp"
#include "kernels/vector_rows.hpp"
#include "program/inference.hpp"

namespace {
using i64 = std::int64_t;

struct Shape {
  i64 B, H, Hk, N, keys;
};

// Seconds of one kernel call over every pair (best of `reps`), the cache `keys` rows long.
double kernel_seconds(const Shape& s, int reps) {
  const auto g = scanshard::decode_attention_gemms(s.H, s.Hk, s.N, s.B, s.keys);  // the shape the decoder calls
  std::vector<float> q(static_cast<std::size_t>(s.B * s.H * s.N), 0.01f), out(q.size());
  std::vector<float> k(static_cast<std::size_t>(s.B * s.keys * s.Hk * s.N)), v(k.size());
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = 0.001f * float(i % 97), v[i] = 0.002f * float(i % 89);
  return bench::best_of(reps, [&] {
    scanshard::kernels::fast::attention_decode(out.data(), q.data(), k.data(), v.data(), s.B, s.keys, s.keys, s.H, s.Hk, s.N,
                                               g.key_block, g.gemv);
  });
}

// The same call as a decode token makes it: `layers` layers' caches in turn, and between two calls
// a sweep over `other_bytes` (the token's weights and states), not timed: the median over calls of
// the seconds of one call, per pair.
double cycled_seconds_per_pair(const Shape& s, int layers, double other_bytes, int calls) {
  const auto g = scanshard::decode_attention_gemms(s.H, s.Hk, s.N, s.B, s.keys);
  std::vector<float> q(static_cast<std::size_t>(s.B * s.H * s.N), 0.01f), out(q.size());
  const std::size_t cache = static_cast<std::size_t>(s.B * s.keys * s.Hk * s.N);
  std::vector<std::vector<float>> k(static_cast<std::size_t>(layers), std::vector<float>(cache, 0.002f)), v = k;
  std::vector<float> other(static_cast<std::size_t>(other_bytes / 4) + 1, 1.0f);
  std::vector<double> t;
  float sink = 0;
  for (int c = 0; c < calls; ++c) {
    for (std::size_t i = 0; i < other.size(); i += 16) sink += other[i];
    const auto l = static_cast<std::size_t>(c % layers);
    const double t0 = bench::now();
    scanshard::kernels::fast::attention_decode(out.data(), q.data(), k[l].data(), v[l].data(), s.B, s.keys, s.keys, s.H, s.Hk, s.N,
                                               g.key_block, g.gemv);
    t.push_back(bench::now() - t0);
  }
  if (sink == 1.5f) std::printf(" ");
  return bench::median(t) / double(s.B * s.Hk);
}

// a + b·x by least squares.
void fit_line(const std::vector<double>& x, const std::vector<double>& y, double& a, double& b) {
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  const double n = double(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) sx += x[i], sy += y[i], sxx += x[i] * x[i], sxy += x[i] * y[i];
  b = (n * sxy - sx * sy) / (n * sxx - sx * sx);
  a = (sy - b * sx) / n;
}

// The parts of one pair (G rows, `keys` keys, head size N, K/V rows strided by Hk·N = N), µs.
void parts(i64 G, i64 keys, i64 N, int reps) {
  std::vector<float> q(static_cast<std::size_t>(G * N), 0.01f), o(q.size()), s(static_cast<std::size_t>(G * keys));
  std::vector<float> kv(static_cast<std::size_t>(keys * N), 0.003f);
  const double qk = bench::best_of(reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(G), int(keys), int(N), 0.17f, q.data(), int(N), kv.data(), int(N), 0.0f,
                s.data(), int(keys));
  });
  const double soft = bench::best_of(reps, [&] {
    for (i64 g = 0; g < G; ++g) {
      float* sg = s.data() + g * keys;
      const float mx = scanshard::kernels::rows::max_of(sg, keys, -INFINITY);
      const float inv = float(1.0 / scanshard::kernels::rows::exp_minus_sum_blocked(sg, sg, keys, mx));
      for (i64 j = 0; j < keys; ++j) sg[j] *= inv;
    }
  });
  const double pv = bench::best_of(reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(G), int(N), int(keys), 1.0f, s.data(), int(keys), kv.data(), int(N),
                0.0f, o.data(), int(N));
  });
  std::printf("  parts G=%lld keys=%lld N=%lld: Q.K^T %.2f us, softmax rows %.2f us, P.V %.2f us (sum %.2f us)\n", (long long)G,
              (long long)keys, (long long)N, 1e6 * qk, 1e6 * soft, 1e6 * pv, 1e6 * (qk + soft + pv));
}
}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 5;
  omp_set_num_threads(1);
  openblas_set_num_threads(1);
  const std::vector<i64> key_counts = {65, 129, 257, 545, 1033};
  for (int r = 0; r < rounds; ++r) {
    std::printf("round %d (1 thread, best of 200 calls; us per pair)\n", r + 1);
    for (i64 G : {1, 2, 4}) {
      // B = 4 sequences, one K/V head, N = 32: mqa-tiny's shape (t = 1: G = 4, t = 2: G = 2)
      std::vector<double> x, y;
      std::printf("  G=%lld:", (long long)G);
      for (i64 keys : key_counts) {
        const Shape s{4, G, 1, 32, keys};
        const double per_pair = kernel_seconds(s, 200) / double(s.B * s.Hk);
        x.push_back(double(G * keys));
        y.push_back(per_pair);
        std::printf(" keys %lld %.2f", (long long)keys, 1e6 * per_pair);
      }
      double a = 0, b = 0;
      fit_line(x, y, a, b);
      std::printf("  | fit: %.2f us per pair + %.2f ns per key and head (4N = %d FLOP: %.1f GFLOP/s)\n", 1e6 * a, 1e9 * b, 4 * 32,
                  128 / (1e9 * b));
    }
    // C10 (mqa-tiny t = 1: G 4, B 1, 1033 keys, one layer: 264 KB of cache) and D05 (t = 2: G 2,
    // B 4, 545 keys, two layers: 2 x 558 KB), each with its weights (~0.4 / 0.5 MB per rank) swept
    // between calls, and D05's shape with its caches alone in L2 (one layer, nothing swept)
    const double c10 = cycled_seconds_per_pair({1, 4, 1, 32, 1033}, 1, 0.4e6, 400);
    const double d05 = cycled_seconds_per_pair({4, 2, 1, 32, 545}, 2, 0.5e6, 400);
    const double d05_hot = cycled_seconds_per_pair({4, 2, 1, 32, 545}, 1, 0, 400);
    std::printf("  as a token calls it (median): C10 %.2f us per pair (%.2f ns per key and head), D05 %.2f us (%.2f ns), D05 "
                "hot %.2f us (%.2f ns); D05 / C10 per key and head %.2f\n",
                1e6 * c10, 1e9 * c10 / (4 * 1033), 1e6 * d05, 1e9 * d05 / (2 * 545), 1e6 * d05_hot, 1e9 * d05_hot / (2 * 545),
                (d05 / (2 * 545)) / (c10 / (4 * 1033)));
    parts(2, 545, 32, 200);
    parts(4, 1033, 32, 200);
  }
  return 0;
}
