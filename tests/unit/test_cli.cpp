// tests/unit/test_cli.cpp — the real `scanshard` binary: exit codes (0 ok, 2 bad input/usage),
// messages on stderr, and the bad-input corpus in tests/data/bad (each file states its kind and
// the message fragment it must produce in its first lines).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {

struct Result { int code; std::string out, err; };

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result run(const std::string& args) {
  const fs::path dir = fs::temp_directory_path() / ("scanshard-cli-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto out = dir / "out", err = dir / "err";
  const std::string cmd = std::string(SCANSHARD_BIN) + " " + args + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  Result r{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), slurp(out), slurp(err)};
  fs::remove_all(dir);
  return r;
}

}  // namespace

TEST_CASE("CLI version and help flags exit 0", "[cli]") {
  auto v = run("--version");
  CHECK(v.code == 0);
  CHECK_THAT(v.out, Catch::Contains("scanshard"));
  auto h = run("--help");
  CHECK(h.code == 0);
  CHECK_THAT(h.out, Catch::Contains("models"));
  CHECK_THAT(h.out, Catch::Contains("clusters"));
}

TEST_CASE("CLI usage errors exit 2", "[cli]") {
  CHECK(run("").code == 2);
  CHECK(run("frobnicate").code == 2);
  CHECK(run("models --no-such-flag").code == 2);
}

TEST_CASE("CLI models lists presets and its JSON carries exact counts", "[cli]") {
  auto t = run("models");
  REQUIRE(t.code == 0);
  CHECK_THAT(t.out, Catch::Contains("griffin-400m"));
  CHECK_THAT(t.out, Catch::Contains("rwkv6-3b"));
  auto j = run("models --json --family griffin");
  REQUIRE(j.code == 0);
  const auto arr = nlohmann::json::parse(j.out);
  bool found = false;
  for (const auto& m : arr) {
    CHECK(m["family"] == "griffin");
    if (m["name"] == "recurrentgemma-2b") {
      found = true;
      CHECK(m["parameters"].get<std::int64_t>() == 2682862080LL);  // published total
    }
  }
  CHECK(found);
}

TEST_CASE("CLI clusters lists presets and its JSON carries device counts", "[cli]") {
  auto t = run("clusters");
  REQUIRE(t.code == 0);
  CHECK_THAT(t.out, Catch::Contains("tpu-v5p-4096"));
  CHECK_THAT(t.out, Catch::Contains("dgx-h100-32"));
  auto j = run("clusters --json tpu-v5p-4096");
  REQUIRE(j.code == 0);
  CHECK(nlohmann::json::parse(j.out)[0]["devices"] == 4096);
}

TEST_CASE("CLI unknown presets exit 2 and list what exists", "[cli]") {
  auto r = run("models griffin-9000");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown model preset 'griffin-9000'"));
  CHECK_THAT(r.err, Catch::Contains("griffin-400m"));
  CHECK(r.out.empty());
  auto f = run("models --family gryffin");
  CHECK(f.code == 2);
  CHECK(run("models /no/such/file.yaml").code == 2);
}

TEST_CASE("bad-input corpus: every file is rejected with exit 2 and its message", "[cli][corpus]") {
  const fs::path dir = fs::path(SCANSHARD_TEST_DATA) / "bad";
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const auto path = entry.path();
    std::ifstream in(path);
    std::string kind_line, expect_line;
    std::getline(in, kind_line);
    std::getline(in, expect_line);
    INFO(path.string());
    REQUIRE(kind_line.starts_with("# kind: "));
    REQUIRE(expect_line.starts_with("# expect: "));
    const auto kind = kind_line.substr(8), expect = expect_line.substr(10);
    const std::string cmd = kind == "model"     ? "models "
                            : kind == "cluster" ? "clusters "
                            : kind == "plan"    ? "simulate --plan "
                            : kind == "train"   ? "train --steps 1 --plan "
                                                : "";
    REQUIRE(!cmd.empty());
    // optional third line "# args: ..." with @DATA@ standing for tests/data
    std::string args_line, args;
    std::getline(in, args_line);
    if (args_line.starts_with("# args: ")) {
      args = args_line.substr(7);  // keeps the space after "args:"
      for (auto at = args.find("@DATA@"); at != std::string::npos; at = args.find("@DATA@"))
        args.replace(at, 6, SCANSHARD_TEST_DATA);
    }
    auto r = run(cmd + path.string() + args);
    CHECK(r.code == 2);
    if (args.empty()) CHECK_THAT(r.err, Catch::Contains(path.string() + ":"));  // else the bad file is in the args
    CHECK_THAT(r.err, Catch::Contains(expect));
    CHECK(r.out.empty());
    ++n;
  }
  CHECK(n >= 30);
}

