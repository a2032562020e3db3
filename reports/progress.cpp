// reports/progress.cpp — see progress.hpp.
#include "reports/progress.hpp"

#include <cmath>
#include <cstdio>

namespace scanshard {

double eta_seconds(double elapsed, double done, double total) {
  if (!(done > 0) || !std::isfinite(elapsed) || elapsed < 0 || !std::isfinite(total)) return std::nan("");
  if (done >= total) return 0;
  return elapsed * (total - done) / done;
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long long whole = std::llround(s);
  char buf[48];
  if (whole < 60) std::snprintf(buf, sizeof buf, "%lld s", whole);
  else if (whole < 3600) std::snprintf(buf, sizeof buf, "%lld min %02lld s", whole / 60, whole % 60);
  else {
    const long long minutes = std::llround(s / 60);  // hours and minutes, the seconds rounded away
    std::snprintf(buf, sizeof buf, "%lld h %02lld min", minutes / 60, minutes % 60);
  }
  return buf;
}

namespace {
// ", 12 s elapsed, about 3 min 05 s left"
std::string time_part(double done, double total, double elapsed) {
  const double left = eta_seconds(elapsed, done, total);
  return ", " + format_duration(elapsed) + " elapsed, " +
         (std::isnan(left) ? std::string("time left unknown") : "about " + format_duration(left) + " left");
}
}  // namespace

std::string progress_line(std::string_view what, double done, double total, double elapsed) {
  char head[64];
  std::snprintf(head, sizeof head, " %.0f/%.0f (%.0f %%)", done, total, total > 0 ? 100 * done / total : 0.0);
  return std::string(what) + head + time_part(done, total, elapsed);
}

std::string fraction_line(std::string_view what, double fraction, double elapsed) {
  char head[32];
  std::snprintf(head, sizeof head, " %.0f %%", 100 * fraction);
  return std::string(what) + head + time_part(fraction, 1, elapsed);
}

bool ProgressPacer::due(double now) {
  if (now < next_) return false;
  next_ = now + every_;
  return true;
}

}  // namespace scanshard
