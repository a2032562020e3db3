// tests/kernels/test_adamw.cpp — AdamW: fast == reference, the reference == the textbook update
// written out for one scalar over several steps, and global-norm clipping.
#include "helpers.hpp"
#include "kernels/adamw.hpp"

namespace k = scanshard::kernels;
using kt::i64;

TEST_CASE("AdamW fast equals reference and the textbook update", "[adamw]") {
  const i64 n = 37;
  k::AdamW opt;
  opt.lr = 0.01f; opt.beta1 = 0.8f; opt.beta2 = 0.9f; opt.eps = 1e-6f;
  auto p_ref = kt::randn(n, 41), p_fast = p_ref;
  std::vector<float> m_ref(n, 0), v_ref(n, 0), m_fast(n, 0), v_fast(n, 0);
  // textbook, in double for element 5
  double p = p_ref[5], m = 0, v = 0;
  const float wd = 0.3f, gs = 0.5f;
  for (i64 t = 1; t <= 4; ++t) {
    const auto g = kt::randn(n, 42 + unsigned(t));
    k::ref::adamw_update(p_ref.data(), m_ref.data(), v_ref.data(), g.data(), n, t, opt, wd, gs);
    k::fast::adamw_update(p_fast.data(), m_fast.data(), v_fast.data(), g.data(), n, t, opt, wd, gs);
    const double gg = 0.5 * g[5];
    m = 0.8 * m + 0.2 * gg;
    v = 0.9 * v + 0.1 * gg * gg;
    const double mh = m / (1 - std::pow(0.8, t)), vh = v / (1 - std::pow(0.9, t));
    p = p - 0.01 * (mh / (std::sqrt(vh) + 1e-6) + 0.3 * p);
  }
  KT_CHECK_CLOSE(p_fast, p_ref, 1e-6, 1e-5);
  KT_CHECK_CLOSE(m_fast, m_ref, 1e-6, 1e-5);
  KT_CHECK_CLOSE(v_fast, v_ref, 1e-6, 1e-5);
  CHECK(std::fabs(p_ref[5] - p) < 1e-5);
}

TEST_CASE("global-norm clipping scales gradients to the maximum norm", "[adamw]") {
  const std::vector<float> a = {3, 0, 0}, b = {0, 4};
  const double total = k::sum_squares(a.data(), 3) + k::sum_squares(b.data(), 2);
  CHECK(total == 25.0);
  // norm 5, max 1 → scale 1/5 (up to the 1e-6 guard); max 10 → no clipping
  CHECK(std::fabs(k::clip_scale(total, 1.0f) - 0.2f) < 1e-6);
  CHECK(k::clip_scale(total, 10.0f) == 1.0f);
  CHECK(k::clip_scale(total, 0.0f) == 1.0f);
}
