// program/output_file.cpp — see output_file.hpp.
#include "program/output_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "program/yaml_reader.hpp"

namespace scanshard {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& path, const std::string& reason) {
  throw ConfigError(path + ": cannot write: " + reason);
}

std::string errno_text(int err) { return std::strerror(err); }

const char* kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "a special file";
}

std::string directory_of(const std::string& path) {
  const fs::path dir = fs::path(path).parent_path();
  return dir.empty() ? std::string(".") : dir.string();
}

std::string link_target(const std::string& path) {
  std::error_code ec;
  const fs::path to = fs::read_symlink(path, ec);
  return ec ? std::string("?") : to.string();
}

// `path` must be absent or a regular file; a link is not followed. The existing file's
// permission bits, or -1 when there is no file.
int existing_mode(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return -1;
    fail(path, errno_text(errno));
  }
  if (S_ISLNK(st.st_mode))
    fail(path, "it is a symbolic link (to '" + link_target(path) +
                   "'); outputs do not follow links: name the file it points to, or remove the link");
  if (!S_ISREG(st.st_mode)) fail(path, std::string("it is ") + kind_of(st.st_mode) + ", not a regular file; nothing was written");
  return static_cast<int>(st.st_mode & 07777);
}

void check_directory_of(const std::string& path) {
  if (path.empty()) throw ConfigError("an output path is empty");
  if (fs::path(path).filename().empty()) fail(path, "the path must name a file, not a directory");
  const std::string dir = directory_of(path);
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0)
    fail(path, errno == ENOENT ? "the directory '" + dir + "' does not exist" : "'" + dir + "': " + errno_text(errno));
  if (!S_ISDIR(st.st_mode)) fail(path, "'" + dir + "' is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) fail(path, "the directory '" + dir + "' is not writable (" + errno_text(errno) + ")");
}

// The temporary file next to `target`: created empty, removed again unless renamed into place.
class TempFile {
 public:
  explicit TempFile(const std::string& target) : target_(target) {
    static std::atomic<unsigned> counter{0};
    const fs::path t(target);
    std::string stem(".");  // ".<name>.tmp-<pid>-", the name cut to stay within NAME_MAX
    stem.append(t.filename().string().substr(0, 200)).append(".tmp-").append(std::to_string(::getpid())).append("-");
    for (int attempt = 0; fd_ < 0; ++attempt) {
      path_ = (t.parent_path() / (stem + std::to_string(counter++))).string();
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);  // the umask applies
      if (fd_ < 0 && (errno != EEXIST || attempt >= 100))
        fail(target_, "cannot create a temporary file next to it: " + errno_text(errno));
    }
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!renamed_) ::unlink(path_.c_str());
  }

  void set_mode(int mode) {
    if (mode >= 0 && ::fchmod(fd_, static_cast<mode_t>(mode)) != 0) fail(target_, "chmod: " + errno_text(errno));
  }

  void write(std::string_view text) {
    while (!text.empty()) {
      const ssize_t n = ::write(fd_, text.data(), text.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail(target_, errno_text(errno));
      if (n == 0) fail(target_, "a write of " + std::to_string(text.size()) + " bytes wrote nothing");
      text.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  // fsync, close, and rename over the target (checked again: it may have changed meanwhile).
  void commit() {
    if (::fsync(fd_) != 0) fail(target_, "fsync: " + errno_text(errno));
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail(target_, "close: " + errno_text(errno));
    existing_mode(target_);
    if (::rename(path_.c_str(), target_.c_str()) != 0)
      fail(target_, "cannot rename the temporary file " + path_ + " over it: " + errno_text(errno));
    renamed_ = true;
  }

 private:
  std::string target_, path_;
  int fd_ = -1;
  bool renamed_ = false;
};

}  // namespace

void check_output_file(const std::string& path) {
  check_directory_of(path);
  existing_mode(path);
}

void write_output_file(const std::string& path, std::string_view text) {
  check_directory_of(path);
  const int mode = existing_mode(path);
  TempFile tmp(path);
  tmp.set_mode(mode);
  tmp.write(text);
  tmp.commit();
}

void write_output_files(const OutputFiles& files) {
  for (const auto& f : files) check_output_file(f.first);
  for (const auto& f : files) write_output_file(f.first, f.second);
}

void check_output_directory(const std::string& dir, const std::string& flag) {
  if (dir.empty()) throw ConfigError(flag + ": must name a directory");
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (fs::exists(st) && !fs::is_directory(st)) throw ConfigError(flag + ": '" + dir + "' exists and is not a directory");
}

void make_output_directory(const std::string& dir, const std::string& flag) {
  check_output_directory(dir, flag);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw ConfigError(flag + ": cannot create the directory '" + dir + "': " + ec.message());
}

}  // namespace scanshard
