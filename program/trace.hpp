// program/trace.hpp — measured seconds per step of the runner, keyed by (phase, op, name) in the
// StepProgram's vocabulary (program/lower.hpp: op "linear", "rglru.scan", "attention.local",
// "all_reduce", ...; name the tensor, "mlp.w1", "rec.scan", "grads").
//
// For: timing kernel and MPI calls with std::chrono (Scope is an RAII timer) and writing the
// per-step table as JSON. Not for: estimates (sim/), deciding what runs (lower()).
// Lives in program/ (header-only, no MPI) so that reports/ can read a runner's trace without
// depending on the MPI executor (train/ records it, reports/ compares it).
#pragma once
#include <chrono>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace scanshard {

class Trace {
 public:
  using Key = std::tuple<std::string, std::string, std::string>;  // phase, op, name
  // bytes: the payload a communication step moved (train/wire.hpp trace_step_bytes; 0 for compute)
  struct Cell { double seconds = 0; long calls = 0; double bytes = 0; };

  void add(const char* phase, const char* op, const char* name, double s) {
    auto& c = current_[Key{phase, op, name}];
    c.seconds += s;
    ++c.calls;
  }
  void add_bytes(const char* phase, const char* op, const char* name, double bytes) {
    current_[Key{phase, op, name}].bytes += bytes;
  }
  // Closes the current step (step index, wall seconds) and starts a new one.
  void end_step(long step, double wall_seconds, double loss) {
    steps_.push_back({step, wall_seconds, loss, std::move(current_)});
    current_.clear();
  }
  struct StepRecord { long step; double wall; double loss; std::map<Key, Cell> cells; };
  const std::vector<StepRecord>& steps() const { return steps_; }

  // RAII timer: adds the elapsed time to (phase, op, name) when it goes out of scope.
  class Scope {
   public:
    Scope(Trace* t, const char* phase, const char* op, const char* name)
        : t_(t), phase_(phase), op_(op), name_(name), start_(std::chrono::steady_clock::now()) {}
    ~Scope() {
      if (t_) t_->add(phase_, op_, name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
   private:
    Trace* t_;
    const char *phase_, *op_, *name_;
    std::chrono::steady_clock::time_point start_;
  };

 private:
  std::map<Key, Cell> current_;
  std::vector<StepRecord> steps_;
};

}  // namespace scanshard
