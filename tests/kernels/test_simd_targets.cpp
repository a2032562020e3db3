// tests/kernels/test_simd_targets.cpp — the dispatched SIMD kernels (rglru, rwkv4, rwkv6) on EVERY
// target this CPU supports, in one process: pinning selects the target, and on each target the
// fast kernels equal the references on awkward shapes (widths that are not a multiple of any
// vector length, document resets, incoming states). On an AVX-512 machine this is how the AVX2
// and SSE4 code paths get tested. The whole kernel suite also runs per target through ctest
// (`kernel_tests --simd-target NAME`, tests/CMakeLists.txt).
// Not for: timing (bench/), or gradients by finite differences (test_rglru.cpp, test_rwkv*.cpp).
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "helpers.hpp"
#include "kernels/rglru.hpp"
#include "kernels/rwkv4.hpp"
#include "kernels/rwkv6.hpp"
#include "kernels/simd.hpp"

namespace k = scanshard::kernels;
namespace simd = scanshard::kernels::simd;
using kt::i64;

namespace {

// Restores the target in force before the test (kernel_tests --simd-target pins one for the whole
// run) when the test ends, also when a REQUIRE throws.
struct PinGuard {
  const std::string before = simd::current_target();
  ~PinGuard() { simd::pin_target(before); }
};

void rglru_fast_equals_reference(i64 B, i64 T, i64 R, i64 Hb, unsigned seed) {
  INFO("RG-LRU B " << B << " T " << T << " R " << R);
  const i64 N = B * T * R, S = R / Hb;
  const auto x = kt::randn(N, seed), wa = kt::randn(Hb * S * S, seed + 1, 0.5f), ba = kt::randn(R, seed + 2, 0.5f),
             wx = kt::randn(Hb * S * S, seed + 3, 0.5f), bx = kt::randn(R, seed + 4, 0.5f),
             h_in = kt::randn(B * R, seed + 5), dy = kt::randn(N, seed + 6), dho = kt::randn(B * R, seed + 7);
  std::mt19937 g(seed + 8);
  std::uniform_real_distribution<double> a(0.9, 0.999);  // a = σ(−Λ) ∈ [0.9, 0.999], the paper's init
  std::vector<float> lambda(R);
  for (auto& l : lambda) l = float(std::log(std::expm1(-std::log(a(g)))));
  std::vector<std::uint8_t> reset(B * T);
  for (auto& r : reset) r = (g() % 4 == 0);

  std::vector<float> y(N), ga(N), gx(N), ho(B * R), dc(B * R), ry(N), rga(N), rgx(N), rho(B * R), rdc(B * R);
  k::ref::rglru_forward(ry.data(), rho.data(), rdc.data(), rga.data(), rgx.data(), x.data(), h_in.data(),
                        reset.data(), wa.data(), ba.data(), wx.data(), bx.data(), lambda.data(), B, T, R, Hb);
  k::fast::rglru_forward(y.data(), ho.data(), dc.data(), ga.data(), gx.data(), x.data(), h_in.data(), reset.data(),
                         wa.data(), ba.data(), wx.data(), bx.data(), lambda.data(), B, T, R, Hb);
  KT_CHECK_CLOSE(y, ry, 1e-5, 1e-4);
  KT_CHECK_CLOSE(ho, rho, 1e-5, 1e-4);
  KT_CHECK_CLOSE(dc, rdc, 1e-6, 1e-4);

  std::vector<float> dx(N, 0), dhi(B * R, 0), dwa(Hb * S * S, 0), dba(R, 0), dwx(Hb * S * S, 0), dbx(R, 0),
      dl(R, 0), work(2 * N);
  auto rdx = dx, rdhi = dhi, rdwa = dwa, rdba = dba, rdwx = dwx, rdbx = dbx, rdl = dl;
  k::fast::rglru_backward(dx.data(), dhi.data(), dwa.data(), dba.data(), dwx.data(), dbx.data(), dl.data(),
                          work.data(), dy.data(), dho.data(), y.data(), ga.data(), gx.data(), x.data(), h_in.data(),
                          reset.data(), wa.data(), wx.data(), lambda.data(), B, T, R, Hb);
  k::ref::rglru_backward(rdx.data(), rdhi.data(), rdwa.data(), rdba.data(), rdwx.data(), rdbx.data(), rdl.data(),
                         work.data(), dy.data(), dho.data(), ry.data(), rga.data(), rgx.data(), x.data(), h_in.data(),
                         reset.data(), wa.data(), wx.data(), lambda.data(), B, T, R, Hb);
  KT_CHECK_CLOSE(dx, rdx, 1e-4, 1e-3);
  KT_CHECK_CLOSE(dhi, rdhi, 1e-4, 1e-3);
  KT_CHECK_CLOSE(dwa, rdwa, 1e-4, 1e-3);
  KT_CHECK_CLOSE(dbx, rdbx, 1e-4, 1e-3);
  KT_CHECK_CLOSE(dl, rdl, 1e-4, 1e-3);

  // streaming stores (threshold 0) on 64-byte aligned rows: same result as ordinary stores
  k::AlignedVec sdga(N), sdgx(N), odga(N), odgx(N);
  std::vector<float> sdx(N, 0), odx(N, 0), sdhi(B * R, 0), odhi(B * R, 0), sdl(R, 0), odl(R, 0);
  k::fast::rglru_scan_backward(sdx.data(), sdga.data(), sdgx.data(), sdhi.data(), sdl.data(), dy.data(), dho.data(),
                               y.data(), x.data(), ga.data(), gx.data(), h_in.data(), reset.data(), lambda.data(), B,
                               T, R, 0);
  k::fast::rglru_scan_backward(odx.data(), odga.data(), odgx.data(), odhi.data(), odl.data(), dy.data(), dho.data(),
                               y.data(), x.data(), ga.data(), gx.data(), h_in.data(), reset.data(), lambda.data(), B,
                               T, R, i64(1) << 62);
  KT_CHECK_CLOSE(std::vector<float>(sdga.begin(), sdga.end()), std::vector<float>(odga.begin(), odga.end()), 0.0, 0.0);
  KT_CHECK_CLOSE(std::vector<float>(sdgx.begin(), sdgx.end()), std::vector<float>(odgx.begin(), odgx.end()), 0.0, 0.0);
  KT_CHECK_CLOSE(sdx, odx, 0.0, 0.0);
}

// bonus_shift moves u away from w = e^decay: 0 takes the lazy forward, 100 the max-form fallback.
void wkv4_fast_equals_reference(i64 B, i64 T, i64 D, float bonus_shift, unsigned seed) {
  INFO("WKV-4 B " << B << " T " << T << " D " << D << " bonus shift " << bonus_shift);
  const auto kk = kt::randn(B * T * D, seed, 2.0f), v = kt::randn(B * T * D, seed + 1),
             decay = kt::randn(D, seed + 2, 0.7f, -0.5f), bonus = kt::randn(D, seed + 3, 0.5f, bonus_shift),
             dy = kt::randn(B * T * D, seed + 4), sin_k = kt::randn(B * 5 * D, seed + 5),
             sin_v = kt::randn(B * 5 * D, seed + 6), dso = kt::randn(2 * B * D, seed + 7, 0.1f);
  std::vector<float> sin(3 * B * D), tmp(B * 5 * D);
  k::ref::wkv4_forward<float>(tmp.data(), sin.data(), sin_k.data(), sin_v.data(), decay.data(), bonus.data(), nullptr,
                              B, 5, D);
  auto kd = kt::to_d(kk), vd = kt::to_d(v), dd = kt::to_d(decay), ud = kt::to_d(bonus), gd = kt::to_d(dy),
       sind = kt::to_d(sin), dsod = kt::to_d(dso);
  std::vector<double> yr(B * T * D), sr(3 * B * D), dkr(B * T * D), dvr(B * T * D), ddr(D), dur(D), dsr(2 * B * D);
  k::ref::wkv4_forward<double>(yr.data(), sr.data(), kd.data(), vd.data(), dd.data(), ud.data(), sind.data(), B, T, D);
  k::ref::wkv4_backward<double>(dkr.data(), dvr.data(), ddr.data(), dur.data(), dsr.data(), gd.data(), dsod.data(),
                                kd.data(), vd.data(), dd.data(), ud.data(), sind.data(), B, T, D);
  std::vector<float> y(B * T * D), s(3 * B * D), dk(B * T * D), dv(B * T * D), ddc(D), du(D), ds(2 * B * D);
  k::fast::wkv4_forward(y.data(), s.data(), kk.data(), v.data(), decay.data(), bonus.data(), sin.data(), B, T, D);
  k::fast::wkv4_backward(dk.data(), dv.data(), ddc.data(), du.data(), ds.data(), dy.data(), dso.data(), kk.data(),
                         v.data(), decay.data(), bonus.data(), sin.data(), B, T, D);
  // tolerances of test_rwkv4.cpp's "fast equals reference on awkward shapes"
  KT_CHECK_CLOSE(y, yr, 1e-5, 1e-4);
  KT_CHECK_CLOSE(s, sr, 1e-5, 1e-4);
  KT_CHECK_CLOSE(dk, dkr, 1e-4, 1e-4);
  KT_CHECK_CLOSE(dv, dvr, 1e-4, 1e-4);
  KT_CHECK_CLOSE(ddc, ddr, 1e-3, 1e-4);
  KT_CHECK_CLOSE(du, dur, 1e-3, 1e-4);
  KT_CHECK_CLOSE(ds, dsr, 1e-4, 1e-4);
}

void wkv6_fast_equals_reference(i64 B, i64 T, i64 H, i64 N, i64 chunk, unsigned seed) {
  INFO("WKV-6 B " << B << " T " << T << " H " << H << " N " << N << " chunk " << chunk);
  const i64 n = B * T * H * N, NS = B * H * N * N;
  const auto r = kt::randn(n, seed), kk = kt::randn(n, seed + 1), v = kt::randn(n, seed + 2),
             u = kt::randn(H * N, seed + 4, 0.5f), dy = kt::randn(n, seed + 5), sin = kt::randn(NS, seed + 6),
             dso = kt::randn(NS, seed + 7);
  auto logw = kt::randn(n, seed + 3, 0.7f, -1.0f);
  for (auto& x : logw) x = -std::exp(x);  // decays between ~0.2 and ~0.98
  auto rd = kt::to_d(r), kd = kt::to_d(kk), vd = kt::to_d(v), lwd = kt::to_d(logw), ud = kt::to_d(u),
       gd = kt::to_d(dy), sind = kt::to_d(sin), dsod = kt::to_d(dso);
  std::vector<double> yr(n), sr(NS), drr(n), dkr(n), dvr(n), dlwr(n), dur(H * N), dsr(NS);
  k::ref::wkv6_forward<double>(yr.data(), sr.data(), rd.data(), kd.data(), vd.data(), lwd.data(), ud.data(),
                               sind.data(), B, T, H, N);
  k::ref::wkv6_backward<double>(drr.data(), dkr.data(), dvr.data(), dlwr.data(), dur.data(), dsr.data(), gd.data(),
                                dsod.data(), rd.data(), kd.data(), vd.data(), lwd.data(), ud.data(), sind.data(), B, T,
                                H, N);
  std::vector<float> y(n), so(NS), dr(n), dk(n), dv(n), dlw(n), du(H * N), dsi(NS);
  k::fast::wkv6_forward(y.data(), so.data(), r.data(), kk.data(), v.data(), logw.data(), u.data(), sin.data(), B, T, H,
                        N, chunk);
  k::fast::wkv6_backward(dr.data(), dk.data(), dv.data(), dlw.data(), du.data(), dsi.data(), dy.data(), dso.data(),
                         r.data(), kk.data(), v.data(), logw.data(), u.data(), sin.data(), B, T, H, N, chunk);
  // tolerances of test_rwkv6.cpp's "chunked fast kernel equals the sequential reference"
  KT_CHECK_CLOSE(y, yr, 1e-4, 1e-4);
  KT_CHECK_CLOSE(so, sr, 1e-4, 1e-4);
  KT_CHECK_CLOSE(dr, drr, 1e-4, 1e-4);
  KT_CHECK_CLOSE(dk, dkr, 1e-4, 1e-4);
  KT_CHECK_CLOSE(dv, dvr, 1e-4, 1e-4);
  KT_CHECK_CLOSE(dlw, dlwr, 1e-3, 1e-3);
  KT_CHECK_CLOSE(du, dur, 1e-3, 1e-4);
  KT_CHECK_CLOSE(dsi, dsr, 1e-4, 1e-4);
}

}  // namespace

