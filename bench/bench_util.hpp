// bench/bench_util.hpp — tiny helpers shared by the kernel benchmarks: wall clock, best-of-n
// timing, thread count control. Not for: tests (no assertions here; benchmarks only print).
#pragma once
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

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

}  // namespace bench
