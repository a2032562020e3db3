// tests/kernels/test_rwkv4.cpp — RWKV-4 WKV and token shift: reference backward vs central finite
// differences in double, fast vs reference, sequence chunks chained (and composed from zero-state
// summaries) == one pass, and stability against a long-double evaluation of the defining sums.
// Not for: the block composition or the tiny model (test_rwkv_model.cpp).
#include "kernels/rwkv4.hpp"

#include <omp.h>

#include <cmath>
#include <vector>

#include "helpers.hpp"

using namespace scanshard::kernels;
using kt::i64;

namespace {

struct Wkv4Case {
  i64 B, T, D;
  std::vector<float> k, v, decay, bonus, dy;
};

Wkv4Case make_case(i64 B, i64 T, i64 D, unsigned seed, float kscale = 1.0f) {
  Wkv4Case c{B, T, D, kt::randn(B * T * D, seed, kscale), kt::randn(B * T * D, seed + 1),
             kt::randn(D, seed + 2, 0.7f, -0.5f), kt::randn(D, seed + 3, 0.5f),
             kt::randn(B * T * D, seed + 4)};
  return c;
}

// Independent evaluation of the defining sums (DESIGN §3.2) in long double, O(T²) per channel:
//   wkv_t = (Σ_{i<t} e^{−(t−1−i)w + k_i} v_i + e^{u+k_t} v_t) / (Σ_{i<t} e^{−(t−1−i)w + k_i} + e^{u+k_t})
std::vector<long double> wkv4_direct(const std::vector<float>& k, const std::vector<float>& v,
                                     const std::vector<float>& decay,
                                     const std::vector<float>& bonus, i64 B, i64 T, i64 D) {
  std::vector<long double> y(size_t(B * T * D));
  for (i64 b = 0; b < B; ++b)
    for (i64 c = 0; c < D; ++c) {
      const long double w = std::exp((long double)decay[c]), u = bonus[c];
      for (i64 t = 0; t < T; ++t) {
        const i64 it = (b * T + t) * D + c;
        long double num = std::exp(u + k[it]) * v[it], den = std::exp(u + k[it]);
        for (i64 i = 0; i < t; ++i) {
          const i64 ii = (b * T + i) * D + c;
          const long double e = std::exp(-(long double)(t - 1 - i) * w + k[ii]);
          num += e * v[ii];
          den += e;
        }
        y[it] = num / den;
      }
    }
  return y;
}

}  // namespace

