// reports/html_report.hpp — the self-contained HTML efficiency report (DESIGN §7): SVG charts drawn by
// gnuplot (run as a subprocess with `set terminal svg`, the SVG text inlined), with the data of
// every chart next to the page as CSV and JSON.
//
// Charts: step-time breakdown per validated plan (predicted and measured, stacked by op class);
// predicted vs measured step time with the y = x line and a ±10 % band; the same two for validate's
// decode plans (time per token), with their latency and tokens/s table; the published-measurement
// suite (reports/published.hpp) priced, predicted vs published with per-source errors; the planner's Pareto front
// (step time vs memory per device) and the memory breakdown per device of its plans; a
// sequence-length sweep at fixed tokens per batch of step time relative to the first model at the
// shortest length, as lines and as bars split into GEMM / attention / scan / other.
//
// Failure modes: no gnuplot on PATH -> ConfigError (exit 2) before anything is computed or
// written; gnuplot failing -> std::runtime_error (exit 1). Every file is written to a temporary
// name and renamed, and only after all charts rendered, so a failed report leaves no HTML behind.
// For: `scanshard report --validate DIR --html FILE`. Not for: running plans (validate).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace scanshard {

struct HtmlReportOptions {
  std::string validate_dir;   // output of `scanshard validate` (validate.json)
  std::string html;           // the page to write; CSV/JSON go next to it (<stem>-<chart>.csv, <stem>.json)
  // Pareto front and memory breakdown: the planner on this model / cluster.
  std::string pareto_model = "griffin-tiny";
  std::string pareto_cluster;  // default: the cluster validate predicted on
  std::int64_t pareto_global_batch = 8, pareto_seq_len = 128;
  std::string pareto_dtype = "fp32";
  // Sequence-length sweep (the first model is the baseline).
  std::vector<std::string> sweep_models = {"mqa-1.3b", "griffin-1.3b", "hawk-1.3b", "rwkv6-1.6b"};
  std::string sweep_cluster = "tpu-v5p-256";
  std::string sweep_mesh = "data=32,tensor=8";
  std::vector<std::int64_t> sweep_seq = {2048, 4096, 8192, 16384};
  std::int64_t sweep_tokens = 524288;  // tokens per batch, fixed across the sweep
};

// Writes the page and its data files; prints nothing. Returns the paths written (page first).
std::vector<std::string> write_html_report(const HtmlReportOptions& o);

// The executable `program` on $PATH (first match), or "" if there is none.
std::string find_on_path(const std::string& program);

// Runs gnuplot on `script` and returns its standard output (the SVG). std::runtime_error with
// gnuplot's messages when it fails.
std::string run_gnuplot(const std::string& gnuplot, const std::string& script);

}  // namespace scanshard