TEST_CASE("CLI simulate prices every example plan", "[cli]") {
  const fs::path dir = fs::path(SCANSHARD_TEST_DATA) / ".." / ".." / "configs" / "plans";
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    INFO(entry.path().string());
    auto r = run("simulate --json --plan " + entry.path().string());
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["step_seconds"].get<double>() > 0);
    double sum = 0;
    for (const auto& [k, v] : j["breakdown_seconds"].items()) sum += v.get<double>();
    CHECK(sum == Approx(j["step_seconds"].get<double>()));
    ++n;
  }
  CHECK(n >= 3);
}

TEST_CASE("CLI simulate sweeps sequence length at fixed tokens per batch", "[cli]") {
  auto r = run("simulate --json --model mqa-400m --cluster tpu-v3-256 --mesh data=64,tensor=4 --global-batch 256 "
               "--seq-len 2048 --sweep seq=2048,8192");
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j["sweep"].size() == 2);
  CHECK(j["sweep"][1]["global_batch"] == 64);  // 256 · 2048 / 8192
  CHECK(j["sweep"][1]["relative_to_first"].get<double>() > 1.0);
  CHECK(run("simulate --model mqa-400m --cluster tpu-v3-256 --sweep len=2").code == 2);
  CHECK(run("simulate --model mqa-400m --cluster tpu-v3-256 --mesh data=0").code == 2);
  CHECK(run("simulate --model mqa-400m").code == 2);  // no cluster
}

TEST_CASE("CLI train then report puts measured and predicted seconds side by side", "[cli]") {
  const fs::path dir = fs::temp_directory_path() / ("scanshard-report-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto plan = dir / "plan.yaml", trace = dir / "trace.json";
  std::ofstream(plan) << "model: hawk-tiny\ncluster: cpu-local\nmesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
  REQUIRE(run("train --steps 2 --plan " + plan.string() + " --trace " + trace.string()).code == 0);
  auto r = run("report --plan " + plan.string() + " --trace " + trace.string() + " --out-dir " + dir.string());
  CHECK(r.code == 2);  // the plan says cpu-local (2 devices) but ran on 1 rank: mesh does not match
  std::ofstream(plan) << "model: hawk-tiny\nmesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
  r = run("report --cluster " + std::string(SCANSHARD_TEST_DATA) + "/clusters/one-core.yaml --plan " + plan.string() +
          " --trace " + trace.string() + " --out-dir " + dir.string());
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(slurp(dir / "report.json"));
  bool mlp = false;
  for (const auto& g : j["groups"])
    if (g["group"] == "mlp") {
      mlp = true;
      CHECK(g["predicted_seconds"].get<double>() > 0);
      CHECK(g["measured_seconds"].get<double>() > 0);
    }
  CHECK(mlp);
  CHECK(j["measured_step_seconds"].get<double>() > 0);
  // a trace of another model is refused
  std::ofstream(plan) << "model: griffin-tiny\nmesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
  r = run("report --cluster " + std::string(SCANSHARD_TEST_DATA) + "/clusters/one-core.yaml --plan " + plan.string() +
          " --trace " + trace.string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("the trace is of 'hawk-tiny'"));
  fs::remove_all(dir);
}
