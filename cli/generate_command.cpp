// cli/generate_command.cpp — `scanshard generate`: decode with a trained checkpoint on MPI ranks
// (issue 26), under tensor parallelism (default: every rank) and pipeline stages (--plan mesh). Run as
//   mpirun -n N scanshard generate --checkpoint ck.h5 [--model M] --tokens K --batch B [--prompt-file F]
//                                  [--plan serve.yaml] [--temperature T --top-k K --seed S] [--trace t.json]
// The checkpoint (any training plan's, full logical tensors) is read with parallel HDF5, each rank
// its tensor-parallel shards; the B sequences (each the prompt) are prefilled, then K − 1 decode
// steps follow (train/decode.hpp: KV caches and recurrent states). Rank 0 samples (greedy, or
// seeded temperature / top-k: train/sampling.hpp) and broadcasts the tokens. Prints the token ids
// (and the text, for byte-level vocabularies), time to first token, tokens/s and the median
// per-token latency; --trace writes measured seconds per (phase, op, name) per step like `train`.
// Input errors (bad flags, a missing prompt or checkpoint, a mesh that does not divide the model)
// exit 2 on every rank naming the flag or file and the reason.
// Not for: pricing inference (simulate/plan --workload), replica or sequence axes (refused).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <random>
#include <span>
#include <sstream>

#include <mpi.h>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "program/lower.hpp"
#include "program/output_file.hpp"
#include "program/plan.hpp"
#include "program/presets.hpp"
#include "program/yaml_reader.hpp"
#include "train/checkpoint.hpp"
#include "train/comm.hpp"
#include "train/decode.hpp"
#include "train/resume.hpp"
#include "train/runner.hpp"
#include "train/sampling.hpp"