TEST_CASE("RWKV4 WKV reference backward matches finite differences in double", "[rwkv4]") {
  const i64 B = 2, T = 6, D = 3;
  auto c = make_case(B, T, D, 11, 1.5f);
  // an incoming state: the outgoing state of a random 4-token prefix
  auto pk = kt::to_d(kt::randn(B * 4 * D, 21)), pv = kt::to_d(kt::randn(B * 4 * D, 22));
  auto k = kt::to_d(c.k), v = kt::to_d(c.v), decay = kt::to_d(c.decay), bonus = kt::to_d(c.bonus);
  auto dy = kt::to_d(c.dy);
  std::vector<double> sin(3 * B * D), y(B * T * D), sout(3 * B * D);
  std::vector<double> py(B * 4 * D);
  ref::wkv4_forward<double>(py.data(), sin.data(), pk.data(), pv.data(), decay.data(),
                            bonus.data(), nullptr, B, 4, D);
  // downstream loss on the real outgoing state: ℓ = Σ gα·α_out + gβ·β_out, α = a·e^p
  auto ga = kt::to_d(kt::randn(B * D, 23)), gb = kt::to_d(kt::randn(B * D, 24));
  auto loss = [&] {
    ref::wkv4_forward<double>(y.data(), sout.data(), k.data(), v.data(), decay.data(),
                              bonus.data(), sin.data(), B, T, D);
    double s = kt::dot(y, dy);
    for (i64 i = 0; i < B * D; ++i)
      s += (ga[i] * sout[i] + gb[i] * sout[B * D + i]) * std::exp(sout[2 * B * D + i]);
    return s;
  };
  loss();
  std::vector<double> dso(2 * B * D);
  for (i64 i = 0; i < B * D; ++i) {
    dso[i] = ga[i] * std::exp(sout[2 * B * D + i]);
    dso[B * D + i] = gb[i] * std::exp(sout[2 * B * D + i]);
  }
  std::vector<double> dk(k.size()), dv(v.size()), dd(D), du(D), dsin(2 * B * D);
  ref::wkv4_backward<double>(dk.data(), dv.data(), dd.data(), du.data(), dsin.data(), dy.data(),
                             dso.data(), k.data(), v.data(), decay.data(), bonus.data(),
                             sin.data(), B, T, D);
  auto all = [](i64 n) { return kt::sample_indices(n, n, 0); };
  KT_CHECK_CLOSE(dk, kt::fd_grad(k, all(k.size()), loss), 1e-7, 1e-6);
  KT_CHECK_CLOSE(dv, kt::fd_grad(v, all(v.size()), loss), 1e-7, 1e-6);
  KT_CHECK_CLOSE(dd, kt::fd_grad(decay, all(D), loss), 1e-7, 1e-6);
  KT_CHECK_CLOSE(du, kt::fd_grad(bonus, all(D), loss), 1e-7, 1e-6);
  // incoming state: perturb a and b with p held fixed
  std::vector<i64> ab;
  for (i64 i = 0; i < 2 * B * D; ++i) ab.push_back(i);
  auto fd_s = kt::fd_grad(sin, ab, loss);
  fd_s.resize(2 * B * D);
  KT_CHECK_CLOSE(dsin, fd_s, 1e-7, 1e-6);
}

TEST_CASE("RWKV4 WKV reference forward equals the defining sums in long double", "[rwkv4]") {
  const i64 B = 2, T = 9, D = 4;
  auto c = make_case(B, T, D, 31, 2.0f);
  std::vector<float> y(B * T * D);
  ref::wkv4_forward<float>(y.data(), nullptr, c.k.data(), c.v.data(), c.decay.data(),
                           c.bonus.data(), nullptr, B, T, D);
  KT_CHECK_CLOSE(y, wkv4_direct(c.k, c.v, c.decay, c.bonus, B, T, D), 1e-6, 1e-5);
}

TEST_CASE("RWKV4 WKV fast equals reference on awkward shapes", "[rwkv4]") {
  kt::on_every_simd_target([&] {
    // D = 300: one full 256-channel block plus a ragged one; odd T; non-zero incoming state
    const i64 B = 2, T = 37, D = 300;
    auto c = make_case(B, T, D, 41, 2.0f);
    std::vector<float> sin(3 * B * D), tmp(B * 5 * D);
    auto pk = kt::randn(B * 5 * D, 42), pv = kt::randn(B * 5 * D, 43);
    ref::wkv4_forward<float>(tmp.data(), sin.data(), pk.data(), pv.data(), c.decay.data(),
                             c.bonus.data(), nullptr, B, 5, D);
    auto dso = kt::randn(2 * B * D, 44, 0.1f);
    // reference in double
    auto kd = kt::to_d(c.k), vd = kt::to_d(c.v), dd = kt::to_d(c.decay), ud = kt::to_d(c.bonus);
    auto gd = kt::to_d(c.dy), sind = kt::to_d(sin), dsod = kt::to_d(dso);
    std::vector<double> yr(B * T * D), sr(3 * B * D), dkr(B * T * D), dvr(B * T * D), ddr(D),
        dur(D), dsr(2 * B * D);
    ref::wkv4_forward<double>(yr.data(), sr.data(), kd.data(), vd.data(), dd.data(), ud.data(),
                              sind.data(), B, T, D);
    ref::wkv4_backward<double>(dkr.data(), dvr.data(), ddr.data(), dur.data(), dsr.data(),
                               gd.data(), dsod.data(), kd.data(), vd.data(), dd.data(), ud.data(),
                               sind.data(), B, T, D);
    std::vector<float> y(B * T * D), s(3 * B * D), dk(B * T * D), dv(B * T * D), ddc(D), du(D),
        ds(2 * B * D);
    fast::wkv4_forward(y.data(), s.data(), c.k.data(), c.v.data(), c.decay.data(), c.bonus.data(),
                       sin.data(), B, T, D);
    fast::wkv4_backward(dk.data(), dv.data(), ddc.data(), du.data(), ds.data(), c.dy.data(),
                        dso.data(), c.k.data(), c.v.data(), c.decay.data(), c.bonus.data(),
                        sin.data(), B, T, D);
    KT_CHECK_CLOSE(y, yr, 1e-5, 1e-4);
    KT_CHECK_CLOSE(s, sr, 1e-5, 1e-4);
    KT_CHECK_CLOSE(dk, dkr, 1e-4, 1e-4);
    KT_CHECK_CLOSE(dv, dvr, 1e-4, 1e-4);
    KT_CHECK_CLOSE(ddc, ddr, 1e-3, 1e-4);
    KT_CHECK_CLOSE(du, dur, 1e-3, 1e-4);
    KT_CHECK_CLOSE(ds, dsr, 1e-4, 1e-4);
  });
}

