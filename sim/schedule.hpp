// sim/schedule.hpp — the event-level pipeline schedule: the pipelined part of a training step as
// passes with start and end times. Every stage runs its passes in the order program/lower.hpp's
// pipeline_schedule gives (GPipe, 1F1B, interleaved 1F1B — the order the runner executes); a pass
// starts when its stage is free and the pass it needs has ended: a forward waits for the previous
// model chunk's forward of the same micro-batch (on the stage before), a backward for the next
// chunk's backward (on the stage after) or, on the model's last chunk, for its own forward. The
// pipeline transfers are inside the passes (their receive and send steps, priced by simulate.cpp).
//
// simulate() prices every plan's pipelined part as this schedule's makespan (one source of truth
// for the step time and the predicted timeline); the bubble is what a stage idles in it. With equal
// stages it is the familiar (p − 1)/(m + p − 1) of the makespan for GPipe and 1F1B (Narayanan et
// al. 2021 §2.2), 1/v of that bubble with v interleaved chunks.
// For: simulate (finish_estimate) and the predicted timeline. Not for: pricing a pass (simulate.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "program/lower.hpp"

namespace scanshard {

// Every stage's pass order (program/lower.hpp pipeline_schedule), memoised per thread and per
// (schedule, m, pp, v): the makespan and the activation peak (simulate.cpp memory_of) share them.
const std::vector<std::vector<PipelinePass>>& stage_orders(Schedule kind, std::int64_t m, std::int64_t pp, std::int64_t v);

// One micro-batch through one model chunk of a stage, forward and backward.
struct ChunkSeconds {
  double forward = 0, backward = 0;
  // of the overlappable communication (ZeRO-3 gathers, ring-attention K/V), what each pass's
  // compute hides (the timeline draws it beside the pass; the schedule does not use it)
  double forward_hidden = 0, backward_hidden = 0;
};
struct TimedPass {
  PipelinePass pass;
  double start = 0, end = 0;
};
struct PipelineTimeline {
  std::vector<std::vector<TimedPass>> stages;  // per stage, in the order it runs them
  double makespan = 0;
};

// The schedule of `micro_batches` over the stages of `chunks` (chunks[s][j]: stage s, model chunk
// j; every stage has the same number of chunks). Throws std::logic_error if the stages' orders
// wait on each other in a cycle (check_plan rules out the plans that would).
[[nodiscard]] PipelineTimeline pipeline_timeline(Schedule kind, std::int64_t micro_batches,
                                                 const std::vector<std::vector<ChunkSeconds>>& chunks);
// Its makespan alone (the planner prices many plans: no events kept).
[[nodiscard]] double pipeline_makespan(Schedule kind, std::int64_t micro_batches,
                                       const std::vector<std::vector<ChunkSeconds>>& chunks);

}  // namespace scanshard
