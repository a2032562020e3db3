// kernels/linear.cpp — see linear.hpp. Reference: triple loops. Fast: cblas_sgemm with beta = 1
// for the accumulating backward, bias added by a row copy before the GEMM.
#include "kernels/linear.hpp"

#include <cblas.h>

#include <vector>

namespace scanshard::kernels {

namespace ref {

template <class F>
void linear_forward(F* y, const F* x, const F* w, const F* b, i64 M, i64 C, i64 OC) {
  for (i64 m = 0; m < M; ++m)
    for (i64 o = 0; o < OC; ++o) {
      // y[m,o] = b[o] + Σ_c x[m,c] W[c,o]
      double acc = b ? b[o] : 0.0;
      for (i64 c = 0; c < C; ++c) acc += double(x[m * C + c]) * w[c * OC + o];
      y[m * OC + o] = F(acc);
    }
}

template <class F>
void linear_backward(F* dx, F* dw, F* db, const F* dy, const F* x,
                     const F* w, i64 M, i64 C, i64 OC) {
  if (dx)
    for (i64 m = 0; m < M; ++m)
      for (i64 c = 0; c < C; ++c) {
        // dx[m,c] += Σ_o dy[m,o] W[c,o]
        double acc = 0;
        for (i64 o = 0; o < OC; ++o) acc += double(dy[m * OC + o]) * w[c * OC + o];
        dx[m * C + c] += F(acc);
      }
  if (dw)
    for (i64 c = 0; c < C; ++c)
      for (i64 o = 0; o < OC; ++o) {
        // dW[c,o] += Σ_m x[m,c] dy[m,o]
        double acc = 0;
        for (i64 m = 0; m < M; ++m) acc += double(x[m * C + c]) * dy[m * OC + o];
        dw[c * OC + o] += F(acc);
      }
  if (db)
    for (i64 o = 0; o < OC; ++o) {
      // db[o] += Σ_m dy[m,o]
      double acc = 0;
      for (i64 m = 0; m < M; ++m) acc += dy[m * OC + o];
      db[o] += F(acc);
    }
}

template <class F>
void blockdiag_forward(F* y, const F* x, const F* w, const F* b, i64 M, i64 R, i64 Hb) {
  const i64 S = R / Hb;
  for (i64 m = 0; m < M; ++m)
    for (i64 h = 0; h < Hb; ++h)
      for (i64 j = 0; j < S; ++j) {
        // y[m,hS+j] = b[hS+j] + Σ_i x[m,hS+i] W[h,i,j]
        double acc = b ? b[h * S + j] : 0.0;
        for (i64 i = 0; i < S; ++i) acc += double(x[m * R + h * S + i]) * w[(h * S + i) * S + j];
        y[m * R + h * S + j] = F(acc);
      }
}

template <class F>
void blockdiag_backward(F* dx, F* dw, F* db, const F* dy, const F* x,
                        const F* w, i64 M, i64 R, i64 Hb) {
  const i64 S = R / Hb;
  for (i64 h = 0; h < Hb; ++h) {
    if (dx)
      for (i64 m = 0; m < M; ++m)
        for (i64 i = 0; i < S; ++i) {
          // dx[m,hS+i] += Σ_j dy[m,hS+j] W[h,i,j]
          double acc = 0;
          for (i64 j = 0; j < S; ++j) acc += double(dy[m * R + h * S + j]) * w[(h * S + i) * S + j];
          dx[m * R + h * S + i] += F(acc);
        }
    if (dw)
      for (i64 i = 0; i < S; ++i)
        for (i64 j = 0; j < S; ++j) {
          // dW[h,i,j] += Σ_m x[m,hS+i] dy[m,hS+j]
          double acc = 0;
          for (i64 m = 0; m < M; ++m) acc += double(x[m * R + h * S + i]) * dy[m * R + h * S + j];
          dw[(h * S + i) * S + j] += F(acc);
        }
  }
  if (db)
    for (i64 r = 0; r < R; ++r) {
      double acc = 0;
      for (i64 m = 0; m < M; ++m) acc += dy[m * R + r];
      db[r] += F(acc);
    }
}


template <class F>
void grouped_linear_forward(F* y, const F* x, const F* w, i64 M, i64 G, i64 C, i64 OC) {
  for (i64 g = 0; g < G; ++g)
    for (i64 m = 0; m < M; ++m)
      for (i64 o = 0; o < OC; ++o) {
        // y[g,m,o] = Σ_c x[m, g·C + c] W[g,c,o]
        double acc = 0;
        for (i64 c = 0; c < C; ++c) acc += double(x[m * G * C + g * C + c]) * w[(g * C + c) * OC + o];
        y[(g * M + m) * OC + o] = F(acc);
      }
}

template <class F>
void grouped_linear_backward(F* dx, F* dw, const F* dy, const F* x, const F* w, i64 M, i64 G, i64 C, i64 OC) {
  for (i64 g = 0; g < G; ++g) {
    if (dx)
      for (i64 m = 0; m < M; ++m)
        for (i64 c = 0; c < C; ++c) {
          double acc = 0;  // dx[m, g·C + c] += Σ_o dy[g,m,o] W[g,c,o]
          for (i64 o = 0; o < OC; ++o) acc += double(dy[(g * M + m) * OC + o]) * w[(g * C + c) * OC + o];
          dx[m * G * C + g * C + c] += F(acc);
        }
    if (dw)
      for (i64 c = 0; c < C; ++c)
        for (i64 o = 0; o < OC; ++o) {
          double acc = 0;  // dW[g,c,o] += Σ_m x[m, g·C + c] dy[g,m,o]
          for (i64 m = 0; m < M; ++m) acc += double(x[m * G * C + g * C + c]) * dy[(g * M + m) * OC + o];
          dw[(g * C + c) * OC + o] += F(acc);
        }
  }
}

#define SCANSHARD_INSTANTIATE(F) \
  template void linear_forward<F>(F*, const F*, const F*, const F*, i64, i64, i64); \
  template void linear_backward<F>(F*, F*, F*, const F*, const F*, const F*, i64, i64, i64); \
  template void blockdiag_forward<F>(F*, const F*, const F*, const F*, i64, i64, i64); \
  template void blockdiag_backward<F>(F*, F*, F*, const F*, const F*, const F*, i64, i64, i64); \
  template void grouped_linear_forward<F>(F*, const F*, const F*, i64, i64, i64, i64); \
  template void grouped_linear_backward<F>(F*, F*, const F*, const F*, const F*, i64, i64, i64, i64);
SCANSHARD_INSTANTIATE(float)
SCANSHARD_INSTANTIATE(double)
#undef SCANSHARD_INSTANTIATE

}  // namespace ref

namespace fast {

namespace {
// db[o] += Σ_m dy[m,o]: rows split over threads, per-thread partial sums, then reduced.
void bias_grad(float* db, const float* dy, i64 M, i64 OC) {
  #pragma omp parallel
  {
    std::vector<float> acc(OC, 0.0f);
    #pragma omp for schedule(static)
    for (i64 m = 0; m < M; ++m) {
      const float* row = dy + m * OC;
      #pragma omp simd
      for (i64 o = 0; o < OC; ++o) acc[o] += row[o];
    }
    #pragma omp critical
    for (i64 o = 0; o < OC; ++o) db[o] += acc[o];
  }
}

void fill_bias(float* y, const float* b, i64 M, i64 ld, i64 OC) {
  #pragma omp parallel for schedule(static)
  for (i64 m = 0; m < M; ++m) {
    float* row = y + m * ld;
    if (b) std::memcpy(row, b, sizeof(float) * OC);
    else std::memset(row, 0, sizeof(float) * OC);
  }
}
}  // namespace

void linear_forward(float* y, const float* x, const float* w, const float* b, i64 M, i64 C, i64 OC) {
  if (M == 0 || OC == 0) return;
  if (b) fill_bias(y, b, M, OC, OC);
  if (M == 1) {  // one row (batch-1 decoding): y = Wᵀx streams W once; sgemm would pack all of W first
    cblas_sgemv(CblasRowMajor, CblasTrans, int(C), int(OC), 1.0f, w, int(OC), x, 1, b ? 1.0f : 0.0f, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(OC), int(C), 1.0f, x, int(C),
              w, int(OC), b ? 1.0f : 0.0f, y, int(OC));
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, i64 M, i64 C, i64 OC) {
  if (M == 0) return;
  // dx [M,C] += dy [M,OC] · Wᵀ [OC,C]
  if (dx)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(C), int(OC), 1.0f, dy, int(OC),
                w, int(OC), 1.0f, dx, int(C));
  // dW [C,OC] += xᵀ [C,M] · dy [M,OC]
  if (dw)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(C), int(OC), int(M), 1.0f, x, int(C),
                dy, int(OC), 1.0f, dw, int(OC));
  if (db) bias_grad(db, dy, M, OC);
}

void blockdiag_forward(float* y, const float* x, const float* w, const float* b, i64 M, i64 R, i64 Hb) {
  const i64 S = R / Hb;
  if (M == 0) return;
  fill_bias(y, b, M, R, R);
  for (i64 h = 0; h < Hb; ++h)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(S), int(S), 1.0f, x + h * S,
                int(R), w + h * S * S, int(S), 1.0f, y + h * S, int(R));
}

