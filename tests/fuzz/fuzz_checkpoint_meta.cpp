// tests/fuzz/fuzz_checkpoint_meta.cpp — libFuzzer target: the checkpoint *metadata* as `train
// --resume` reads and checks it. fuzz_checkpoint feeds whole files, which the integrity check
// (CRC-32) refuses before HDF5 parses them, so the /meta reader and the dataset type and shape
// checks behind it are almost never reached there. Here the input is decoded (FuzzedDataProvider)
// into edits of a valid checkpoint of a micro Hawk model — each /meta attribute kept, deleted or
// replaced by an integer, unsigned, float or string value, one tensor retyped, reshaped or
// removed — which is then re-sealed and read with read_checkpoint + check_resume against a plan
// (global_batch 2, seq_len 16) and a --steps value from the input. Every outcome must be a
// ConfigError, or a resume point that keeps resume.hpp's promises (else abort). Seed:
// tests/fuzz/corpus/checkpoint_meta/unedited (empty: the unedited checkpoint).
#include <filesystem>

#include <fuzzer/FuzzedDataProvider.h>

#include "fuzz_common.hpp"
#include "micro_checkpoint.hpp"
#include "tests/common/checkpoint_edit.hpp"
#include "train/resume.hpp"

using namespace scanshard;

namespace {

using fuzz::Buffers;

const ModelSpec& micro() {
  static const ModelSpec m = fuzz::micro_model();
  return m;
}
const Plan& plan() {
  static const Plan p = parse_plan(parse_yaml("mesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n", "plan.yaml"), "plan.yaml");
  return p;
}

// The unedited checkpoint: step 3 of micro under plan(), written once per process.
const std::string& base_file() {
  static const std::string path = [] {
    const std::string p = fuzz::scratch_path(".h5") + ".base";  // scratch_path: one name per process
    const Layout lay(micro());
    const Buffers b(lay);
    train::CheckpointMeta meta;
    meta.model_name = micro().name;
    meta.model_yaml = train::model_summary(micro());
    meta.plan_text = plan_to_yaml(plan());
    meta.step = meta.data_cursor = 3;
    meta.seed = 7;
    train::write_checkpoint(static_cast<const mpi::Comm*>(nullptr), p, lay, b.slabs, b.cptr(0), b.cptr(1), b.cptr(2), meta);
    return p;
  }();
  return path;
}

void edit_attribute(FuzzedDataProvider& in, const std::string& file, const std::string& name) {
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: return;  // kept
    case 1: return testing::delete_meta(file, name);
    case 2: return testing::set_meta_int(file, name, in.ConsumeIntegral<std::int64_t>());
    case 3: return testing::set_meta_uint(file, name, in.ConsumeIntegral<std::uint64_t>());
    case 4: return testing::set_meta_float(file, name, in.ConsumeFloatingPoint<double>());
    default: return testing::set_meta_string(file, name, in.ConsumeRandomLengthString(256));
  }
}

void edit_tensor(FuzzedDataProvider& in, const std::string& file) {
  const Layout lay(micro());
  const char* sections[3] = {"/params/", "/optim/adam_m/", "/optim/adam_v/"};
  const auto& t = lay.tensors[in.ConsumeIntegralInRange<std::size_t>(0, lay.tensors.size() - 1)];
  const std::string path = sections[in.ConsumeIntegralInRange<int>(0, 2)] + t.block + "/" + t.name;
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: return;
    case 1: return testing::retype_dataset(file, path, static_cast<testing::Dtype>(in.ConsumeIntegralInRange<int>(0, 3)));
    case 2: return testing::reshape_dataset(file, path, {in.ConsumeIntegralInRange<std::uint64_t>(0, 40),
                                                         in.ConsumeIntegralInRange<std::uint64_t>(1, 40)});
    default: return testing::delete_object(file, path);
  }
}

// A resume point check_resume accepted must keep its promises.
void check_accepted(const train::CheckpointMeta& meta, const train::ResumePoint& at, std::int64_t steps) {
  const bool ok = meta.model_name == micro().name && at.step == meta.step && at.step >= 0 && meta.data_cursor == at.step &&
                  steps >= 0 && at.step <= train::kMaxSteps - steps && at.seed <= 0xffffffffull &&
                  meta.version == train::kCheckpointFormatVersion;
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string& file = fuzz::scratch_path(".h5");
  std::filesystem::copy_file(base_file(), file, std::filesystem::copy_options::overwrite_existing);
  try {  // the edits are the test's own HDF5 calls: a name HDF5 refuses is no finding
    for (const char* name : {"format_version", "model_name", "model_yaml", "plan", "step", "seed", "data_cursor"})
      edit_attribute(in, file, name);
    edit_tensor(in, file);
    testing::reseal(file);
  } catch (const std::runtime_error&) {
    return 0;
  }
  const std::int64_t steps = in.ConsumeIntegral<std::int64_t>();
  static const Layout lay(micro());
  static Buffers b(lay);
  fuzz::expect_input_errors_only([&] {
    const train::CheckpointMeta meta =
        train::read_checkpoint(static_cast<const mpi::Comm*>(nullptr), file, lay, b.slabs, b.ptr[0], b.ptr[1], b.ptr[2]);
    train::check_steps(0, steps);
    check_accepted(meta, train::check_resume(meta, file, micro(), plan(), steps), steps);
  });
  return 0;
}
