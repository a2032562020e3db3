// reports/sweep.cpp — see sweep.hpp.
#include "reports/sweep.hpp"

#include "program/yaml_reader.hpp"

namespace scanshard {

std::vector<SweepPoint> seq_len_sweep(const ModelSpec& m, const ClusterSpec& c, const Plan& base,
                                      const std::vector<std::int64_t>& lengths, double tokens_per_batch, const std::string& flag) {
  std::vector<SweepPoint> out;
  for (const std::int64_t T : lengths) {
    const Plan p = at_seq_len(base, T, tokens_per_batch);
    try {
      check_plan(m, p, c.devices());
    } catch (const PlanError& e) {
      throw ConfigError(flag + ": " + m.name + " at seq_len " + std::to_string(T) + " (batch " + std::to_string(p.global_batch) +
                        "): " + e.what());
    }
    out.push_back({T, p, simulate(m, p, c)});
  }
  return out;
}

}  // namespace scanshard
