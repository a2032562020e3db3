// reports/html_report.cpp — see html_report.hpp.
#include "reports/html_report.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "reports/format.hpp"
#include "planner/search.hpp"
#include "program/output_file.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "reports/published.hpp"
#include "reports/sweep.hpp"
#include "sim/simulate.hpp"

extern char** environ;

namespace scanshard {

namespace fs = std::filesystem;

std::string find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (!path) return "";
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    std::string candidate = dir.empty() ? std::string(".") : dir;
    candidate += '/';
    candidate += program;
    struct stat st{};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A private temporary directory, removed on destruction.
struct TempDir {
  fs::path path;
  TempDir() {
    std::error_code ec;
    const fs::path base = fs::temp_directory_path(ec);
    std::string templ = ((ec ? fs::path("/tmp") : base) / "scanshard-gnuplot-XXXXXX").string();
    if (!::mkdtemp(templ.data()))
      throw ConfigError(templ + ": cannot create a temporary directory for gnuplot: " + std::strerror(errno));
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

std::string run_gnuplot(const std::string& gnuplot, const std::string& script) {
  TempDir tmp;
  const fs::path in = tmp.path / "chart.gp", out = tmp.path / "chart.svg", err = tmp.path / "stderr.txt";
  write_output_file(in.string(), script);  // checked: a full temporary directory is an error, not a short script
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, in.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> argv = {const_cast<char*>(gnuplot.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, gnuplot.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + gnuplot + ": " + std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw std::runtime_error("waiting for gnuplot failed");
  const std::string svg = slurp(out), messages = slurp(err);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || svg.find("<svg") == std::string::npos)
    throw std::runtime_error("gnuplot failed (" + gnuplot + "): " + (messages.empty() ? std::string("no SVG produced") : messages));
  return svg;
}

namespace {

// ─── small helpers ──────────────────────────────────────────────────────────────────────────────

std::string num(double v, int digits = 6) {
  char b[40];
  std::snprintf(b, sizeof b, "%.*g", digits, v);
  return b;
}

// A gnuplot single-quoted string ('' escapes a quote; nothing else is special).
std::string gq(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("''") : std::string(1, c);
  return o + "'";
}

// A gnuplot double-quoted string: "\n" breaks the line (titles on two lines).
std::string gq2(const std::string& line1, const std::string& line2) {
  std::string o = "\"";
  for (const std::string* l : {&line1, &line2}) {
    if (l == &line2) o += "\\n";
    for (char c : *l) {
      if (c == '"' || c == '\\') o += '\\';
      o += c;
    }
  }
  return o + "\"";
}

// Tics 1, 2, 5 x 10^k inside [lo, hi] for a log axis, as a gnuplot tic list.
std::string log_tics(double lo, double hi) {
  std::string t;
  for (double decade = std::pow(10.0, std::floor(std::log10(lo))); decade <= hi; decade *= 10)
    for (double m : {1.0, 2.0, 5.0}) {
      const double v = m * decade;
      if (v < lo || v > hi) continue;
      char b[32];
      std::snprintf(b, sizeof b, "%g", v);
      t += std::string(t.empty() ? "" : ", ") + "'" + b + "' " + b;
    }
  return t;
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

// " a b" appended without temporaries (GCC 12 -Wrestrict false positives on "x" + std::string).
void append_nums(std::string& d, std::initializer_list<double> values) {
  for (double v : values) {
    d += ' ';
    d += num(v);
  }
}
void append_csv(std::string& d, double v) {
  d += ',';
  d += num(v, 9);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

std::string pct(double e, bool sign = true) {
  char b[32];
  std::snprintf(b, sizeof b, sign ? "%+.1f %%" : "%.1f %%", 100 * e);
  return b;
}

std::string family_label(const std::string& f) {
  if (f == "mqa") return "MQA";
  if (f == "griffin") return "Griffin";
  if (f == "hawk") return "Hawk";
  if (f == "rwkv6") return "RWKV-6";
  if (f == "rwkv4") return "RWKV-4";
  return f;
}

std::string seq_label(std::int64_t T) { return T % 1024 == 0 ? std::to_string(T / 1024) + "K" : std::to_string(T); }

// SVG text from gnuplot without the XML prolog, ready to inline.
std::string inline_svg(const std::string& svg) {
  const auto at = svg.find("<svg");
  return at == std::string::npos ? svg : svg.substr(at);
}

std::string terminal(const std::string& name, int w, int h) {
  return "set terminal svg size " + std::to_string(w) + "," + std::to_string(h) + " dynamic noenhanced font 'Helvetica,13' name " +
         gq(name) + " background '#ffffff'\nset encoding utf8\nset border lw 1 lc rgb '#444444'\nset grid ytics lc rgb '#dddddd'\n";
}

// The ±10 % band around y = x from lo to hi (log-spaced), as gnuplot's $band data block.
std::string band_block(double lo, double hi) {
  std::string band = "$band << EOD\n";
  for (int i = 0; i <= 40; ++i) {
    const double x = lo * std::pow(hi / lo, i / 40.0);
    band += num(x) + " " + num(0.9 * x) + " " + num(1.1 * x) + "\n";
  }
  return band + "EOD\n";
}

// Class palette (tableau-like), in stacking order.
const std::vector<std::pair<std::string, std::string>> kClassColors = {
    {"gemm", "#4e79a7"},      {"attention", "#f28e2b"}, {"scan", "#59a14f"}, {"elementwise", "#edc948"},
    {"norm", "#b07aa1"},      {"embedding", "#76b7b2"}, {"optimizer", "#ff9da7"}, {"comm", "#e15759"},
    {"other", "#9c755f"},     {"untraced", "#bab0ac"}};

struct Chart {
  std::string id, title, caption, svg, csv_name, csv;
  std::string extra_html;  // a table under the chart
};

Chart make_chart(const std::string& id, const std::string& title, const std::string& csv_name) {
  Chart c;
  c.id = id;
  c.title = title;
  c.csv_name = csv_name;
  return c;
}

// ─── validate output ────────────────────────────────────────────────────────────────────────────

struct ValidatedPlan {
  std::string id, model, family, mesh, description;
  std::int64_t global_batch = 0, micro_batch = 0, seq_len = 0;  // decode: batch, prompt_len, sample_len
  double predicted = 0, measured = 0, error = 0;  // seconds per step (decode: per token)
  std::map<std::string, double> pred_class, meas_class;  // all groups, by class (+ "untraced")
};

// One plan set of validate.json: the training plans, or the decode plans.
struct PlanSet {
  std::vector<ValidatedPlan> plans;
  nlohmann::json summary;
};

struct Validated {
  nlohmann::json doc;
  PlanSet training, decode;
  std::string file;
};

// A plan of validate.json's "plans" (decode: "decode"/"plans", whose step is a token).
ValidatedPlan parse_validated_plan(const nlohmann::json& p, bool decode, const std::string& file) {
  ValidatedPlan q;
  q.id = p.at("id").get<std::string>();
  q.model = p.at("model").get<std::string>();
  q.family = p.value("family", std::string("?"));
  q.mesh = p.at("mesh").get<std::string>();
  q.global_batch = p.value(decode ? "batch" : "global_batch", std::int64_t{0});
  q.micro_batch = p.value(decode ? "prompt_len" : "micro_batch", std::int64_t{0});
  q.seq_len = p.value(decode ? "sample_len" : "seq_len", std::int64_t{0});
  q.description = p.value("description", q.model + " " + q.mesh + " B" + std::to_string(q.global_batch) + " mb" +
                                             std::to_string(q.micro_batch) + " T" + std::to_string(q.seq_len));
  q.predicted = p.at(decode ? "predicted_seconds_per_token" : "predicted_step_seconds").get<double>();
  q.measured = p.at(decode ? "measured_seconds_per_token" : "measured_step_seconds").get<double>();
  if (!(q.predicted > 0) || !(q.measured > 0)) throw ConfigError(file + ": plans: " + q.id + ": step seconds must be positive");
  if (decode && q.global_batch < 1) throw ConfigError(file + ": decode: plans: " + q.id + ": batch must be positive");
  q.error = (q.predicted - q.measured) / q.measured;
  double traced = 0;
  for (const auto& g : p.at("groups")) {
    const std::string cls = g.value("class", std::string("other"));
    q.pred_class[cls] += g.value("predicted_seconds", 0.0);
    q.meas_class[cls] += g.value("measured_seconds", 0.0);
    traced += g.value("measured_seconds", 0.0);
  }
  q.meas_class["untraced"] = std::max(0.0, q.measured - traced);
  return q;
}

Validated load_validate(const std::string& dir) {
  Validated v;
  v.file = (fs::path(dir) / "validate.json").string();
  std::string text;
  try {
    text = read_regular_file(v.file);  // a FIFO is refused, not waited on
  } catch (const ConfigError& e) {
    throw ConfigError("--validate: " + std::string(e.what()) + " (write it with `scanshard validate --out " + dir + "`)");
  }
  try {
    v.doc = nlohmann::json::parse(text);
    for (const auto& p : v.doc.at("plans")) v.training.plans.push_back(parse_validated_plan(p, false, v.file));
    v.training.summary = v.doc.at("summary");
    if (v.doc.contains("decode")) {  // older files have no decode plans
      for (const auto& p : v.doc["decode"].at("plans")) v.decode.plans.push_back(parse_validated_plan(p, true, v.file));
      v.decode.summary = v.doc["decode"].at("summary");
    }
    v.doc.at("cluster").at("name");
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(v.file + ": not the output of `scanshard validate`: " + e.what());
  }
  if (v.training.plans.empty() && v.decode.plans.empty()) throw ConfigError(v.file + ": plans: empty (no plan ran)");
  return v;
}

// What differs between the training and the decode charts of a plan set.
struct SetText {
  std::string id_prefix;   // "" or "decode-"
  std::string step;        // "training step" or "token (decode step)"
  std::string step_time;   // "step time" or "time per token"
  std::string plans_noun;  // "plans" or "decode plans"
};
const SetText kTrainingText{"", "training step", "step time", "plans"};
const SetText kDecodeText{"decode-", "token (decode step)", "time per token", "decode plans"};

// ─── charts ─────────────────────────────────────────────────────────────────────────────────────

Chart breakdown_chart(const std::string& gp, const PlanSet& v, const SetText& t) {
  Chart c = make_chart(t.id_prefix + "breakdown", t.id_prefix.empty() ? "Step-time breakdown per plan" : "Per-token latency breakdown per decode plan",
                       t.id_prefix + "breakdown.csv");
  std::vector<std::string> classes;
  for (const auto& [cls, color] : kClassColors) {
    bool used = false;
    for (const auto& p : v.plans) used = used || (p.pred_class.count(cls) && p.pred_class.at(cls) > 0) || (p.meas_class.count(cls) && p.meas_class.at(cls) > 0);
    if (used) classes.push_back(cls);
  }
  std::string colors, names;
  for (const auto& cls : classes) {
    for (const auto& [k, col] : kClassColors)
      if (k == cls) colors += (colors.empty() ? "" : " ") + col;
    names += (names.empty() ? "" : " ") + cls;
  }
  // Per bar and class: bottom and top of its segment (ms).
  auto block = [&](const char* name, bool measured) {
    std::string d = std::string("$") + name + " << EOD\n";
    for (std::size_t i = 0; i < v.plans.size(); ++i) {
      const auto& m = measured ? v.plans[i].meas_class : v.plans[i].pred_class;
      double lo = 0;
      d += num(3.0 * double(i) + (measured ? 1 : 0));
      for (const auto& cls : classes) {
        const double s = m.count(cls) ? 1e3 * m.at(cls) : 0.0;
        append_nums(d, {lo, lo + s});
        lo += s;
      }
      d += "\n";
    }
    return d + "EOD\n";
  };
  std::string tics;
  double ymax = 0;
  for (std::size_t i = 0; i < v.plans.size(); ++i) {
    tics += (i ? ", " : "") + gq(v.plans[i].id) + " " + num(3.0 * double(i) + 0.5);
    double sp = 0, sm = 0;
    for (const auto& [k, s] : v.plans[i].pred_class) sp += s;
    for (const auto& [k, s] : v.plans[i].meas_class) sm += s;
    ymax = std::max({ymax, 1e3 * sp, 1e3 * sm});
  }
  std::string s = terminal(t.id_prefix.empty() ? "breakdown" : "decode_breakdown", 1100, 520) + block("pred", false) + block("meas", true) +
                  "colors = " + gq(colors) + "\nnames = " + gq(names) + "\n"
                  "set title 'Time per " + t.step + " by op class: simulator (pale, left bar) vs measured (solid, right bar)'\n"
                  "set xlabel 'validated plan (see the table below)'\nset ylabel 'time per " + t.step + " (ms)'\n"
                  "set xtics (" + tics + ") rotate by -45 font ',10'\n"
                  "set xrange [-1:" + num(3.0 * double(v.plans.size())) + "]\nset yrange [0:" + num(ymax * 1.08) + "]\n"
                  "set key outside right top vertical title 'op class'\n"
                  "plot for [k=1:words(names)] $pred using 1:(0):($1-0.45):($1+0.45):(column(2*k)):(column(2*k+1)) "
                  "with boxxyerror fs transparent solid 0.35 noborder lc rgb word(colors,k) notitle, \\\n"
                  "     for [k=1:words(names)] $meas using 1:(0):($1-0.45):($1+0.45):(column(2*k)):(column(2*k+1)) "
                  "with boxxyerror fs solid 0.9 noborder lc rgb word(colors,k) title word(names,k)\n";
  c.svg = run_gnuplot(gp, s);
  c.caption = "Seconds per " + t.step + " of every validated " + t.plans_noun + ", split by op class. The pale left bar is the simulator's "
              "prediction (sum of its op groups), the solid right bar the median measured step; \"untraced\" is wall time "
              "outside the runner's timed kernels (residual adds, copies, allocation).";
  c.csv = "id,side";
  for (const auto& cls : classes) c.csv += "," + cls + "_seconds";
  c.csv += "\n";
  for (const auto& p : v.plans)
    for (int side = 0; side < 2; ++side) {
      const auto& m = side ? p.meas_class : p.pred_class;
      c.csv += p.id + (side ? ",measured" : ",predicted");
      for (const auto& cls : classes) append_csv(c.csv, m.count(cls) ? m.at(cls) : 0.0);
      c.csv += "\n";
    }
  return c;
}

Chart scatter_chart(const std::string& gp, const PlanSet& v, const SetText& t) {
  Chart c = make_chart(t.id_prefix + "scatter", "Predicted vs measured " + t.step_time, t.id_prefix + "scatter.csv");
  double lo = 1e300, hi = 0;
  for (const auto& p : v.plans) {
    lo = std::min({lo, 1e3 * p.predicted, 1e3 * p.measured});
    hi = std::max({hi, 1e3 * p.predicted, 1e3 * p.measured});
  }
  lo /= 1.3;
  hi *= 1.3;
  const std::string band = band_block(lo, hi);
  std::map<std::string, std::string> by_family;
  std::string labels = "$labels << EOD\n";
  for (const auto& p : v.plans) {
    by_family[p.family] += num(1e3 * p.measured) + " " + num(1e3 * p.predicted) + "\n";
    labels += num(1e3 * p.measured) + " " + num(1e3 * p.predicted) + " " + p.id + "\n";
  }
  labels += "EOD\n";
  const std::map<std::string, std::string> fam_color = {{"griffin", "#4e79a7"}, {"hawk", "#59a14f"}, {"mqa", "#f28e2b"},
                                                        {"rwkv6", "#b07aa1"}, {"rwkv4", "#9c755f"}};
  const std::map<std::string, int> fam_point = {{"griffin", 7}, {"hawk", 5}, {"mqa", 9}, {"rwkv6", 11}, {"rwkv4", 13}};
  std::string s = terminal(t.id_prefix.empty() ? "scatter" : "decode_scatter", 820, 680) + band + labels;
  std::string plot = "plot $band using 1:2:3 with filledcurves fc rgb '#9ecae1' fs transparent solid 0.35 noborder title '±10 % band', \\\n"
                     "     $band using 1:1 with lines lw 1.5 lc rgb '#333333' dt 2 title 'y = x (perfect prediction)'";
  for (const auto& [fam, data] : by_family) {
    s += "$fam_" + fam + " << EOD\n" + data + "EOD\n";
    const std::string col = fam_color.count(fam) ? fam_color.at(fam) : "#666666";
    const int pt = fam_point.count(fam) ? fam_point.at(fam) : 7;
    plot += ", \\\n     $fam_" + fam + " using 1:2 with points pt " + std::to_string(pt) + " ps 1.3 lc rgb '" + col + "' title " +
            gq(family_label(fam));
  }
  plot += ", \\\n     $labels using 1:2:3 with labels offset char 1.2,0.5 font ',9' tc rgb '#555555' notitle\n";
  const auto& sm = v.summary;
  char stats_line[256];
  std::snprintf(stats_line, sizeof stats_line, "median |error| %.1f %%, max |error| %.1f %%, Spearman rank correlation %s",
                100 * sm.value("median_abs_error", 0.0), 100 * sm.value("max_abs_error", 0.0),
                sm.contains("spearman") && sm["spearman"].is_number() ? num(sm["spearman"].get<double>(), 3).c_str() : "n/a");
  const std::string tics = log_tics(lo, hi);
  s += "set title " + gq2("Predicted vs measured " + t.step_time + ", " + std::to_string(v.plans.size()) + " " + t.plans_noun, stats_line) +
       "\nset logscale xy\nset xrange [" + num(lo) + ":" + num(hi) + "]\nset yrange [" + num(lo) + ":" + num(hi) + "]\n" +
       "set xtics (" + tics + ")\nset ytics (" + tics + ")\nset mxtics 10\nset mytics 10\n"
       "set size ratio -1\nset grid xtics ytics lc rgb '#e5e5e5'\n"
       "set xlabel 'measured " + t.step_time + " (ms, median of the steps after warm-up)'\nset ylabel 'predicted " + t.step_time + " (ms)'\n"
       "set key top left box opaque\n" + plot;
  c.svg = run_gnuplot(gp, s);
  c.caption = "One point per validated " + t.plans_noun.substr(0, t.plans_noun.size() - 1) + ". Points inside the band are within ±10 % of the measurement; above the dashed "
              "line the simulator is too slow, below it too fast.";
  c.csv = t.id_prefix.empty() ? "id,plan,model,family,mesh,global_batch,micro_batch,seq_len,predicted_seconds,measured_seconds,relative_error\n"
                              : "id,plan,model,family,mesh,batch,prompt_len,sample_len,predicted_seconds,measured_seconds,relative_error\n";
  for (const auto& p : v.plans)
    c.csv += p.id + "," + csv_field(p.description) + "," + p.model + "," + p.family + "," + csv_field(p.mesh) + "," +
             std::to_string(p.global_batch) + "," +
             std::to_string(p.micro_batch) + "," + std::to_string(p.seq_len) + "," + num(p.predicted, 9) + "," + num(p.measured, 9) + "," +
             num(p.error, 6) + "\n";
  return c;
}

// ─── published measurements ─────────────────────────────────────────────────────────────────────

// The built-in published suite (reports/published.hpp): predicted against published seconds per
// step for the rows in seconds (relative rows only in the table), and the per-source errors.
Chart published_chart(const std::string& gp, nlohmann::json& json) {
  Chart c = make_chart("published", "Published cluster measurements: predicted vs published", "published.csv");
  const auto rows = published::builtin_suite();
  const auto priced = published::price_suite(rows);
  double lo = 1e300, hi = 0;
  std::map<std::string, std::string> by_source;
  c.csv = "source,row,where,published,predicted,error,searched\n";
  std::string table = "<table><tr><th>source</th><th>row</th><th>published</th><th>predicted</th><th>error</th><th>note</th></tr>";
  for (const auto& p : priced) {
    const auto& r = *p.row;
    const bool rel = r.metric == published::Metric::relative_step_time;
    if (!p.priced) {
      table += "<tr><td>" + html_escape(r.source_id) + "</td><td>" + html_escape(r.id) + "</td><td></td><td></td><td></td><td>not priced: " +
               html_escape(p.why) + "</td></tr>";
      continue;
    }
    auto shown = [&](double v) { return rel ? num(v, 3) : format_seconds(v); };
    table += "<tr><td>" + html_escape(r.source_id) + "</td><td>" + html_escape(r.id) + "</td><td>" + shown(p.published) + "</td><td>" +
             shown(p.predicted) + "</td><td>" + (rel && r.relative_to.empty() ? std::string("(reference)") : pct(p.error)) + "</td><td>" +
             html_escape(p.searched + (p.why.empty() ? "" : "; " + p.why)) + "</td></tr>";
    c.csv += csv_field(r.source_id) + "," + csv_field(r.id) + "," + csv_field(r.where) + "," + num(p.published, 9) + "," +
             num(p.predicted, 9) + "," + num(p.error, 6) + "," + csv_field(p.searched) + "\n";
    if (rel) continue;
    lo = std::min({lo, p.published, p.predicted});
    hi = std::max({hi, p.published, p.predicted});
    by_source[r.source_id] += num(p.published) + " " + num(p.predicted) + "\n";
  }
  table += "</table>\n";
  const auto errs = published::source_errors(priced);
  std::string src_table = "<table><tr><th>source</th><th>rows</th><th>mean |error|</th><th>max |error|</th><th>bias</th></tr>";
  nlohmann::json src_json = nlohmann::json::array();
  for (const auto& e : errs) {
    src_table += "<tr><td>" + html_escape(e.source_id) + "</td><td>" + std::to_string(e.rows) + "</td><td>" + pct(e.mean_abs, false) +
                 "</td><td>" + pct(e.max_abs, false) + "</td><td>" + pct(e.bias) + "</td></tr>";
    src_json.push_back({{"source", e.source_id}, {"rows", e.rows}, {"mean_abs_error", e.mean_abs}, {"max_abs_error", e.max_abs}, {"bias", e.bias}});
  }
  src_table += "</table>\n";
  json["published_sources"] = src_json;
  lo /= 1.3;
  hi *= 1.3;
  const std::string band = band_block(lo, hi);
  static const char* colors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f"};
  std::string s = terminal("published", 820, 680) + band;
  std::string plot = "plot $band using 1:2:3 with filledcurves fc rgb '#9ecae1' fs transparent solid 0.35 noborder title '±10 % band', \\\n"
                     "     $band using 1:1 with lines lw 1.5 lc rgb '#333333' dt 2 title 'y = x'";
  int k = 0;
  for (const auto& [src, data] : by_source) {
    s += "$src" + std::to_string(k) + " << EOD\n" + data + "EOD\n";
    plot += ", \\\n     $src" + std::to_string(k) + " using 1:2 with points pt 7 ps 1.3 lc rgb '" + colors[k % 6] + "' title " + gq(src);
    ++k;
  }
  const published::SourceError all = errs.back();
  const std::string tics = log_tics(lo, hi);
  s += "set title " + gq2("Published measurements, " + std::to_string(all.rows) + " rows", "mean |error| " + pct(all.mean_abs, false) +
                              ", max " + pct(all.max_abs, false)) +
       "\nset logscale xy\nset xrange [" + num(lo) + ":" + num(hi) + "]\nset yrange [" + num(lo) + ":" + num(hi) + "]\n" +
       "set xtics (" + tics + ")\nset ytics (" + tics + ")\nset size ratio -1\nset grid xtics ytics lc rgb '#e5e5e5'\n"
       "set xlabel 'published seconds per step'\nset ylabel 'predicted seconds per step'\nset key top left box opaque\n" + plot + "\n";
  c.svg = run_gnuplot(gp, s);
  c.caption = "One point per published row measured in seconds per step (TFLOP/s and MFU figures converted with the paper's "
              "own FLOP formula); relative step times (the Griffin paper's Figure 3) are in the table only. Plans as each paper "
              "states them (configs/published/); unstated keys searched. Nothing is fitted to these rows.";
  c.extra_html = src_table + table;
  return c;
}

struct Unit { double div; std::string name; };
Unit bytes_unit(double max_bytes) {
  if (max_bytes >= 1024.0 * 1024 * 1024) return {1024.0 * 1024 * 1024, "GiB"};
  if (max_bytes >= 1024.0 * 1024) return {1024.0 * 1024, "MiB"};
  return {1024.0, "KiB"};
}

std::pair<Chart, Chart> pareto_charts(const std::string& gp, const HtmlReportOptions& o, const std::string& default_cluster,
                                      nlohmann::json& json) {
  const ModelSpec m = load_model(o.pareto_model, "--pareto-model");
  const std::string cluster_name = o.pareto_cluster.empty() ? default_cluster : o.pareto_cluster;
  const ClusterSpec c = load_cluster(cluster_name, "--pareto-cluster");
  SearchOptions so;
  so.global_batch = o.pareto_global_batch;
  so.seq_len = o.pareto_seq_len;
  so.top = 40;
  if (o.pareto_dtype == "fp32") so.dtype = DType::fp32;
  else if (o.pareto_dtype == "bf16") so.dtype = DType::bf16;
  else throw ConfigError("--pareto-dtype: expected fp32 or bf16, got '" + o.pareto_dtype + "'");
  const SearchResult r = search(m, c, so);
  if (r.pareto.empty()) throw ConfigError("--pareto-model: no plan of " + m.name + " fits on " + c.name + " at batch " +
                                          std::to_string(o.pareto_global_batch) + " x " + std::to_string(o.pareto_seq_len));
  double max_mem = 0;
  for (const auto* list : {&r.top, &r.pareto})
    for (const auto& cand : *list) max_mem = std::max(max_mem, cand.memory_bytes);
  const Unit u = bytes_unit(max_mem);

  Chart pc = make_chart("pareto", "Planner: Pareto front of step time vs memory per device", "pareto.csv");
  std::string all = "$all << EOD\n", front = "$front << EOD\n";
  for (const auto& cand : r.top) all += num(cand.memory_bytes / u.div) + " " + num(1e3 * cand.step_seconds) + "\n";
  std::string table = "<table><tr><th>#</th><th>plan</th><th>step time</th><th>memory per device</th><th>bottleneck</th></tr>";
  pc.csv = "front_index,plan,step_seconds,memory_bytes_per_device,tokens_per_s,bottleneck\n";
  for (std::size_t i = 0; i < r.pareto.size(); ++i) {
    const auto& cand = r.pareto[i];
    front += num(cand.memory_bytes / u.div) + " " + num(1e3 * cand.step_seconds) + " F" + std::to_string(i + 1) + "\n";
    table += "<tr><td>F" + std::to_string(i + 1) + "</td><td>" + html_escape(plan_summary(cand.plan)) + "</td><td>" +
             format_seconds(cand.step_seconds) + "</td><td>" + format_bytes(cand.memory_bytes) + "</td><td>" +
             html_escape(cand.bottleneck) + "</td></tr>";
    pc.csv += "F" + std::to_string(i + 1) + "," + csv_field(plan_summary(cand.plan)) + "," + num(cand.step_seconds, 9) + "," +
              num(cand.memory_bytes, 9) + "," + num(cand.tokens_per_s, 6) + "," + csv_field(cand.bottleneck) + "\n";
  }
  pc.csv += "\nrank_in_top,plan,step_seconds,memory_bytes_per_device\n";
  for (std::size_t i = 0; i < r.top.size(); ++i)
    pc.csv += std::to_string(i + 1) + "," + csv_field(plan_summary(r.top[i].plan)) + "," + num(r.top[i].step_seconds, 9) + "," +
              num(r.top[i].memory_bytes, 9) + "\n";
  all += "EOD\n";
  front += "EOD\n";
  table += "</table>";
  const std::string title = "Pareto front: " + m.name + " on " + c.name + ", batch " + std::to_string(o.pareto_global_batch) + " x " +
                            std::to_string(o.pareto_seq_len) + " tokens, " + o.pareto_dtype;
  std::string s = terminal("pareto", 900, 520) + all + front + "set title " + gq(title) + "\nset xlabel " +
                  gq("memory per device (" + u.name + ")") + "\nset ylabel 'step time (ms)'\nset grid xtics ytics lc rgb '#e5e5e5'\n"
                  "set key top right box opaque\nset offsets graph 0.05, graph 0.1, graph 0.1, graph 0.1\n"
                  "plot $all using 1:2 with points pt 6 ps 1.1 lc rgb '#9a9a9a' title 'fastest plans (top " +
                  std::to_string(r.top.size()) + ")', \\\n"
                  "     $front using 1:2 with linespoints lw 2 pt 7 ps 1.3 lc rgb '#e15759' title 'Pareto front', \\\n"
                  "     $front using 1:2:3 with labels offset char 1.2,0.7 font ',10' notitle\n";
  pc.svg = run_gnuplot(gp, s);
  pc.caption = "Every plan the planner priced among the fastest (grey) and the plans no other plan beats in both step time "
               "and memory per device (red, F1... listed below).";
  pc.extra_html = table;

  // Memory breakdown per device of the front's plans.
  Chart mc = make_chart("memory", "Memory per device of the Pareto-front plans", "memory.csv");
  const std::vector<std::pair<std::string, std::string>> parts = {{"params", "#4e79a7"}, {"grads", "#f28e2b"}, {"optimizer", "#e15759"},
                                                                  {"activations", "#59a14f"}, {"scan_state", "#edc948"},
                                                                  {"buffers", "#b07aa1"}};
  std::string d = "$mem << EOD\n", tics, colors, names;
  for (const auto& [k, col] : parts) {
    colors += (colors.empty() ? "" : " ") + col;
    names += (names.empty() ? "" : " ") + k;
  }
  mc.csv = "front_index,plan,params_bytes,grads_bytes,optimizer_bytes,activations_bytes,scan_state_bytes,buffers_bytes,total_bytes,capacity_bytes\n";
  double top = 0;
  nlohmann::json mem_json = nlohmann::json::array();
  for (std::size_t i = 0; i < r.pareto.size(); ++i) {
    const Estimate e = simulate(m, r.pareto[i].plan, c);
    const auto& mm = e.memory;
    const double v[] = {mm.params_bytes, mm.grads_bytes, mm.optimizer_bytes, mm.activations_bytes, mm.state_bytes, mm.buffers_bytes};
    double lo = 0;
    d += std::to_string(i);
    for (double x : v) {
      append_nums(d, {lo / u.div, (lo + x) / u.div});
      lo += x;
    }
    d += "\n";
    top = std::max(top, lo);
    tics += (i ? ", " : "") + gq("F" + std::to_string(i + 1)) + " " + std::to_string(i);
    mc.csv += "F" + std::to_string(i + 1) + "," + csv_field(plan_summary(r.pareto[i].plan));
    for (double x : v) append_csv(mc.csv, x);
    mc.csv += "," + num(mm.total_bytes, 9) + "," + num(mm.capacity_bytes, 9) + "\n";
    mem_json.push_back({{"plan", plan_summary(r.pareto[i].plan)}, {"params", mm.params_bytes}, {"grads", mm.grads_bytes},
                        {"optimizer", mm.optimizer_bytes}, {"activations", mm.activations_bytes}, {"scan_state", mm.state_bytes},
                        {"buffers", mm.buffers_bytes}, {"total", mm.total_bytes}, {"capacity", mm.capacity_bytes}});
  }
  d += "EOD\n";
  std::string ms = terminal("memory", 900, 480) + d + "colors = " + gq(colors) + "\nnames = " + gq(names) + "\n" +
                   "set title " + gq("Memory per device: " + m.name + " on " + c.name + " (capacity " + format_bytes(c.chip.memory_bytes) + ")") +
                   "\nset xlabel 'Pareto-front plan (see the table above)'\nset ylabel " + gq("memory per device (" + u.name + ")") +
                   "\nset xtics (" + tics + ")\nset xrange [-0.7:" + num(double(r.pareto.size()) - 0.3) + "]\nset yrange [0:" +
                   num(top / u.div * 1.1) + "]\nset key outside right top vertical\n"
                   "plot for [k=1:words(names)] $mem using 1:(0):($1-0.35):($1+0.35):(column(2*k)):(column(2*k+1)) "
                   "with boxxyerror fs solid 0.9 noborder lc rgb word(colors,k) title word(names,k)\n";
  mc.svg = run_gnuplot(gp, ms);
  mc.caption = "What each Pareto-front plan keeps on one device: parameters, gradients, optimizer state, activations saved for "
               "backward, scan states and communication buffers (the simulator's memory model).";
  json["pareto"] = {{"model", m.name}, {"cluster", c.name}, {"global_batch", o.pareto_global_batch}, {"seq_len", o.pareto_seq_len},
                    {"front", nlohmann::json::array()}, {"memory", mem_json}};
  for (const auto& cand : r.pareto)
    json["pareto"]["front"].push_back({{"plan", plan_summary(cand.plan)}, {"step_seconds", cand.step_seconds}, {"memory_bytes", cand.memory_bytes}});
  return {pc, mc};
}

std::pair<Chart, Chart> sweep_charts(const std::string& gp, const HtmlReportOptions& o, nlohmann::json& json) {
  if (o.sweep_models.empty()) throw ConfigError("--sweep-models: at least one model");
  if (o.sweep_seq.empty()) throw ConfigError("--sweep-seq: at least one sequence length");
  const ClusterSpec c = load_cluster(o.sweep_cluster, "--sweep-cluster");
  const Mesh mesh = parse_mesh(o.sweep_mesh, "--sweep-mesh");
  if (o.sweep_tokens <= 0) throw ConfigError("--sweep-tokens: must be positive");
  struct Point { std::string model, family; std::int64_t T, batch; Estimate e; };
  std::vector<Point> pts;
  for (auto T : o.sweep_seq)
    if (T <= 0) throw ConfigError("--sweep-seq: " + std::to_string(T) + " is not a positive length");
  for (const auto& name : o.sweep_models) {
    const ModelSpec m = load_model(name, "--sweep-models");
    Plan base;
    base.model = m.name;
    base.mesh = mesh;
    base.micro_batch = 1;
    base.param_dtype = base.act_dtype = DType::bf16;
    for (auto& pt : seq_len_sweep(m, c, base, o.sweep_seq, static_cast<double>(o.sweep_tokens), "--sweep-mesh"))
      pts.push_back({m.name, to_string(m.family), pt.seq_len, pt.plan.global_batch, std::move(pt.estimate)});
  }
  const double base = pts.front().e.step_seconds;
  // Categories of the split.
  const std::vector<std::pair<std::string, std::string>> cats = {{"GEMM", "#4e79a7"}, {"attention", "#f28e2b"}, {"scan", "#59a14f"},
                                                                 {"other compute", "#bab0ac"}, {"communication + bubble", "#e15759"}};
  auto cat_of = [](Bucket b) -> int {
    if (!is_compute(b)) return 4;
    return b == Bucket::gemm ? 0 : b == Bucket::attention ? 1 : b == Bucket::scan ? 2 : 3;
  };
  const std::size_t M = o.sweep_models.size(), S = o.sweep_seq.size();
  // Lines.
  Chart lc = make_chart("sweep", "Sequence-length sweep at fixed tokens per batch", "sweep.csv");
  std::string s = terminal("sweep", 1000, 500), plot = "plot ";
  const std::vector<std::string> line_colors = {"#f28e2b", "#4e79a7", "#59a14f", "#b07aa1", "#e15759", "#76b7b2"};
  std::string xt;
  for (std::size_t j = 0; j < S; ++j) xt += (j ? ", " : "") + gq(seq_label(o.sweep_seq[j])) + " " + std::to_string(o.sweep_seq[j]);
  for (std::size_t i = 0; i < M; ++i) {
    s += "$m" + std::to_string(i) + " << EOD\n";
    for (std::size_t j = 0; j < S; ++j) s += std::to_string(pts[i * S + j].T) + " " + num(pts[i * S + j].e.step_seconds / base) + "\n";
    s += "EOD\n";
    plot += std::string(i ? ", \\\n     " : "") + "$m" + std::to_string(i) + " using 1:2 with linespoints lw 2 pt 7 ps 1.2 lc rgb '" +
            line_colors[i % line_colors.size()] + "' title " + gq(family_label(pts[i * S].family) + " (" + pts[i * S].model + ")");
  }
  const std::string where = c.name + ", mesh " + mesh.describe() + ", " + format_si(double(o.sweep_tokens), "tokens") + " per batch, bf16";
  s += "set title " + gq2("Step time relative to " + pts.front().model + " at " + seq_label(o.sweep_seq.front()), where) +
       "\nset logscale x 2\nset xtics (" + xt + ")\nset xrange [" + num(o.sweep_seq.front() / 1.2) + ":" + num(o.sweep_seq.back() * 1.2) +
       "]\nset xlabel 'sequence length (tokens; batch shrinks to keep tokens per batch fixed)'\n"
       "set ylabel 'step time relative to the baseline (x, 1 = " + format_seconds(base) + ")'\n"
       "set key outside right top vertical\n" + plot + "\n";
  lc.svg = run_gnuplot(gp, s);
  lc.caption = "The Griffin paper's Figure-3 setup: the same number of tokens per batch at every sequence length, so a model "
               "whose cost is linear in length stays flat while global attention grows.";
  lc.csv = "model,family,seq_len,global_batch,step_seconds,relative_to_baseline";
  for (const auto& [k, col] : cats) lc.csv += "," + csv_field(k + " seconds");
  lc.csv += "\n";
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& p : pts) {
    double cat[5] = {0, 0, 0, 0, 0};
    for (int b = 0; b < kBucketCount; ++b) cat[cat_of(static_cast<Bucket>(b))] += p.e.seconds[b];
    lc.csv += p.model + "," + p.family + "," + std::to_string(p.T) + "," + std::to_string(p.batch) + "," + num(p.e.step_seconds, 9) + "," +
              num(p.e.step_seconds / base, 6);
    for (double x : cat) append_csv(lc.csv, x);
    lc.csv += "\n";
    arr.push_back({{"model", p.model}, {"seq_len", p.T}, {"global_batch", p.batch}, {"step_seconds", p.e.step_seconds},
                   {"relative", p.e.step_seconds / base}, {"gemm_seconds", cat[0]}, {"attention_seconds", cat[1]},
                   {"scan_seconds", cat[2]}, {"other_compute_seconds", cat[3]}, {"communication_seconds", cat[4]}});
  }
  json["sweep"] = {{"cluster", c.name}, {"mesh", mesh.describe()}, {"tokens_per_batch", o.sweep_tokens}, {"points", arr}};

  // Split bars: x = group (sequence length) · (M + 1) + model.
  Chart bc = make_chart("sweep_split", "Where the time goes along the sweep", "sweep.csv");
  std::string d = "$split << EOD\n", tics, colors, names;
  for (const auto& [k, col] : cats) colors += (colors.empty() ? "" : " ") + col;
  double top = 0;
  for (std::size_t j = 0; j < S; ++j)
    for (std::size_t i = 0; i < M; ++i) {
      const auto& p = pts[i * S + j];
      const double x = double(j * (M + 1) + i);
      double cat[5] = {0, 0, 0, 0, 0};
      for (int b = 0; b < kBucketCount; ++b) cat[cat_of(static_cast<Bucket>(b))] += p.e.seconds[b];
      double lo = 0;
      d += num(x);
      for (double v : cat) {
        append_nums(d, {lo / base, (lo + v) / base});
        lo += v;
      }
      d += "\n";
      top = std::max(top, lo / base);
      tics += std::string(tics.empty() ? "" : ", ") + gq(family_label(p.family) + " " + seq_label(p.T)) + " " + num(x);
    }
  d += "EOD\n";
  std::string plots;
  for (std::size_t k = 0; k < cats.size(); ++k)
    plots += std::string(k ? ", \\\n     " : "") + "$split using 1:(0):($1-0.4):($1+0.4):(column(" + std::to_string(2 * k + 2) + ")):(column(" +
             std::to_string(2 * k + 3) + ")) with boxxyerror fs solid 0.9 noborder lc rgb '" + cats[k].second + "' title " + gq(cats[k].first);
  std::string ss = terminal("sweep_split", 1100, 540) + d + "set title " +
                   gq2("Step time split into GEMM / attention / scan / other, relative to " + pts.front().model + " at " +
                           seq_label(o.sweep_seq.front()),
                       where) +
                   "\nset xtics (" + tics + ") rotate by -45 font ',10'\nset xrange [-1:" + num(double(S * (M + 1)) - 1) +
                   "]\nset yrange [0:" + num(top * 1.1) + "]\nset xlabel 'model and sequence length (groups of " + std::to_string(M) +
                   " bars per length)'\nset ylabel 'step time relative to the baseline (x)'\nset key outside right top vertical\nplot " +
                   plots + "\n";
  bc.svg = run_gnuplot(gp, ss);
  bc.caption = "The same sweep, each bar split by the simulator's buckets: GEMMs, attention, the linear-recurrence scan, other "
               "compute (elementwise, norms, embedding, optimizer, recompute) and exposed communication plus pipeline bubble.";
  bc.csv.clear();  // same data as the line chart's CSV
  return {lc, bc};
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char b[64];
  std::strftime(b, sizeof b, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return b;
}

}  // namespace

std::vector<std::string> write_html_report(const HtmlReportOptions& o) {
  // Everything that can fail on input or a missing tool fails before anything is written.
  const std::string gp = find_on_path("gnuplot");
  if (gp.empty())
    throw ConfigError("report --html: gnuplot not found on PATH; the charts are drawn by gnuplot (Debian: apt-get install "
                      "gnuplot-nox, or run scripts/install-deps). Nothing was written.");
  if (o.html.empty()) throw ConfigError("--html: must name a file");
  const fs::path page(o.html);
  const fs::path dir = page.has_parent_path() ? page.parent_path() : fs::path(".");
  check_output_directory(dir.string(), "--html");
  std::error_code ec;
  if (fs::is_directory(dir, ec)) check_output_file(o.html);  // else the directory is made below, and the page checked then
  const Validated v = load_validate(o.validate_dir);
  // The Pareto front defaults to the cluster validate predicted on (as it was named on its command line).
  const std::string default_cluster = v.doc.at("cluster").value("argument", std::string("cpu-local"));

  nlohmann::json json = {{"generated", utc_now()}, {"validate", v.doc}};
  std::vector<Chart> charts;  // the training plans' two (when any ran), then the others
  if (!v.training.plans.empty()) {
    charts.push_back(breakdown_chart(gp, v.training, kTrainingText));
    charts.push_back(scatter_chart(gp, v.training, kTrainingText));
  }
  std::vector<Chart> decode_charts;
  if (!v.decode.plans.empty()) {
    decode_charts.push_back(breakdown_chart(gp, v.decode, kDecodeText));
    decode_charts.push_back(scatter_chart(gp, v.decode, kDecodeText));
  }
  const std::size_t first_other = charts.size();
  charts.push_back(published_chart(gp, json));
  auto [pareto, memory] = pareto_charts(gp, o, default_cluster, json);
  charts.push_back(pareto);
  charts.push_back(memory);
  auto [sweep, split] = sweep_charts(gp, o, json);
  charts.push_back(sweep);
  charts.push_back(split);

  const std::string stem = page.stem().string();
  auto data_name = [&](const std::string& csv) { return stem + "-" + csv; };

  // The page.
  const auto& sm = v.training.summary;
  const double med = sm.value("median_abs_error", 0.0), mx = sm.value("max_abs_error", 0.0);
  const bool has_rho = sm.contains("spearman") && sm["spearman"].is_number();
  const double rho = has_rho ? sm["spearman"].get<double>() : 0.0;
  const bool met = med <= 0.03 && mx <= 0.10 && has_rho && rho >= 0.95;
  const auto& cl = v.doc.at("cluster");
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>scanshard efficiency report</title>\n"
    << "<style>\nbody{font-family:Helvetica,Arial,sans-serif;margin:24px auto;max-width:1160px;color:#222;line-height:1.4}\n"
    << "h1{font-size:26px;margin-bottom:4px}h2{font-size:19px;margin-top:34px;border-bottom:1px solid #ddd;padding-bottom:4px}\n"
    << ".meta{color:#666;font-size:13px}.cards{display:flex;gap:14px;margin:18px 0;flex-wrap:wrap}\n"
    << ".card{border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:150px}.card b{display:block;font-size:24px}\n"
    << ".ok{color:#2e7d32}.bad{color:#c62828}figure{margin:10px 0}figure svg{width:100%;height:auto;border:1px solid #eee}\n"
    << "figcaption{font-size:13px;color:#555;margin-top:4px}table{border-collapse:collapse;font-size:13px;margin:10px 0}\n"
    << "td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f5f5f5}td:first-child,td:nth-child(2){text-align:left}\n"
    << "a{color:#1f5fa8}\n</style></head><body>\n"
    << "<h1>scanshard efficiency report</h1>\n<div class=\"meta\">generated " << html_escape(utc_now()) << " &middot; predictions on "
    << html_escape(cl.value("name", std::string("?"))) << " (" << html_escape(cl.value("origin", std::string("?"))) << "): "
    << html_escape(cl.value("source", std::string(""))) << " &middot; " << v.doc.value("ranks", 1) << " MPI rank(s), "
    << v.doc.value("steps", 0) << " steps per plan";
  if (v.doc.contains("load_average")) {
    const auto& la = v.doc["load_average"];
    h << " &middot; machine load " << num(la.value("start", -1.0), 3) << " &rarr; " << num(la.value("end", -1.0), 3) << " on "
      << num(la.value("cores", 0.0), 3) << " cores";
    if (std::max(la.value("start", 0.0), la.value("end", 0.0)) > la.value("cores", 1e9))
      h << " (other processes competed: measured times inflated)";
  }
  h << "</div>\n";
  if (!v.training.plans.empty())
    h << "<div class=\"cards\"><div class=\"card\">plans compared<b>" << v.training.plans.size() << "</b></div>"
    << "<div class=\"card\">median |error| of step time<b>" << pct(med, false) << "</b></div>"
    << "<div class=\"card\">max |error|<b>" << pct(mx, false) << "</b></div>"
    << "<div class=\"card\">Spearman rank correlation<b>" << (has_rho ? num(rho, 3) : "n/a") << "</b></div>"
    << "<div class=\"card\">goal: median &le; 3 %, max &le; 10 %, Spearman &ge; 0.95<b class=\"" << (met ? "ok\">met" : "bad\">not met")
    << "</b></div></div>\n";
  if (!v.training.plans.empty() && v.doc.contains("summary_fastest_step")) {
    const auto& f = v.doc["summary_fastest_step"];
    h << "<p class=\"meta\">Measured = the median step after the warm-up. Against each plan's fastest step instead (least "
         "disturbed by other processes): median |error| "
      << pct(f.value("median_abs_error", 0.0), false) << ", max " << pct(f.value("max_abs_error", 0.0), false) << ", Spearman "
      << (f.contains("spearman") && f["spearman"].is_number() ? num(f["spearman"].get<double>(), 3) : std::string("n/a")) << ".</p>\n";
  }
  if (!v.training.plans.empty() && v.doc.contains("summary_probe_scaled") && v.doc["summary_probe_scaled"].is_object()) {
    const auto& d = v.doc["summary_probe_scaled"];
    h << "<p class=\"meta\">Machine drift: the speed probe run before each plan took "
      << num(d.value("speed_factor_min", 0.0), 3) << "&times; to " << num(d.value("speed_factor_max", 0.0), 3)
      << "&times; its time at calibration. With each prediction scaled by its plan's probe: median |error| "
      << pct(d.value("median_abs_error", 0.0), false) << ", max " << pct(d.value("max_abs_error", 0.0), false) << ", Spearman "
      << (d.contains("spearman") && d["spearman"].is_number() ? num(d["spearman"].get<double>(), 3) : std::string("n/a"))
      << ".</p>\n";
  }
  auto figure = [&](const Chart& c) {
    h << "<h2 id=\"" << c.id << "\">" << html_escape(c.title) << "</h2>\n<figure>" << inline_svg(c.svg) << "\n<figcaption>"
      << html_escape(c.caption);
    if (!c.csv_name.empty()) h << " Data: <a href=\"" << html_escape(data_name(c.csv_name)) << "\">" << html_escape(data_name(c.csv_name)) << "</a>.";
    h << "</figcaption></figure>\n" << c.extra_html << "\n";
  };
  if (!v.training.plans.empty()) {
    figure(charts[0]);
    figure(charts[1]);
    h << "<table><tr><th>id</th><th>plan</th><th>predicted</th><th>measured</th><th>error</th></tr>";
    for (const auto& p : v.training.plans)
      h << "<tr><td>" << p.id << "</td><td>" << html_escape(p.description) << "</td><td>" << format_seconds(p.predicted) << "</td><td>" << format_seconds(p.measured) << "</td><td>" << pct(p.error) << "</td></tr>";
    h << "</table>\n";
  }
  if (v.doc.contains("skipped") && v.doc["skipped"].is_array() && !v.doc["skipped"].empty()) {
    h << "<p class=\"meta\">Skipped plans:</p><ul class=\"meta\">";
    for (const auto& sk : v.doc["skipped"]) h << "<li>" << html_escape(sk.is_string() ? sk.get<std::string>() : sk.dump()) << "</li>";
    h << "</ul>\n";
  }
  // validate.json's per-class error summaries (an object: class -> plans, median, max, bias)
  auto class_table = [&](const nlohmann::json& classes, const char* header) {
    h << "<table><tr><th>" << header << "</th><th>plans</th><th>median |error|</th><th>max |error|</th><th>bias (median signed)</th></tr>";
    for (const auto& [cls, s] : classes.items())
      h << "<tr><td>" << html_escape(cls) << "</td><td>" << s.value("plans", 0) << "</td><td>" << pct(s.value("median_abs_error", 0.0), false)
        << "</td><td>" << pct(s.value("max_abs_error", 0.0), false) << "</td><td>" << pct(s.value("median_signed_error", 0.0)) << "</td></tr>";
    h << "</table>\n";
  };
  h << "<h2 id=\"classes\">Error per op class</h2>\n";
  class_table(v.doc.value("classes", nlohmann::json::object()), "op class");
  h << "<p class=\"meta\">Per class: the sum over a plan's op groups of that class (groups present on both sides), "
       "compared plan by plan. Data: <a href=\"" << html_escape(stem) << ".json\">" << html_escape(stem) << ".json</a>.</p>\n";
  if (!v.decode.plans.empty()) {
    const auto& ds = v.decode.summary;
    const double dmed = ds.value("median_abs_error", 0.0);
    h << "<h2 id=\"decode\">Decoding: per-token latency and throughput</h2>\n<p>Serving plans decoded for real by the runner "
         "(a prefill of the prompts, then one step per sampled token for every sequence; KV caches and recurrent states) "
         "against the simulator's per-token latency (sim/inference) on the same cluster. Tokens/s = batch / per-token latency.</p>\n"
      << "<div class=\"cards\"><div class=\"card\">decode plans<b>" << v.decode.plans.size() << "</b></div>"
      << "<div class=\"card\">median |error| per token<b>" << pct(dmed, false) << "</b></div>"
      << "<div class=\"card\">max |error|<b>" << pct(ds.value("max_abs_error", 0.0), false) << "</b></div>"
      << "<div class=\"card\">goal (issue 26): median &le; 5 %<b class=\"" << (dmed <= 0.05 ? "ok\">met" : "bad\">not met")
      << "</b></div></div>\n";
    if (v.doc["decode"].contains("summary_fastest_token")) {
      const auto& f = v.doc["decode"]["summary_fastest_token"];
      h << "<p class=\"meta\">Measured = the median token after the prefill. Against each plan's fastest token instead "
           "(a token of several milliseconds is rarely spared a preemption on a loaded machine): median |error| "
        << pct(f.value("median_abs_error", 0.0), false) << ", max " << pct(f.value("max_abs_error", 0.0), false) << ".</p>\n";
    }
    for (const auto& c : decode_charts) figure(c);
    h << "<table><tr><th>id</th><th>decode plan</th><th>predicted / token</th><th>measured / token</th><th>error</th>"
         "<th>predicted tokens/s</th><th>measured tokens/s</th></tr>";
    for (const auto& p : v.decode.plans) {
      const double B = static_cast<double>(p.global_batch);
      h << "<tr><td>" << p.id << "</td><td>" << html_escape(p.description) << "</td><td>" << format_seconds(p.predicted) << "</td><td>"
        << format_seconds(p.measured) << "</td><td>" << pct(p.error) << "</td><td>" << std::llround(B / p.predicted) << "</td><td>"
        << std::llround(B / p.measured) << "</td></tr>";
    }
    h << "</table>\n";
    class_table(v.doc["decode"].value("classes", nlohmann::json::object()), "op class (decode)");
  }
  for (std::size_t i = first_other; i < charts.size(); ++i) figure(charts[i]);
  h << "<p class=\"meta\">Charts drawn by gnuplot (SVG terminal) from the CSV files next to this page; produced by "
       "<code>scanshard report --validate " << html_escape(o.validate_dir) << " --html " << html_escape(o.html) << "</code>.</p>\n</body></html>\n";

  // Write: data first, the page last; each file atomically, after checking every target.
  make_output_directory(dir.string(), "--html");
  OutputFiles files;
  for (const auto* list : {&charts, &decode_charts})
    for (const auto& c : *list)
      if (!c.csv.empty()) files.emplace_back((dir / data_name(c.csv_name)).string(), c.csv);
  files.emplace_back((dir / (stem + ".json")).string(), json.dump(1) + "\n");
  files.emplace_back(o.html, h.str());
  write_output_files(files);
  std::vector<std::string> written = {o.html};
  for (std::size_t i = 0; i + 1 < files.size(); ++i) written.push_back(files[i].first);
  return written;
}

}  // namespace scanshard
