// program/flop_conventions.cpp — see flop_conventions.hpp.
#include "program/flop_conventions.hpp"

namespace scanshard {

double megatron_eq3_flops(double B, double s, double l, double h, double V) {
  return 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h));
}

double palm_flops_per_token(double N, double L, double H, double Q, double T) { return 6 * N + 12 * L * H * Q * T; }

double step_flops(FlopConvention c, const ModelSpec& m, const Plan& p) {
  const double B = static_cast<double>(p.global_batch), T = static_cast<double>(p.seq_len);
  if (c == FlopConvention::megatron_eq3)
    return megatron_eq3_flops(B, T, static_cast<double>(m.depth), static_cast<double>(m.width), static_cast<double>(m.vocab));
  const double head_dim = m.head_dim > 0 ? static_cast<double>(m.head_dim) : static_cast<double>(m.width / m.heads);
  return B * T * palm_flops_per_token(static_cast<double>(count_parameters(m).total), static_cast<double>(m.depth),
                                      static_cast<double>(m.heads), head_dim, T);
}

}  // namespace scanshard
