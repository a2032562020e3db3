// tests/unit/test_timeline.cpp — the event-level pipeline schedule (sim/schedule.hpp) against
// closed forms and an independent recurrence, simulate()'s step time against the predicted
// timeline's makespan, and both timeline files (`simulate --timeline`, `train --timeline`) read
// back as Chrome trace-event JSON: the predicted one ends at simulate's step time, the measured
// one's step spans add up to the --trace file's per-op seconds.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "reports/timeline.hpp"
#include "tests/unit/scratch.hpp"
#include "sim/schedule.hpp"
#include "sim/simulate.hpp"
#include "sim/timeline.hpp"

using namespace scanshard;
namespace fs = std::filesystem;
using testing::Result;
using testing::Scratch;
using testing::slurp;

namespace {

using Chunks = std::vector<std::vector<ChunkSeconds>>;

Chunks equal_stages(std::int64_t pp, std::int64_t v, double f, double b) {
  return Chunks(static_cast<std::size_t>(pp), std::vector<ChunkSeconds>(static_cast<std::size_t>(v), ChunkSeconds{f, b}));
}

// What each stage idles in the schedule's makespan.
std::vector<double> idle(const PipelineTimeline& t) {
  std::vector<double> out;
  for (const auto& st : t.stages) {
    double busy = 0;
    for (const auto& q : st) busy += q.end - q.start;
    out.push_back(t.makespan - busy);
  }
  return out;
}

// GPipe with one chunk per stage as a recurrence (no event loop): forward j leaves stage s when
// forward j left stage s − 1 and forward j − 1 left stage s; stage s starts its backwards after its
// last forward, backward j when backward j left stage s + 1 (the last stage: its own forward)
// and backward j − 1 left stage s.
double gpipe_recurrence(const std::vector<double>& f, const std::vector<double>& b, int m) {
  const std::size_t p = f.size();
  std::vector<std::vector<double>> F(p, std::vector<double>(static_cast<std::size_t>(m))), B = F;
  for (int j = 0; j < m; ++j)
    for (std::size_t s = 0; s < p; ++s)
      F[s][j] = std::max(s ? F[s - 1][j] : 0.0, j ? F[s][j - 1] : 0.0) + f[s];
  double end = 0;
  for (std::size_t i = 0; i < p; ++i) {
    const std::size_t s = p - 1 - i;
    for (int j = 0; j < m; ++j) {
      const double needs = s + 1 < p ? B[s + 1][j] : F[s][j];
      B[s][j] = std::max(needs, j ? B[s][j - 1] : F[s][static_cast<std::size_t>(m - 1)]) + b[s];
    }
    end = std::max(end, B[s][static_cast<std::size_t>(m - 1)]);
  }
  return end;
}

// A plan from its file's keys (program/plan.hpp parse_plan).
Plan plan_for(const std::string& mesh, std::int64_t batch, std::int64_t micro, std::int64_t seq) {
  return parse_plan(YAML::Load("mesh: {" + mesh + "}\nglobal_batch: " + std::to_string(batch) + "\nmicro_batch: " +
                               std::to_string(micro) + "\nseq_len: " + std::to_string(seq) + "\n"),
                    "test.yaml");
}

// Runs `prefix SCANSHARD_BIN args`; the exit code, stdout and stderr.
Result run(const std::string& args, const fs::path& dir, const std::string& prefix = "") {
  const auto out = dir / "out", err = dir / "err";
  const std::string cmd = prefix + " " + std::string(SCANSHARD_BIN) + " " + args + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), slurp(out), slurp(err)};
}

// The file as trace-event JSON: every event a complete span ("X": name, ts, dur ≥ 0, pid, tid) or a
// process/thread name ("M"); returns the complete spans.
std::vector<nlohmann::json> read_trace_events(const fs::path& file) {
  const auto j = nlohmann::json::parse(slurp(file));
  REQUIRE(j.is_object());
  REQUIRE(j.at("traceEvents").is_array());
  std::vector<nlohmann::json> spans;
  for (const auto& e : j.at("traceEvents")) {
    const std::string ph = e.at("ph");
    REQUIRE((ph == "X" || ph == "M"));
    REQUIRE(e.at("pid").is_number_integer());
    REQUIRE(e.at("tid").is_number_integer());
    if (ph == "M") {
      REQUIRE((e.at("name") == "process_name" || e.at("name") == "thread_name"));
      REQUIRE(e.at("args").at("name").is_string());
      continue;
    }
    REQUIRE(e.at("name").is_string());
    REQUIRE(e.at("ts").is_number());
    REQUIRE(e.at("dur").get<double>() >= 0);
    spans.push_back(e);
  }
  return spans;
}

}  // namespace