TEST_CASE("RWKV4 WKV forward checkpoints are the states at segment starts; backward from them equals reference", "[rwkv4]") {
  kt::on_every_simd_target([&] {
    // D = 300: a ragged last vector; T around the 16-token checkpoint stride; with and without an
    // incoming state; bonus 60 forces the max-form forward (|u − w| beyond the lazy form's bound)
    for (const i64 T : {1, 16, 17, 37, 48}) {
      for (const bool with_state : {false, true}) {
        for (const float bonus_shift : {0.0f, 60.0f}) {
          INFO("T " << T << ", incoming state " << with_state << ", bonus shift " << bonus_shift);
          const i64 B = 2, D = 300, NC = wkv4_checkpoints(T);
          auto c = make_case(B, T, D, 61, 2.0f);
          for (auto& u : c.bonus) u += bonus_shift;
          std::vector<float> sin(3 * B * D), tmp(B * 5 * D);
          auto pk = kt::randn(B * 5 * D, 62), pv = kt::randn(B * 5 * D, 63);
          ref::wkv4_forward<float>(tmp.data(), sin.data(), pk.data(), pv.data(), c.decay.data(), c.bonus.data(),
                                   nullptr, B, 5, D);
          const float* si = with_state ? sin.data() : nullptr;
          auto kd = kt::to_d(c.k), vd = kt::to_d(c.v), dd = kt::to_d(c.decay), ud = kt::to_d(c.bonus);
          auto gd = kt::to_d(c.dy), sind = kt::to_d(sin);
          const double* sid = with_state ? sind.data() : nullptr;
          // independent: the state before token 16·s is the reference's outgoing state of the 16·s-token prefix
          // (the prefix of every batch row: copy [B, t, D] out of [B, T, D])
          std::vector<double> ck_ref(size_t(wkv4_checkpoint_floats(B, T, D)));
          for (i64 s = 1; s <= NC; ++s) {
            const i64 t = s * kWkv4CheckpointTokens;
            std::vector<double> kp(B * t * D), vp(B * t * D), yp(B * t * D), so(3 * B * D);
            for (i64 b = 0; b < B; ++b)
              for (i64 i = 0; i < t * D; ++i) {
                kp[b * t * D + i] = kd[b * T * D + i];
                vp[b * t * D + i] = vd[b * T * D + i];
              }
            ref::wkv4_forward<double>(yp.data(), so.data(), kp.data(), vp.data(), dd.data(), ud.data(), sid, B, t, D);
            for (i64 b = 0; b < B; ++b)
              for (i64 r = 0; r < 3; ++r)
                for (i64 ch = 0; ch < D; ++ch) ck_ref[((b * NC + s - 1) * 3 + r) * D + ch] = so[r * B * D + b * D + ch];
          }
          std::vector<double> dkr(B * T * D), dvr(B * T * D), ddr(D), dur(D), dsr(2 * B * D);
          ref::wkv4_backward<double>(dkr.data(), dvr.data(), ddr.data(), dur.data(), dsr.data(), gd.data(), nullptr,
                                     kd.data(), vd.data(), dd.data(), ud.data(), sid, B, T, D);
          std::vector<float> y(B * T * D), ck(ck_ref.size(), -7.0f), dk(B * T * D), dv(B * T * D), ddc(D), du(D),
              ds(2 * B * D);
          fast::wkv4_forward(y.data(), nullptr, c.k.data(), c.v.data(), c.decay.data(), c.bonus.data(), si, B, T, D,
                             ck.data());
          // compare the real state (a·e^p, b·e^p): the max form's p is a choice of scale
          auto real = [&](const auto& x) {
            std::vector<double> r;
            for (i64 j = 0; j < B * NC; ++j)
              for (i64 r2 = 0; r2 < 2; ++r2)
                for (i64 ch = 0; ch < D; ++ch)
                  r.push_back(double(x[(j * 3 + r2) * D + ch]) * std::exp(double(x[(j * 3 + 2) * D + ch])));
            return r;
          };
          KT_CHECK_CLOSE(real(ck), real(ck_ref), 1e-5, 1e-4);
          fast::wkv4_backward(dk.data(), dv.data(), ddc.data(), du.data(), ds.data(), c.dy.data(), nullptr,
                              c.k.data(), c.v.data(), c.decay.data(), c.bonus.data(), si, B, T, D, ck.data());
          KT_CHECK_CLOSE(dk, dkr, 1e-4, 1e-4);
          KT_CHECK_CLOSE(dv, dvr, 1e-4, 1e-4);
          KT_CHECK_CLOSE(ddc, ddr, 1e-3, 1e-4);
          KT_CHECK_CLOSE(du, dur, 1e-3, 1e-4);
          KT_CHECK_CLOSE(ds, dsr, 1e-4, 1e-4);
        }
      }
    }
  });
}

