// bench/bench_rwkv.cpp — RWKV kernels against baselines measured in the same run (never run by ctest):
//  1. STREAM triad (a = b + s·c, 12 B per element) and bare cblas_sgemm FLOP/s: the machine's
//     bandwidth and GEMM ceilings, at 1 and all threads;
//  2. WKV-4: fast vs reference speedup; bandwidth vs triad (forward moves 12 B per element: k, v
//     read, y written; backward 28 B: k, v, dy read, dk, dv read + written). Goal ≥ 0.85 of triad;
//  3. WKV-6: sequential reference vs the chunked fast kernel at chunk 1 (per-token form) … 128,
//     round-robin: speedup per round (median and worst), nominal FLOP/s (4N² per token and head
//     forward, the sequential count, 8N² backward + recompute) vs sgemm, and the own roofline —
//     for head size 64 (compile-time head size path) and 48, 40 (runtime head size path) in the
//     same rounds, with the runtime / compile-time ratio of their own-roofline fractions;
//  WKV-6 forward also prints its fraction of the chunked algorithm's own multiply-class operation
//  count at the FMA peak (kernels/rwkv6_count.hpp wkv6_forward_mul_ops: the score form's or the tiled
//  recurrence's, whichever the head size runs; not the roofline).
//  Every kernel also prints its own roofline: max(bytes at the same-run triad, multiply-class
//  vector work at the same-run FMA peak of the dispatched target; bench_util.hpp) and the bound.
//  An RWKV-6 layer's training step (through the executor, against its GEMMs' bare sgemm):
//  bench_layer_step.cpp.
// Not for: correctness (tests/kernels).
// Usage: bench_rwkv [quick] [wkv4] [wkv6] [t1]  (quick = smaller sizes; naming sections runs
// only those; t1 = the 1-thread pass only). SCANSHARD_BENCH_SIMD=AVX2 pins the target.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv6_count.hpp"
#include "bench_util.hpp"

namespace k = scanshard::kernels;
using k::i64;

namespace {

using bench::best_of;
using bench::now;

std::vector<float> filled(i64 n, float a, float b, unsigned seed) {
  std::vector<float> v(static_cast<size_t>(n));
  unsigned s = seed;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = a + b * (float(s >> 8) / float(1u << 24) - 0.5f);
  }
  return v;
}

