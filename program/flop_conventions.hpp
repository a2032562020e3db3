// program/flop_conventions.hpp — the FLOP counts papers divide by time to report TFLOP/s per GPU
// or MFU. They are reporting conventions, not what a step computes (lower.cpp counts that): the
// published-measurement suite (reports/published.hpp) converts a paper's figure back to seconds
// per step with the paper's own convention.
//   megatron_eq3: Narayanan et al. 2021 (arXiv 2104.04473) Eq. 3, hardware FLOPs per iteration
//     with full recomputation: 96·B·s·l·h²·(1 + s/6h + V/16lh);
//   palm: Chowdhery et al. 2022 (arXiv 2204.02311) App. B, model FLOPs per token
//     6N + 12·L·H·Q·T (N all parameters, H heads, Q head size, T sequence length).
#pragma once
#include "program/model.hpp"
#include "program/plan.hpp"

namespace scanshard {

enum class FlopConvention { megatron_eq3, palm };

[[nodiscard]] double megatron_eq3_flops(double batch, double seq, double layers, double hidden, double vocab);
[[nodiscard]] double palm_flops_per_token(double params, double layers, double heads, double head_dim, double seq);
// FLOPs of one step (the plan's global batch of seq_len tokens) under a convention.
[[nodiscard]] double step_flops(FlopConvention c, const ModelSpec& m, const Plan& p);

}  // namespace scanshard
