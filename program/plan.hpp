// program/plan.hpp — the sharding Plan (DESIGN §2): mesh axes, ZeRO stage, batch and micro-batch,
// pipeline schedule, remat, scan algorithm, sequence-parallel carry scheme, dtypes, overlap.
//
// For: reading a plan from YAML or mesh flags, and the legality rules (check_plan) that say which
// rule failed. Not for: costs (sim/) or what a rank computes (lower.hpp).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "program/model.hpp"
#include "program/names.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard {

enum class Axis : std::uint8_t { data, fsdp, tensor, sequence, pipeline };
constexpr int kAxisCount = 5;
inline constexpr Names<Axis, kAxisCount> kAxisNames{{{"data", Axis::data},
                                                     {"fsdp", Axis::fsdp},
                                                     {"tensor", Axis::tensor},
                                                     {"sequence", Axis::sequence},
                                                     {"pipeline", Axis::pipeline}}};
const char* to_string(Axis a);

enum class Schedule : std::uint8_t { gpipe, one_f_one_b };
// none: keep every activation; selective: recompute only the attention core (scores, softmax,
// dropout, P·V — Korthikanti et al. 2022 §5); elementwise: keep GEMM and attention outputs,
// recompute elementwise ops, norms and scans; block: keep only each layer's input (full
// recompute).
enum class Remat : std::uint8_t { none, selective, block, elementwise };
// Tensor-parallel communication: allreduce (Megatron, Shoeybi et al. 2019) or rs_ag (Megatron
// sequence parallelism, Korthikanti et al. 2022: norm/dropout/residual regions sharded along the
// tokens; each all-reduce becomes a reduce-scatter and an all-gather).
enum class TensorComm : std::uint8_t { allreduce, rs_ag };
// Attention core: flash (blockwise, keeps no T×T scores, causal keys only) or materialized
// (scores, softmax and dropout written for the whole T×T square, as Megatron-LM 2021-22 did).
// The named blockwise kernels lower exactly as `flash` and differ only in price: their steps
// carry the kernel's name as their tag, and a chip file that has a measured rate for it
// (efficiency.attention_kernels) prices them with it; otherwise, and for plain `flash`, the
// attention class value applies. flash_v1: FlashAttention's CUDA kernels (Dao et al. 2022);
// flash_v2: FlashAttention-2 (Dao 2023); flash_triton: the Triton FlashAttention of
// flash_attn/flash_attn_triton.py (Tri Dao, 2022; llm-foundry's `attn_impl: triton`).
enum class AttentionKernel : std::uint8_t { flash, materialized, flash_v1, flash_v2, flash_triton };
// naive: every elementwise stage of the scan materialised in HBM (the unfused baseline);
// sequential: the fused linear scan keeping the state on chip; chunked: chunk-local scans plus a
// carry fix-up pass; associative: log-depth parallel scan (~2x FLOPs, more traffic).
enum class ScanAlgo : std::uint8_t { naive, sequential, chunked, associative };
enum class CarryScheme : std::uint8_t { ring, allgather };
enum class DType : std::uint8_t { fp32, bf16 };
// The element type gradients are summed in across ranks (plan `dtypes: grads:`): the parameters'
// dtype by default (what travels in Megatron-LM / ZeRO's reduction), or explicitly bf16, fp32 or
// fp64. The runner sums in fp64 when told so — a sum of a few fp32 terms in double is nearly
// always exact, so any split of the batch then reproduces the 1-rank run bit for bit, which the
// equality tests rely on — and in fp32 otherwise (it computes in fp32 throughout).
enum class GradDType : std::uint8_t { params, bf16, fp32, fp64 };
// When ZeRO-2/3 (zero_stage ≥ 2 over fsdp) reduce-scatters the gradients (plan `gradient_sync`):
// every_microbatch — each block's gradient at the end of its backward in every micro-batch
// (DeepSpeed ZeRO-2/3, PyTorch FSDP's default); last_microbatch — the unsharded gradient is
// accumulated over the micro-batches and reduce-scattered once per step, the parameters stay
// gathered through the step (PyTorch FSDP under its pipeline schedules:
// torch/distributed/pipelining/stage.py backward_maybe_with_nosync calls
// set_requires_gradient_sync(False) and set_reshard_after_backward(False) until the last
// backward; Llama 3, Dubey et al. 2024 §3.3.2). Memory and communication are then ZeRO-1's.
enum class GradientSync : std::uint8_t { every_microbatch, last_microbatch };
// How each micro-batch's weight gradients reach the step's gradient accumulator (plan
// `grad_accumulation`; docs/cost-model.md "Gradient accumulation"; the bytes per element:
// program/lower.hpp grad_accumulation_bytes):
// separate — scanshard's runner: the backward writes an fp32 gradient buffer, which is added into
//   the accumulator (fp32, fp64 when the gradients are) and cleared for the next micro-batch;
// hook — Megatron-LM's DDP hook (`param.main_grad.add_(param.grad.data); param.grad = None`): the
//   backward's .grad, in the parameters' dtype, is added into main_grad (the reduction buffer, in
//   the gradient dtype) and freed; main_grad is zeroed once per step;
// autograd — PyTorch's own accumulation into .grad (DeepSpeed's fp16 engine, FSDP's sharded
//   .grad): the first micro-batch's gradient becomes the accumulator, later ones are added into
//   it in the gradient dtype; nothing is zeroed (zero_grad(set_to_none=True));
// fused — Megatron-LM's gradient_accumulation_fusion: the weight-gradient GEMMs accumulate into
//   main_grad (C read and written, β = 1); the other parameters (norms, biases, embeddings) go
//   through the hook. Not with ZeRO-2/3 gradients reduce-scattered every micro-batch (the GEMM's
//   output must be reduce-scattered before it is added to a shard).
enum class GradAccumulation : std::uint8_t { separate, hook, autograd, fused };
// Each choice's YAML/flag names, one table per enum (program/names.hpp): the plan reader, the CLI
// flags and to_string all use these.
inline constexpr Names<Schedule, 2> kScheduleNames{{{"gpipe", Schedule::gpipe}, {"1f1b", Schedule::one_f_one_b}}};
inline constexpr Names<Remat, 4> kRematNames{
    {{"none", Remat::none}, {"selective", Remat::selective}, {"block", Remat::block}, {"elementwise", Remat::elementwise}}};
