// reports/timeline.cpp — see timeline.hpp.
#include "reports/timeline.hpp"

#include <string_view>

#include "program/steps.hpp"

namespace scanshard {

nlohmann::json trace_events(const Timeline& t) {
  nlohmann::json ev = nlohmann::json::array();
  for (const auto& [pid, name] : t.processes)
    ev.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", pid}, {"tid", 0}, {"args", {{"name", name}}}});
  for (const auto& [key, name] : t.tracks)
    ev.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", key.first}, {"tid", key.second}, {"args", {{"name", name}}}});
  for (const auto& s : t.spans) {
    nlohmann::json args = nlohmann::json::object();
    for (const auto& [k, v] : s.text) args[k] = v;
    for (const auto& [k, v] : s.numbers) args[k] = v;
    args["seconds"] = s.seconds;
    ev.push_back({{"ph", "X"}, {"name", s.name}, {"cat", s.category}, {"ts", s.start * 1e6}, {"dur", s.seconds * 1e6},
                  {"pid", s.process}, {"tid", s.track}, {"args", args}});
  }
  return ev;
}

nlohmann::json trace_event_file(nlohmann::json events, const nlohmann::json& other) {
  return {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}, {"otherData", other}};
}

Timeline measured_timeline(const Trace& trace, std::int64_t rank) {
  Timeline t;
  t.processes[rank] = "rank " + std::to_string(rank);
  t.tracks[{rank, kMeasuredPassTrack}] = "passes and compute";
  t.tracks[{rank, kMeasuredCommTrack}] = "communication";
  for (const auto& step : trace.steps())
    for (const auto& s : step.spans) {
      if (!s.op) {  // a pipeline pass
        t.spans.push_back({rank, kMeasuredPassTrack, std::string(s.phase) + " mb" + std::to_string(s.micro) + " c" + std::to_string(s.chunk),
                           "pass", s.start, s.seconds, {{"phase", s.phase}},
                           {{"step", static_cast<double>(step.step)}, {"micro_batch", static_cast<double>(s.micro)},
                            {"chunk", static_cast<double>(s.chunk)}}});
        continue;
      }
      const OpKind* kind = find_op_kind(s.op);
      const bool comm = kind && kind->cls == OpClass::comm;
      t.spans.push_back({rank, comm ? kMeasuredCommTrack : kMeasuredPassTrack, std::string(s.op) + " " + s.name, "step", s.start,
                         s.seconds, {{"phase", s.phase}, {"op", s.op}, {"name", s.name}}, {{"step", static_cast<double>(step.step)}}});
    }
  return t;
}

}  // namespace scanshard
