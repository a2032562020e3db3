// train/decode.hpp — inference on CPU ranks: prefill a prompt, then decode token by token, keeping
// each layer's KV cache (attention: global grows with the context, local is a ring of window + 1
// rows, kernels/kv_cache.hpp) or its fixed-size recurrent state (RG-LRU h and the Conv1D window of
// K − 1 inputs; RWKV-4's (a, b, p) per channel and the two token-shift rows; RWKV-6's N×N matrix
// per head and the token-shift rows), under tensor parallelism (DESIGN §8).
//
// For: `scanshard generate` (cli/generate_command.cpp), bench_decode and the decode tests. Every
// family the executor trains (griffin, hawk, mqa, rwkv4, rwkv6, transformer) with the executor's
// sharding: ShardLayout's local tensors, Megatron column/row splits with one all-reduce after each
// row-split linear, vocab-parallel embedding (partial sums all-reduced) and head (the logits
// all-gathered), replicated K/V heads when kv_heads < tensor (each rank the head its query heads
// share), RWKV's channel-mix gate on Dl channels then all-gathered. Every cross-rank byte goes
// through train/comm.hpp (OpenMPI). The correctness reference is the training forward: feeding a
// sequence token by token gives the executor's logits at every position (tests/mpi/test_decode.cpp).
// Not for: sampling (sampling.hpp), sequence or replica axes, the loss, dropout (inference runs without it), the logit soft-cap (the executor has none either).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.hpp"
#include "program/model.hpp"
#include "program/trace.hpp"
#include "train/comm.hpp"
#include "train/executor.hpp"

namespace scanshard::train {

// ConfigError naming `where` unless every tensor-split dimension of `m` divides by t (what
// ShardLayout and the decoder's head and channel splits assume).
void check_decodable(const ModelSpec& m, std::int64_t t, const std::string& where);

// A decoder's weights: kernels::AlignedVec, on huge pages (kernels.hpp), as every decode step
// streams them all.
using DecodeWeights = kernels::AlignedVec;
// Collective over `world`. This rank's tensor-parallel shards (`sl`) of the checkpoint's
// parameters at `path`; the AdamW moments are read through one scratch buffer and dropped.
DecodeWeights read_decode_weights(const mpi::Comm& world, const std::string& path, const Layout& lay,
                                  const ShardLayout& sl);

class Decoder {
 public:
  // `params`: this rank's shards in `lay` order (kept by pointer; must outlive the decoder).
  // `tensor`: the tensor-parallel group (nullptr = one rank); its size must be lay's split count.
  // batch B sequences, contexts of up to max_len tokens (the global KV caches' capacity).
  // `pipeline`: the ranks holding this rank's tensor shard in each pipeline stage (nullptr = one
  // stage). Stage s runs layers split_range(depth, stages, s); the residual stream [B·T, D] goes
  // stage to stage, the last stage's logits are broadcast back so every rank returns them.
  Decoder(const ModelSpec& m, const ShardLayout& lay, const float* params, const mpi::Comm* tensor, std::int64_t batch,
          std::int64_t max_len, const mpi::Comm* pipeline = nullptr);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Feeds T tokens of each sequence (tokens [B,T]) at positions position() … position()+T−1 and
  // advances. logits: [B,T,V] (every position, full vocabulary, identical on every tensor rank) or
  // with last_only [B,V] of the last fed token. T > 1 from position 0 is a prefill (attention runs
  // the sequence kernel once); otherwise the tokens are decoded one at a time.
  void feed(const std::int32_t* tokens, std::int64_t T, std::vector<float>& logits, bool last_only, Trace* tr = nullptr);
  std::int64_t position() const { return pos_; }
  std::int64_t batch() const { return B_; }
  // Rows held by layer l's KV cache (0 for a layer without attention).
  std::int64_t cache_rows(std::int64_t layer) const;
  // Bytes of every cache and recurrent state this rank holds (allocated capacity).
  std::int64_t state_bytes() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  std::int64_t B_ = 0, pos_ = 0;
};

}  // namespace scanshard::train