inline constexpr Names<TensorComm, 2> kTensorCommNames{{{"allreduce", TensorComm::allreduce}, {"rs_ag", TensorComm::rs_ag}}};
inline constexpr Names<AttentionKernel, 5> kAttentionNames{{{"flash", AttentionKernel::flash},
                                                            {"materialized", AttentionKernel::materialized},
                                                            {"flash_v1", AttentionKernel::flash_v1},
                                                            {"flash_v2", AttentionKernel::flash_v2},
                                                            {"flash_triton", AttentionKernel::flash_triton}}};
// The blockwise kernels a chip file may give a measured rate for (efficiency.attention_kernels):
// every named kernel but plain `flash` and `materialized`, which the attention class value prices.
constexpr bool has_measured_rate(AttentionKernel k) { return k != AttentionKernel::flash && k != AttentionKernel::materialized; }
inline constexpr Names<ScanAlgo, 4> kScanNames{{{"naive", ScanAlgo::naive},
                                                {"sequential", ScanAlgo::sequential},
                                                {"chunked", ScanAlgo::chunked},
                                                {"associative", ScanAlgo::associative}}};
inline constexpr Names<CarryScheme, 2> kCarryNames{{{"ring", CarryScheme::ring}, {"allgather", CarryScheme::allgather}}};
inline constexpr Names<DType, 2> kDTypeNames{{{"fp32", DType::fp32}, {"bf16", DType::bf16}}};
inline constexpr Names<GradDType, 4> kGradDTypeNames{
    {{"params", GradDType::params}, {"bf16", GradDType::bf16}, {"fp32", GradDType::fp32}, {"fp64", GradDType::fp64}}};
inline constexpr Names<GradientSync, 2> kGradientSyncNames{
    {{"every_microbatch", GradientSync::every_microbatch}, {"last_microbatch", GradientSync::last_microbatch}}};
inline constexpr Names<GradAccumulation, 4> kGradAccumulationNames{{{"separate", GradAccumulation::separate},
                                                                   {"hook", GradAccumulation::hook},
                                                                   {"autograd", GradAccumulation::autograd},
                                                                   {"fused", GradAccumulation::fused}}};
