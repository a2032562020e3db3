// tests/kernels/test_bf16.cpp — bf16 rounding (kernels/bf16.hpp): the bit-level to_bf16 equals the
// arithmetic reference (ref::to_bf16, nearest multiple of the ulp in double, ties to even) on edge
// values written out by hand, on a sweep of the fp32 bit patterns with every tie and its
// neighbours, and on all bf16 patterns round-tripped; the array forms equal the scalar one.
#include "helpers.hpp"
#include "kernels/bf16.hpp"

#include <cstring>
#include <limits>

namespace k = scanshard::kernels;
using kt::i64;

namespace {
float from_bits(std::uint32_t u) {
  float x = 0;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
bool is_nan_pattern(k::bf16_bits b) { return (b & 0x7F80) == 0x7F80 && (b & 0x007F) != 0; }
}  // namespace

TEST_CASE("bf16 rounding of edge values: zeros, ties, subnormals, overflow, Inf, NaN", "[bf16]") {
  struct Edge { std::uint32_t in; k::bf16_bits out; const char* why; };
  const Edge edges[] = {
      {0x00000000u, 0x0000, "+0"},
      {0x80000000u, 0x8000, "-0 keeps its sign"},
      {0x3F800000u, 0x3F80, "1.0 is exact"},
      {0x3F808000u, 0x3F80, "1 + 2^-8: a tie between 1 and 1 + 2^-7, to the even significand 0x3F80"},
      {0x3F818000u, 0x3F82, "1 + 3·2^-8: a tie between 0x3F81 and 0x3F82, to the even one above"},
      {0x3F808001u, 0x3F81, "just above the tie rounds up"},
      {0x3F807FFFu, 0x3F80, "just below the tie rounds down"},
      {0xBF818000u, 0xBF82, "negative tie: the magnitude rounds like the positive one"},
      {0x00000001u, 0x0000, "the smallest fp32 subnormal (2^-149) is below half of 2^-133: 0"},
      {0x00008000u, 0x0000, "2^-134 = half of the smallest bf16 subnormal 2^-133: tie to even 0"},
      {0x00018000u, 0x0002, "3·2^-134: tie between 1 and 2 ulps of 2^-133, to the even 2"},
      {0x00010000u, 0x0001, "the smallest bf16 subnormal is exact"},
      {0x007FFFFFu, 0x0080, "the largest fp32 subnormal rounds up to the smallest normal 2^-126"},
      {0x00800000u, 0x0080, "the smallest fp32 normal is exact"},
      {0x7F7F0000u, 0x7F7F, "the largest finite bf16 is exact"},
      {0x7F7F7FFFu, 0x7F7F, "below the tie above the largest finite stays finite"},
      {0x7F7F8000u, 0x7F80, "the tie above the largest finite (odd significand) rounds to +Inf"},
      {0x7F7FFFFFu, 0x7F80, "FLT_MAX rounds to +Inf"},
      {0xFF7FFFFFu, 0xFF80, "-FLT_MAX rounds to -Inf"},
      {0x7F800000u, 0x7F80, "+Inf"},
      {0xFF800000u, 0xFF80, "-Inf"},
  };
  for (const auto& e : edges) {
    INFO(e.why << ": input 0x" << std::hex << e.in);
    CHECK(k::to_bf16(from_bits(e.in)) == e.out);
    CHECK(k::ref::to_bf16(from_bits(e.in)) == e.out);
  }
  // NaNs stay NaN (a bit-level round would carry a signalling NaN's payload 0x7F800001 into the
  // Inf pattern) and keep their sign
  for (std::uint32_t nan : {0x7F800001u, 0x7FC00000u, 0x7FFFFFFFu, 0x7F80FFFFu, 0xFF800001u, 0xFFC00000u}) {
    INFO("NaN 0x" << std::hex << nan);
    const k::bf16_bits b = k::to_bf16(from_bits(nan));
    CHECK(is_nan_pattern(b));
    CHECK((b & 0x8000) == (nan >> 16 & 0x8000));
    CHECK(std::isnan(k::from_bf16(b)));
    CHECK(is_nan_pattern(k::ref::to_bf16(from_bits(nan))));
  }
}

TEST_CASE("bf16 rounding equals the arithmetic reference on a sweep of fp32 patterns and every tie", "[bf16]") {
  i64 checked = 0, bad = 0;
  std::uint32_t first_bad = 0;
  auto check = [&](std::uint32_t u) {
    const float x = from_bits(u);
    const k::bf16_bits fast = k::to_bf16(x), ref = k::ref::to_bf16(x);
    const bool same = std::isnan(x) ? is_nan_pattern(fast) && is_nan_pattern(ref) : fast == ref;
    if (!same && bad++ == 0) first_bad = u;
    ++checked;
  };
  // every 65521st pattern (a prime stride: all low-bit residues, both signs, every exponent)
  for (std::uint64_t u = 0; u <= 0xFFFFFFFFull; u += 65521) check(static_cast<std::uint32_t>(u));
  // each bf16 pattern's exact tie above it (low half 0x8000) and its neighbours, for every upper half
  for (std::uint32_t hi = 0; hi <= 0xFFFF; ++hi)
    for (std::uint32_t lo : {0x7FFFu, 0x8000u, 0x8001u, 0x0001u, 0xFFFFu}) check(hi << 16 | lo);
  INFO(bad << " of " << checked << " patterns differ; first 0x" << std::hex << first_bad);
  CHECK(bad == 0);
}

TEST_CASE("bf16: every bf16 value round-trips, the array forms equal the scalar one, error ≤ 2^-8", "[bf16]") {
  for (std::uint32_t b = 0; b <= 0xFFFF; ++b) {
    const auto bits = static_cast<k::bf16_bits>(b);
    const float x = k::from_bf16(bits);
    if (std::isnan(x)) CHECK(is_nan_pattern(k::to_bf16(x)));
    else if (k::to_bf16(x) != bits) FAIL("bf16 pattern 0x" << std::hex << b << " does not round-trip");
  }
  const i64 n = 1003;  // odd: no vector-length multiple
  auto x = kt::randn(n, 7, 3.0f);
  x[0] = std::numeric_limits<float>::quiet_NaN();
  x[1] = -std::numeric_limits<float>::infinity();
  std::vector<k::bf16_bits> packed(n);
  std::vector<float> widened(n), rounded = x;
  k::pack_bf16(packed.data(), x.data(), n);
  k::unpack_bf16(widened.data(), packed.data(), n);
  k::round_bf16(rounded.data(), n);
  CHECK(std::isnan(widened[0]));
  CHECK(std::isnan(rounded[0]));
  double worst = 0;
  for (i64 i = 1; i < n; ++i) {
    CHECK(packed[i] == k::ref::to_bf16(x[i]));
    CHECK(widened[i] == k::from_bf16(k::ref::to_bf16(x[i])));
    CHECK(rounded[i] == widened[i]);
    if (std::isfinite(x[i]) && x[i] != 0) worst = std::max(worst, std::fabs((double(widened[i]) - x[i]) / x[i]));
  }
  // 8 significand bits (7 stored + the implicit one): half an ulp is 2^-8 of the leading bit 2^e,
  // so at most 2^-8 of the value (the unit roundoff u of bf16)
  CHECK(worst <= std::ldexp(1.0, -8));
  CHECK(worst > std::ldexp(1.0, -10));  // and not far below it: 1003 random values come close to the bound
  CHECK(worst > 0);  // random values are not all bf16 already
}
