// tests/unit/test_stats.cpp — reports/stats on synthetic data with answers computed by hand or in
// closed form: relative errors, median / max, per-class errors, average ranks with ties, Spearman.
#include <catch2/catch.hpp>

#include <cmath>
#include <stdexcept>

#include "reports/stats.hpp"

using namespace scanshard::stats;

TEST_CASE("median of odd and even counts", "[stats]") {
  CHECK(median({3.0, 1.0, 2.0}) == 2.0);
  CHECK(median({4.0, 1.0, 3.0, 2.0}) == 2.5);
  CHECK(median({7.0}) == 7.0);
  CHECK(median({-1.0, 5.0}) == 2.0);
  CHECK_THROWS_AS(median({}), std::invalid_argument);
}

TEST_CASE("relative error sign convention and input checks", "[stats]") {
  CHECK(relative_error(1.1, 1.0) == Approx(0.1));
  CHECK(relative_error(0.9, 1.0) == Approx(-0.1));
  CHECK(relative_error(3.0, 2.0) == Approx(0.5));
  CHECK_THROWS_AS(relative_error(1.0, 0.0), std::invalid_argument);
  CHECK_THROWS_AS(relative_error(NAN, 1.0), std::invalid_argument);
}

TEST_CASE("error summary of a synthetic trace with known error", "[stats]") {
  // Measured 1 s everywhere; predictions off by +10 %, −10 %, 0 %, +30 %.
  const auto s = summarize_errors({1.1, 0.9, 1.0, 1.3}, {1.0, 1.0, 1.0, 1.0});
  CHECK(s.count == 4);
  CHECK(s.median_abs == Approx(0.1));   // |e| sorted: 0, 0.1, 0.1, 0.3
  CHECK(s.max_abs == Approx(0.3));
  CHECK(s.mean_abs == Approx(0.125));
  CHECK(s.bias == Approx(0.05));        // signed sorted: −0.1, 0, 0.1, 0.3
  // Scale invariance: the same relative errors at other magnitudes.
  const auto t = summarize_errors({2.2e-3, 0.9e3, 5.0, 1.3e-6}, {2e-3, 1e3, 5.0, 1e-6});
  CHECK(t.median_abs == Approx(0.1));
  CHECK(t.max_abs == Approx(0.3));
  CHECK_THROWS_AS(summarize_errors({1.0}, {1.0, 2.0}), std::invalid_argument);
  CHECK_THROWS_AS(summarize_errors({}, {}), std::invalid_argument);
}

TEST_CASE("errors grouped by op class", "[stats]") {
  const auto by = errors_by_class({{"gemm", 1.05, 1.0}, {"gemm", 0.8, 1.0}, {"gemm", 2.0, 2.0},
                                   {"scan", 3.0, 2.0}, {"norm", 1.0, 4.0}});
  REQUIRE(by.size() == 3);
  CHECK(by.at("gemm").count == 3);
  CHECK(by.at("gemm").median_abs == Approx(0.05));
  CHECK(by.at("gemm").max_abs == Approx(0.2));
  CHECK(by.at("scan").max_abs == Approx(0.5));
  CHECK(by.at("scan").bias == Approx(0.5));
  CHECK(by.at("norm").median_abs == Approx(0.75));
  CHECK(by.at("norm").bias == Approx(-0.75));
}

TEST_CASE("average ranks share tied positions", "[stats]") {
  CHECK(average_ranks({10, 20, 20, 30}) == std::vector<double>{1, 2.5, 2.5, 4});
  CHECK(average_ranks({30, 10, 20}) == std::vector<double>{3, 1, 2});
  CHECK(average_ranks({5, 5, 5}) == std::vector<double>{2, 2, 2});
  CHECK(average_ranks({2, 1, 2, 1, 3}) == std::vector<double>{3.5, 1.5, 3.5, 1.5, 5});
  CHECK_THROWS_AS(average_ranks({1.0, NAN}), std::invalid_argument);
}

