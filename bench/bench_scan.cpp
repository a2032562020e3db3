// bench/bench_scan.cpp — memory bandwidth of the fused RG-LRU scan (forward and backward)
// against a STREAM triad measured in the same run, at 1 and all threads.
//
// Bytes that must move per element (fp32): forward reads x, ga, gx and writes y = 16 B;
// backward reads dy, y (h_{t−1}), x, ga, gx, reads+writes dx (accumulated), writes dga, dgx
// = 36 B. Triad a = b + s·c counts 12 B per element (STREAM convention). Goal: ratio ≥ 0.85, or
// ≥ 0.9 of the kernel's own roofline: max(bytes at the triad, multiply-class vector work at the
// same run's FMA peak of the dispatched target; bench_util.hpp) — printed with the bound.
// Vector work per element, counted from kernels/rglru.cpp (mul + multiply-add lane ops). Below
// AVX-512 every 2^y is 7 (its argument's product folded into two multiply-adds of the range
// reduction, 5 for the polynomial); on AVX3 also 7 (the product, 5, vscalefps). Divisions are not
// counted (σ = 1/(1 + e^{−x}) each, and the forward's σ(gx)·x = x/(1 + e^{−gx}) below AVX-512).
// Forward: AVX2 24 = σ pair 14 (two 2^y) + decay 7 + √(1 − a²) 1 + h update 2 (Π ā is a sum of
// r: no multiply); AVX3 25 (σ(gx)·x one multiply more). Backward, both: 36 = σ pair and decay 21 +
// 1 − a² 1 + i x 1 + q 1 + dlog_a 2 + dlog_sum 1 + dga 3 + dh m 1 + dgx 3 + dx 1 + carry 1.
// Arrays are 64-byte aligned (kernels::AlignedVec, as the runner's), so the backward streams
// dga, dgx out; it is also timed with ordinary stores for the same-run comparison.
// Not for: correctness (tests/kernels) or GEMM speed (bench_gemm).
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "bench_util.hpp"
#include "kernels/rglru.hpp"

namespace k = scanshard::kernels;
using k::i64;

