// reports/chip_fit.cpp — see chip_fit.hpp.
#include "reports/chip_fit.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace scanshard::published {

const std::vector<std::string>& fit_keys() {
  static const std::vector<std::string> k = {"gemm", "gemm_shape", "attention", "elementwise", "norm", "memory", "network",
                                             "launch_overhead_seconds"};
  return k;
}

namespace {
void check_key(const std::string& key) {
  const auto& k = fit_keys();
  if (std::find(k.begin(), k.end(), key) == k.end()) {
    std::string known;
    for (const auto& o : k) known += (known.empty() ? "" : ", ") + o;
    throw std::invalid_argument("no chip key '" + key + "' to fit (one of: " + known + ")");
  }
}
double curve_top(const Efficiency& e) { return e.gemm_curve.empty() ? e.gemm : e.gemm_curve.back().second; }

// Fractions move as logits, positive numbers as logarithms: every point of the search is legal.
bool is_fraction(const std::string& key) { return key != "gemm_shape" && key != "launch_overhead_seconds"; }
double to_free(const std::string& key, double v) {
  if (is_fraction(key)) {
    const double f = std::clamp(v, 1e-6, 1 - 1e-6);
    return std::log(f / (1 - f));
  }
  return std::log(std::max(v, 1e-9));
}
double from_free(const std::string& key, double x) { return is_fraction(key) ? 1 / (1 + std::exp(-x)) : std::exp(x); }
}  // namespace

double chip_value(const ChipSpec& chip, const std::string& key) {
  check_key(key);
  const Efficiency& e = chip.efficiency;
  if (key == "gemm") return curve_top(e);
  if (key == "gemm_shape") return 1;
  if (key == "attention") return e.attention;
  if (key == "elementwise") return e.elementwise;
  if (key == "norm") return e.norm;
  if (key == "memory") return e.memory_curve.empty() ? e.memory : e.memory_curve.back().second;
  if (key == "network") return e.network;
  return chip.launch_overhead_seconds;
}

void set_chip_values(ChipSpec& chip, const std::vector<std::string>& keys, const std::vector<double>& values) {
  Efficiency& e = chip.efficiency;
  double top = curve_top(e), shape = 1;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i];
    const double v = values.at(i);
    check_key(key);
    if (key == "gemm") top = v;
    else if (key == "gemm_shape") shape = v;
    else if (key == "attention") e.attention = v;
    else if (key == "elementwise") e.elementwise = v;
    else if (key == "norm") e.norm = v;
    else if (key == "network") e.network = v;
    else if (key == "launch_overhead_seconds") chip.launch_overhead_seconds = v;
    else if (key == "memory") {
      const double scale = v / chip_value(chip, "memory");
      e.memory = v;
      for (auto& pt : e.memory_curve) pt.second = std::min(1.0, pt.second * scale);
    }
  }
  // the GEMM curve: point i = top · (e_i / e_top)^shape, from the curve as written
  const double old_top = curve_top(e);
  for (auto& pt : e.gemm_curve) pt.second = std::min(1.0, top * std::pow(pt.second / old_top, shape));
  e.gemm = top;
}

bool uses_chip(const Row& r, const std::string& chip) { return r.cluster.chip.name == chip || r.cluster.chip.preset == chip; }

namespace {

// The error over every scored row (source_errors' "all" entry, its last).
SourceError overall(const std::vector<Priced>& priced) { return source_errors(priced).back(); }

// Nelder–Mead (Nelder & Mead 1965; coefficients 1, 2, ½, ½) from x0 with initial steps `step`.
template <class F>
std::vector<double> nelder_mead(F f, std::vector<double> x0, double step, std::int64_t max_evaluations, std::int64_t& evaluations) {
  const std::size_t n = x0.size();
  std::vector<std::vector<double>> pts(n + 1, x0);
  std::vector<double> val(n + 1);
  for (std::size_t i = 0; i < n; ++i) pts[i + 1][i] += step;
  for (std::size_t i = 0; i <= n; ++i) val[i] = f(pts[i]);
  evaluations = static_cast<std::int64_t>(n + 1);
  auto along = [&](const std::vector<double>& c, const std::vector<double>& w, double t) {
    std::vector<double> x(n);
    for (std::size_t j = 0; j < n; ++j) x[j] = c[j] + t * (w[j] - c[j]);
    return x;
  };
  while (evaluations < max_evaluations) {
    std::vector<std::size_t> ord(n + 1);
    std::iota(ord.begin(), ord.end(), 0);
    std::sort(ord.begin(), ord.end(), [&](std::size_t a, std::size_t b) { return val[a] < val[b]; });
    const std::size_t best = ord.front(), worst = ord.back(), second = ord[n - 1];
    if (val[worst] - val[best] < 1e-6) break;
    std::vector<double> c(n, 0.0);  // centroid of all but the worst
    for (std::size_t i = 0; i <= n; ++i)
      if (i != worst)
        for (std::size_t j = 0; j < n; ++j) c[j] += pts[i][j] / static_cast<double>(n);
    const auto r = along(c, pts[worst], -1);
    const double fr = f(r);
    ++evaluations;
    if (fr < val[best]) {
      const auto e = along(c, pts[worst], -2);
      const double fe = f(e);
      ++evaluations;
      if (fe < fr) pts[worst] = e, val[worst] = fe;
      else pts[worst] = r, val[worst] = fr;
    } else if (fr < val[second]) {
      pts[worst] = r, val[worst] = fr;
    } else {
      const auto k = along(c, pts[worst], 0.5);
      const double fk = f(k);
      ++evaluations;
      if (fk < val[worst]) {
        pts[worst] = k, val[worst] = fk;
      } else {
        for (std::size_t i = 0; i <= n; ++i) {
          if (i == best) continue;
          pts[i] = along(pts[best], pts[i], 0.5);
          val[i] = f(pts[i]);
          ++evaluations;
        }
      }
    }
  }
  return pts[static_cast<std::size_t>(std::min_element(val.begin(), val.end()) - val.begin())];
}

}  // namespace

