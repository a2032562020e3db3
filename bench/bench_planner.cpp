// bench/bench_planner.cpp — plan evaluations per CPU second of `scanshard plan` on one core, for the
// issue's case (Griffin-14B, 4096-chip TPU v5p slice, 1024 x 2K tokens), and the full search's CPU
// time, against same-run baselines: the exhaustive search (every plan priced, SearchOptions::prune
// = false; its answer must be identical) and pricing plans one by one with the uncached simulate().
// An evaluation is one enumerated plan decided: illegal, over a memory bound, skipped by the
// step-time bound or priced.
// Run: build/bench/bench_planner [repeats (3)] [--no-exhaustive] [--no-baseline]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "planner/search.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"

using namespace scanshard;

namespace {

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

bool same(const std::vector<Candidate>& a, const std::vector<Candidate>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (plan_to_yaml(a[i].plan) != plan_to_yaml(b[i].plan) || a[i].step_seconds != b[i].step_seconds ||
        a[i].memory_bytes != b[i].memory_bytes || a[i].bottleneck != b[i].bottleneck)
      return false;
  return true;
}

void print(const char* what, const SearchResult& r, double cpu) {
  std::printf("%s: %lld considered = %lld illegal + %lld pruned by the state bound + %lld over memory + %lld bounded + %lld priced; "
              "%.3f s CPU (%.3f s wall)\n",
              what, static_cast<long long>(r.considered), static_cast<long long>(r.illegal), static_cast<long long>(r.pruned),
              static_cast<long long>(r.over_memory), static_cast<long long>(r.bounded), static_cast<long long>(r.priced), cpu,
              r.seconds);
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 3;
  bool exhaustive = true, baseline = true;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-exhaustive") == 0) exhaustive = false;
    else if (std::strcmp(argv[i], "--no-baseline") == 0) baseline = false;
    else repeats = std::max(1, std::atoi(argv[i]));
  }
  const auto m = load_model("griffin-14b");
  const auto c = load_cluster("tpu-v5p-4096");
  SearchOptions o;
  o.global_batch = 1024;
  o.seq_len = 2048;

  std::vector<double> cpus;
  SearchResult r;
  for (int i = 0; i < repeats; ++i) {
    const double cpu0 = cpu_seconds();
    r = search(m, c, o);
    cpus.push_back(cpu_seconds() - cpu0);
  }
  std::sort(cpus.begin(), cpus.end());
  const double cpu = cpus[cpus.size() / 2];
  print("pruned search (median of runs)", r, cpu);
  const double rate = static_cast<double>(r.considered) / cpu;
  std::printf("planner: %.0f plan evaluations per CPU second; full search %.3f s CPU (runs: ", rate, cpu);
  for (double x : cpus) std::printf("%.3f ", x);
  std::printf("s)\n");
  if (!r.top.empty()) std::printf("best: %s  %.1f ms/step\n", r.top.front().plan.mesh.describe().c_str(), 1e3 * r.top.front().step_seconds);

  if (exhaustive) {
    SearchOptions x = o;
    x.prune = false;
    const double cpu0 = cpu_seconds();
    const auto e = search(m, c, x);
    const double ecpu = cpu_seconds() - cpu0;
    print("exhaustive search (every plan priced)", e, ecpu);
    const bool equal = same(r.top, e.top) && same(r.pareto, e.pareto) && r.why_not == e.why_not;
    std::printf("exhaustive: %.0f plan evaluations per CPU second (%.0f priced/s); pruned / exhaustive speed-up %.1fx; "
                "top, Pareto front and why-not %s\n",
                static_cast<double>(e.considered) / ecpu, static_cast<double>(e.priced + e.over_memory) / ecpu, ecpu / cpu,
                equal ? "identical" : "DIFFER");
    if (!equal) return 1;
  }

  if (!baseline) return 0;
  // Baseline: the same kind of plans priced one at a time without caches.
  Plan p = r.top.empty() ? Plan{} : r.top.front().plan;
  std::int64_t n = 0;
  double sink = 0;
  const double cpu1 = cpu_seconds();
  while (cpu_seconds() - cpu1 < 0.5) {
    p.overlap = n % 2 == 0;
    sink += simulate(m, p, c).step_seconds;
    ++n;
  }
  const double base_rate = static_cast<double>(n) / (cpu_seconds() - cpu1);
  std::printf("baseline simulate() one plan at a time: %.0f plans per CPU second (sink %.3g); planner / baseline %.0fx\n", base_rate,
              sink, rate / base_rate);
  return 0;
}
