// train/optimizer.cpp — see optimizer.hpp.
#include "train/optimizer.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numbers>
#include <sstream>

#include "program/yaml_reader.hpp"

namespace scanshard::train {

double LrSchedule::factor(std::int64_t step) const {
  const double w = double(warmup_steps), s = double(step);
  if (warmup_steps > 0 && step <= warmup_steps) return s / w;  // linear warm-up
  if (decay_steps <= 0) return 1;                               // constant
  if (step >= decay_steps) return min_lr_ratio;                 // after the decay
  const double progress = (s - w) / (double(decay_steps) - w);  // 0 → 1 over the decay
  return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + std::cos(std::numbers::pi * progress));
}

namespace {
// Round-trip exact text of a float / double (the /meta record is compared field by field).
std::string exact(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}
// The shortest text that reads back as the same float ("0.95", not 0.949999988079071).
std::string shortest(float v) {
  char b[64];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(b, sizeof b, "%.*g", digits, double(v));
    if (std::strtof(b, nullptr) == v) break;
  }
  return b;
}
}  // namespace

std::string OptimizerConfig::to_yaml() const {
  std::ostringstream y;
  y << "optimizer:\n"
    << "  lr: " << exact(adamw.lr) << "\n"
    << "  beta1: " << exact(adamw.beta1) << "\n"
    << "  beta2: " << exact(adamw.beta2) << "\n"
    << "  eps: " << exact(adamw.eps) << "\n"
    << "  weight_decay: " << exact(adamw.weight_decay) << "\n"
    << "  max_grad_norm: " << exact(adamw.max_grad_norm) << "\n"
    << "  warmup_steps: " << schedule.warmup_steps << "\n"
    << "  decay_steps: " << schedule.decay_steps << "\n"
    << "  min_lr_ratio: " << exact(schedule.min_lr_ratio) << "\n";
  return y.str();
}

std::string OptimizerConfig::describe() const {
  std::ostringstream d;
  d << "optimizer: AdamW lr " << shortest(adamw.lr) << ", betas (" << shortest(adamw.beta1) << ", "
    << shortest(adamw.beta2) << "), eps " << shortest(adamw.eps) << ", weight decay "
    << shortest(adamw.weight_decay) << " (matrices), gradient clipping at norm "
    << (adamw.max_grad_norm > 0 ? shortest(adamw.max_grad_norm) : std::string("off")) << "; schedule: ";
  if (schedule.warmup_steps > 0) d << "linear warm-up over " << schedule.warmup_steps << " step(s), then ";
  if (schedule.decay_steps > 0)
    d << "cosine decay to " << format_number(schedule.min_lr_ratio) << " x lr at step " << schedule.decay_steps;
  else
    d << "constant";
  return d.str();
}

OptimizerConfig parse_optimizer(const std::string& text, const std::string& file) {
  YamlMap top(parse_yaml(text, file), file, "");
  OptimizerConfig c;
  if (!top.has("optimizer")) {
    top.finish();
    return c;
  }
  YamlMap o = top.required_map("optimizer");
  constexpr double inf = std::numeric_limits<double>::infinity();
  // A number in [lo, hi] without the open ends; `range` says so in the message.
  auto num = [&](const char* key, double fallback, double lo, double hi, bool lo_open, bool hi_open, const char* range) {
    const double v = o.optional_double(key, fallback);
    if (v < lo || v > hi || (lo_open && v == lo) || (hi_open && v == hi)) throw o.error(key, format_number(v) + " is outside " + range);
    return v;
  };
  c.adamw.lr = float(num("lr", c.adamw.lr, 0, inf, true, true, "(0, inf)"));
  c.adamw.beta1 = float(num("beta1", c.adamw.beta1, 0, 1, false, true, "[0, 1)"));
  c.adamw.beta2 = float(num("beta2", c.adamw.beta2, 0, 1, false, true, "[0, 1)"));
  c.adamw.eps = float(num("eps", c.adamw.eps, 0, inf, true, true, "(0, inf)"));
  c.adamw.weight_decay = float(num("weight_decay", c.adamw.weight_decay, 0, inf, false, true, "[0, inf)"));
  c.adamw.max_grad_norm = float(num("max_grad_norm", c.adamw.max_grad_norm, 0, inf, false, true, "[0, inf) (0: no clipping)"));
  c.schedule.warmup_steps = o.optional_int("warmup_steps", 0);
  if (c.schedule.warmup_steps < 0) throw o.error("warmup_steps", "must be 0 or positive");
  c.schedule.decay_steps = o.optional_int("decay_steps", 0);
  if (c.schedule.decay_steps < 0) throw o.error("decay_steps", "must be 0 (constant lr) or positive");
  if (c.schedule.decay_steps > 0 && c.schedule.decay_steps <= c.schedule.warmup_steps)
    throw o.error("decay_steps", std::to_string(c.schedule.decay_steps) + " must be after warmup_steps (" +
                                     std::to_string(c.schedule.warmup_steps) + ")");
  c.schedule.min_lr_ratio = num("min_lr_ratio", c.schedule.min_lr_ratio, 0, 1, false, false, "[0, 1]");
  o.finish();
  top.finish();
  return c;
}

OptimizerConfig load_optimizer(const std::string& path) { return parse_optimizer(read_regular_file(path, 1 << 20), path); }

std::string optimizer_changes(const OptimizerConfig& a, const OptimizerConfig& b) {
  std::string out;
  auto put = [&](const char* key, const std::string& x, const std::string& y) {
    out += (out.empty() ? "" : ", ") + std::string(key) + " " + x + " → " + y;
  };
  auto field = [&](const char* key, float x, float y) {
    if (x != y) put(key, shortest(x), shortest(y));
  };
  auto count = [&](const char* key, std::int64_t x, std::int64_t y) {
    if (x != y) put(key, std::to_string(x), std::to_string(y));
  };
  field("lr", a.adamw.lr, b.adamw.lr);
  field("beta1", a.adamw.beta1, b.adamw.beta1);
  field("beta2", a.adamw.beta2, b.adamw.beta2);
  field("eps", a.adamw.eps, b.adamw.eps);
  field("weight_decay", a.adamw.weight_decay, b.adamw.weight_decay);
  field("max_grad_norm", a.adamw.max_grad_norm, b.adamw.max_grad_norm);
  count("warmup_steps", a.schedule.warmup_steps, b.schedule.warmup_steps);
  count("decay_steps", a.schedule.decay_steps, b.schedule.decay_steps);
  if (a.schedule.min_lr_ratio != b.schedule.min_lr_ratio)
    put("min_lr_ratio", format_number(a.schedule.min_lr_ratio), format_number(b.schedule.min_lr_ratio));
  return out;
}

}  // namespace scanshard::train
