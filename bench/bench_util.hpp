// bench/bench_util.hpp — tiny helpers shared by the kernel benchmarks: wall clock, best-of-n
// timing, thread count control, the SIMD target of the dispatched kernels. Not for: tests (no assertions here; benchmarks only print).
#pragma once
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/simd.hpp"

namespace bench {

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Minimum over `reps` runs of f() (after one warm-up run), in seconds.
template <class Fn>
double best_of(int reps, Fn&& f) {
  f();
  double best = 1e300;
  for (int i = 0; i < reps; ++i) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

// Round-robin timing: `rounds` rounds (after one warm-up round), each calling every fn once in
// order; returns times[fn][round] in seconds. On a shared machine whose memory bandwidth drifts
// by tens of percent over seconds, ratios taken within one round compare like with like.
template <class Fn>
std::vector<std::vector<double>> rounds(int n_rounds, std::vector<Fn>& fns) {
  std::vector<std::vector<double>> t(fns.size());
  for (auto& f : fns) f();
  for (int r = 0; r < n_rounds; ++r)
    for (std::size_t i = 0; i < fns.size(); ++i) {
      const double t0 = now();
      fns[i]();
      t[i].push_back(now() - t0);
    }
  return t;
}

// Median of v (upper median for even sizes).
inline double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// Same thread count for our OpenMP loops and for OpenBLAS (which otherwise keeps the count it
// read from the environment at load time).
inline void set_threads(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

// Thread counts to sweep: 1 and the machine's count (2 here).
inline std::vector<int> thread_counts() {
  const int n = omp_get_num_procs();
  std::vector<int> v = {1};
  if (n > 1) v.push_back(n);
  return v;
}

// The SIMD target the dispatched kernels run on (printed beside every ratio). The environment
// variable SCANSHARD_BENCH_SIMD=AVX2 (or SSE4, AVX3, …) pins the kernels to that target on the
// first call; a target this CPU lacks stops the bench rather than print figures for another one.
inline std::string simd_isa() {
  static const std::string isa = [] {
    if (const char* want = std::getenv("SCANSHARD_BENCH_SIMD"); want && *want) {
      if (!scanshard::kernels::simd::pin_target(std::string(want))) {
        std::fprintf(stderr, "SCANSHARD_BENCH_SIMD=%s: not a SIMD target of this CPU; targets:", want);
        for (const auto& t : scanshard::kernels::simd::targets()) std::fprintf(stderr, " %s", t.name.c_str());
        std::fprintf(stderr, "\n");
        std::exit(2);
      }
    }
    return scanshard::kernels::simd::current_target();
  }();
  return isa;
}

// One pass of the STREAM triad a = b + s·c (12 bytes per element moved).
inline void triad(float* a, const float* b, const float* c, long n) {
  const float s = 3.0f;
  #pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
}

}  // namespace bench