double triad_gbs(i64 n) {
  std::vector<float> a(static_cast<size_t>(n)), b = filled(n, 1, 1, 1), c = filled(n, 1, 1, 2);
  const double t = best_of(5, [&] {
    const float s = 3.0f;
#pragma omp parallel for simd schedule(static)
    for (i64 i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
  });
  return 12.0 * double(n) / t / 1e9;
}

double sgemm_gflops(i64 n) {
  auto a = filled(n * n, 0, 1, 3), b = filled(n * n, 0, 1, 4);
  std::vector<float> c(static_cast<size_t>(n * n));
  const double t = best_of(3, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(n), int(n), 1.0f, a.data(), int(n), b.data(),
                int(n), 0.0f, c.data(), int(n));
  });
  return 2.0 * double(n) * n * n / t / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, one_thread = false;
  std::vector<std::string> sections;
  for (int a = 1; a < argc; ++a) {
    const std::string w = argv[a];
    if (w == "quick") quick = true;
    else if (w == "t1") one_thread = true;
    else if (w == "wkv4" || w == "wkv6") sections.push_back(w);
    else {
      std::fprintf(stderr, "bench_rwkv: unknown argument '%s' (quick, wkv4, wkv6, t1)\n", w.c_str());
      return 2;
    }
  }
  auto want = [&](const char* sec) { return sections.empty() || std::find(sections.begin(), sections.end(), sec) != sections.end(); };
  const i64 n_triad = quick ? (i64(1) << 22) : (i64(1) << 24);
  const i64 B4 = quick ? 2 : 8, T4 = 1024, D4 = 2048;            // WKV-4: 16.8M elements, 67 MB per array
  const i64 B6 = quick ? 1 : 2, T6 = 1024, D6 = 768, N6 = 64;     // WKV-6: 12 heads of 64
  const std::string isa = bench::simd_isa();
  std::printf("bench_rwkv%s; kernels dispatched to %s\n", quick ? " (quick)" : "", isa.c_str());
  std::vector<int> thread_counts = {1};
  if (!one_thread && omp_get_num_procs() > 1) thread_counts.push_back(omp_get_num_procs());
  for (int th : thread_counts) {
    omp_set_num_threads(th);
    // 1 thread: rounds timed in thread CPU time (neighbours on the shared cores do not stretch
    // one kernel's round and not the triad's); more threads: wall time
    double (*clock)() = th == 1 ? bench::thread_cpu_s : bench::now;
    std::printf("\n=== %d thread(s), rounds timed in %s ===\n", th, th == 1 ? "thread CPU time" : "wall time");
    const double triad = triad_gbs(n_triad), gemm = sgemm_gflops(quick ? 512 : 1024);
    std::printf("STREAM triad: %.2f GB/s; sgemm: %.1f GFLOP/s\n", triad, gemm);

    // ── WKV-4 ──
    if (want("wkv4")) {
      const i64 n = B4 * T4 * D4;
      auto kk = filled(n, 0, 4, 40), vv = filled(n, 0, 2, 41), dy = filled(n, 0, 1, 42);
      auto decay = filled(D4, -1, 2, 43), bonus = filled(D4, 0, 1, 44);
      std::vector<float> y(static_cast<size_t>(n)), dk(static_cast<size_t>(n)), dv(static_cast<size_t>(n)), dd(static_cast<size_t>(D4)), du(static_cast<size_t>(D4));
      // triad (a = b + s·c over the same element count), forward, backward: round-robin, and the
      // ratios per round (bench_util.hpp: best-of timings let one lucky triad set the denominator)
      std::vector<float> ta(static_cast<size_t>(n)), tb_ = filled(n, 1, 1, 45), tc = filled(n, 1, 1, 46);
      bench::VectorPeak peak;
      std::vector<float> ck(static_cast<size_t>(k::wkv4_checkpoint_floats(B4, T4, D4)));
      const double ck_b = 4.0 * double(ck.size()) / double(n);  // checkpoint bytes per element
      std::vector<std::function<void()>> fns = {
          [&] {
            const float s = 3.0f;
#pragma omp parallel for simd schedule(static)
            for (i64 i = 0; i < n; ++i) ta[i] = tb_[i] + s * tc[i];
          },
          [&] {
            k::fast::wkv4_forward(y.data(), nullptr, kk.data(), vv.data(), decay.data(), bonus.data(), nullptr, B4, T4,
                                  D4);
          },
          [&] {
            k::fast::wkv4_backward(dk.data(), dv.data(), dd.data(), du.data(), nullptr, dy.data(), nullptr, kk.data(),
                                   vv.data(), decay.data(), bonus.data(), nullptr, B4, T4, D4);
          },
          std::ref(peak),
          // the same pair with the forward's checkpoints (k, v streamed once by the backward)
          [&] {
            k::fast::wkv4_forward(y.data(), nullptr, kk.data(), vv.data(), decay.data(), bonus.data(), nullptr, B4, T4,
                                  D4, ck.data());
          },
          [&] {
            k::fast::wkv4_backward(dk.data(), dv.data(), dd.data(), du.data(), nullptr, dy.data(), nullptr, kk.data(),
                                   vv.data(), decay.data(), bonus.data(), nullptr, B4, T4, D4, ck.data());
          }};
      const auto t = bench::rounds(quick ? 3 : 7, fns, clock);
      std::vector<double> ratio_f, ratio_b;
      for (std::size_t r = 0; r < t[0].size(); ++r) {
        ratio_f.push_back(t[0][r] / t[1][r]);               // 12 B per element both
        ratio_b.push_back(28.0 / 12.0 * t[0][r] / t[2][r]);  // 28 B against 12 B
      }
      const double tf = bench::median(t[1]), tb = bench::median(t[2]);
      const double rf = best_of(1, [&] {
        k::ref::wkv4_forward<float>(y.data(), nullptr, kk.data(), vv.data(), decay.data(), bonus.data(), nullptr, B4,
                                    T4, D4);
      });
      const double rb = best_of(1, [&] {
        k::ref::wkv4_backward<float>(dk.data(), dv.data(), dd.data(), du.data(), nullptr, dy.data(), nullptr,
                                     kk.data(), vv.data(), decay.data(), bonus.data(), nullptr, B4, T4, D4);
      });
      const double bwf = 12.0 * n / tf / 1e9, bwb = 28.0 * n / tb / 1e9;
      std::printf("WKV-4 B=%ld T=%ld D=%ld\n", long(B4), long(T4), long(D4));
      std::printf("  forward : fast %.1f ms, reference %.1f ms, speedup %.1fx; %.2f GB/s = %.2f of triad (median of per-round ratios) %s\n",
                  tf * 1e3, rf * 1e3, rf / tf, bwf, bench::median(ratio_f), isa.c_str());
      std::printf("  backward: fast %.1f ms, reference %.1f ms, speedup %.1fx; %.2f GB/s = %.2f of triad (median of per-round ratios) %s\n",
                  tb * 1e3, rb * 1e3, rb / tb, bwb, bench::median(ratio_b), isa.c_str());
      std::printf("  vector peak %.1f G multiply-adds/s (best FMA-loop call, threads timed separately, %s)\n", peak.best() / 1e9,
                  isa.c_str());
      // multiply-class vector work per element, counted from kernels/rwkv4.cpp (on AVX3 each 2^y
      // has one vscalefps more): forward LazyCol 12 (x 1, 2^y 1 + 5, rescale 2, E 1, y 1, a 1);
      // backward 44 on every target = two state steps of 10 (pass 1 and the segment's recompute:
      // ScaledPair 7 — below AVX-512 its log2 e product folds into two multiply-adds of the range
      // reduction, on AVX3 a multiply and vscalefps — state 3) + AdjointStep 24 (one ScaledPair 7:
      // the other pair is the one the segment's state step kept; gk 2, gv 1, dw 3, da db 2,
      // 1/den 1, y 3, gz 1, 4 products)
      const bool avx3 = isa == "AVX3";
      const bench::Work wf{12.0 * n, (avx3 ? 13.0 : 12.0) * n}, wb{28.0 * n, 44.0 * n};
      bench::print_roofline("forward ", bench::own_roofline(wf, t[1], 12.0 * n, t[0], peak.best()), isa);
      bench::print_roofline("backward", bench::own_roofline(wb, t[2], 12.0 * n, t[0], peak.best()), isa);
      // with checkpoints: the forward writes ck_b bytes more per element, the backward reads them
      // and skips pass 1 (one state step of 10 multiply-class ops fewer)
      const bench::Work wfc{(12.0 + ck_b) * n, wf.mul_ops}, wbc{(28.0 + ck_b) * n, 34.0 * n};
      bench::print_roofline("forward +ckpt ", bench::own_roofline(wfc, t[4], 12.0 * n, t[0], peak.best()), isa);
      bench::print_roofline("backward +ckpt", bench::own_roofline(wbc, t[5], 12.0 * n, t[0], peak.best()), isa);
      std::vector<double> pair_ratio;  // (forward + backward) time without / with checkpoints, per round
      for (std::size_t r = 0; r < t[0].size(); ++r) pair_ratio.push_back((t[1][r] + t[2][r]) / (t[4][r] + t[5][r]));
      std::printf("  checkpoints (%.2f B/element): forward %.1f -> %.1f ms, backward %.1f -> %.1f ms; forward+backward "
                  "speedup %.2fx (median; range %.2f-%.2f over rounds) %s\n",
                  ck_b, tf * 1e3, bench::median(t[4]) * 1e3, tb * 1e3, bench::median(t[5]) * 1e3,
                  bench::median(pair_ratio), *std::min_element(pair_ratio.begin(), pair_ratio.end()),
                  *std::max_element(pair_ratio.begin(), pair_ratio.end()), isa.c_str());
      // compute ceiling: B = 1 slices of 16 and 8 tokens that stay in L2; the difference per
      // element is the kernel's in-cache cost, against the DRAM budget the goal allows
      auto bwd_at = [&](i64 Tc) {
        return bench::best_of(100, [&] {
          k::fast::wkv4_backward(dk.data(), dv.data(), dd.data(), du.data(), nullptr, dy.data(), nullptr, kk.data(),
                                 vv.data(), decay.data(), bonus.data(), nullptr, 1, Tc, D4);
        }, clock);
      };
      auto fwd_at = [&](i64 Tc) {
        return bench::best_of(100, [&] {
          k::fast::wkv4_forward(y.data(), nullptr, kk.data(), vv.data(), decay.data(), bonus.data(), nullptr, 1, Tc,
                                D4);
        }, clock);
      };
      const double ns_b = (bwd_at(32) - bwd_at(16)) / double(16 * D4) * 1e9;
      const double ns_f = (fwd_at(32) - fwd_at(16)) / double(16 * D4) * 1e9;
      const double ns_triad = 1e9 * bench::median(t[0]) / double(n);  // per element, 12 B
      std::printf("  forward in cache: %.2f ns/element; 0.85 of triad allows %.2f ns/element for its 12 B\n", ns_f,
                  ns_triad / 0.85);
      std::printf("  backward in cache: %.2f ns/element; 0.85 of triad allows %.2f ns/element for its 28 B\n", ns_b,
                  ns_triad * 28.0 / 12.0 / 0.85);
    }
    // ── WKV-6 ──
    // Head sizes in one round-robin: 64 (the compile-time head size path, like 32) and 48, 40 (the
    // runtime head size path; 40 leaves a partial vector on AVX-512), all at D ≈ 768.
    if (want("wkv6")) {
      struct Head {
        i64 N = 0, H = 0, D = 0, n = 0;
        std::vector<float> r, kk, vv, dy, lw, u, y, dr, dk, dv, dlw, du;
        double flop_f = 0, flop_b = 0;
      };
      std::vector<Head> heads;
      for (i64 N : {N6, i64(48), i64(40)}) {
        Head h;
        h.N = N, h.H = D6 / N, h.D = h.H * N, h.n = B6 * T6 * h.D;
        const i64 n = h.n, D = h.D;
        h.r = filled(n, 0, 1, 50), h.kk = filled(n, 0, 1, 51), h.vv = filled(n, 0, 1, 52), h.dy = filled(n, 0, 1, 53);
        h.lw = filled(n, -0.3f, 0.5f, 54), h.u = filled(D, 0, 1, 55);
        for (auto& x : h.lw) x = std::min(x, -1e-3f);  // log w ∈ [−0.55, −0.05]: w ∈ [0.58, 0.95]
        for (auto* x : {&h.y, &h.dr, &h.dk, &h.dv, &h.dlw}) x->assign(static_cast<size_t>(n), 0.0f);
        h.du.assign(static_cast<size_t>(D), 0.0f);
        h.flop_f = 4.0 * B6 * T6 * h.H * N * N, h.flop_b = 8.0 * B6 * T6 * h.H * N * N + h.flop_f;
        heads.push_back(std::move(h));
      }
      // round-robin: triad, FMA peak, then per head size the sequential reference and the chunked
      // kernel at every chunk size, forward and backward; speedups and roofline fractions per round
      const i64 n_max = heads[0].n;
      std::vector<float> ta(static_cast<size_t>(n_max)), tb_ = filled(n_max, 1, 1, 56), tc = filled(n_max, 1, 1, 57);
      bench::VectorPeak peak;
      const std::vector<i64> chunks = {1, 2, 4, 8, 16, 32, 64, 128};
      std::vector<std::function<void()>> fns = {
          [&] {
            const float s = 3.0f;
#pragma omp parallel for simd schedule(static)
            for (i64 i = 0; i < n_max; ++i) ta[i] = tb_[i] + s * tc[i];
          },
          std::ref(peak)};
      for (Head& h : heads) {
        fns.push_back([&] {
          k::ref::wkv6_forward<float>(h.y.data(), nullptr, h.r.data(), h.kk.data(), h.vv.data(), h.lw.data(), h.u.data(),
                                      nullptr, B6, T6, h.H, h.N);
        });
        fns.push_back([&] {
          k::ref::wkv6_backward<float>(h.dr.data(), h.dk.data(), h.dv.data(), h.dlw.data(), h.du.data(), nullptr,
                                       h.dy.data(), nullptr, h.r.data(), h.kk.data(), h.vv.data(), h.lw.data(),
                                       h.u.data(), nullptr, B6, T6, h.H, h.N);
        });
        for (i64 chunk : chunks) {
          fns.push_back([&, chunk] {
            k::fast::wkv6_forward(h.y.data(), nullptr, h.r.data(), h.kk.data(), h.vv.data(), h.lw.data(), h.u.data(),
                                  nullptr, B6, T6, h.H, h.N, chunk);
          });
          fns.push_back([&, chunk] {
            k::fast::wkv6_backward(h.dr.data(), h.dk.data(), h.dv.data(), h.dlw.data(), h.du.data(), nullptr,
                                   h.dy.data(), nullptr, h.r.data(), h.kk.data(), h.vv.data(), h.lw.data(), h.u.data(),
                                   nullptr, B6, T6, h.H, h.N, chunk);
          });
        }
      }
      const auto t = bench::rounds(quick ? 2 : 3, fns, clock);
      std::printf("WKV-6 B=%ld T=%ld, head sizes in one round-robin; vector peak %.1f G multiply-adds/s (best FMA-loop "
                  "call, threads timed separately, %s)\n",
                  long(B6), long(T6), peak.best() / 1e9, isa.c_str());
      const std::size_t per_head = 2 + 2 * chunks.size();
      std::vector<std::vector<double>> frac_f(heads.size()), frac_b(heads.size());  // median own-roofline fractions
      for (std::size_t hi = 0; hi < heads.size(); ++hi) {
        const Head& h = heads[hi];
        const std::size_t o = 2 + hi * per_head;
        const double flop_f = h.flop_f, flop_b = h.flop_b;
        std::printf(" H=%ld N=%ld%s (nominal %.2f GFLOP fwd, %.2f GFLOP bwd)\n", long(h.H), long(h.N),
                    h.N == 32 || h.N == 64 ? " (compile-time head size)" : " (runtime head size)", flop_f / 1e9,
                    flop_b / 1e9);
        const double rf = bench::median(t[o]), rb = bench::median(t[o + 1]);
        std::printf("  reference (sequential): fwd %.1f ms = %.2f GFLOP/s (%.3f of sgemm), bwd %.1f ms = %.2f GFLOP/s\n",
                    rf * 1e3, flop_f / rf / 1e9, flop_f / rf / 1e9 / gemm, rb * 1e3, flop_b / rb / 1e9);
        // own roofline: bytes (forward r, k, v, log w read, y written = 20 B per element; backward
        // r, k, v, log w, dy read and dr, dk, dv, dlog w accumulated = 52 B) at the triad, and the
        // nominal FLOPs (the sequential count: one multiply-add per 2 FLOPs) at the FMA peak
        const bench::Work wf{20.0 * h.n, flop_f / 2}, wb{52.0 * h.n, flop_b / 2};
        for (std::size_t c = 0; c < chunks.size(); ++c) {
          const auto& tf = t[o + 2 + 2 * c];
          const auto& tb = t[o + 3 + 2 * c];
          std::vector<double> sf, sb;  // per-round speedups over the reference
          for (std::size_t q = 0; q < tf.size(); ++q) {
            sf.push_back(t[o][q] / tf[q]);
            sb.push_back(t[o + 1][q] / tb[q]);
          }
          const double mf = bench::median(tf), mb = bench::median(tb);
          std::printf("  fast chunk %3ld: fwd %.2f ms = %.2f GFLOP/s (%.3f of sgemm), speedup %.1fx (min %.1fx) | "
                      "bwd %.2f ms = %.2f GFLOP/s, speedup %.1fx (min %.1fx) %s\n",
                      long(chunks[c]), mf * 1e3, flop_f / mf / 1e9, flop_f / mf / 1e9 / gemm, bench::median(sf),
                      *std::min_element(sf.begin(), sf.end()), mb * 1e3, flop_b / mb / 1e9, bench::median(sb),
                      *std::min_element(sb.begin(), sb.end()), isa.c_str());
          const auto of = bench::own_roofline(wf, tf, 12.0 * n_max, t[0], peak.best());
          const auto ob = bench::own_roofline(wb, tb, 12.0 * n_max, t[0], peak.best());
          bench::print_roofline("  fwd", of, isa);
          bench::print_roofline("  bwd", ob, isa);
          // not the roofline: the own multiply-class count of the chunk form the forward
          // runs at this head size (kernels/rwkv6_count.hpp) at the FMA peak, chunks run as
          // ≥ kWkv6MinChunk tokens
          const i64 L = std::max(chunks[c], k::kWkv6MinChunk);
          const double ops = k::wkv6_forward_mul_ops(h.N, L);
          const auto oc = bench::own_roofline({0.0, ops * double(B6 * T6 * h.H)}, tf, 12.0 * n_max, t[0], peak.best());
          std::printf("    fwd against the %s form's own multiply-class count (%.0f per token and head at L=%ld, "
                      "%.2fx the roofline's 2N^2) at the FMA peak: achieved %.2f (%.2f-%.2f) %s\n",
                      k::wkv6_forward_tiled(h.N) ? "tiled" : "score", ops, long(L), ops / (2.0 * h.N * h.N), oc.fraction,
                      oc.lo, oc.hi, isa.c_str());
          frac_f[hi].push_back(of.fraction);
          frac_b[hi].push_back(ob.fraction);
        }
      }
      std::printf(" runtime / compile-time head size, own roofline fraction fwd / bwd (N=%ld the reference), %s:\n",
                  long(heads[0].N), isa.c_str());
      for (std::size_t hi = 1; hi < heads.size(); ++hi) {
        std::printf("  N=%ld:", long(heads[hi].N));
        for (std::size_t c = 0; c < chunks.size(); ++c)
          std::printf(" c%ld %.2f/%.2f", long(chunks[c]), frac_f[hi][c] / frac_f[0][c], frac_b[hi][c] / frac_b[0][c]);
        std::printf("\n");
      }
    }
  }
  return 0;
}
