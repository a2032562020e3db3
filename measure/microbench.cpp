// measure/microbench.cpp — see microbench.hpp.
#include "measure/microbench.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/kv_cache.hpp"
#include "kernels/linear.hpp"
#include "kernels/rmsnorm.hpp"
#include "measure/probe.hpp"
#include "measure/vector_loops.hpp"
#include "program/presets.hpp"
#include "reports/stats.hpp"
#include "sim/cost.hpp"
#include "train/plan_runs.hpp"
#include "train/runner.hpp"

namespace scanshard::measure {
namespace {

namespace K = kernels::fast;
using i64 = std::int64_t;

std::vector<float> random_vector(std::size_t n, float scale, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

}  // namespace

// ─── compute benchmarks ─────────────────────────────────────────────────────────────────────────

std::vector<GemmSample> bench_sgemm(bool quick) {
  std::vector<std::array<i64, 3>> shapes = {{512, 384, 128}, {512, 128, 128}, {256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024}};
  if (!quick) shapes.insert(shapes.end(), {{64, 64, 64}, {2048, 384, 128}, {2048, 128, 384}, {2048, 2048, 512}});
  std::vector<GemmSample> out;
  for (const auto& shape : shapes) {
    const i64 m = shape[0], n = shape[1], k = shape[2];  // plain names: lambdas may capture them (clang 14)
    auto a = random_vector(m * k, 1, 1), b = random_vector(k * n, 1, 2);
    std::vector<float> c(m * n);
    const double s = best_seconds([&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.0f, a.data(), int(k), b.data(), int(n),
                  0.0f, c.data(), int(n));
    }, quick ? 0.02 : 0.1);
    out.push_back({m, n, k, s, 2.0 * double(m) * double(n) * double(k) / s});
  }
  return out;
}

// a = b + s·c over three float arrays of `bytes` in total; counts 12 bytes per element. Sizes: in
// L2, in L2 of both cores, in the 32 MiB L3, and (full run) just beyond it — where a decode step of
// a model slightly larger than the cache streams its weights from — and far beyond it.
std::vector<TriadSample> bench_triad(bool quick) {
  std::vector<double> sizes = {384.0 * 1024, 3.0 * 1024 * 1024, 24.0 * 1024 * 1024};
  if (!quick) {
    sizes.push_back(48.0 * 1024 * 1024);
    sizes.push_back(192.0 * 1024 * 1024);
  }
  std::vector<TriadSample> out;
  for (double bytes : sizes) {
    const std::size_t n = static_cast<std::size_t>(bytes / 12);
    // kernels::AlignedVec: on huge pages from 4 MiB on, as the runner's and the decoder's buffers
    kernels::AlignedVec a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
    const float s = 0.5f;
    const double t = best_seconds([&] { vector_loops::triad(a.data(), b.data(), c.data(), s, n); },
                                  quick ? 0.02 : 0.1);
    volatile float sink = a[n / 2];
    (void)sink;
    out.push_back({12.0 * double(n), 12.0 * double(n) / t});
  }
  return out;
}

std::vector<TriadSample> bench_gemv(const std::vector<double>& sizes, bool quick) {
  std::vector<TriadSample> out;
  for (double bytes : sizes) {
    // matrices of C × OC floats (hawk-tiny-w512's MLP input: 512 × 1536, 3 MiB), fewer columns
    // for a working set smaller than one
    const i64 C = 512, OC = std::clamp<i64>(static_cast<i64>(bytes / 4 / double(C)), 1, 1536);
    const i64 count = std::max<i64>(1, static_cast<i64>(std::llround(bytes / (4.0 * double(C * OC)))));
    // one buffer of `count` matrices, as a decoder's weights sit in one (kernels::AlignedVec: huge pages)
    kernels::AlignedVec w(static_cast<std::size_t>(C * OC * count));
    for (i64 i = 0; i < count; ++i) {
      const auto wi = random_vector(static_cast<std::size_t>(C * OC), 0.05f, 10 + unsigned(i));
      std::copy(wi.begin(), wi.end(), w.begin() + i * C * OC);
    }
    const auto x = random_vector(static_cast<std::size_t>(C), 1, 3);
    std::vector<float> y(static_cast<std::size_t>(OC));
    const double t = best_seconds([&] {
      for (i64 i = 0; i < count; ++i) K::linear_forward(y.data(), x.data(), w.data() + i * C * OC, nullptr, 1, C, OC);
    }, quick ? 0.02 : 0.1);
    volatile float sink = y[0];
    (void)sink;
    const double weights = 4.0 * double(C * OC * count);
    out.push_back({weights, weights / t});
  }
  return out;
}

std::vector<DecodeAttentionRowsSample> bench_decode_attention_rows(bool quick) {
  constexpr i64 B = 4, N = 32, keys = 1032;
  std::vector<DecodeAttentionRowsSample> out;
  for (const i64 G : {1, 2, 4, 8}) {
    const DecodeAttentionGemms g = decode_attention_gemms(G, 1, N, B, keys);
    const auto q = random_vector(static_cast<std::size_t>(B * G * N), 1, 5);
    const auto k = random_vector(static_cast<std::size_t>(B * keys * N), 1, 6), v = random_vector(k.size(), 1, 7);
    std::vector<float> o(q.size());
    const double t = best_seconds([&] {
      K::attention_decode(o.data(), q.data(), k.data(), v.data(), B, keys, keys, G, 1, N, g.key_block, g.gemv);
    }, quick ? 0.02 : 0.1);
    volatile float sink = o[0];
    (void)sink;
    out.push_back({static_cast<double>(G), t / static_cast<double>(B * keys * G)});
  }
  return out;
}

// Multiply-adds on 128 independent lanes held in registers: the vector unit's FLOP/s.
double bench_vector_flops(bool quick) {
  constexpr int kLanes = 128;
  alignas(64) float acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = 1.0f + 1e-3f * float(j);
  const float mul = 0.999999f, add = 1e-7f;
  const long reps = 20000;  // ~1-2 ms per timed call
  const double t = best_seconds([&] { vector_loops::fma_lanes128(acc, reps, mul, add); }, quick ? 0.02 : 0.1);
  float sum = 0;
  for (float x : acc) sum += x;
  volatile float sink = sum;
  (void)sink;
  return 2.0 * kLanes * double(reps) / t;
}

// Per-call cost of a kernel on a tiny input (what a step costs beyond its FLOPs and bytes).
double bench_launch_overhead() {
  const i64 M = 1, D = 16;
  auto x = random_vector(M * D, 1, 3), scale = random_vector(D, 0.1f, 4);
  std::vector<float> y(M * D), rstd(M);
  constexpr int kCalls = 2000;
  return best_seconds([&] {
    for (int i = 0; i < kCalls; ++i) K::rmsnorm_forward(y.data(), rstd.data(), x.data(), scale.data(), M, D);
  }, 0.02) / kCalls;
}

// ─── per-class efficiency: the executor on calibrate's plans ───────────────────────────────────

std::vector<std::vector<Trace>> run_calibration_plans(const mpi::Comm& world, const std::vector<CalibrationPlan>& plans, bool quick,
                                                      std::vector<double>* probes) {
  std::int64_t longest = 0;
  for (const auto& c : plans) longest = std::max(longest, c.plan.seq_len);
  const auto data = train::load_bytes(train::default_corpus_path(), longest + 2);
  train::Options o;
  o.steps = quick ? 2 : 4;  // the first of each run is a warm-up (median_cell_seconds skips it)
  // 10 passes, ~10 s here: four calibrations of 5 passes (~5 s) a few minutes apart fitted gemm
  // 0.80-0.87 and attention 0.47-0.57 while validate's median steps of the same minutes agreed
  // within 1 %: the kernels' minute, not validate's, set the loop's bias (docs/validation.md)
  const int passes = quick ? 1 : 10;
  std::vector<std::vector<Trace>> traces(plans.size());
  const mpi::Comm self = world.split(world.rank(), 0);  // a decode plan runs on each rank alone
  for (int pass = 0; pass < passes; ++pass) {
    if (probes) {
      world.barrier();  // as validate runs it: every rank at once
      probes->push_back(machine_probe_seconds());
    }
    for (std::size_t i = 0; i < plans.size(); ++i) {
      world.barrier();  // every rank runs the same plan at the same time, one core each
      if (plans[i].decode) traces[i].push_back(train::decode_run(plans[i].model, plans[i].plan, *plans[i].decode, data, o.seed, self));
      else traces[i].push_back(train::run(plans[i].model, plans[i].plan, data, o, nullptr).trace);
    }
  }
  return traces;
}

KernelTiming time_calibration_plans(const mpi::Comm& world, const std::vector<CalibrationPlan>& plans, std::vector<KernelBench>& benches,
                                    std::vector<GemmStepSample>& gemms, bool quick) {
  std::vector<double> probes;
  read_traces(plans, run_calibration_plans(world, plans, quick, &probes), benches, gemms);
  std::vector<double> probe = {stats::median(probes)};
  mean_over_ranks(world, probe);
  std::vector<double> by_rank(static_cast<std::size_t>(world.size()), 0.0);
  for (const auto& k : benches) by_rank[static_cast<std::size_t>(world.rank())] += k.seconds;
  if (world.size() > 1) world.allreduce_sum(std::span<double>(by_rank));
  std::vector<double> v;
  for (const auto& k : benches) v.push_back(k.seconds);
  for (const auto& g : gemms) v.push_back(g.seconds);
  mean_over_ranks(world, v);
  for (std::size_t i = 0; i < benches.size(); ++i) benches[i].seconds = v[i];
  for (std::size_t i = 0; i < gemms.size(); ++i) gemms[i].seconds = v[benches.size() + i];
  return {by_rank, probe[0]};
}

// ─── MPI benchmarks ─────────────────────────────────────────────────────────────────────────────

namespace {
// A stretch of compute as a training step has between two collectives: three sgemm of a
// griffin-tiny MLP's shape (~1.6 ms here, ~1.2 MB touched).
struct ComputeStretch {
  static constexpr int M = 512, N = 384, K = 128;
  std::vector<float> a = std::vector<float>(static_cast<std::size_t>(M * K), 0.5f),
                     b = std::vector<float>(static_cast<std::size_t>(K * N), 0.01f),
                     c = std::vector<float>(static_cast<std::size_t>(M * N));
  void operator()() {
    for (int g = 0; g < 3; ++g)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(), N);
  }
};

// Seconds of one call of op() as a step makes it: after a compute stretch, all ranks released
// together by a barrier (so no rank waits for another: the sync wait is measured apart), then the
// call alone is timed. The median over reps (3-15, ~target seconds of calls), the max over ranks.
// Back to back, with the MPI buffers and queues in cache, a 256 KB all-reduce took 49 us here;
// after a stretch, 69 us: the fit priced the collectives of a step ~1.4-2x fast.
template <class F>
double time_collective(const mpi::Comm& w, F&& op, double target, ComputeStretch& stretch) {
  op();
  w.barrier();
  double t0 = now_seconds();
  op();
  double one = now_seconds() - t0;
  w.allreduce_max(std::span<double>(&one, 1));
  const int reps = static_cast<int>(std::clamp(std::ceil(target / std::max(one, 1e-7)), 3.0, 15.0));
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    stretch();
    w.barrier();
    t0 = now_seconds();
    op();
    t.push_back(now_seconds() - t0);
  }
  double med = stats::median(t);
  w.allreduce_max(std::span<double>(&med, 1));
  return med;
}

}  // namespace

