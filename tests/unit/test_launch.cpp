// tests/unit/test_launch.cpp — `scanshard launch`: the `none` job script runs for real under
// mpirun at 2 ranks, and a second job resumes from the first one's checkpoint with the loss an
// uninterrupted run has at that step; the Slurm and PBS headers follow sbatch(1)'s
// `#SBATCH --option=value` and PBS Professional's `#PBS -l resource=value` directive syntax;
// plans that cannot be placed on the nodes asked for are refused with exit 2.
#include <catch2/catch.hpp>

#include "tests/common/shell.hpp"

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
using scanshard::testing::sh;
using scanshard::testing::Shell;

namespace {

std::string launch(const std::string& args) { return std::string(SCANSHARD_BIN) + " launch " + args; }

const std::string kPlan = std::string(SCANSHARD_TEST_DATA) + "/../../configs/plans/griffin-tiny-cpu-2.yaml";

struct TempDir : scanshard::testing::TempDir {
  TempDir() : scanshard::testing::TempDir("scanshard-launch-") {}
};

// The loss the trainer printed for `step` ("step 3 loss 4.622031 ...").
std::string loss_at(const std::string& out, int step) {
  std::smatch m;
  const std::regex re("step " + std::to_string(step) + " loss ([0-9.]+)");
  return std::regex_search(out, m, re) ? m[1].str() : "";
}

}  // namespace

#ifdef SCANSHARD_MPIRUN
TEST_CASE("launch --scheduler none: the script runs at 2 ranks and a second job resumes where it stopped", "[cli][launch]") {
  TempDir t;
  const std::string ck = (t.path / "ck").string(), job2 = (t.path / "job2.sh").string(), job3 = (t.path / "job3.sh").string();
  const std::string common = " --plan " + kPlan + " --nodes 1 --ranks-per-node 2 --scheduler none --checkpoint-every 1 --checkpoint-dir " + ck;
  REQUIRE(sh(launch(common + " --steps 2 --out " + job2), t.path).code == 0);
  REQUIRE(sh(launch(common + " --steps 3 --out " + job3), t.path).code == 0);
  // mpirun's own flags (as root: --allow-run-as-root --oversubscribe) through the script's hook
  std::string flags = SCANSHARD_MPIRUN;
  flags = flags.substr(std::min(flags.size(), flags.find(' ')));
  const std::string env = "OMP_NUM_THREADS=1 SCANSHARD_MPIRUN_FLAGS='" + flags + "' bash ";
  const Shell first = sh(env + job2, t.path);
  INFO(first.out);
  REQUIRE(first.code == 0);
  CHECK(fs::exists(ck + "/step-00000002.h5"));
  const Shell second = sh(env + job3, t.path);
  INFO(second.out);
  REQUIRE(second.code == 0);
  CHECK_THAT(second.out, Catch::Contains("resuming from step 2"));
  CHECK(fs::exists(ck + "/step-00000003.h5"));
  CHECK(loss_at(second.out, 2).empty());  // step 2 is not run again
  // the reference: the same plan for 3 steps without interruption
  const Shell whole = sh(std::string("OMP_NUM_THREADS=1 ") + SCANSHARD_MPIRUN + " -n 2 " + SCANSHARD_BIN + " train --steps 3 --plan " + kPlan, t.path);
  INFO(whole.out);
  REQUIRE(whole.code == 0);
  REQUIRE(!loss_at(whole.out, 3).empty());
  CHECK(loss_at(second.out, 3) == loss_at(whole.out, 3));
  const Shell third = sh(env + job3, t.path);  // nothing left to do
  CHECK(third.code == 0);
  CHECK_THAT(third.out, Catch::Contains("all 3 steps done"));
}
#endif

