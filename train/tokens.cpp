// train/tokens.cpp — see tokens.hpp.
#include "train/tokens.hpp"

#include <algorithm>
#include <cerrno>
#include <limits>
#include <span>

#include <fcntl.h>
#include <yaml-cpp/yaml.h>
#include <zlib.h>
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
// when a read fails (the file shrank). `crc` gets the CRC-32 of the range's ids (4 little-endian
// bytes each) as far as it was read.
std::int64_t first_outside(const Tokens& t, Range r, std::int64_t vocab, bool& failed, uLong& crc) {
  std::vector<std::int32_t> chunk(1 << 16);
  std::vector<unsigned char> le(chunk.size() * 4);
  for (std::int64_t at = r.begin; at < r.end; at += std::int64_t(chunk.size())) {
    const std::int64_t n = std::min<std::int64_t>(r.end - at, std::int64_t(chunk.size()));
    if (!t.read(at, n, chunk.data())) {
      failed = true;
      return -1;
    }
    for (std::int64_t i = 0; i < n; ++i)
      for (int b = 0; b < 4; ++b)
        le[static_cast<std::size_t>(4 * i + b)] = static_cast<unsigned char>(static_cast<std::uint32_t>(chunk[static_cast<std::size_t>(i)]) >> (8 * b));
    crc = ::crc32(crc, le.data(), static_cast<uInt>(4 * n));
    for (std::int64_t i = 0; i < n; ++i)
      if (chunk[static_cast<std::size_t>(i)] < 0 || chunk[static_cast<std::size_t>(i)] >= vocab) return at + i;
  }
  return -1;
}

}  // namespace

DataIdentity Tokens::check_vocab(std::int64_t vocab, const mpi::Comm* comm) const {
  const std::int64_t parts = comm ? comm->size() : 1, me = comm ? comm->rank() : 0;
  bool failed = false;
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const Range mine = split_range(size_, parts, me);
  const std::int64_t bad = first_outside(*this, mine, vocab, failed, crc);
  // [0]: −(first bad position) so that a max over ranks finds the smallest; lowest() when none.
  // [1]: 1 when a rank could not read its part (the file shrank): every rank says so.
  std::int64_t first[2] = {bad >= 0 ? -bad : std::numeric_limits<std::int64_t>::lowest(), failed ? 1 : 0};
  if (comm && parts > 1) comm->allreduce_max(std::span<std::int64_t>(first, 2));
  if (first[1]) throw ConfigError(changed_message());
  if (first[0] == std::numeric_limits<std::int64_t>::lowest()) return identity(crc, mine, comm);
  const std::int64_t at = -first[0];
  throw ConfigError((file_ ? file_->path : std::string("data")) + ": token " +
                    std::to_string(static_cast<std::uint32_t>((*this)[at])) + " at position " + std::to_string(at) +
                    " is outside the model's vocabulary of " + std::to_string(vocab) +
                    (file_ && format_ == TokenFormat::bytes
                         ? " (the file is read as bytes: use --data-format uint16/uint32 for token ids, or a model with "
                           "vocab >= 256)"
                         : ""));
}

DataIdentity Tokens::identity(unsigned long crc, Range mine, const mpi::Comm* comm) const {
  DataIdentity id;
  id.path = file_ ? file_->path : "";
  id.bytes = file_ ? file_->bytes : 4 * size_;
  // every rank's (CRC, bytes) in rank order, joined: the CRC-32 of the whole id stream
  std::int64_t part[2] = {static_cast<std::int64_t>(crc), 4 * mine.size()};
  std::vector<std::int64_t> all(part, part + 2);
  if (comm && comm->size() > 1) {
    all.resize(2 * static_cast<std::size_t>(comm->size()));
    comm->allgather(std::span<const std::int64_t>(part, 2), std::span<std::int64_t>(all));
  }
  uLong whole = ::crc32(0L, Z_NULL, 0);
  for (std::size_t r = 0; r < all.size(); r += 2)
    whole = ::crc32_combine(whole, static_cast<uLong>(all[r]), static_cast<z_off_t>(all[r + 1]));
  id.crc32 = static_cast<std::uint32_t>(whole);
  return id;
}

std::string DataIdentity::to_yaml() const {
  YAML::Emitter out;  // quotes the path as YAML needs
  out << YAML::BeginMap << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  if (!path.empty()) out << YAML::Key << "path" << YAML::Value << path;  // none: tokens in memory
  out << YAML::Key << "bytes" << YAML::Value << bytes << YAML::Key << "crc32" << YAML::Value << crc32 << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

DataIdentity parse_data_identity(const std::string& text, const std::string& where) {
  YamlMap top(parse_yaml(text, where), where, "");
  YamlMap d = top.required_map("data");
  DataIdentity id;
  id.path = d.has("path") ? d.required_string("path") : "";
  id.bytes = d.required_int("bytes");
  if (id.bytes < 0) throw d.error("bytes", std::to_string(id.bytes) + " is negative");
  const std::int64_t crc = d.required_int("crc32");
  if (crc < 0 || crc > 0xffffffffLL) throw d.error("crc32", std::to_string(crc) + " is not a 32-bit CRC");
  id.crc32 = static_cast<std::uint32_t>(crc);
  d.finish();
  top.finish();
  return id;
}

std::string data_changes(const DataIdentity& a, const DataIdentity& b) {
  std::string out;
  if (a.bytes != b.bytes) out = "bytes " + std::to_string(a.bytes) + " → " + std::to_string(b.bytes);
  if (a.crc32 != b.crc32) {
    char x[40];
    std::snprintf(x, sizeof x, "crc32 0x%08x → 0x%08x", static_cast<unsigned>(a.crc32), static_cast<unsigned>(b.crc32));
    out += (out.empty() ? "" : ", ") + std::string(x);
  }
  return out;
}

std::vector<std::int32_t> Tokens::to_vector() const {
  std::vector<std::int32_t> v(static_cast<std::size_t>(size_));
  if (!read(0, size_, v.data())) throw ConfigError(changed_message());
  return v;
}

}  // namespace scanshard::train
