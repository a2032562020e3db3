// program/output_file.hpp — writing the files and directories a command produces: a file is
// either replaced whole or left as it was, and nothing that is not a regular file is ever replaced.
//
// For: every output of the CLI (plan --out, report's CSV/JSON/HTML, train --trace, calibrate --out,
// validate's and validate --published's files) and of any library that writes a plain file.
// Not for: checkpoints (train/checkpoint.hpp writes them with parallel HDF5 under the same rule:
// a temporary file next to the target, renamed over it).
//
// A file target `path`:
//   - absent or an existing regular file: the text goes to a new temporary file next to it
//     (".<name>.tmp-<pid>-<n>", created with O_EXCL, mode 0666 minus the umask, or the existing
//     file's mode), with checked writes, then fsync, close and a rename over `path`. A reader sees
//     the old content or the whole new one, never part of it.
//   - a directory, FIFO, character or block device or socket: refused before anything is created.
//   - a symbolic link: refused, naming where it points. Renaming over the link would replace the
//     link itself and leave the file it points to stale; writing through it would put the file in
//     another directory than the one asked for. So outputs never follow a link in the last
//     component; links among the directories above it are followed as usual.
// On any failure (bad target, the temporary file cannot be created, a write fails or is short,
// fsync, close or rename fails) the temporary file is removed, `path` is left as it was, and a
// ConfigError (exit 2) names `path` and the reason in the system's words, e.g.
// "plan.yaml: cannot write: No space left on device".
// The directory is not fsynced after the rename: after a crash `path` holds the old or the new
// content, each whole.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace scanshard {

// Throws ConfigError unless `path` could be written by write_output_file: its directory exists and
// is writable, and `path` is absent or a regular file (not a link). Writes nothing. For checking
// outputs before long work.
void check_output_file(const std::string& path);

// Replaces `path` by `text` atomically (see above). Throws ConfigError naming `path` and the reason.
void write_output_file(const std::string& path, std::string_view text);

// (path, text) pairs written together.
using OutputFiles = std::vector<std::pair<std::string, std::string>>;

// Checks every target first (check_output_file), so a bad one refuses the set before any is
// written; then writes them in order, each with write_output_file. A failure part-way (a full
// disk) leaves the files before it written, each whole, and the rest as they were.
void write_output_files(const OutputFiles& files);

// Throws ConfigError "<flag>: '<dir>' exists and is not a directory" when it is something else.
// Creates nothing. A link to a directory counts as the directory.
void check_output_directory(const std::string& dir, const std::string& flag);

// check_output_directory, then creates `dir` and its missing parents; a failure is a ConfigError
// "<flag>: cannot create the directory '<dir>': <reason>".
void make_output_directory(const std::string& dir, const std::string& flag);

}  // namespace scanshard
