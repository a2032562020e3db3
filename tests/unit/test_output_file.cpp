// tests/unit/test_output_file.cpp — program/output_file.hpp: outputs replace a regular file whole
// or not at all, never replace a FIFO, directory or symbolic link, and on a failed write (a file
// size limit in a forked child, writes failing with EFBIG as on a full disk) leave the old file
// and no temporary file. The references are the file system itself (lstat, directory listings,
// the bytes read back) and strerror's text for the errno the failure must report.
#include <catch2/catch.hpp>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "program/output_file.hpp"
#include "program/yaml_reader.hpp"

namespace fs = std::filesystem;
using scanshard::ConfigError;

namespace {

struct Scratch {
  fs::path dir;
  Scratch() {
    dir = fs::temp_directory_path() / ("scanshard-output-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() { fs::remove_all(dir); }
  std::set<std::string> listing(const fs::path& d) const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(d)) out.insert(e.path().filename().string());
    return out;
  }
  std::set<std::string> listing() const { return listing(dir); }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

mode_t lmode(const fs::path& p) {
  struct stat st{};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st.st_mode;
}

// The ConfigError message of f(), or "" when it throws nothing.
template <typename F>
std::string config_error(F f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

// Runs write_output_file(path, text) in a child whose file size limit is `limit` bytes (SIGXFSZ
// ignored, so a write past it fails with EFBIG). The child's ConfigError message, or "<no error>".
std::string write_with_size_limit(const fs::path& path, const std::string& text, rlim_t limit) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl{};
    ::getrlimit(RLIMIT_FSIZE, &rl);
    rl.rlim_cur = limit;
    std::string msg = "<no error>";
    if (::setrlimit(RLIMIT_FSIZE, &rl) != 0) msg = "<setrlimit failed>";
    else msg = config_error([&] { scanshard::write_output_file(path.string(), text); });
    if (msg.empty()) msg = "<no error>";
    [[maybe_unused]] const ssize_t n = ::write(fds[1], msg.data(), msg.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) msg.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  return msg;
}

}  // namespace

TEST_CASE("write_output_file creates and replaces a regular file whole, with sane permissions", "[output]") {
  Scratch s;
  const fs::path p = s.dir / "plan.yaml";
  const mode_t mask = ::umask(022);
  scanshard::write_output_file(p.string(), "first\n");
  ::umask(mask);
  CHECK(slurp(p) == "first\n");
  CHECK((lmode(p) & 07777) == 0644);
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);  // 0600 stays 0600
  const std::string big(1 << 20, 'x');
  scanshard::write_output_file(p.string(), big);
  CHECK(slurp(p) == big);
  CHECK((lmode(p) & 07777) == 0600);
  CHECK(s.listing() == std::set<std::string>{"plan.yaml"});
}

TEST_CASE("write_output_file refuses a FIFO before opening it and leaves it a FIFO", "[output]") {
  Scratch s;
  const fs::path fifo = s.dir / "out.fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string msg = config_error([&] { scanshard::write_output_file(fifo.string(), "text"); });
  CHECK_THAT(msg, Catch::StartsWith(fifo.string() + ": cannot write"));
  CHECK_THAT(msg, Catch::Contains("FIFO"));
  CHECK(S_ISFIFO(lmode(fifo)));
  CHECK(s.listing() == std::set<std::string>{"out.fifo"});
  CHECK_THAT(config_error([&] { scanshard::check_output_file(fifo.string()); }), Catch::Contains("FIFO"));
}

TEST_CASE("write_output_file refuses a directory and leaves it and its content unchanged", "[output]") {
  Scratch s;
  const fs::path d = s.dir / "out";
  fs::create_directories(d);
  std::ofstream(d / "inside") << "kept";
  const std::string msg = config_error([&] { scanshard::write_output_file(d.string(), "text"); });
  CHECK_THAT(msg, Catch::StartsWith(d.string() + ": cannot write"));
  CHECK_THAT(msg, Catch::Contains("a directory"));
  CHECK(S_ISDIR(lmode(d)));
  CHECK(s.listing() == std::set<std::string>{"out"});
  CHECK(s.listing(d) == std::set<std::string>{"inside"});
  CHECK(slurp(d / "inside") == "kept");
}

