// bench/bench_decode.cpp — batch-1 decoding of 100M-class models (train/decode.hpp) against the
// weight-streaming limit measured in the same run (issue 26 goal: ≥ 70 %).
//
// A decode step at batch 1 reads every weight once (GEMVs), so its floor is the weight bytes over
// the memory bandwidth. Weight bytes per step = 4 × (all parameters, less an untied input table,
// of which a step reads one row). Bandwidth = a STREAM triad (a = b + s·c over 3 × 64 MiB arrays,
// 12 bytes per element) timed round-robin with the decode steps, so both see the same machine
// load. Prints per model and thread count: median decode step, tokens/s, the limit (triad B/s ÷
// weight bytes) and the ratio (medians of per-round ratios, and their range). The same rounds also
// time the head's logits GEMV alone (the step's largest weight: 786 MB of a 256 000-word tied
// table) three ways — the kernel the decoder calls, cblas_sgemv on the same matrix, and a
// read-only pass over its bytes (Σ w², one sequential stream) — each as (head bytes / s) ÷ triad,
// and the decoder's trace gives the step's share in GEMVs (linear + logits) and its largest ops.
// Prefill mode (--prefill P): per round, one prefill of P tokens (batch 1, the head on the last
// token) and bare cblas_sgemm (weights hot in cache, and cold) on every weight GEMM shape the prefill's lowering holds
// (program/inference.hpp lower_prefill: the linear and logits steps, m × n × k, times their
// count); prints Σ bare sgemm time ÷ the prefill's time (the whole pass, and its GEMM ops alone
// from the decoder's trace), medians and ranges over rounds.
// Decode mode runs every step twice per round: weights and triad arrays on transparent huge pages
// (kernels::AlignedVec, as the decoder's callers hold weights) and on 4 KiB pages (std::vector),
// each step against the triad on the same pages.
// Usage: bench_decode [--prefill P] [model ...]  (default: hawk-100m griffin-100m mqa-100m
// rwkv4-169m); SCANSHARD_BENCH_THREADS=1 runs one thread count only.
#include <cstdio>
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kernels/embedding.hpp"
#include "kernels/kernels.hpp"
#include "kernels/linear.hpp"
#include "kernels/vector_rows.hpp"
#include "program/inference.hpp"
#include "program/param_layout.hpp"
#include "program/presets.hpp"
#include "program/steps.hpp"
#include "train/decode.hpp"

using namespace scanshard;
using i64 = std::int64_t;

namespace {

double weight_bytes(const ModelSpec& m, const Layout& lay) {
  double n = static_cast<double>(lay.total);
  if (!m.tied_embeddings) n -= static_cast<double>(lay.tensors[lay.index.at("embed/embed.table")].count());
  return 4.0 * n;
}

// The head's logits GEMV on its own: the tied table E [V,D] (logits = E x) or the untied head.w
// [D,V] (logits = head.wᵀ x), through the decoder's kernel or through cblas_sgemv directly.
struct Head {
  const float* w;
  i64 D, V;
  bool tied;
  double bytes() const { return 4.0 * double(D) * double(V); }
  void kernel(float* y, const float* x) const {
    if (tied) kernels::fast::logits_tied_forward(y, x, w, 1, D, V);
    else kernels::fast::linear_forward(y, x, w, nullptr, 1, D, V);
  }
  void sgemv(float* y, const float* x) const {
    if (tied) cblas_sgemv(CblasRowMajor, CblasNoTrans, int(V), int(D), 1.0f, w, int(D), x, 1, 0.0f, y, 1);
    else cblas_sgemv(CblasRowMajor, CblasTrans, int(D), int(V), 1.0f, w, int(V), x, 1, 0.0f, y, 1);
  }
  // Σ w² in rows of D (a read-only stream over the same bytes, in memory order)
  double read_pass() const {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (i64 v = 0; v < V; ++v) s += kernels::rows::dot(w + v * D, w + v * D, D);
    return s;
  }
};

// median (range) of per-round (bytes / kernel s) ÷ (triad bytes / triad s)
std::string ratio_to_triad(double bytes, const std::vector<double>& kernel_s, double triad_bytes,
                           const std::vector<double>& triad_s) {
  std::vector<double> r;
  for (std::size_t i = 0; i < kernel_s.size(); ++i) r.push_back((bytes / kernel_s[i]) / (triad_bytes / triad_s[i]));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f (%.2f-%.2f)", bench::median(r), *std::min_element(r.begin(), r.end()),
                *std::max_element(r.begin(), r.end()));
  return buf;
}

