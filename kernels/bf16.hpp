// kernels/bf16.hpp — bfloat16 storage: the upper 16 bits of an IEEE-754 binary32 (1 sign, 8
// exponent, 7 stored significand bits), rounded to nearest, ties to even.
//
// For: the runner's mixed-precision storage (plan `dtypes: bf16`): the bf16 working copy of the
// parameters, activations at the points the runner stores them, and every cross-rank message the
// lowering prices at 2 bytes (train/wire.hpp). Arithmetic stays fp32: a bf16 value widens to fp32
// exactly, so OpenBLAS sgemm on widened operands accumulates in fp32 (Debian's OpenBLAS 0.3.21
// declares cblas_sbgemm in its header but its library does not export it — built without
// BUILD_BFLOAT16; checked with `nm -D libopenblasp-r0.3.21.so`).
// Not for: choosing where to round (train/), fp16 (not supported).
//
// Rounding (RNE): x = ±m·2^e with the bf16 unit in the last place u = 2^(e−7) for normal results
// (2^−133 for subnormal ones); the result is the multiple of u nearest to x, the even multiple on a
// tie; results beyond the largest finite bf16 (0x7F7F ≈ 3.39e38) after rounding are ±Inf. NaN
// stays NaN (quiet, sign kept); ±Inf and ±0 are unchanged. Relative error ≤ u = 2⁻⁸ for normal
// results (8 significand bits with the implicit one: half an ulp of 2^(e−7) is 2^(e−8) ≤ 2⁻⁸·|x|).
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/kernels.hpp"

namespace scanshard::kernels {

using bf16_bits = std::uint16_t;

// The bf16 bit pattern nearest to x (see above).
[[nodiscard]] inline bf16_bits to_bf16(float x) noexcept {
  std::uint32_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<bf16_bits>((u >> 16) | 0x0040u);  // NaN: quiet, sign kept
  // Adding 0x7FFF plus the kept part's lowest bit carries into bit 16 exactly when the dropped
  // half is above one half-ulp, or equal to it with an odd kept part (ties to even); a carry out
  // of the largest finite value gives the Inf pattern, as rounding should.
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<bf16_bits>(u >> 16);
}
// The fp32 value of a bf16 pattern (exact).
[[nodiscard]] inline float from_bf16(bf16_bits b) noexcept {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float x = 0;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
// x rounded to the nearest bf16 value, as fp32.
[[nodiscard]] inline float round_bf16(float x) noexcept { return from_bf16(to_bf16(x)); }

// Array forms, i < n.
void pack_bf16(bf16_bits* out, const float* in, i64 n);    // out[i] = to_bf16(in[i])
void unpack_bf16(float* out, const bf16_bits* in, i64 n);  // out[i] = from_bf16(in[i])
void round_bf16(float* x, i64 n);                          // x[i] = round_bf16(x[i]), in place

namespace ref {
// The definition above computed arithmetically, in double: no bit tricks besides reading the
// class of x. For tests of to_bf16.
bf16_bits to_bf16(float x);
}  // namespace ref

}  // namespace scanshard::kernels
