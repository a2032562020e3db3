// tests/unit/test_train_job.cpp — `scanshard train` under mpirun as a batch job meets it: a stop
// signal (SIGUSR1 to mpirun, which forwards it; SIGTERM to one rank alone) finishes the step,
// checkpoints, exits 0, and the resumed run ends with the parameters of an uninterrupted one; a
// rank stopped with SIGSTOP ends the job with a message naming it; an input error's message
// reaches the terminal at 2, 3 and 4 ranks, every time.
// The signals are sent when the trainer has printed its first step (read from its output as it
// runs), never after a sleep; a broken stop would run its 10^6 steps into ctest's TIMEOUT.
#include <catch2/catch.hpp>

#include <csignal>
#include <regex>
#include <string>
#include <vector>

#include "program/param_layout.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "tests/common/shell.hpp"
#include "train/checkpoint.hpp"
#include "train/checkpoint_dir.hpp"

using namespace scanshard;
using testing::Shell;

#ifdef SCANSHARD_MPIRUN
namespace {

const std::string kPlan = std::string(SCANSHARD_TEST_DATA) + "/../../configs/plans/griffin-tiny-cpu-2.yaml";

std::string mpirun(int ranks, const std::string& train_args) {
  return std::string("env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ") + SCANSHARD_MPIRUN + " -n " + std::to_string(ranks) + " " +
         SCANSHARD_BIN + " train " + train_args;
}

// Every parameter of a checkpoint of griffin-tiny, read whole by this process (serial HDF5).
std::vector<float> checkpoint_params(const std::string& path) {
  const Layout lay(load_model("griffin-tiny"));
  std::vector<float> params(static_cast<std::size_t>(lay.total)), m1(params.size()), m2(params.size());
  std::vector<train::Slab> slabs;
  std::vector<float*> p, a, b;
  for (std::size_t i = 0; i < lay.tensors.size(); ++i) {
    slabs.push_back(train::whole_tensor(lay.tensors[i]));
    p.push_back(params.data() + lay.offset[i]);
    a.push_back(m1.data() + lay.offset[i]);
    b.push_back(m2.data() + lay.offset[i]);
  }
  train::read_checkpoint(nullptr, path, lay, slabs, p, a, b);
  return params;
}

// The step a stopped run names: "stopped by SIGTERM after step 4 (...)".
std::int64_t stopped_after(const std::string& out) {
  std::smatch m;
  return std::regex_search(out, m, std::regex("stopped by SIG[A-Z0-9]+ after step ([0-9]+)")) ? std::stoll(m[1].str()) : -1;
}

// Runs 10^6 steps at 2 ranks, sends `sig` when step 1 is printed (to mpirun, or to one rank),
// resumes from the checkpoint to step k + 2 and compares with k + 2 uninterrupted steps. With
// `from_dir` the resume names the checkpoint directory, whose `latest` pointer must lead to step k.
void stop_and_resume(int sig, bool to_one_rank, const std::string& signame, bool from_dir) {
  testing::TempDir t("scanshard-stop-");
  const std::string ck = (t.path / "ck").string(), ref = (t.path / "ref").string();
  testing::Watched run(mpirun(2, "--plan " + kPlan + " --steps 1000000 --checkpoint-dir " + ck));
  bool sent = false;
  const Shell first = run.run([&](const std::string& line) {
    if (sent || line.rfind("step 1 loss", 0) != 0) return;
    sent = true;
    if (!to_one_rank) {
      ::kill(run.pid(), sig);
      return;
    }
    const auto ranks = testing::children_named(run.pid(), "scanshard");
    REQUIRE(ranks.size() == 2);
    ::kill(ranks.back(), sig);  // one rank alone: the others learn it in the step's all-reduce
  });
  INFO(first.out);
  REQUIRE(sent);
  CHECK(first.code == 0);
  const std::int64_t k = stopped_after(first.out);
  REQUIRE(k >= 1);
  CHECK_THAT(first.out, Catch::Contains("stopped by " + signame));
  CHECK_THAT(first.out, Catch::Contains("optimizer: AdamW lr 0.001, betas (0.9, 0.95)"));  // printed at start
  const std::string at_k = ck + "/" + train::step_file_name(k);
  CHECK_THAT(first.out, Catch::Contains("resume with --resume " + at_k));

  const Shell resumed =
      testing::sh(mpirun(2, "--plan " + kPlan + " --steps 2 --checkpoint-dir " + ck + " --resume " + (from_dir ? ck : at_k)), t.path);
  INFO(resumed.out);
  REQUIRE(resumed.code == 0);
  // says where it resumed and that --steps counted the steps after the checkpoint
  CHECK_THAT(resumed.out, Catch::Contains("resumed from step " + std::to_string(k) + " of " + at_k + ": running steps " +
                                          std::to_string(k + 1) + ".." + std::to_string(k + 2)));
  const Shell whole = testing::sh(mpirun(2, "--plan " + kPlan + " --steps " + std::to_string(k + 2) + " --checkpoint-dir " + ref), t.path);
  INFO(whole.out);
  REQUIRE(whole.code == 0);
  const std::string name = train::step_file_name(k + 2);
  // the same plan and ranks, data cursor, moments and step count: the same bits
  CHECK(checkpoint_params(ck + "/" + name) == checkpoint_params(ref + "/" + name));
}

}  // namespace

