// tests/unit/test_cli.cpp — the real `scanshard` binary: exit codes (0 ok, 2 bad input/usage),
// messages on stderr, and the bad-input corpus in tests/data/bad (each file states its kind and
// the message fragment it must produce in its first lines).
#include <catch2/catch.hpp>

#include <yaml-cpp/yaml.h>

#include "program/embedded.hpp"
#include "program/presets.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/common/checkpoint_edit.hpp"

namespace fs = std::filesystem;

namespace {

struct Result { int code; std::string out, err; };

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `launcher SCANSHARD_BIN args` in a shell (launcher: e.g. mpirun -n 3).
Result run(const std::string& args, const std::string& launcher = "") {
  const fs::path dir = fs::temp_directory_path() / ("scanshard-cli-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto out = dir / "out", err = dir / "err";
  const std::string cmd = launcher + " " + std::string(SCANSHARD_BIN) + " " + args + " >" + out.string() + " 2>" + err.string();
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
  // an axis named twice in a mesh flag: which one would win is a guess, so neither does
  for (const char* cmd : {"plan --model gpt-tiny --cluster dgx-a100-1 --fix data=2,data=4",
                          "simulate --model gpt-tiny --cluster dgx-a100-1 --mesh data=4,data=2 --global-batch 8 --seq-len 64"}) {
    const auto r = run(cmd);
    INFO(cmd << "\n" << r.err);
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("axis 'data' is given twice"));
  }
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
  // the family table's names, every one (the transformer family too)
  CHECK_THAT(f.err, Catch::Contains("--family: unknown value 'gryffin' (one of: griffin, hawk, mqa, rwkv4, rwkv6, transformer)"));
  CHECK_THAT(run("models --family transformer").out, Catch::Contains("gpt-tiny"));
  CHECK(run("models /no/such/file.yaml").code == 2);
}

// ---- the bad-input corpus ----------------------------------------------------------------
//
// Every tests/data/bad/*.yaml starts with header lines:
//   # kind: model|cluster|plan|train|resume|report   which command gets the file (see corpus_command;
//                                              resume: train cases of damaged checkpoints)
//   # expect: <fragment>                       that stderr must contain
//   # args: <more arguments>                   optional; placeholders below
//   # fixture: <source> [<edit> ...]           optional; a generated non-YAML input, @FIXTURE@ in args
// Placeholders in args: @DATA@ = tests/data, @TMP@ = a fresh empty directory for this case (after
// the run it must hold no file: no partial output), @FIXTURE@ = the fixture file.
//   # ranks3: <mesh>                           optional (train): also run under mpirun -n 3 with the
//                                              plan's `mesh:` line set to this 3-device mesh
// Fixture sources: checkpoint:<model> (a real checkpoint of that preset after one training step,
// made once per test process with the CLI), json:<file in tests/data/inputs>, random:<bytes>
// (seeded random bytes), empty, fifo (a named pipe: nothing may wait for its writer).
// Byte edits, in order: truncate:<bytes>|<percent>%, flip:<offset>|<percent>% (inverts one byte;
// a negative offset counts from the end). JSON edits (json: sources): set:<pointer>=<JSON value>,
// del:<pointer>. Checkpoint edits (tests/common/checkpoint_edit.hpp, applied to the written file
// after the byte edits): meta:<attr>=<int64>, meta-uint:<attr>=<uint64>, meta-float:<attr>=<x>,
// meta-string:<attr>=<text> (\n: a newline), meta-delete:<attr>, delete:<object>,
// dtype:<dataset>=f16|f64|f32be|i32, shape:<dataset>=<d0>x<d1>..., reseal (the CRC made to match).
// Each case must exit 2 with the fragment on stderr, crash nowhere and print no result on stdout
// (train may print its one-line header before it reads a --resume file, nothing else).
namespace {

struct CorpusCase {
  fs::path file;
  std::map<std::string, std::string> header;
};

CorpusCase read_case(const fs::path& path) {
  CorpusCase c{path, {}};
  std::ifstream in(path, std::ios::binary);
  std::string line;
  while (std::getline(in, line) && line.starts_with("# ")) {
    const auto colon = line.find(": ");
    if (colon == std::string::npos) break;
    c.header[line.substr(2, colon - 2)] = line.substr(colon + 2);
  }
  return c;
}

std::string corpus_command(const std::string& kind) {
  if (kind == "model") return "models ";
  if (kind == "cluster") return "clusters ";
  if (kind == "plan") return "simulate --plan ";
  if (kind == "train" || kind == "resume") return "train --steps 1 --plan ";
  if (kind == "report") return "report --plan ";
  return "";
}

void replace_all(std::string& s, const std::string& what, const std::string& with) {
  for (auto at = s.find(what); at != std::string::npos; at = s.find(what, at + with.size())) s.replace(at, what.size(), with);
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Applies a byte edit (truncate, flip); false if `op` is not one.
bool byte_edit(std::string& bytes, const std::string& op, const std::string& arg) {
  if (op != "truncate" && op != "flip") return false;
  const auto n = static_cast<std::int64_t>(bytes.size());
  std::int64_t at = arg.ends_with("%") ? n * std::stoll(arg) / 100 : std::stoll(arg);
  if (at < 0) at += n;
  REQUIRE(at >= 0);
  if (op == "truncate") {
    REQUIRE(at <= n);
    bytes.resize(static_cast<std::size_t>(at));
  } else {
    REQUIRE(at < n);
    bytes[static_cast<std::size_t>(at)] = static_cast<char>(~bytes[static_cast<std::size_t>(at)]);
  }
  return true;
}

// Applies a JSON edit (set, del) to a json: source; false if `op` is not one.
bool json_edit(nlohmann::json& j, const std::string& op, const std::string& arg) {
  if (op == "del") {
    const nlohmann::json::json_pointer at(arg);
    j.at(at.parent_pointer()).erase(at.back());
    return true;
  }
  if (op != "set") return false;
  const auto eq = arg.find('=');
  REQUIRE(eq != std::string::npos);
  j[nlohmann::json::json_pointer(arg.substr(0, eq))] = nlohmann::json::parse(arg.substr(eq + 1));
  return true;
}

// "a=b" -> {a, b}.
std::pair<std::string, std::string> split_eq(const std::string& arg) {
  const auto eq = arg.find('=');
  REQUIRE(eq != std::string::npos);
  return {arg.substr(0, eq), arg.substr(eq + 1)};
}

// "a\\nb" (backslash, n) -> "a", newline, "b".
std::string unescape_newlines(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool newline = s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n';
    out += newline ? '\n' : s[i];
    i += newline ? 1 : 0;
  }
  return out;
}

// Applies a checkpoint edit to the file; false if `op` is not one.
bool checkpoint_edit(const std::string& file, const std::string& op, const std::string& arg) {
  namespace t = scanshard::testing;
  const auto [key, value] = arg.find('=') == std::string::npos ? std::pair{arg, std::string()} : split_eq(arg);
  if (op == "meta") t::set_meta_int(file, key, std::stoll(value));
  else if (op == "meta-uint") t::set_meta_uint(file, key, std::stoull(value));
  else if (op == "meta-float") t::set_meta_float(file, key, std::stod(value));
  else if (op == "meta-string") t::set_meta_string(file, key, unescape_newlines(value));
  else if (op == "meta-delete") t::delete_meta(file, key);
  else if (op == "delete") t::delete_object(file, key);
  else if (op == "dtype") t::retype_dataset(file, key, t::parse_dtype(value));
  else if (op == "shape") {
    std::vector<std::uint64_t> dims;
    std::istringstream in(value);
    for (std::string d; std::getline(in, d, 'x');) dims.push_back(std::stoull(d));
    t::reshape_dataset(file, key, dims);
  } else if (op == "reseal") t::reseal(file);
  else return false;
  return true;
}

// Generated fixture files, made once per process under one temporary directory.
class Fixtures {
 public:
  Fixtures() : dir_(fs::temp_directory_path() / ("scanshard-fixtures-" + std::to_string(::getpid()))) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~Fixtures() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // The file for one fixture spec (see above).
  fs::path get(const std::string& spec) {
    std::istringstream words(spec);
    std::string source, edit;
    words >> source;
    const fs::path out = dir_ / ("fixture-" + std::to_string(count_++) + (source.starts_with("json:") ? ".json" : ".h5"));
    if (source == "fifo") {
      REQUIRE(::mkfifo(out.c_str(), 0600) == 0);
      return out;
    }
    std::string bytes = source_bytes(source);
    nlohmann::json j = source.starts_with("json:") ? nlohmann::json::parse(bytes) : nlohmann::json();
    std::vector<std::pair<std::string, std::string>> later;  // checkpoint edits, on the written file
    while (words >> edit) {
      const auto colon = edit.find(':');
      const std::string op = edit.substr(0, colon), arg = colon == std::string::npos ? "" : edit.substr(colon + 1);
      if (!byte_edit(bytes, op, arg) && !json_edit(j, op, arg)) later.emplace_back(op, arg);
    }
    if (source.starts_with("json:")) bytes = j.dump();
    std::ofstream(out, std::ios::binary) << bytes;
    for (const auto& [op, arg] : later)
      if (!checkpoint_edit(out.string(), op, arg)) FAIL("unknown fixture edit '" << op << "'");
    return out;
  }
  // A copy of the plan file `plan` with its `mesh:` line replaced (the plan of a run on more ranks).
  fs::path plan_with_mesh(const fs::path& plan, const std::string& mesh) {
    std::istringstream in(read_bytes(plan));
    std::string text, line;
    while (std::getline(in, line)) text += (line.starts_with("mesh:") ? "mesh: " + mesh : line) + "\n";
    const fs::path out = dir_ / plan.filename();
    std::ofstream(out) << text;
    return out;
  }