// Seconds of the linear and logits ops in a trace (the weight GEMMs).
double gemm_seconds(const Trace& tr) {
  double s = 0;
  for (const auto& [k, c] : tr.steps()[0].cells)
    if (std::get<1>(k) == ops::linear || std::get<1>(k) == ops::logits) s += c.seconds;
  return s;
}
double total_seconds(const Trace& tr) {
  double s = 0;
  for (const auto& [k, c] : tr.steps()[0].cells) s += c.seconds;
  return s;
}

// The prefill's weight GEMMs (m, n, k, times) from its lowering, each run as bare cblas_sgemm.
// Weights hot: every call reads the same B (in cache after the first); cold: each call's B comes
// next in a pool of 128 MiB more than the largest B (beyond the 32 MiB L3, as the prefill's weights,
// each read once per pass).
struct BareGemms {
  struct Shape {
    i64 m, n, k, times;
  };
  std::vector<Shape> shapes;
  kernels::AlignedVec a, b, c;
  double flops = 0;
  i64 largest_b = 1, next_b = 0;
  explicit BareGemms(const InferencePass& pass) {
    i64 most = 1;
    pass.for_each_list([&](const std::vector<Step>& list, i64 times) {
      for (const Step& st : list)
        if ((std::string(st.op) == ops::linear || std::string(st.op) == ops::logits) && st.m > 0) {
          // a block-diagonal gate: one GEMM per block (its FLOPs are the blocks' sum)
          const i64 calls = std::max<i64>(1, std::llround(st.matmul_flops / (2.0 * double(st.m * st.n * st.k))));
          shapes.push_back({st.m, st.n, st.k, times * calls});
          most = std::max({most, st.m * st.k, st.m * st.n});
          largest_b = std::max(largest_b, st.k * st.n);
          flops += 2.0 * double(st.m) * double(st.n) * double(st.k) * double(times * calls);
        }
    });
    for (auto* v : {&a, &c}) v->assign(std::size_t(most), 0.01f);
    b.assign(std::size_t(largest_b + (i64(32) << 20)), 0.01f);
  }
  void run(bool cold) {
    for (const Shape& s : shapes)
      for (i64 r = 0; r < s.times; ++r) {
        if (!cold || next_b + s.k * s.n > i64(b.size())) next_b = 0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(s.m), int(s.n), int(s.k), 1.0f, a.data(), int(s.k),
                    b.data() + next_b, int(s.n), 0.0f, c.data(), int(s.n));
        if (cold) next_b += s.k * s.n;
      }
  }
};

void bench_prefill(const std::string& name, i64 P, int rounds) {
  const ModelSpec m = load_model(name);
  const Layout lay(m);
  const train::ShardLayout sl(m, lay, 1, 0);
  std::vector<float> params(static_cast<std::size_t>(sl.total));
  sl.extract(init_params(lay, 1).data(), params.data());
  BareGemms bare(lower_prefill(m, Plan{}, 0, 1, P));  // the shapes the simulator prices (one source)
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(P));
  for (i64 i = 0; i < P; ++i) prompt[std::size_t(i)] = static_cast<std::int32_t>((7 * i + 3) % m.vocab);
  for (int th : bench::thread_counts()) {
    bench::set_threads(th);
    std::vector<float> logits;
    std::vector<double> gemm_share;
    std::vector<std::function<void()>> fns = {[&] {
                                                Trace tr;
                                                train::Decoder dec(m, sl, params.data(), nullptr, 1, P + 1);
                                                dec.feed(prompt.data(), P, logits, true, &tr);
                                                tr.end_step(0, 0, 0);
                                                gemm_share.push_back(gemm_seconds(tr) / total_seconds(tr));
                                              },
                                              [&] { bare.run(false); }, [&] { bare.run(true); }};
    const auto t = bench::rounds(rounds, fns, th == 1 ? bench::thread_cpu_s : bench::now);
    gemm_share.erase(gemm_share.begin());  // the warm-up call
    std::vector<double> whole, gemms, whole_cold, gemms_cold;
    for (std::size_t r = 0; r < t[0].size(); ++r) {
      whole.push_back(t[1][r] / t[0][r]);
      gemms.push_back(t[1][r] / (gemm_share[r] * t[0][r]));
      whole_cold.push_back(t[2][r] / t[0][r]);
      gemms_cold.push_back(t[2][r] / (gemm_share[r] * t[0][r]));
    }
    auto mr = [](const std::vector<double>& v) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2f (%.2f-%.2f)", bench::median(v), *std::min_element(v.begin(), v.end()),
                    *std::max_element(v.begin(), v.end()));
      return std::string(buf);
    };
    std::printf("%-12s threads %d: prefill %lld tokens %.0f ms (%s time), its GEMMs %.1f GFLOP = %.0f%% of the pass (trace); "
                "bare sgemm, weights hot %.0f ms = %.1f GFLOP/s, cold %.0f ms; bare / prefill: whole pass %s (cold %s), GEMM "
                "ops %s (cold %s)\n",
                name.c_str(), th, static_cast<long long>(P), 1e3 * bench::median(t[0]), th == 1 ? "thread CPU" : "wall",
                bare.flops / 1e9, 100 * bench::median(gemm_share), 1e3 * bench::median(t[1]),
                bare.flops / bench::median(t[1]) / 1e9, 1e3 * bench::median(t[2]), mr(whole).c_str(), mr(whole_cold).c_str(),
                mr(gemms).c_str(), mr(gemms_cold).c_str());
    std::fflush(stdout);
  }
}

