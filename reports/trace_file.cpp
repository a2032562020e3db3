// reports/trace_file.cpp — see trace_file.hpp.
#include "reports/trace_file.hpp"

#include <set>
#include <tuple>

#include "program/lower.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard {
namespace {

using json = nlohmann::json;

constexpr std::int64_t kMaxCount = std::int64_t{1} << 53;  // whole numbers JSON keeps exactly
constexpr double kMaxSeconds = 1e9;  // 31 years: more is no measurement (and sums of such overflow)
constexpr const char* kWritten = " (write a trace with `scanshard train --trace`)";

// One JSON object of the trace and where it is ("", "steps[2]", "steps[2].ops[5]").
struct Node {
  const json& j;
  const std::string& file;
  std::string at;

  std::string where(const char* key) const { return at.empty() ? key : at + "." + key; }
  [[noreturn]] void bad(const char* key, const std::string& why) const {
    throw ConfigError(file + ": " + where(key) + ": " + why);
  }
  const json& field(const char* key) const {
    const auto it = j.find(key);
    if (it == j.end()) bad(key, std::string("missing") + kWritten);
    return *it;
  }
  std::string text(const char* key) const {
    const json& v = field(key);
    if (!v.is_string()) bad(key, std::string("expected a string, got ") + v.type_name());
    return v.get<std::string>();
  }
  std::int64_t whole(const char* key, std::int64_t lo, std::int64_t hi) const {
    const json& v = field(key);
    if (!v.is_number_integer()) bad(key, std::string("expected a whole number, got ") + (v.is_number() ? v.dump() : v.type_name()));
    const bool in = v.is_number_unsigned() ? v.get<std::uint64_t>() >= static_cast<std::uint64_t>(lo) &&
                                                 v.get<std::uint64_t>() <= static_cast<std::uint64_t>(hi)
                                           : v.get<std::int64_t>() >= lo && v.get<std::int64_t>() <= hi;
    if (!in) bad(key, v.dump() + " is not between " + std::to_string(lo) + " and " + std::to_string(hi));
    return v.get<std::int64_t>();
  }
  double seconds(const char* key) const {
    const json& v = field(key);
    if (!v.is_number()) bad(key, std::string("expected a number of seconds, got ") + v.type_name());
    const double s = v.get<double>();
    if (!(s >= 0 && s <= kMaxSeconds)) bad(key, "must be between 0 and 1e9 seconds, got " + v.dump());
    return s;
  }
  const json& array(const char* key) const {
    const json& v = field(key);
    if (!v.is_array()) bad(key, std::string("expected a list, got ") + v.type_name());
    return v;
  }
  Node child(const char* key, std::size_t i) const {
    const json& v = j.at(key).at(i);
    const std::string w = where(key) + "[" + std::to_string(i) + "]";
    if (!v.is_object()) throw ConfigError(file + ": " + w + ": expected an object, got " + v.type_name());
    return {v, file, w};
  }
};

bool known_phase(const std::string& s) {
  for (Phase p : {Phase::forward, Phase::backward, Phase::recompute, Phase::optimizer})
    if (s == to_string(p)) return true;
  return false;
}

TraceFile::Op parse_op(const Node& n, double wall) {
  TraceFile::Op op{n.text("phase"), n.text("op"), n.text("name"), n.seconds("seconds"), n.whole("calls", 1, kMaxCount)};
  if (!known_phase(op.phase)) n.bad("phase", "'" + op.phase + "' is not forward, backward, recompute or optimizer");
  if (op.seconds > wall * (1 + 1e-9) + 1e-6)
    n.bad("seconds", format_number(op.seconds) + " is longer than the step's wall_seconds " + format_number(wall));
  return op;
}

TraceFile::Step parse_step(const Node& n, std::int64_t want_index) {
  TraceFile::Step s;
  s.step = n.whole("step", 0, kMaxCount);
  if (want_index >= 0 && s.step != want_index)
    n.bad("step", std::to_string(s.step) + " does not follow the previous step " + std::to_string(want_index - 1));
  s.wall_seconds = n.seconds("wall_seconds");
  const json& loss = n.field("loss");
  if (!loss.is_number() && !loss.is_null()) n.bad("loss", std::string("expected a number (or null), got ") + loss.type_name());
  std::set<std::tuple<std::string, std::string, std::string>> seen;
  for (std::size_t i = 0; i < n.array("ops").size(); ++i) {
    const Node o = n.child("ops", i);
    s.ops.push_back(parse_op(o, s.wall_seconds));
    const auto& op = s.ops.back();
    if (!seen.insert({op.phase, op.op, op.name}).second)
      throw ConfigError(n.file + ": " + o.at + ": (" + op.phase + ", " + op.op + ", " + op.name + ") appears twice in the step");
  }
  return s;
}

// Every forward pass of a step runs the same ops: forward calls are a multiple of the micro-batches.
void check_forward_calls(const TraceFile& t, const std::string& file, std::int64_t micro_batches) {
  for (std::size_t s = 0; s < t.steps.size(); ++s)
    for (std::size_t i = 0; i < t.steps[s].ops.size(); ++i) {
      const auto& op = t.steps[s].ops[i];
      if (op.phase != "forward" || op.calls % micro_batches == 0) continue;
      throw ConfigError(file + ": steps[" + std::to_string(s) + "].ops[" + std::to_string(i) + "].calls: " +
                        std::to_string(op.calls) + " forward calls of " + op.op + " " + op.name +
                        " are not the same number for each of the plan's " + std::to_string(micro_batches) +
                        " micro-batches per step");
    }
}

}  // namespace

