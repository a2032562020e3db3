// TEMPORARY A/B harness (not for commit): WKV-4 backward variants (kernels::g_wkv4_exp) from DRAM
// and in cache, every target, same rounds, thread CPU time.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kernels/rwkv4.hpp"

namespace k = scanshard::kernels;
namespace simd = scanshard::kernels::simd;
using k::i64;
namespace scanshard::kernels { extern int g_wkv4_exp; extern long g_pf1; extern int g_pfh; }

static std::vector<float> filled(i64 n, float lo, float span, unsigned seed) {
  std::vector<float> v(static_cast<size_t>(n));
  for (i64 i = 0; i < n; ++i) {
    unsigned h = unsigned(i) * 2654435761u ^ (seed * 40503u);
    h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
    v[static_cast<size_t>(i)] = lo + span * float(h % 100000u) / 100000.0f;
  }
  return v;
}

int main(int argc, char** argv) {
  const int n_rounds = argc > 1 ? std::atoi(argv[1]) : 5;
  std::vector<int> variants;
  for (int i = 2; i < argc && argv[i][0] != 'f' && argv[i][0] != 'A'; ++i) variants.push_back(std::atoi(argv[i]));
  bool fwd = false;
  std::string tsel = "AVX3,AVX2";
  for (int i = 2; i < argc; ++i) { if (argv[i][0] == 'f') fwd = true; if (argv[i][0] == 'A') tsel = argv[i]; }
  if (variants.empty()) variants = {0};
  std::vector<simd::Target> targets;
  for (const auto& t : simd::targets())
    if (("," + tsel + ",").find("," + t.name + ",") != std::string::npos) targets.push_back(t);
  if (getenv("PF1")) k::g_pf1 = atol(getenv("PF1"));
  if (getenv("PFH")) k::g_pfh = atoi(getenv("PFH"));
  bench::set_threads(1);
  const i64 B = 8, T = 1024, D = 2048, n = B * T * D;
  auto kk = filled(n, 0, 4, 40), vv = filled(n, 0, 2, 41), dy = filled(n, 0, 1, 42);
  auto decay = filled(D, -1, 2, 43), bonus = filled(D, 0, 1, 44);
  std::vector<float> y(n), dk(n), dv(n), dd(D), du(D), ta(n);
  auto tb = filled(n, 1, 1, 45), tc = filled(n, 1, 1, 46);
  auto run = [&](i64 Bc, i64 Tc) {
    if (fwd) k::fast::wkv4_forward(y.data(), nullptr, kk.data(), vv.data(), decay.data(), bonus.data(), nullptr, Bc, Tc, D);
    else k::fast::wkv4_backward(dk.data(), dv.data(), dd.data(), du.data(), nullptr, dy.data(), nullptr, kk.data(),
                           vv.data(), decay.data(), bonus.data(), nullptr, Bc, Tc, D);
  };
  const double bytes = fwd ? 12.0 : 28.0;
  // frac[target][variant], ns[target][variant]
  std::vector<std::vector<std::vector<double>>> frac(targets.size(), std::vector<std::vector<double>>(variants.size())),
      ns = frac;
  run(B, T);
  for (int r = 0; r < n_rounds; ++r)
    for (size_t ti = 0; ti < targets.size(); ++ti) {
      simd::pin_target(targets[ti].bit);
      for (size_t vi = 0; vi < variants.size(); ++vi) {
        k::g_wkv4_exp = variants[vi];
        double t0 = bench::thread_cpu_s();
        bench::triad(ta.data(), tb.data(), tc.data(), n);
        const double ttri = bench::thread_cpu_s() - t0;
        t0 = bench::thread_cpu_s();
        run(B, T);
        const double tk = bench::thread_cpu_s() - t0;
        frac[ti][vi].push_back(bytes / 12.0 * ttri / tk);
        if (r == 0 && vi == 0) std::printf("triad %.3f ns/element (%.1f GB/s counted)\n", ttri / n * 1e9, 12.0 * n / ttri / 1e9);
        const double t2 = bench::best_of(20, [&] { run(1, 32); }, bench::thread_cpu_s);
        const double t1 = bench::best_of(20, [&] { run(1, 16); }, bench::thread_cpu_s);
        ns[ti][vi].push_back((t2 - t1) / double(16 * D) * 1e9);
      }
    }
  for (size_t ti = 0; ti < targets.size(); ++ti)
    for (size_t vi = 0; vi < variants.size(); ++vi) {
      auto f = frac[ti][vi], s = ns[ti][vi];
      std::sort(f.begin(), f.end()); std::sort(s.begin(), s.end());
      std::printf("%s %s v%d: DRAM %.0f B at triad / time = %.2f (%.2f-%.2f) [", targets[ti].name.c_str(), fwd ? "fwd" : "bwd",
                  variants[vi], bytes, bench::median(f), f.front(), f.back());
      for (double x : frac[ti][vi]) std::printf(" %.2f", x);
      std::printf(" ]; in cache %.2f (%.2f-%.2f) ns/elem\n", bench::median(s), s.front(), s.back());
    }
}
