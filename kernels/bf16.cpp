// kernels/bf16.cpp — see bf16.hpp.
#include "kernels/bf16.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace scanshard::kernels {

void pack_bf16(bf16_bits* out, const float* in, i64 n) {
  for (i64 i = 0; i < n; ++i) out[i] = to_bf16(in[i]);
}
void unpack_bf16(float* out, const bf16_bits* in, i64 n) {
  for (i64 i = 0; i < n; ++i) out[i] = from_bf16(in[i]);
}
void round_bf16(float* x, i64 n) {
  for (i64 i = 0; i < n; ++i) x[i] = round_bf16(x[i]);
}

namespace ref {

// The bf16 pattern of a value that is exactly a bf16 number (or ±Inf): sign, then the exponent
// and 7-bit significand read back arithmetically.
bf16_bits encode_exact(double v) {
  const bf16_bits sign = std::signbit(v) ? 0x8000 : 0;
  const double a = std::fabs(v);
  if (std::isinf(a)) return sign | 0x7F80;
  if (a == 0) return sign;
  int e = 0;
  std::frexp(a, &e);                       // a = f·2^e, f ∈ [0.5, 1): the leading bit is 2^(e−1)
  if (e - 1 < -126) {                      // subnormal: a = k·2^−133, k < 128
    return sign | static_cast<bf16_bits>(std::ldexp(a, 133));
  }
  const auto biased = static_cast<bf16_bits>(e - 1 + 127);
  const auto frac = static_cast<bf16_bits>(std::ldexp(a, 7 - (e - 1)) - 128);  // a/2^(e−1) = 1 + frac/128
  return sign | static_cast<bf16_bits>(biased << 7) | frac;
}

bf16_bits to_bf16(float x) {
  if (std::isnan(x)) return std::signbit(x) ? 0xFFC0 : 0x7FC0;
  if (std::isinf(x) || x == 0) return encode_exact(x);
  const double a = std::fabs(static_cast<double>(x));
  int e = 0;
  std::frexp(a, &e);
  const int lead = std::max(e - 1, -126);          // the exponent of the result's leading bit (subnormals: −126)
  const double ulp = std::ldexp(1.0, lead - 7);    // 7 stored significand bits
  const double q = a / ulp;                        // exact: a has 24 bits, the division is by a power of 2
  double k = std::floor(q);
  const double rest = q - k;                       // exact
  if (rest > 0.5 || (rest == 0.5 && std::fmod(k, 2.0) == 1.0)) k += 1;  // nearest, ties to even
  double r = k * ulp;                              // may reach 2^(lead+1): the next binade, still exact
  const double largest = std::ldexp(255.0, 127 - 7);  // 0x7F7F: (2 − 2^−7)·2^127
  if (r > largest) r = std::numeric_limits<double>::infinity();
  return encode_exact(std::signbit(x) ? -r : r);
}

}  // namespace ref
}  // namespace scanshard::kernels
