// bench/bench_incache.cpp — the compute cost of the dispatched kernels (RG-LRU and WKV-4 scans,
// RMSNorm, LayerNorm, flash attention), in cache, on every SIMD target of this CPU in the same
// rounds: ns per element of thread CPU time.
//
// Why: on a shared machine wall-time ratios against a triad drift with the neighbours' load; the
// CPU time a kernel spends on slices that stay in L2 is what an op-count change moves, and
// pinning the targets in turn (AVX3, AVX2, … via simd::pin_target) inside one round compares them
// in the same minutes. Per element = (time of T2 tokens − time of T1 tokens) / ((T2 − T1)·width),
// each the best of `reps` calls, which removes the per-call setup (per-channel softplus, scratch).
// Attention: one call on T2 tokens, per (query, visible key, head) — the score GEMMs included.
// Prints, per kernel and target, the median and range over the rounds.
// Usage: bench_incache [rounds = 7] [targets, comma-separated = all of this CPU] [kernel names,
// comma-separated, e.g. "rglru fwd,rglru bwd" = all]
// Not for: DRAM bandwidth or roofline ratios (bench_scan, bench_rwkv), correctness (tests/kernels).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kernels/attention.hpp"
#include "kernels/kernels.hpp"
#include "kernels/layernorm.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rwkv4.hpp"

namespace k = scanshard::kernels;
namespace simd = scanshard::kernels::simd;
using k::i64;

