// bench/bench_machine_states.cpp — does this machine alternate between speed states, and for how
// long? Times two tiny single-thread kernels in back-to-back 100 ms windows: an RMSNorm of 512
// floats cycling through 384 KiB (L2-resident, like a decode step's small ops) and an in-cache
// sgemm of 64³. Per window: the median call. Prints, per kernel, the fast state (the 10th
// percentile of the windows), the share of windows more than 15 % slower than it, the slow
// windows' median ratio, and the longest run of slow windows.
//
// Why: calibrate measures its kernel plans in ~10 s, validate over minutes. On the 2-core VMs of
// 2026-12-07 the small ops ran 40 % slower in bursts of 0.1-3 s, 20-35 % of the time, whatever the
// other core ran (docs/validation.md, nineteenth session): a calibration can land in a burst.
// Run it alone (e.g. under `chrt -f 50`) to see the host, not this machine's other processes.
// Usage: bench_machine_states [seconds = 30] [--windows: print every window]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

double now_seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

__attribute__((noinline)) void rmsnorm(float* y, const float* x, const float* w, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  const float r = 1.0f / std::sqrt(s / static_cast<float>(n) + 1e-6f);
  for (int i = 0; i < n; ++i) y[i] = x[i] * r * w[i];
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The median seconds of one call of f, timed in batches of `batch` calls over `window` seconds.
template <class F>
double window_median(F&& f, int batch, double window) {
  std::vector<double> t;
  const double w0 = now_seconds();
  while (now_seconds() - w0 < window) {
    const double t0 = now_seconds();
    for (int k = 0; k < batch; ++k) f();
    t.push_back((now_seconds() - t0) / batch);
  }
  return median(t);
}

void summarize(const char* name, const std::vector<double>& w) {
  std::vector<double> s = w;
  std::sort(s.begin(), s.end());
  const double fast = s[s.size() / 10];
  int slow = 0, run = 0, longest = 0;
  std::vector<double> slow_ratio;
  for (double x : w) {
    const bool is_slow = x > 1.15 * fast;
    slow += is_slow;
    run = is_slow ? run + 1 : 0;
    longest = std::max(longest, run);
    if (is_slow) slow_ratio.push_back(x / fast);
  }
  std::printf("%-32s fast %8.1f ns  slow windows %5.1f %%  slow/fast %.2f  longest slow run %.1f s\n", name, fast * 1e9,
              100.0 * slow / double(w.size()), slow_ratio.empty() ? 1.0 : median(slow_ratio), 0.1 * longest);
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 30.0;
  const bool print_windows = argc > 2 && std::strcmp(argv[2], "--windows") == 0;
  if (!(seconds > 0)) {
    std::fprintf(stderr, "usage: bench_machine_states [seconds > 0] [--windows]\n");
    return 2;
  }
  openblas_set_num_threads(1);
  constexpr int n = 512, buffers = 64;  // 3 x 64 x 2 KiB = 384 KiB
  std::vector<float> x(n * buffers, 1.0f), wt(n * buffers, 0.5f), y(n * buffers);
  constexpr int g = 64;
  std::vector<float> a(g * g, 0.5f), b(g * g, 0.01f), c(g * g);
  int next = 0;
  auto norm = [&] {
    const int j = (next++ % buffers) * n;
    rmsnorm(&y[j], &x[j], &wt[j], n);
  };
  auto gemm = [&] { cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g, g, g, 1.0f, a.data(), g, b.data(), g, 0.0f, c.data(), g); };
  std::vector<double> wn, wg;
  const double end = now_seconds() + seconds;
  while (now_seconds() < end) {  // the two kernels in alternate 50 ms halves of each 100 ms window
    wn.push_back(window_median(norm, 100, 0.05));
    wg.push_back(window_median(gemm, 10, 0.05));
    if (print_windows) std::printf("%.1f %.1f\n", wn.back() * 1e9, wg.back() * 1e9);
  }
  std::printf("bench_machine_states: %zu windows of 100 ms (each kernel 50 ms), one thread\n", wn.size());
  summarize("rmsnorm 512 floats (L2, 384 KiB)", wn);
  summarize("sgemm 64^3 (in cache)", wg);
}
