// measure/vector_loops.hpp — the machine's own loops that calibrate and the machine probe time: STREAM
// triad and independent multiply-adds, compiled once per SIMD target and dispatched at run time
// (Google Highway, like the scan kernels), so one portable binary measures the vector unit the
// kernels actually use (AVX-512 here, AVX2 elsewhere) instead of baseline SSE2.
// Not for: kernels (kernels/), timing itself (the callers time these calls).
#pragma once
#include <cstddef>

namespace scanshard::vector_loops {

// a[i] = b[i] + s·c[i] for i < n (12 bytes per element, the STREAM convention).
void triad(float* a, const float* b, const float* c, float s, std::size_t n);
// reps times: acc[j] = acc[j]·mul + add on the 128 independent lanes of acc (2·128·reps FLOPs).
void fma_lanes128(float* acc, long reps, float mul, float add);

}  // namespace scanshard::vector_loops
