// train/optimizer.hpp — the optimizer section of a training run: AdamW's hyperparameters, the
// learning-rate schedule (linear warm-up, then cosine decay) and gradient clipping, read from a
// train config (`scanshard train --optimizer FILE`), printed at start, and recorded in every
// checkpoint's /meta so that a resume with another optimizer is refused.
//
// For: the runner (lr_at per step), `scanshard train` and resume checks. Not for: the update
// itself (kernels/adamw.hpp).
//
// The file (every key optional; defaults and their sources):
//   optimizer:
//     lr: 1.0e-3            # peak learning rate (scanshard's tiny-model default)
//     beta1: 0.9            # GPT-3 (Brown et al. 2020, appendix B: Adam β1 = 0.9, β2 = 0.95, ε = 1e-8)
//     beta2: 0.95
//     eps: 1.0e-8
//     weight_decay: 0.1     # GPT-3 app. B (decoupled, Loshchilov & Hutter 2019), matrices only
//     max_grad_norm: 1.0    # GPT-3 app. B: clip the global gradient norm at 1.0; 0: no clipping
//     warmup_steps: 0       # linear warm-up from lr/warmup_steps to lr over these steps
//     decay_steps: 0        # > 0: cosine decay from lr at the end of the warm-up to min_lr_ratio·lr
//                           #      at step decay_steps, constant after; 0: constant lr
//     min_lr_ratio: 0.1     # GPT-3 app. B: cosine decay down to 10 % of the peak
// The schedule, for the 1-based step s with w = warmup_steps, D = decay_steps, r = min_lr_ratio:
//   s ≤ w:          lr · s / w
//   w < s < D:      lr · (r + (1 − r) · ½ (1 + cos(π (s − w) / (D − w))))
//   s ≥ D (D > 0):  lr · r
#pragma once
#include <cstdint>
#include <string>

#include "kernels/adamw.hpp"

namespace scanshard::train {

// The learning-rate schedule as a factor of the peak lr (formula above); the default is constant.
struct LrSchedule {
  std::int64_t warmup_steps = 0;
  std::int64_t decay_steps = 0;
  double min_lr_ratio = 0.1;
  // lr(s) / lr for the 1-based step s; exactly 1 when constant.
  [[nodiscard]] double factor(std::int64_t step) const;
};

struct OptimizerConfig {
  kernels::AdamW adamw{};  // lr is the peak; max_grad_norm the clipping threshold
  LrSchedule schedule{};

  // The YAML text recorded in /meta ("optimizer:\n  lr: ...\n ..."), read back by parse_optimizer.
  [[nodiscard]] std::string to_yaml() const;
  // One line for the start of a run.
  [[nodiscard]] std::string describe() const;
};

// Reads the `optimizer:` section of `text` (a train config); `file` names it in errors. Unknown
// keys, non-positive lr or eps, betas outside [0, 1), negative weight decay, clipping or steps,
// decay_steps not after the warm-up, and min_lr_ratio outside [0, 1] are ConfigErrors.
OptimizerConfig parse_optimizer(const std::string& text, const std::string& file);
OptimizerConfig load_optimizer(const std::string& path);

// "" when equal; else the keys that differ, "lr 0.001 → 0.002, warmup_steps 0 → 10".
std::string optimizer_changes(const OptimizerConfig& before, const OptimizerConfig& now);

}  // namespace scanshard::train
