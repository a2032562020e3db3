// bench/bench_util.hpp — tiny helpers shared by the kernel benchmarks: wall clock and thread CPU
// time, best-of-n timing, thread count control, the SIMD target of the dispatched kernels, and a
// kernel's own roofline against the same run's triad and vector peak. Not for: tests (no assertions here;
// benchmarks only print).
#pragma once
#include <cblas.h>
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/simd.hpp"
#include "measure/vector_loops.hpp"

namespace bench {

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the calling thread, in seconds (time it actually ran: immune to waiting for a core
// on a shared machine).
inline double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Minimum over `reps` runs of f() (after one warm-up run), in seconds of `clock` (wall by default).
template <class Fn>
double best_of(int reps, Fn&& f, double (*clock)() = now) {
  f();
  double best = 1e300;
  for (int i = 0; i < reps; ++i) {
    const double t0 = clock();
    f();
    best = std::min(best, clock() - t0);
  }
  return best;
}

// Round-robin timing: `rounds` rounds (after one warm-up round), each calling every fn once in
// order; returns times[fn][round] in seconds. On a shared machine whose memory bandwidth drifts
// by tens of percent over seconds, ratios taken within one round compare like with like.
// clock: wall time by default; thread_cpu_s for 1-thread runs on a machine whose cores other
// processes share (the time the thread was descheduled then counts for neither kernel nor triad).
template <class Fn>
std::vector<std::vector<double>> rounds(int n_rounds, std::vector<Fn>& fns, double (*clock)() = now) {
  std::vector<std::vector<double>> t(fns.size());
  for (auto& f : fns) f();
  for (int r = 0; r < n_rounds; ++r)
    for (std::size_t i = 0; i < fns.size(); ++i) {
      const double t0 = clock();
      fns[i]();
      t[i].push_back(clock() - t0);
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

// Thread counts to sweep: 1 and the machine's count (2 here); SCANSHARD_BENCH_THREADS=n: n only.
inline std::vector<int> thread_counts() {
  if (const char* want = std::getenv("SCANSHARD_BENCH_THREADS"); want && std::atoi(want) > 0) return {std::atoi(want)};
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

// ─── a kernel's own roofline (issue 27) ─────────────────────────────────────────────────────────
// The vector unit's peak, measured in the same rounds as the kernels: measure/vector_loops' FMA
// loop (128 independent lanes, one multiply-add each per rep), dispatched to the same SIMD target
// as the kernels, on every OpenMP thread. Each thread times its own loop and the rates add up, so
// a thread that waits for its core (the machine is shared) does not lower the peak; best() is
// the best call of the run (a vector unit does not drift, unlike the memory bus).
struct VectorPeak {
  long reps = 1L << 19;
  std::vector<double> rates;  // multiply-adds per second, one entry per call
  void operator()() {
    double sum = 0;
#pragma omp parallel reduction(+ : sum)
    {
      alignas(64) float acc[128];
      for (int j = 0; j < 128; ++j) acc[j] = 1.0f + 1e-3f * float(j);
      const double t0 = now();
      scanshard::vector_loops::fma_lanes128(acc, reps, 0.999f, 1e-3f);
      sum += 128.0 * double(reps) / (now() - t0);
      if (acc[0] == 12345.0f) std::printf(" ");  // keep the result alive
    }
    rates.push_back(sum);
  }
  double best() const { return *std::max_element(rates.begin(), rates.end()); }
};

// What one call of a kernel must do at least: bytes through DRAM, and multiply-class vector
// lane operations (multiplies and multiply-adds, counted from the kernel's vector code per
// target; additions, comparisons, divisions and square roots run on other pipes and are not
// counted, so the vector bound is a lower bound on the time).
struct Work {
  double bytes, mul_ops;
};

// Own roofline = max(bytes at the triad bandwidth, mul_ops at the vector peak); the fraction
// achieved = roofline time / kernel time, per round. The bandwidth is the same round's triad (the
// shared memory bus drifts by tens of percent between seconds); the peak is VectorPeak::best().
struct OwnRoofline {
  double fraction, lo, hi;  // median and range over rounds
  const char* bound;        // the larger term over the median round: "memory" or "vector"
  double memory_share;      // memory term / vector term (median over rounds)
};
inline OwnRoofline own_roofline(const Work& w, const std::vector<double>& kernel_s, double triad_bytes,
                                const std::vector<double>& triad_s, double peak_lane_ops_per_s) {
  const double vec = w.mul_ops / peak_lane_ops_per_s;
  std::vector<double> f, mem_over_vec;
  for (std::size_t r = 0; r < kernel_s.size(); ++r) {
    const double mem = w.bytes / (triad_bytes / triad_s[r]);
    f.push_back(std::max(mem, vec) / kernel_s[r]);
    mem_over_vec.push_back(mem / vec);
  }
  const double share = median(mem_over_vec);
  return {median(f), *std::min_element(f.begin(), f.end()), *std::max_element(f.begin(), f.end()),
          share >= 1.0 ? "memory" : "vector", share};
}
inline void print_roofline(const char* kernel, const OwnRoofline& o, const std::string& isa) {
  std::printf("  %s own roofline: %s-bound (memory / vector time %.2f), achieved %.2f (%.2f-%.2f) %s\n", kernel,
              o.bound, o.memory_share, o.fraction, o.lo, o.hi, isa.c_str());
}

// One pass of the STREAM triad a = b + s·c (12 bytes per element moved).
inline void triad(float* a, const float* b, const float* c, long n) {
  const float s = 3.0f;
  #pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
}

}  // namespace bench
