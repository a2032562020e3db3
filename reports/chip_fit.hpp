// reports/chip_fit.hpp — fitting one chip's efficiency numbers to measured step times (a
// published suite, or a user's own measured runs written as a suite), with leave-one-source-out
// cross-validation (DESIGN §7, `validate --published --fit CHIP`).
//
// One global set per chip: every row whose cluster uses the chip is priced with the same values,
// nothing per row or per model. The fit minimises the mean |error| of those rows (the suite's
// goal metric) by Nelder–Mead over the keys named, each moved in a transformed space that keeps
// it legal (fractions in (0, 1], seconds and exponents positive). Leave-one-source-out: for each
// source, fit on the other sources only and price the left-out one with that fit — its error is
// what a user can expect on a cluster/software stack the fit has not seen.
//
// Keys (all in the chip file's `efficiency:` section unless said):
//   gemm            the top of the GEMM curve (every point scaled by the same factor; or `gemm`)
//   gemm_shape      an exponent p on the curve's shape: point i becomes top · (e_i / e_top)^p
//   attention, elementwise, norm, memory, network     the class fractions of the same names
//   launch_overhead_seconds   the chip file's top-level key
//
// For: cli/published_command.cpp, bench/. Pure: prices with sim/, runs nothing.
#pragma once
#include <string>
#include <vector>

#include "reports/published.hpp"

namespace scanshard::published {

// The keys above, in this order.
const std::vector<std::string>& fit_keys();
// The chip's current value of `key` (gemm_shape: 1, the curve as written). Throws std::invalid_argument for an unknown key.
double chip_value(const ChipSpec& chip, const std::string& key);
// Sets each key to its value, starting from the chip as its file gives it (gemm_shape reshapes
// the curve as written). Throws std::invalid_argument for an unknown key.
void set_chip_values(ChipSpec& chip, const std::vector<std::string>& keys, const std::vector<double>& values);

// Does this row's cluster use the chip? `chip` is the chip's display name (`name:` in its file,
// e.g. "A100 SXM4 80GB") or its preset name as the cluster file spells it.
bool uses_chip(const Row& r, const std::string& chip);

struct Fit {
  std::vector<std::string> keys;
  std::vector<double> values;      // fitted, one per key
  std::vector<double> start;       // the chip file's values
  double mean_abs = 0, max_abs = 0;  // over the rows fitted, with the fitted values
  std::int64_t rows = 0;
  std::int64_t evaluations = 0;
};
// Fits `keys` of `chip` to the scored rows that use it, except those of `skip_source` (empty:
// none). Rows of other chips are ignored.
Fit fit_chip(const std::vector<Row>& rows, const std::string& chip, const std::vector<std::string>& keys,
             const std::string& skip_source = "", std::int64_t max_evaluations = 400);
// `rows` with `chip`'s keys set to the fit's values (for pricing with the fit).
std::vector<Row> with_fit(std::vector<Row> rows, const std::string& chip, const Fit& fit);

struct HoldOut {
  std::string source_id;
  std::int64_t rows = 0;
  Fit fit;                       // fitted without this source
  double mean_abs = 0, max_abs = 0, bias = 0;  // this source priced with that fit
};
// One entry per source with rows on the chip, in order of first appearance.
std::vector<HoldOut> leave_one_source_out(const std::vector<Row>& rows, const std::string& chip, const std::vector<std::string>& keys,
                                          std::int64_t max_evaluations = 400);

}  // namespace scanshard::published
