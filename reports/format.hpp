// reports/format.hpp — human-readable numbers and plain-text tables for terminal output.
// For: the CLI's tables and the HTML report's labels. Not for: machine-readable output (CSV/JSON keep full precision).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace scanshard {

// 2682862080 -> "2.683B", 355292672 -> "355.3M", 612352 -> "612.4K".
std::string format_count(std::int64_t n);
// 4.59e14, "FLOP/s" -> "459 TFLOP/s"; 9.5e10, "B" -> "95 GB" (decimal SI prefixes).
std::string format_si(double value, const std::string& unit);

// Durations: "1.234 s", "21.085 ms", "527.402 us".
std::string format_seconds(double seconds);

// Memory capacities in binary units: 3.4359738368e10 -> "32 GiB", 9.5e10 -> "88.5 GiB".
std::string format_bytes(double bytes);

class Table {
 public:
  explicit Table(std::vector<std::string> header, std::vector<bool> right_aligned = {});
  void add(std::vector<std::string> row);
  std::string str() const;

 private:
  std::vector<std::string> header_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace scanshard
