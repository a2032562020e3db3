// kernels/rglru.hpp — the Real-Gated Linear Recurrent Unit of Griffin/Hawk (DESIGN §3.1) with
// its block-diagonal gates, forward and backward, and the sequence-chunk API.
//
// For: the recurrence of the recurrent block (after Conv1D, before ⊙ gate and Wo); sequence
// sharding (DESIGN §4). Not for: the gate branch gelu(x Wy) or the projections (linear.hpp).
// Convention: kernels.hpp. Shapes: x, y [B,T,R]; Wa, Wx [Hb,R/Hb,R/Hb]; ba, bx, Λ [R];
// saved gate pre-activations ga, gx [B,T,R]; states h_in, h_out, decay [B,R]; reset [B,T].
//
//   r_t = σ(ga_t),  ga_t = BDa(x_t) = x_t Wa + ba       i_t = σ(gx_t),  gx_t = x_t Wx + bx
//   log a_t = −8 · r_t · softplus(Λ)                    (a = σ(−Λ)^{8 r_t})
//   ā_t = a_t, m_t = √(1 − a_t²)   — or ā_t = 0, m_t = 1 at a document start (reset_t = 1)
//   h_t = ā_t ⊙ h_{t−1} + m_t ⊙ (i_t ⊙ x_t),   h_{−1} = h_in,   y_t = h_t
//   d√z/dz is capped at 1000: evaluated at max(z, 1/(4·1000²)).
//
// Chunk API: forward returns h_out = h_{T−1} and decay = Π_t ā_t (per b, channel), so a chunk
// run from h_in = 0 can be corrected afterwards by rglru_carry (y_t += (Π_{s≤t} ā_s) h_in,
// h_out += decay ⊙ h_in) — equal to running it with h_in directly. Backward takes dh_out, the
// gradient arriving at h_{T−1} from the next chunk (nullable = 0), and accumulates dh_in.
#pragma once
#include "kernels/kernels.hpp"

namespace scanshard::kernels {

constexpr double kRgLruC = 8.0;             // c in log a = −c·r·softplus(Λ)
constexpr double kSqrtGradCap = 1000.0;     // max d√z/dz

namespace ref {
// y, h_out, decay (nullable), saved ga, gx; h_in nullable = 0; reset nullable.
template <class F>
void rglru_forward(F* y, F* h_out, F* decay, F* ga, F* gx, const F* x, const F* h_in,
                   const std::uint8_t* reset, const F* wa, const F* ba, const F* wx, const F* bx,
                   const F* lambda, i64 B, i64 T, i64 R, i64 Hb);
// Accumulates dx, dh_in, dwa, dba, dwx, dbx, dlambda (each nullable except dx). work: [2·B·T·R].
template <class F>
void rglru_backward(F* dx, F* dh_in, F* dwa, F* dba, F* dwx, F* dbx, F* dlambda, F* work,
                    const F* dy, const F* dh_out, const F* y, const F* ga, const F* gx, const F* x,
                    const F* h_in, const std::uint8_t* reset, const F* wa, const F* wx,
                    const F* lambda, i64 B, i64 T, i64 R, i64 Hb);
}  // namespace ref

namespace fast {
// Gates by sgemm (blockdiag), then ONE fused pass: σ, softplus-decay, √(1−a²), scan, output.
void rglru_forward(float* y, float* h_out, float* decay, float* ga, float* gx, const float* x,
                   const float* h_in, const std::uint8_t* reset, const float* wa, const float* ba,
                   const float* wx, const float* bx, const float* lambda, i64 B, i64 T, i64 R, i64 Hb);
// One fused reverse pass (recomputes r, i, a from ga, gx), then the blockdiag backward sgemms.
void rglru_backward(float* dx, float* dh_in, float* dwa, float* dba, float* dwx, float* dbx,
                    float* dlambda, float* work, const float* dy, const float* dh_out,
                    const float* y, const float* ga, const float* gx, const float* x,
                    const float* h_in, const std::uint8_t* reset, const float* wa, const float* wx,
                    const float* lambda, i64 B, i64 T, i64 R, i64 Hb);

// The fused scan alone, given gate pre-activations (used by rglru_forward; exposed for benchmarks
// and for runners that compute the gates themselves). `exponents` (nullable): rglru_decay_exponents
// of `lambda`, computed by the caller once for weights that do not change between calls (a
// decoder); nullptr computes them from lambda in this call (R softplus in double: at one token per
// call, 1.5-3x the scan's own time).
void rglru_scan_forward(float* y, float* h_out, float* decay, const float* x, const float* ga,
                        const float* gx, const float* h_in, const std::uint8_t* reset,
                        const float* lambda, i64 B, i64 T, i64 R, const float* exponents = nullptr);
// The scan's per-channel decay exponents −8·softplus(Λ_c)·log2 e (a_t = 2^{exponent·r_t}), R of them.
void rglru_decay_exponents(float* exponents, const float* lambda, i64 R);
// The fused reverse scan alone: accumulates dx (direct path), dh_in, dlambda; WRITES dga, dgx.
// When dga and dgx together hold at least stream_min_bytes, their 64-byte aligned rows are
// written with streaming (non-temporal) stores: no read for ownership, so 9 streams move instead
// of 11 (bench_scan: 0.84–0.89 → 0.88–0.98 of triad). Below it they stay in cache for the gate
// GEMMs that read them next.
constexpr i64 kStreamMinBytes = i64(32) << 20;  // about one Zen 4/5 CCD's L3
void rglru_scan_backward(float* dx, float* dga, float* dgx, float* dh_in, float* dlambda,
                         const float* dy, const float* dh_out, const float* y, const float* x,
                         const float* ga, const float* gx, const float* h_in,
                         const std::uint8_t* reset, const float* lambda, i64 B, i64 T, i64 R,
                         i64 stream_min_bytes = kStreamMinBytes);

// Sequence-sharding fix-up (DESIGN §4) for a chunk that was run from h_in = 0:
//   y_t += (Π_{s≤t} ā_s) ⊙ h_in;   h_out += decay ⊙ h_in        (ā recomputed from ga)
void rglru_carry(float* y, float* h_out, const float* h_in, const float* decay, const float* ga,
                 const std::uint8_t* reset, const float* lambda, i64 B, i64 T, i64 R);
// The backward counterpart of the carry, for a chunk whose successor's gradient is not known yet:
// dh_in = the gradient reaching h_in from this chunk's dy alone (dh_out = 0):
//   g_{T−1} = dy_{T−1};  g_t = dy_t + ā_{t+1} g_{t+1};  dh_in = ā_0 g_0     (ā recomputed from ga)
// The chunk's total is then dh_in + decay ⊙ dh_out once dh_out arrives (decay = Π ā, forward).
void rglru_carry_backward(float* dh_in, const float* dy, const float* ga, const std::uint8_t* reset,
                          const float* lambda, i64 B, i64 T, i64 R);
}  // namespace fast

}  // namespace scanshard::kernels
