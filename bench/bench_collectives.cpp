// bench/bench_collectives.cpp — what the MPI library achieves for the collectives the runner uses,
// through the runner's own wrapper (train/comm.hpp): reduce-scatter (the ZeRO gradient step, block
// and uneven-count forms), all-reduce and all-gather, float and double, at a few sizes. The
// all-reduce of the same buffer is the same-run baseline: an ideal reduce-scatter moves half its
// bytes, so reduce-scatter / all-reduce time should be ≈ 0.5.
// Run: mpirun -n 2 build/bench/bench_collectives
#include <cstdio>
#include <span>
#include <vector>

#include <mpi.h>

#include "train/comm.hpp"

using namespace scanshard;

namespace {

template <class F>
double seconds(const mpi::Comm& w, F&& f) {  // best of 5 after a warm-up
  f();
  double best = 1e300;
  for (int i = 0; i < 5; ++i) {
    w.barrier();
    const double t0 = MPI_Wtime();
    f();
    best = std::min(best, MPI_Wtime() - t0);
  }
  double worst = best;  // the slowest rank's best
  MPI_Allreduce(&best, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

template <class T>
void run(const mpi::Comm& w, const char* type) {
  const int P = w.size();
  for (long n : {100'000L, 600'000L, 4'000'000L}) {
    n = n / P * P;
    std::vector<T> in(static_cast<std::size_t>(n), T(0)), out(static_cast<std::size_t>(n / P));
    std::vector<int> counts(static_cast<std::size_t>(P), static_cast<int>(n / P));
    const double ar = seconds(w, [&] { w.allreduce_sum(std::span<T>(in)); });
    const double rs = seconds(w, [&] { w.reduce_scatter_sum(std::span<const T>(in), std::span<T>(out)); });
    const double rsv = seconds(w, [&] { w.reduce_scatter_sum_v(std::span<const T>(in), std::span<T>(out), counts); });
    const double ag = seconds(w, [&] { w.allgather(std::span<const T>(out), std::span<T>(in)); });
    if (w.rank() == 0)
      std::printf("%-6s %9ld elements (%6.1f MB): all-reduce %8.3f ms | reduce-scatter block %8.3f ms (%.2fx all-reduce), "
                  "v %8.3f ms (%.2fx) | all-gather %8.3f ms (%.2fx)\n",
                  type, n, double(n) * sizeof(T) / 1e6, ar * 1e3, rs * 1e3, rs / ar, rsv * 1e3, rsv / ar, ag * 1e3, ag / ar);
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    const mpi::Comm w = mpi::Comm::world();
    if (w.rank() == 0) std::printf("bench_collectives: %d ranks (ideal: reduce-scatter and all-gather ≈ 0.5x all-reduce)\n", w.size());
    run<float>(w, "float");
    run<double>(w, "double");
  }
  MPI_Finalize();
  return 0;
}