namespace scanshard {
namespace {

struct GenerateOptions {
  std::string checkpoint, model, prompt_file, plan_file, trace;
  std::int64_t tokens = 32, batch = 1, top_k = 0;
  double temperature = 0;
  unsigned seed = 1234;
};

// The serving mesh: the plan's tensor × pipeline axes, or tensor parallelism over every rank.
Mesh serving_mesh(const GenerateOptions& o, int world) {
  Mesh mesh;
  if (o.plan_file.empty()) {
    mesh[Axis::tensor] = world;
    return mesh;
  }
  const Plan p = load_plan(o.plan_file);
  for (Axis a : {Axis::data, Axis::fsdp, Axis::sequence})
    if (p.mesh[a] > 1)
      throw ConfigError(o.plan_file + ": mesh: " + to_string(a) + " = " + std::to_string(p.mesh[a]) +
                        ": generate runs tensor and pipeline axes only");
  if (p.mesh.devices() != world)
    throw ConfigError(o.plan_file + ": mesh: " + p.mesh.describe() + " is " + std::to_string(p.mesh.devices()) +
                      " rank(s) but mpirun started " + std::to_string(world));
  return p.mesh;
}

std::vector<std::int32_t> read_prompt(const GenerateOptions& o) {
  const std::string path = o.prompt_file.empty() ? train::default_corpus_path() : o.prompt_file;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError((o.prompt_file.empty() ? "prompt " : "--prompt-file: ") + path + ": cannot be read");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (o.prompt_file.empty()) bytes = bytes.substr(0, std::min<std::size_t>(bytes.size(), 32));  // the corpus' first 32 bytes
  if (bytes.empty()) throw ConfigError("--prompt-file: " + path + ": empty (the prompt needs at least one byte)");
  std::vector<std::int32_t> ids;
  for (unsigned char c : bytes) ids.push_back(c);
  return ids;
}

std::string as_text(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (std::int32_t id : ids) {
    if ((id >= 32 && id < 127) || id == '\n') s += static_cast<char>(id);
    else {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", id & 0xff);
      s += esc;
    }
  }
  return s;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

nlohmann::json trace_json(const Trace& t, const ModelSpec& m, const Mesh& mesh, const GenerateOptions& o, int world,
                          std::int64_t prompt) {
  nlohmann::json steps = nlohmann::json::array();
  for (const auto& s : t.steps()) {
    nlohmann::json ops = nlohmann::json::array();
    for (const auto& [k, c] : s.cells)
      ops.push_back({{"phase", std::get<0>(k)}, {"op", std::get<1>(k)}, {"name", std::get<2>(k)}, {"seconds", c.seconds},
                     {"calls", c.calls}});
    steps.push_back({{"step", s.step}, {"wall_seconds", s.wall}, {"ops", ops}});
  }
  return {{"workload", "generate"}, {"model", m.name}, {"mesh", mesh.describe()}, {"ranks", world},
          {"rank", 0}, {"batch", o.batch}, {"prompt_tokens", prompt}, {"tokens", o.tokens}, {"dtype", "fp32"},
          {"steps", steps}};
}

void run_generate(const GenerateOptions& o) {
  const MpiSession session;
  const mpi::Comm world = mpi::Comm::world();
  const int rank = world.rank();
  std::vector<std::int32_t> prompt;
  Mesh mesh;
  std::int64_t t = 1;
  check_inputs_on_every_rank(rank, [&] {
    if (o.tokens < 1) throw ConfigError("--tokens: must be at least 1");
    if (o.batch < 1) throw ConfigError("--batch: must be at least 1");
    if (!(o.temperature >= 0) || !std::isfinite(o.temperature)) throw ConfigError("--temperature: must be 0 (greedy) or positive");
    if (o.top_k < 0) throw ConfigError("--top-k: must be 0 (the whole vocabulary) or positive");
    if (o.top_k > 0 && o.temperature == 0) throw ConfigError("--top-k: needs --temperature > 0 (temperature 0 is greedy)");
    mesh = serving_mesh(o, world.size());
    t = mesh[Axis::tensor];
    prompt = read_prompt(o);
    if (!o.trace.empty()) check_output_file(o.trace);
  });
  ModelSpec m;
  try {  // collective: every rank reads the same /meta and reaches the same verdict
    const train::CheckpointMeta meta = train::read_checkpoint_meta(&world, o.checkpoint);
    check_inputs_on_every_rank(rank, [&] {
      m = load_model(o.model.empty() ? meta.model_name : o.model,
                     o.model.empty() ? "--checkpoint " + o.checkpoint + ": /meta model_name (pass --model)" : "--model");
      if (meta.model_yaml != train::model_summary(m))
        throw ConfigError("--checkpoint " + o.checkpoint + ": holds model '" + meta.model_name + "', not '" + m.name +
                          "' (family, width, depth or vocab differ)");
      train::check_decodable(m, t, o.plan_file.empty() ? "mpirun -n " + std::to_string(t) : o.plan_file);
      if (mesh[Axis::pipeline] > m.depth)
        throw ConfigError(o.plan_file + ": mesh: pipeline = " + std::to_string(mesh[Axis::pipeline]) + " stages for " +
                          std::to_string(m.depth) + " layers");
      const std::int64_t len = static_cast<std::int64_t>(prompt.size()) + o.tokens;
      if (m.max_positions > 0 && len > m.max_positions)
        throw ConfigError("--tokens: the prompt's " + std::to_string(prompt.size()) + " tokens plus " + std::to_string(o.tokens) +
                          " new ones exceed " + m.name + "'s " + std::to_string(m.max_positions) + " learned positions");
      for (std::int32_t id : prompt)
        if (id >= m.vocab)
          throw ConfigError("--prompt-file: byte " + std::to_string(id) + " is not a token of " + m.name + "'s vocabulary of " +
                            std::to_string(m.vocab));
    });
  } catch (const ConfigError& e) {
    exit_on_every_rank(rank, e);
  }
  try {
    // this rank's tensor group (same stage) and pipeline group (same tensor shard)
    const auto coord = rank_coords(mesh, rank);
    const int tcoord = static_cast<int>(coord[static_cast<int>(Axis::tensor)]);
    const int scoord = static_cast<int>(coord[static_cast<int>(Axis::pipeline)]);
    const mpi::Comm tensor_group = world.split(scoord, tcoord), stage_group = world.split(tcoord, scoord);
    const Layout lay(m);
    const train::ShardLayout sl(m, lay, t, tcoord);
    train::DecodeWeights params;
    try {
      params = train::read_decode_weights(world, o.checkpoint, lay, sl);
    } catch (const ConfigError& e) {
      exit_on_every_rank(rank, e);
    }
    const std::int64_t B = o.batch, P = static_cast<std::int64_t>(prompt.size()), Vv = m.vocab;
    train::Decoder dec(m, sl, params.data(), &tensor_group, B, P + o.tokens, &stage_group);
    Trace trace;
    std::vector<std::int32_t> in;
    for (std::int64_t b = 0; b < B; ++b) in.insert(in.end(), prompt.begin(), prompt.end());
    std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(B));
    std::mt19937_64 rng(o.seed);
    const train::SamplingOptions so{o.temperature, o.top_k};
    std::vector<float> logits;
    std::vector<double> latency;  // seconds per decode step (every sequence advances one token)
    double ttft = 0;
    for (std::int64_t i = 0; i < o.tokens; ++i) {
      world.barrier();
      const auto t0 = std::chrono::steady_clock::now();
      dec.feed(in.data(), i == 0 ? P : 1, logits, true, &trace);
      std::vector<std::int32_t> next(static_cast<std::size_t>(B));
      if (rank == 0)
        for (std::int64_t b = 0; b < B; ++b) next[static_cast<std::size_t>(b)] = train::sample_token(logits.data() + b * Vv, Vv, so, rng);
      world.broadcast(std::span<std::int32_t>(next), 0);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      trace.end_step(i, s, 0);
      (i == 0 ? ttft : latency.emplace_back()) = s;
      for (std::int64_t b = 0; b < B; ++b) out[static_cast<std::size_t>(b)].push_back(next[static_cast<std::size_t>(b)]);
      in = next;
    }
    if (rank != 0) return;
    double decode_s = 0;
    for (double s : latency) decode_s += s;
    std::cout << "generate " << m.name << " on " << world.size() << " rank(s) (" << mesh.describe() << "), batch " << B
              << ", prompt " << P << " tokens, " << o.tokens << " new tokens, "
              << (o.temperature > 0 ? "temperature " + std::to_string(o.temperature) + (o.top_k ? ", top-k " + std::to_string(o.top_k) : "") + ", seed " + std::to_string(o.seed)
                                    : std::string("greedy"))
              << "\n";
    for (std::int64_t b = 0; b < B; ++b) {
      std::cout << "sequence " << b << " tokens:";
      for (std::int32_t id : out[static_cast<std::size_t>(b)]) std::cout << " " << id;
      std::cout << "\n";
      if (m.vocab <= 256) std::cout << "sequence " << b << " text: " << as_text(out[static_cast<std::size_t>(b)]) << "\n";
    }
    char line[256];
    std::snprintf(line, sizeof line, "time to first token %.3f ms (prefill of %lld tokens x %lld sequences)\n", 1e3 * ttft,
                  static_cast<long long>(P), static_cast<long long>(B));
    std::cout << line;
    if (!latency.empty()) {
      std::snprintf(line, sizeof line, "decode: %.1f tokens/s (%lld sequences x %zu steps in %.3f s), median per-token latency %.3f ms\n",
                    static_cast<double>(B) * static_cast<double>(latency.size()) / decode_s, static_cast<long long>(B),
                    latency.size(), decode_s, 1e3 * median(latency));
      std::cout << line;
    }
    std::snprintf(line, sizeof line, "caches and recurrent states: %.3f MiB per rank\n", dec.state_bytes() / 1048576.0);
    std::cout << line << std::flush;
    if (!o.trace.empty()) write_output_file(o.trace, trace_json(trace, m, mesh, o, world.size(), P).dump(1) + "\n");
  } catch (const std::exception& e) {
    std::cerr << "scanshard: rank " << rank << ": runtime failure: " << e.what() << "\n" << std::flush;
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
}

}  // namespace

void register_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  auto* cmd = app.add_subcommand("generate", "decode with a trained checkpoint on MPI ranks (mpirun -n <tensor ranks>): "
                                             "prefill, then token by token with KV caches and recurrent states; fp32");
  cmd->add_option("--checkpoint", o->checkpoint, "a checkpoint written by `scanshard train` (any plan)")->required();
  cmd->add_option("--model", o->model, "model preset or YAML path (default: the checkpoint's model name as a preset)");
  cmd->add_option("--tokens", o->tokens, "new tokens per sequence")->capture_default_str();
  cmd->add_option("--batch", o->batch, "sequences decoded together (each starts with the prompt)")->capture_default_str();
  cmd->add_option("--prompt-file", o->prompt_file, "prompt bytes as byte-level tokens (default: the first 32 bytes of data/corpus.txt)");
  cmd->add_option("--plan", o->plan_file, "serving plan YAML: its mesh (tensor and pipeline axes) must have as many devices as ranks");
  cmd->add_option("--temperature", o->temperature, "0: greedy; > 0: sample from softmax(logits / T)")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "sample among the k largest logits (0: all; needs --temperature)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  cmd->add_option("--trace", o->trace, "write measured seconds per (phase, op, name) per step as JSON (rank 0)");
  cmd->callback([o] { run_generate(*o); });
}

}  // namespace scanshard
