// program/trace.hpp — measured seconds per step of the runner, keyed by (phase, op, name) in the
// StepProgram's vocabulary (program/lower.hpp: op "linear", "rglru.scan", "attention.local",
// "all_reduce", ...; name the tensor, "mlp.w1", "rec.scan", "grads").
//
// For: timing kernel and MPI calls with std::chrono (Scope is an RAII timer) and writing the
// per-step table as JSON; on request, each timed interval with its start (a timeline). Not for: estimates (sim/), deciding what runs (lower()).
// Lives in program/ (header-only, no MPI) so that reports/ can read a runner's trace without
// depending on the MPI executor (train/ records it, reports/ compares it).
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace scanshard {

class Trace {
 public:
  using Key = std::tuple<std::string, std::string, std::string>;  // phase, op, name
  using Clock = std::chrono::steady_clock;
  // bytes: the payload a communication step moved (train/wire.hpp trace_step_bytes; 0 for compute)
  struct Cell { double seconds = 0; long calls = 0; double bytes = 0; };
  // One timed interval (a timeline, `scanshard train --timeline`): a step of the program (op set)
  // or a pipeline pass (op nullptr: the forward or backward of micro-batch `micro`, model chunk
  // `chunk`, holding the steps it ran). Times in seconds since enable_spans().
  struct Span {
    const char *phase = "", *op = nullptr, *name = "";
    double start = 0, seconds = 0;
    std::int64_t micro = -1, chunk = -1;
  };

  void add(const char* phase, const char* op, const char* name, double s) {
    auto& c = cell(phase, op, name);
    c.seconds += s;
    ++c.calls;
  }
  void add_bytes(const char* phase, const char* op, const char* name, double bytes) { cell(phase, op, name).bytes += bytes; }
  // From now on every Scope and PassScope also keeps its span (off by default: a long run would
  // keep one per step it ran). `origin` is time 0 of the spans (ranks pass the same instant
  // after a barrier so that their timelines line up).
  void enable_spans(Clock::time_point origin) { spans_on_ = true; origin_ = origin; }
  bool spans_enabled() const { return spans_on_; }
  // Closes the current step (step index, wall seconds) and starts a new one.
  void end_step(long step, double wall_seconds, double loss) {
    std::map<Key, Cell> cells;  // the cells this step used; the others stay, zeroed, for the next
    for (auto& [k, c] : current_)
      if (c.calls > 0 || c.bytes > 0) {
        cells.emplace(k, c);
        c = Cell{};
      }
    steps_.push_back({step, wall_seconds, loss, std::move(cells), std::move(spans_)});
    spans_.clear();
  }
  struct StepRecord { long step; double wall; double loss; std::map<Key, Cell> cells; std::vector<Span> spans; };
  const std::vector<StepRecord>& steps() const { return steps_; }

  // RAII timer: adds the elapsed time to (phase, op, name) when it goes out of scope (and keeps
  // its span when spans are on: the span's seconds are the very number added to the cell).
  class Scope {
   public:
    Scope(Trace* t, const char* phase, const char* op, const char* name)
        : t_(t), phase_(phase), op_(op), name_(name), start_(Clock::now()) {}
    ~Scope() {
      if (!t_) return;
      const double s = std::chrono::duration<double>(Clock::now() - start_).count();
      t_->add(phase_, op_, name_, s);
      if (t_->spans_on_) t_->spans_.push_back({phase_, op_, name_, t_->since_origin(start_), s});
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
   private:
    Trace* t_;
    const char *phase_, *op_, *name_;
    Clock::time_point start_;
  };
  // A pipeline pass's span (no cell: its steps have their own); nothing unless spans are on.
  class PassScope {
   public:
    PassScope(Trace* t, bool forward, std::int64_t micro, std::int64_t chunk)
        : t_(t && t->spans_on_ ? t : nullptr), forward_(forward), micro_(micro), chunk_(chunk), start_(Clock::now()) {}
    ~PassScope() {
      if (!t_) return;
      const double s = std::chrono::duration<double>(Clock::now() - start_).count();
      t_->spans_.push_back({forward_ ? "forward" : "backward", nullptr, "", t_->since_origin(start_), s, micro_, chunk_});
    }
    PassScope(const PassScope&) = delete;
    PassScope& operator=(const PassScope&) = delete;
   private:
    Trace* t_;
    bool forward_;
    std::int64_t micro_, chunk_;
    Clock::time_point start_;
  };

 private:
  double since_origin(Clock::time_point t) const { return std::chrono::duration<double>(t - origin_).count(); }
  // The cell of (phase, op, name). Callers pass the step vocabulary's constants, so the pointers
  // find a cell without building the three strings of its key: a decode step of a small model
  // times ~60 kernels of a few microseconds, and building keys and map nodes for each cost
  // 0.3-0.4 us, a fifth of the step. Cells are never erased (end_step zeroes them), so the
  // pointers stay valid.
  Cell& cell(const char* phase, const char* op, const char* name) {
    const auto ptrs = std::make_tuple(phase, op, name);
    if (auto it = by_pointer_.find(ptrs); it != by_pointer_.end()) return *it->second;
    Cell& c = current_[Key{phase, op, name}];
    by_pointer_.emplace(ptrs, &c);
    return c;
  }
  std::map<Key, Cell> current_;
  std::map<std::tuple<const char*, const char*, const char*>, Cell*> by_pointer_;
  std::vector<Span> spans_;
  bool spans_on_ = false;
  Clock::time_point origin_{};
  std::vector<StepRecord> steps_;
};

}  // namespace scanshard
