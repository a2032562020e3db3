// reports/stats.cpp — see stats.hpp.
#include "reports/stats.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace scanshard::stats {

double relative_error(double predicted, double measured) {
  if (!std::isfinite(predicted) || !std::isfinite(measured) || !(measured > 0))
    throw std::invalid_argument("relative_error: need finite numbers and measured > 0");
  return (predicted - measured) / measured;
}

double median(std::vector<double> v) {
  if (v.empty()) throw std::invalid_argument("median: no values");
  const std::size_t n = v.size(), mid = n / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  const double hi = v[mid];
  if (n % 2) return hi;
  const double lo = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid));
  return 0.5 * (lo + hi);
}

ErrorSummary summarize_errors(const std::vector<double>& predicted, const std::vector<double>& measured) {
  if (predicted.size() != measured.size()) throw std::invalid_argument("summarize_errors: sizes differ");
  if (predicted.empty()) throw std::invalid_argument("summarize_errors: no samples");
  std::vector<double> signed_err, abs_err;
  for (std::size_t i = 0; i < predicted.size(); ++i) {
    const double e = relative_error(predicted[i], measured[i]);
    signed_err.push_back(e);
    abs_err.push_back(std::abs(e));
  }
  ErrorSummary s;
  s.count = abs_err.size();
  s.median_abs = median(abs_err);
  s.max_abs = *std::max_element(abs_err.begin(), abs_err.end());
  s.mean_abs = std::accumulate(abs_err.begin(), abs_err.end(), 0.0) / static_cast<double>(s.count);
  s.bias = median(signed_err);
  return s;
}

std::map<std::string, ErrorSummary> errors_by_class(const std::vector<ClassSample>& samples) {
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> by;
  for (const auto& s : samples) {
    by[s.cls].first.push_back(s.predicted);
    by[s.cls].second.push_back(s.measured);
  }
  std::map<std::string, ErrorSummary> out;
  for (const auto& [cls, pm] : by) out[cls] = summarize_errors(pm.first, pm.second);
  return out;
}

std::vector<double> average_ranks(const std::vector<double>& values) {
  for (double v : values)
    if (std::isnan(v)) throw std::invalid_argument("average_ranks: NaN value");
  std::vector<std::size_t> order(values.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && values[order[j + 1]] == values[order[i]]) ++j;
    const double r = 0.5 * (static_cast<double>(i + 1) + static_cast<double>(j + 1));  // ranks i+1 .. j+1
    for (std::size_t k = i; k <= j; ++k) ranks[order[k]] = r;
    i = j + 1;
  }
  return ranks;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) throw std::invalid_argument("pearson: sizes differ");
  if (x.size() < 2) throw std::invalid_argument("pearson: need at least 2 samples");
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) throw std::invalid_argument("spearman: sizes differ");
  if (x.size() < 2) throw std::invalid_argument("spearman: need at least 2 samples");
  return pearson(average_ranks(x), average_ranks(y));
}

AffineFit fit_affine_relative(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) throw std::invalid_argument("fit_affine_relative: sizes differ");
  if (x.size() < 2) throw std::invalid_argument("fit_affine_relative: need at least 2 points");
  // Minimise Σ w (a + b x − y)² with w = 1/y²: normal equations [Σw Σwx; Σwx Σwx²][a b]ᵀ = [Σwy Σwxy]ᵀ.
  double sw = 0, swx = 0, swxx = 0, swy = 0, swxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!(y[i] > 0) || !std::isfinite(y[i]) || !std::isfinite(x[i]))
      throw std::invalid_argument("fit_affine_relative: y must be positive and finite");
    const double w = 1.0 / (y[i] * y[i]);
    sw += w; swx += w * x[i]; swxx += w * x[i] * x[i]; swy += w * y[i]; swxy += w * x[i] * y[i];
  }
  const double det = sw * swxx - swx * swx;
  if (!(std::abs(det) > 1e-12 * sw * swxx)) throw std::invalid_argument("fit_affine_relative: x values do not vary");
  AffineFit f;
  f.intercept = (swy * swxx - swx * swxy) / det;
  f.slope = (sw * swxy - swx * swy) / det;
  for (std::size_t i = 0; i < x.size(); ++i)
    f.max_abs_relative_residual = std::max(f.max_abs_relative_residual, std::abs((f.intercept + f.slope * x[i] - y[i]) / y[i]));
  return f;
}

}  // namespace scanshard::stats