TraceFile parse_trace(const json& j, const std::string& file) {
  if (!j.is_object()) throw ConfigError(file + ": expected a JSON object, got " + std::string(j.type_name()) + kWritten);
  const Node top{j, file, ""};
  TraceFile t;
  t.model = top.text("model");
  t.mesh = top.text("mesh");
  t.dtype = top.text("dtype");
  t.ranks = top.whole("ranks", 1, kMaxCount);
  t.rank = top.whole("rank", 0, t.ranks - 1);
  t.global_batch = top.whole("global_batch", 1, kMaxCount);
  t.micro_batch = top.whole("micro_batch", 1, kMaxCount);
  t.seq_len = top.whole("seq_len", 1, kMaxCount);
  const json& steps = top.array("steps");
  if (steps.empty()) top.bad("steps", std::string("empty") + kWritten);
  for (std::size_t i = 0; i < steps.size(); ++i)
    t.steps.push_back(parse_step(top.child("steps", i), i == 0 ? -1 : t.steps.front().step + std::int64_t(i)));
  return t;
}

TraceFile load_trace(const std::string& path) {
  const std::string text = read_regular_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw ConfigError(path + ": not a JSON trace: " + e.what());
  }
  return parse_trace(j, path);
}

void check_trace_plan(const TraceFile& t, const std::string& file, const ModelSpec& m, const Plan& p) {
  auto same = [&](const char* key, const std::string& trace, const std::string& plan, const char* why) {
    if (trace != plan) throw ConfigError(file + ": " + key + ": the trace has " + trace + ", " + why + " " + plan);
  };
  same("model", t.model, m.name, "the plan's model is");
  same("mesh", t.mesh, p.mesh.describe(), "the plan's mesh is");
  same("ranks", std::to_string(t.ranks), std::to_string(p.mesh.devices()), "the plan's mesh has devices:");
  same("global_batch", std::to_string(t.global_batch), std::to_string(p.global_batch), "the plan's is");
  same("micro_batch", std::to_string(t.micro_batch), std::to_string(p.micro_batch), "the plan's is");
  same("seq_len", std::to_string(t.seq_len), std::to_string(p.seq_len), "the plan's is");
  same("dtype", t.dtype, "fp32", "the runner computes in");
  same("rank", std::to_string(t.rank), "0", "the report compares the program of rank");
  check_forward_calls(t, file, p.micro_batches());
}

}  // namespace scanshard