TEST_CASE("schedule: equal stages idle (p − 1)/(m + p − 1) of the makespan under GPipe and 1F1B, 1/v of it interleaved",
          "[timeline][schedule]") {
  // Narayanan et al. 2021 §2.2: with p stages of a forward f and a backward b per micro-batch the
  // makespan is (m + p − 1)(f + b) and every stage idles (p − 1)(f + b); v chunks of f/v and b/v
  // cut the idle to (p − 1)(f + b)/v (m a multiple of p).
  const double f = 1.0, b = 2.0;
  for (Schedule kind : {Schedule::gpipe, Schedule::one_f_one_b})
    for (std::int64_t pp : {1, 2, 3, 4})
      for (std::int64_t m : {1, 2, 3, 5, 8}) {
        INFO(to_string(kind) << " p=" << pp << " m=" << m);
        const auto t = pipeline_timeline(kind, m, equal_stages(pp, 1, f, b));
        const double makespan = static_cast<double>(m + pp - 1) * (f + b);
        CHECK(t.makespan == Approx(makespan));
        CHECK(pipeline_makespan(kind, m, equal_stages(pp, 1, f, b)) == t.makespan);
        for (double i : idle(t)) CHECK(i / makespan == Approx(static_cast<double>(pp - 1) / static_cast<double>(m + pp - 1)));
      }
  for (std::int64_t pp : {2, 3, 4})
    for (std::int64_t v : {2, 3})
      for (std::int64_t m : {pp, 2 * pp}) {
        INFO("interleaved p=" << pp << " v=" << v << " m=" << m);
        const auto t = pipeline_timeline(Schedule::one_f_one_b, m, equal_stages(pp, v, f / static_cast<double>(v), b / static_cast<double>(v)));
        for (double i : idle(t)) CHECK(i == Approx(static_cast<double>(pp - 1) * (f + b) / static_cast<double>(v)));
      }
}

TEST_CASE("schedule: GPipe over unequal stages equals its recurrence, and 1F1B hides a slow first stage's bubble",
          "[timeline][schedule]") {
  const std::vector<std::vector<double>> fs_ = {{1.0, 0.5, 0.7}, {0.3, 0.3, 1.1}, {2.0, 0.1}, {0.4, 0.9, 0.2, 0.6}};
  for (const auto& f : fs_)
    for (int m : {1, 2, 4, 7}) {
      std::vector<double> b;
      Chunks c;
      for (double x : f) {
        b.push_back(1.7 * x + 0.05);
        c.push_back({ChunkSeconds{x, b.back()}});
      }
      INFO("stages " << f.size() << " m=" << m);
      CHECK(pipeline_makespan(Schedule::gpipe, m, c) == Approx(gpipe_recurrence(f, b, m)).epsilon(1e-12));
    }
  // 1F1B, 2 stages, stage 0 slow (f = b = 1) and stage 1 fast (0.1 each), m = 4, worked by hand:
  // stage 0 runs F0 [0,1] F1 [1,2]; stage 1 F0 [1,1.1] B0 [1.1,1.2]; stage 0 B0 [2,3] F2 [3,4]
  // B1 [4,5] F3 [5,6] B2 [6,7] B3 [7,8] — never waiting after F0: the makespan is 4 × 2 = 8, not
  // the flow shop's Σ t + (m − 1)·max = 0.2 + 2 + 3 × 2 = 8.2.
  const Chunks slow_first = {{ChunkSeconds{1, 1}}, {ChunkSeconds{0.1, 0.1}}};
  CHECK(pipeline_makespan(Schedule::one_f_one_b, 4, slow_first) == Approx(8.0));
}

TEST_CASE("simulate's step time is the predicted timeline's makespan, its bubble the critical stage's idle time",
          "[timeline][sim]") {
  struct Case { const char* model; const char* cluster; const char* mesh; std::int64_t batch, micro, seq, v; Schedule schedule; int zero; };
  for (const Case& k : {Case{"hawk-tiny", "cpu-local", "pipeline: 2", 8, 1, 64, 1, Schedule::one_f_one_b, 0},
                        Case{"hawk-tiny", "cpu-local", "pipeline: 2", 8, 1, 64, 1, Schedule::gpipe, 0},
                        Case{"griffin-1.3b", "tpu-v5p-256", "pipeline: 4, data: 64", 512, 1, 2048, 1, Schedule::one_f_one_b, 0},
                        Case{"griffin-1.3b", "tpu-v5p-256", "pipeline: 4, data: 64", 512, 1, 2048, 2, Schedule::one_f_one_b, 0},
                        Case{"mqa-tiny", "cpu-local", "pipeline: 2", 8, 2, 64, 1, Schedule::one_f_one_b, 0},
                        Case{"griffin-1.3b", "tpu-v5p-256", "fsdp: 256", 256, 1, 2048, 1, Schedule::one_f_one_b, 3}}) {
    INFO(k.model << " " << k.mesh << " v=" << k.v << " " << to_string(k.schedule));
    const ModelSpec m = load_model(k.model);
    const ClusterSpec c = load_cluster(k.cluster);
    Plan p = plan_for(k.mesh, k.batch, k.micro, k.seq);
    p.virtual_stages = k.v;
    p.schedule = k.schedule;
    p.zero_stage = k.zero;
    const Estimate e = simulate(m, p, c);
    const Timeline t = predicted_timeline(m, p, c);
    CHECK(t.makespan() == Approx(e.step_seconds).epsilon(1e-9));
    double idle_critical = 0, passes = 0;
    for (const auto& s : t.spans) {
      if (s.process != e.critical_stage) continue;
      if (s.category == "bubble") idle_critical += s.seconds;
      if (s.category == "forward" || s.category == "backward") passes += s.seconds;
    }
    CHECK(idle_critical == Approx(e.seconds[static_cast<int>(Bucket::bubble)]).margin(1e-12 * e.step_seconds));
    CHECK(passes == Approx(static_cast<double>(p.micro_batches()) * e.microbatch_seconds).epsilon(1e-9));
    // one forward and one backward span per micro-batch and model chunk on every stage
    std::map<std::int64_t, std::int64_t> per_stage;
    for (const auto& s : t.spans)
      if (s.category == "forward" || s.category == "backward") ++per_stage[s.process];
    CHECK(per_stage.size() == static_cast<std::size_t>(p.mesh[Axis::pipeline]));
    for (const auto& [stage, n] : per_stage) CHECK(n == 2 * p.micro_batches() * std::max<std::int64_t>(1, p.mesh[Axis::pipeline] > 1 ? k.v : 1));
  }
}

