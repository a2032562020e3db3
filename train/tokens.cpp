// train/tokens.cpp — see tokens.hpp.
#include "train/tokens.hpp"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <span>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "program/param_layout.hpp"
#include "program/yaml_reader.hpp"

namespace scanshard::train {

TokenFormat parse_token_format(const std::string& s) {
  if (s == "bytes") return TokenFormat::bytes;
  if (s == "uint16") return TokenFormat::uint16;
  if (s == "uint32") return TokenFormat::uint32;
  throw ConfigError("--data-format: '" + s + "' is not one of bytes, uint16, uint32");
}

Tokens::Tokens(std::vector<std::int32_t> in_memory) : memory_(std::move(in_memory)), size_(std::int64_t(memory_.size())) {}

Tokens Tokens::map_file(const std::string& path, TokenFormat format, std::int64_t min_tokens) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw ConfigError(path + ": not a readable data file (missing, or a directory)");
  Tokens t;
  t.path_ = path;
  t.format_ = format;
  t.width_ = format == TokenFormat::bytes ? 1 : format == TokenFormat::uint16 ? 2 : 4;
  const char* what = format == TokenFormat::bytes ? "bytes" : format == TokenFormat::uint16 ? "uint16" : "uint32";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ConfigError(path + ": cannot open the data file");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw ConfigError(path + ": cannot read the data file's size");
  }
  const auto bytes = static_cast<std::int64_t>(st.st_size);
  auto fail = [&](const std::string& why) {
    ::close(fd);
    throw ConfigError(path + ": " + why);
  };
  if (bytes == 0) fail("the data file is empty");
  if (bytes % t.width_)
    fail(std::to_string(bytes) + " bytes is not a whole number of " + what + " tokens (" + std::to_string(t.width_) +
         " bytes each)");
  t.size_ = bytes / t.width_;
  if (t.size_ < min_tokens)
    fail("the data file has " + std::to_string(t.size_) + " tokens; one sequence needs " + std::to_string(min_tokens));
  void* p = ::mmap(nullptr, static_cast<std::size_t>(bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping stays valid
  if (p == MAP_FAILED) throw ConfigError(path + ": cannot map the data file into memory");
  t.mapping_ = std::shared_ptr<void>(p, [bytes](void* q) { ::munmap(q, static_cast<std::size_t>(bytes)); });
  t.bytes_ = static_cast<const unsigned char*>(p);
  return t;
}

void Tokens::check_vocab(std::int64_t vocab, const mpi::Comm* comm) const {
  const std::int64_t parts = comm ? comm->size() : 1, me = comm ? comm->rank() : 0;
  const Range r = split_range(size_, parts, me);
  // −(first bad position) so that a max over ranks finds the smallest; lowest() when none
  std::int64_t first[1] = {std::numeric_limits<std::int64_t>::lowest()};
  for (std::int64_t i = r.begin; i < r.end; ++i)
    if ((*this)[i] < 0 || (*this)[i] >= vocab) {
      first[0] = -i;
      break;
    }
  if (comm && parts > 1) comm->allreduce_max(std::span<std::int64_t>(first, 1));
  if (first[0] == std::numeric_limits<std::int64_t>::lowest()) return;
  const std::int64_t at = -first[0];
  throw ConfigError((path_.empty() ? std::string("data") : path_) + ": token " +
                    std::to_string(static_cast<std::uint32_t>((*this)[at])) + " at position " + std::to_string(at) +
                    " is outside the model's vocabulary of " + std::to_string(vocab) +
                    (bytes_ && format_ == TokenFormat::bytes
                         ? " (the file is read as bytes: use --data-format uint16/uint32 for token ids, or a model with "
                           "vocab >= 256)"
                         : ""));
}

std::vector<std::int32_t> Tokens::to_vector() const {
  std::vector<std::int32_t> v(static_cast<std::size_t>(size_));
  for (std::int64_t i = 0; i < size_; ++i) v[static_cast<std::size_t>(i)] = (*this)[i];
  return v;
}

}  // namespace scanshard::train
