// tests/unit/test_generate.cpp — `scanshard generate` end to end and the sampler (issue 26).
// The CLI's greedy tokens, from a checkpoint `scanshard train` wrote, at 1 and 2 ranks (tensor = 2,
// and pipeline = 2 through --plan), are
// checked against the executor's training forward over the prompt plus the generated tokens
// (each generated token is the argmax of the forward's distribution at the position before it).
// Bad flags and files exit 2 naming them. The sampler: greedy = argmax, top-k = 1 = greedy, a
// seed reproduces its draws, and draws follow the closed-form softmax of the top k logits.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "program/lower.hpp"
#include "program/param_layout.hpp"
#include "program/presets.hpp"
#include "tests/common/shell.hpp"
#include "train/checkpoint.hpp"
#include "train/executor.hpp"
#include "train/sampling.hpp"

using namespace scanshard;

namespace {

std::vector<std::int32_t> printed_tokens(const std::string& out) {
  std::smatch m;
  REQUIRE(std::regex_search(out, m, std::regex("sequence 0 tokens:([0-9 ]+)")));
  std::istringstream in(m[1].str());
  std::vector<std::int32_t> ids;
  for (std::int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

std::vector<float> checkpoint_params(const ModelSpec& m, const std::string& path) {
  const Layout lay(m);
  std::vector<float> params(static_cast<std::size_t>(lay.total)), mom(params.size());
  std::vector<train::Slab> slabs;
  std::vector<float*> p, a;
  for (std::size_t i = 0; i < lay.tensors.size(); ++i) {
    slabs.push_back(train::whole_tensor(lay.tensors[i]));
    p.push_back(params.data() + lay.offset[i]);
    a.push_back(mom.data() + lay.offset[i]);
  }
  train::read_checkpoint(nullptr, path, lay, slabs, p, a, a);
  return params;
}

// The executor's distribution over the whole sequence (one rank): probs [T, V]
std::vector<float> forward_probs(const ModelSpec& m, std::vector<float>& params, const std::vector<std::int32_t>& seq) {
  Plan p;
  p.model = m.name;
  p.global_batch = p.micro_batch = 1;
  p.seq_len = static_cast<std::int64_t>(seq.size());
  p.param_dtype = p.act_dtype = DType::fp32;
  const Layout lay(m);
  const train::ShardLayout sl(m, lay, 1, 0);
  const StepProgram prog = lower(m, p, 0);
  train::Executor ex(m, p, prog, sl, {});
  ex.forward(0, params.data(), seq.data(), seq.data(), nullptr);
  const auto probs = ex.head_probs(0);
  return {probs.begin(), probs.end()};
}

}  // namespace

#if defined(SCANSHARD_MPIRUN) && defined(SCANSHARD_BIN)
TEST_CASE("generate: greedy tokens from a trained checkpoint are the training forward's argmax, at 1 and 2 ranks",
          "[generate]") {
  const testing::TempDir dir("scanshard-generate-");
  const std::string d = dir.path.string();
  std::ofstream(d + "/plan.yaml") << "model: hawk-tiny\nmesh: {data: 1}\nglobal_batch: 2\nmicro_batch: 2\nseq_len: 32\n"
                                     "dtypes: {params: fp32, activations: fp32}\n";
  std::ofstream(d + "/prompt.txt") << "The recurrent state";
  const std::string env = "env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ";
  const auto trained = testing::sh(env + SCANSHARD_BIN + " train --plan " + d + "/plan.yaml --steps 3 --checkpoint-dir " + d + "/ck", dir.path);
  REQUIRE(trained.code == 0);
  const std::string ck = d + "/ck/step-00000003.h5";
  const ModelSpec m = load_model("hawk-tiny");
  auto params = checkpoint_params(m, ck);
  const std::string args = " generate --checkpoint " + ck + " --tokens 12 --batch 2 --prompt-file " + d + "/prompt.txt";
  std::ofstream(d + "/serve.yaml") << "model: hawk-tiny\nmesh: {pipeline: 2}\nglobal_batch: 2\nmicro_batch: 1\nseq_len: 32\n";
  for (const auto& [ranks, extra] : std::vector<std::pair<int, std::string>>{{1, ""}, {2, ""}, {2, " --plan " + d + "/serve.yaml"}}) {
    const auto run = testing::sh(env + SCANSHARD_MPIRUN + " -n " + std::to_string(ranks) + " " + SCANSHARD_BIN + args + extra, dir.path);
    INFO(run.out);
    REQUIRE(run.code == 0);
    const auto got = printed_tokens(run.out);
    REQUIRE(got.size() == 12);
    std::vector<std::int32_t> seq;
    for (char c : std::string("The recurrent state")) seq.push_back(static_cast<unsigned char>(c));
    const std::size_t P = seq.size();
    seq.insert(seq.end(), got.begin(), got.end() - 1);
    const auto probs = forward_probs(m, params, seq);
    for (std::size_t i = 0; i < got.size(); ++i) {
      const float* row = probs.data() + (P - 1 + i) * static_cast<std::size_t>(m.vocab);
      const auto best = std::max_element(row, row + m.vocab) - row;
      INFO(ranks << " rank(s)" << extra << ", generated token " << i);
      CHECK(got[i] == best);
    }
    CHECK(run.out.find("tokens/s") != std::string::npos);
    CHECK(run.out.find("median per-token latency") != std::string::npos);
  }
}

TEST_CASE("generate: bad flags and files exit 2 naming them", "[generate]") {
  const testing::TempDir dir("scanshard-generate-bad-");
  const std::string d = dir.path.string();
  std::ofstream(d + "/empty.txt");
  // a real checkpoint of a model with a learned position table (128 rows; the default prompt is 32 bytes)
  std::ofstream(d + "/plan.yaml") << "model: gpt-tiny\nmesh: {data: 1}\nglobal_batch: 2\nmicro_batch: 2\nseq_len: 16\n";
  REQUIRE(testing::sh(std::string("env OMP_NUM_THREADS=1 ") + SCANSHARD_BIN + " train --plan " + d + "/plan.yaml --steps 1 --checkpoint-dir " + d +
                          "/ck",
                      dir.path)
              .code == 0);
  const std::string ck = d + "/ck/step-00000001.h5";
  const std::string bin = std::string("env OMP_NUM_THREADS=1 ") + SCANSHARD_BIN + " generate ";
  for (const auto& [args, says] : std::vector<std::pair<std::string, std::string>>{
           {"--checkpoint " + d + "/none.h5", "none.h5: not a scanshard checkpoint (no such file)"},
           {"--checkpoint x.h5 --tokens 0", "--tokens: must be at least 1"},
           {"--checkpoint x.h5 --batch 0", "--batch: must be at least 1"},
           {"--checkpoint x.h5 --temperature -1", "--temperature"},
           {"--checkpoint x.h5 --top-k 3", "--top-k: needs --temperature"},
           {"--checkpoint x.h5 --prompt-file " + d + "/missing.txt", "--prompt-file: " + d + "/missing.txt: cannot be read"},
           {"--checkpoint x.h5 --prompt-file " + d + "/empty.txt", "empty"},
           {"--checkpoint " + d + "/empty.txt", "empty.txt: not a scanshard checkpoint"},
           {"--checkpoint " + ck + " --tokens 120", "exceed gpt-tiny's 128 learned positions"},
           {"--checkpoint " + ck + " --model hawk-tiny", "holds model 'gpt-tiny', not 'hawk-tiny'"}}) {
    const auto run = testing::sh(bin + args, dir.path);
    INFO(args << "\n" << run.out);
    CHECK(run.code == 2);
    CHECK(run.out.find(says) != std::string::npos);
  }
}
#endif

TEST_CASE("sampling: greedy is the argmax, top-k 1 is greedy, a seed reproduces its draws", "[generate]") {
  const std::vector<float> z = {0.1f, 2.0f, -1.0f, 1.9f, 2.0f, 0.5f};
  std::mt19937_64 rng(1);
  CHECK(train::sample_token(z.data(), 6, {}, rng) == 1);  // the lower id of the tie at 2.0
  CHECK(train::sample_token(z.data(), 6, {0.7, 1}, rng) == 1);
  std::mt19937_64 a(42), b(42);
  for (int i = 0; i < 50; ++i) CHECK(train::sample_token(z.data(), 6, {1.3, 0}, a) == train::sample_token(z.data(), 6, {1.3, 0}, b));
}

TEST_CASE("sampling: draws follow the softmax of the top-k logits over the temperature", "[generate]") {
  const std::vector<float> z = {0.3f, 1.0f, -0.5f, 0.8f, 0.0f};
  const double T = 0.9;
  const int k = 3, n = 40000;  // top 3: ids 1 (1.0), 3 (0.8), 0 (0.3)
  std::mt19937_64 rng(7);
  std::map<int, int> count;
  for (int i = 0; i < n; ++i) ++count[train::sample_token(z.data(), 5, {T, k}, rng)];
  CHECK(count.size() == 3);
  double norm = 0;
  for (int id : {1, 3, 0}) norm += std::exp(z[id] / T);
  for (int id : {1, 3, 0}) {
    const double p = std::exp(z[id] / T) / norm, sigma = std::sqrt(n * p * (1 - p));
    INFO("id " << id << ": " << count[id] << " draws, expected " << n * p);
    CHECK(std::abs(count[id] - n * p) < 5 * sigma);
  }
}