double time_all_reduce(const mpi::Comm& w, double bytes, bool quick) {
  const std::size_t n = std::max<std::size_t>(1, static_cast<std::size_t>(bytes / 4));
  std::vector<float> a(n, 0.0f);  // zeros: repeated in-place sums stay finite
  ComputeStretch stretch;
  return time_collective(w, [&] { w.allreduce_sum(std::span<float>(a)); }, quick ? 0.004 : 0.02, stretch);
}

std::vector<CommFit> bench_mpi(const mpi::Comm& w, bool quick) {
  const int P = w.size();
  std::vector<double> sizes;
  const double max_bytes = quick ? 1024.0 * 1024 : 64.0 * 1024 * 1024;
  for (double b = 8; b <= max_bytes; b *= (quick ? 8 : 4)) sizes.push_back(b);
  if (sizes.back() != max_bytes) sizes.push_back(max_bytes);
  const double target = quick ? 0.004 : 0.02;
  ComputeStretch stretch;
  std::vector<CommFit> fits;
  for (const char* kind : {ops::all_reduce, ops::all_gather, ops::reduce_scatter, ops::send_recv}) {
    CommFit f;  // the samples; fit_collective (reports/calibration.hpp) fits them
    for (double bytes : sizes) {
      // Whole floats, a multiple of P for the gather/scatter (the buffer per rank is `bytes`).
      const std::size_t n = std::max<std::size_t>(P, static_cast<std::size_t>(bytes / 4) / P * P);
      std::vector<float> a(n, 0.0f), b(n, 0.0f);  // zeros: repeated in-place sums stay finite
      const std::size_t part = n / P;
      double s = 0;
      const std::string k = kind;
      if (k == ops::all_reduce) s = time_all_reduce(w, 4.0 * double(n), quick);
      else if (k == ops::all_gather) s = time_collective(w, [&] { w.allgather(std::span<const float>(a.data(), part), std::span<float>(b)); }, target, stretch);
      else if (k == ops::reduce_scatter) s = time_collective(w, [&] { w.reduce_scatter_sum(std::span<const float>(a), std::span<float>(b.data(), part)); }, target, stretch);
      else s = time_collective(w, [&] {
        w.sendrecv(std::span<const float>(a), (w.rank() + 1) % P, std::span<float>(b), (w.rank() + P - 1) % P);
      }, target, stretch);
      f.samples.push_back({4.0 * double(n), s});
    }
    fits.push_back(fit_collective(kind, std::move(f.samples), P));
  }
  return fits;
}

