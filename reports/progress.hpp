// reports/progress.hpp — progress lines with an estimate of the time left, for long commands:
// validate (per plan run), calibrate (per phase), the plan search (on a terminal a rewritten line,
// otherwise a line now and then so that logs of batch jobs show it too).
//
// Pure functions of numbers (elapsed seconds, work done and total); the callers read the clock.
// The estimate assumes the work left goes at the pace of the work done (work measured in the
// caller's units: plan runs, the weight of a phase, the search's fraction).
// For: progress output. Not for: timing measurements (measure/, program/trace.hpp).
#pragma once
#include <string>
#include <string_view>

namespace scanshard {

// Seconds left when `done` of `total` units took `elapsed` seconds: elapsed · (total − done) / done.
// NaN (unknown) before any unit is done or when elapsed is not a time; 0 once done ≥ total.
[[nodiscard]] double eta_seconds(double elapsed_seconds, double done, double total);

// A duration for people, rounded to what matters: "0 s", "42 s", "3 min 05 s", "2 h 07 min";
// "?" for NaN or a negative or infinite value.
[[nodiscard]] std::string format_duration(double seconds);

// "<what> 3/51 (6 %), 12 s elapsed, about 3 min 05 s left" (counts shown as whole numbers);
// "... , time left unknown" while nothing is done.
[[nodiscard]] std::string progress_line(std::string_view what, double done, double total, double elapsed_seconds);
// The same for work known as a fraction done (0..1): "<what> 40 %, 2 s elapsed, about 3 s left".
[[nodiscard]] std::string fraction_line(std::string_view what, double fraction, double elapsed_seconds);

// When to print: the first time at or after `first_seconds`, then at most every `every_seconds`.
class ProgressPacer {
 public:
  ProgressPacer(double first_seconds, double every_seconds) : next_(first_seconds), every_(every_seconds) {}
  // True when a line is due at `now_seconds` (since the work started); then the next is `every` later.
  [[nodiscard]] bool due(double now_seconds);

 private:
  double next_, every_;
};

}  // namespace scanshard
