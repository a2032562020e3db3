// tests/mpi/test_train_job.cpp — training as a batch job: checkpoint retention (--keep-last) and
// the `latest` pointer, and a stop requested on one rank (what SIGTERM / SIGUSR1 set) that every
// rank honours at the same step, checkpoints, and resumes to the parameters of an uninterrupted run.
// The reference is always a run of the same plan without the feature (no magic numbers).
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "train/checkpoint_dir.hpp"
#include "train/comm.hpp"
#include "train/runner.hpp"

using namespace scanshard;
namespace fs = std::filesystem;

namespace {

// A directory every rank names alike (rank 0's pid), created by rank 0; removed at scope exit.
struct SharedDir {
  const mpi::Comm& world;
  std::string path;
  SharedDir(const mpi::Comm& w, const std::string& prefix) : world(w) {
    std::int64_t id[1] = {static_cast<std::int64_t>(::getpid())};
    world.broadcast(std::span<std::int64_t>(id, 1), 0);
    path = (fs::temp_directory_path() / (prefix + std::to_string(id[0]))).string();
    if (world.rank() == 0) {
      fs::remove_all(path);
      fs::create_directories(path);
    }
    world.barrier();
  }
  ~SharedDir() {
    world.barrier();
    std::error_code ec;
    if (world.rank() == 0) fs::remove_all(path, ec);
  }
};

// griffin-tiny, data-parallel over every rank of the world.
Plan data_plan(std::int64_t ranks) {
  Plan p;
  p.model = "griffin-tiny";
  p.mesh[Axis::data] = ranks;
  p.global_batch = 4 * ranks;
  p.micro_batch = 2;
  p.seq_len = 16;
  return p;
}

// What every test here trains: griffin-tiny on the repository's corpus, data-parallel over the world.
struct Job {
  const mpi::Comm world = mpi::Comm::world();
  const ModelSpec m = load_model("griffin-tiny");
  const std::vector<std::uint8_t> data = train::load_bytes(train::default_corpus_path(), 1000);
  const Plan p = data_plan(world.size());
  train::Result run(const train::Options& o) const { return train::run(m, p, data, o, &world); }
};

// Trains one step into a checkpoint in `dir`; returns the options that resume from it (one more
// step, no new checkpoints).
train::Options resume_after_one_step(const Job& job, const SharedDir& dir) {
  train::Options o;
  o.steps = 1;
  o.checkpoint_dir = dir.path;
  job.run(o);
  o.checkpoint_dir.clear();
  o.resume = dir.path + "/" + train::step_file_name(1);
  return o;
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> n;
  for (const auto& e : fs::directory_iterator(dir)) n.push_back(e.path().filename().string());
  std::sort(n.begin(), n.end());
  return n;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("checkpoint names: zero-padded step files list in step order, readers accept padded and plain", "[train][job]") {
  CHECK(train::step_file_name(12) == "step-00000012.h5");  // kStepDigits = 8
  CHECK(train::step_of_file_name("step-00000012.h5") == 12);
  CHECK(train::step_of_file_name("step-12.h5") == 12);  // written before the names were padded
  CHECK_FALSE(train::step_of_file_name("step-.h5"));
  CHECK_FALSE(train::step_of_file_name("step-1x.h5"));
  CHECK_FALSE(train::step_of_file_name("step-3.h5.tmp-42"));
  // a byte-wise sort (ls, a shell glob) of the names is the step order
  std::vector<std::string> names;
  for (std::int64_t s : {10, 9, 100, 1}) names.push_back(train::step_file_name(s));
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{train::step_file_name(1), train::step_file_name(9), train::step_file_name(10),
                                          train::step_file_name(100)});
}

TEST_CASE("train --keep-last 2: only the two newest step files stay, latest names the newest", "[train][job]") {
  const Job job;
  const mpi::Comm& world = job.world;
  const SharedDir dir(world, "scanshard-keep-");
  // another run's file numbered above this run's steps: retention leaves it alone
  if (world.rank() == 0) std::ofstream(dir.path + "/" + train::step_file_name(99)) << "not ours";
  world.barrier();
  train::Options o;
  o.steps = 5;
  o.checkpoint_dir = dir.path;
  o.checkpoint_every = 1;
  o.keep_last = 2;
  const auto r = job.run(o);
  world.barrier();
  std::vector<std::string> written;
  for (std::int64_t s = 1; s <= 5; ++s) written.push_back(dir.path + "/" + train::step_file_name(s));
  CHECK(r.checkpoints == written);  // every step wrote its file ...
  if (world.rank() == 0) {
    // ... and after step s the files older than s − 1 went: steps 1, 2, 3 are gone
    CHECK(r.pruned == std::vector<std::string>(written.begin(), written.begin() + 3));
    CHECK(names_in(dir.path) == std::vector<std::string>{"latest", train::step_file_name(4), train::step_file_name(5),
                                                         train::step_file_name(99)});
    CHECK(read_text(dir.path + "/latest") == train::step_file_name(5) + "\n");
  } else {
    CHECK(r.pruned.empty());
  }
}

TEST_CASE("a stop asked on one rank stops every rank after the same step, and resuming equals an uninterrupted run", "[train][job]") {
  // What SIGTERM / SIGUSR1 do in `scanshard train`: only the last rank is asked, at its third step.
  const Job job;
  const mpi::Comm& world = job.world;
  const SharedDir dir(world, "scanshard-stop-");
  train::Options o;
  o.steps = 5;
  const auto whole = job.run(o);  // the reference: 5 steps in one go
  REQUIRE(whole.stopped_after == 0);

  o.steps = 100;  // far more than run: the stop ends it
  o.checkpoint_dir = dir.path;
  int asked = 0;
  o.stop_requested = [&] { return world.rank() == world.size() - 1 && ++asked == 3; };
  const auto stopped = job.run(o);
  CHECK(stopped.stopped_after == 3);
  CHECK(stopped.losses.size() == 3);  // every rank, not only the one asked
  CHECK(stopped.checkpoints == std::vector<std::string>{dir.path + "/" + train::step_file_name(3)});

  o.stop_requested = nullptr;
  o.checkpoint_dir.clear();
  o.resume = dir.path + "/" + train::step_file_name(3);
  o.steps = 2;
  const auto resumed = job.run(o);
  CHECK(resumed.first_step == 3);
  REQUIRE(resumed.losses.size() == 2);
  // the same plan and ranks, the same data cursor, moments and step count: the same bits
  CHECK(resumed.losses[0] == whole.losses[3]);
  CHECK(resumed.losses[1] == whole.losses[4]);
  CHECK(resumed.params == whole.params);
}

TEST_CASE("optimizer: a warm-up step equals a constant run at that step's learning rate", "[train][job][optimizer]") {
  // Step 1 of a 4-step warm-up runs at lr / 4 (optimizer.hpp), so it must equal a plain step at lr / 4.
  const Job job;
  train::Options warm;
  warm.steps = 1;
  warm.schedule.warmup_steps = 4;
  train::Options plain;
  plain.steps = 1;
  plain.adamw.lr = warm.adamw.lr / 4;  // exact: a power of two
  const auto a = job.run(warm), b = job.run(plain);
  CHECK(a.params == b.params);
  train::Options full;
  full.steps = 1;
  CHECK(job.run(full).params != a.params);  // and the warm-up did change the step
}

TEST_CASE("optimizer: a resume with another optimizer is refused naming the change, unless allowed", "[train][job][optimizer]") {
  const Job job;
  const mpi::Comm& world = job.world;
  const SharedDir dir(world, "scanshard-optim-");
  train::Options o = resume_after_one_step(job, dir);
  o.adamw.lr = 2e-3f;
  o.schedule.warmup_steps = 5;
  CHECK_THROWS_WITH(job.run(o),
                    Catch::Contains("/meta optimizer: this run's optimizer differs from the checkpoint's (lr 0.001 → 0.002, "
                                    "warmup_steps 0 → 5); pass --allow-optimizer-change"));
  o.allow_optimizer_change = true;
  const auto r = job.run(o);
  CHECK(r.first_step == 1);
  CHECK(r.losses.size() == 1);
}

namespace {
// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) bit by bit: the reference for the
// runner's zlib CRC of the token ids, each as 4 little-endian bytes.
std::uint32_t crc32_of_ids(const std::vector<std::int32_t>& ids) {
  std::uint32_t c = 0xffffffffu;
  for (std::int32_t id : ids)
    for (int k = 0; k < 4; ++k) {
      c ^= (static_cast<std::uint32_t>(id) >> (8 * k)) & 0xffu;
      for (int bit = 0; bit < 8; ++bit) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
  return ~c;
}
}  // namespace

TEST_CASE("data: the recorded identity is the whole token stream's CRC-32 at any rank count, from memory or a file",
          "[train][job][data]") {
  const Job job;
  const std::vector<std::int32_t> ids(job.data.begin(), job.data.end());
  const auto mem = train::Tokens(ids).check_vocab(job.m.vocab, &job.world);
  CHECK(mem.path.empty());
  CHECK(mem.bytes == 4 * static_cast<std::int64_t>(ids.size()));
  CHECK(mem.crc32 == crc32_of_ids(ids));
  const SharedDir dir(job.world, "scanshard-data-id-");
  const std::string file = dir.path + "/corpus.bin";
  if (job.world.rank() == 0) std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(job.data.data()), std::streamsize(job.data.size()));
  job.world.barrier();
  const auto disk = train::Tokens::open_file(file, train::TokenFormat::bytes, 10).check_vocab(job.m.vocab, &job.world);
  CHECK(disk.path == file);
  CHECK(disk.bytes == static_cast<std::int64_t>(job.data.size()));  // the file's size: one byte per token
  CHECK(disk.crc32 == mem.crc32);                                      // the same ids
  const auto back = train::parse_data_identity(disk.to_yaml(), "test");
  CHECK(back.path == disk.path);
  CHECK(back.bytes == disk.bytes);
  CHECK(back.crc32 == disk.crc32);
}

TEST_CASE("data: a resume on other data is refused naming what changed, unless allowed", "[train][job][data]") {
  const Job job;
  const mpi::Comm& world = job.world;
  const SharedDir dir(world, "scanshard-data-");
  train::Options o = resume_after_one_step(job, dir);
  CHECK(job.run(o).first_step == 1);  // the same data resumes
  std::vector<std::uint8_t> edited = job.data;
  edited[100] ^= 1;  // one token changed: the same size, another CRC
  const auto n = static_cast<long long>(job.data.size());
  CHECK_THROWS_WITH(train::run(job.m, job.p, edited, o, &world),
                    Catch::Contains("/meta data: this run's data differs from the checkpoint's (tokens in memory → tokens in "
                                    "memory: crc32 0x") &&
                        !Catch::Contains("bytes ") && Catch::Contains("pass --allow-data-change"));
  std::vector<std::uint8_t> longer = job.data;
  longer.resize(job.data.size() + 7, 'a');
  CHECK_THROWS_WITH(train::run(job.m, job.p, longer, o, &world),
                    Catch::Contains("bytes " + std::to_string(4 * n) + " → " + std::to_string(4 * (n + 7))));
  o.allow_data_change = true;
  std::vector<std::string> notices;
  o.notice = [&](const std::string& s) { notices.push_back(s); };
  const auto r = train::run(job.m, job.p, edited, o, &world);
  CHECK(r.first_step == 1);
  REQUIRE(notices.size() == 1);
  CHECK_THAT(notices[0], Catch::Contains("--allow-data-change"));
}
