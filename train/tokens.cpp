// train/tokens.cpp — see tokens.hpp.
#include "train/tokens.hpp"

#include <algorithm>
#include <cerrno>
#include <limits>
#include <span>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "program/param_layout.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard::train {

// The open data file (closed with the last Tokens sharing it).
struct Tokens::File {
  int fd = -1;
  std::string path;
  std::int64_t bytes = 0;  // its size when opened
  ~File() {
    if (fd >= 0) ::close(fd);
  }
  // Reads exactly n bytes at `at`; false on end of file or an error.
  bool pread_all(unsigned char* out, std::size_t n, std::int64_t at) const {
    while (n > 0) {
      const ssize_t got = ::pread(fd, out, n, static_cast<off_t>(at));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      out += got;
      at += got;
      n -= static_cast<std::size_t>(got);
    }
    return true;
  }
};

TokenFormat parse_token_format(const std::string& s) { return parse_choice(kTokenFormatNames, s, "--data-format"); }

Tokens::Tokens(std::vector<std::int32_t> in_memory) : memory_(std::move(in_memory)), size_(std::int64_t(memory_.size())) {}

Tokens Tokens::open_file(const std::string& path, TokenFormat format, std::int64_t min_tokens) {
  auto file = std::make_shared<File>();
  file->path = path;
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below as not regular.
  file->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  const std::string unreadable = path + ": not a readable data file (missing, or a directory)";
  if (file->fd < 0) throw ConfigError(unreadable);
  struct stat st {};
  if (::fstat(file->fd, &st) != 0) throw ConfigError(path + ": cannot read the data file's size");
  if (S_ISDIR(st.st_mode)) throw ConfigError(unreadable);
  if (!S_ISREG(st.st_mode)) throw ConfigError(path + ": not a readable data file (not a regular file: a FIFO or a device)");
  Tokens t;
  t.format_ = format;
  t.width_ = format == TokenFormat::bytes ? 1 : format == TokenFormat::uint16 ? 2 : 4;
  const char* what = format == TokenFormat::bytes ? "bytes" : format == TokenFormat::uint16 ? "uint16" : "uint32";
  file->bytes = static_cast<std::int64_t>(st.st_size);
  if (file->bytes == 0) throw ConfigError(path + ": the data file is empty");
  if (file->bytes % t.width_)
    throw ConfigError(path + ": " + std::to_string(file->bytes) + " bytes is not a whole number of " + what + " tokens (" +
                      std::to_string(t.width_) + " bytes each)");
  t.size_ = file->bytes / t.width_;
  if (t.size_ < min_tokens)
    throw ConfigError(path + ": the data file has " + std::to_string(t.size_) + " tokens; one sequence needs " +
                      std::to_string(min_tokens));
  t.file_ = std::move(file);
  return t;
}

bool Tokens::read(std::int64_t begin, std::int64_t n, std::int32_t* out) const {
  const auto count = static_cast<std::size_t>(std::max<std::int64_t>(n, 0));
  if (begin < 0 || n < 0 || begin > size_ || n > size_ - begin) {
    std::fill_n(out, count, 0);
    return false;
  }
  if (!file_) {
    std::copy_n(memory_.begin() + begin, count, out);
    return true;
  }
  std::vector<unsigned char> raw(count * static_cast<std::size_t>(width_));
  if (!file_->pread_all(raw.data(), raw.size(), begin * width_)) {
    std::fill_n(out, count, 0);
    return false;
  }
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t v = 0;
    for (int b = 0; b < width_; ++b) v |= std::uint32_t(raw[i * static_cast<std::size_t>(width_) + static_cast<std::size_t>(b)]) << (8 * b);
    out[i] = static_cast<std::int32_t>(v);  // little-endian
  }
  return true;
}

std::int32_t Tokens::operator[](std::int64_t i) const {
  std::int32_t v = 0;
  if (!read(i, 1, &v)) throw ConfigError(changed_message());
  return v;
}

std::string Tokens::changed_message() const {
  if (!file_) return "data: position outside the " + std::to_string(size_) + " tokens in memory";
  struct stat st {};
  const std::string now = ::fstat(file_->fd, &st) == 0 ? std::to_string(st.st_size) + " bytes" : "unreadable";
  return file_->path + ": the data file changed while in use: it had " + std::to_string(file_->bytes) +
         " bytes when training started, now " + now + " (was it truncated or rewritten?)";
}

namespace {

// The first position in [r.begin, r.end) whose token is outside [0, vocab), or −1; `failed` set
// when a read fails (the file shrank).
std::int64_t first_outside(const Tokens& t, Range r, std::int64_t vocab, bool& failed) {
  std::vector<std::int32_t> chunk(1 << 16);
  for (std::int64_t at = r.begin; at < r.end; at += std::int64_t(chunk.size())) {
    const std::int64_t n = std::min<std::int64_t>(r.end - at, std::int64_t(chunk.size()));
    if (!t.read(at, n, chunk.data())) {
      failed = true;
      return -1;
    }
    for (std::int64_t i = 0; i < n; ++i)
      if (chunk[static_cast<std::size_t>(i)] < 0 || chunk[static_cast<std::size_t>(i)] >= vocab) return at + i;
  }
  return -1;
}

}  // namespace

void Tokens::check_vocab(std::int64_t vocab, const mpi::Comm* comm) const {
  const std::int64_t parts = comm ? comm->size() : 1, me = comm ? comm->rank() : 0;
  bool failed = false;
  const std::int64_t bad = first_outside(*this, split_range(size_, parts, me), vocab, failed);
  // [0]: −(first bad position) so that a max over ranks finds the smallest; lowest() when none.
  // [1]: 1 when a rank could not read its part (the file shrank): every rank says so.
  std::int64_t first[2] = {bad >= 0 ? -bad : std::numeric_limits<std::int64_t>::lowest(), failed ? 1 : 0};
  if (comm && parts > 1) comm->allreduce_max(std::span<std::int64_t>(first, 2));
  if (first[1]) throw ConfigError(changed_message());
  if (first[0] == std::numeric_limits<std::int64_t>::lowest()) return;
  const std::int64_t at = -first[0];
  throw ConfigError((file_ ? file_->path : std::string("data")) + ": token " +
                    std::to_string(static_cast<std::uint32_t>((*this)[at])) + " at position " + std::to_string(at) +
                    " is outside the model's vocabulary of " + std::to_string(vocab) +
                    (file_ && format_ == TokenFormat::bytes
                         ? " (the file is read as bytes: use --data-format uint16/uint32 for token ids, or a model with "
                           "vocab >= 256)"
                         : ""));
}

std::vector<std::int32_t> Tokens::to_vector() const {
  std::vector<std::int32_t> v(static_cast<std::size_t>(size_));
  if (!read(0, size_, v.data())) throw ConfigError(changed_message());
  return v;
}

}  // namespace scanshard::train
