// tests/kernels/helpers.hpp — shared test utilities for kernels/: seeded random tensors, float ↔
// double copies, worst-case error against a tolerance, central finite differences in double, and
// a loop that runs a test body on every SIMD target of this CPU.
// Not for: expected values — every test derives those from a reference loop or finite differences.
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/simd.hpp"

namespace kt {

using i64 = std::int64_t;

inline std::vector<float> randn(i64 n, unsigned seed, float scale = 1.0f, float shift = 0.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = shift + scale * nd(g);
  return v;
}

inline std::vector<double> to_d(const std::vector<float>& v) { return {v.begin(), v.end()}; }
inline std::vector<float> to_f(const std::vector<double>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = float(v[i]);
  return r;
}

// Worst |a − e| / (atol + rtol·|e|) over all elements (≤ 1 means every element is within
// tolerance) together with the max absolute error, for the failure message.
struct Err {
  double worst = 0, max_abs = 0;
  i64 at = -1;
};
template <class A, class E>
Err compare(const A& a, const E& e, double atol, double rtol) {
  REQUIRE(a.size() == e.size());
  Err r;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(e[i]));
    if (!(d == d)) return {1e300, 1e300, i64(i)};  // NaN fails
    const double w = d / (atol + rtol * std::fabs(double(e[i])));
    r.max_abs = std::max(r.max_abs, d);
    if (w > r.worst) { r.worst = w; r.at = i64(i); }
  }
  return r;
}

#define KT_CHECK_CLOSE(actual, expected, atol, rtol)                                           \
  do {                                                                                         \
    const auto kt_err_ = ::kt::compare((actual), (expected), (atol), (rtol));                  \
    INFO(#actual " vs " #expected ": max abs err " << kt_err_.max_abs << ", worst ratio "      \
         << kt_err_.worst << " at " << kt_err_.at);                                            \
    CHECK(kt_err_.worst <= 1.0);                                                               \
  } while (0)

// Indices to probe: all of them when n ≤ max_n, otherwise first, last and random ones.
inline std::vector<i64> sample_indices(i64 n, i64 max_n, unsigned seed) {
  std::vector<i64> idx;
  if (n <= max_n) {
    for (i64 i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  std::mt19937 g(seed);
  std::uniform_int_distribution<i64> u(0, n - 1);
  idx.push_back(0);
  idx.push_back(n - 1);
  while (i64(idx.size()) < max_n) idx.push_back(u(g));
  return idx;
}

// Central finite differences of the scalar loss() w.r.t. x[i] for i in idx (x is perturbed and
// restored): g_i = (L(x + h e_i) − L(x − h e_i)) / 2h. Full vector, zeros where not probed.
template <class Loss>
std::vector<double> fd_grad(std::vector<double>& x, const std::vector<i64>& idx, Loss&& loss,
                            double h = 1e-6) {
  std::vector<double> g(x.size(), 0.0);
  for (i64 i : idx) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

// Pick the probed entries of a gradient (so it can be compared with fd_grad's output).
template <class V>
std::vector<double> pick(const V& v, const std::vector<i64>& idx) {
  std::vector<double> r(v.size(), 0.0);
  for (i64 i : idx) r[i] = double(v[i]);
  return r;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The SIMD target the command line pinned for the whole run (main.cpp `--simd-target`); empty
// when none was given.
inline std::string& command_line_simd_target() {
  static std::string name;
  return name;
}

// body() once per SIMD target this CPU supports, with the dispatched kernels pinned to it (INFO
// names it), then the target in force before is restored — also when a REQUIRE throws. So every
// fast-vs-reference test checks the AVX2 and SSE4 code on an AVX-512 machine. When the command
// line pinned a target (ctest runs the scan suites once per target), only that one runs.
template <class Body>
void on_every_simd_target(Body&& body) {
  namespace simd = scanshard::kernels::simd;
  if (!command_line_simd_target().empty()) {
    INFO("target " << simd::current_target() << " (pinned on the command line)");
    body();
    return;
  }
  struct Restore {
    std::string before = simd::current_target();
    ~Restore() { simd::pin_target(before); }
  } restore;
  for (const auto& t : simd::targets()) {
    simd::pin_target(t.bit);
    INFO("target " << t.name);
    REQUIRE(simd::current_target() == t.name);
    body();
  }
}

}  // namespace kt
