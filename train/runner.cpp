// train/runner.cpp — the data / fsdp training loop (see runner.hpp).
#include "train/runner.hpp"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <stdexcept>

#include "program/lower.hpp"
#include "program/yaml_reader.hpp"
#include "train/model.hpp"

#ifndef SCANSHARD_DEFAULT_CORPUS
#define SCANSHARD_DEFAULT_CORPUS "data/corpus.txt"
#endif

namespace scanshard::train {

void check_supported(const ModelSpec& m, const Plan& p, std::int64_t world_size) {
  if (p.mesh.devices() != world_size)
    throw PlanError("mesh size equals ranks", "mesh",
                    "the plan's mesh (" + p.mesh.describe() + ") has " + std::to_string(p.mesh.devices()) +
                        " devices but the job has " + std::to_string(world_size) +
                        " ranks; run with mpirun -n " + std::to_string(p.mesh.devices()));
  if (m.is_rwkv())
    throw PlanError("runner family", "model",
                    std::string("model family ") + to_string(m.family) +
                        " is not yet supported by the runner (this slice runs griffin, hawk and mqa)");
  for (Axis a : {Axis::tensor, Axis::sequence, Axis::pipeline})
    if (p.mesh[a] > 1)
      throw PlanError("runner axes", std::string("mesh.") + to_string(a),
                      std::string("mesh axis ") + to_string(a) + "=" + std::to_string(p.mesh[a]) +
                          " is not yet supported by the runner (this slice runs data and fsdp only)");
  check_plan(m, p, world_size);
  if (m.vocab < 256)
    throw PlanError("byte vocabulary", "model", "the runner feeds byte tokens 0..255 but the model's vocab is " +
                                                    std::to_string(m.vocab));
}

std::vector<std::uint8_t> load_bytes(const std::string& path, std::int64_t min_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw ConfigError(path + ": not a readable data file (missing, or a directory)");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ConfigError(path + ": cannot open the data file");
  std::vector<std::uint8_t> d((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (std::int64_t(d.size()) < min_bytes)
    throw ConfigError(path + ": data file has " + std::to_string(d.size()) + " bytes; one sequence needs " +
                      std::to_string(min_bytes));
  return d;
}

std::string default_corpus_path() { return SCANSHARD_DEFAULT_CORPUS; }

Result run(const ModelSpec& m, const Plan& p, const std::vector<std::uint8_t>& data, const Options& o,
           const mpi::Comm* comm, const std::function<void(std::int64_t, double, double)>& progress) {
  const std::int64_t world = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  check_supported(m, p, world);
  const std::int64_t T = p.seq_len, G = p.global_batch, mb = p.micro_batch;
  if (std::int64_t(data.size()) < T + 2) throw ConfigError("data: shorter than one sequence of seq_len+1 bytes");
  const auto coord = rank_coords(p.mesh, rank);
  // Replica index over data × fsdp (fsdp is handled like data in this slice).
  const std::int64_t replica = coord[int(Axis::data)] * p.mesh[Axis::fsdp] + coord[int(Axis::fsdp)];
  const std::int64_t local = p.local_batch(), first_seq = replica * local;

  const Layout lay(m);
  Result res;
  res.params = init_params(lay, o.seed);
  std::vector<float> grad(lay.total), m1(lay.total, 0.0f), m2(lay.total, 0.0f);
  // Gradients are summed over micro-batches and replicas in double: a sum of a few fp32 terms is
  // then (nearly always) exact, so the result does not depend on how the batch was split or in
  // which order MPI adds — any plan gives the 1-rank gradient bit for bit after rounding to fp32.
  std::vector<double> gacc(lay.total);
  Model model(m, lay, mb, T);
  std::vector<std::int32_t> tokens(mb * T), targets(mb * T);
  const std::int64_t span = std::int64_t(data.size()) - T;  // start offsets 0 .. size-T-1
  Trace& tr = res.trace;

  for (std::int64_t step = 0; step < o.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    std::fill(gacc.begin(), gacc.end(), 0.0);
    double loss_sum = 0;  // Σ over this replica's micro-batches of the micro-batch mean loss
    for (std::int64_t j = 0; j < local / mb; ++j) {
      for (std::int64_t b = 0; b < mb; ++b) {
        // Sequence i of step k starts at byte ((k·G + i)·(T+1)) mod span: a deterministic cursor.
        const std::int64_t i = first_seq + j * mb + b;
        const std::int64_t start = ((step * G + i) * (T + 1)) % span;
        for (std::int64_t t = 0; t < T; ++t) {
          tokens[b * T + t] = data[start + t];
          targets[b * T + t] = data[start + t + 1];
        }
      }
      loss_sum += model.forward(res.params.data(), tokens, targets, &tr);
      std::fill(grad.begin(), grad.end(), 0.0f);
      model.backward(res.params.data(), grad.data(), &tr);
      for (std::int64_t i = 0; i < lay.total; ++i) gacc[i] += double(grad[i]);
    }
    // Sum over replicas (ZeRO stage is ignored in this slice: fsdp = plain all-reduce), then scale
    // the sum of micro-batch mean gradients to the mean over the global batch.
    double loss_buf[1] = {loss_sum};
    if (comm && world > 1) {
      Trace::Scope s(&tr, "forward", "all_reduce", "grads");
      comm->allreduce_sum(std::span<double>(gacc));
      comm->allreduce_sum(std::span<double>(loss_buf, 1));
    }
    const double gscale = double(mb) / double(G);
    for (std::int64_t i = 0; i < lay.total; ++i) grad[i] = float(gacc[i] * gscale);
    const double loss = loss_buf[0] * double(mb) / double(G);
    {
      Trace::Scope s(&tr, "optimizer", "optimizer", "params");
      double sq = 0;
      for (size_t ti = 0; ti < lay.tensors.size(); ++ti) {
        // Σ g² of the mean gradient, tensor by tensor (the same order on every plan)
        sq += kernels::sum_squares(grad.data() + lay.offset[ti], lay.tensors[ti].count());
      }
      const float clip = kernels::clip_scale(sq, o.adamw.max_grad_norm);
      for (size_t ti = 0; ti < lay.tensors.size(); ++ti) {
        const auto& t = lay.tensors[ti];
        const std::int64_t off = lay.offset[ti];
        const float wd = t.shape.size() >= 2 ? o.adamw.weight_decay : 0.0f;
        kernels::fast::adamw_update(res.params.data() + off, m1.data() + off, m2.data() + off, grad.data() + off,
                                    t.count(), step + 1, o.adamw, wd, clip);
      }
    }
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = double(G * T) / wall;
    res.losses.push_back(loss);
    res.tokens_per_s.push_back(tps);
    tr.end_step(long(step), wall, loss);
    if (progress) progress(step, loss, tps);
  }
  return res;
}

}  // namespace scanshard::train