TEST_CASE("SIMD targets: the list holds every vector unit this CPU has, and pinning selects each", "[simd]") {
  PinGuard unpin;
  const auto all = simd::targets();
  REQUIRE(!all.empty());
  std::vector<std::string> names;
  for (const auto& t : all) names.push_back(t.name);
  INFO("targets: " << ::Catch::Detail::stringify(names));
#if defined(__x86_64__)
  // the AVX2 and SSE4 code paths must be reachable (and so tested below) wherever the CPU has them
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) CHECK(std::count(names.begin(), names.end(), "AVX2") == 1);
  if (__builtin_cpu_supports("sse4.2")) CHECK(std::count(names.begin(), names.end(), "SSE4") == 1);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    CHECK(std::count(names.begin(), names.end(), "AVX3") == 1);
#endif
  for (const auto& t : all) {
    simd::pin_target(t.bit);
    CHECK(simd::current_target() == t.name);
  }
  CHECK_FALSE(simd::pin_target(std::string("no-such-target")));
  simd::pin_target(std::int64_t(0));
  CHECK(simd::current_target() == all.front().name);  // unpinned: the best one
}

TEST_CASE("SIMD targets: RG-LRU, WKV-4 and WKV-6 fast kernels equal their references on every target", "[simd]") {
  PinGuard unpin;
  for (const auto& t : simd::targets()) {
    simd::pin_target(t.bit);
    INFO("target " << t.name);
    REQUIRE(simd::current_target() == t.name);
    // R = 20, 72: not a multiple of 16 or 8; resets in every row
    rglru_fast_equals_reference(3, 7, 20, 4, 900);
    rglru_fast_equals_reference(2, 13, 72, 3, 910);
    // D = 300: one ragged vector at every width; T = 37 spans several backward segments
    wkv4_fast_equals_reference(2, 37, 300, 0.0f, 920);
    wkv4_fast_equals_reference(1, 19, 36, 100.0f, 930);
    // N = 64 and 32: compile-time head size rows; N = 12: the runtime-N loops
    wkv6_fast_equals_reference(1, 37, 2, 64, 16, 940);
    wkv6_fast_equals_reference(1, 37, 2, 32, 7, 950);
    wkv6_fast_equals_reference(2, 29, 2, 12, 16, 960);
  }
}