void blockdiag_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                        const float* w, i64 M, i64 R, i64 Hb) {
  const i64 S = R / Hb;
  if (M == 0) return;
  for (i64 h = 0; h < Hb; ++h) {
    if (dx)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(S), int(S), 1.0f, dy + h * S,
                  int(R), w + h * S * S, int(S), 1.0f, dx + h * S, int(R));
    if (dw)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(S), int(S), int(M), 1.0f, x + h * S,
                  int(R), dy + h * S, int(R), 1.0f, dw + h * S * S, int(S));
  }
  if (db) bias_grad(db, dy, M, R);
}

void grouped_linear_forward(float* y, const float* x, const float* w, i64 M, i64 G, i64 C, i64 OC) {
  if (M == 0 || OC == 0) return;
  for (i64 g = 0; g < G; ++g)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(OC), int(C), 1.0f, x + g * C, int(G * C),
                w + g * C * OC, int(OC), 0.0f, y + g * M * OC, int(OC));
}

void grouped_linear_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, i64 M, i64 G,
                             i64 C, i64 OC) {
  if (M == 0) return;
  for (i64 g = 0; g < G; ++g) {
    if (dx)  // dx[:, g·C:(g+1)·C] += dy_g [M,OC] · W_gᵀ [OC,C]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(C), int(OC), 1.0f, dy + g * M * OC, int(OC),
                  w + g * C * OC, int(OC), 1.0f, dx + g * C, int(G * C));
    if (dw)  // dW_g [C,OC] += x_gᵀ [C,M] · dy_g [M,OC]
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(C), int(OC), int(M), 1.0f, x + g * C, int(G * C),
                  dy + g * M * OC, int(OC), 1.0f, dw + g * C * OC, int(OC));
  }
}

}  // namespace fast

}  // namespace scanshard::kernels
