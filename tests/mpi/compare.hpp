// tests/mpi/compare.hpp — how the MPI equality tests compare a distributed run with the
// single-process reference: every parameter (or gradient) at relative tolerance at the scale of
// its tensor, naming the tensors that differ; losses at relative tolerance. Shared by
// test_train.cpp and test_plan_property.cpp. Not for: running either side (train/runner.hpp).
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "program/model.hpp"
#include "program/param_layout.hpp"

namespace scanshard {

// Every parameter equal to relative `tolerance` (1e-5) at the scale of its tensor; names the
// tensors that differ. Returns the worst relative difference.
inline double compare_params(const ModelSpec& m, const std::vector<float>& dist, const std::vector<float>& ref,
                            const std::string& label, double tolerance = 1e-5, double scale_floor = 1e-6) {
  REQUIRE(dist.size() == ref.size());
  size_t bad = 0, worst = 0;
  double worst_rel = 0;
  const Layout lay(m);
  std::string where;  // tensors holding differing parameters
  // Relative 1e-5 at the scale of each tensor (its largest reference entry): fp32 sums in another
  // order differ by rounding relative to the terms summed, not to a result that cancels to ~0.
  for (size_t ti = 0; ti < lay.tensors.size(); ++ti) {
    size_t bad_here = 0;
    double scale = scale_floor;
    for (std::int64_t j = 0; j < lay.tensors[ti].count(); ++j)
      scale = std::max(scale, std::abs(double(ref[static_cast<size_t>(lay.offset[ti] + j)])));
    for (std::int64_t j = 0; j < lay.tensors[ti].count(); ++j) {
      const size_t i = static_cast<size_t>(lay.offset[ti] + j);
      const double rel = std::abs(double(dist[i]) - double(ref[i])) / scale;
      if (rel > tolerance) ++bad_here;
      if (rel > worst_rel) { worst_rel = rel; worst = i; }
    }
    if (bad_here) where += " " + lay.tensors[ti].block + "/" + lay.tensors[ti].name + ":" + std::to_string(bad_here);
    bad += bad_here;
  }
  INFO(label << ": " << bad << " of " << ref.size()
            << " parameters differ; worst (relative to its tensor's scale) " << worst_rel << " at " << worst << " (" << dist[worst]
            << " vs " << ref[worst] << ") in" << where);
  CHECK(bad == 0);
  return worst_rel;
}

inline bool close(double a, double b, double rel) { return std::abs(a - b) <= rel * std::max({std::abs(a), std::abs(b), 1e-3}); }

}  // namespace scanshard
