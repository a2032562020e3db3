// tests/kernels/test_embedding.cpp — embedding, tied head and softmax cross-entropy: fast ==
// reference, loss == −log softmax written out directly, gradients == finite differences.
#include "helpers.hpp"
#include "kernels/embedding.hpp"

namespace k = scanshard::kernels;
using kt::i64;

TEST_CASE("embedding and tied head fast equal reference and backward matches finite differences", "[embedding]") {
  const i64 M = 7, D = 11, V = 13;
  const std::vector<std::int32_t> tok = {3, 0, 12, 3, 5, 3, 7};
  const auto table = kt::randn(V * D, 21), dout = kt::randn(M * D, 22), x = kt::randn(M * D, 23);
  const float scale = 1.7f;
  std::vector<float> e_ref(M * D), e_fast(M * D);
  k::ref::embedding_forward(e_ref.data(), tok.data(), table.data(), M, D, scale);
  k::fast::embedding_forward(e_fast.data(), tok.data(), table.data(), M, D, scale);
  KT_CHECK_CLOSE(e_fast, e_ref, 0.0, 1e-7);
  for (i64 m = 0; m < M; ++m) CHECK(e_ref[m * D + 2] == scale * table[tok[m] * D + 2]);

  std::vector<float> dtab(V * D, 0.0f);
  k::fast::embedding_backward(dtab.data(), dout.data(), tok.data(), M, D, scale);
  auto td = kt::to_d(table), dd = kt::to_d(dout);
  auto loss = [&] {
    std::vector<double> e(M * D);
    k::ref::embedding_forward(e.data(), tok.data(), td.data(), M, D, double(scale));
    return kt::dot(e, dd);
  };
  const auto it = kt::sample_indices(V * D, V * D, 24);
  KT_CHECK_CLOSE(kt::to_d(dtab), kt::fd_grad(td, it, loss), 1e-5, 1e-5);

  // tied head
  const auto dl = kt::randn(M * V, 25);
  std::vector<float> l_ref(M * V), l_fast(M * V);
  k::ref::logits_tied_forward(l_ref.data(), x.data(), table.data(), M, D, V);
  k::fast::logits_tied_forward(l_fast.data(), x.data(), table.data(), M, D, V);
  KT_CHECK_CLOSE(l_fast, l_ref, 1e-5, 1e-5);
  std::vector<float> dx(M * D, 0.0f), dt(V * D, 0.0f);
  k::fast::logits_tied_backward(dx.data(), dt.data(), dl.data(), x.data(), table.data(), M, D, V);
  auto xd = kt::to_d(x), dld = kt::to_d(dl);
  auto loss2 = [&] {
    std::vector<double> l(M * V);
    k::ref::logits_tied_forward(l.data(), xd.data(), td.data(), M, D, V);
    return kt::dot(l, dld);
  };
  KT_CHECK_CLOSE(kt::to_d(dx), kt::fd_grad(xd, kt::sample_indices(M * D, M * D, 26), loss2), 1e-4, 1e-4);
  KT_CHECK_CLOSE(kt::to_d(dt), kt::fd_grad(td, it, loss2), 1e-4, 1e-4);
}

