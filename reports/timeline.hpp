// reports/timeline.hpp — timelines as Chrome trace-event JSON (the format Perfetto and
// chrome://tracing open): the measured one of a run (`scanshard train --timeline`, one process per
// rank) and the predicted one of a plan (`scanshard simulate --timeline`, one process per pipeline
// stage; sim/timeline.hpp builds it), so the two open side by side.
//
// Format (Trace Event Format, "JSON Object Format"): {"traceEvents": [...], "displayTimeUnit": "ms"};
// each span a complete event {"ph": "X", "name", "cat", "ts", "dur" (microseconds), "pid", "tid",
// "args"}; process and track names as metadata events {"ph": "M", "name": "process_name" /
// "thread_name", "args": {"name": ...}}.
// For: writing timelines. Not for: building the predicted one (sim/), timing (program/trace.hpp).
#pragma once
#include <cstdint>

#include <nlohmann/json.hpp>

#include "program/trace.hpp"
#include "sim/timeline.hpp"

namespace scanshard {

// Track numbers of the measured timeline's processes (one per rank).
inline constexpr int kMeasuredPassTrack = 0;  // pipeline passes, with the compute steps they ran inside them
inline constexpr int kMeasuredCommTrack = 1;  // collectives and point-to-point transfers

// The trace-event array of a timeline (metadata events first, then spans in order).
nlohmann::json trace_events(const Timeline& t);
// The whole file: {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}.
nlohmann::json trace_event_file(nlohmann::json events, const nlohmann::json& other);

// A runner's spans (Trace::enable_spans) as rank `rank`'s process: per step, each pass span and
// each step span (category "step", args step, phase, op, name, seconds — the seconds its trace
// cell added); communication ops on their own track.
Timeline measured_timeline(const Trace& trace, std::int64_t rank);

}  // namespace scanshard
