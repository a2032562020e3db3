// bench/bench_train_step.cpp — one training step (forward + backward + AdamW) of a Griffin-100M
// layer stack (D 768, R 1024, 12 layers R,R,A, heads 6, window 1024 from the griffin-100m preset)
// at T = 2048, B = 1, with 1 and all threads: tokens/s and the seconds per op.
// The vocabulary is cut to 256 so the step measures the layer stack, not the 256k-entry head.
// Usage: bench_train_step [layers]  (default: the preset's depth). Not for: correctness.
#include <malloc.h>

#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <map>
#include <string>

#include "bench_util.hpp"
#include "kernels/adamw.hpp"
#include "program/presets.hpp"
#include "tests/kernels/tiny_model.hpp"

namespace k = scanshard::kernels;
using k::i64;

namespace {
std::map<std::string, double> g_time;

#define BENCH_TIMED(name)                                         \
  template <class... A>                                           \
  static void name(A&&... a) {                                    \
    const double t0 = bench::now();                               \
    k::fast::name(std::forward<A>(a)...);                         \
    g_time[#name] += bench::now() - t0;                           \
  }
struct TimedOps {
  BENCH_TIMED(embedding_forward) BENCH_TIMED(embedding_backward) BENCH_TIMED(logits_tied_forward)
  BENCH_TIMED(logits_tied_backward) BENCH_TIMED(softmax_ce_forward) BENCH_TIMED(softmax_ce_backward)
  BENCH_TIMED(linear_forward) BENCH_TIMED(linear_backward) BENCH_TIMED(rmsnorm_forward)
  BENCH_TIMED(rmsnorm_backward) BENCH_TIMED(gelu_mul_forward) BENCH_TIMED(gelu_mul_backward)
  BENCH_TIMED(gated_mlp_forward) BENCH_TIMED(gated_mlp_backward) BENCH_TIMED(conv1d_forward)
  BENCH_TIMED(conv1d_backward) BENCH_TIMED(rglru_forward) BENCH_TIMED(rglru_backward)
  BENCH_TIMED(rope_forward) BENCH_TIMED(rope_backward) BENCH_TIMED(attention_forward)
  BENCH_TIMED(attention_backward) BENCH_TIMED(layer_norm_forward) BENCH_TIMED(layer_norm_backward)
  BENCH_TIMED(silu_mul_forward) BENCH_TIMED(silu_mul_backward)
};
}  // namespace

int main(int argc, char** argv) {
  // The test model allocates its scratch with std::vector per call; keep freed blocks in the heap
  // (no mmap/munmap and page faults per step) — a runner preallocates, so this is the fair number.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  auto spec = scanshard::load_model("griffin-100m");
  spec.vocab = 256;
  if (argc > 1) spec.depth = std::atol(argv[1]);
  const kt::Layout lay(spec);
  const i64 B = 1, T = 2048;
  std::printf("bench_train_step: %s layers=%ld D=%ld R=%ld H=%ld N=%ld W=%ld F=%ld, B=%ld T=%ld, %.1fM params\n",
              spec.name.c_str(), long(spec.depth), long(spec.width), long(spec.recurrent_width), long(spec.heads),
              long(spec.head_dim), long(spec.window), long(spec.mlp_width), long(B), long(T), lay.total / 1e6);
  // parameters, gradient and AdamW moments in kernels::AlignedVec, as large buffers are held
  // (huge pages: kernels.hpp; SCANSHARD_HUGE_PAGES=0 for 4 KiB pages)
  const auto p0 = kt::init_params(lay, 1);
  k::AlignedVec p(p0.begin(), p0.end()), grad(lay.total), m(lay.total, 0.0f), v(lay.total, 0.0f);
  std::vector<std::int32_t> tok(B * T), tgt(B * T);
  for (i64 i = 0; i < B * T; ++i) { tok[i] = std::int32_t((i * 7) % 256); tgt[i] = std::int32_t((i * 7 + 7) % 256); }
  std::vector<std::uint8_t> reset(B * T, 0);
  reset[0] = 1;
  k::AdamW opt;
  kt::Model<float, TimedOps> model(spec, lay, B, T);
  for (int th : bench::thread_counts()) {
    bench::set_threads(th);
    double best = 1e300;
    std::map<std::string, double> best_ops;
    double best_fwd = 0, best_bwd = 0, best_opt = 0;
    double best_cpu = 0;
    for (int step = 1; step <= 2; ++step) {  // step 1 is warm-up
      g_time.clear();
      const std::clock_t c0 = std::clock();
      const double t0 = bench::now();
      model.forward(p.data(), tok, tgt, reset);
      const double t1 = bench::now();
      std::fill(grad.begin(), grad.end(), 0.0f);
      model.backward(p.data(), grad.data());
      const double t2 = bench::now();
      const float cs = k::clip_scale(k::sum_squares(grad.data(), lay.total), opt.max_grad_norm);
      for (size_t i = 0; i < lay.tensors.size(); ++i)
        k::fast::adamw_update(p.data() + lay.offset[i], m.data() + lay.offset[i], v.data() + lay.offset[i],
                              grad.data() + lay.offset[i], lay.tensors[i].count(), step, opt, 0.0f, cs);
      const double t3 = bench::now();
      if (step > 1 && t3 - t0 < best) {
        best = t3 - t0; best_ops = g_time; best_fwd = t1 - t0; best_bwd = t2 - t1; best_opt = t3 - t2;
        best_cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
      }
    }
    // CPU seconds (all threads of this process) tell how much of the wall time we actually ran:
    // on a shared machine wall/CPU > 1 at 1 thread means other processes took the core.
    std::printf("threads %d: step %.3f s wall, %.3f s CPU (forward %.3f, backward %.3f, AdamW %.3f) = %.0f tokens/s "
                "wall, %.0f tokens per CPU-second\n",
                th, best, best_cpu, best_fwd, best_bwd, best_opt, double(B * T) / best, double(B * T) / best_cpu);
    double in_ops = 0;
    for (auto& [name, s] : best_ops) in_ops += s;
    for (auto& [name, s] : best_ops)
      if (s > 0.002 * best) std::printf("    %-22s %8.3f s  %5.1f %%\n", name.c_str(), s, 100 * s / best);
    std::printf("    %-22s %8.3f s  %5.1f %%  (residual adds, copies, buffer allocation)\n", "other (fwd+bwd)",
                best_fwd + best_bwd - in_ops, 100 * (best_fwd + best_bwd - in_ops) / best);
    std::printf("    %-22s %8.3f s  %5.1f %%\n", "adamw", best_opt, 100 * best_opt / best);
  }
  return 0;
}