// The back-to-back regime (TopologySpec::island_latency_back_to_back_seconds): a decode step's
// all-reduces follow one another a few µs apart, with a handful of small kernels between them and
// no barrier. Each call is timed after a ~2 µs GEMV (4 rows x 128 x 128, a tiny model's decode
// linear), the ranks never re-synchronised except by the collective itself; the median over
// `reps` calls, the max over ranks. Sizes 8 B … 64 KiB: a decode step's messages (B·D floats).
CommFit bench_all_reduce_back_to_back(const mpi::Comm& w, bool quick) {
  constexpr int M = 4, N = 128, K = 128;
  std::vector<float> x(static_cast<std::size_t>(M * K), 0.5f), wt(static_cast<std::size_t>(K * N), 0.01f),
      y(static_cast<std::size_t>(M * N));
  const int reps = quick ? 40 : 300;
  std::vector<std::pair<double, double>> samples;
  for (double bytes = 8; bytes <= 64.0 * 1024; bytes *= 8) {
    std::vector<float> a(std::max<std::size_t>(1, static_cast<std::size_t>(bytes / 4)), 0.0f);
    std::vector<double> t;
    w.barrier();
    for (int r = 0; r < reps + 5; ++r) {  // the first 5: warm-up
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, x.data(), K, wt.data(), N, 0.0f, y.data(), N);
      const double t0 = now_seconds();
      w.allreduce_sum(std::span<float>(a));
      if (r >= 5) t.push_back(now_seconds() - t0);
    }
    double med = stats::median(t);
    w.allreduce_max(std::span<double>(&med, 1));
    samples.push_back({4.0 * double(a.size()), med});
  }
  return fit_collective(ops::all_reduce, std::move(samples), w.size());
}