TEST_CASE("Spearman: identical, reversed and monotone orders", "[stats]") {
  const std::vector<double> x{1, 2, 3, 4, 5, 6};
  CHECK(spearman(x, x) == Approx(1.0));
  CHECK(spearman(x, {6, 5, 4, 3, 2, 1}) == Approx(-1.0));
  CHECK(spearman(x, {1, 8, 27, 64, 125, 216}) == Approx(1.0));  // any increasing map: 1
  CHECK(spearman(x, {-1, -8, -27, -64, -125, -216}) == Approx(-1.0));
}

TEST_CASE("Spearman: textbook values without and with ties", "[stats]") {
  // No ties: d = (−1, 1, −1, 1, 0), Σd² = 4, ρ = 1 − 6·4 / (5·24) = 0.8.
  CHECK(spearman({1, 2, 3, 4, 5}, {2, 1, 4, 3, 5}) == Approx(0.8));
  // Ties: y ranks (1, 2.5, 2.5, 4, 5); Σ dx·dy = 9.5, Σ dx² = 10, Σ dy² = 9.5 -> ρ = √0.95.
  CHECK(spearman({1, 2, 3, 4, 5}, {1, 2, 2, 3, 5}) == Approx(std::sqrt(0.95)));
  // With ties the shortcut formula would give 1 − 6·0.5/120 = 0.975; the tie-correct value differs.
  CHECK(spearman({1, 2, 3, 4, 5}, {1, 2, 2, 3, 5}) != Approx(0.975).epsilon(1e-6));
  // A constant sample has no order: NaN.
  CHECK(std::isnan(spearman({1, 2, 3}, {4, 4, 4})));
  CHECK_THROWS_AS(spearman({1}, {1}), std::invalid_argument);
  CHECK_THROWS_AS(spearman({1, 2}, {1, 2, 3}), std::invalid_argument);
}

TEST_CASE("Pearson of a known linear relation", "[stats]") {
  CHECK(pearson({1, 2, 3}, {2, 4, 6}) == Approx(1.0));
  CHECK(pearson({1, 2, 3}, {3, 2, 1}) == Approx(-1.0));
  // x = (0, 1, 2, 3), y = (0, 1, 1, 3): Σdxdy = 4.5, Σdx² = 5, Σdy² = 4.75 -> 4.5 / √23.75
  CHECK(pearson({0, 1, 2, 3}, {0, 1, 1, 3}) == Approx(4.5 / std::sqrt(23.75)));
}

TEST_CASE("affine fit on relative residuals recovers latency and bandwidth", "[stats]") {
  // Exact data t = 2 us + bytes / 5 GB/s over 8 B .. 64 MiB: recovered exactly.
  std::vector<double> x, y;
  for (double b = 8; b <= 64.0 * 1024 * 1024; b *= 4) {
    x.push_back(b);
    y.push_back(2e-6 + b / 5e9);
  }
  const auto f = fit_affine_relative(x, y);
  CHECK(f.intercept == Approx(2e-6).epsilon(1e-9));
  CHECK(f.slope == Approx(1.0 / 5e9).epsilon(1e-9));
  CHECK(f.max_abs_relative_residual < 1e-9);
  // Relative weighting (w = 1/y²) on (0, 1), (1, 2), (2, 3.3): intercept 0.98924, slope 1.09681
  // (solved by hand from the weighted normal equations); ordinary least squares would give 0.9333
  // and 1.15 — the small-y point counts more.
  const auto g = fit_affine_relative({0, 1, 2}, {1, 2, 3.3});
  CHECK(g.intercept == Approx(0.9892434564).epsilon(1e-8));
  CHECK(g.slope == Approx(1.0968088921).epsilon(1e-8));
  CHECK_THROWS_AS(fit_affine_relative({1, 1}, {1, 2}), std::invalid_argument);
  CHECK_THROWS_AS(fit_affine_relative({1, 2}, {1, 0}), std::invalid_argument);
}
