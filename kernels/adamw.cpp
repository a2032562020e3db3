// kernels/adamw.cpp — see adamw.hpp.
#include "kernels/adamw.hpp"

#include <cmath>

namespace scanshard::kernels {

double sum_squares(const float* g, i64 n) {
  double s = 0;
  #pragma omp parallel for reduction(+ : s) schedule(static)
  for (i64 i = 0; i < n; ++i) s += double(g[i]) * g[i];
  return s;
}

float clip_scale(double total_sq, float max_norm) {
  if (max_norm <= 0) return 1.0f;
  const double norm = std::sqrt(total_sq);
  const double s = double(max_norm) / (norm + 1e-6);
  return s < 1.0 ? float(s) : 1.0f;
}

namespace ref {

void adamw_update(float* param, float* m, float* v, const float* grad, i64 n, i64 t,
                  const AdamW& opt, float weight_decay, float grad_scale) {
  const double bc1 = 1.0 - std::pow(double(opt.beta1), double(t));
  const double bc2 = 1.0 - std::pow(double(opt.beta2), double(t));
  for (i64 i = 0; i < n; ++i) {
    const float g = grad_scale * grad[i];
    m[i] = opt.beta1 * m[i] + (1.0f - opt.beta1) * g;            // m ← β1 m + (1−β1) g
    v[i] = opt.beta2 * v[i] + (1.0f - opt.beta2) * g * g;        // v ← β2 v + (1−β2) g²
    const double mhat = m[i] / bc1, vhat = v[i] / bc2;           // bias correction
    // p ← p − lr (m̂/(√v̂+ε) + wd p)
    param[i] = float(param[i] - opt.lr * (mhat / (std::sqrt(vhat) + opt.eps) + weight_decay * param[i]));
  }
}

}  // namespace ref

namespace fast {

void adamw_update(float* param, float* m, float* v, const float* grad, i64 n, i64 t,
                  const AdamW& opt, float weight_decay, float grad_scale) {
  const float bc1 = float(1.0 - std::pow(double(opt.beta1), double(t)));
  const float bc2 = float(1.0 - std::pow(double(opt.beta2), double(t)));
  const float inv_bc1 = 1.0f / bc1, inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
  const float b1 = opt.beta1, b2 = opt.beta2, lr = opt.lr, eps = opt.eps, wd = weight_decay;
  #pragma omp parallel for simd schedule(static)
  for (i64 i = 0; i < n; ++i) {
    const float g = grad_scale * grad[i];
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    // m̂/(√v̂+ε) = (m/bc1) / (√v/√bc2 + ε)
    param[i] -= lr * ((mi * inv_bc1) / (std::sqrt(vi) * inv_sqrt_bc2 + eps) + wd * param[i]);
  }
}

}  // namespace fast

}  // namespace scanshard::kernels
