// reports/trace_file.hpp — a `scanshard train --trace` file read as untrusted input.
//
// For: `scanshard report --trace` (and the fuzz target fuzz_trace). The file must be a regular
// file (a FIFO is refused before it is opened for reading: it would block forever); its JSON must
// have the shape train writes (trace_json in cli/train_command.cpp): every key present with its
// type; ranks, rank, batch sizes, steps and calls whole numbers in range; seconds between 0 and 1e9
// and no op longer than its step; consecutive step indices; no op twice in a step. check_trace_plan
// then checks it against the plan it is compared with. Every error is a ConfigError
// "<file>: <where>: <what is wrong>", where is a key ("ranks") or a path ("steps[2].ops[5].calls").
// Not for: comparing with the simulator (compare.hpp), writing traces (train_command.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "program/model.hpp"
#include "program/plan.hpp"

namespace scanshard {

struct TraceFile {
  struct Op {
    std::string phase, op, name;
    double seconds = 0;
    std::int64_t calls = 0;
  };
  struct Step {
    std::int64_t step = 0;
    double wall_seconds = 0;
    std::vector<Op> ops;
  };
  std::string model, mesh, dtype;
  std::int64_t ranks = 0, rank = 0, global_batch = 0, micro_batch = 0, seq_len = 0;
  std::vector<Step> steps;  // at least one
};

// Reads and validates `path` (read_regular_file, then parse_trace).
TraceFile load_trace(const std::string& path);
// Validates a parsed trace; `file` names it in errors.
TraceFile parse_trace(const nlohmann::json& j, const std::string& file);
// The trace against the plan of the report: the same model, mesh, rank count (its devices),
// global_batch, micro_batch and seq_len, fp32 (the runner's dtype), rank 0's trace (the one
// compared with rank 0's program), and forward ops called a whole number of times per
// micro-batch (every forward pass of a step runs the same ops).
void check_trace_plan(const TraceFile& t, const std::string& file, const ModelSpec& m, const Plan& p);

}  // namespace scanshard