std::vector<Row> with_fit(std::vector<Row> rows, const std::string& chip, const Fit& fit) {
  for (auto& r : rows)
    if (uses_chip(r, chip)) {
      set_chip_values(r.cluster.chip, fit.keys, fit.values);
    }
  return rows;
}

Fit fit_chip(const std::vector<Row>& rows, const std::string& chip, const std::vector<std::string>& keys,
             const std::string& skip_source, std::int64_t max_evaluations) {
  for (const auto& k : keys) check_key(k);
  std::vector<Row> mine;
  for (const auto& r : rows)
    if (uses_chip(r, chip) && r.source_id != skip_source) mine.push_back(r);
  if (mine.empty()) throw std::invalid_argument("no row of the suite uses chip '" + chip + "'");
  Fit fit;
  fit.keys = keys;
  for (const auto& k : keys) fit.start.push_back(chip_value(mine.front().cluster.chip, k));
  std::vector<double> x0;
  for (std::size_t i = 0; i < keys.size(); ++i) x0.push_back(to_free(keys[i], fit.start[i]));
  auto values_of = [&](const std::vector<double>& x) {
    std::vector<double> v;
    for (std::size_t i = 0; i < keys.size(); ++i) v.push_back(from_free(keys[i], x[i]));
    return v;
  };
  auto objective = [&](const std::vector<double>& x) {
    fit.values = values_of(x);
    const SourceError s = overall(price_suite(with_fit(mine, chip, fit)));
    return s.rows > 0 ? s.mean_abs : 1e9;
  };
  const auto x = nelder_mead(objective, x0, 0.5, max_evaluations, fit.evaluations);
  fit.values = values_of(x);
  const SourceError s = overall(price_suite(with_fit(mine, chip, fit)));
  fit.mean_abs = s.mean_abs;
  fit.max_abs = s.max_abs;
  fit.rows = s.rows;
  return fit;
}

std::vector<HoldOut> leave_one_source_out(const std::vector<Row>& rows, const std::string& chip, const std::vector<std::string>& keys,
                                          std::int64_t max_evaluations) {
  std::vector<std::string> sources;
  for (const auto& r : rows)
    if (uses_chip(r, chip) && std::find(sources.begin(), sources.end(), r.source_id) == sources.end()) sources.push_back(r.source_id);
  std::vector<HoldOut> out;
  for (const auto& src : sources) {
    HoldOut h;
    h.source_id = src;
    std::vector<Row> held;
    for (const auto& r : rows)
      if (r.source_id == src) held.push_back(r);
    const bool others = std::any_of(rows.begin(), rows.end(), [&](const Row& r) { return uses_chip(r, chip) && r.source_id != src; });
    if (others) h.fit = fit_chip(rows, chip, keys, src, max_evaluations);
    else h.fit.keys = keys;  // nothing else to fit on: the chip file as written
    if (h.fit.values.empty())
      for (const auto& k : keys) h.fit.values.push_back(chip_value(held.front().cluster.chip, k));
    const SourceError s = overall(price_suite(with_fit(held, chip, h.fit)));  // `held` is this source's rows only
    h.rows = s.rows;
    h.mean_abs = s.mean_abs;
    h.max_abs = s.max_abs;
    h.bias = s.bias;
    out.push_back(h);
  }
  return out;
}

}  // namespace scanshard::published