const char* to_string(Schedule s);
const char* to_string(Remat r);
const char* to_string(ScanAlgo s);
const char* to_string(CarryScheme c);
const char* to_string(DType d);
const char* to_string(TensorComm c);
const char* to_string(AttentionKernel k);
const char* to_string(GradDType g);
const char* to_string(GradientSync g);
const char* to_string(GradAccumulation g);
constexpr double bytes_of(DType d) { return d == DType::fp32 ? 4.0 : 2.0; }

struct Mesh {
  std::array<std::int64_t, kAxisCount> size{1, 1, 1, 1, 1};
  std::int64_t operator[](Axis a) const { return size[static_cast<int>(a)]; }
  std::int64_t& operator[](Axis a) { return size[static_cast<int>(a)]; }
  std::int64_t devices() const;
  std::string describe() const;  // "data=8,tensor=4" (axes of size 1 omitted; "1" if all are)
};

struct Plan {
  std::string model;    // optional: the model this plan was made for (preset or path)
  std::string cluster;  // optional: the cluster this plan was made for
  std::int64_t devices = 0;  // optional: runs on the first `devices` devices of that cluster (a slice, `plan --devices`); 0 = all
  Mesh mesh;
  int zero_stage = 0;             // 0 none; 1 optimizer state; 2 + gradients; 3 + parameters (over fsdp)
  std::int64_t global_batch = 0;  // sequences per step
  std::int64_t micro_batch = 0;   // sequences per micro-batch per data-parallel replica
  std::int64_t seq_len = 0;       // T
  Schedule schedule = Schedule::one_f_one_b;
  std::int64_t virtual_stages = 1;  // interleaved 1F1B: model chunks per pipeline stage (Narayanan et al. 2021 §2.2)
  Remat remat = Remat::none;
  TensorComm tensor_comm = TensorComm::allreduce;
  AttentionKernel attention = AttentionKernel::flash;
  ScanAlgo scan = ScanAlgo::sequential;
  CarryScheme carry = CarryScheme::ring;
  DType param_dtype = DType::bf16;
  DType act_dtype = DType::bf16;
  DType state_dtype = DType::fp32;  // scan state
  GradDType grad_dtype = GradDType::params;  // gradient reduction across ranks
  GradientSync gradient_sync = GradientSync::every_microbatch;  // ZeRO-2/3: when gradients are reduce-scattered
  GradAccumulation grad_accumulation = GradAccumulation::separate;  // how micro-batches' gradients are summed
  // Pipeline transfers under tensor parallelism (Narayanan et al. 2021 §4.1, Megatron-LM's
  // scatter/gather): a stage's output is replicated on its t tensor ranks, so each sends only its
  // 1/t slice over its own link and the next stage all-gathers the slices over the tensor axis
  // (NVLink). false: every tensor rank sends the whole activation (e.g. DeepSpeed's pipeline
  // engine). Moot under rs_ag, whose transfers already hold n/t tokens.
  bool scatter_gather = true;
  // Megatron-LM's asynchronous tensor-parallel communication in the backward pass: the input
  // gradient of a column-split block (attention's QKV, the MLP's up projection) is all-reduced
  // (under rs_ag: reduce-scattered) on NCCL's stream while the same layer's weight-gradient GEMM
  // runs (megatron/mpu/layers.py, ColumnParallelLinearWithAsyncAllreduce and
  // ...WithSequenceParallelism; on by default, `--no-async-tensor-model-parallel-allreduce` turns
  // it off; Korthikanti et al. 2022 §6.1). false: the all-reduce blocks before the next kernel, as
  // in Megatron-LM 2021 and Megatron-DeepSpeed.
  bool async_tensor_comm = false;
  // A trainer's train metrics over the logits: per micro-batch, this many more cross-entropies over
  // the last stage's logits, without gradient and unfused (lower.cpp logit_metric). Composer
  // computes its model's train metrics after every micro-batch's backward; an MPT model's are
  // LanguageCrossEntropy and LanguagePerplexity, each a full torch cross_entropy (2). 0: none (a
  // trainer that logs only the loss it already has, e.g. Megatron-LM).
  std::int64_t logit_metrics = 0;
  bool overlap = true;              // overlap data/fsdp gradient reduction with backward (ZeRO-3
                                    // parameter gathers are always prefetched)
  // Placement: device order of the mesh axes, innermost (neighbouring chips) first. Only the
  // simulator's network reads it; the runner numbers ranks tensor-innermost and a launcher maps
  // ranks to devices in this order.
  std::array<Axis, kAxisCount> placement{Axis::tensor, Axis::sequence, Axis::fsdp, Axis::data, Axis::pipeline};

