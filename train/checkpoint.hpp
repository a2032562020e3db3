// train/checkpoint.hpp — plan-independent training checkpoints in one parallel-HDF5 file (DESIGN §6).
//
// For: saving and resuming the runner's state (parameters, AdamW moments, step, seed, data cursor)
// so that a run may resume under a different plan and rank count. Each rank writes / reads its
// hyperslab of every full logical tensor with collective MPI-IO; the caller decides the sharding.
// Not for: deciding who holds what (the runner), or the trace (trace.hpp).
//
// File layout (h5dump -H reads it):
//   /                         attribute description (one sentence explaining the layout)
//   /params/<block>/<name>    float32, the full logical parameter tensor, e.g. /params/layer.0/mlp.w1
//   /optim/adam_m/<block>/<name>, /optim/adam_v/<block>/<name>   AdamW moments, same shapes
//   /meta                     attributes model_name, model_yaml, plan, step, seed, data_cursor, format_version,
//                             and optimizer (optional: absent in files written before it was recorded)
//
// Atomicity: the file is written as `<path>.tmp-<pid of rank 0>`, closed collectively, fsynced, and
// renamed to `path` by rank 0 (then the directory is fsynced). An existing checkpoint at `path` is
// replaced only by that rename; on failure the temporary file is removed and nothing appears under
// `path`.
//
// Errors: input problems (unwritable or missing directory, missing / non-regular / non-HDF5 /
// truncated file, a file of another model, a tensor stored other than as little-endian float32 —
// float16 or float64 are refused, never converted — an unknown format_version) throw ConfigError
// naming the file or directory and the reason — on every rank of the communicator, so no rank
// hangs. The /meta values are returned as read: train/resume.hpp checks them against a run. A bad call
// (slab out of range, wrong number of buffers) throws std::invalid_argument on every rank.
// A write that runs out of room (full disk, quota, ulimit -f) is a ConfigError naming the
// checkpoint and the system's reason ("No space left on device"); other write failures a
// runtime_error naming it. Rank 0 reserves the checkpoint's blocks before the write (fallocate),
// because OpenMPI's collective writer for 3 or more ranks (fcoll vulcan) prints a failed pwrite and
// reports success, leaving the failure to HDF5's metadata flush on rank 0 while the other ranks wait.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "program/param_layout.hpp"
#include "train/comm.hpp"

namespace scanshard::train {

// This rank's part of one logical tensor.
struct Slab {
  std::vector<std::int64_t> offset, count;  // hyperslab in the full logical shape (same rank as shape)
  bool write = true;  // false: this rank holds a replica another rank writes (it selects nothing on write)
};

// The slab covering all of tensor `t` (a rank holding a full replica).
Slab whole_tensor(const ParamTensor& t, bool write = true);

struct ShardLayout;  // train/executor.hpp
// The slab of every tensor this rank holds under `sl` (its tensor-parallel shard on the split
// dimension, the whole tensor otherwise), in Layout order, every one with write = true.
std::vector<Slab> shard_slabs(const ShardLayout& sl);

struct CheckpointMeta {
  std::string model_yaml;  // the model's YAML text (whatever the caller wants to record)
  std::string model_name;
  std::string plan_text;   // the plan the run used (informational: resume may use another plan)
  std::int64_t step = 0;
  std::uint64_t seed = 0;
  std::int64_t data_cursor = 0;
  std::string optimizer_yaml;  // train/optimizer.hpp's to_yaml(); "" in files written before it was recorded
  std::string data_yaml;       // train/tokens.hpp DataIdentity::to_yaml(); "" in files written before it was recorded
  int version = 2;         // format_version; read_checkpoint only accepts kCheckpointFormatVersion
};

// 2: the file starts with a 512-byte HDF5 user block holding scanshard's integrity header (a CRC-32
// and the size of the rest of the file), checked before HDF5 parses anything: a damaged or
// truncated file is refused by the check, never handed to HDF5's parser (which can crash on one).
inline constexpr int kCheckpointFormatVersion = 2;

// Recomputes the integrity header of a checkpoint file in place (the writer does this before the
// rename; tests call it after editing a checkpoint on purpose). Not collective.
void seal_checkpoint(const std::string& path);

// The partial checkpoints (<name>.h5.tmp-<pid>) a killed writer left in `dir`: removed, and their
// names returned. Only names of that exact form whose process is not alive on this host are
// touched (a writer still running keeps its file); everything else in the directory is left alone.
// Not collective: rank 0 calls it before training.
std::vector<std::string> remove_stale_partials(const std::string& dir);

// Collective over comm. params / m1 / m2: per tensor of `lay`, a pointer to this rank's slab data,
// contiguous and row-major over slab.count (may be null where the slab is empty or write == false).
// `meta` is taken from rank 0. comm == nullptr: this process alone (MPI_COMM_SELF when MPI is
// initialised, otherwise HDF5's serial driver and no MPI call at all).
void write_checkpoint(const mpi::Comm& comm, const std::string& path, const Layout& lay, const std::vector<Slab>& slabs,
                      const std::vector<const float*>& params, const std::vector<const float*>& m1,
                      const std::vector<const float*>& m2, const CheckpointMeta& meta);
void write_checkpoint(const mpi::Comm* comm, const std::string& path, const Layout& lay, const std::vector<Slab>& slabs,
                      const std::vector<const float*>& params, const std::vector<const float*>& m1,
                      const std::vector<const float*>& m2, const CheckpointMeta& meta);

// Collective. Reads every rank's slabs (the write flag is ignored) into the given buffers after
// checking that the file's tensor names and shapes are exactly those of `lay`; returns the meta.
CheckpointMeta read_checkpoint(const mpi::Comm& comm, const std::string& path, const Layout& lay,
                               const std::vector<Slab>& slabs, const std::vector<float*>& params,
                               const std::vector<float*>& m1, const std::vector<float*>& m2);
CheckpointMeta read_checkpoint(const mpi::Comm* comm, const std::string& path, const Layout& lay,
                               const std::vector<Slab>& slabs, const std::vector<float*>& params,
                               const std::vector<float*>& m1, const std::vector<float*>& m2);

// Collective. Only the /meta of `path` (integrity header and format checked as read_checkpoint
// does): which model a checkpoint holds, before its layout is known (`scanshard generate`).
CheckpointMeta read_checkpoint_meta(const mpi::Comm* comm, const std::string& path);

}  // namespace scanshard::train
