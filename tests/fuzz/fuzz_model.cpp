// tests/fuzz/fuzz_model.cpp — libFuzzer target: a model YAML file through load_model (what
// `scanshard models FILE` and every --model FILE do), then what the CLI computes from it:
// parameter shapes and counts, the flat layout, tensor-parallel split dims, per-layer kinds.
#include "fuzz_common.hpp"
#include "program/param_layout.hpp"
#include "program/presets.hpp"

using namespace scanshard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = fuzz::write_input(data, size, ".yaml");
  fuzz::expect_input_errors_only([&] {
    const ModelSpec m = load_model(path);
    const ParamCounts c = count_parameters(m);
    if (c.total <= 0 || c.non_embedding < 0) std::abort();
    if (c.total < (std::int64_t{1} << 24)) {  // a tiny model: build the runner's layout too
      const Layout lay(m);
      for (const auto& t : lay.tensors)
        for (std::int64_t tp : {1, 2, 4}) (void)tensor_split_dim(m, t, tp);
    }
    for (std::int64_t l = 0; l < m.depth && l < 64; ++l) (void)temporal_kind(m, l);
  });
  return 0;
}
