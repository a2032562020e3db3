// tests/fuzz/fuzz_checkpoint.cpp — libFuzzer target: a file through read_checkpoint with comm =
// nullptr (serial HDF5, no MPI), as `train --resume FILE` reads it, for a micro Hawk model whose
// checkpoint is small enough for a seed corpus (tests/fuzz/corpus/checkpoint/). Every damaged,
// foreign or non-HDF5 file must be a ConfigError. libhdf5 itself is not instrumented: only crashes
// inside it show, not its silent out-of-bounds reads.
//
// With SCANSHARD_FUZZ_WRITE_SEEDS=DIR set, it writes the seed files instead (see scripts/fuzz).
#include <filesystem>

#include "fuzz_common.hpp"
#include "micro_checkpoint.hpp"

using namespace scanshard;

namespace {

using fuzz::Buffers;

const char* kOther =  // same tensor names, other shapes
    "name: other\nfamily: hawk\nwidth: 8\ndepth: 1\nvocab: 24\nrecurrent_width: 8\ngate_blocks: 2\n"
    "conv_width: 2\nmlp_width: 16\n";

void write_seed(const std::string& path, const char* yaml, std::int64_t step) {
  const ModelSpec m = fuzz::micro_model(yaml);
  const Layout lay(m);
  Buffers b(lay);
  const std::vector<float> init = init_params(lay, 7);
  for (std::size_t i = 0; i < lay.tensors.size(); ++i)
    std::copy_n(init.data() + lay.offset[i], lay.tensors[i].count(), b.store[0][i].data());
  train::CheckpointMeta meta;
  meta.model_name = m.name;
  meta.model_yaml = yaml;
  meta.plan_text = "mesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
  meta.step = step;
  meta.seed = 7;
  meta.data_cursor = step;
  train::write_checkpoint(static_cast<const mpi::Comm*>(nullptr), path, lay, b.slabs, b.cptr(0), b.cptr(1), b.cptr(2), meta);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("SCANSHARD_FUZZ_WRITE_SEEDS")) {
    std::filesystem::create_directories(dir);
    write_seed(std::string(dir) + "/micro-step-3.h5", fuzz::kMicroModel, 3);
    write_seed(std::string(dir) + "/other-model.h5", kOther, 1);
    std::printf("wrote seeds to %s\n", dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const ModelSpec m = fuzz::micro_model();
  static const Layout lay(m);
  static Buffers b(lay);
  const std::string& path = fuzz::write_input(data, size, ".h5");
  fuzz::expect_input_errors_only([&] {
    const train::CheckpointMeta meta =
        train::read_checkpoint(static_cast<const mpi::Comm*>(nullptr), path, lay, b.slabs, b.ptr[0], b.ptr[1], b.ptr[2]);
    if (meta.version != train::kCheckpointFormatVersion) std::abort();
  });
  return 0;
}
