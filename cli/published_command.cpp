// cli/published_command.cpp — `scanshard validate --published [--suite FILE ...] [--out DIR]`:
// prices the published-measurement suite (reports/published.hpp) and prints, per row, the
// predicted against the published step time (or relative step time) and the error, then mean and
// max |error| per source and overall, and leave-one-source-out figures. Writes published.csv and
// published.json under DIR. No MPI: it runs no kernels.
#include <algorithm>
#include <cmath>
#include <iostream>

#include <nlohmann/json.hpp>

#include "reports/format.hpp"
#include "cli/published_command.hpp"
#include "program/output_file.hpp"
#include "program/yaml_reader.hpp"
#include "reports/chip_fit.hpp"
#include "reports/published.hpp"

namespace scanshard {

namespace {

std::string pct(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%+.1f %%", 100 * x);
  return b;
}
std::string num(double x, const char* fmt) {
  char b[32];
  std::snprintf(b, sizeof b, fmt, x);
  return b;
}
bool relative(const published::Row& r) { return r.metric == published::Metric::relative_step_time; }

}  // namespace

namespace {

std::string fit_value(const std::string& key, double v) {
  return key == "launch_overhead_seconds" ? num(v, "%.3g") : num(v, "%.3f");
}

// `--fit CHIP`: the chip's keys fitted to every row on it, the suite priced with that fit, and
// each source priced with a fit that did not see it.
nlohmann::json report_fit(const std::vector<published::Row>& rows, const std::string& chip, std::vector<std::string> keys) {
  if (keys.empty()) keys = published::fit_keys();
  published::Fit fit;
  try {
    fit = published::fit_chip(rows, chip, keys);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("--fit: ") + e.what());
  }
  const auto holds = published::leave_one_source_out(rows, chip, keys);
  std::cout << "\nfit of " << chip << " to the " << fit.rows << " scored rows that use it (" << fit.evaluations
            << " pricings of the suite; one set for every row, nothing per row):\n\n";
  Table v({"key", "chip file", "fitted"}, {false, true, true});
  nlohmann::json values = nlohmann::json::object();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    v.add({keys[i], fit_value(keys[i], fit.start[i]), fit_value(keys[i], fit.values[i])});
    values[keys[i]] = fit.values[i];
  }
  std::cout << v.str() << "\nin sample: mean |error| " << num(100 * fit.mean_abs, "%.1f %%") << ", max "
            << num(100 * fit.max_abs, "%.1f %%") << " over the " << fit.rows << " rows\n\n";
  const auto in_sample = published::source_errors(published::price_suite(published::with_fit(rows, chip, fit)));
  Table t({"source", "rows", "in-sample mean", "in-sample max", "held-out mean", "held-out max", "held-out bias"},
          {false, true, true, true, true, true, true});
  nlohmann::json src = nlohmann::json::array();
  for (const auto& e : in_sample) {
    const auto h = std::find_if(holds.begin(), holds.end(), [&](const auto& x) { return x.source_id == e.source_id; });
    if (h == holds.end() && e.source_id != "all") continue;
    if (h == holds.end()) {
      double mean = 0, mx = 0, bias = 0;
      std::int64_t n = 0;
      for (const auto& x : holds) mean += x.mean_abs * static_cast<double>(x.rows), bias += x.bias * static_cast<double>(x.rows),
                                  mx = std::max(mx, x.max_abs), n += x.rows;
      if (n > 0) mean /= static_cast<double>(n), bias /= static_cast<double>(n);
      t.add({"all on " + chip, std::to_string(n), "", "", num(100 * mean, "%.1f %%"), num(100 * mx, "%.1f %%"), pct(bias)});
      src.push_back({{"source", "all"}, {"rows", n}, {"held_out_mean_abs_error", mean}, {"held_out_max_abs_error", mx}});
      continue;
    }
    t.add({e.source_id, std::to_string(e.rows), num(100 * e.mean_abs, "%.1f %%"), num(100 * e.max_abs, "%.1f %%"),
           num(100 * h->mean_abs, "%.1f %%"), num(100 * h->max_abs, "%.1f %%"), pct(h->bias)});
    src.push_back({{"source", e.source_id}, {"rows", e.rows}, {"in_sample_mean_abs_error", e.mean_abs},
                   {"in_sample_max_abs_error", e.max_abs}, {"held_out_mean_abs_error", h->mean_abs},
                   {"held_out_max_abs_error", h->max_abs}, {"held_out_bias", h->bias}});
  }
  std::cout << t.str()
            << "\nheld out: the source priced with a fit of the other sources only (what to expect on a stack the fit has "
               "not seen)\n";
  return {{"chip", chip}, {"keys", keys}, {"fitted", values}, {"in_sample_mean_abs_error", fit.mean_abs},
          {"in_sample_max_abs_error", fit.max_abs}, {"sources", src}};
}

}  // namespace

