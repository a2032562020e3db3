// bench/bench_planner.cpp — plan evaluations per second of `scanshard plan` on one core, for the
// issue's case (Griffin-14B, 4096-chip TPU v5p slice, 1024 x 2K tokens), against a same-run
// baseline: pricing plans one by one with the uncached simulate() path.
// Run: build/bench/bench_planner [baseline-seconds]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "planner/search.hpp"
#include "program/presets.hpp"

using namespace scanshard;

int main(int argc, char** argv) {
  const double baseline_seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  const auto m = load_model("griffin-14b");
  const auto c = load_cluster("tpu-v5p-4096");
  SearchOptions o;
  o.global_batch = 1024;
  o.seq_len = 2048;
  const auto cpu0 = std::clock();
  const auto r = search(m, c, o);
  const double cpu = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;
  std::printf("search: %lld considered, %lld illegal, %lld pruned by the memory bound, %lld priced, in %.2f s wall / %.2f s CPU\n",
              static_cast<long long>(r.considered), static_cast<long long>(r.illegal), static_cast<long long>(r.pruned),
              static_cast<long long>(r.priced), r.seconds, cpu);
  const double planner_rate = static_cast<double>(r.priced) / cpu;
  std::printf("planner: %.0f priced plans per CPU second (%.0f considered/s)\n", planner_rate, static_cast<double>(r.considered) / cpu);
  if (!r.top.empty()) std::printf("best: %s  %.1f ms/step\n", r.top.front().plan.mesh.describe().c_str(), 1e3 * r.top.front().step_seconds);

  // Baseline: the same kind of plans priced one at a time without caches.
  Plan p = r.top.empty() ? Plan{} : r.top.front().plan;
  std::int64_t n = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double elapsed = 0, sink = 0;
  const auto cpu1 = std::clock();
  while (elapsed < baseline_seconds) {
    p.overlap = n % 2 == 0;
    sink += simulate(m, p, c).step_seconds;
    ++n;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double base_rate = static_cast<double>(n) / (static_cast<double>(std::clock() - cpu1) / CLOCKS_PER_SEC);
  std::printf("baseline simulate() one plan at a time: %.0f plans per CPU second (sink %.3g)\n", base_rate, sink);
  std::printf("ratio planner / baseline: %.0fx\n", planner_rate / base_rate);
  return 0;
}
