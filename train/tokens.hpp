// train/tokens.hpp — training tokens by position: a vector in memory, or a token file read on
// demand with checked reads (pread), so that each rank reads only the tokens of the sequences it
// trains on and a corpus larger than memory works. Formats: bytes (any file, e.g. text: one token
// per byte) and little-endian uint16 / uint32 token ids.
//
// The file is not memory-mapped: a mapped file that another process truncates kills the reader
// with SIGBUS. A read that finds the file shorter than when it was opened fails instead (read()
// returns false, the other accessors throw ConfigError naming the file and both sizes).
// For: the runner and `scanshard train`. Not for: which sequence a rank reads (runner.cpp's cursor).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "program/names.hpp"
#include "program/param_layout.hpp"
#include "train/comm.hpp"

namespace scanshard::train {

enum class TokenFormat { bytes, uint16, uint32 };
inline constexpr Names<TokenFormat, 3> kTokenFormatNames{
    {{"bytes", TokenFormat::bytes}, {"uint16", TokenFormat::uint16}, {"uint32", TokenFormat::uint32}}};

// What a checkpoint records of the training data (/meta data) so that a resume on other data is
// noticed: the file's path ("" for tokens in memory), its size in bytes, and the CRC-32 (zlib) of
// its token ids, each as 4 little-endian bytes — the same number whatever the rank count, since
// the ranks' parts are joined with crc32_combine.
struct DataIdentity {
  std::string path;
  std::int64_t bytes = 0;
  std::uint32_t crc32 = 0;
  // "data:\n  path: ...\n  bytes: ...\n  crc32: ...\n" (decimal; no path for tokens in memory)
  [[nodiscard]] std::string to_yaml() const;
};
// Reads to_yaml()'s text; `where` names it in errors (unknown keys, a negative size, a CRC beyond 32 bits).
DataIdentity parse_data_identity(const std::string& text, const std::string& where);
// "" when the content is the same (size and CRC-32); else what changed, "bytes 100 → 120, crc32
// 0x1234abcd → 0x0badf00d". A moved file with the same content is not a change.
std::string data_changes(const DataIdentity& before, const DataIdentity& now);
TokenFormat parse_token_format(const std::string& s);  // ConfigError naming --data-format

class Tokens {
 public:
  explicit Tokens(std::vector<std::int32_t> in_memory);
  // Opens `path`. ConfigError naming the file when it is missing, not a regular file, empty, not a
  // whole number of tokens, or shorter than `min_tokens`. Reads nothing yet: no communication,
  // the same verdict on every rank.
  static Tokens open_file(const std::string& path, TokenFormat format, std::int64_t min_tokens);
  // The first token ≥ vocab, as a ConfigError naming the file, the token and its position. Each
  // rank of `comm` scans 1/size of the file and the first bad position is agreed (collective;
  // comm == nullptr: this process scans all). The same verdict on every rank, also when the file
  // shrank under one rank's scan (changed_message()). Returns the data's identity (the same scan
  // forms the CRC-32; the ranks' parts are combined, so the same on every rank).
  DataIdentity check_vocab(std::int64_t vocab, const mpi::Comm* comm) const;

  std::int64_t size() const { return size_; }
  // Tokens [begin, begin + n) into out. false (out zero-filled) when they are outside size() or
  // the file no longer holds them (it shrank since open_file, or a read error). Never a signal.
  bool read(std::int64_t begin, std::int64_t n, std::int32_t* out) const;
  // One token; ConfigError (changed_message()) when it cannot be read.
  std::int32_t operator[](std::int64_t i) const;
  std::vector<std::int32_t> to_vector() const;  // ConfigError (changed_message()) on a failed read
  // "<file>: the data file changed while in use: it had N bytes when opened, now M".
  std::string changed_message() const;

 private:
  struct File;
  Tokens() = default;
  DataIdentity identity(unsigned long crc, Range mine, const mpi::Comm* comm) const;
  std::vector<std::int32_t> memory_;
  std::shared_ptr<const File> file_;  // nullptr: memory_
  int width_ = 1;
  std::int64_t size_ = 0;
  TokenFormat format_ = TokenFormat::bytes;
};

}  // namespace scanshard::train
