// program/inference.cpp — see inference.hpp. The steps come from lower.cpp's emitters
// (forward_steps); this file adds only what inference changes: no dropout, the head on the last
// prompt token, the recurrent states' HBM round trip of a decode step, pipeline receives, and the
// memory closed forms.
#include "program/inference.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string_view>

#include "program/param_layout.hpp"

namespace scanshard {

const char* to_string(Workload w) { return name_of(kWorkloadNames, w); }

std::int64_t kv_cache_rows(std::int64_t context, std::int64_t window) {
  return window > 0 ? std::min(context, window) : context;
}

namespace {
bool is_attention(Temporal k) { return k == Temporal::local_attention || k == Temporal::global_attention; }
// The model as served: dropout is a training-time operation.
ModelSpec served(const ModelSpec& m) {
  ModelSpec s = m;
  s.dropout = 0;
  return s;
}
}  // namespace

double kv_cache_bytes(const ModelSpec& m, std::int64_t layer, std::int64_t context, std::int64_t t, DType act) {
  const Temporal k = temporal_kind(m, layer);
  if (!is_attention(k)) return 0;
  const std::int64_t window = k == Temporal::local_attention ? m.window : 0;
  // K and V: rows × 2 × (K/V heads on this rank) × N
  return static_cast<double>(kv_cache_rows(context, window)) * 2 * static_cast<double>(kv_heads_per_rank(m, t)) *
         static_cast<double>(m.head_dim) * bytes_of(act);
}

double rglru_state_bytes(const ModelSpec& m, std::int64_t t, DType state) {
  return static_cast<double>(m.recurrent_width) / static_cast<double>(t) * bytes_of(state);
}
double conv_state_bytes(const ModelSpec& m, std::int64_t t, DType act) {
  return static_cast<double>(m.conv_width - 1) * static_cast<double>(m.recurrent_width) / static_cast<double>(t) * bytes_of(act);
}
double wkv4_state_bytes(const ModelSpec& m, std::int64_t t, DType state) {
  return 3 * static_cast<double>(m.width) / static_cast<double>(t) * bytes_of(state);
}
double wkv6_state_bytes(const ModelSpec& m, std::int64_t t, DType state) {
  const double N = static_cast<double>(m.head_size), H = static_cast<double>(m.width) / N;
  return H / static_cast<double>(t) * N * N * bytes_of(state);
}
double token_shift_state_bytes(const ModelSpec& m, DType act) { return static_cast<double>(m.width) * bytes_of(act); }

LayerState layer_state_bytes(const ModelSpec& m, std::int64_t layer, std::int64_t context, std::int64_t t, DType act, DType state) {
  LayerState s;
  switch (temporal_kind(m, layer)) {
    case Temporal::local_attention:
    case Temporal::global_attention: s.kv_cache = kv_cache_bytes(m, layer, context, t, act); break;
    case Temporal::recurrent: s.recurrent = rglru_state_bytes(m, t, state) + conv_state_bytes(m, t, act); break;
    // time mix and channel mix each shift their input by one token
    case Temporal::rwkv4_time_mix: s.recurrent = wkv4_state_bytes(m, t, state) + 2 * token_shift_state_bytes(m, act); break;
    case Temporal::rwkv6_time_mix: s.recurrent = wkv6_state_bytes(m, t, state) + 2 * token_shift_state_bytes(m, act); break;
  }
  return s;
}

DecodeAttentionGemms decode_attention_gemms(std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, std::int64_t batch,
                                            std::int64_t keys) {
  if (heads < 1 || kv_heads < 1 || heads % kv_heads != 0 || head_dim < 1 || batch < 1 || keys < 0)
    throw std::logic_error("decode_attention_gemms: needs heads a positive multiple of kv_heads, head_dim, batch ≥ 1, keys ≥ 0");
  DecodeAttentionGemms g;
  g.pairs = batch * kv_heads;
  g.rows = heads / kv_heads;
  g.keys = keys;
  g.head_dim = head_dim;
  g.gemv = g.rows == 1;
  g.key_block = g.gemv ? std::max<std::int64_t>(1, keys) : std::max<std::int64_t>(1, kDecodeAttentionScoreBlock / g.rows);
  return g;
}

DecodeAttentionGemms decode_attention_gemms(const ModelSpec& m, std::int64_t layer, std::int64_t t, std::int64_t batch,
                                            std::int64_t position) {
  const Temporal k = temporal_kind(m, layer);
  if (!is_attention(k)) throw std::logic_error("decode_attention_gemms: layer " + std::to_string(layer) + " is not attention");
  const std::int64_t window = k == Temporal::local_attention ? m.window : 0;
  // the cache after writing the new token: its rows and the new one (kv_cache_rows of position + 1
  // tokens; a local layer's W cached rows plus its own)
  const std::int64_t keys = window > 0 ? std::min(position + 1, window + 1) : position + 1;
  return decode_attention_gemms(m.heads / t, kv_heads_per_rank(m, t), m.head_dim, batch, keys);
}

std::int64_t serving_micro_batch(const Plan& p, std::int64_t batch) {
  const std::int64_t pp = p.mesh[Axis::pipeline];
  return pp > 1 && batch % pp == 0 ? batch / pp : batch;
}

std::int64_t prefill_pass_batch(std::int64_t batch, std::int64_t prompt_len) {
  return std::clamp<std::int64_t>(kPrefillTokensPerPass / std::max<std::int64_t>(1, prompt_len), 1, std::max<std::int64_t>(1, batch));
}

Plan serving_plan(const Plan& p, const ServingShape& s) {
  Plan q = p;
  q.global_batch = s.batch * p.replicas();
  q.micro_batch = serving_micro_batch(p, s.batch);
  q.seq_len = s.context();
  q.virtual_stages = 1;
  q.zero_stage = 0;
  q.tensor_comm = TensorComm::allreduce;  // decode has one token per sequence: nothing to shard along it
  q.scan = ScanAlgo::sequential;
  return q;
}

std::vector<RuleFailure> serving_violations(const ModelSpec& m, const Plan& p, const ServingShape& s, std::int64_t devices) {
  auto n = [](std::int64_t v) { return std::to_string(v); };
  std::vector<RuleFailure> out;
  if (s.batch < 1) out.push_back({"batch is positive", "batch", "batch = " + n(s.batch)});
  if (s.prompt_len < 1) out.push_back({"prompt_len is positive", "prompt_len", "prompt_len = " + n(s.prompt_len)});
  if (s.sample_len < 1) out.push_back({"sample_len is positive", "sample_len", "sample_len = " + n(s.sample_len)});
  if (!out.empty()) return out;
  for (Axis a : {Axis::fsdp, Axis::sequence})
    if (p.mesh[a] > 1)
      out.push_back({"serving axes are data, tensor and pipeline", a == Axis::fsdp ? "mesh.fsdp" : "mesh.sequence",
                     std::string(to_string(a)) + " = " + n(p.mesh[a]) + " shards training state; a serving plan uses data (replicas), tensor and pipeline"});
  const std::int64_t pp = p.mesh[Axis::pipeline];
  if (pp > 1 && s.batch % pp != 0)
    out.push_back({"pipeline divides the batch", "batch",
                   "pipeline = " + n(pp) + " does not divide the batch " + n(s.batch) + " (a pipelined decode runs " + n(pp) + " micro-batches)"});
  if (!out.empty()) return out;
  auto rules = plan_violations(m, serving_plan(p, s), devices);
  out.insert(out.end(), rules.begin(), rules.end());
  return out;
}

namespace {

// A communication step of a pass (forward phase, class comm).
Step comm_step(StepKind kind, CommKind comm, Axis axis, const char* op, const char* name, double bytes, std::int32_t hops = 0) {
  Step s;
  s.kind = kind;
  s.phase = Phase::forward;
  s.cls = OpClass::comm;
  s.comm = comm;
  s.axis = axis;
  s.op = op;
  s.name = name;
  s.comm_bytes = bytes;
  s.hops = hops;
  return s;
}

// The receive of the previous stage's output activations (one hop over the pipeline axis). Only
// the receiver prices the hop, so a token's path through the stages counts each transfer once.
Step pipeline_receive(double bytes) {
  return comm_step(StepKind::p2p, CommKind::send_recv, Axis::pipeline, ops::send_recv, tensors::pipeline_recv_activations, bytes, 1);
}

// The head of a decode step as the decoder runs it, then what must happen before the next step:
// the logits without the training head's softmax statistics, the loss and its (max, Σexp)
// all-reduce (decoding computes no loss); each tensor rank's vocabulary columns all-gathered
// (B·V fp32); the next token of each sequence chosen from them on one rank (greedy: one
// comparison per logit, the logits read once; a plain loop, no kernel call); the B int32 tokens
// broadcast to the stage's other tensor ranks (a binomial tree: ⌈log2 t⌉ sequential hops). A
// pipeline's first stage gets the tokens from the last the same way; that hop is not priced
// (decode plans compared with a run have one stage).
void decode_head(std::vector<Step>& head, const ModelSpec& m, const Plan& p, std::int64_t batch) {
  const std::int64_t t = p.mesh[Axis::tensor];
  std::erase_if(head, [](const Step& s) {
    return std::string_view(s.name) == tensors::loss || std::string_view(s.name) == tensors::loss_stats;
  });
  const double B = static_cast<double>(batch), V = static_cast<double>(m.vocab);
  const auto logits = std::find_if(head.begin(), head.end(), [](const Step& s) { return std::string_view(s.op) == ops::logits; });
  if (logits != head.end()) {
    logits->vector_flops = 0;
    if (t > 1)  // the gathered result per rank: every sequence's fp32 logits
      head.push_back(comm_step(StepKind::collective, CommKind::all_gather, Axis::tensor, ops::all_gather, logits->name, B * V * 4));
  }
  Step pick;
  pick.op = ops::argmax;
  pick.name = tensors::sample_token;
  pick.cls = OpClass::elementwise;
  pick.vector_flops = B * V;
  pick.bytes_read = B * V * 4;
  pick.bytes_written = B * 4;
  pick.calls = 0;
  head.push_back(pick);
  head.push_back(comm_step(StepKind::p2p, CommKind::send_recv, Axis::tensor, ops::broadcast, tensors::sample_broadcast, B * 4,
                           static_cast<std::int32_t>(std::ceil(std::log2(static_cast<double>(t))))));
}

// A decode step's recurrent states live in HBM between steps: each is read and written once
// (inference.hpp). The scan's on-chip spill no longer applies: the round trip is in its bytes.
void add_state_traffic(std::vector<Step>& steps, const ModelSpec& m, const Plan& p, double batch) {
  const std::int64_t t = p.mesh[Axis::tensor];
  for (Step& s : steps) {
    const std::string_view op = s.op;
    double read_write = 0, write_only = 0;
    if (op == ops::rglru_scan) read_write = rglru_state_bytes(m, t, p.state_dtype);
    else if (op == ops::wkv4_scan) read_write = wkv4_state_bytes(m, t, p.state_dtype);
    else if (op == ops::wkv6_scan) read_write = wkv6_state_bytes(m, t, p.state_dtype);
    else if (op == ops::conv1d) read_write = conv_state_bytes(m, t, p.act_dtype);
    else if (op == ops::token_shift) write_only = token_shift_state_bytes(m, p.act_dtype);  // read: the shift's 2nd input
    s.bytes_read += batch * read_write;
    s.bytes_written += batch * (read_write + write_only);
    if (s.cls == OpClass::scan) s.spill_bytes = 0;
  }
}

// The kernel a decode step's work is priced as when it is not the training kernel's: one query
// per sequence against its cache (attention.decode, not the sequence kernel's tiles), and the
// recurrences at one token per call (the RG-LRU's decay and scan, WKV-4, WKV-6), whose training
// values come from calls of ~100 tokens.
const char* decode_kernel(const Step& s) {
  if (s.cls == OpClass::attention) return ops::attention_decode;
  const std::string_view op = s.op;
  if (op == ops::rglru_scan || op == ops::rglru_decay) return ops::rglru_decode;
  if (op == ops::wkv4_scan) return ops::wkv4_decode;
  if (op == ops::wkv6_scan) return ops::wkv6_decode;
  return s.kernel;
}

// One stage's pass: `part_steps(part)` gives the steps of a layer, the embedding or the head.
template <class PartSteps>
InferencePass stage_pass(const ModelSpec& m, const Plan& p, std::int64_t stage, double activation_bytes, PartSteps&& part_steps) {
  InferencePass pass;
  const std::int64_t pp = p.mesh[Axis::pipeline];
  pass.stage = stage;
  pass.layers = pipeline_chunk_layers(m.depth, pp, stage);
  if (stage == 0) pass.pre = part_steps(kEmbeddingPart);
  else pass.pre.push_back(pipeline_receive(activation_bytes));
  for (std::int64_t l = pass.layers.begin; l < pass.layers.end; ++l) {
    const Temporal kind = temporal_kind(m, l);
    auto it = std::find_if(pass.groups.begin(), pass.groups.end(), [&](const auto& g) { return g.kind == kind; });
    if (it == pass.groups.end()) {
      pass.groups.push_back({kind, 0, part_steps(l)});
      it = pass.groups.end() - 1;
    }
    ++it->count;
  }
  if (stage == pp - 1) pass.post = part_steps(kHeadPart);
  return pass;
}

// The plan a pass lowers with: single-token scans are sequential; no ZeRO or token sharding.
Plan pass_plan(const Plan& p) {
  Plan q = p;
  q.scan = ScanAlgo::sequential;
  q.tensor_comm = TensorComm::allreduce;
  return q;
}

}  // namespace

InferencePass lower_prefill(const ModelSpec& model, const Plan& plan, std::int64_t stage, std::int64_t batch, std::int64_t prompt_len) {
  const ModelSpec m = served(model);
  Plan p = plan;
  p.tensor_comm = TensorComm::allreduce;
  const double act = static_cast<double>(batch * prompt_len * m.width) * bytes_of(p.act_dtype);
  return stage_pass(m, p, stage, act, [&](std::int64_t part) {
    // the head runs on each sequence's last prompt token only
    return part == kHeadPart ? forward_steps(m, p, part, batch, 1, 0) : forward_steps(m, p, part, batch, prompt_len, 0);
  });
}

InferencePass lower_decode(const ModelSpec& model, const Plan& plan, std::int64_t stage, std::int64_t batch, std::int64_t position) {
  const ModelSpec m = served(model);
  const Plan p = pass_plan(plan);
  const double act = static_cast<double>(batch * m.width) * bytes_of(p.act_dtype);
  InferencePass pass = stage_pass(m, p, stage, act, [&](std::int64_t part) {
    auto steps = forward_steps(m, p, part, batch, 1, position);
    if (part >= 0) add_state_traffic(steps, m, p, static_cast<double>(batch));
    for (Step& s : steps) {
      s.kernel = decode_kernel(s);
      if (std::string_view(s.kernel ? s.kernel : "") == ops::attention_decode) {  // the shape the decoder calls the kernel with
        const DecodeAttentionGemms g = decode_attention_gemms(m, part, p.mesh[Axis::tensor], batch, position);
        s.m = g.rows, s.n = g.keys, s.k = g.head_dim;
      }
    }
    if (part == kHeadPart) decode_head(steps, m, p, batch);
    return steps;
  });
  // Between two tokens the step streams every weight, cache row and state of the stage once: each
  // step's data comes from wherever a working set of that size lives (cache or DRAM).
  const double token_bytes = pass.sum([](const Step& s) { return s.kind == StepKind::compute ? s.bytes_read + s.bytes_written : 0.0; });
  for (auto* list : {&pass.pre, &pass.post})
    for (Step& s : *list) s.reuse_bytes = token_bytes;
  for (auto& g : pass.groups)  // (for_each_list gives the lists read-only)
    for (Step& s : g.steps) s.reuse_bytes = token_bytes;
  return pass;
}

std::int64_t stage_parameters(const ModelSpec& m, std::int64_t tensor, std::int64_t pipeline, std::int64_t stage) {
  const Range layers = pipeline_chunk_layers(m.depth, pipeline, stage);
  const bool first = stage == 0, last = stage == pipeline - 1;
  std::int64_t n = 0;
  for (const auto& pt : parameter_tensors(m)) {
    bool here = false;
    if (pt.block == "embed") here = first || (last && m.tied_embeddings && pt.name == tensors::embed_table);
    else if (pt.block == "final" || pt.block == "head") here = last;
    else here = pt.block.starts_with("layer.") && layers.begin <= std::stoll(pt.block.substr(6)) &&
                std::stoll(pt.block.substr(6)) < layers.end;
    if (here) n += tensor_split_dim(m, pt, tensor) < 0 ? pt.count() : pt.count() / tensor;
  }
  return n;
}

namespace {
// The working set of a pass over `tokens` tokens of `batch` sequences: the residual stream plus
// the largest elementwise, norm or scan step's inputs and outputs (a GEMM's are its neighbours';
// attention's K/V are the cache), plus the head's fp32 logits, one row per sequence.
double working_set_bytes(const InferencePass& pass, double batch, double tokens, const ModelSpec& m, DType act, std::int64_t t) {
  double largest = 0;
  auto consider = [&](const Step& s) {
    if (s.kind == StepKind::compute && s.cls != OpClass::gemm && s.cls != OpClass::attention)
      largest = std::max(largest, s.bytes_read + s.bytes_written);
  };
  for (const auto& s : pass.pre) consider(s);
  for (const auto& g : pass.groups)
    for (const auto& s : g.steps) consider(s);
  const double logits = pass.post.empty() ? 0 : batch * std::ceil(static_cast<double>(m.vocab) / static_cast<double>(t)) * 4;
  return tokens * static_cast<double>(m.width) * bytes_of(act) + largest + logits;
}
}  // namespace

InferenceMemory inference_memory(const ModelSpec& m, const Plan& p, std::int64_t stage, const ServingShape& s) {
  InferenceMemory mem;
  const std::int64_t t = p.mesh[Axis::tensor], pp = p.mesh[Axis::pipeline];
  mem.weights_bytes = static_cast<double>(stage_parameters(m, t, pp, stage)) * bytes_of(p.param_dtype);
  const Range layers = pipeline_chunk_layers(m.depth, pp, stage);
  for (std::int64_t l = layers.begin; l < layers.end; ++l) {
    const LayerState st = layer_state_bytes(m, l, s.context(), t, p.act_dtype, p.state_dtype);
    mem.kv_cache_bytes += static_cast<double>(s.batch) * st.kv_cache;
    mem.state_bytes += static_cast<double>(s.batch) * st.recurrent;
  }
  const std::int64_t b = serving_micro_batch(p, s.batch), bp = prefill_pass_batch(s.batch, s.prompt_len);
  const double bd = static_cast<double>(b), bpd = static_cast<double>(bp);
  mem.activations_bytes =
      std::max(working_set_bytes(lower_prefill(m, p, stage, bp, s.prompt_len), bpd, bpd * static_cast<double>(s.prompt_len), m, p.act_dtype, t),
               working_set_bytes(lower_decode(m, p, stage, b, s.context() - 1), bd, bd, m, p.act_dtype, t));
  return mem;
}

}  // namespace scanshard