void run_published(const std::vector<std::string>& suites, const std::string& out_dir, const std::string& fit_chip,
                   const std::vector<std::string>& fit_keys) {
  if (!out_dir.empty()) check_output_directory(out_dir, "--out");
  std::vector<published::Row> rows;
  if (suites.empty()) rows = published::builtin_suite();
  for (const auto& f : suites) {
    auto more = published::load_suite_file(f);
    rows.insert(rows.end(), more.begin(), more.end());
  }
  const auto priced = published::price_suite(rows);

  Table t({"source", "row", "searched", "published", "predicted", "error", "MFU", "bottleneck"},
          {false, false, false, true, true, true, true, false});
  std::string csv = "source,row,where,metric,published_value,published,predicted,error,searched,mfu,plan_mesh\n";
  nlohmann::json rows_json = nlohmann::json::array();
  std::string last_source;
  for (const auto& p : priced) {
    const auto& r = *p.row;
    const bool rel = relative(r);
    const bool layer = r.metric == published::Metric::layer_seconds;
    auto shown = [&](double v) { return rel ? num(v, "%.3f") : format_seconds(v); };
    if (!p.priced) {
      t.add({r.source_id, r.id, "", shown(published::published_seconds(r)), "", "not priced", "", p.why});
      rows_json.push_back({{"source", r.source_id}, {"row", r.id}, {"priced", false}, {"why", p.why}});
      continue;
    }
    t.add({r.source_id == last_source ? "" : r.source_id, r.id, p.searched, shown(p.published), shown(p.predicted),
           rel && r.relative_to.empty() ? "(reference)" : pct(p.error), layer ? "" : num(100 * p.estimate.mfu, "%.1f %%"),
           layer ? "(one layer)" : p.estimate.bottleneck + (p.why.empty() ? "" : "; " + p.why)});
    last_source = r.source_id;
    csv += r.source_id + "," + r.id + ",\"" + r.where + "\"," + published::to_string(r.metric) + "," + num(r.value, "%.6g") + "," +
           num(p.published, "%.6g") + "," + num(p.predicted, "%.6g") + "," + num(p.error, "%.6g") + "," + p.searched + "," +
           num(p.estimate.mfu, "%.4f") + "," + p.plan.mesh.describe() + "\n";
    nlohmann::json breakdown = nlohmann::json::object();
    for (int b = 0; b < kBucketCount; ++b) breakdown[to_string(static_cast<Bucket>(b))] = p.estimate.seconds[b];
    rows_json.push_back({{"source", r.source_id}, {"row", r.id}, {"where", r.where}, {"metric", published::to_string(r.metric)},
                         {"published_value", r.value}, {"published", p.published}, {"predicted", p.predicted},
                         {"error", p.error}, {"searched", p.searched}, {"mesh", p.plan.mesh.describe()},
                         {"micro_batch", p.plan.micro_batch}, {"virtual_stages", p.plan.virtual_stages},
                         {"mfu", p.estimate.mfu}, {"step_seconds", p.estimate.step_seconds}, {"breakdown_seconds", breakdown},
                         {"note", p.why}, {"fits", p.estimate.memory.fits}});
  }
  std::cout << "published measurements: predicted against published, seconds per step (relative rows: step time "
               "relative to the reference row)\n\n"
            << t.str() << "\n";
  const auto errs = published::source_errors(priced);
  Table s({"source", "rows", "mean |error|", "max |error|", "bias"}, {false, true, true, true, true});
  nlohmann::json src_json = nlohmann::json::array();
  for (const auto& e : errs) {
    s.add({e.source_id, std::to_string(e.rows), num(100 * e.mean_abs, "%.1f %%"), num(100 * e.max_abs, "%.1f %%"), pct(e.bias)});
    src_json.push_back({{"source", e.source_id}, {"rows", e.rows}, {"mean_abs_error", e.mean_abs}, {"max_abs_error", e.max_abs},
                        {"bias", e.bias}});
  }
  std::cout << s.str();
  nlohmann::json fit_json = nullptr;
  if (!fit_chip.empty()) fit_json = report_fit(rows, fit_chip, fit_keys);
  else
    std::cout << "\nleave-one-source-out: no number in the chip and cluster files was fitted to this suite, so each source's "
                 "out-of-sample error is its error above (--fit CHIP fits one and reports it)\n";
  if (!out_dir.empty()) {
    make_output_directory(out_dir, "--out");
    const nlohmann::json doc = {{"rows", rows_json}, {"sources", src_json}, {"fit", fit_json}};
    write_output_files({{out_dir + "/published.csv", csv}, {out_dir + "/published.json", doc.dump(2) + "\n"}});
    std::cout << "wrote " << out_dir << "/published.csv, published.json\n";
  }
}

}  // namespace scanshard
