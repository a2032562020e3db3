// train/runner.hpp — the training loop: one rank's StepProgram (program/lower.hpp) executed by
// the Executor (executor.hpp) in the plan's dtypes: fp32, or mixed precision (`dtypes: params:
// bf16`, the plan default) with an fp32 master copy for AdamW, a bf16 working copy the kernels
// read, the residual stream stored in bf16 and bf16 messages (train/wire.hpp).
//
// For: `scanshard train` and the MPI tests. Each rank lowers the plan for itself, keeps its
// tensor-parallel shard of every parameter (cut from the same full tensors for every plan), feeds
// its replica's sequences (data × fsdp) and its sequence shard's tokens in micro-batches, sums the
// micro-batch gradients in double, then walks the program's step end: gradient all-reduce /
// reduce-scatter (ZeRO 1–3: AdamW on this rank's part, then the parameter all-gather — per
// block before use under ZeRO-3). With plan.overlap and no ZeRO reduce-scatter, the gradient
// all-reduce runs in buckets of one layer during the step's last backward pass (MPI_Iallreduce
// over the data × fsdp × sequence group, started as the executor leaves each layer); the step
// end waits for them and reduces the rest. Checkpoints (checkpoint.hpp) hold full logical tensors, so a run
// resumes under any plan; the data cursor is the step index.
// Pipeline stages run the micro-batches in the plan's schedule (GPipe, 1F1B, or interleaved
// 1F1B with virtual_stages model chunks per stage: program/lower.hpp pipeline_schedule); each
// stage owns (updates, checkpoints) its chunks' layers' tensors, the first and last keep a tied
// table equal.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/adamw.hpp"
#include "program/model.hpp"
#include "program/plan.hpp"
#include "train/comm.hpp"
#include "train/optimizer.hpp"
#include "train/tokens.hpp"
#include "program/trace.hpp"

