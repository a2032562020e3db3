// bench/bench_rwkv.cpp — RWKV kernels against baselines measured in the same run (never run by ctest):
//  1. STREAM triad (a = b + s·c, 12 B per element) and bare cblas_sgemm FLOP/s: the machine's
//     bandwidth and GEMM ceilings, at 1 and all threads;
//  2. WKV-4: fast vs reference speedup; bandwidth vs triad (forward moves 12 B per element: k, v
//     read, y written; backward 28 B: k, v, dy read, dk, dv read + written). Goal ≥ 0.85 of triad;
//  3. WKV-6: sequential reference vs the chunked fast kernel at chunk 1 (per-token form) … 128,
//     round-robin: speedup per round (median and worst), nominal FLOP/s (4N² per token and head
//     forward, the sequential count, 8N² backward + recompute) vs sgemm, and the own roofline;
//  Every kernel also prints its own roofline: max(bytes at the same-run triad, multiply-class
//  vector work at the same-run FMA peak of the dispatched target; bench_util.hpp) and the bound.
//  4. one full RWKV-6 layer training step (LN, time mix with LoRAs, WKV-6, GroupNorm, channel mix,
//     forward + backward) at B·T = 1024 tokens, D = 768: tokens/s and the per-op breakdown.
// Not for: correctness (tests/kernels).
// Usage: bench_rwkv [quick] [wkv4] [wkv6] [layer] [t1]  (quick = smaller sizes; naming sections runs
// only those; t1 = the 1-thread pass only). SCANSHARD_BENCH_SIMD=AVX2 pins the target.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "kernels/layernorm.hpp"
#include "kernels/linear.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/rwkv_ops.hpp"
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

// ─── one RWKV-6 layer, forward + backward, with per-op timers ────────────────────────────────
struct Timers {
  std::map<std::string, double> t;
  template <class Fn>
  void run(const char* name, Fn&& f) {
    const double t0 = now();
    f();
    t[name] += now() - t0;
  }
};