TEST_CASE("RWKV4 WKV sequence chunks chained equal one pass", "[rwkv4][chunk]") {
  const i64 B = 2, T = 100, D = 20;
  auto c = make_case(B, T, D, 51, 2.0f);
  std::vector<float> y(B * T * D), dk(B * T * D), dv(B * T * D), dd(D), du(D);
  fast::wkv4_forward(y.data(), nullptr, c.k.data(), c.v.data(), c.decay.data(), c.bonus.data(),
                     nullptr, B, T, D);
  fast::wkv4_backward(dk.data(), dv.data(), dd.data(), du.data(), nullptr, c.dy.data(), nullptr,
                      c.k.data(), c.v.data(), c.decay.data(), c.bonus.data(), nullptr, B, T, D);
  for (i64 L : {1, 2, 7, 16, 64}) {
    INFO("chunk length " << L << " (T = " << T << ")");
    // slice [B,T,D] tensors into chunks [B,len,D]
    auto slice = [&](const std::vector<float>& x, i64 t0, i64 n) {
      std::vector<float> r(B * n * D);
      for (i64 b = 0; b < B; ++b)
        for (i64 t = 0; t < n; ++t)
          for (i64 d = 0; d < D; ++d) r[(b * n + t) * D + d] = x[(b * T + t0 + t) * D + d];
      return r;
    };
    auto unslice = [&](std::vector<float>& x, const std::vector<float>& r, i64 t0, i64 n) {
      for (i64 b = 0; b < B; ++b)
        for (i64 t = 0; t < n; ++t)
          for (i64 d = 0; d < D; ++d) x[(b * T + t0 + t) * D + d] = r[(b * n + t) * D + d];
    };
    std::vector<i64> starts;
    for (i64 t0 = 0; t0 < T; t0 += L) starts.push_back(t0);
    const i64 P = i64(starts.size());
    auto len = [&](i64 j) { return std::min(L, T - starts[j]); };
    // (1) state passed chunk to chunk
    std::vector<std::vector<float>> states(P + 1, std::vector<float>(3 * B * D));
    std::vector<float> yc(B * T * D);
    for (i64 j = 0; j < P; ++j) {
      const i64 n = len(j);
      auto kc = slice(c.k, starts[j], n), vc = slice(c.v, starts[j], n);
      std::vector<float> ych(B * n * D);
      wkv4_chunk_forward(ych.data(), states[j + 1].data(), nullptr, kc.data(), vc.data(),
                         c.decay.data(), c.bonus.data(), j ? states[j].data() : nullptr, B, n, D);
      unslice(yc, ych, starts[j], n);
    }
    KT_CHECK_CLOSE(yc, y, 1e-6, 1e-5);
    // (2) the runner's scheme: every chunk from the zero state, summaries composed, then re-run
    std::vector<float> st(3 * B * D), yc2(B * T * D);
    bool first = true;
    for (i64 j = 0; j < P; ++j) {
      const i64 n = len(j);
      auto kc = slice(c.k, starts[j], n), vc = slice(c.v, starts[j], n);
      std::vector<float> ych(B * n * D), local(3 * B * D), ld(D), sout(3 * B * D);
      wkv4_chunk_forward(ych.data(), local.data(), ld.data(), kc.data(), vc.data(),
                         c.decay.data(), c.bonus.data(), nullptr, B, n, D);
      std::vector<float> sin = st;
      wkv4_chunk_forward(ych.data(), nullptr, nullptr, kc.data(), vc.data(), c.decay.data(),
                         c.bonus.data(), first ? nullptr : sin.data(), B, n, D);
      unslice(yc2, ych, starts[j], n);
      wkv4_state_combine(st.data(), first ? nullptr : sin.data(), local.data(), ld.data(), B, D);
      first = false;
    }
    KT_CHECK_CLOSE(yc2, y, 1e-6, 1e-5);
    // (3) backward chained in reverse with dstate passed chunk to chunk
    std::vector<float> dkc(B * T * D), dvc(B * T * D), ddc(D), duc(D), dst(2 * B * D);
    for (i64 j = P - 1; j >= 0; --j) {
      const i64 n = len(j);
      auto kc = slice(c.k, starts[j], n), vc = slice(c.v, starts[j], n);
      auto gc = slice(c.dy, starts[j], n);
      std::vector<float> dkch(B * n * D), dvch(B * n * D), dsin(2 * B * D);
      wkv4_chunk_backward(dkch.data(), dvch.data(), ddc.data(), duc.data(), dsin.data(),
                          gc.data(), j + 1 < P ? dst.data() : nullptr, kc.data(), vc.data(),
                          c.decay.data(), c.bonus.data(), j ? states[j].data() : nullptr, B, n,
                          D);
      unslice(dkc, dkch, starts[j], n);
      unslice(dvc, dvch, starts[j], n);
      dst = dsin;
    }
    KT_CHECK_CLOSE(dkc, dk, 1e-5, 1e-4);
    KT_CHECK_CLOSE(dvc, dv, 1e-5, 1e-4);
    KT_CHECK_CLOSE(ddc, dd, 1e-3, 1e-4);
    KT_CHECK_CLOSE(duc, du, 1e-3, 1e-4);
    // (4) the backward affine map: chunk 0's dstate_in from local parts composed in reverse
    if (P >= 2) {
      // local dstate_in of every chunk (computed with dstate_out = 0), composed from the end
      std::vector<float> dnext(2 * B * D);  // dL/d(state_out of the current chunk)
      bool last = true;
      for (i64 j = P - 1; j >= 1; --j) {
        const i64 n = len(j);
        auto kc = slice(c.k, starts[j], n), vc = slice(c.v, starts[j], n);
        auto gc = slice(c.dy, starts[j], n);
        std::vector<float> junk(B * n * D), jd(D), local(2 * B * D), ld(D), comb(2 * B * D);
        wkv4_chunk_backward(junk.data(), junk.data(), jd.data(), jd.data(), local.data(),
                            gc.data(), nullptr, kc.data(), vc.data(), c.decay.data(),
                            c.bonus.data(), states[j].data(), B, n, D);
        for (i64 d = 0; d < D; ++d) ld[d] = -float(n) * std::exp(c.decay[d]);
        if (last) comb = local;
        else
          wkv4_grad_state_combine(comb.data(), dnext.data(), local.data(), states[j].data(),
                                  states[j + 1].data(), ld.data(), B, D);
        dnext = comb;
        last = false;
      }
      // dnext = dL/d(state_out of chunk 0); compare with chunk 1's dstate_in when the true
      // dstate_out is chained chunk to chunk from the end
      std::vector<float> d(2 * B * D);
      for (i64 j = P - 1; j >= 1; --j) {
        const i64 n = len(j);
        auto kj = slice(c.k, starts[j], n), vj = slice(c.v, starts[j], n);
        auto gj = slice(c.dy, starts[j], n);
        std::vector<float> jk(B * n * D), jdd(D), din(2 * B * D);
        wkv4_chunk_backward(jk.data(), jk.data(), jdd.data(), jdd.data(), din.data(), gj.data(),
                            j + 1 < P ? d.data() : nullptr, kj.data(), vj.data(),
                            c.decay.data(), c.bonus.data(), states[j].data(), B, n, D);
        d = din;
      }
      KT_CHECK_CLOSE(dnext, d, 1e-6, 1e-4);
    }
  }
}

