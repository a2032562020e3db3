// bench/bench_layer_step.cpp — one layer's training forward + backward through the executor
// (train/executor.hpp: the steps program/lower.cpp emits, the handlers train/ runs; no copy of
// the layer here), 1 thread, against the same layer's GEMMs as bare cblas_sgemm calls measured in
// the same rounds. Prints the dispatched SIMD target, the layer's time, the share of its time
// in the scan kernel (RWKV-6: the WKV steps) and in the GEMMs, and layer time / bare-sgemm time
// per round (median, range): the layer's distance from its GEMM floor.
// The model is a preset (default rwkv6-1.6b) cut to one layer at a small width (default 768,
// the channel-mix hidden width scaled with it), vocabulary 256; B = 1.
// Usage: bench_layer_step [preset] [width] [T] [rounds]. SCANSHARD_BENCH_SIMD=AVX2 pins the target.
// Not for: correctness (tests/), more than one thread.
#include <cblas.h>
#include <malloc.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "bench_util.hpp"
#include "program/param_layout.hpp"
#include "program/presets.hpp"
#include "train/executor.hpp"

namespace {
using namespace scanshard;
using i64 = std::int64_t;

bool is_scan(const std::string& op) { return op.rfind("wkv", 0) == 0 || op.rfind("rglru", 0) == 0; }
bool is_gemm(const Step& s) { return s.cls == OpClass::gemm && std::string(s.op).rfind("linear", 0) == 0; }

// The layer's GEMM steps as bare cblas_sgemm calls of the same shapes and transposes as
// kernels/linear.cpp (forward x·W, dx = dy·Wᵀ, dW = xᵀ·dy), a grouped step once per group.
struct GemmFloor {
  struct Call { CBLAS_TRANSPOSE ta, tb; int m, n, k, reps; };
  std::vector<Call> calls;
  std::vector<float> a, b, c;
  explicit GemmFloor(const std::vector<const Step*>& steps) {
    size_t most = 0;
    for (const Step* s : steps) {
      const std::string op = s->op;
      const CBLAS_TRANSPOSE ta = op == "linear.dw" ? CblasTrans : CblasNoTrans;
      const CBLAS_TRANSPOSE tb = op == "linear.dx" ? CblasTrans : CblasNoTrans;
      const int reps = int(std::lround(s->matmul_flops / (2.0 * double(s->m) * double(s->n) * double(s->k))));
      calls.push_back({ta, tb, int(s->m), int(s->n), int(s->k), reps});
      most = std::max({most, size_t(s->m * s->k), size_t(s->k * s->n), size_t(s->m * s->n)});
    }
    a.assign(most, 0.01f), b.assign(most, 0.02f), c.assign(most, 0.0f);
  }
  void operator()() {
    for (const Call& q : calls)
      for (int r = 0; r < q.reps; ++r)
        cblas_sgemm(CblasRowMajor, q.ta, q.tb, q.m, q.n, q.k, 1.0f, a.data(), q.ta == CblasTrans ? q.m : q.k, b.data(),
                    q.tb == CblasTrans ? q.k : q.n, 1.0f, c.data(), q.n);
  }
};
}  // namespace