TEST_CASE("softmax cross-entropy is stable and its backward matches finite differences", "[embedding]") {
  const i64 M = 5, V = 37;
  auto logits = kt::randn(M * V, 31, 3.0f);
  logits[2 * V + 4] = 1000.0f;  // would overflow exp without the max shift
  logits[3 * V + 1] = -1000.0f;
  const std::vector<std::int32_t> tg = {0, 36, 4, 1, -1};  // -1: no target
  kt::on_every_simd_target([&] {  // the fast forward's max and exp rows are dispatched
  std::vector<float> loss_ref(M), loss_fast(M), p_ref(M * V), p_fast = logits;
  k::ref::softmax_ce_forward(loss_ref.data(), p_ref.data(), logits.data(), tg.data(), M, V);
  k::fast::softmax_ce_forward(loss_fast.data(), p_fast.data(), p_fast.data(), tg.data(), M, V);  // in place
  KT_CHECK_CLOSE(loss_fast, loss_ref, 1e-5, 1e-5);
  KT_CHECK_CLOSE(p_fast, p_ref, 1e-7, 1e-5);
  // independent: loss = −log(e^{l_t} / Σ e^{l_v}) in long double
  for (i64 m = 0; m < M; ++m) {
    if (tg[m] < 0) { CHECK(loss_ref[m] == 0.0f); continue; }
    long double mx = -1e30L, s = 0;
    for (i64 v = 0; v < V; ++v) mx = std::max<long double>(mx, logits[m * V + v]);
    for (i64 v = 0; v < V; ++v) s += std::exp((long double)logits[m * V + v] - mx);
    const double expect = double(std::log(s) + mx - logits[m * V + tg[m]]);
    CHECK(std::fabs(loss_fast[m] - expect) <= 1e-4 * (1 + std::fabs(expect)));
  }
  const auto dls = kt::randn(M, 32);
  std::vector<float> dlog(M * V, 0.0f);
  k::fast::softmax_ce_backward(dlog.data(), dls.data(), p_fast.data(), tg.data(), M, V);
  std::vector<float> dlog_inplace = p_fast;
  k::fast::softmax_ce_backward(dlog_inplace.data(), dls.data(), dlog_inplace.data(), tg.data(), M, V);
  KT_CHECK_CLOSE(dlog_inplace, dlog, 1e-7, 1e-6);
  // finite differences on the moderate rows only (the ±1000 rows are flat to double precision)
  auto ld = kt::to_d(logits), dd = kt::to_d(dls);
  auto loss = [&] {
    std::vector<double> l(M), p(M * V);
    k::ref::softmax_ce_forward(l.data(), p.data(), ld.data(), tg.data(), M, V);
    return kt::dot(l, dd);
  };
  std::vector<i64> idx;
  for (i64 i = 0; i < M * V; ++i) idx.push_back(i);
  KT_CHECK_CLOSE(kt::to_d(dlog), kt::fd_grad(ld, idx, loss), 1e-5, 1e-4);
  });
}

TEST_CASE("softmax stats of wide rows (many 128-column blocks and a tail) equal the double sums", "[embedding][vocab]") {
  const i64 M = 3, V = 2600;  // twenty 128-column blocks and a 40-column tail
  auto logits = kt::randn(M * V, 61, 4.0f);
  logits[1 * V + 2599] = 80.0f;  // the max in the tail
  logits[2 * V + 0] = -300.0f;   // a column whose exponential underflows
  kt::on_every_simd_target([&] {
    std::vector<float> st(2 * M, -1.0f), loss(M), p(M * V);
    scanshard::kernels::fast::softmax_stats(st.data(), logits.data(), M, V);
    for (i64 m = 0; m < M; ++m) {
      double mx = -1e300, sm = 0;
      for (i64 v = 0; v < V; ++v) mx = std::max(mx, double(logits[m * V + v]));
      for (i64 v = 0; v < V; ++v) sm += std::exp(double(logits[m * V + v]) - mx);
      CHECK(st[2 * m] == float(mx));
      CHECK(std::fabs(st[2 * m + 1] - sm) <= 1e-6 * sm);
    }
    // the unsharded forward on the same rows: probabilities sum to 1, loss = log Σ e^{l − max} + max − l_t
    const std::vector<std::int32_t> tg = {5, 2599, 0};
    scanshard::kernels::fast::softmax_ce_forward(loss.data(), p.data(), logits.data(), tg.data(), M, V);
    for (i64 m = 0; m < M; ++m) {
      double mx = -1e300, sm = 0, ps = 0;
      for (i64 v = 0; v < V; ++v) mx = std::max(mx, double(logits[m * V + v]));
      for (i64 v = 0; v < V; ++v) sm += std::exp(double(logits[m * V + v]) - mx);
      for (i64 v = 0; v < V; ++v) ps += p[m * V + v];
      const double expect = std::log(sm) + mx - logits[m * V + tg[m]];
      CHECK(std::fabs(loss[m] - expect) <= 1e-5 * (1 + std::fabs(expect)));
      CHECK(std::fabs(ps - 1.0) <= 1e-5);
    }
  });
}