// kB of this process's anonymous memory on transparent huge pages (/proc/self/smaps_rollup), -1 if unknown
long anon_huge_kb() {
  std::FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) break;
  std::fclose(f);
  return kb;
}

// The weights and the triad's arrays under one page policy, and a decoder over those weights.
template <class Vec>
struct Pages {
  Vec params, a, b, c;
  train::Decoder dec;
  std::vector<float> logits;
  Pages(const std::vector<float>& p, i64 n, const ModelSpec& m, const train::ShardLayout& sl, i64 prompt, i64 context)
      : params(p.begin(), p.end()), a(n, 0.0f), b(n, 1.0f), c(n, 0.5f), dec(m, sl, params.data(), nullptr, 1, context) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(prompt));
    for (i64 i = 0; i < prompt; ++i) t[std::size_t(i)] = static_cast<std::int32_t>((7 * i + 3) % m.vocab);
    dec.feed(t.data(), prompt, logits, true);
  }
  void triad() { bench::triad(a.data(), b.data(), c.data(), i64(a.size())); }
  void step(std::int32_t tok) { dec.feed(&tok, 1, logits, true); }
};

void bench_model(const std::string& name, int rounds) {
  const ModelSpec m = load_model(name);
  const Layout lay(m);
  const train::ShardLayout sl(m, lay, 1, 0);
  std::vector<float> params(static_cast<std::size_t>(sl.total));
  sl.extract(init_params(lay, 1).data(), params.data());
  const double wbytes = weight_bytes(m, lay);
  const i64 n = i64(16) << 20;  // 64 MiB per triad array
  kernels::AlignedVec hx(m.width, 0.01f), hy(m.vocab, 0.0f);
  double sink = 0;
  for (int th : bench::thread_counts()) {
    bench::set_threads(th);
    const i64 prompt = 8, context = prompt + 2 * rounds + 12;
    // huge pages where kernels::AlignedVec asks for them (kernels.hpp: what generate and validate's
    // plan runs hold the weights in), 4 KiB pages in std::vector; the same rounds time both
    Pages<kernels::AlignedVec> huge(params, n, m, sl, prompt, context);
    Pages<std::vector<float>> small(params, n, m, sl, prompt, context);
    const long huge_kb = anon_huge_kb();
    const Head head{huge.params.data() + (m.tied_embeddings ? sl.off("embed", "embed.table") : sl.off("head", "head.w")),
                    m.width, m.vocab, m.tied_embeddings};
    std::int32_t tok = 1;
    auto next = [&] { return tok = static_cast<std::int32_t>((tok * 31 + 7) % m.vocab); };
    std::vector<std::function<void()>> fns = {[&] { huge.triad(); },
                                              [&] { huge.step(next()); },
                                              [&] { head.kernel(hy.data(), hx.data()); },
                                              [&] { head.sgemv(hy.data(), hx.data()); },
                                              [&] { sink += head.read_pass(); },
                                              [&] { small.triad(); },
                                              [&] { small.step(next()); }};
    // One thread is timed in its own CPU time (bench::rounds' thread_cpu_s: the time it waited for
    // a core of this shared machine counts for neither the step nor the triad; a 200 ms step waits
    // more often than a 20 ms triad, which biases wall-clock ratios low); wall time beside it.
    std::vector<std::vector<double>> wall(fns.size());
    std::vector<std::function<void()>> walled;
    for (std::size_t i = 0; i < fns.size(); ++i)
      walled.push_back([&, i] {
        const double t0 = bench::now();
        fns[i]();
        wall[i].push_back(bench::now() - t0);
      });
    const auto t = bench::rounds(rounds, walled, th == 1 ? bench::thread_cpu_s : bench::now);
    for (auto& w : wall) w.erase(w.begin());  // the warm-up call
    auto line = [&](const char* pages, std::size_t triad_i, std::size_t step_i) {
      const double step = bench::median(t[step_i]), triad = 12.0 * n / bench::median(t[triad_i]);
      std::printf("%-12s threads %d, %s: weights %.1f MB/step, decode step %.2f ms = %.2f tokens/s; triad %.2f GB/s -> limit "
                  "%.2f tokens/s; ratio %s (%s time); wall-clock ratio %s\n",
                  name.c_str(), th, pages, wbytes / 1e6, 1e3 * step, 1.0 / step, triad / 1e9, triad / wbytes,
                  ratio_to_triad(wbytes, t[step_i], 12.0 * n, t[triad_i]).c_str(), th == 1 ? "thread CPU" : "wall",
                  ratio_to_triad(wbytes, wall[step_i], 12.0 * n, wall[triad_i]).c_str());
    };
    line("huge pages", 0, 1);
    line("4 KiB pages", 5, 6);
    std::vector<double> speedup;
    for (std::size_t r = 0; r < t[1].size(); ++r) speedup.push_back(t[6][r] / t[1][r]);
    std::printf("  step time 4 KiB / huge pages %.2f (%.2f-%.2f); anonymous memory on huge pages %ld MB\n",
                bench::median(speedup), *std::min_element(speedup.begin(), speedup.end()),
                *std::max_element(speedup.begin(), speedup.end()), huge_kb / 1024);
    // where a step's time goes: the decoder's own trace over 3 more steps, largest shares first
    Trace tr;
    for (int i = 0; i < 3; ++i) huge.dec.feed(&tok, 1, huge.logits, true, &tr);
    tr.end_step(0, 0, 0);
    std::vector<std::pair<double, std::string>> share;
    const double total = total_seconds(tr);
    for (const auto& [k, c] : tr.steps()[0].cells) share.emplace_back(c.seconds, std::get<1>(k) + " " + std::get<2>(k));
    std::sort(share.rbegin(), share.rend());
    std::printf("  GEMVs (linear + logits) %.0f%% of the step; time by op:", 100 * gemm_seconds(tr) / total);
    for (std::size_t i = 0; i < std::min<std::size_t>(6, share.size()); ++i)
      std::printf(" %s %.0f%%", share[i].second.c_str(), 100 * share[i].first / total);
    std::printf("\n");
    std::printf("  head alone (%.1f MB, %s, huge pages) / triad: kernel %s, cblas_sgemv %s, read-only pass %s%s\n",
                head.bytes() / 1e6, head.tied ? "tied E x" : "head.w^T x",
                ratio_to_triad(head.bytes(), t[2], 12.0 * n, t[0]).c_str(),
                ratio_to_triad(head.bytes(), t[3], 12.0 * n, t[0]).c_str(),
                ratio_to_triad(head.bytes(), t[4], 12.0 * n, t[0]).c_str(), sink == 1.2345 ? " " : "");
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> models;
  i64 prefill = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--prefill" && i + 1 < argc) prefill = std::atoll(argv[++i]);
    else models.push_back(argv[i]);
  }
  if (models.empty()) models = {"hawk-100m", "griffin-100m", "mqa-100m", "rwkv4-169m"};
  if (prefill > 0) {
    std::printf("bench_decode --prefill: batch 1, fp32, median of 5 rounds of (prefill, bare sgemm hot, cold); kernels on "
                "%s\n",
                bench::simd_isa().c_str());
    for (const auto& name : models) bench_prefill(name, prefill, 5);
    return 0;
  }
  std::printf("bench_decode: batch 1, fp32, median of 11 rounds of (triad, one decode step); kernels dispatched to %s\n",
              bench::simd_isa().c_str());
  for (const auto& name : models) bench_model(name, 11);
}
