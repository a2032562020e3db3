// sim/timeline.hpp — a timeline: named intervals on tracks of processes, the shape of Chrome's
// trace-event format (Perfetto, chrome://tracing; reports/timeline.hpp writes it), and the
// PREDICTED timeline of a plan: per pipeline stage its passes per micro-batch and model chunk as
// the event-level schedule places them (sim/schedule.hpp), the bubble where a stage idles, the
// overlapped communication on its own track, and the critical stage's once-per-step work
// (exposed gradient sync, optimizer, waiting for the slowest rank) after the last pass. Its
// makespan is simulate()'s step time: both come from price_passes and finish_estimate.
// For: `scanshard simulate --timeline`. Not for: pricing (simulate.hpp), JSON (reports/timeline.hpp).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "sim/simulate.hpp"

namespace scanshard {

struct Timeline {
  struct Span {
    std::int64_t process = 0;
    int track = 0;
    std::string name, category;
    double start = 0, seconds = 0;  // seconds from the timeline's origin
    std::map<std::string, std::string> text;  // shown with the span (args)
    std::map<std::string, double> numbers;
  };
  std::map<std::int64_t, std::string> processes;               // process -> name
  std::map<std::pair<std::int64_t, int>, std::string> tracks;  // (process, track) -> name
  std::vector<Span> spans;
  double makespan() const;  // the latest span end (0 when empty)
};

// Track numbers of the predicted timeline's processes (one per pipeline stage).
inline constexpr int kPassTrack = 0;          // passes, bubbles, the step end
inline constexpr int kOverlappedTrack = 1;    // communication hidden behind compute

// The predicted timeline of plan `p` (stage summaries as simulate() prices them).
Timeline predicted_timeline(const std::vector<StageSummary>& stages, const Plan& p, const ClusterSpec& cluster, const Network& net);
// Convenience: check, lower, build the network (as simulate(m, p, cluster)).
Timeline predicted_timeline(const ModelSpec& m, const Plan& p, const ClusterSpec& cluster);

}  // namespace scanshard