TEST_CASE("launch writes Slurm and PBS headers in their documented directive syntax", "[cli][launch]") {
  TempDir t;
  for (const char* sched : {"slurm", "pbs"}) {
    const std::string out = (t.path / (std::string(sched) + ".sh")).string();
    const Shell r = sh(launch("--plan " + kPlan + " --nodes 2 --ranks-per-node 1 --cpus-per-rank 4 --time 2-03:00:00 --scheduler " +
                              sched + " --partition gpu --out " + out),
                       t.path);
    INFO(r.out);
    REQUIRE(r.code == 0);
    std::ifstream in(out);
    std::string line, all;
    bool commands_started = false;
    int directives = 0;
    while (std::getline(in, line)) {
      all += line + "\n";
      if (line.starts_with("#!") || (line.starts_with("#") && !line.starts_with("#SBATCH") && !line.starts_with("#PBS"))) continue;
      if (line.starts_with("#SBATCH") || line.starts_with("#PBS")) {
        CHECK_FALSE(commands_started);  // directives come before the first command
        ++directives;
        const std::regex slurm(R"(#SBATCH --[a-z][a-z-]*(=\S+)?)"), pbs(R"(#PBS -[A-Za-z]( \S+)?)");
        CHECK(std::regex_match(line, std::string(sched) == "slurm" ? slurm : pbs));
        continue;
      }
      if (!line.empty()) commands_started = true;
    }
    CHECK(directives >= 5);
    if (std::string(sched) == "slurm") {
      for (const char* d : {"--nodes=2\n", "--ntasks-per-node=1\n", "--cpus-per-task=4\n", "--time=2-03:00:00\n", "--partition=gpu\n", "--requeue\n"})
        CHECK_THAT(all, Catch::Contains(std::string("#SBATCH ") + d));
      CHECK_THAT(all, Catch::Contains("scontrol requeue"));
    } else {
      CHECK_THAT(all, Catch::Contains("#PBS -l select=2:ncpus=4:mpiprocs=1:ompthreads=4\n"));
      CHECK_THAT(all, Catch::Contains("#PBS -l walltime=2-03:00:00\n"));
      CHECK_THAT(all, Catch::Contains("#PBS -r y\n"));
    }
    if (std::string(sched) == "slurm") {  // USR1 reaches mpirun, which forwards it; mpirun's TERM would kill the ranks
      CHECK_THAT(all, Catch::Contains("kill -USR1 \"$run\""));
      CHECK_THAT(all, !Catch::Contains("kill -TERM"));
    }
    CHECK_THAT(all, Catch::Contains("export OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=4"));
    CHECK_THAT(all, Catch::Contains("mpirun -n 2 --map-by ppr:1:node:PE=4 --bind-to core"));
    CHECK(sh("bash -n " + out, t.path).code == 0);
  }
}

TEST_CASE("launch: the job script reads zero-padded step files as decimal and keeps --keep-last", "[cli][launch]") {
  // step-00000009.h5 as an octal number is an error in bash arithmetic; as decimal it is step 9
  TempDir t;
  const std::string ck = (t.path / "ck").string(), job = (t.path / "job.sh").string();
  fs::create_directories(ck);
  std::ofstream(ck + "/step-00000009.h5") << "only its name is read";
  REQUIRE(sh(launch("--plan " + kPlan + " --nodes 1 --ranks-per-node 2 --scheduler none --steps 9 --keep-last 3 --checkpoint-dir " +
                    ck + " --out " + job), t.path).code == 0);
  std::ifstream in(job);
  const std::string script((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THAT(script, Catch::Contains("--keep-last 3"));
  const Shell r = sh("bash " + job, t.path);
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("all 9 steps done"));
}

TEST_CASE("launch refuses a plan the nodes cannot hold, naming the plan's key or the flag", "[cli][launch]") {
  TempDir t;
  const std::string tensor_plan = (t.path / "tp.yaml").string();
  std::ofstream(tensor_plan) << "model: griffin-tiny\nmesh: {tensor: 2, data: 2}\nglobal_batch: 4\nseq_len: 64\n";
  const struct {
    std::string args, message;
  } cases[] = {
      {"--plan " + kPlan + " --nodes 2 --ranks-per-node 2", "has 2 devices, but --nodes 2 × --ranks-per-node 2 = 4 ranks"},
      {"--plan " + tensor_plan + " --nodes 4 --ranks-per-node 1", "mesh.tensor: a tensor group of 2 ranks would span nodes of 1"},
      {"--plan " + kPlan + " --nodes 1 --ranks-per-node 2 --time 90", "--time: expected [D-]HH:MM:SS"},
      {"--plan " + kPlan + " --nodes 1 --ranks-per-node 2 --job-name 'a;b'", "--job-name: letters, digits"},
      {"--plan " + kPlan + " --nodes 1 --ranks-per-node 2 --scheduler lsf", "--scheduler: one of slurm, pbs, none"},
  };
  for (const auto& c : cases) {
    const Shell r = sh(launch(c.args), t.path);
    INFO(c.args << "\n" << r.out);
    CHECK(r.code == 2);
    CHECK_THAT(r.out, Catch::Contains(c.message));
  }
}
