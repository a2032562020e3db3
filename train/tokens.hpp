// train/tokens.hpp — training tokens by position: a vector in memory, or a token file mapped
// read-only (mmap), so that each rank touches only the pages of the sequences it trains on and a
// corpus larger than memory works. Formats: bytes (any file, e.g. text: one token per byte) and
// little-endian uint16 / uint32 token ids.
// For: the runner and `scanshard train`. Not for: which sequence a rank reads (runner.cpp's cursor).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "train/comm.hpp"

namespace scanshard::train {

enum class TokenFormat { bytes, uint16, uint32 };
TokenFormat parse_token_format(const std::string& s);  // ConfigError naming --data-format

class Tokens {
 public:
  explicit Tokens(std::vector<std::int32_t> in_memory);
  // Maps `path`. ConfigError naming the file when it is missing, not a regular file, empty, not a
  // whole number of tokens, or shorter than `min_tokens`. Reads nothing yet: no communication,
  // the same verdict on every rank.
  static Tokens map_file(const std::string& path, TokenFormat format, std::int64_t min_tokens);
  // The first token ≥ vocab, as a ConfigError naming the file, the token and its position. Each
  // rank of `comm` scans 1/size of the file and the first bad position is agreed (collective;
  // comm == nullptr: this process scans all). The same verdict on every rank.
  void check_vocab(std::int64_t vocab, const mpi::Comm* comm) const;

  std::int64_t size() const { return size_; }
  std::int32_t operator[](std::int64_t i) const {
    if (!bytes_) return memory_[static_cast<std::size_t>(i)];
    const unsigned char* p = bytes_ + i * width_;
    std::uint32_t v = 0;
    for (int b = 0; b < width_; ++b) v |= std::uint32_t(p[b]) << (8 * b);  // little-endian
    return static_cast<std::int32_t>(v);
  }
  std::vector<std::int32_t> to_vector() const;

 private:
  Tokens() = default;
  std::vector<std::int32_t> memory_;
  std::shared_ptr<void> mapping_;            // munmap on release
  const unsigned char* bytes_ = nullptr;     // mapped file, or nullptr for memory_
  int width_ = 1;
  std::int64_t size_ = 0;
  std::string path_;
  TokenFormat format_ = TokenFormat::bytes;
};

}  // namespace scanshard::train