// ─── vocab-parallel forms: a rank holds table rows / logit columns [v0, v0+Vl) ───────────────────

namespace {

// Uneven vocab splits as cut points {0, …, V}.
const std::vector<std::vector<i64>>& vocab_splits() {
  static const std::vector<std::vector<i64>> s = {{0, 12, 17}, {0, 5, 11, 17}, {0, 1, 9, 17}};
  return s;
}

// columns [v0, v0+Vl) of a row-major [M, V] matrix
std::vector<float> columns(const std::vector<float>& a, i64 M, i64 V, i64 v0, i64 Vl) {
  std::vector<float> r(M * Vl);
  for (i64 m = 0; m < M; ++m)
    for (i64 v = 0; v < Vl; ++v) r[m * Vl + v] = a[m * V + v0 + v];
  return r;
}
void put_columns(std::vector<float>& a, const std::vector<float>& part, i64 M, i64 V, i64 v0, i64 Vl) {
  for (i64 m = 0; m < M; ++m)
    for (i64 v = 0; v < Vl; ++v) a[m * V + v0 + v] = part[m * Vl + v];
}

}  // namespace

TEST_CASE("vocab-parallel embedding: shard forwards sum to the full forward, shard backwards concatenate",
          "[embedding][vocab]") {
  const i64 M = 10, D = 13, V = 17;
  // every shard of every split gets tokens, with repeats, and the boundary rows 0, 16, 11, 12, 1, 9
  const std::vector<std::int32_t> tok = {3, 0, 16, 11, 12, 3, 5, 1, 9, 16};
  const auto table = kt::randn(V * D, 41), dout = kt::randn(M * D, 42), dtab0 = kt::randn(V * D, 43);
  const float scale = 1.3f;
  std::vector<float> e_ref(M * D);
  k::ref::embedding_forward(e_ref.data(), tok.data(), table.data(), M, D, scale);
  std::vector<float> dt_ref = dtab0;  // the backward accumulates onto what is there
  k::ref::embedding_backward(dt_ref.data(), dout.data(), tok.data(), M, D, scale);

  for (const auto& cut : vocab_splits()) {
    INFO("split into " << cut.size() - 1 << " shards at " << cut[1]);
    std::vector<float> sum(M * D, 0.0f), dt = dtab0;
    for (size_t s = 0; s + 1 < cut.size(); ++s) {
      const i64 v0 = cut[s], Vl = cut[s + 1] - v0;
      std::vector<float> part(M * D, 77.0f);  // garbage: the shard forward writes every row
      k::fast::embedding_shard_forward(part.data(), tok.data(), table.data() + v0 * D, v0, Vl, M, D, scale);
      for (i64 m = 0; m < M; ++m) {
        const bool local = tok[m] >= v0 && tok[m] < v0 + Vl;
        for (i64 d = 0; d < D; ++d) {
          if (!local) CHECK(part[m * D + d] == 0.0f);  // rows of other shards are exactly zero
          sum[m * D + d] += part[m * D + d];
        }
      }
      // the shard's gradient rows, starting from the same initial values as the full table's,
      // between two guard rows that must stay untouched (no write outside [v0, v0+Vl))
      std::vector<float> dloc(D, 31.0f);
      dloc.insert(dloc.end(), dtab0.begin() + v0 * D, dtab0.begin() + (v0 + Vl) * D);
      dloc.insert(dloc.end(), D, 31.0f);
      k::fast::embedding_shard_backward(dloc.data() + D, dout.data(), tok.data(), v0, Vl, M, D, scale);
      for (i64 d = 0; d < D; ++d) {
        CHECK(dloc[d] == 31.0f);
        CHECK(dloc[(Vl + 1) * D + d] == 31.0f);
      }
      std::copy(dloc.begin() + D, dloc.end() - D, dt.begin() + v0 * D);
    }
    KT_CHECK_CLOSE(sum, e_ref, 0.0, 1e-7);
    KT_CHECK_CLOSE(dt, dt_ref, 1e-6, 1e-6);
  }
  // the reference itself moved something (the checks above do not compare untouched buffers)
  CHECK(kt::compare(dt_ref, dtab0, 1e-3, 0.0).worst > 1.0);
}