TEST_CASE("simulate --timeline writes trace-event JSON that ends at the step time simulate prints", "[timeline][cli]") {
  const Scratch s("sim-timeline");
  const auto file = s.dir / "p.json";
  const auto r = run("simulate --model hawk-tiny --cluster cpu-local --mesh pipeline=2 --global-batch 8 --micro-batch 1 "
                     "--seq-len 64 --json --timeline " + file.string(), s.dir);
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  const double step = nlohmann::json::parse(r.out).at("step_seconds");
  const auto spans = read_trace_events(file);
  double end = 0;
  std::map<std::int64_t, int> forwards;
  for (const auto& e : spans) {
    end = std::max(end, (e.at("ts").get<double>() + e.at("dur").get<double>()) / 1e6);
    if (e.at("cat") == "forward") ++forwards[e.at("pid").get<std::int64_t>()];
  }
  CHECK(end == Approx(step).epsilon(1e-9));
  CHECK(forwards == std::map<std::int64_t, int>{{0, 8}, {1, 8}});  // 8 micro-batches through each of 2 stages
}

#ifdef SCANSHARD_MPIRUN
TEST_CASE("train --timeline on 2 ranks: one process per rank whose step spans add up to the trace's per-op seconds",
          "[timeline][cli][mpi]") {
  const Scratch s("train-timeline");
  const auto plan = s.dir / "plan.yaml", trace = s.dir / "trace.json", timeline = s.dir / "timeline.json";
  std::ofstream(plan) << "model: griffin-tiny\nmesh: {pipeline: 2}\nglobal_batch: 4\nmicro_batch: 1\nseq_len: 16\n";
  const auto r = run("train --plan " + plan.string() + " --steps 2 --trace " + trace.string() + " --timeline " + timeline.string(),
                     s.dir, std::string("OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ") + SCANSHARD_MPIRUN + " -n 2");
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  const auto spans = read_trace_events(timeline);
  // rank 0's step spans, summed per (step, phase, op, name), against rank 0's --trace cells
  std::map<std::tuple<std::int64_t, std::string, std::string, std::string>, double> sums;
  std::map<std::int64_t, int> passes, sends;
  for (const auto& e : spans) {
    const auto pid = e.at("pid").get<std::int64_t>();
    if (e.at("cat") == "pass") ++passes[pid];
    if (e.at("cat") != "step") continue;
    const auto& a = e.at("args");
    if (a.at("op") == "send_recv") ++sends[pid];
    if (pid != 0) continue;
    sums[{static_cast<std::int64_t>(a.at("step").get<double>()), a.at("phase"), a.at("op"), a.at("name")}] += a.at("seconds").get<double>();
  }
  CHECK(passes == std::map<std::int64_t, int>{{0, 16}, {1, 16}});  // 2 steps × 4 micro-batches × forward and backward
  CHECK(sends.size() == 2);  // pipeline transfers on both ranks
  const auto tr = nlohmann::json::parse(slurp(trace));
  std::size_t cells = 0;
  for (const auto& st : tr.at("steps"))
    for (const auto& op : st.at("ops")) {
      const auto key = std::tuple{st.at("step").get<std::int64_t>(), op.at("phase").get<std::string>(), op.at("op").get<std::string>(),
                                  op.at("name").get<std::string>()};
      INFO(std::get<1>(key) << " " << std::get<2>(key) << " " << std::get<3>(key) << " step " << std::get<0>(key));
      REQUIRE(sums.count(key) == 1);
      CHECK(sums.at(key) == Approx(op.at("seconds").get<double>()).epsilon(1e-12));
      ++cells;
    }
  CHECK(cells == sums.size());
}
#endif