std::vector<std::vector<Trace>> run_replica_plans(const mpi::Comm& w, const std::vector<CalibrationPlan>& plans, bool quick) {
  std::vector<std::vector<Trace>> traces(plans.size());
  if (w.size() < 2) return traces;
  std::int64_t longest = 0;
  for (const auto& c : plans) longest = std::max(longest, c.plan.seq_len);
  const auto data = train::load_bytes(train::default_corpus_path(), longest + 2);
  train::Options o;
  o.steps = quick ? 3 : 6;  // the first of each run is a warm-up
  for (int pass = 0; pass < (quick ? 1 : 3); ++pass)
    for (std::size_t i = 0; i < plans.size(); ++i) {
      if (plans[i].decode) continue;
      Plan p = plans[i].plan;
      p.mesh = Mesh{};
      p.mesh[Axis::data] = w.size();
      p.global_batch *= w.size();
      w.barrier();
      traces[i].push_back(train::run(plans[i].model, p, data, o, &w).trace);
    }
  return traces;
}

// compute_jitter (ChipSpec) from the first plan's replica runs: per step after each run's warm-up,
// the compute (every cell but the collectives) and the time in the loss all-reduce (step.metrics:
// the step's first meeting after the backward, where the ranks wait for the slowest) beyond the
// collective's latency. Medians over those steps (validate compares median steps), the mean of the
// two over ranks, then jitter_from (its E[max] − E[duration] of the ranks' compute over the
// compute's spread).
Jitter measure_jitter(const mpi::Comm& w, const std::vector<Trace>& runs, double latency_seconds) {
  if (w.size() < 2) return {};
  std::vector<double> compute, wait;
  for (const Trace& tr : runs)
    for (std::size_t s = 1; s < tr.steps().size(); ++s) {
      double c = 0, m = 0;
      for (const auto& [key, cell] : tr.steps()[s].cells) {
        const OpKind* kind = find_op_kind(std::get<1>(key));
        if (std::get<2>(key) == tensors::step_metrics) m += cell.seconds;
        else if (!kind || kind->cls != OpClass::comm) c += cell.seconds;
      }
      compute.push_back(c);
      wait.push_back(std::max(0.0, m - latency_seconds));
    }
  double v[2] = {stats::median(compute), stats::median(wait)};
  w.allreduce_sum(std::span<double>(v, 2));
  return jitter_from(v[0] / w.size(), v[1] / w.size(), w.size());
}

std::vector<std::pair<double, double>> traced_all_reduce(const mpi::Comm& w, const std::vector<std::vector<Trace>>& traces) {
  std::vector<Trace> runs;
  for (const auto& t : traces) runs.insert(runs.end(), t.begin(), t.end());
  auto samples = traced_collective_samples(runs, ops::all_reduce);
  double count[2] = {double(samples.size()), -double(samples.size())};
  w.allreduce_max(std::span<double>(count, 2));
  if (count[0] != -count[1])  // the same plans on every rank move the same sizes
    throw std::runtime_error("calibrate: the ranks traced different gradient all-reduce sizes");
  std::vector<double> seconds;
  for (const auto& s : samples) seconds.push_back(s.second);
  w.allreduce_max(std::span<double>(seconds));
  for (std::size_t i = 0; i < samples.size(); ++i) samples[i].second = seconds[i];
  return samples;
}

// Mean over ranks, in place.
void mean_over_ranks(const mpi::Comm& w, std::vector<double>& v) {
  if (w.size() == 1 || v.empty()) return;
  w.allreduce_sum(std::span<double>(v));
  for (auto& x : v) x /= w.size();
}

}  // namespace scanshard::measure
