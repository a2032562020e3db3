// tests/mpi/test_comm.cpp — the error-checked MPI wrapper (train/comm.hpp) against serial
// computations: every rank can compute what every other rank contributed, so the expected result
// of each collective is a plain loop over ranks.
#include <catch2/catch.hpp>

#include <numeric>
#include <string>
#include <vector>

#include "train/comm.hpp"

using scanshard::mpi::Comm;
using scanshard::mpi::MpiError;

namespace {
// What rank r contributes at index i: distinct per rank and index, exact in float.
float contribution(int r, size_t i) { return static_cast<float>((r + 1) * 0.5 + static_cast<double>(i)); }
}  // namespace

TEST_CASE("MPI.allreduce_sum equals the serial sum over ranks", "[mpi]") {
  const Comm world = Comm::world();
  const size_t n = 1000 + 7;  // not a multiple of anything in particular
  std::vector<float> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = contribution(world.rank(), i);
  world.allreduce_sum(std::span<float>(data));
  for (size_t i = 0; i < n; ++i) {
    double expected = 0;
    for (int r = 0; r < world.size(); ++r) expected += contribution(r, i);
    REQUIRE(data[i] == Approx(expected).epsilon(1e-6));
  }
}

TEST_CASE("MPI.allgather concatenates every rank's block in rank order", "[mpi]") {
  const Comm world = Comm::world();
  const size_t n = 5;
  std::vector<double> mine(n), all(n * static_cast<size_t>(world.size()));
  for (size_t i = 0; i < n; ++i) mine[i] = 100.0 * world.rank() + static_cast<double>(i);
  world.allgather(std::span<const double>(mine), std::span<double>(all));
  for (int r = 0; r < world.size(); ++r)
    for (size_t i = 0; i < n; ++i) REQUIRE(all[static_cast<size_t>(r) * n + i] == 100.0 * r + static_cast<double>(i));
}

TEST_CASE("MPI.reduce_scatter_sum gives each rank its slice of the serial sum", "[mpi]") {
  const Comm world = Comm::world();
  const size_t block = 3;
  const size_t n = block * static_cast<size_t>(world.size());
  std::vector<float> in(n), out(block);
  for (size_t i = 0; i < n; ++i) in[i] = contribution(world.rank(), i);
  world.reduce_scatter_sum(std::span<const float>(in), std::span<float>(out));
  for (size_t j = 0; j < block; ++j) {
    const size_t i = static_cast<size_t>(world.rank()) * block + j;
    double expected = 0;
    for (int r = 0; r < world.size(); ++r) expected += contribution(r, i);
    REQUIRE(out[j] == Approx(expected).epsilon(1e-6));
  }
}

TEST_CASE("MPI.broadcast from the last rank", "[mpi]") {
  const Comm world = Comm::world();
  const int root = world.size() - 1;
  std::vector<std::int64_t> v(4, world.rank() == root ? 42 : -1);
  world.broadcast(std::span<std::int64_t>(v), root);
  for (auto x : v) REQUIRE(x == 42);
}

TEST_CASE("MPI.sendrecv around a ring receives the left neighbour's rank", "[mpi]") {
  const Comm world = Comm::world();
  const int P = world.size(), r = world.rank();
  std::vector<std::int32_t> send{r, 10 * r}, recv(2, -1);
  world.sendrecv(std::span<const std::int32_t>(send), (r + 1) % P, std::span<std::int32_t>(recv), (r - 1 + P) % P);
  const int left = (r - 1 + P) % P;
  REQUIRE(recv[0] == left);
  REQUIRE(recv[1] == 10 * left);
}

TEST_CASE("MPI.split groups ranks by color and orders them by key", "[mpi]") {
  const Comm world = Comm::world();
  const int color = world.rank() % 2;
  const Comm sub = world.split(color, -world.rank());  // reversed order within a group
  int expected_size = 0, expected_rank = 0;
  for (int r = 0; r < world.size(); ++r) {
    if (r % 2 != color) continue;
    ++expected_size;
    if (r > world.rank()) ++expected_rank;  // larger world rank = smaller key = earlier
  }
  REQUIRE(sub.size() == expected_size);
  REQUIRE(sub.rank() == expected_rank);
  std::vector<std::int64_t> v{world.rank()};
  sub.allreduce_sum(std::span<std::int64_t>(v));
  std::int64_t expected_sum = 0;
  for (int r = color; r < world.size(); r += 2) expected_sum += r;
  REQUIRE(v[0] == expected_sum);
}

TEST_CASE("MPI.errors name the call the place and the rank", "[mpi]") {
  const Comm world = Comm::world();
  SECTION("a size mismatch is caught before MPI is called") {
    std::vector<float> in(2), out(3 * static_cast<size_t>(world.size()));
    REQUIRE_THROWS_AS(world.allgather(std::span<const float>(in), std::span<float>(out)), MpiError);
  }
  SECTION("an MPI error code becomes an exception with context") {
    try {
      scanshard::mpi::check(MPI_ERR_ROOT, "MPI_Bcast(...)", "somefile.cpp", 12);
      FAIL("check() did not throw");
    } catch (const MpiError& e) {
      const std::string msg = e.what();
      REQUIRE(msg.find("MPI_Bcast") != std::string::npos);
      REQUIRE(msg.find("somefile.cpp:12") != std::string::npos);
      REQUIRE(msg.find("on rank " + std::to_string(world.rank())) != std::string::npos);
    }
  }
  SECTION("a real failing call (invalid root) throws instead of aborting") {
    std::vector<float> v(1);
    REQUIRE_THROWS_AS(world.broadcast(std::span<float>(v), world.size() + 5), MpiError);
  }
}
