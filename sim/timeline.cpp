// sim/timeline.cpp — see timeline.hpp.
#include "sim/timeline.hpp"

#include <algorithm>

namespace scanshard {

double Timeline::makespan() const {
  double end = 0;
  for (const auto& s : spans) end = std::max(end, s.start + s.seconds);
  return end;
}

namespace {

std::string pass_name(const PipelinePass& q, std::int64_t chunks) {
  std::string n = std::string(q.forward ? "F" : "B") + " mb" + std::to_string(q.micro);
  if (chunks > 1) n += " c" + std::to_string(q.chunk);
  return n;
}

// A stage's passes as placed by the schedule, and the bubbles between them up to `end`.
void add_stage(Timeline& t, std::int64_t s, const std::vector<TimedPass>& passes, const std::vector<ChunkSeconds>& chunks,
               double end) {
  double free = 0;
  auto bubble = [&](double until) {
    if (until > free) t.spans.push_back({s, kPassTrack, "bubble", "bubble", free, until - free, {}, {}});
  };
  for (const TimedPass& q : passes) {
    bubble(q.start);
    const auto& c = chunks[static_cast<std::size_t>(q.pass.chunk)];
    t.spans.push_back({s, kPassTrack, pass_name(q.pass, static_cast<std::int64_t>(chunks.size())),
                       q.pass.forward ? "forward" : "backward", q.start, q.end - q.start, {},
                       {{"micro_batch", static_cast<double>(q.pass.micro)}, {"chunk", static_cast<double>(q.pass.chunk)}}});
    const double hidden = q.pass.forward ? c.forward_hidden : c.backward_hidden;
    if (hidden > 0)
      t.spans.push_back({s, kOverlappedTrack, "overlapped comm " + pass_name(q.pass, static_cast<std::int64_t>(chunks.size())),
                         "overlapped communication", q.start, hidden, {}, {}});
    free = q.end;
  }
  bubble(end);
}

std::string step_label(const Step& s) {
  std::string n = std::string(s.op) + " " + s.name;
  if (s.kind != StepKind::compute) n += std::string(" (") + to_string(s.axis) + ")";
  return n;
}

}  // namespace

Timeline predicted_timeline(const std::vector<StageSummary>& stages, const Plan& p, const ClusterSpec& cl, const Network& net) {
  const PricedPasses passes = price_passes(stages, cl, net, p.act_dtype);
  const Estimate e = finish_estimate(passes, stages, p, cl, net);
  const PipelineTimeline pt = pipeline_timeline(p.schedule, p.micro_batches(), passes.chunks);
  const double pipelined = pipelined_seconds(passes, p);  // pt's makespan (m × the pass time on one stage)
  Timeline t;
  for (std::size_t s = 0; s < stages.size(); ++s) {
    const auto si = static_cast<std::int64_t>(s);
    t.processes[si] = "stage " + std::to_string(s) + (si == e.critical_stage ? " (critical: its step end prices the step)" : "");
    t.tracks[{si, kPassTrack}] = "passes";
    t.tracks[{si, kOverlappedTrack}] = "overlapped communication";
    add_stage(t, si, pt.stages[s], passes.chunks[s], pipelined);
  }
  // The critical stage's step end: what is hidden behind its last backward pass beside it, the
  // rest after it, then the wait for the slowest rank.
  const std::int64_t crit = e.critical_stage;
  const auto costs = step_end_costs(stages[static_cast<std::size_t>(crit)], p, cl, net, passes.backward_compute_seconds);
  double hidden = 0;
  for (const auto& c : costs) hidden += c.hidden;
  double at = pipelined - hidden, end = pipelined;
  for (const auto& c : costs) {
    if (c.hidden > 0)
      t.spans.push_back({crit, kOverlappedTrack, step_label(*c.step), to_string(c.bucket), at, c.hidden, {}, {}});
    at += c.hidden;
    if (c.exposed > 0) t.spans.push_back({crit, kPassTrack, step_label(*c.step), to_string(c.bucket), end, c.exposed, {}, {}});
    end += c.exposed;
  }
  const double wait = e.seconds[static_cast<int>(Bucket::sync_wait)];
  if (wait > 0) t.spans.push_back({crit, kPassTrack, "waiting for the slowest rank", to_string(Bucket::sync_wait), end, wait, {}, {}});
  return t;
}

Timeline predicted_timeline(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster) {
  return predicted_timeline(stage_summaries(m, p), p, cluster, plan_network(m, p, cluster));
}

}  // namespace scanshard