TEST_CASE("RWKV4 WKV is stable for extreme keys and decays", "[rwkv4][stability]") {
  // k uniform in ±60 (e^{60} ≈ 1e26: a naive fp32 sum of e^{k} overflows after a few tokens),
  // decay factors e^{−w} within 1e-6 of 1 (w = 1e-6) and tiny (w = 50 → e^{−50}).
  const i64 B = 1, T = 40, D = 6;
  std::vector<float> k(B * T * D), v = kt::randn(B * T * D, 61), bonus = {0, 30, -30, 0, 5, -5};
  std::mt19937 g(62);
  std::uniform_real_distribution<float> uk(-60.0f, 60.0f);
  for (auto& x : k) x = uk(g);
  const std::vector<float> decay = {std::log(1e-6f), std::log(50.0f), std::log(1e-6f),
                                    std::log(50.0f), 0.0f, std::log(1e-6f)};
  const auto expect = wkv4_direct(k, v, decay, bonus, B, T, D);
  std::vector<float> yr(B * T * D), yf(B * T * D);
  ref::wkv4_forward<float>(yr.data(), nullptr, k.data(), v.data(), decay.data(), bonus.data(),
                           nullptr, B, T, D);
  fast::wkv4_forward(yf.data(), nullptr, k.data(), v.data(), decay.data(), bonus.data(), nullptr,
                     B, T, D);
  // outputs are convex combinations of v: relative accuracy ~ a few fp32 ulps of |v|
  KT_CHECK_CLOSE(yr, expect, 1e-5, 1e-4);
  KT_CHECK_CLOSE(yf, expect, 1e-5, 1e-4);
  // gradients: finite, and the fast fp32 backward equals the double reference
  auto dy = kt::randn(B * T * D, 63);
  std::vector<float> dk(B * T * D), dv(B * T * D), dd(D), du(D);
  fast::wkv4_backward(dk.data(), dv.data(), dd.data(), du.data(), nullptr, dy.data(), nullptr,
                      k.data(), v.data(), decay.data(), bonus.data(), nullptr, B, T, D);
  auto kd = kt::to_d(k), vd = kt::to_d(v), ddec = kt::to_d(decay), ud = kt::to_d(bonus),
       gd = kt::to_d(dy);
  std::vector<double> dkr(B * T * D), dvr(B * T * D), ddr(D), dur(D);
  ref::wkv4_backward<double>(dkr.data(), dvr.data(), ddr.data(), dur.data(), nullptr, gd.data(),
                             nullptr, kd.data(), vd.data(), ddec.data(), ud.data(), nullptr, B, T,
                             D);
  for (float x : dk) REQUIRE(std::isfinite(x));
  for (float x : dd) REQUIRE(std::isfinite(x));
  KT_CHECK_CLOSE(dk, dkr, 1e-4, 1e-3);
  KT_CHECK_CLOSE(dv, dvr, 1e-4, 1e-3);
  KT_CHECK_CLOSE(dd, ddr, 1e-4, 1e-3);
  KT_CHECK_CLOSE(du, dur, 1e-4, 1e-3);
}

