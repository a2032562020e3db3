// tests/fuzz/fuzz_plan.cpp — libFuzzer target: a plan YAML file through load_plan (what
// `simulate --plan` and `train --plan` do), the YAML it writes back (plan_to_yaml must read back
// to the same plan), and the legality rules against the model and cluster it names (presets, or
// griffin-tiny on cpu-local when it names none or an unknown one).
#include "fuzz_common.hpp"
#include "program/presets.hpp"

using namespace scanshard;

namespace {
const ModelSpec& model_for(const std::string& name) {
  static const std::vector<ModelSpec> models = all_model_presets();
  for (const auto& m : models)
    if (m.name == name) return m;
  static const ModelSpec tiny = load_model("griffin-tiny");
  return tiny;
}
std::int64_t devices_for(const std::string& name) {
  static const std::vector<ClusterSpec> clusters = all_cluster_presets();
  for (const auto& c : clusters)
    if (c.name == name) return c.devices();
  return 0;  // no device-count rule
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = fuzz::write_input(data, size, ".yaml");
  fuzz::expect_input_errors_only([&] {
    const Plan p = load_plan(path);
    const std::string again = plan_to_yaml(p);
    const Plan q = parse_plan(parse_yaml(again, "round-trip"), "round-trip");
    if (plan_to_yaml(q) != again) std::abort();
    const ModelSpec& m = model_for(p.model);
    (void)plan_violation(m, p, devices_for(p.cluster));
    (void)plan_violation(m, p, 0);
    check_plan(m, p, 0);
  });
  return 0;
}
