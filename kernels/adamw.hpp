// kernels/adamw.hpp — AdamW with bias correction, decoupled weight decay and global-norm gradient
// clipping, one parameter buffer at a time.
//
// For: the optimizer step of the runner (call once per parameter tensor or shard). The global norm
// is split in two calls — sum_squares per buffer (the runner sums across tensors and ranks), then
// clip_scale — so sharded optimizers (ZeRO) clip by the same norm as the 1-rank run.
// Not for: choosing which tensors get weight decay (pass weight_decay = 0 for those), schedules.
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

struct AdamW {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  float max_grad_norm = 1.0f;  // ≤ 0: no clipping
};

// acc[i] += x[i], i < n: a micro-batch's gradient into the step's accumulator (fp32 or fp64, the
// plan's gradient dtype). The runner's accumulation and calibrate's bench of it (grad_accumulate).
template <class Acc>
inline void accumulate(Acc* acc, const float* x, i64 n) {
  for (i64 i = 0; i < n; ++i) acc[i] += Acc(x[i]);
}

// Σ g² in double (one buffer; add the results of all buffers/ranks for the global norm).
double sum_squares(const float* g, i64 n);

// Factor applied to every gradient: min(1, max_norm / (√total_sq + 1e-6)); 1 when max_norm ≤ 0.
float clip_scale(double total_sq, float max_norm);

namespace ref {
// With g = grad_scale · grad and step t ≥ 1 (the first step is t = 1):
//   m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  m̂ = m/(1−β1ᵗ);  v̂ = v/(1−β2ᵗ)
//   p ← p − lr·(m̂/(√v̂ + ε) + wd·p)                       (decoupled weight decay, uses old p)
void adamw_update(float* param, float* m, float* v, const float* grad, i64 n, i64 t,
                  const AdamW& opt, float weight_decay, float grad_scale);
}  // namespace ref

namespace fast {
void adamw_update(float* param, float* m, float* v, const float* grad, i64 n, i64 t,
                  const AdamW& opt, float weight_decay, float grad_scale);
}  // namespace fast

}  // namespace scanshard::kernels