TEST_CASE("RWKV token shift backward matches finite differences and fast equals reference",
          "[rwkv4]") {
  kt::on_every_simd_target([&] {
    const i64 B = 2, T = 5, D = 7;
    auto x = kt::to_d(kt::randn(B * T * D, 71)), prev = kt::to_d(kt::randn(B * D, 72));
    auto mu = kt::to_d(kt::randn(D, 73, 0.3f, 0.5f)), dout = kt::to_d(kt::randn(B * T * D, 74));
    std::vector<double> out(B * T * D);
    auto loss = [&] {
      ref::token_shift_forward<double>(out.data(), x.data(), prev.data(), mu.data(), B, T, D);
      return kt::dot(out, dout);
    };
    std::vector<double> dx(x.size()), dp(prev.size()), dm(D);
    ref::token_shift_backward<double>(dx.data(), dp.data(), dm.data(), dout.data(), x.data(),
                                      prev.data(), mu.data(), B, T, D);
    KT_CHECK_CLOSE(dx, kt::fd_grad(x, kt::sample_indices(x.size(), x.size(), 0), loss), 1e-8, 1e-6);
    KT_CHECK_CLOSE(dp, kt::fd_grad(prev, kt::sample_indices(B * D, B * D, 0), loss), 1e-8, 1e-6);
    KT_CHECK_CLOSE(dm, kt::fd_grad(mu, kt::sample_indices(D, D, 0), loss), 1e-8, 1e-6);
    // fast (fp32) vs reference (double)
    auto xf = kt::to_f(x), pf = kt::to_f(prev), mf = kt::to_f(mu), gf = kt::to_f(dout);
    std::vector<float> of(B * T * D), dxf(x.size()), dpf(prev.size()), dmf(D);
    fast::token_shift_forward(of.data(), xf.data(), pf.data(), mf.data(), B, T, D);
    fast::token_shift_backward(dxf.data(), dpf.data(), dmf.data(), gf.data(), xf.data(), pf.data(),
                               mf.data(), B, T, D);
    loss();
    KT_CHECK_CLOSE(of, out, 1e-6, 1e-5);
    KT_CHECK_CLOSE(dxf, dx, 1e-6, 1e-5);
    KT_CHECK_CLOSE(dpf, dp, 1e-6, 1e-5);
    KT_CHECK_CLOSE(dmf, dm, 1e-5, 1e-5);
  });
}

