// tests/fuzz/fuzz_trace.cpp — libFuzzer target: a file through the trace reader of `scanshard
// report --trace` (load_trace, then check_trace_plan against hawk-tiny on one rank, batch 2 of 16
// tokens, 2 micro-batches). Every bad trace must be a ConfigError; a trace the reader accepts must
// hold only what it promises (seconds in [0, 1e9] and within the step, calls ≥ 1 and a multiple of
// the micro-batches for forward ops, consecutive steps), else the run aborts.
// Seeds: tests/fuzz/corpus/trace/ (a trace written by train, the report corpus's base trace).
#include "reports/trace_file.hpp"
#include "fuzz_common.hpp"
#include "program/presets.hpp"

using namespace scanshard;

namespace {

void check_accepted(const TraceFile& t) {
  if (t.steps.empty() || t.ranks != 1 || t.rank != 0) std::abort();
  for (std::size_t s = 0; s < t.steps.size(); ++s) {
    const auto& st = t.steps[s];
    if (st.step != t.steps[0].step + std::int64_t(s) || !(st.wall_seconds >= 0 && st.wall_seconds <= 1e9)) std::abort();
    for (const auto& op : st.ops) {
      if (!(op.seconds >= 0 && op.seconds <= st.wall_seconds * (1 + 1e-9) + 1e-6) || op.calls < 1) std::abort();
      if (op.phase == "forward" && op.calls % 2 != 0) std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const ModelSpec m = load_model("hawk-tiny");
  static const Plan p = parse_plan(parse_yaml("model: hawk-tiny\nmesh: {data: 1}\nglobal_batch: 2\nmicro_batch: 1\nseq_len: 16\n",
                                              "plan.yaml"),
                                   "plan.yaml");
  const std::string& path = fuzz::write_input(data, size, ".json");
  fuzz::expect_input_errors_only([&] {
    const TraceFile t = load_trace(path);
    check_trace_plan(t, path, m, p);
    check_accepted(t);
  });
  return 0;
}