namespace {

// Deterministic values in [lo, lo + span) (a cheap hash: no RNG state to carry).
std::vector<float> filled(i64 n, float lo, float span, unsigned seed) {
  std::vector<float> v(static_cast<size_t>(n));
  for (i64 i = 0; i < n; ++i) {
    unsigned h = unsigned(i) * 2654435761u ^ (seed * 40503u);
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    v[static_cast<size_t>(i)] = lo + span * float(h % 100000u) / 100000.0f;
  }
  return v;
}

// A kernel timed on T tokens of `width` channels (B = 1): run(T) makes one call. fixed > 0: the
// time of run(T2) divided by `fixed` elements instead of the T2 − T1 difference.
struct Kernel {
  std::string name;
  i64 width;
  std::function<void(i64)> run;
  double fixed = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const int n_rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  std::vector<simd::Target> targets;
  if (argc > 2) {
    const std::string want = std::string(",") + argv[2] + ",";
    for (const auto& t : simd::targets())
      if (want.find("," + t.name + ",") != std::string::npos) targets.push_back(t);
  } else {
    targets = simd::targets();
  }
  if (targets.empty()) {
    std::fprintf(stderr, "bench_incache: no SIMD target of this CPU matches '%s'\n", argc > 2 ? argv[2] : "");
    return 2;
  }
  bench::set_threads(1);
  constexpr i64 T1 = 16, T2 = 32;
  const i64 R = 1024, D = 1024, n = T2 * std::max(R, D);
  // RG-LRU operands: gates in the range a trained layer sees, Λ with a = σ(−Λ) from 0.12 to 0.88
  auto x = filled(n, -2, 4, 1), ga = filled(n, -4, 8, 2), gx = filled(n, -4, 8, 3), dy = filled(n, -1, 2, 4);
  auto lambda = filled(R, -2, 4, 5), y = filled(n, -1, 2, 6);
  std::vector<float> dx(static_cast<size_t>(n)), dga(static_cast<size_t>(n)), dgx(static_cast<size_t>(n));
  std::vector<float> hout(static_cast<size_t>(R)), dec(static_cast<size_t>(R)), dl(static_cast<size_t>(R)),
      dhin(static_cast<size_t>(R));
  // WKV-4 operands (bench_rwkv's ranges)
  auto kk = filled(n, 0, 4, 7), vv = filled(n, 0, 2, 8), decay = filled(D, -1, 2, 9), bonus = filled(D, 0, 1, 10);
  std::vector<float> dk(static_cast<size_t>(n)), dv(static_cast<size_t>(n)), dd(static_cast<size_t>(D)),
      du(static_cast<size_t>(D));
  // norms: rows of D channels (scale, bias, saved statistics)
  std::vector<float> nmean(static_cast<size_t>(T2)), nrstd(static_cast<size_t>(T2)), dsc(static_cast<size_t>(D)),
      dbi(static_cast<size_t>(D));
  // attention: B = 1, T2 tokens, H = 8 query heads on one K/V head of N = 64 (MQA), causal
  const i64 AH = 8, AN = 64, AT = T2 * 8;
  auto aq = filled(AT * AH * AN, -1, 2, 11), ak = filled(AT * AN, -1, 2, 12), av = filled(AT * AN, -1, 2, 13),
       adout = filled(AT * AH * AN, -1, 2, 14);
  std::vector<float> aout(aq.size()), alse(static_cast<size_t>(AH * AT)), adq(aq.size()), adk(ak.size()),
      adv(av.size());
  const double attn_elems = double(AH) * double(AT) * double(AT + 1) / 2;
  k::AttnDropout adrop;
  adrop.p = 0.1;
  adrop.key = 12345;
  adrop.seq_len = AT;
  std::vector<Kernel> kernels = {
      {"rglru fwd", R,
       [&](i64 T) {
         k::fast::rglru_scan_forward(y.data(), hout.data(), dec.data(), x.data(), ga.data(), gx.data(), nullptr, nullptr,
                                     lambda.data(), 1, T, R);
       }},
      {"rglru bwd", R,
       [&](i64 T) {
         k::fast::rglru_scan_backward(dx.data(), dga.data(), dgx.data(), dhin.data(), dl.data(), dy.data(), nullptr,
                                      y.data(), x.data(), ga.data(), gx.data(), nullptr, nullptr, lambda.data(), 1, T, R);
       }},
      {"wkv4 fwd", D,
       [&](i64 T) {
         k::fast::wkv4_forward(y.data(), nullptr, kk.data(), vv.data(), decay.data(), bonus.data(), nullptr, 1, T, D);
       }},
      {"wkv4 bwd", D,
       [&](i64 T) {
         k::fast::wkv4_backward(dk.data(), dv.data(), dd.data(), du.data(), nullptr, dy.data(), nullptr, kk.data(),
                                vv.data(), decay.data(), bonus.data(), nullptr, 1, T, D);
       }},
      {"rmsnorm fwd", D, [&](i64 T) { k::fast::rmsnorm_forward(y.data(), nrstd.data(), x.data(), bonus.data(), T, D); }},
      {"rmsnorm bwd", D,
       [&](i64 T) {
         k::fast::rmsnorm_backward(dx.data(), dsc.data(), dy.data(), x.data(), nrstd.data(), bonus.data(), T, D);
       }},
      {"layernorm fwd", D,
       [&](i64 T) {
         k::fast::layer_norm_forward(y.data(), nmean.data(), nrstd.data(), x.data(), bonus.data(), decay.data(), T, D,
                                     1e-5f);
       }},
      {"layernorm bwd", D,
       [&](i64 T) {
         k::fast::layer_norm_backward(dx.data(), dsc.data(), dbi.data(), dy.data(), nmean.data(), nrstd.data(), x.data(),
                                      bonus.data(), T, D);
       }},
      {"attn fwd", 0,
       [&](i64) {
         k::fast::attention_forward(aout.data(), alse.data(), aq.data(), ak.data(), av.data(), nullptr, 1, AT, AH, 1, AN,
                                    0);
       },
       attn_elems},
      {"attn bwd", 0,
       [&](i64) {
         k::fast::attention_backward(adq.data(), adk.data(), adv.data(), adout.data(), aout.data(), alse.data(),
                                     aq.data(), ak.data(), av.data(), nullptr, 1, AT, AH, 1, AN, 0);
       },
       attn_elems},
      {"attn bwd drop", 0,  // probability dropout 0.1 (its own score-row path in the backward)
       [&](i64) {
         k::fast::attention_backward(adq.data(), adk.data(), adv.data(), adout.data(), aout.data(), alse.data(),
                                     aq.data(), ak.data(), av.data(), nullptr, 1, AT, AH, 1, AN, 0, adrop);
       },
       attn_elems},
  };
  if (argc > 3) {  // keep only the named kernels
    const std::string want = std::string(",") + argv[3] + ",";
    std::erase_if(kernels, [&](const Kernel& kn) { return want.find("," + kn.name + ",") == std::string::npos; });
    if (kernels.empty()) {
      std::fprintf(stderr, "bench_incache: no kernel matches '%s'\n", argv[3]);
      return 2;
    }
  }
  std::printf("bench_incache: 1 thread, thread CPU time, ns per element = (T=%ld − T=%ld tokens) / (%ld · width), "
              "best of 40 calls each, %d rounds\n",
              long(T2), long(T1), long(T2 - T1), n_rounds);
  const std::string before = simd::current_target();
  // ns[kernel][target] over rounds
  std::vector<std::vector<std::vector<double>>> ns(kernels.size(), std::vector<std::vector<double>>(targets.size()));
  for (int r = 0; r < n_rounds; ++r)
    for (std::size_t ti = 0; ti < targets.size(); ++ti) {
      simd::pin_target(targets[ti].bit);
      for (std::size_t ki = 0; ki < kernels.size(); ++ki) {
        const auto& kn = kernels[ki];
        const double t2 = bench::best_of(kn.fixed > 0 ? 5 : 40, [&] { kn.run(T2); }, bench::thread_cpu_s);
        if (kn.fixed > 0) {
          ns[ki][ti].push_back(t2 / kn.fixed * 1e9);
          continue;
        }
        const double t1 = bench::best_of(40, [&] { kn.run(T1); }, bench::thread_cpu_s);
        ns[ki][ti].push_back((t2 - t1) / double((T2 - T1) * kn.width) * 1e9);
      }
    }
  simd::pin_target(before);
  for (std::size_t ki = 0; ki < kernels.size(); ++ki)
    for (std::size_t ti = 0; ti < targets.size(); ++ti) {
      const auto& v = ns[ki][ti];
      std::printf("%-14s %-7s %6.3f ns/element (%.3f-%.3f)\n", kernels[ki].name.c_str(), targets[ti].name.c_str(),
                  bench::median(v), *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
    }
  return 0;
}