 private:
  std::string source_bytes(const std::string& source) {
    if (source.starts_with("checkpoint:")) return read_bytes(checkpoint(source.substr(11)));
    if (source.starts_with("json:")) return read_bytes(fs::path(SCANSHARD_TEST_DATA) / "inputs" / source.substr(5));
    if (source.starts_with("random:")) {
      std::mt19937 g(2024);
      std::string bytes(std::stoul(source.substr(7)), '\0');
      for (auto& b : bytes) b = static_cast<char>(g() & 0xff);
      return bytes;
    }
    if (source != "empty") FAIL("unknown fixture source '" << source << "'");
    return "";
  }
  fs::path checkpoint(const std::string& model) {
    const fs::path ck = dir_ / ("ckpt-" + model);
    if (!fs::exists(ck / "step-00000001.h5")) {
      const fs::path plan = dir_ / ("plan-" + model + ".yaml");
      std::ofstream(plan) << "model: " << model << "\nmesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
      const auto r = run("train --steps 1 --plan " + plan.string() + " --checkpoint-dir " + ck.string());
      INFO(r.err);
      REQUIRE(r.code == 0);
      REQUIRE(fs::exists(ck / "step-00000001.h5"));
    }
    return ck / "step-00000001.h5";
  }
  fs::path dir_;
  int count_ = 0;
};

Fixtures& fixtures() {
  static Fixtures f;
  return f;
}

// Runs every corpus file of `kinds`; returns how many ran.
// Runs one corpus case (its plan file `plan`, under `launcher` when not empty) and checks it.
void run_case(const CorpusCase& c, const fs::path& plan, const std::string& launcher) {
  const std::string& kind = c.header.at("kind");
  const fs::path tmp = fs::temp_directory_path() / ("scanshard-case-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  std::string args = c.header.count("args") ? " " + c.header.at("args") : "";
  replace_all(args, "@DATA@", SCANSHARD_TEST_DATA);
  replace_all(args, "@TMP@", tmp.string());
  if (c.header.count("fixture")) replace_all(args, "@FIXTURE@", fixtures().get(c.header.at("fixture")).string());
  const auto r = run(corpus_command(kind) + plan.string() + args, launcher);
  INFO((launcher.empty() ? "" : launcher + ": ") << "exit " << r.code << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.code == 2);
  if (args.empty()) CHECK_THAT(r.err, Catch::Contains(plan.string() + ":"));  // else the bad file may be in the args
  CHECK_THAT(r.err, Catch::Contains(c.header.at("expect")));
  CHECK_THAT(r.err, !Catch::Contains("Sanitizer") && !Catch::Contains("runtime error:"));
  std::istringstream out(r.out);
  for (std::string line; std::getline(out, line);)
    CHECK(((kind == "train" || kind == "resume") &&
           (line.starts_with("train ") || line.starts_with("optimizer: ") || line.starts_with("note: "))));
  for (const auto& e : fs::recursive_directory_iterator(tmp)) {
    INFO("left behind: " << e.path().string());
    CHECK(!e.is_regular_file());
  }
  fs::remove_all(tmp);
}

// Runs every corpus file of `kinds` (and, with ranks3 headers, again on 3 ranks); returns how many ran.
int run_corpus(const std::set<std::string>& kinds) {
  const fs::path dir = fs::path(SCANSHARD_TEST_DATA) / "bad";
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  int n = 0;
  for (const auto& path : files) {
    INFO(path.string());
    const CorpusCase c = read_case(path);
    REQUIRE(c.header.count("kind"));
    REQUIRE(c.header.count("expect"));
    REQUIRE(!corpus_command(c.header.at("kind")).empty());
    if (!kinds.count(c.header.at("kind"))) continue;
    run_case(c, path, "");
#ifdef SCANSHARD_MPIRUN
    if (c.header.count("ranks3"))
      run_case(c, fixtures().plan_with_mesh(path, c.header.at("ranks3")), std::string("OMP_NUM_THREADS=1 ") + SCANSHARD_MPIRUN + " -n 3");
#endif
    ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("bad-input corpus: models and clusters are rejected with exit 2 and their message", "[cli][corpus]") {
  CHECK(run_corpus({"model", "cluster"}) >= 20);
}

TEST_CASE("bad-input corpus: plans and traces are rejected with exit 2 and their message", "[cli][corpus]") {
  CHECK(run_corpus({"plan", "report"}) >= 15);
}

TEST_CASE("bad-input corpus: train inputs (plans, data, checkpoints) are rejected with exit 2", "[cli][corpus]") {
  CHECK(run_corpus({"train"}) >= 15);
}

TEST_CASE("bad-input corpus: checkpoints with bad tensors or /meta are refused with exit 2 on 1 and 3 ranks", "[cli][corpus]") {
  CHECK(run_corpus({"resume"}) >= 15);
  for (const auto& entry : fs::directory_iterator(fs::path(SCANSHARD_TEST_DATA) / "bad")) {
    const CorpusCase c = read_case(entry.path());
    INFO(entry.path().string());
    if (c.header.count("kind") && c.header.at("kind") == "resume") CHECK(c.header.count("ranks3"));
  }
}

TEST_CASE("bad-input corpus has at least 60 inputs, every one of a known kind", "[cli][corpus]") {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(SCANSHARD_TEST_DATA) / "bad")) {
    INFO(entry.path().string());
    CHECK(entry.path().extension() == ".yaml");
    const CorpusCase c = read_case(entry.path());
    CHECK(!corpus_command(c.header.count("kind") ? c.header.at("kind") : "").empty());
    CHECK(c.header.count("expect"));
    ++n;
  }
  CHECK(n >= 60);
}

TEST_CASE("a plan made for a slice (plan --devices) round-trips into simulate with the planner's price", "[cli]") {
  const fs::path dir = fs::temp_directory_path() / ("scanshard-slice-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string plan = (dir / "p.yaml").string();
  const auto made = run("plan --model griffin-tiny --cluster tpu-v5e-64 --devices 4 --global-batch 8 --seq-len 128 --json --out " + plan);
  REQUIRE(made.code == 0);
  const auto planned = nlohmann::json::parse(made.out);
  const auto priced = run("simulate --json --plan " + plan);
  INFO(priced.err);
  REQUIRE(priced.code == 0);
  const auto sim = nlohmann::json::parse(priced.out);
  CHECK(sim["step_seconds"].get<double>() == Approx(planned["top"][0]["step_seconds"].get<double>()).epsilon(1e-9));
  // a slice the cluster cannot give is refused naming the plan file's key
  const std::string bad = (dir / "bad.yaml").string();
  std::ofstream(bad) << "model: griffin-tiny\ncluster: tpu-v5e-64\ndevices: 65\nmesh: {data: 4}\nglobal_batch: 8\nseq_len: 128\n";
  const auto refused = run("simulate --plan " + bad);
  CHECK(refused.code == 2);
  CHECK_THAT(refused.err, Catch::Contains("bad.yaml: devices") && Catch::Contains("65"));
  fs::remove_all(dir);
}

namespace {
std::string embedded_text(std::string_view path) {
  for (const auto& f : scanshard::embedded_files())
    if (f.path == path) return std::string(f.text);
  FAIL("no embedded file " << path);
  return "";
}
}  // namespace

TEST_CASE("relative model, cluster and chip paths in a YAML file resolve against that file's directory", "[cli][paths]") {
  // root/{models,chips,clusters,plans,out}: every file names the next by a path relative to itself;
  // the commands run from root/a/b and from /, where those paths lead nowhere (root/a/b is one
  // level deeper than root/plans, so the plan's ../models is root/a/models from there).
  const fs::path root = fs::temp_directory_path() / ("scanshard-relpaths-" + std::to_string(::getpid()));
  fs::remove_all(root);
  for (const char* d : {"models", "chips", "clusters", "plans", "out", "a/b"}) fs::create_directories(root / d);
  std::ofstream(root / "models/m.yaml") << embedded_text("configs/models/griffin-tiny.yaml");
  std::ofstream(root / "chips/core.yaml") << embedded_text("configs/chips/cpu-core.yaml");
  std::string cluster = embedded_text("configs/clusters/cpu-local.yaml");
  cluster.replace(cluster.find("chip: cpu-core"), 14, "chip: ../chips/core.yaml");
  cluster.replace(cluster.find("name: cpu-local"), 15, "name: rel-cluster");
  std::ofstream(root / "clusters/c.yaml") << cluster;
  std::ofstream(root / "plans/p.yaml") << "model: ../models/m.yaml\ncluster: ../clusters/c.yaml\nmesh: {data: 2}\n"
                                          "global_batch: 4\nseq_len: 64\n";
  const std::string in_elsewhere = "cd " + (root / "a/b").string() + " &&";

  const auto sim = run("simulate --plan ../../plans/p.yaml", in_elsewhere);
  INFO(sim.err);
  CHECK(sim.code == 0);
  CHECK_THAT(sim.out, Catch::Contains("griffin-tiny") && Catch::Contains("rel-cluster") && Catch::Contains("CPU core"));
  // the same model named by another path to the same file is no mismatch; another model is
  CHECK(run("simulate --plan ../../plans/p.yaml --model " + (root / "models/m.yaml").string(), in_elsewhere).code == 0);
  const auto other = run("simulate --plan ../../plans/p.yaml --model hawk-tiny", in_elsewhere);
  CHECK(other.code == 2);
  CHECK_THAT(other.err, Catch::Contains("p.yaml: model: the plan was made for") && Catch::Contains("but --model is 'hawk-tiny'"));
  // a cluster file read from elsewhere finds its chip next to it
  CHECK(run("clusters " + (root / "clusters/c.yaml").string(), "cd / &&").code == 0);

  // plan --out writes paths relative to the plan file, so the plan works from anywhere
  const auto made =
      run("plan --model ../../models/m.yaml --cluster ../../clusters/c.yaml --global-batch 4 --seq-len 64 --top 1 --out "
          "../../out/q.yaml",
          in_elsewhere);
  INFO(made.err);
  REQUIRE(made.code == 0);
  const std::string written = slurp(root / "out/q.yaml");
  CHECK_THAT(written, Catch::Contains("model: ../models/m.yaml") && Catch::Contains("cluster: ../clusters/c.yaml"));
  CHECK(run("simulate --plan " + (root / "out/q.yaml").string(), "cd / &&").code == 0);
  fs::remove_all(root);
}

TEST_CASE("CLI refuses a FIFO as a plan, model, trace or validate.json at once: exit 2 naming it, nothing waits", "[cli]") {
  // A named pipe with no writer: reading it blocked forever (load_yaml_file, the trace reader,
  // report --validate's validate.json).
  const fs::path dir = fs::temp_directory_path() / ("scanshard-fifo-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path fifo = dir / "pipe.yaml", plan = dir / "plan.yaml";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::ofstream(plan) << "model: hawk-tiny\nmesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
  fs::create_directories(dir / "validate");
  REQUIRE(::mkfifo((dir / "validate" / "validate.json").c_str(), 0600) == 0);
  const fs::path html = dir / "page.html";
  for (const std::string& args : {"simulate --cluster cpu-local --plan " + fifo.string(), "plan --cluster cpu-local --model " + fifo.string(),
                                  "report --plan " + plan.string() + " --trace " + fifo.string(),
                                  "report --plan " + fifo.string() + " --trace " + plan.string(),
                                  "report --validate " + (dir / "validate").string() + " --html " + html.string()}) {
    const auto r = run(args);
    INFO(args << "\n" << r.err);
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains("pipe.yaml: ") || Catch::Contains("validate.json: "));
    CHECK_THAT(r.err, Catch::Contains("not a regular file"));
  }
  CHECK(!fs::exists(html));
  fs::remove_all(dir);
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
  CHECK_THAT(r.err, Catch::Contains("model: the trace has hawk-tiny, the plan's model is griffin-tiny"));
  fs::remove_all(dir);
}

TEST_CASE("validate --published prices the built-in suite without MPI and writes CSV and JSON", "[cli][published]") {
  const fs::path dir = fs::temp_directory_path() / "scanshard-published-test";
  fs::remove_all(dir);
  const auto r = run("validate --published --out " + dir.string());
  REQUIRE(r.code == 0);
  CHECK(r.out.find("narayanan2021-table1") != std::string::npos);
  CHECK(r.out.find("leave-one-source-out") != std::string::npos);
  REQUIRE(slurp(dir / "published.csv").starts_with("source,row,where,metric"));
  REQUIRE(slurp(dir / "published.json").find("\"sources\"") != std::string::npos);
  const auto bad = run("validate --published --suite " + (dir / "missing.yaml").string());
  CHECK(bad.code == 2);
  CHECK(bad.err.find("missing.yaml") != std::string::npos);
  CHECK(run("validate --suite x.yaml").code == 2);  // --suite without --published
  // a FIFO is refused before it is opened (it would block); --out onto a file names it
  const fs::path fifo = dir / "suite.fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const auto f = run("validate --published --suite " + fifo.string());
  CHECK(f.code == 2);
  CHECK(f.err.find("not a regular file") != std::string::npos);
  const fs::path file = dir / "a-file";
  std::ofstream(file) << "x";
  const auto o = run("validate --published --out " + file.string());
  CHECK(o.code == 2);
  CHECK(o.err.find("is not a directory") != std::string::npos);
  CHECK(slurp(file) == "x");
  fs::remove_all(dir);
}

// ---- outputs onto what is not a regular file (issue 25) ----------------------------------
namespace {

struct OutputScratch {
  fs::path dir = fs::temp_directory_path() / ("scanshard-outputs-" + std::to_string(::getpid()));
  OutputScratch() {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~OutputScratch() { fs::remove_all(dir); }
  fs::path fifo(const std::string& name) const {
    const fs::path p = dir / name;
    REQUIRE(::mkfifo(p.c_str(), 0600) == 0);
    return p;
  }
};

std::set<std::string> names_in(const fs::path& d) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(d)) out.insert(e.path().filename().string());
  return out;
}

bool still_fifo(const fs::path& p) { return fs::is_fifo(fs::symlink_status(p)); }

const std::string kPlanArgs = "plan --model griffin-tiny --cluster cpu-local --global-batch 2 --seq-len 16 --dtype fp32 --quiet --out ";

}  // namespace

TEST_CASE("plan --out refuses a FIFO, a directory and a symbolic link with exit 2 and leaves them", "[cli][output]") {
  const OutputScratch s;
  const fs::path fifo = s.fifo("plan.fifo"), d = s.dir / "plans", link = s.dir / "link.yaml";
  fs::create_directories(d);
  std::ofstream(s.dir / "kept.yaml") << "kept";
  fs::create_symlink(s.dir / "kept.yaml", link);
  auto r = run(kPlanArgs + fifo.string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains(fifo.string() + ": cannot write: it is a FIFO"));
  CHECK(still_fifo(fifo));
  r = run(kPlanArgs + d.string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains(d.string() + ": cannot write: it is a directory"));
  CHECK(fs::is_empty(d));
  r = run(kPlanArgs + link.string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains(link.string() + ": cannot write: it is a symbolic link"));
  CHECK(fs::is_symlink(link));
  CHECK(slurp(s.dir / "kept.yaml") == "kept");
  CHECK(names_in(s.dir) == std::set<std::string>{"plan.fifo", "plans", "kept.yaml", "link.yaml"});  // no plans.tmp
  // the same command writes a plain path: the refusals were about the targets
  r = run(kPlanArgs + (s.dir / "plan.yaml").string());
  CHECK(r.code == 0);
  CHECK_THAT(slurp(s.dir / "plan.yaml"), Catch::Contains("mesh:"));
}

TEST_CASE("report --out-dir refuses a FIFO among its outputs before writing any, and a file as the directory", "[cli][output]") {
  const OutputScratch s;
  const fs::path plan = s.dir / "plan.yaml", trace = s.dir / "trace.json", out = s.dir / "report";
  std::ofstream(plan) << "model: hawk-tiny\nmesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
  nlohmann::json steps = nlohmann::json::array();
  int step = 0;
  for (double w : {0.5, 0.01, 0.02})
    steps.push_back({{"step", step++}, {"loss", 5.0}, {"wall_seconds", w},
                     {"ops", {{{"phase", "forward"}, {"op", "gated_mlp"}, {"name", "mlp"}, {"seconds", w / 2}, {"calls", 1}}}}});
  std::ofstream(trace) << nlohmann::json{{"model", "hawk-tiny"}, {"mesh", "1"}, {"ranks", 1}, {"rank", 0}, {"global_batch", 2},
                                         {"micro_batch", 2}, {"seq_len", 16}, {"dtype", "fp32"}, {"steps", steps}}
                              .dump();
  const std::string args = "report --cluster " + std::string(SCANSHARD_TEST_DATA) + "/clusters/one-core.yaml --plan " +
                           plan.string() + " --trace " + trace.string() + " --out-dir ";
  fs::create_directories(out);
  const fs::path fifo = out / "report.json";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto r = run(args + out.string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains(fifo.string() + ": cannot write: it is a FIFO"));
  CHECK(still_fifo(fifo));
  CHECK(names_in(out) == std::set<std::string>{"report.json"});  // report.csv, first in order, not written either
  r = run(args + plan.string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("--out-dir: '" + plan.string() + "' exists and is not a directory"));
  CHECK_THAT(slurp(plan), Catch::StartsWith("model: hawk-tiny"));
  fs::remove(fifo);
  r = run(args + out.string());  // the same report with the FIFO gone
  CHECK(r.code == 0);
  CHECK(names_in(out) == std::set<std::string>{"report.csv", "report.json"});
}

TEST_CASE("train --trace onto a FIFO is refused before training, exit 2, and leaves it", "[cli][output]") {
  const OutputScratch s;
  const fs::path plan = s.dir / "plan.yaml", fifo = s.fifo("trace.fifo");
  std::ofstream(plan) << "model: hawk-tiny\nmesh: {data: 1}\nglobal_batch: 2\nseq_len: 16\n";
  const auto r = run("train --steps 1 --plan " + plan.string() + " --trace " + fifo.string());
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains(fifo.string() + ": cannot write: it is a FIFO"));
  CHECK_THAT(r.out, !Catch::Contains("step 1"));  // refused before the first step
  CHECK(still_fifo(fifo));
  CHECK(names_in(s.dir) == std::set<std::string>{"plan.yaml", "trace.fifo"});
}

TEST_CASE("CLI simulate says in its output and exit status whether a plan fits the memory a plan may use", "[cli]") {
  // Griffin-1.3B, one 64K-token sequence per A100 with nothing but data parallelism: far beyond
  // 90 % of 80 GB (the same limit `plan` uses); one 2K-token sequence per device fits.
  const auto c = scanshard::load_cluster("dgx-a100-4");
  const auto big = run("simulate --json --model griffin-1.3b --cluster dgx-a100-4 --mesh data=32 --global-batch 32 --seq-len 65536");
  INFO(big.err);
  CHECK(big.code == 4);
  const auto j = nlohmann::json::parse(big.out);
  CHECK(j["memory_bytes"]["total"].get<double>() > 0.9 * c.chip.memory_bytes);
  CHECK(j["memory_bytes"]["limit"].get<double>() == Approx(0.9 * c.chip.memory_bytes));
  CHECK_FALSE(j["fits"].get<bool>());
  const auto text = run("simulate --model griffin-1.3b --cluster dgx-a100-4 --mesh data=32 --global-batch 32 --seq-len 65536");
  CHECK(text.code == 4);
  CHECK_THAT(text.out, Catch::Contains("DOES NOT FIT") && Catch::Contains("90 % of the chip's"));
  const auto small = run("simulate --model griffin-1.3b --cluster dgx-a100-4 --mesh data=32 --global-batch 32 --seq-len 2048");
  CHECK(small.code == 0);
  CHECK_THAT(small.out, Catch::Contains("fits in the"));
  // interleaving without a pipeline is refused, naming the key
  const auto v = run("simulate --model griffin-tiny --cluster cpu-local --global-batch 4 --seq-len 128 --virtual-stages 2");
  CHECK(v.code == 2);
  CHECK_THAT(v.err, Catch::Contains("virtual_stages") && Catch::Contains("pipeline = 1"));
}

TEST_CASE("plan --json carries every field of each plan as an object with the plan file's keys and values", "[cli]") {
  const fs::path dir = fs::temp_directory_path() / ("scanshard-planjson-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string out = (dir / "p.yaml").string();
  const auto r = run("plan --json --model mqa-tiny --cluster cpu-local --global-batch 4 --seq-len 64 --top 2 --out " + out);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j["top"].is_array());
  REQUIRE(j["pareto"].is_array());
  const auto& plan = j["top"][0]["plan"];
  REQUIRE(plan.is_object());
  // the written plan file (plan_to_yaml, read back with yaml-cpp) and the JSON agree on every key
  const YAML::Node file = YAML::LoadFile(out);
  int keys = 0;
  for (const auto& kv : file) {
    const std::string key = kv.first.as<std::string>();
    if (key == "model" || key == "cluster") continue;
    INFO(key);
    REQUIRE(plan.contains(key));
    if (kv.second.IsScalar()) {
      const auto& v = plan[key];
      const std::string text = v.is_string() ? v.get<std::string>() : v.is_boolean() ? (v.get<bool>() ? "true" : "false") : v.dump();
      CHECK(text == kv.second.as<std::string>());
    } else if (kv.second.IsMap()) {
      for (const auto& sub : kv.second) {
        const auto& v = plan[key][sub.first.as<std::string>()];
        CHECK((v.is_string() ? v.get<std::string>() : v.dump()) == sub.second.as<std::string>());
      }
    }
    ++keys;
  }
  CHECK(keys >= 15);
  // an attention-only model's summaries say nothing of scans or carries
  for (const auto& c : j["top"]) CHECK_THAT(c["summary"].get<std::string>(), !Catch::Contains("scan:"));
  fs::remove_all(dir);
}

TEST_CASE("CLI simulate --workload prices serving: a sample-length sweep, JSON, flat Hawk and growing MQA", "[cli][inference]") {
  const std::string common = " --cluster tpu-v5e-64 --devices 4 --mesh tensor=2,data=2 --workload generate --prompt-len 512 --batch 8 --json";
  for (const char* model : {"hawk-1.3b", "mqa-1.3b"}) {
    INFO(model);
    auto r = run(std::string("simulate --model ") + model + common + " --sweep sample_len=256,4096");
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    REQUIRE(j["sweep"].size() == 2);
    const double a = j["sweep"][0]["per_token_seconds"].get<double>(), b = j["sweep"][1]["per_token_seconds"].get<double>();
    if (std::string(model) == "hawk-1.3b") CHECK(b == Approx(a).epsilon(1e-12));
    else CHECK(b > a);
    for (const auto& row : j["sweep"]) {
      double sum = 0;
      for (const auto& [k, v] : row["decode_breakdown_seconds"].items()) sum += v.get<double>();
      CHECK(sum == Approx(row["per_token_seconds"].get<double>()));
      // 8 sequences per replica × 2 replicas per round
      CHECK(row["decode_tokens_per_s"].get<double>() == Approx(16 / row["per_token_seconds"].get<double>()));
    }
  }
  auto text = run("simulate --model griffin-1.3b --cluster tpu-v5e-64 --devices 1 --mesh data=1 --workload decode --batch max");
  REQUIRE(text.code == 0);
  CHECK_THAT(text.out, Catch::Contains("per-token latency"));
  CHECK_THAT(text.out, Catch::Contains("largest batch per replica that fits"));
}

TEST_CASE("CLI serving flags: bad values exit 2 naming the flag", "[cli][inference]") {
  const std::string sim = "simulate --model hawk-tiny --cluster tpu-v5e-64 --devices ";
  const std::string base = sim + "1 --mesh data=1";
  const std::vector<std::pair<std::string, std::string>> bad = {
      {base + " --workload serve", "--workload"},
      {base + " --workload decode --batch 0", "--batch"},
      {base + " --workload decode --batch many", "--batch"},
      {base + " --workload generate --prompt-len 0", "--prompt-len"},
      {base + " --workload generate --sample-len -4", "--sample-len"},
      {base + " --workload generate --sweep sample_len=64,0", "--sweep"},
      {base + " --workload generate --sweep seq=64", "--sweep"},
      {base + " --prompt-len 64", "--prompt-len"},  // without --workload
      {sim + "2 --mesh pipeline=2 --workload decode --batch 3", "pipeline divides the batch"},
      {sim + "2 --mesh sequence=2 --workload decode", "mesh.sequence"},
      {"plan --model hawk-tiny --cluster tpu-v5e-64 --devices 2 --workload generate", "--latency-budget"},
  };
  for (const auto& [args, fragment] : bad) {
    INFO(args);
    auto r = run(args);
    CHECK(r.code == 2);
    CHECK_THAT(r.err, Catch::Contains(fragment));
  }
}

TEST_CASE("CLI plan --workload generate keeps the latency budget and explains the rest", "[cli][inference]") {
  auto r = run("plan --model griffin-1.3b --cluster tpu-v5e-64 --devices 4 --workload generate --prompt-len 1024 --sample-len 512 "
               "--latency-budget 0.02 --json");
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(!j["top"].empty());
  double last = 1e300;
  for (const auto& c : j["top"]) {
    CHECK(c["per_token_seconds"].get<double>() <= 0.02);
    CHECK(c["tokens_per_s"].get<double>() <= last);  // highest throughput first
    last = c["tokens_per_s"].get<double>();
    CHECK(c["plan"]["mesh"]["fsdp"] == 1);
    CHECK(c["plan"]["mesh"]["sequence"] == 1);
  }
  // the winner priced again by simulate, from its plan file, gives the same latency
  const fs::path plan = fs::temp_directory_path() / ("scanshard-serve-" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(plan) << j["plan_yaml"].get<std::string>();
  auto s = run("simulate --plan " + plan.string() + " --workload generate --prompt-len 1024 --sample-len 512 --json");
  fs::remove(plan);
  REQUIRE(s.code == 0);
  CHECK(nlohmann::json::parse(s.out)["per_token_seconds"].get<double>() == Approx(j["top"][0]["per_token_seconds"].get<double>()));
  // a budget no plan meets: exit 2 with the why-not lines
  auto none = run("plan --model griffin-1.3b --cluster tpu-v5e-64 --devices 4 --workload generate --latency-budget 1e-6");
  CHECK(none.code == 2);
  CHECK_THAT(none.out, Catch::Contains("over the budget"));
}
