// tests/kernels/test_dropout.cpp — kernels/dropout.hpp: the keep fraction of the counter-based mask
// within a binomial bound, masks that change with every hashed input (step, layer, site, sequence,
// position, channel) and agree with independent draws, a shard's mask (rows, channel offset c0)
// equal to its slice of the whole mask, and backward against finite differences and the closed form.
#include "kernels/dropout.hpp"

#include <cmath>
#include <cstdint>
#include <vector>

#include "helpers.hpp"

using namespace scanshard::kernels;
using kt::i64;

namespace {
// Mask of rows (seq, pos) = (r / T, r % T) for r < rows, C channels from c0.
std::vector<std::uint8_t> mask_of(std::uint64_t key, i64 rows, i64 T, i64 C, i64 c0, double p, i64 seq0 = 0, i64 pos0 = 0) {
  std::vector<std::int64_t> seq(static_cast<std::size_t>(rows)), pos(seq.size());
  for (i64 r = 0; r < rows; ++r) seq[static_cast<std::size_t>(r)] = seq0 + r / T, pos[static_cast<std::size_t>(r)] = pos0 + r % T;
  std::vector<std::uint8_t> m(static_cast<std::size_t>(rows * C));
  dropout_mask(m.data(), key, seq.data(), pos.data(), rows, C, c0, p);
  return m;
}
// |observed − n·q| within 6 binomial standard deviations (a false failure: ~2e-9).
void check_binomial(double observed, double n, double q) {
  const double sd = std::sqrt(n * q * (1 - q));
  INFO("observed " << observed << ", expected " << n * q << " ± 6·" << sd);
  CHECK(std::abs(observed - n * q) <= 6 * sd);
}
// Two masks drawn independently with drop probability p agree on a fraction p² + (1−p)².
void check_independent(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b, double p) {
  double agree = 0;
  for (std::size_t i = 0; i < a.size(); ++i) agree += a[i] == b[i];
  check_binomial(agree, double(a.size()), p * p + (1 - p) * (1 - p));
}
}  // namespace

TEST_CASE("dropout mask keeps 1 − p of the elements (binomial bound)", "[dropout]") {
  for (double p : {0.1, 0.5, 0.9}) {
    const auto m = mask_of(dropout_key(7, 3, 1, DropSite::mlp_out), 256, 64, 512, 0, p);
    double kept = 0;
    for (auto v : m) kept += v;
    INFO("p = " << p);
    check_binomial(kept, double(m.size()), 1 - p);
  }
  const auto none = mask_of(dropout_key(7, 3, 1, DropSite::mlp_out), 16, 8, 64, 0, 0.0);
  for (auto v : none) REQUIRE(v == 1);  // p = 0 keeps everything
}

TEST_CASE("dropout masks differ across seed, step, layer, site, sequence, position and channel", "[dropout]") {
  const double p = 0.3;
  const i64 rows = 64, T = 16, C = 256;
  const auto base = mask_of(dropout_key(7, 3, 1, DropSite::attn_out), rows, T, C, 0, p);
  check_independent(base, mask_of(dropout_key(8, 3, 1, DropSite::attn_out), rows, T, C, 0, p), p);     // seed
  check_independent(base, mask_of(dropout_key(7, 4, 1, DropSite::attn_out), rows, T, C, 0, p), p);     // step
  check_independent(base, mask_of(dropout_key(7, 3, 2, DropSite::attn_out), rows, T, C, 0, p), p);     // layer
  check_independent(base, mask_of(dropout_key(7, 3, -1, DropSite::attn_out), rows, T, C, 0, p), p);    // embedding
  check_independent(base, mask_of(dropout_key(7, 3, 1, DropSite::mlp_out), rows, T, C, 0, p), p);      // site
  check_independent(base, mask_of(dropout_key(7, 3, 1, DropSite::attn_out), rows, T, C, 0, p, 1), p);  // sequence
  check_independent(base, mask_of(dropout_key(7, 3, 1, DropSite::attn_out), rows, T, C, 0, p, 0, 1), p);  // position
  check_independent(base, mask_of(dropout_key(7, 3, 1, DropSite::attn_out), rows, T, C, 1, p), p);     // channel
  // and the same inputs give the same mask (a pure function: recompute redraws it)
  CHECK(base == mask_of(dropout_key(7, 3, 1, DropSite::attn_out), rows, T, C, 0, p));
}

TEST_CASE("a shard's dropout mask is its slice of the whole mask", "[dropout]") {
  const double p = 0.25;
  const std::uint64_t key = dropout_key(11, 5, 2, DropSite::mlp_out);
  const i64 S = 3, T = 12, C = 40;  // 3 sequences of 12 tokens, 40 channels
  const auto whole = mask_of(key, S * T, T, C, 0, p);
  // sequence shard: tokens 6..11 of sequences 1..2, channels 10..29 (a column shard)
  std::vector<std::int64_t> seq, pos;
  for (i64 sq = 1; sq < 3; ++sq)
    for (i64 t = 6; t < 12; ++t) seq.push_back(sq), pos.push_back(t);
  const i64 rows = static_cast<i64>(seq.size()), c0 = 10, Cl = 20;
  std::vector<std::uint8_t> part(static_cast<std::size_t>(rows * Cl));
  dropout_mask(part.data(), key, seq.data(), pos.data(), rows, Cl, c0, p);
  for (i64 r = 0; r < rows; ++r)
    for (i64 c = 0; c < Cl; ++c)
      REQUIRE(part[static_cast<std::size_t>(r * Cl + c)] ==
              whole[static_cast<std::size_t>((seq[static_cast<std::size_t>(r)] * T + pos[static_cast<std::size_t>(r)]) * C + c0 + c)]);
}

TEST_CASE("dropout forward scales kept values by 1/(1 − p), backward equals finite differences", "[dropout]") {
  const double p = 0.2;
  const i64 n = 300;
  const auto m = mask_of(dropout_key(1, 0, 0, DropSite::embed), 10, 10, 30, 0, p);
  const auto x = kt::randn(n, 41), w = kt::randn(n, 42);
  std::vector<float> y(static_cast<std::size_t>(n)), dx(y.size());
  dropout_apply(y.data(), x.data(), m.data(), n, p);
  for (i64 i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    REQUIRE(y[k] == (m[k] ? static_cast<float>(x[k] * (1 / (1 - p))) : 0.0f));
  }
  // loss = Σ w ⊙ dropout(x): dloss/dx = dropout backward of w (same mask and scale)
  dropout_apply(dx.data(), w.data(), m.data(), n, p);
  auto loss = [&](const std::vector<float>& xv) {
    std::vector<float> yv(xv.size());
    dropout_apply(yv.data(), xv.data(), m.data(), n, p);
    double s = 0;
    for (std::size_t k = 0; k < yv.size(); ++k) s += double(w[k]) * double(yv[k]);
    return s;
  };
  for (i64 i = 0; i < n; ++i) {
    auto xp = x, xm = x;
    const auto k = static_cast<std::size_t>(i);
    xp[k] += 0.5f, xm[k] -= 0.5f;  // exact in fp32 for |x| < 2^22: the map is linear
    const double fd = (loss(xp) - loss(xm)) / 1.0;
    REQUIRE(std::abs(fd - double(dx[k])) <= 1e-4 * (1 + std::abs(fd)));
  }
}
