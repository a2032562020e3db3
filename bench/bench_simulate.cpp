// bench/bench_simulate.cpp — how fast the simulator prices plans (issue: "pricing one plan of a
// 14B model takes well under 1 ms"; the planner needs ≥ 100,000 evaluations/s/core).
// Prints plans/s for the full path (check + lower every stage + network + price) and for the
// pricing step alone (programs and network prepared once), on Griffin-14B / tpu-v5p-4096, and
// a same-run baseline: the cost of lowering alone, so the ratio shows where the time goes.
// Run: build/bench/bench_simulate [seconds-per-case]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "program/presets.hpp"
#include "sim/simulate.hpp"

using namespace scanshard;
using Clock = std::chrono::steady_clock;

template <class F>
double rate(double seconds, F&& f) {
  std::int64_t n = 0;
  const auto t0 = Clock::now();
  double elapsed = 0;
  do {
    for (int i = 0; i < 8; ++i) f();
    n += 8;
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  } while (elapsed < seconds);
  return static_cast<double>(n) / elapsed;
}

int main(int argc, char** argv) {
  const double secs = argc > 1 ? std::atof(argv[1]) : 1.0;
  const auto m = load_model("griffin-14b");
  const auto c = load_cluster("tpu-v5p-4096");
  Plan p;
  p.mesh = parse_mesh("data=64,fsdp=4,tensor=8,pipeline=2", "--mesh");
  p.global_batch = 1024;
  p.micro_batch = 2;
  p.seq_len = 2048;
  p.zero_stage = 1;
  p.remat = Remat::elementwise;
  volatile double sink = 0;
  const double full = rate(secs, [&] { sink = sink + simulate(m, p, c).step_seconds; });
  const auto programs = stage_summaries(m, p);
  const Network net(c, p.mesh);
  const double price_only = rate(secs, [&] { sink = sink + simulate(programs, p, c, net).step_seconds; });
  const double lower_only = rate(secs, [&] { sink = sink + static_cast<double>(stage_summaries(m, p).size()); });
  const double topology_only = rate(secs, [&] { sink = sink + static_cast<double>(Topology(c).devices()); });
  const Topology topo(c);
  const double network_only = rate(secs, [&] { sink = sink + static_cast<double>(Network(topo, c, p.mesh).axis(Axis::data).size); });
  const double prepared_topology = rate(secs, [&] {
    check_plan(m, p, c.devices());
    sink = sink + simulate(stage_summaries(m, p), p, c, Network(topo, c, p.mesh)).step_seconds;
  });
  std::printf("griffin-14b on tpu-v5p-4096, mesh %s, %zu stages\n", p.mesh.describe().c_str(), programs.size());
  std::printf("full simulate (check+lower+network+price): %10.0f plans/s  (%.1f us per plan)\n", full, 1e6 / full);
  std::printf("price prepared programs only             : %10.0f plans/s  (%.1f us per plan)\n", price_only, 1e6 / price_only);
  std::printf("baseline: lowering alone                 : %10.0f /s       (%.1f us)\n", lower_only, 1e6 / lower_only);
  std::printf("simulate with the cluster graph built once: %10.0f plans/s  (%.1f us per plan)\n", prepared_topology, 1e6 / prepared_topology);
  std::printf("baseline: topology graph + one BFS       : %10.0f /s       (%.1f us)\n", topology_only, 1e6 / topology_only);
  std::printf("baseline: per-mesh network on the graph  : %10.0f /s       (%.1f us)\n", network_only, 1e6 / network_only);
  std::printf("ratio full / lowering-alone time         : %.2f\n", (1 / full) / (1 / lower_only));
  return 0;
}