TEST_CASE("write_output_file refuses a symbolic link, naming where it points, and changes neither", "[output]") {
  Scratch s;
  const fs::path target = s.dir / "real.yaml", link = s.dir / "link.yaml";
  std::ofstream(target) << "old";
  fs::create_symlink(target, link);
  const std::string msg = config_error([&] { scanshard::write_output_file(link.string(), "new"); });
  CHECK_THAT(msg, Catch::StartsWith(link.string() + ": cannot write"));
  CHECK_THAT(msg, Catch::Contains("symbolic link"));
  CHECK_THAT(msg, Catch::Contains(target.string()));
  CHECK(S_ISLNK(lmode(link)));
  CHECK(slurp(target) == "old");
  CHECK(s.listing() == std::set<std::string>{"real.yaml", "link.yaml"});
  // a dangling link is refused too (it would otherwise become a file of that name)
  const fs::path dangling = s.dir / "dangling.yaml";
  fs::create_symlink(s.dir / "nowhere.yaml", dangling);
  CHECK_THAT(config_error([&] { scanshard::write_output_file(dangling.string(), "new"); }), Catch::Contains("symbolic link"));
  CHECK_FALSE(fs::exists(s.dir / "nowhere.yaml"));
}

TEST_CASE("write_output_file into a missing directory names it and creates nothing", "[output]") {
  Scratch s;
  const fs::path p = s.dir / "no-such-dir" / "x.json";
  const std::string msg = config_error([&] { scanshard::write_output_file(p.string(), "{}"); });
  CHECK_THAT(msg, Catch::StartsWith(p.string() + ": cannot write"));
  CHECK_THAT(msg, Catch::Contains("does not exist"));
  std::ofstream(s.dir / "file") << "x";
  CHECK_THAT(config_error([&] { scanshard::write_output_file((s.dir / "file" / "x.json").string(), "{}"); }),
             Catch::Contains("is not a directory"));
  CHECK(s.listing() == std::set<std::string>{"file"});
  CHECK(slurp(s.dir / "file") == "x");
}

TEST_CASE("a write that fails part-way (file size limit, EFBIG) keeps the old file and leaves no temporary file", "[output]") {
  Scratch s;
  const fs::path p = s.dir / "trace.json";
  std::ofstream(p) << "old content";
  const std::string msg = write_with_size_limit(p, std::string(256 * 1024, 'y'), 64 * 1024);
  CHECK_THAT(msg, Catch::StartsWith(p.string() + ": cannot write: "));
  CHECK_THAT(msg, Catch::Contains(std::strerror(EFBIG)));
  CHECK(slurp(p) == "old content");
  CHECK(s.listing() == std::set<std::string>{"trace.json"});
  // the same write without the limit succeeds (the limit, not the text, made it fail)
  CHECK(write_with_size_limit(p, std::string(256 * 1024, 'y'), RLIM_INFINITY) == "<no error>");
  CHECK(slurp(p) == std::string(256 * 1024, 'y'));
}

TEST_CASE("output directories: an existing non-directory and an uncreatable path are refused with the reason", "[output]") {
  Scratch s;
  const fs::path file = s.dir / "a-file";
  std::ofstream(file) << "x";
  CHECK(config_error([&] { scanshard::make_output_directory(file.string(), "--out"); }) ==
        "--out: '" + file.string() + "' exists and is not a directory");
  const std::string below = (file / "sub").string();
  CHECK(config_error([&] { scanshard::make_output_directory(below, "--out"); }) ==
        "--out: cannot create the directory '" + below + "': " + std::strerror(ENOTDIR));
  CHECK(slurp(file) == "x");
  const fs::path fresh = s.dir / "a" / "b";
  scanshard::make_output_directory(fresh.string(), "--out");
  CHECK(fs::is_directory(fresh));
  scanshard::make_output_directory(fresh.string(), "--out");  // existing: fine
  CHECK_THAT(config_error([&] { scanshard::check_output_directory("", "--out"); }), Catch::Contains("must name a directory"));
}
