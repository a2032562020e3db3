// measure/probe.hpp — timing helpers shared by `calibrate` and `validate`, and the machine-speed probe.
//
// The probe answers "is this machine as fast now as when it was calibrated?". On a shared VM the
// same binary's step time drifts by 20–30 % over minutes (CPU steal, frequency, neighbours) with
// no code change; `validate` compares against a cluster file measured earlier, so it runs the
// probe before every plan and reports the ratio to the probe `calibrate` recorded (measurements:
// probe_seconds: the median of the probes it ran before each pass over its kernel plans, so the
// reference is the machine of the minutes the efficiencies were measured in). The probe is the two things training steps spend their time on here: one
// OpenBLAS sgemm of 256³ (in cache, compute-bound) and a STREAM triad over 3 MiB (cache-to-core
// streaming), one thread, timed like a training step is: the median of ~20 ms blocks.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace scanshard {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds of f() per call after one warm-up call: at least min_reps calls, more until `budget`
// seconds have been spent.
template <class F>
std::vector<double> call_seconds(F&& f, double budget, int min_reps, int max_reps) {
  f();
  std::vector<double> t;
  double total = 0;
  while (static_cast<int>(t.size()) < min_reps || (total < budget && static_cast<int>(t.size()) < max_reps)) {
    const double t0 = now_seconds();
    f();
    const double dt = now_seconds() - t0;
    t.push_back(dt);
    total += dt;
  }
  return t;
}

// The fastest call: other processes only ever slow a call down.
template <class F>
double best_seconds(F&& f, double budget, int min_reps = 3, int max_reps = 100000) {
  const auto t = call_seconds(f, budget, min_reps, max_reps);
  return *std::min_element(t.begin(), t.end());
}

// Seconds of one probe (sgemm 256³ + triad over 3 MiB, ~0.4 ms): the median over `blocks`
// blocks of `calls` back-to-back probes of each block's mean (~0.1 s in all).
double machine_probe_seconds(int blocks = 5, int calls = 50);

// The memory-bound counterpart (validate's memory drift): seconds of one STREAM triad pass over
// three arrays of 32 MiB (96 MiB: beyond this VM's 32 MiB L3, so DRAM and the L3 the other ranks
// and processes share), the median over `blocks` blocks of `passes` passes (~0.1 s). The in-cache
// probe above does not see the memory bus: decode's weight streaming and its out-of-L2 attention
// drifted ±20 % within a minute while it read the same (docs/inference-validate-2026-12-07.md).
// Every rank calls it at once, as the plans run.
double memory_probe_seconds(int blocks = 5, int passes = 2);

}  // namespace scanshard
