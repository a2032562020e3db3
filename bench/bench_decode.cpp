// bench/bench_decode.cpp — batch-1 decoding of 100M-class models (train/decode.hpp) against the
// weight-streaming limit measured in the same run (issue 26 goal: ≥ 70 %).
//
// A decode step at batch 1 reads every weight once (GEMVs), so its floor is the weight bytes over
// the memory bandwidth. Weight bytes per step = 4 × (all parameters, less an untied input table,
// of which a step reads one row). Bandwidth = a STREAM triad (a = b + s·c over 3 × 64 MiB arrays,
// 12 bytes per element) timed round-robin with the decode steps, so both see the same machine
// load. Prints per model and thread count: median decode step, tokens/s, the limit (triad B/s ÷
// weight bytes) and the ratio (medians of per-round ratios, and their range).
// Usage: bench_decode [model ...]  (default: hawk-100m griffin-100m mqa-100m rwkv4-169m).
#include <cstdio>
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kernels/kernels.hpp"
#include "program/param_layout.hpp"
#include "program/presets.hpp"
#include "train/decode.hpp"

using namespace scanshard;
using i64 = std::int64_t;

namespace {

double weight_bytes(const ModelSpec& m, const Layout& lay) {
  double n = static_cast<double>(lay.total);
  if (!m.tied_embeddings) n -= static_cast<double>(lay.tensors[lay.index.at("embed/embed.table")].count());
  return 4.0 * n;
}

void bench_model(const std::string& name, int rounds) {
  const ModelSpec m = load_model(name);
  const Layout lay(m);
  const train::ShardLayout sl(m, lay, 1, 0);
  std::vector<float> params(static_cast<std::size_t>(sl.total));
  sl.extract(init_params(lay, 1).data(), params.data());
  const double wbytes = weight_bytes(m, lay);
  const i64 n = i64(16) << 20;  // 64 MiB per triad array
  kernels::AlignedVec a(n, 0.0f), b(n, 1.0f), c(n, 0.5f);
  for (int th : bench::thread_counts()) {
    bench::set_threads(th);
    const i64 prompt = 8;
    train::Decoder dec(m, sl, params.data(), nullptr, 1, prompt + rounds + 6);
    std::vector<std::int32_t> p(prompt);
    for (i64 i = 0; i < prompt; ++i) p[i] = static_cast<std::int32_t>((7 * i + 3) % m.vocab);
    std::vector<float> logits;
    dec.feed(p.data(), prompt, logits, true);
    std::int32_t tok = 1;
    std::vector<std::function<void()>> fns = {
        [&] { bench::triad(a.data(), b.data(), c.data(), n); },
        [&] {
          dec.feed(&tok, 1, logits, true);
          tok = static_cast<std::int32_t>((tok * 31 + 7) % m.vocab);
        }};
    const auto t = bench::rounds(rounds, fns);
    std::vector<double> ratio;
    for (std::size_t r = 0; r < t[0].size(); ++r) ratio.push_back((wbytes / t[1][r]) / (12.0 * n / t[0][r]));
    const double step = bench::median(t[1]), triad = 12.0 * n / bench::median(t[0]);
    std::printf("%-12s threads %d: weights %.1f MB/step, decode step %.2f ms = %.2f tokens/s; triad %.2f GB/s -> limit %.2f "
                "tokens/s; ratio %.2f (%.2f-%.2f)\n",
                name.c_str(), th, wbytes / 1e6, 1e3 * step, 1.0 / step, triad / 1e9, triad / wbytes, bench::median(ratio),
                *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()));
    // where a step's time goes: the decoder's own trace over 3 more steps, largest shares first
    Trace tr;
    for (int i = 0; i < 3; ++i) dec.feed(&tok, 1, logits, true, &tr);
    tr.end_step(0, 0, 0);
    std::vector<std::pair<double, std::string>> share;
    double total = 0;
    for (const auto& [k, c] : tr.steps()[0].cells) {
      share.emplace_back(c.seconds, std::get<1>(k) + " " + std::get<2>(k));
      total += c.seconds;
    }
    std::sort(share.rbegin(), share.rend());
    std::printf("  time by op:");
    for (std::size_t i = 0; i < std::min<std::size_t>(6, share.size()); ++i)
      std::printf(" %s %.0f%%", share[i].second.c_str(), 100 * share[i].first / total);
    std::printf("\n");
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> models;
  for (int i = 1; i < argc; ++i) models.push_back(argv[i]);
  if (models.empty()) models = {"hawk-100m", "griffin-100m", "mqa-100m", "rwkv4-169m"};
  std::printf("bench_decode: batch 1, fp32, median of 11 rounds of (triad, one decode step); kernels dispatched to %s\n",
              bench::simd_isa().c_str());
  for (const auto& name : models) bench_model(name, 11);
}
