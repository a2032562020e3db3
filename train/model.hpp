// train/model.hpp — the Griffin / Hawk / MQA forward and backward of one data-parallel replica's
// micro-batch, in fp32 with kernels::fast, every kernel call timed into a Trace under the
// (op, name) the StepProgram uses for it (program/lower.cpp).
//
// For: the runner's first slice (data / fsdp parallelism: every rank holds the full model). The
// composition follows tests/kernels/tiny_model.hpp (DESIGN §3.1):
//   x = E[tokens]; per layer: x += Temporal(RMSNorm(x)); x += MLP(RMSNorm(x));
//   loss = mean CE(softmax(RMSNorm(x) Eᵀ), targets)
// Not for: RWKV, tensor / sequence / pipeline splits (later slices), communication.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "program/model.hpp"
#include "program/param_layout.hpp"
#include "train/trace.hpp"

namespace scanshard::train {

using i64 = std::int64_t;

// Layout and init_params: program/param_layout.hpp (shared with the kernel tests).

class Model {
 public:
  Model(const ModelSpec& m, const Layout& lay, i64 B, i64 T);
  // Mean cross-entropy over the B·T tokens; saves activations for backward(). tokens/targets [B,T].
  float forward(const float* p, const std::vector<std::int32_t>& tokens, const std::vector<std::int32_t>& targets,
                Trace* trace);
  // Accumulates d(mean loss)/d params into g.
  void backward(const float* p, float* g, Trace* trace);

 private:
  struct Acts {
    std::vector<float> x_in, n1, rstd1, gy, u, cu, hs, ga, gx, pr, qr, q, kr, k, v, a, lse, x_mid, n2, rstd2, h1,
        h2, gm;
  };
  void layer_forward(const float* p, i64 l, std::vector<float>& x, Trace* tr);
  void layer_backward(const float* p, float* g, i64 l, std::vector<float>& dx, Trace* tr);

  const ModelSpec& m_;
  const Layout& lay_;
  i64 B_, T_, M_;
  std::vector<std::int32_t> tokens_, targets_, pos_;
  std::vector<std::uint8_t> reset_;
  std::vector<float> x0_, xf_, nf_, rstdf_, probs_, losses_;
  std::vector<Acts> acts_;
};

}  // namespace scanshard::train