  std::int64_t replicas() const { return mesh[Axis::data] * mesh[Axis::fsdp]; }
  std::int64_t local_batch() const { return global_batch / replicas(); }   // sequences per replica
  std::int64_t micro_batches() const { return local_batch() / micro_batch; }
  std::int64_t local_tokens() const { return seq_len / mesh[Axis::sequence]; }
  // Bytes per gradient element in every cross-rank gradient reduction (grad_dtype).
  double grad_bytes() const {
    switch (grad_dtype) {
      case GradDType::bf16: return 2;
      case GradDType::fp32: return 4;
      case GradDType::fp64: return 8;
      case GradDType::params: break;
    }
    return bytes_of(param_dtype);
  }
};

// A plan that breaks a rule. `rule` names it ("tensor divides heads"), `key` is the plan key to
// change ("mesh.tensor"), what() explains with the numbers.
class PlanError : public std::runtime_error {
 public:
  PlanError(std::string rule, std::string key, const std::string& message)
      : std::runtime_error(message), rule_(std::move(rule)), key_(std::move(key)) {}
  const std::string& rule() const { return rule_; }
  const std::string& key() const { return key_; }
 private:
  std::string rule_, key_;
};

// Throws PlanError naming the first failed divisibility/consistency rule. `devices` is the
// cluster's device count (0 = do not check).
void check_plan(const ModelSpec& m, const Plan& p, std::int64_t devices);
// Same rules without exceptions (for the planner's hot loop): nullptr if legal, else the rule.
const char* plan_violation(const ModelSpec& m, const Plan& p, std::int64_t devices);
// Every rule the plan breaks, in check order, each with its numbers (empty: legal). The planner's
// explanations ask which rule binds: the one that fails whatever else is changed.
struct RuleFailure {
  const char* rule;  // the rule's name (the string plan_violation returns)
  const char* key;   // the plan key to change
  std::string detail;
};
std::vector<RuleFailure> plan_violations(const ModelSpec& m, const Plan& p, std::int64_t devices);

// A rule broken by a plan read from `plan_file` ("" or "plan from flags": none) as the
// ConfigError the CLI prints: file:line of the key to change (of its parent, `mesh` for
// `mesh.tensor`, when the file leaves the key at its default — the message then says so), the
// key, the rule and `advice` appended.
ConfigError plan_file_error(const std::string& plan_file, const PlanError& e, const std::string& advice = "");

// The micro-batch a plan gets when it names none: the whole per-replica batch without a pipeline;
// with p stages the largest micro-batch that still makes at least 4·p micro-batches per step (GPipe,
// Huang et al. 2019 §2.3: the bubble is negligible once M ≥ 4·K), else 1.
std::int64_t default_micro_batch(std::int64_t local_batch, std::int64_t pipeline);

// YAML -> Plan; bad keys/values are ConfigError (file:line:col: key: reason).
Plan parse_plan(const YAML::Node& node, const std::string& file);
// From a file: a relative `model:` or `cluster:` path is made relative to the working directory
// (it was written relative to the plan file's directory; presets.hpp resolve_named_path).
Plan load_plan(const std::string& path);
// "data=8,tensor=4" -> mesh (other axes 1). Bad text is a ConfigError naming `flag`.
Mesh parse_mesh(const std::string& text, const std::string& flag);
// `base` at sequence length T with the same tokens per batch (`tokens`): the global batch becomes
// tokens / T (at least one sequence per replica), the micro-batch the largest that divides the
// per-replica batch and is at most base's. `simulate --sweep` and the report's sweep chart.
Plan at_seq_len(const Plan& base, std::int64_t T, double tokens);
// One line for tables: the mesh, then only the choices that matter for it or differ from the
// defaults ("tensor=8,pipeline=4 mb2 remat:block scan:sequential 1f1b v2"); with_batch adds
// "B64 T2048" (global batch, sequence length). The planner's, validate's and the report's tables.
std::string plan_summary(const Plan& p, bool with_batch = false, bool scan = true);
// Plan -> YAML text that parse_plan reads back unchanged.
std::string plan_to_yaml(const Plan& p);

}  // namespace scanshard
