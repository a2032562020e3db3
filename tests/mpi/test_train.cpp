// tests/mpi/test_train.cpp — the runner's central contract for its first slice (issue 8): for
// griffin-tiny, hawk-tiny and mqa-tiny on a data-parallel mesh of the world size (and fsdp at 2
// ranks), the loss at every step and every parameter after 3 steps equal a single-process
// reference run (mesh of 1, no MPI call) computed on each rank, to relative 1e-5.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include "program/presets.hpp"
#include "train/comm.hpp"
#include "train/runner.hpp"

using namespace scanshard;

namespace {

Plan tiny_plan(const std::string& model, Axis axis, std::int64_t n) {
  Plan p;
  p.model = model;
  p.mesh[axis] = n;
  p.global_batch = 12;  // divisible by 1, 2, 3 and 4 replicas
  p.micro_batch = 1;    // several micro-batches per replica: gradient accumulation is exercised
  p.seq_len = 16;
  p.param_dtype = p.act_dtype = DType::fp32;
  return p;
}

bool close(double a, double b, double rel) { return std::abs(a - b) <= rel * std::max({std::abs(a), std::abs(b), 1e-3}); }

void check_equal_to_reference(const std::string& name, Axis axis) {
  const auto world = mpi::Comm::world();
  const ModelSpec m = load_model(name);
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  train::Options o;
  o.steps = 3;
  o.seed = 7;
  const auto dist = train::run(m, tiny_plan(name, axis, world.size()), data, o, &world);
  const auto ref = train::run(m, tiny_plan(name, axis, 1), data, o, nullptr);
  REQUIRE(dist.losses.size() == 3);
  for (size_t s = 0; s < 3; ++s) {
    INFO(name << " step " << s << ": " << dist.losses[s] << " vs reference " << ref.losses[s]);
    CHECK(close(dist.losses[s], ref.losses[s], 1e-5));
  }
  CHECK(ref.losses[2] < ref.losses[0]);  // it learns
  REQUIRE(dist.params.size() == ref.params.size());
  size_t bad = 0, worst = 0;
  double worst_rel = 0;
  for (size_t i = 0; i < ref.params.size(); ++i) {
    const double a = dist.params[i], b = ref.params[i];
    const double rel = std::abs(a - b) / std::max({std::abs(a), std::abs(b), 1e-3});
    if (rel > 1e-5) ++bad;
    if (rel > worst_rel) { worst_rel = rel; worst = i; }
  }
  INFO(name << ": " << bad << " of " << ref.params.size() << " parameters differ; worst relative " << worst_rel
            << " at " << worst << " (" << dist.params[worst] << " vs " << ref.params[worst] << ")");
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("train: data-parallel griffin-tiny equals the single-process run", "[train]") {
  check_equal_to_reference("griffin-tiny", Axis::data);
}
TEST_CASE("train: data-parallel hawk-tiny equals the single-process run", "[train]") {
  check_equal_to_reference("hawk-tiny", Axis::data);
}
TEST_CASE("train: data-parallel mqa-tiny equals the single-process run", "[train]") {
  check_equal_to_reference("mqa-tiny", Axis::data);
}
TEST_CASE("train: fsdp (as data parallelism) griffin-tiny equals the single-process run", "[train]") {
  check_equal_to_reference("griffin-tiny", Axis::fsdp);
}
TEST_CASE("train: mesh size different from the world size is a PlanError", "[train]") {
  const auto world = mpi::Comm::world();
  const ModelSpec m = load_model("griffin-tiny");
  const auto data = train::load_bytes(train::default_corpus_path(), 1000);
  CHECK_THROWS_AS(train::run(m, tiny_plan("griffin-tiny", Axis::data, world.size() + 1), data, {}, &world), PlanError);
  // Not yet supported by the runner: tensor / sequence / pipeline axes and RWKV.
  for (Axis a : {Axis::tensor, Axis::sequence, Axis::pipeline})
    CHECK_THROWS_AS(train::check_supported(m, tiny_plan("griffin-tiny", a, 2), 2), PlanError);
  CHECK_THROWS_AS(train::check_supported(load_model("rwkv4-tiny"), tiny_plan("rwkv4-tiny", Axis::data, 1), 1),
                  PlanError);
}
