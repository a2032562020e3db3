// reports/published.hpp — the published-measurement suite (DESIGN §7, `validate --published`):
// step times, TFLOP/s per GPU, MFU or relative step times that papers report for real training
// runs on GPU and TPU clusters, each with the model, cluster and plan the paper states, priced by
// sim/ and compared with the published number.
//
// A suite file (configs/published/*.yaml) is one source (a paper's table or figure):
//   id, source (citation), rows: [{id, where (table row), model (preset or inline mapping),
//   cluster, devices (optional: a slice of the cluster), plan (plan YAML keys), search (plan keys the paper does not state), published
//   (one metric), note}].
// Keys under `search` are chosen by pricing every legal value that fits in memory and keeping the
// fastest, as the paper's authors tuned them; the report says which were searched and what won.
// The published number is converted to seconds per step with the paper's own FLOP formula (a
// pure function below), so the comparison is always predicted seconds against published seconds
// (or a ratio against a ratio for relative step times).
//
// For: `scanshard validate --published`, bench/. Not for: local runs (validate's plan set).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "program/cluster.hpp"
#include "program/model.hpp"
#include "program/flop_conventions.hpp"
#include "program/plan.hpp"
#include "sim/simulate.hpp"

namespace scanshard::published {

// layer_seconds: one layer's forward and backward of one micro-batch on one device (the first
// layer of the first stage), as Korthikanti et al. 2022 Table 4 times it.
enum class Metric { seconds_per_step, tflops_per_gpu, mfu, relative_step_time, layer_seconds };
const char* to_string(Metric m);

struct Row {
  std::string source_id;  // the file's id ("narayanan2021-table1")
  std::string source;     // the file's citation
  std::string file;
  std::string id;         // unique within the file ("gpt-1.7b")
  std::string where;      // "Table 1, row 1"
  std::string note;
  ModelSpec model;
  ClusterSpec cluster;
  Plan plan;
  std::vector<std::string> search;  // plan keys the paper does not state: micro_batch, virtual_stages
  Metric metric = Metric::seconds_per_step;
  double value = 0;
  FlopConvention formula = FlopConvention::megatron_eq3;  // the paper's FLOP count (tflops_per_gpu, mfu)
  std::string relative_to;  // relative_step_time: the id of the row it is relative to (same file)
};

// Reads one suite file's text (errors are ConfigError naming file, line and key).
std::vector<Row> parse_suite(const std::string& text, const std::string& file);
std::vector<Row> load_suite_file(const std::string& path);
// Every suite file compiled into the binary (configs/published/*.yaml), in file order.
std::vector<Row> builtin_suite();

// The published number of an absolute row as seconds per step (relative rows: their ratio).
double published_seconds(const Row& r);

struct Priced {
  const Row* row = nullptr;
  Plan plan;               // the plan priced (searched keys filled in)
  Estimate estimate;
  bool priced = false;     // false: no legal plan (`why` names the rule)
  std::string why;         // priced: a note (the plan does not fit in scanshard's memory accounting)
  std::string searched;    // "micro_batch=2 virtual_stages=3" (what the search chose)
  double predicted = 0;    // seconds per step, or the ratio for relative rows
  double published = 0;    // the same unit
  double error = 0;        // predicted / published − 1
};
// Prices every row (relative rows after the rows they refer to).
std::vector<Priced> price_suite(const std::vector<Row>& rows);
// The fastest legal plan that fits, over the row's searched keys.
Priced price_row(const Row& r);

struct SourceError {
  std::string source_id;
  std::int64_t rows = 0;
  double mean_abs = 0, max_abs = 0, bias = 0;
};
// Per source (in order of first appearance) and, last, "all".
std::vector<SourceError> source_errors(const std::vector<Priced>& priced);

}  // namespace scanshard::published