TEST_CASE("vocab-parallel softmax cross-entropy: merged shard stats give the full losses, probs and gradient",
          "[embedding][vocab]") {
  const i64 M = 8, V = 17;
  auto logits = kt::randn(M * V, 51, 3.0f);
  // rows with large logits: the max in one shard and −60 elsewhere, and a row where one whole
  // shard sits at −60 (its local sum is tiny next to the other shards' maxima)
  for (i64 v = 0; v < V; ++v) logits[2 * V + v] = (v % 2 ? -60.0f : 0.5f * float(v) - 4.0f);
  logits[2 * V + 14] = 60.0f;
  for (i64 v = 0; v < 12; ++v) logits[3 * V + v] = -60.0f + 0.25f * float(v);
  logits[3 * V + 15] = 59.0f;
  logits[3 * V + 16] = 60.0f;
  for (i64 v = 0; v < V; ++v) logits[4 * V + v] = 60.0f - 0.1f * float(v);  // all large
  // targets: −1 (no target), shard-boundary columns, the column of the large max, a −60 column
  const std::vector<std::int32_t> tg = {0, 16, 14, 1, -1, 11, 5, -1};
  const auto dls = kt::randn(M, 52);

  std::vector<float> loss_ref(M), p_ref(M * V), dl_ref(M * V, 0.0f);
  k::ref::softmax_ce_forward(loss_ref.data(), p_ref.data(), logits.data(), tg.data(), M, V);
  k::ref::softmax_ce_backward(dl_ref.data(), dls.data(), p_ref.data(), tg.data(), M, V);
  // the full reference in double too, so the float reference's own rounding is not the truth
  auto ld = kt::to_d(logits), dlsd = kt::to_d(dls);
  std::vector<double> loss_d(M), p_d(M * V), dl_d(M * V, 0.0);
  k::ref::softmax_ce_forward(loss_d.data(), p_d.data(), ld.data(), tg.data(), M, V);
  k::ref::softmax_ce_backward(dl_d.data(), dlsd.data(), p_d.data(), tg.data(), M, V);
  KT_CHECK_CLOSE(loss_ref, loss_d, 1e-5, 1e-6);

  kt::on_every_simd_target([&] {  // softmax_stats and the shard finish use the dispatched rows
  for (const auto& cut : vocab_splits()) {
    const i64 P = i64(cut.size()) - 1;
    INFO("split into " << P << " shards at " << cut[1]);
    std::vector<std::vector<float>> loc(P), st(P);
    for (i64 s = 0; s < P; ++s) {
      const i64 v0 = cut[s], Vl = cut[s + 1] - v0;
      loc[s] = columns(logits, M, V, v0, Vl);
      st[s].assign(2 * M, -1.0f);
      k::fast::softmax_stats(st[s].data(), loc[s].data(), M, Vl);
      // the local stats themselves: (max, Σ e^{l − max}) over the shard's columns, in double
      for (i64 m = 0; m < M; ++m) {
        double mx = -1e300, sm = 0;
        for (i64 v = 0; v < Vl; ++v) mx = std::max(mx, double(loc[s][m * Vl + v]));
        for (i64 v = 0; v < Vl; ++v) sm += std::exp(double(loc[s][m * Vl + v]) - mx);
        CHECK(st[s][2 * m] == float(mx));
        CHECK(std::fabs(st[s][2 * m + 1] - sm) <= 1e-6 * sm);
      }
    }
    // the merged stats against the full row, in double: (max_v l, Σ_v e^{l − max})
    std::vector<float> full_stats(2 * M);
    for (i64 m = 0; m < M; ++m) {
      double mx = -1e300, sm = 0;
      for (i64 v = 0; v < V; ++v) mx = std::max(mx, ld[m * V + v]);
      for (i64 v = 0; v < V; ++v) sm += std::exp(ld[m * V + v] - mx);
      full_stats[2 * m] = float(mx);
      full_stats[2 * m + 1] = float(sm);
    }
    // every merge order: left folds over all permutations, plus a right fold (a ⊕ (b ⊕ c))
    std::vector<std::vector<i64>> orders;
    std::vector<i64> perm(P);
    for (i64 s = 0; s < P; ++s) perm[s] = s;
    do orders.push_back(perm); while (std::next_permutation(perm.begin(), perm.end()));
    for (size_t o = 0; o <= orders.size(); ++o) {
      std::vector<float> merged;
      if (o < orders.size()) {
        merged = st[orders[o][0]];
        for (i64 s = 1; s < P; ++s) k::fast::merge_softmax_stats(merged.data(), st[orders[o][s]].data(), M);
      } else {
        merged = st[P - 1];
        for (i64 s = P - 2; s >= 0; --s) {
          std::vector<float> acc = st[s];
          k::fast::merge_softmax_stats(acc.data(), merged.data(), M);
          merged = acc;
        }
      }
      INFO("merge order " << o);
      KT_CHECK_CLOSE(merged, full_stats, 0.0, 1e-6);

      std::vector<float> loss_sum(M, 0.0f), probs(M * V, -1.0f), dlog(M * V, -1.0f);
      for (i64 s = 0; s < P; ++s) {
        const i64 v0 = cut[s], Vl = cut[s + 1] - v0;
        std::vector<float> ls(M, 99.0f), ps(M * Vl, 99.0f);
        k::fast::softmax_ce_shard_finish(ls.data(), ps.data(), loc[s].data(), merged.data(), tg.data(), v0, M, Vl);
        if (o == 0) {  // in place (probs aliasing logits), as the executor runs it
          std::vector<float> ls2(M, 99.0f), inpl = loc[s];
          k::fast::softmax_ce_shard_finish(ls2.data(), inpl.data(), inpl.data(), merged.data(), tg.data(), v0, M, Vl);
          KT_CHECK_CLOSE(ls2, ls, 0.0, 0.0);
          KT_CHECK_CLOSE(inpl, ps, 0.0, 0.0);
        }
        for (i64 m = 0; m < M; ++m) {
          const bool local = tg[m] >= v0 && tg[m] < v0 + Vl;
          if (!local) CHECK(ls[m] == 0.0f);  // only the shard holding the target reports a loss
          loss_sum[m] += ls[m];
        }
        put_columns(probs, ps, M, V, v0, Vl);
        std::vector<float> gs(M * Vl, 55.0f);  // garbage: the shard backward overwrites
        k::fast::softmax_ce_shard_backward(gs.data(), dls.data(), ps.data(), tg.data(), v0, M, Vl);
        put_columns(dlog, gs, M, V, v0, Vl);
      }
      KT_CHECK_CLOSE(loss_sum, loss_ref, 1e-5, 1e-5);
      KT_CHECK_CLOSE(loss_sum, loss_d, 1e-5, 1e-5);
      KT_CHECK_CLOSE(probs, p_ref, 1e-7, 1e-5);
      KT_CHECK_CLOSE(probs, p_d, 1e-7, 1e-5);
      KT_CHECK_CLOSE(dlog, dl_ref, 1e-7, 1e-5);
      KT_CHECK_CLOSE(dlog, dl_d, 1e-7, 1e-5);
      for (i64 m = 0; m < M; ++m)
        if (tg[m] < 0)
          for (i64 v = 0; v < V; ++v) CHECK(dlog[m * V + v] == 0.0f);  // no target: no gradient
    }
  }
  });
  // the large-logit rows exercise both ends: target at the +60 max (loss ≈ 0) and a target near
  // −60 with the max at +60 (loss ≈ 120, exp(−120) underflows fp32 probs)
  CHECK(loss_d[2] >= 0.0);
  CHECK(loss_d[2] < 1e-6);
  CHECK(loss_d[3] > 100.0);
}