void rwkv6_layer_step(i64 B, i64 T, i64 D, i64 N, i64 r, i64 rw, Timers& tm, int steps) {
  const i64 M = B * T, H = D / N, Fh = D * 7 / 2;
  auto W = [&](i64 n, unsigned s, float sc) { return filled(n, 0, sc, s); };
  // parameters
  auto ln1s = filled(D, 1, 0.1f, 10), ln1b = W(D, 11, 0.1f), ln2s = filled(D, 1, 0.1f, 12), ln2b = W(D, 13, 0.1f);
  auto mux = filled(D, 0.5f, 0.5f, 14), mu = filled(5 * D, 0.5f, 0.5f, 15);
  auto la = W(D * 5 * r, 16, 0.01f), lb = W(5 * r * D, 17, 0.01f), lam = filled(D, -1.5f, 1.0f, 18);
  auto da = W(D * rw, 19, 0.01f), db = W(rw * D, 20, 0.01f), u = W(D, 21, 0.5f);
  const float ws = 1.0f / std::sqrt(float(D));
  auto wr = W(D * D, 22, ws), wk = W(D * D, 23, ws), wv = W(D * D, 24, ws), wg = W(D * D, 25, ws),
       wo = W(D * D, 26, ws), gns = filled(D, 1, 0.1f, 27), gnb = W(D, 28, 0.1f);
  auto cmk = filled(D, 0.5f, 0.5f, 29), cmr = filled(D, 0.5f, 0.5f, 30), cwk = W(D * Fh, 31, ws),
       cwv = W(Fh * D, 32, 1.0f / std::sqrt(float(Fh))), cwr = W(D * D, 33, ws);
  auto x = W(M * D, 34, 1.0f), dyo = W(M * D, 35, 0.01f);
  // gradients (one buffer each, re-zeroed per step is not needed for timing)
  std::vector<float> g(size_t(std::max<i64>(D * Fh, D * D) * 2), 0.0f);
  auto V = [](i64 n) { return std::vector<float>(size_t(n), 0.0f); };
  auto n1 = V(M * D), m1 = V(M), r1 = V(M), xx = V(M * D), xxx = V(M * D), z = V(M * 5 * r), tz = V(M * 5 * r),
       mz = V(5 * M * D), xs = V(5 * M * D), dz = V(M * rw), dlt = V(M * rw), dd = V(M * D),
       lw = V(M * D), rr = V(M * D), kk = V(M * D), vv = V(M * D), gg = V(M * D), y = V(M * D), yn = V(M * D),
       gm = V(M * H), gr = V(M * H), o = V(M * D), t = V(M * D), x2 = V(M * D), n2 = V(M * D), m2 = V(M),
       r2 = V(M), cxk = V(M * D), cxr = V(M * D), ck = V(M * Fh), ch = V(M * Fh), cv = V(M * D), cr = V(M * D),
       co = V(M * D);
  auto d1 = V(M * D), d2 = V(M * D), d3 = V(M * D), d4 = V(M * D), d5 = V(M * D), dF1 = V(M * Fh),
       dF2 = V(M * Fh), dxs = V(5 * M * D), dmz = V(5 * M * D), dr5 = V(M * 5 * r), dtz = V(M * 5 * r),
       drw = V(M * rw), drw2 = V(M * rw), dgv = V(D), dgv2 = V(5 * D);
  for (int s = 0; s < steps; ++s) {
    // forward
    tm.run("layernorm", [&] { k::fast::layer_norm_forward(n1.data(), m1.data(), r1.data(), x.data(), ln1s.data(), ln1b.data(), M, D, 1e-5f); });
    tm.run("token shift + LoRA", [&] {
      k::fast::ddlerp_shift_forward(xx.data(), xxx.data(), n1.data(), nullptr, mux.data(), B, T, D);
      k::fast::linear_forward(z.data(), xxx.data(), la.data(), nullptr, M, D, 5 * r);
      k::fast::tanh_forward(tz.data(), z.data(), M * 5 * r);
      k::fast::grouped_linear_forward(mz.data(), tz.data(), lb.data(), M, 5, r, D);
      k::fast::ddlerp_mix_forward(xs.data(), n1.data(), xx.data(), mu.data(), mz.data(), 5, M, D);
      k::fast::linear_forward(dz.data(), xs.data(), da.data(), nullptr, M, D, rw);
      k::fast::tanh_forward(dlt.data(), dz.data(), M * rw);
      k::fast::linear_forward(dd.data(), dlt.data(), db.data(), nullptr, M, rw, D);
      k::fast::decay_forward(lw.data(), lam.data(), dd.data(), M, D);
    });
    tm.run("r k v g projections", [&] {
      k::fast::linear_forward(kk.data(), xs.data() + 1 * M * D, wk.data(), nullptr, M, D, D);
      k::fast::linear_forward(vv.data(), xs.data() + 2 * M * D, wv.data(), nullptr, M, D, D);
      k::fast::linear_forward(rr.data(), xs.data() + 3 * M * D, wr.data(), nullptr, M, D, D);
      k::fast::linear_forward(gg.data(), xs.data() + 4 * M * D, wg.data(), nullptr, M, D, D);
    });
    tm.run("WKV-6", [&] { k::fast::wkv6_forward(y.data(), nullptr, rr.data(), kk.data(), vv.data(), lw.data(), u.data(), nullptr, B, T, H, N); });
    tm.run("groupnorm + gate", [&] {
      k::fast::group_norm_forward(yn.data(), gm.data(), gr.data(), y.data(), gns.data(), gnb.data(), M, H, N, 64e-5f);
      k::fast::silu_mul_forward(o.data(), yn.data(), gg.data(), M * D);
    });
    tm.run("output projection", [&] { k::fast::linear_forward(t.data(), o.data(), wo.data(), nullptr, M, D, D); });
    tm.run("layernorm", [&] {
      for (i64 i = 0; i < M * D; ++i) x2[i] = x[i] + t[i];
      k::fast::layer_norm_forward(n2.data(), m2.data(), r2.data(), x2.data(), ln2s.data(), ln2b.data(), M, D, 1e-5f);
    });
    tm.run("channel mix", [&] {
      k::fast::token_shift_forward(cxk.data(), n2.data(), nullptr, cmk.data(), B, T, D);
      k::fast::token_shift_forward(cxr.data(), n2.data(), nullptr, cmr.data(), B, T, D);
      k::fast::linear_forward(ck.data(), cxk.data(), cwk.data(), nullptr, M, D, Fh);
      k::fast::relu_square_forward(ch.data(), ck.data(), M * Fh);
      k::fast::linear_forward(cv.data(), ch.data(), cwv.data(), nullptr, M, Fh, D);
      k::fast::linear_forward(cr.data(), cxr.data(), cwr.data(), nullptr, M, D, D);
      k::fast::sigmoid_mul_forward(co.data(), cr.data(), cv.data(), M * D);
    });
    // backward (gradients of weights go to a scratch buffer; dx into d1..d5)
    tm.run("channel mix", [&] {
      std::fill(d1.begin(), d1.end(), 0.f); std::fill(d2.begin(), d2.end(), 0.f);
      k::fast::sigmoid_mul_backward(d1.data(), d2.data(), dyo.data(), cr.data(), cv.data(), M * D);
      std::fill(d3.begin(), d3.end(), 0.f);
      k::fast::linear_backward(d3.data(), g.data(), nullptr, d1.data(), cxr.data(), cwr.data(), M, D, D);
      std::fill(dF1.begin(), dF1.end(), 0.f); std::fill(dF2.begin(), dF2.end(), 0.f);
      k::fast::linear_backward(dF1.data(), g.data(), nullptr, d2.data(), ch.data(), cwv.data(), M, Fh, D);
      k::fast::relu_square_backward(dF2.data(), dF1.data(), ck.data(), M * Fh);
      std::fill(d4.begin(), d4.end(), 0.f);
      k::fast::linear_backward(d4.data(), g.data(), nullptr, dF2.data(), cxk.data(), cwk.data(), M, D, Fh);
      std::fill(d5.begin(), d5.end(), 0.f);
      k::fast::token_shift_backward(d5.data(), nullptr, dgv.data(), d4.data(), n2.data(), nullptr, cmk.data(), B, T, D);
      k::fast::token_shift_backward(d5.data(), nullptr, dgv.data(), d3.data(), n2.data(), nullptr, cmr.data(), B, T, D);
    });
    tm.run("layernorm", [&] {
      std::copy(dyo.begin(), dyo.end(), d1.begin());
      k::fast::layer_norm_backward(d1.data(), dgv.data(), dgv.data(), d5.data(), m2.data(), r2.data(), x2.data(), ln2s.data(), M, D);
    });
    tm.run("output projection", [&] {
      std::fill(d2.begin(), d2.end(), 0.f);
      k::fast::linear_backward(d2.data(), g.data(), nullptr, d1.data(), o.data(), wo.data(), M, D, D);
    });
    tm.run("groupnorm + gate", [&] {
      std::fill(d3.begin(), d3.end(), 0.f); std::fill(d4.begin(), d4.end(), 0.f);
      k::fast::silu_mul_backward(d3.data(), d4.data(), d2.data(), yn.data(), gg.data(), M * D);
      std::fill(d5.begin(), d5.end(), 0.f);
      k::fast::group_norm_backward(d5.data(), dgv.data(), dgv.data(), d3.data(), gm.data(), gr.data(), y.data(), gns.data(), M, H, N);
    });
    std::fill(dxs.begin(), dxs.end(), 0.f);
    tm.run("WKV-6", [&] {
      std::fill(d2.begin(), d2.end(), 0.f); std::fill(d3.begin(), d3.end(), 0.f);
      std::fill(dxs.begin() + 0, dxs.begin() + M * D, 0.f);
      // dr → d2, dk → d3, dv → dmz[0], dlogw → dmz[1] (scratch)
      std::fill(dmz.begin(), dmz.begin() + 2 * M * D, 0.f);
      k::fast::wkv6_backward(d2.data(), d3.data(), dmz.data(), dmz.data() + M * D, dgv.data(), nullptr, d5.data(),
                             nullptr, rr.data(), kk.data(), vv.data(), lw.data(), u.data(), nullptr, B, T, H, N);
    });
    tm.run("r k v g projections", [&] {
      k::fast::linear_backward(dxs.data() + 3 * M * D, g.data(), nullptr, d2.data(), xs.data() + 3 * M * D, wr.data(), M, D, D);
      k::fast::linear_backward(dxs.data() + 1 * M * D, g.data(), nullptr, d3.data(), xs.data() + 1 * M * D, wk.data(), M, D, D);
      k::fast::linear_backward(dxs.data() + 2 * M * D, g.data(), nullptr, dmz.data(), xs.data() + 2 * M * D, wv.data(), M, D, D);
      k::fast::linear_backward(dxs.data() + 4 * M * D, g.data(), nullptr, d4.data(), xs.data() + 4 * M * D, wg.data(), M, D, D);
    });
    tm.run("token shift + LoRA", [&] {
      std::fill(d2.begin(), d2.end(), 0.f);
      k::fast::decay_backward(dgv.data(), d2.data(), dmz.data() + M * D, lw.data(), M, D);
      std::fill(drw.begin(), drw.end(), 0.f); std::fill(drw2.begin(), drw2.end(), 0.f);
      k::fast::linear_backward(drw.data(), g.data(), nullptr, d2.data(), dlt.data(), db.data(), M, rw, D);
      k::fast::tanh_backward(drw2.data(), drw.data(), dlt.data(), M * rw);
      k::fast::linear_backward(dxs.data(), g.data(), nullptr, drw2.data(), xs.data(), da.data(), M, D, rw);
      std::fill(d3.begin(), d3.end(), 0.f); std::fill(d4.begin(), d4.end(), 0.f);
      std::fill(dmz.begin(), dmz.end(), 0.f);
      k::fast::ddlerp_mix_backward(d3.data(), d4.data(), dgv2.data(), dmz.data(), dxs.data(), xx.data(), mu.data(), mz.data(), 5, M, D);
      std::fill(dtz.begin(), dtz.end(), 0.f);
      k::fast::grouped_linear_backward(dtz.data(), g.data(), dmz.data(), tz.data(), lb.data(), M, 5, r, D);
      std::fill(dr5.begin(), dr5.end(), 0.f);
      k::fast::tanh_backward(dr5.data(), dtz.data(), tz.data(), M * 5 * r);
      std::fill(d5.begin(), d5.end(), 0.f);
      k::fast::linear_backward(d5.data(), g.data(), nullptr, dr5.data(), xxx.data(), la.data(), M, D, 5 * r);
      k::fast::ddlerp_shift_backward(d3.data(), nullptr, dgv.data(), d4.data(), d5.data(), n1.data(), nullptr, mux.data(), B, T, D);
    });
    tm.run("layernorm", [&] {
      k::fast::layer_norm_backward(d1.data(), dgv.data(), dgv.data(), d3.data(), m1.data(), r1.data(), x.data(), ln1s.data(), M, D);
    });
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, one_thread = false;
  std::vector<std::string> sections;
  for (int a = 1; a < argc; ++a) {
    const std::string w = argv[a];
    if (w == "quick") quick = true;
    else if (w == "t1") one_thread = true;
    else if (w == "wkv4" || w == "wkv6" || w == "layer") sections.push_back(w);
    else {
      std::fprintf(stderr, "bench_rwkv: unknown argument '%s' (quick, wkv4, wkv6, layer, t1)\n", w.c_str());
      return 2;
    }
  }
  auto want = [&](const char* sec) { return sections.empty() || std::find(sections.begin(), sections.end(), sec) != sections.end(); };
  const i64 n_triad = quick ? (i64(1) << 22) : (i64(1) << 24);
  const i64 B4 = quick ? 2 : 8, T4 = 1024, D4 = 2048;            // WKV-4: 16.8M elements, 67 MB per array
  const i64 B6 = quick ? 1 : 2, T6 = 1024, H6 = 12, N6 = 64;      // WKV-6: D = 768
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
    if (want("wkv6")) {
      const i64 D = H6 * N6, n = B6 * T6 * D;
      auto r = filled(n, 0, 1, 50), kk = filled(n, 0, 1, 51), vv = filled(n, 0, 1, 52), dy = filled(n, 0, 1, 53);
      auto lw = filled(n, -0.3f, 0.5f, 54), u = filled(D, 0, 1, 55);
      for (auto& x : lw) x = std::min(x, -1e-3f);  // log w ∈ [−0.55, −0.05]: w ∈ [0.58, 0.95]
      std::vector<float> y(static_cast<size_t>(n)), dr(static_cast<size_t>(n)), dk(static_cast<size_t>(n)), dv(static_cast<size_t>(n)), dlw(static_cast<size_t>(n)), du(static_cast<size_t>(D));
      const double flop_f = 4.0 * B6 * T6 * H6 * N6 * N6, flop_b = 8.0 * B6 * T6 * H6 * N6 * N6 + flop_f;
      std::printf("WKV-6 B=%ld T=%ld H=%ld N=%ld (nominal %.2f GFLOP fwd, %.2f GFLOP bwd)\n", long(B6), long(T6),
                  long(H6), long(N6), flop_f / 1e9, flop_b / 1e9);
      // round-robin: triad, FMA peak, the sequential reference and the chunked kernel at every
      // chunk size, forward and backward; speedups and roofline fractions per round
      std::vector<float> ta(static_cast<size_t>(n)), tb_ = filled(n, 1, 1, 56), tc = filled(n, 1, 1, 57);
      bench::VectorPeak peak;
      const std::vector<i64> chunks = {1, 2, 4, 8, 16, 32, 64, 128};
      std::vector<std::function<void()>> fns = {
          [&] {
            const float s = 3.0f;
#pragma omp parallel for simd schedule(static)
            for (i64 i = 0; i < n; ++i) ta[i] = tb_[i] + s * tc[i];
          },
          std::ref(peak),
          [&] {
            k::ref::wkv6_forward<float>(y.data(), nullptr, r.data(), kk.data(), vv.data(), lw.data(), u.data(),
                                        nullptr, B6, T6, H6, N6);
          },
          [&] {
            k::ref::wkv6_backward<float>(dr.data(), dk.data(), dv.data(), dlw.data(), du.data(), nullptr, dy.data(),
                                         nullptr, r.data(), kk.data(), vv.data(), lw.data(), u.data(), nullptr, B6, T6,
                                         H6, N6);
          }};
      for (i64 chunk : chunks) {
        fns.push_back([&, chunk] {
          k::fast::wkv6_forward(y.data(), nullptr, r.data(), kk.data(), vv.data(), lw.data(), u.data(), nullptr, B6,
                                T6, H6, N6, chunk);
        });
        fns.push_back([&, chunk] {
          k::fast::wkv6_backward(dr.data(), dk.data(), dv.data(), dlw.data(), du.data(), nullptr, dy.data(), nullptr,
                                 r.data(), kk.data(), vv.data(), lw.data(), u.data(), nullptr, B6, T6, H6, N6, chunk);
        });
      }
      const auto t = bench::rounds(quick ? 2 : 3, fns, clock);
      const double rf = bench::median(t[2]), rb = bench::median(t[3]);
      std::printf("  reference (sequential): fwd %.1f ms = %.2f GFLOP/s (%.3f of sgemm), bwd %.1f ms = %.2f GFLOP/s\n",
                  rf * 1e3, flop_f / rf / 1e9, flop_f / rf / 1e9 / gemm, rb * 1e3, flop_b / rb / 1e9);
      std::printf("  vector peak %.1f G multiply-adds/s (best FMA-loop call, threads timed separately, %s)\n", peak.best() / 1e9,
                  isa.c_str());
      // own roofline: bytes (forward r, k, v, log w read, y written = 20 B per element; backward
      // r, k, v, log w, dy read and dr, dk, dv, dlog w accumulated = 52 B) at the triad, and the
      // nominal FLOPs (the sequential count: one multiply-add per 2 FLOPs) at the FMA peak
      const bench::Work wf{20.0 * n, flop_f / 2}, wb{52.0 * n, flop_b / 2};
      for (std::size_t c = 0; c < chunks.size(); ++c) {
        const auto& tf = t[4 + 2 * c];
        const auto& tb = t[5 + 2 * c];
        std::vector<double> sf, sb;  // per-round speedups over the reference
        for (std::size_t q = 0; q < tf.size(); ++q) {
          sf.push_back(t[2][q] / tf[q]);
          sb.push_back(t[3][q] / tb[q]);
        }
        const double mf = bench::median(tf), mb = bench::median(tb);
        std::printf("  fast chunk %3ld: fwd %.2f ms = %.2f GFLOP/s (%.3f of sgemm), speedup %.1fx (min %.1fx) | "
                    "bwd %.2f ms = %.2f GFLOP/s, speedup %.1fx (min %.1fx) %s\n",
                    long(chunks[c]), mf * 1e3, flop_f / mf / 1e9, flop_f / mf / 1e9 / gemm, bench::median(sf),
                    *std::min_element(sf.begin(), sf.end()), mb * 1e3, flop_b / mb / 1e9, bench::median(sb),
                    *std::min_element(sb.begin(), sb.end()), isa.c_str());
        bench::print_roofline("  fwd", bench::own_roofline(wf, tf, 12.0 * n, t[0], peak.best()), isa);
        bench::print_roofline("  bwd", bench::own_roofline(wb, tb, 12.0 * n, t[0], peak.best()), isa);
      }
    }
    // ── one RWKV-6 layer training step ──
    if (want("layer")) {
      const i64 B = 1, T = quick ? 256 : 1024, D = 768;
      Timers warm, tm;
      rwkv6_layer_step(B, T, D, 64, 32, 64, warm, 1);
      const int steps = quick ? 1 : 3;
      rwkv6_layer_step(B, T, D, 64, 32, 64, tm, steps);
      double total = 0;
      for (auto& [name, s] : tm.t) total += s;
      std::printf("RWKV-6 layer step (B=%ld T=%ld D=%ld, forward + backward): %.1f ms/step, %.0f tokens/s\n", long(B),
                  long(T), long(D), total / steps * 1e3, double(B * T) * steps / total);
      for (auto& [name, s] : tm.t)
        std::printf("  %-22s %7.2f ms  %5.1f %%\n", name.c_str(), s / steps * 1e3, 100.0 * s / total);
    }
  }
  return 0;
}