int main(int argc, char** argv) {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);  // as bench_train_step: no mmap/munmap per step
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const std::string preset = argc > 1 ? argv[1] : "rwkv6-1.6b";
  ModelSpec m = load_model(preset);
  const i64 width = argc > 2 ? std::atol(argv[2]) : 768, T = argc > 3 ? std::atol(argv[3]) : 1024;
  const int n_rounds = argc > 4 ? std::atoi(argv[4]) : 5;
  if (width <= 0 || T <= 0 || n_rounds <= 0 || (m.head_size > 0 && width % m.head_size != 0)) {
    std::fprintf(stderr, "bench_layer_step: width %ld, T %ld, rounds %d: need positive values, width a multiple of the "
                 "head size\n", long(width), long(T), n_rounds);
    return 2;
  }
  m.mlp_width = m.mlp_width * width / m.width;
  m.width = width;
  m.depth = 1;
  m.vocab = 256;
  bench::set_threads(1);
  const std::string isa = bench::simd_isa();
  Plan p;
  p.model = m.name;
  p.global_batch = p.micro_batch = 1;
  p.seq_len = T;
  p.param_dtype = p.act_dtype = DType::fp32;
  const Layout lay(m);
  const train::ShardLayout sl(m, lay, 1, 0);
  const StepProgram prog = lower(m, p, 0);
  train::Executor ex(m, p, prog, sl, {});
  std::vector<float> params(static_cast<size_t>(sl.total)), grads(params.size(), 0.0f);
  sl.extract(init_params(lay, 1).data(), params.data());
  std::vector<std::int32_t> tok(static_cast<size_t>(T)), tgt(tok.size());
  for (i64 i = 0; i < T; ++i) tok[i] = std::int32_t((i * 7) % 256), tgt[i] = std::int32_t((i * 7 + 7) % 256);

  // The layer's steps, keyed as the trace keys them (phase, op, name); its GEMMs
  std::set<Trace::Key> layer_keys;
  std::vector<const Step*> gemms;
  for (const auto* list : {&prog.forward, &prog.backward})
    for (const Step& s : *list)
      if (s.layer >= 0 && s.kind == StepKind::compute) {
        layer_keys.insert({to_string(s.phase), s.op, s.name});
        if (is_gemm(s)) gemms.push_back(&s);
      }
  GemmFloor floor(gemms);
  Trace tr;
  long step = 0;
  std::vector<double> layer_s, scan_s, gemm_s;
  std::map<std::string, double> op_s;  // per op, summed over rounds
  std::vector<std::function<void()>> fns = {
      [&] {
        ex.forward(0, params.data(), tok.data(), tgt.data(), &tr);
        ex.backward(0, params.data(), grads.data(), &tr);
        tr.end_step(step++, 0, 0);
        double layer = 0, scan = 0, gemm = 0;
        for (const auto& [key, cell] : tr.steps().back().cells) {
          if (!layer_keys.count(key)) continue;
          const std::string& op = std::get<1>(key);
          layer += cell.seconds;
          if (is_scan(op)) scan += cell.seconds;
          if (op.rfind("linear", 0) == 0) gemm += cell.seconds;
          op_s[op] += cell.seconds;
        }
        layer_s.push_back(layer), scan_s.push_back(scan), gemm_s.push_back(gemm);
      },
      std::ref(floor)};
  const auto t = bench::rounds(n_rounds, fns, bench::thread_cpu_s);
  layer_s.erase(layer_s.begin());  // bench::rounds' warm-up call
  scan_s.erase(scan_s.begin()), gemm_s.erase(gemm_s.begin());
  std::vector<double> ratio, scan_share, gemm_share;
  for (size_t r = 0; r < t[0].size(); ++r) {
    ratio.push_back(t[0][r] / t[1][r]);
    scan_share.push_back(scan_s[r] / layer_s[r]);
    gemm_share.push_back(gemm_s[r] / layer_s[r]);
  }
  auto range = [](const std::vector<double>& v) {
    return std::make_pair(*std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
  };
  std::printf("bench_layer_step: %s cut to 1 layer, D=%ld F=%ld N=%ld, B=1 T=%ld, 1 thread, kernels dispatched to %s; "
              "%d rounds\n",
              preset.c_str(), long(m.width), long(m.mlp_width), long(m.head_size), long(T), isa.c_str(), n_rounds);
  std::printf("  step (forward + backward, thread CPU time): %.1f ms median; its %zu GEMM steps as bare sgemm: %.1f ms\n",
              bench::median(t[0]) * 1e3, gemms.size(), bench::median(t[1]) * 1e3);
  std::printf("  step / bare sgemm of its GEMMs: %.2f (%.2f-%.2f) %s\n", bench::median(ratio), range(ratio).first,
              range(ratio).second, isa.c_str());
  std::printf("  share of the layer's step time (executor trace, wall): scan %.3f (%.3f-%.3f), GEMMs %.3f (%.3f-%.3f) "
              "%s\n",
              bench::median(scan_share), range(scan_share).first, range(scan_share).second, bench::median(gemm_share),
              range(gemm_share).first, range(gemm_share).second, isa.c_str());
  double total = 0;
  for (const auto& [op, s] : op_s) total += s;
  for (const auto& [op, s] : op_s)
    if (s > 0.005 * total) std::printf("    %-16s %5.1f %%\n", op.c_str(), 100 * s / total);
  return 0;
}
