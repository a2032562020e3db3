// reports/stats.hpp — pure statistics for comparing the simulator with measurements (DESIGN §7):
// relative errors and their median / maximum, errors grouped by op class, average ranks with ties
// and the Spearman rank correlation. Numbers in, numbers out; no I/O, no state.
//
// For: `scanshard validate` and the report (how wrong is the prediction, and does it at least
// order plans correctly). Not for: deciding what to compare (reports/compare.hpp) or timing.
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace scanshard::stats {

// (predicted − measured) / measured: +0.10 = the simulator is 10 % too slow, −0.10 10 % too fast.
// Throws std::invalid_argument unless measured > 0 and both are finite.
[[nodiscard]] double relative_error(double predicted, double measured);

// Median of the values (mean of the two middle ones for an even count). Throws
// std::invalid_argument for an empty input.
[[nodiscard]] double median(std::vector<double> values);

struct ErrorSummary {
  std::size_t count = 0;
  double median_abs = 0;  // median of |relative error|
  double max_abs = 0;     // largest |relative error|
  double mean_abs = 0;
  double bias = 0;        // median signed relative error (> 0: predictions too slow)
};

// Summary of |relative_error(predicted[i], measured[i])|. Sizes must match and be ≥ 1.
[[nodiscard]] ErrorSummary summarize_errors(const std::vector<double>& predicted, const std::vector<double>& measured);

// One (class, predicted, measured) observation, e.g. ("gemm", 1.2e-3, 1.3e-3) for one plan.
struct ClassSample {
  std::string cls;
  double predicted = 0;
  double measured = 0;
};
// Error summary per class over all samples of that class.
[[nodiscard]] std::map<std::string, ErrorSummary> errors_by_class(const std::vector<ClassSample>& samples);

// 1-based ranks in ascending order; tied values share the average of the ranks they span
// ({10, 20, 20, 30} -> {1, 2.5, 2.5, 4}). NaN is rejected (std::invalid_argument).
[[nodiscard]] std::vector<double> average_ranks(const std::vector<double>& values);

// Pearson correlation of the two samples; NaN when either has zero variance.
[[nodiscard]] double pearson(const std::vector<double>& x, const std::vector<double>& y);

// Spearman rank correlation: Pearson correlation of the average ranks (the tie-correct form, not
// 1 − 6Σd²/(n(n²−1))). Sizes must match and be ≥ 2; NaN when either sample is constant.
[[nodiscard]] double spearman(const std::vector<double>& x, const std::vector<double>& y);

// y ≈ intercept + slope · x, fitted by least squares on RELATIVE residuals (weights 1/y²), so
// 8-byte and 64-MiB messages count alike: the latency + bytes/bandwidth model of a collective.
// Needs ≥ 2 points with distinct x and y > 0 (std::invalid_argument otherwise). Negative
// coefficients are returned as fitted; callers decide what a negative latency means.
struct AffineFit {
  double intercept = 0;
  double slope = 0;
  double max_abs_relative_residual = 0;
};
[[nodiscard]] AffineFit fit_affine_relative(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace scanshard::stats