TEST_CASE("train: SIGUSR1 to mpirun stops every rank after a step with a checkpoint, and resuming equals an uninterrupted run",
          "[cli][train][job]") {
  stop_and_resume(SIGUSR1, false, "SIGUSR1", true);
}

TEST_CASE("train: SIGTERM to one rank stops every rank at the same step, and resuming equals an uninterrupted run",
          "[cli][train][job]") {
  stop_and_resume(SIGTERM, true, "SIGTERM", false);
}

TEST_CASE("train: a rank stopped with SIGSTOP ends the job with a message naming it (watchdog)", "[cli][train][job]") {
  // --watchdog-seconds 2: the other rank's next wait times out after 2 s, its heartbeat to the
  // stopped rank goes unanswered for min(10 s, 2 s), it names the rank and aborts the job.
  testing::TempDir t("scanshard-sigstop-");
  testing::Watched run(mpirun(2, "--plan " + kPlan + " --steps 1000000 --watchdog-seconds 2"));
  pid_t stopped = 0;
  const Shell r = run.run([&](const std::string& line) {
    if (stopped || line.rfind("step 1 loss", 0) != 0) return;
    const auto ranks = testing::children_named(run.pid(), "scanshard");
    REQUIRE(ranks.size() == 2);
    stopped = ranks.back();
    ::kill(stopped, SIGSTOP);
  });
  INFO(r.out);
  REQUIRE(stopped != 0);
  CHECK(r.code != 0);
  CHECK_THAT(r.out, Catch::Contains("watchdog"));
  CHECK_THAT(r.out, Catch::Contains("(pid " + std::to_string(stopped) + " on "));
  CHECK_THAT(r.out, Catch::Contains("did not answer a heartbeat"));
}

TEST_CASE("train: an input error's message reaches the terminal at 2, 3 and 4 ranks, ten times each", "[cli][train][job]") {
  // Before the fix rank 0 printed after MPI_Finalize, and mpirun, seeing another rank exit with 2,
  // sometimes killed it first: only mpirun's banner and the exit code were left.
  testing::TempDir t("scanshard-errors-");
  const std::string file = (t.path / "a-file").string();
  testing::sh("touch " + file, t.path);
  struct Case {
    int ranks;
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {2, "--on-nan bogus", "--on-nan: unknown value 'bogus' (one of: stop, skip)"},  // input checks
      {2, "--checkpoint-dir " + file + "/sub", "--checkpoint-dir"},                   // output checks (rank 0 decides)
      {3, "", "has 2 devices but the job has 3 ranks"},                               // mesh ≠ ranks
      {4, "", "has 2 devices but the job has 4 ranks"},
  };
  for (const auto& c : cases)
    for (int i = 0; i < 10; ++i) {
      const Shell r = testing::sh(mpirun(c.ranks, "--plan " + kPlan + " --steps 1 " + c.args), t.path);
      INFO(c.ranks << " ranks, run " << i << ": " << r.out);
      CHECK(r.code == 2);
      CHECK_THAT(r.out, Catch::Contains("scanshard: error: ") && Catch::Contains(c.message));
    }
}
#endif