namespace scanshard::train {

// What the runner does when a step's loss or gradient norm is NaN or infinite (every rank sees
// the same global values, so every rank decides alike): stop with a NumericalError, or skip the
// optimizer update of that step (parameters and AdamW moments unchanged) and go on.
enum class OnNan { stop, skip };
inline constexpr Names<OnNan, 2> kOnNanNames{{{"stop", OnNan::stop}, {"skip", OnNan::skip}}};
OnNan parse_on_nan(const std::string& s);  // ConfigError naming --on-nan

// A non-finite loss or gradient: the 1-based step and the first bad gradient tensor (and the first
// non-finite parameter, if any) in parameter_tensors() order, as "block/name".
class NumericalError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Options {
  std::int64_t steps = 10;             // steps to run in this invocation (after a resume: more steps)
  std::string checkpoint_dir;          // "": no checkpoints; else <dir>/step-<N>.h5 after the last step
  std::int64_t checkpoint_every = 0;   // > 0: also every this many steps
  // > 0: after each checkpoint keep only the newest this many step files (checkpoint_dir.hpp);
  // every checkpoint also updates <dir>/latest.
  std::int64_t keep_last = 0;
  std::string resume;                  // a checkpoint to start from (any plan, any rank count)
  unsigned seed = 1234;  // parameter initialisation and the dropout masks (on resume: the checkpoint's)
  kernels::AdamW adamw{};  // the same hyperparameters for every plan; weight decay on matrices only
  LrSchedule schedule{};   // lr at step s = adamw.lr × schedule.factor(s) (optimizer.hpp); constant by default
  // A resumed checkpoint records its optimizer (/meta optimizer): a different one is a ConfigError
  // naming the changed keys unless this is set.
  bool allow_optimizer_change = false;
  // A resumed checkpoint records its data (/meta data: path, size, CRC-32 of the token ids): other
  // content is a ConfigError naming what changed unless this is set.
  bool allow_data_change = false;
  // Keep every timed step's and pipeline pass's span in Result::trace (a timeline); the ranks
  // start their clocks together after a barrier.
  bool timeline = false;
  OnNan on_nan = OnNan::stop;
  // Called on every rank with a one-line notice (a skipped step); may be empty.
  std::function<void(const std::string&)> notice;
  // Fault injection for tests: called on every rank with the step index (0-based) and this rank's
  // gradient sums (double, the local flat layout) after the step's backward passes, before any
  // gradient reduction (the overlapped per-layer reduction is off then, and ZeRO-2/3's per-block
  // reduce-scatters wait for the step end). Empty in normal runs.
  std::function<void(std::int64_t, std::span<double>)> gradient_hook;
  // Tests: keep the first step's reduced mean gradient (Result::first_gradients).
  bool keep_first_gradients = false;
  // Asked on every rank once per step, before the step's update: true on any rank (SIGTERM or
  // SIGUSR1 arrive at one rank or at all) makes every rank stop after that step — agreed in the
  // step's loss all-reduce, so no extra collective — with a checkpoint when checkpoint_dir is set.
  // Empty: never.
  std::function<bool()> stop_requested;
};

struct Result {
  std::int64_t first_step = 0;       // 0, or the step a resumed run started from
  std::vector<double> losses;        // mean over the global batch, per step run
  std::vector<std::string> checkpoints;  // files written
  std::vector<std::string> pruned;       // step files --keep-last removed (rank 0; empty elsewhere)
  std::vector<double> tokens_per_s;  // global tokens / wall seconds, per step
  std::vector<float> params;         // full parameters after the last step, parameter_tensors() order
  // Options::keep_first_gradients: the first step's mean gradient over the global batch, reduced
  // across ranks, before clipping and AdamW; full logical tensors in parameter_tensors() order.
  std::vector<float> first_gradients;
  std::vector<std::int64_t> skipped_steps;
  std::int64_t stopped_after = 0;   // > 0: Options::stop_requested ended the run after this 1-based step
  std::int64_t overlapped_buckets = 0;  // gradient buckets reduced during backward (plan.overlap)  // 1-based steps whose update --on-nan skip dropped
  Trace trace;
};

// Throws PlanError when the runner cannot execute (model, plan) on `world_size` ranks: mesh size
// ≠ world size, or an illegal plan (check_plan, the planner's rules). Every legal plan runs.
void check_supported(const ModelSpec& m, const Plan& p, std::int64_t world_size);

// The bytes of a text or binary file as byte-level tokens (vocab 256). ConfigError when missing
// or shorter than `min_bytes`.
std::vector<std::uint8_t> load_bytes(const std::string& path, std::int64_t min_bytes);

// Reads a whole token file into memory (Tokens::open_file + check_vocab on one process).
std::vector<std::int32_t> load_tokens(const std::string& path, TokenFormat format, std::int64_t min_tokens,
                                      std::int64_t vocab);
// The corpus shipped with the repository (data/corpus.txt).
std::string default_corpus_path();

// Runs `o.steps` steps on `data` (every rank first checks its slice of the tokens against the
// vocabulary: a ConfigError on every rank). Each rank reads only its sequences' tokens; a data file
// that shrinks during the run stops every rank with a ConfigError before that step's update
// (Tokens::changed_message). comm == nullptr: one process and no MPI call at all (the plan's mesh must
// have one device) — the reference the tests compare against. `progress(step, loss, tokens_per_s)` is called on every
// rank after every step.
Result run(const ModelSpec& m, const Plan& p, const Tokens& data, const Options& o, const mpi::Comm* comm,
           const std::function<void(std::int64_t, double, double)>& progress = {});
// The same on tokens in memory.
Result run(const ModelSpec& m, const Plan& p, const std::vector<std::int32_t>& tokens, const Options& o,
           const mpi::Comm* comm, const std::function<void(std::int64_t, double, double)>& progress = {});
// The same on byte tokens (ids 0..255).
Result run(const ModelSpec& m, const Plan& p, const std::vector<std::uint8_t>& data, const Options& o,
           const mpi::Comm* comm, const std::function<void(std::int64_t, double, double)>& progress = {});

}  // namespace scanshard::train