int main(int argc, char** argv) {
  const i64 B = 8, T = 2048, R = argc > 1 ? std::atol(argv[1]) : 1024;  // 16.8M elements, 67 MB per array
  const i64 n = B * T * R;
  const std::string isa = bench::simd_isa();
  std::printf("bench_scan: B=%ld T=%ld R=%ld (%.1f MB per [B,T,R] array); kernels dispatched to %s\n", long(B), long(T),
              long(R), n * 4.0 / 1e6, isa.c_str());
  using AV = k::AlignedVec;
  AV a(n), b(n), c(n);
  AV x(n), ga(n), gx(n), y(n), dy(n), dx(n), dga(n), dgx(n), lambda(R), hout(B * R), dec(B * R),
      dl(R), dhin(B * R);  // 64-byte aligned: the backward streams dga, dgx out when it may
  #pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; ++i) {
    a[i] = 0; b[i] = 1.0f + float(i % 7); c[i] = 0.5f;
    x[i] = float(i % 13) * 0.1f - 0.6f; ga[i] = float(i % 5) * 0.3f - 0.6f; gx[i] = float(i % 3) * 0.4f - 0.4f;
    y[i] = 0; dy[i] = 0.01f * float(i % 11); dx[i] = 0; dga[i] = 0; dgx[i] = 0;
  }
  for (i64 r = 0; r < R; ++r) lambda[r] = -2.0f + 4.0f * float(r) / float(R);
  for (int th : bench::thread_counts()) {
    bench::set_threads(th);
    // triad, forward, backward, backward with ordinary stores, the FMA peak: round-robin, ratios per round
    bench::VectorPeak peak;
    std::vector<std::function<void()>> fns = {
        [&] {
          const float s = 3.0f;
          #pragma omp parallel for simd schedule(static)
          for (i64 i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
        },
        [&] {
          k::fast::rglru_scan_forward(y.data(), hout.data(), dec.data(), x.data(), ga.data(), gx.data(), nullptr,
                                      nullptr, lambda.data(), B, T, R);
        },
        [&] {
          k::fast::rglru_scan_backward(dx.data(), dga.data(), dgx.data(), dhin.data(), dl.data(), dy.data(), nullptr,
                                       y.data(), x.data(), ga.data(), gx.data(), nullptr, nullptr, lambda.data(), B,
                                       T, R);
        },
        [&] {  // dga, dgx with ordinary stores (the path below kStreamMinBytes)
          k::fast::rglru_scan_backward(dx.data(), dga.data(), dgx.data(), dhin.data(), dl.data(), dy.data(), nullptr,
                                       y.data(), x.data(), ga.data(), gx.data(), nullptr, nullptr, lambda.data(), B,
                                       T, R, /*stream_min_bytes=*/i64(1) << 62);
        },
        std::ref(peak)};
    const auto t = bench::rounds(9, fns);
    const double bytes[4] = {12.0 * n, 16.0 * n, 36.0 * n, 36.0 * n};
    std::vector<double> ratio[4];
    for (std::size_t r = 0; r < t[0].size(); ++r)
      for (int f = 1; f < 4; ++f) ratio[f].push_back(bytes[f] / t[f][r] / (bytes[0] / t[0][r]));
    auto gbs = [&](int f) { return bytes[f] / bench::median(t[f]) / 1e9; };
    auto lo = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
    auto hi = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
    const double t_triad = bench::median(t[0]);
    std::printf("threads %d: medians of 9 rounds: triad %.1f GB/s | scan fwd %.1f GB/s ratio %.2f (%.2f-%.2f) %s | "
                "scan bwd %.1f GB/s ratio %.2f (%.2f-%.2f) %s\n",
                th, gbs(0), gbs(1), bench::median(ratio[1]), lo(ratio[1]), hi(ratio[1]), isa.c_str(), gbs(2),
                bench::median(ratio[2]), lo(ratio[2]), hi(ratio[2]), isa.c_str());
    std::printf("threads %d: scan bwd with ordinary stores for dga, dgx %.1f GB/s ratio %.2f (%.2f-%.2f) %s\n", th,
                gbs(3), bench::median(ratio[3]), lo(ratio[3]), hi(ratio[3]), isa.c_str());
    std::printf("threads %d: vector peak %.1f G multiply-adds/s (best FMA-loop call, threads timed separately, %s)\n", th,
                peak.best() / 1e9, isa.c_str());
    const bool avx3 = isa == "AVX3";
    const double fwd_ops = avx3 ? 25.0 : 24.0, bwd_ops = 36.0;
    const bench::Work work[4] = {{}, {16.0 * n, fwd_ops * n}, {36.0 * n, bwd_ops * n}, {36.0 * n, bwd_ops * n}};
    const char* names[4] = {"", "scan fwd", "scan bwd", "scan bwd, ordinary stores,"};
    for (int f = 1; f < 4; ++f)
      bench::print_roofline(names[f], bench::own_roofline(work[f], t[f], bytes[0], t[0], peak.best()),
                            isa);
    // compute ceiling: the same kernels on B = 1 slices that stay in L2 (9 rows of R floats per
    // token: 16 tokens of R = 1024 are 0.6 MB); the per-element time is the difference between
    // T = 16 and T = 8 (removes the per-call setup), divided by 8·R.
    auto fwd_at = [&](i64 Tc) {
      return bench::best_of(200, [&] {
        k::fast::rglru_scan_forward(y.data(), hout.data(), dec.data(), x.data(), ga.data(), gx.data(), nullptr, nullptr,
                                    lambda.data(), 1, Tc, R);
      });
    };
    auto bwd_at = [&](i64 Tc) {
      return bench::best_of(200, [&] {
        k::fast::rglru_scan_backward(dx.data(), dga.data(), dgx.data(), dhin.data(), dl.data(), dy.data(), nullptr,
                                     y.data(), x.data(), ga.data(), gx.data(), nullptr, nullptr, lambda.data(), 1, Tc, R);
      });
    };
    const double ns_f = (fwd_at(16) - fwd_at(8)) / double(8 * R) * 1e9;
    const double ns_b = (bwd_at(16) - bwd_at(8)) / double(8 * R) * 1e9;
    const double ns_triad = 1e9 * t_triad / double(n);  // per element, 12 B
    std::printf("threads %d: in-cache scan fwd %.2f ns/element, bwd %.2f ns/element; at the triad bandwidth the "
                "DRAM traffic alone takes fwd %.2f, bwd %.2f ns/element\n",
                th, ns_f, ns_b, ns_triad * 16.0 / 12.0, ns_triad * 36.0 / 12.0);
  }
  return 0;
}
