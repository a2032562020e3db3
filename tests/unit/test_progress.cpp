// tests/unit/test_progress.cpp — the progress lines' time-left estimate and formatting
// (reports/progress.hpp) as pure functions: no clock, no sleeping; expected values worked by hand.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "reports/progress.hpp"

using namespace scanshard;

TEST_CASE("progress: the time left extrapolates the pace so far", "[progress]") {
  // 3 of 12 units in 30 s: 10 s a unit, 9 units left -> 90 s
  CHECK(eta_seconds(30, 3, 12) == Approx(90));
  // a fraction: 40 % in 2 s -> 60 % left at 5 s per 100 % -> 3 s
  CHECK(eta_seconds(2, 0.4, 1) == Approx(3));
  CHECK(eta_seconds(30, 12, 12) == 0);       // done
  CHECK(eta_seconds(30, 13, 12) == 0);       // more than planned: never negative
  CHECK(std::isnan(eta_seconds(30, 0, 12)));  // nothing done yet: unknown
  CHECK(std::isnan(eta_seconds(std::nan(""), 3, 12)));
  CHECK(std::isnan(eta_seconds(-1, 3, 12)));
  CHECK(std::isnan(eta_seconds(30, 3, std::numeric_limits<double>::infinity())));
}

TEST_CASE("progress: durations read as seconds, minutes and seconds, or hours and minutes", "[progress]") {
  CHECK(format_duration(0) == "0 s");
  CHECK(format_duration(0.4) == "0 s");
  CHECK(format_duration(42.4) == "42 s");
  CHECK(format_duration(59.6) == "1 min 00 s");  // rounds to 60 s first
  CHECK(format_duration(185) == "3 min 05 s");
  CHECK(format_duration(3599.6) == "1 h 00 min");
  CHECK(format_duration(2 * 3600 + 7 * 60 + 20) == "2 h 07 min");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(std::nan("")) == "?");
  CHECK(format_duration(std::numeric_limits<double>::infinity()) == "?");
}

TEST_CASE("progress: a line says how far, how long so far and how long left", "[progress]") {
  CHECK(progress_line("run", 3, 51, 12) == "run 3/51 (6 %), 12 s elapsed, about 3 min 12 s left");  // 4 s a run × 48
  CHECK(progress_line("run", 0, 51, 1) == "run 0/51 (0 %), 1 s elapsed, time left unknown");
  CHECK(fraction_line("searching", 0.4, 2) == "searching 40 %, 2 s elapsed, about 3 s left");
}

TEST_CASE("progress: the pacer prints first at its start, then at most once per interval", "[progress]") {
  ProgressPacer log(10, 30);  // not a terminal: after 10 s, then every 30 s
  CHECK_FALSE(log.due(0.5));
  CHECK_FALSE(log.due(9.9));
  CHECK(log.due(10.0));
  CHECK_FALSE(log.due(39.9));
  CHECK(log.due(41.0));
  CHECK_FALSE(log.due(70.9));  // the next is 30 s after the last line (41 s), not after 40 s
  CHECK(log.due(71.0));
  ProgressPacer term(0, 0);  // a terminal: every report
  CHECK(term.due(0));
  CHECK(term.due(0));
}
