// measure/probe.cpp — see probe.hpp.
#include "measure/probe.hpp"
#include "measure/vector_loops.hpp"

#include <cblas.h>

#include <cstddef>

namespace scanshard {

double machine_probe_seconds(int blocks, int calls) {
  constexpr int kGemm = 256;
  constexpr std::size_t kTriad = 3 * 1024 * 1024 / 12;  // floats per array: 3 MiB over three arrays
  std::vector<float> a(kGemm * kGemm, 0.5f), b(kGemm * kGemm, 0.25f), c(kGemm * kGemm, 0.0f);
  std::vector<float> x(kTriad, 0.0f), y(kTriad, 1.0f), z(kTriad, 2.0f);
  // A block of `calls` probes (~20 ms, as long as a small training step, so it sees the same
  // time-slicing by other processes a step sees); the median over `blocks` blocks, per probe.
  auto one = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kGemm, kGemm, kGemm, 1.0f, a.data(), kGemm, b.data(), kGemm, 0.0f,
                c.data(), kGemm);
    vector_loops::triad(x.data(), y.data(), z.data(), 0.5f, kTriad);
  };
  auto t = call_seconds([&] { for (int i = 0; i < calls; ++i) one(); }, 0.0, blocks, blocks);
  for (auto& s : t) s /= calls;
  volatile float sink = x[kTriad / 2] + c[0];
  (void)sink;
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

double memory_probe_seconds(int blocks, int passes) {
  constexpr std::size_t kTriad = 32 * 1024 * 1024 / 4;  // floats per array: 32 MiB each
  std::vector<float> x(kTriad, 0.0f), y(kTriad, 1.0f), z(kTriad, 2.0f);
  auto t = call_seconds([&] { for (int i = 0; i < passes; ++i) vector_loops::triad(x.data(), y.data(), z.data(), 0.5f, kTriad); },
                        0.0, blocks, blocks);
  for (auto& s : t) s /= passes;
  volatile float sink = x[kTriad / 2];
  (void)sink;
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace scanshard