TEST_CASE("RWKV4 WKV fast with more threads than batch rows equals reference", "[rwkv4][threads]") {
  // B = 1 on 3 threads: each row is split into channel blocks (one per thread); T spans several
  // backward segments with a ragged last one.
  const i64 B = 1, T = 29, D = 70;
  auto c = make_case(B, T, D, 81, 2.0f);
  auto kd = kt::to_d(c.k), vd = kt::to_d(c.v), dd = kt::to_d(c.decay), ud = kt::to_d(c.bonus),
       gd = kt::to_d(c.dy);
  std::vector<double> yr(B * T * D), dkr(B * T * D), dvr(B * T * D), ddr(D), dur(D);
  ref::wkv4_forward<double>(yr.data(), nullptr, kd.data(), vd.data(), dd.data(), ud.data(), nullptr, B, T, D);
  ref::wkv4_backward<double>(dkr.data(), dvr.data(), ddr.data(), dur.data(), nullptr, gd.data(), nullptr,
                             kd.data(), vd.data(), dd.data(), ud.data(), nullptr, B, T, D);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(3);
  std::vector<float> y(B * T * D), dk(B * T * D), dv(B * T * D), ddc(D), du(D);
  fast::wkv4_forward(y.data(), nullptr, c.k.data(), c.v.data(), c.decay.data(), c.bonus.data(), nullptr, B, T, D);
  fast::wkv4_backward(dk.data(), dv.data(), ddc.data(), du.data(), nullptr, c.dy.data(), nullptr, c.k.data(),
                      c.v.data(), c.decay.data(), c.bonus.data(), nullptr, B, T, D);
  omp_set_num_threads(saved);
  KT_CHECK_CLOSE(y, yr, 1e-5, 1e-4);
  KT_CHECK_CLOSE(dk, dkr, 1e-4, 1e-4);
  KT_CHECK_CLOSE(dv, dvr, 1e-4, 1e-4);
  KT_CHECK_CLOSE(ddc, ddr, 1e-3, 1e-4);
  KT_CHECK_CLOSE(du, dur, 1e-3, 1e-4);
}

