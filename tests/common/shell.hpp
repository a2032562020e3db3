// tests/common/shell.hpp — running the CLI from serial tests: a command through the shell with its
// output captured (sh), a command whose output is read line by line while it runs so the test can
// act on it (Watched), and a temporary directory per test process.
// For: tests/unit/test_launch.cpp and test_train_job.cpp. Not for: MPI tests (they call the library).
#pragma once
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace scanshard::testing {

struct Shell {
  int code;         // exit status, or 128 + the signal that ended it
  std::string out;  // stdout and stderr together
};

inline int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// `cmd` through /bin/sh in `dir`'s log file; its exit code and output.
inline Shell sh(const std::string& cmd, const std::filesystem::path& dir) {
  const std::filesystem::path log = dir / "log";
  const int status = std::system((cmd + " >" + log.string() + " 2>&1").c_str());
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  return {exit_code(status), ss.str()};
}

// Runs `cmd` (exec'd by /bin/sh, so pid() is the command itself, e.g. mpirun) with stdout and
// stderr on a pipe; on_line sees each line as it arrives (and may signal the process).
class Watched {
 public:
  explicit Watched(const std::string& cmd) {
    int fd[2];
    if (::pipe(fd) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fd[1], 1);
      ::dup2(fd[1], 2);
      ::close(fd[0]);
      ::close(fd[1]);
      ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fd[1]);
    in_ = ::fdopen(fd[0], "r");
  }
  ~Watched() {
    if (in_) std::fclose(in_);
  }
  pid_t pid() const { return pid_; }
  // Reads to the end of the output, calling on_line per line; returns {exit code, whole output}.
  Shell run(const std::function<void(const std::string&)>& on_line) {
    std::string all, line;
    for (int c; (c = std::fgetc(in_)) != EOF;) {
      all += static_cast<char>(c);
      if (c != '\n') { line += static_cast<char>(c); continue; }
      on_line(line);
      line.clear();
    }
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    return {exit_code(status), all};
  }

 private:
  pid_t pid_ = -1;
  std::FILE* in_ = nullptr;
};

// The pids of `parent`'s children named `name` (/proc/<pid>/stat: "pid (comm) state ppid ...").
inline std::vector<pid_t> children_named(pid_t parent, const std::string& name) {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string id = e.path().filename().string();
    if (id.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const auto open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 4 > stat.size()) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent && stat.substr(open + 1, close - open - 1) == name) out.push_back(static_cast<pid_t>(std::stol(id)));
  }
  return out;
}

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix)
      : path(std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace scanshard::testing
