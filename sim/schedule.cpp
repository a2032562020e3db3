// sim/schedule.cpp — see schedule.hpp.
#include "sim/schedule.hpp"

#include <algorithm>
#include <map>
#include <tuple>
#include <stdexcept>

namespace scanshard {

// Every stage's pass order, kept per (schedule, m, pp, v): the planner prices many plans that
// share them (per thread; a search meets a few hundred shapes at most).
const std::vector<std::vector<PipelinePass>>& stage_orders(Schedule kind, std::int64_t m, std::int64_t pp, std::int64_t v) {
  thread_local std::map<std::tuple<int, std::int64_t, std::int64_t, std::int64_t>, std::vector<std::vector<PipelinePass>>> memo;
  auto [it, fresh] = memo.try_emplace({static_cast<int>(kind), m, pp, v});
  if (fresh)
    for (std::int64_t s = 0; s < pp; ++s) it->second.push_back(pipeline_schedule(kind, m, pp, v, s));
  return it->second;
}

namespace {


// Runs every stage's order; `keep` receives (stage, pass, start, end) of each pass as it is placed.
template <class Keep>
double run_schedule(Schedule kind, std::int64_t m, const std::vector<std::vector<ChunkSeconds>>& chunks, Keep&& keep) {
  const auto pp = static_cast<std::int64_t>(chunks.size());
  if (pp == 0 || m < 1) return 0;
  const auto v = static_cast<std::int64_t>(chunks[0].size());
  const std::int64_t model_chunks = pp * v;  // model chunk g = j·pp + s lives on stage s as its chunk j
  // End time of each (model chunk, micro-batch) pass; < 0 until it has run (buffers kept per thread).
  thread_local std::vector<double> fwd_end, bwd_end, free;
  thread_local std::vector<std::size_t> next;
  fwd_end.assign(static_cast<std::size_t>(model_chunks * m), -1.0);
  bwd_end.assign(fwd_end.size(), -1.0);
  auto at = [m](std::int64_t g, std::int64_t micro) { return static_cast<std::size_t>(g * m + micro); };
  const auto& orders = stage_orders(kind, m, pp, v);
  next.assign(static_cast<std::size_t>(pp), 0);
  free.assign(static_cast<std::size_t>(pp), 0.0);
  std::size_t left = 0;
  for (const auto& o : orders) left += o.size();
  double makespan = 0;
  // Sweeps alternate direction: forwards flow to later stages, backwards to earlier ones.
  for (bool down = true; left > 0; down = !down) {
    bool moved = false;
    for (std::int64_t i = 0; i < pp; ++i) {
      const std::int64_t s = down ? i : pp - 1 - i;
      const auto si = static_cast<std::size_t>(s);
      for (; next[si] < orders[si].size(); ++next[si]) {
        const PipelinePass q = orders[si][next[si]];
        const std::int64_t g = q.chunk * pp + s;
        const double ready = q.forward ? (g > 0 ? fwd_end[at(g - 1, q.micro)] : 0.0)
                                       : (g + 1 < model_chunks ? bwd_end[at(g + 1, q.micro)] : fwd_end[at(g, q.micro)]);
        if (ready < 0) break;  // what it needs has not run yet
        const ChunkSeconds& c = chunks[si][static_cast<std::size_t>(q.chunk)];
        const double start = std::max(free[si], ready), end = start + (q.forward ? c.forward : c.backward);
        (q.forward ? fwd_end : bwd_end)[at(g, q.micro)] = end;
        free[si] = end;
        makespan = std::max(makespan, end);
        keep(s, q, start, end);
        --left;
        moved = true;
      }
    }
    if (!moved) throw std::logic_error("pipeline schedule: the stages' pass orders wait on each other in a cycle");
  }
  return makespan;
}

}  // namespace

PipelineTimeline pipeline_timeline(Schedule kind, std::int64_t micro_batches, const std::vector<std::vector<ChunkSeconds>>& chunks) {
  PipelineTimeline t;
  t.stages.resize(chunks.size());
  t.makespan = run_schedule(kind, micro_batches, chunks, [&](std::int64_t s, const PipelinePass& q, double start, double end) {
    t.stages[static_cast<std::size_t>(s)].push_back({q, start, end});
  });
  return t;
}

double pipeline_makespan(Schedule kind, std::int64_t micro_batches, const std::vector<std::vector<ChunkSeconds>>& chunks) {
  return run_schedule(kind, micro_batches, chunks, [](std::int64_t, const PipelinePass&, double, double) {});
}

}  // namespace scanshard