TEST_CASE("RWKV4 WKV fast falls back to the max form for a bonus far from the decay", "[rwkv4][stability]") {
  kt::on_every_simd_target([&] {
    // |u − w| > 52 (kLazyMaxUW) in one channel sends the whole fast forward to the running-maximum
    // form (e^{u−w} would overflow the lazy form's scaled sums): outputs still equal the
    // long-double sums, and the backward the double reference.
    const i64 B = 2, T = 23, D = 20;
    auto c = make_case(B, T, D, 81, 3.0f);
    c.bonus[3] = 60.0f;   // u − w ≈ 60
    c.bonus[17] = -58.0f;
    const auto expect = wkv4_direct(c.k, c.v, c.decay, c.bonus, B, T, D);
    std::vector<float> y(B * T * D);
    fast::wkv4_forward(y.data(), nullptr, c.k.data(), c.v.data(), c.decay.data(), c.bonus.data(), nullptr, B, T, D);
    KT_CHECK_CLOSE(y, expect, 1e-5, 1e-4);
    std::vector<float> dk(B * T * D), dv(B * T * D), dd(D), du(D);
    fast::wkv4_backward(dk.data(), dv.data(), dd.data(), du.data(), nullptr, c.dy.data(), nullptr, c.k.data(),
                        c.v.data(), c.decay.data(), c.bonus.data(), nullptr, B, T, D);
    auto kd = kt::to_d(c.k), vd = kt::to_d(c.v), ddec = kt::to_d(c.decay), ud = kt::to_d(c.bonus), gd = kt::to_d(c.dy);
    std::vector<double> dkr(B * T * D), dvr(B * T * D), ddr(D), dur(D);
    ref::wkv4_backward<double>(dkr.data(), dvr.data(), ddr.data(), dur.data(), nullptr, gd.data(), nullptr, kd.data(),
                               vd.data(), ddec.data(), ud.data(), nullptr, B, T, D);
    KT_CHECK_CLOSE(dk, dkr, 1e-4, 1e-3);
    KT_CHECK_CLOSE(dv, dvr, 1e-4, 1e-3);
    KT_CHECK_CLOSE(dd, ddr, 1e-4, 1e-3);
    KT_CHECK_CLOSE(du, dur, 1e-4, 1e-3);
  });
}
