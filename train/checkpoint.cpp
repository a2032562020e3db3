// train/checkpoint.cpp — see checkpoint.hpp.
//
// Every step that can fail differently on different ranks (argument checks, rank 0's file-system
// checks, the collective HDF5 phases) ends in agree(): the ranks exchange whether and how they
// failed and all throw the first failing rank's error, so a bad input never leaves one rank
// waiting in a collective call. HDF5's automatic error printing is off for the whole call; its
// innermost message is quoted in our errors instead.
#include "train/checkpoint.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <hdf5.h>
#include <zlib.h>

#include "program/yaml_reader.hpp"
#include "train/executor.hpp"

namespace scanshard::train {
namespace {

namespace fs = std::filesystem;

constexpr const char* kDescription =
    "scanshard training checkpoint: /params/<block>/<name> holds every full logical float32 parameter "
    "tensor of the model (row-major, independent of the parallel plan that wrote it), /optim/adam_m and "
    "/optim/adam_v the AdamW first and second moments under the same names and shapes, and the attributes "
    "of /meta the model, plan, step, seed, data cursor and format_version.";

struct Section {
  const char* group;  // HDF5 group holding the blocks
  const char* what;   // for messages
};
constexpr Section kSections[3] = {{"/params", "parameters"}, {"/optim/adam_m", "AdamW first moments"},
                                  {"/optim/adam_v", "AdamW second moments"}};

// ---- who takes part -------------------------------------------------------------------------

// An MPI communicator, or this process alone without any MPI call (serial HDF5 driver).
struct Group {
  MPI_Comm comm = MPI_COMM_NULL;  // MPI_COMM_NULL: serial
  int rank = 0, size = 1;
  bool mpi() const { return comm != MPI_COMM_NULL; }
};

Group group_of(const mpi::Comm* c) {
  if (c) return {c->raw(), c->rank(), c->size()};
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) return {MPI_COMM_SELF, 0, 1};
  return {};
}

// The checkpoint's own agreement and broadcasts (not HDF5's I/O) take their non-blocking form
// under the watchdog (train/watchdog.hpp), like Comm's calls.
std::string bcast_string(const Group& g, std::string s, int root) {
  if (!g.mpi() || g.size == 1) return s;
  long long n = static_cast<long long>(s.size());
  SCANSHARD_MPI_WAITED(MPI_Bcast, MPI_Ibcast, &n, 1, MPI_LONG_LONG, root, g.comm);
  if (n > INT_MAX) throw mpi::MpiError("checkpoint: string of " + std::to_string(n) + " bytes is too long to broadcast");
  s.resize(static_cast<size_t>(n));
  if (n > 0) SCANSHARD_MPI_WAITED(MPI_Bcast, MPI_Ibcast, s.data(), static_cast<int>(n), MPI_CHAR, root, g.comm);
  return s;
}

template <class T> void bcast_value(const Group& g, T& v, int root) {
  if (!g.mpi() || g.size == 1) return;
  SCANSHARD_MPI_WAITED(MPI_Bcast, MPI_Ibcast, &v, static_cast<int>(sizeof(T)), MPI_BYTE, root, g.comm);
}

// ---- failures agreed over all ranks ---------------------------------------------------------

enum class Kind : int { none = 0, config = 1, invalid = 2, runtime = 3 };
struct Failure {
  Kind kind = Kind::none;
  std::string what;
  explicit operator bool() const { return kind != Kind::none; }
};

Failure attempt(const std::function<void()>& f) {
  try {
    f();
    return {};
  } catch (const ConfigError& e) {
    return {Kind::config, e.what()};
  } catch (const std::invalid_argument& e) {
    return {Kind::invalid, e.what()};
  } catch (const std::exception& e) {
    return {Kind::runtime, e.what()};
  }
}

// The failure of the lowest failing rank, on every rank (none if no rank failed).
Failure agree(const Group& g, Failure f) {
  if (!g.mpi() || g.size == 1) return f;
  int mine = f ? g.rank : INT_MAX, first = INT_MAX;
  SCANSHARD_MPI_WAITED(MPI_Allreduce, MPI_Iallreduce, &mine, &first, 1, MPI_INT, MPI_MIN, g.comm);
  if (first == INT_MAX) return {};
  int kind = static_cast<int>(f.kind);
  SCANSHARD_MPI_WAITED(MPI_Bcast, MPI_Ibcast, &kind, 1, MPI_INT, first, g.comm);
  return {static_cast<Kind>(kind), bcast_string(g, f.what, first)};
}

[[noreturn]] void raise(const Failure& f) {
  if (f.kind == Kind::config) throw ConfigError(f.what);
  if (f.kind == Kind::invalid) throw std::invalid_argument(f.what);
  throw std::runtime_error(f.what);
}

void agree_or_throw(const Group& g, const Failure& f) {
  if (const Failure all = agree(g, f)) raise(all);
}

// ---- HDF5 helpers ---------------------------------------------------------------------------

// After a failed read of some damaged files (e.g. a flipped byte in a group's object header),
// HDF5 1.10 can no longer release one of its free lists and, at exit, prints "HDF5: infinite loop
// closing library" and a line of interface names when automatic error printing is on. Our error
// has already said what is wrong: switch the printing off at exit, just before HDF5's own atexit
// handler runs (handlers run in reverse order of registration; HDF5 registers its handler when the
// library initialises, which happened before this is called).
void quiet_hdf5_at_exit() {
  static const bool once = [] { return std::atexit([] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }) == 0; }();
  (void)once;
}

// Turns HDF5's automatic error printing off for its lifetime (restores the previous handler).
class QuietHdf5 {
 public:
  QuietHdf5() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    quiet_hdf5_at_exit();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietHdf5(const QuietHdf5&) = delete;
  QuietHdf5& operator=(const QuietHdf5&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The innermost message on HDF5's error stack (where the error was detected); clears the stack.
std::string hdf5_error() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD,
           [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
             if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
             return 0;
           },
           &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg.empty() ? "HDF5 error" : msg;
}

// An owned HDF5 identifier.
class Hid {
 public:
  Hid() = default;
  Hid(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Hid(Hid&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  Hid& operator=(Hid&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      close_ = o.close_;
    }
    return *this;
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  ~Hid() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Gives up ownership without closing (HDF5 closes the object when the library shuts down).
  void release() { id_ = H5I_INVALID_HID; }
  // Closes now; returns the close status (negative on failure).
  herr_t close() {
    herr_t rc = 0;
    if (id_ >= 0 && close_) rc = close_(id_);
    id_ = H5I_INVALID_HID;
    return rc;
  }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*close_)(hid_t) = nullptr;
};

hid_t ok(hid_t id, const std::string& what) {
  if (id < 0) throw std::runtime_error(what + ": " + hdf5_error());
  return id;
}
void ok_status(herr_t rc, const std::string& what) {
  if (rc < 0) throw std::runtime_error(what + ": " + hdf5_error());
}

Hid plist(hid_t cls, const std::string& what) { return Hid(ok(H5Pcreate(cls), what), H5Pclose); }

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string tensor_name(const ParamTensor& t) { return t.block + "/" + t.name; }
std::string dataset_path(const Section& s, const ParamTensor& t) { return std::string(s.group) + "/" + tensor_name(t); }

std::vector<hsize_t> hsizes(const std::vector<std::int64_t>& v) {
  std::vector<hsize_t> out;
  for (auto x : v) out.push_back(static_cast<hsize_t>(x));
  return out;
}

std::int64_t elements(const std::vector<std::int64_t>& count) {
  std::int64_t n = 1;
  for (auto c : count) n *= c;
  return n;
}

Hid simple_space(const std::vector<std::int64_t>& dims, const std::string& what) {
  if (dims.empty()) return Hid(ok(H5Screate(H5S_SCALAR), what), H5Sclose);
  const auto d = hsizes(dims);
  return Hid(ok(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr), what), H5Sclose);
}

// The file-space selection of this rank's slab (nothing when `on` is false or the slab is empty).
void select_slab(hid_t space, const Slab& s, bool on, const std::string& what) {
  if (!on || elements(s.count) == 0) {
    ok_status(H5Sselect_none(space), what);
    return;
  }
  if (s.count.empty()) return;  // scalar: all selected
  const auto start = hsizes(s.offset), count = hsizes(s.count);
  ok_status(H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr), what);
}

// The memory space of this rank's contiguous slab buffer (an empty selection when not taking part).
Hid memory_space(const Slab& s, bool on, const std::string& what) {
  if (!on || elements(s.count) == 0) {
    const hsize_t one = 1;
    Hid sp(ok(H5Screate_simple(1, &one, nullptr), what), H5Sclose);
    ok_status(H5Sselect_none(sp.get()), what);
    return sp;
  }
  return simple_space(s.count, what);
}

// ---- attributes -----------------------------------------------------------------------------

void write_string_attr(hid_t obj, const char* name, const std::string& value) {
  const std::string what = std::string("attribute ") + name;
  Hid type(ok(H5Tcopy(H5T_C_S1), what), H5Tclose);
  ok_status(H5Tset_size(type.get(), value.empty() ? 1 : value.size()), what);
  ok_status(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), what);
  ok_status(H5Tset_cset(type.get(), H5T_CSET_UTF8), what);
  Hid space(ok(H5Screate(H5S_SCALAR), what), H5Sclose);
  Hid attr(ok(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), what), H5Aclose);
  std::string buf = value.empty() ? std::string(1, '\0') : value;
  ok_status(H5Awrite(attr.get(), type.get(), buf.data()), what);
}

template <class T> void write_int_attr(hid_t obj, const char* name, hid_t file_type, hid_t mem_type, T value) {
  const std::string what = std::string("attribute ") + name;
  Hid space(ok(H5Screate(H5S_SCALAR), what), H5Sclose);
  Hid attr(ok(H5Acreate2(obj, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), what), H5Aclose);
  ok_status(H5Awrite(attr.get(), mem_type, &value), what);
}

// Reading: a missing or mistyped attribute is a ConfigError "<path>: not a scanshard checkpoint (...)".
struct Reader {
  std::string path;
  [[noreturn]] void not_checkpoint(const std::string& reason) const {
    throw ConfigError(path + ": not a scanshard checkpoint (" + reason + ")");
  }

  Hid attribute(hid_t obj, const char* name) const {
    const htri_t exists = H5Aexists(obj, name);
    if (exists <= 0) {
      H5Eclear2(H5E_DEFAULT);
      not_checkpoint(std::string("no attribute ") + name + " in /meta");
    }
    const hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) not_checkpoint(std::string("cannot open /meta attribute ") + name + ": " + hdf5_error());
    return Hid(a, H5Aclose);
  }

  std::string string_attr(hid_t obj, const char* name) const {
    Hid attr = attribute(obj, name);
    Hid type(ok(H5Aget_type(attr.get()), name), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_STRING) not_checkpoint(std::string("/meta attribute ") + name + " is not a string");
    Hid space(ok(H5Aget_space(attr.get()), name), H5Sclose);
    if (H5Sget_simple_extent_npoints(space.get()) != 1) not_checkpoint(std::string("/meta attribute ") + name + " is not a single string");
    if (H5Tis_variable_str(type.get()) > 0) {
      Hid mem(ok(H5Tcopy(H5T_C_S1), name), H5Tclose);
      ok_status(H5Tset_size(mem.get(), H5T_VARIABLE), name);
      ok_status(H5Tset_cset(mem.get(), H5Tget_cset(type.get())), name);
      char* s = nullptr;
      if (H5Aread(attr.get(), mem.get(), &s) < 0) not_checkpoint(std::string("cannot read /meta attribute ") + name + ": " + hdf5_error());
      std::string out = s ? s : "";
      if (s) H5free_memory(s);
      return out;
    }
    const size_t n = H5Tget_size(type.get());
    std::string buf(n + 1, '\0');  // read as stored (any padding, any character set); NUL-terminated below
    if (H5Aread(attr.get(), type.get(), buf.data()) < 0)
      not_checkpoint(std::string("cannot read /meta attribute ") + name + ": " + hdf5_error());
    buf.resize(std::strlen(buf.c_str()));
    return buf;
  }

  template <class T> T int_attr(hid_t obj, const char* name, hid_t mem_type) const {
    Hid attr = attribute(obj, name);
    Hid type(ok(H5Aget_type(attr.get()), name), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_INTEGER) not_checkpoint(std::string("/meta attribute ") + name + " is not an integer");
    Hid space(ok(H5Aget_space(attr.get()), name), H5Sclose);
    if (H5Sget_simple_extent_npoints(space.get()) != 1) not_checkpoint(std::string("/meta attribute ") + name + " is not a single integer");
    T v{};
    if (H5Aread(attr.get(), mem_type, &v) < 0) not_checkpoint(std::string("cannot read /meta attribute ") + name + ": " + hdf5_error());
    return v;
  }

  Hid group(hid_t parent, const std::string& name, const std::string& full) const {
    const htri_t exists = H5Lexists(parent, name.c_str(), H5P_DEFAULT);
    if (exists <= 0) {
      H5Eclear2(H5E_DEFAULT);
      not_checkpoint("no group " + full);
    }
    const hid_t g = H5Gopen2(parent, name.c_str(), H5P_DEFAULT);
    if (g < 0) {
      H5Eclear2(H5E_DEFAULT);
      not_checkpoint(full + " is not a group");
    }
    return Hid(g, H5Gclose);
  }
};

std::vector<std::string> link_names(hid_t group, const std::string& what) {
  H5G_info_t info;
  ok_status(H5Gget_info(group, &info), what);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t n = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (n < 0) ok_status(-1, what);
    std::string s(static_cast<size_t>(n) + 1, '\0');
    ok_status(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), s.size(), H5P_DEFAULT) < 0 ? -1 : 0, what);
    s.resize(static_cast<size_t>(n));
    names.push_back(s);
  }
  return names;
}

// ---- argument checks ------------------------------------------------------------------------

template <class P>
void check_arguments(const char* fn, const Layout& lay, const std::vector<Slab>& slabs, const std::vector<P>& a,
                     const std::vector<P>& b, const std::vector<P>& c, bool writing) {
  const size_t n = lay.tensors.size();
  auto bad = [&](const std::string& why) { throw std::invalid_argument(std::string(fn) + ": " + why); };
  if (slabs.size() != n) bad(std::to_string(slabs.size()) + " slabs for " + std::to_string(n) + " tensors");
  if (a.size() != n || b.size() != n || c.size() != n)
    bad("params / moment1 / moment2 must have one pointer per tensor (" + std::to_string(n) + "), got " +
        std::to_string(a.size()) + " / " + std::to_string(b.size()) + " / " + std::to_string(c.size()));
  for (size_t i = 0; i < n; ++i) {
    const auto& t = lay.tensors[i];
    const auto& s = slabs[i];
    const std::string name = "tensor " + tensor_name(t);
    if (s.offset.size() != t.shape.size() || s.count.size() != t.shape.size())
      bad(name + ": slab offset " + shape_str(s.offset) + " count " + shape_str(s.count) + " does not have the rank of shape " +
          shape_str(t.shape));
    for (size_t d = 0; d < t.shape.size(); ++d)
      if (s.offset[d] < 0 || s.count[d] < 0 || s.offset[d] + s.count[d] > t.shape[d])
        bad(name + ": slab offset " + shape_str(s.offset) + " count " + shape_str(s.count) + " is outside the shape " +
            shape_str(t.shape));
    if ((s.write || !writing) && elements(s.count) > 0 && (!a[i] || !b[i] || !c[i])) bad(name + ": null data pointer for a non-empty slab");
  }
}

// ---- writing --------------------------------------------------------------------------------

fs::path directory_of(const std::string& path) {
  const fs::path dir = fs::path(path).parent_path();
  return dir.empty() ? fs::path(".") : dir;
}

// Rank 0: can the checkpoint be created in its directory?
void check_directory(const std::string& path) {
  const fs::path dir = directory_of(path);
  const std::string d = dir.string();
  std::error_code ec;
  if (path.empty() || fs::path(path).filename().empty()) throw ConfigError(path + ": checkpoint path must name a file");
  if (!fs::exists(dir, ec)) throw ConfigError(d + ": cannot write checkpoint " + path + ": the directory does not exist");
  if (!fs::is_directory(dir, ec)) throw ConfigError(d + ": cannot write checkpoint " + path + ": not a directory");
  if (::access(d.c_str(), W_OK | X_OK) != 0)
    throw ConfigError(d + ": cannot write checkpoint " + path + ": the directory is not writable (" + std::strerror(errno) + ")");
  if (fs::is_directory(path, ec)) throw ConfigError(path + ": cannot write checkpoint: a directory of that name exists");
}

// The file system holding `path` has room for a checkpoint of about `bytes` (the tensors, plus
// HDF5's metadata; another job may still fill the disk during the write, which write_file's
// per-dataset agreement then reports).
void check_space(const std::string& path, double bytes) {
  const fs::path dir = directory_of(path);
  std::error_code ec;
  const fs::space_info sp = fs::space(dir, ec);
  if (ec) return;  // unknown: let the write report what happens
  const double need = bytes * 1.02 + (1 << 20);
  if (static_cast<double>(sp.available) < need)
    throw ConfigError(dir.string() + ": cannot write checkpoint " + path + ": not enough space on the file system (" +
                      std::to_string(static_cast<long long>(sp.available >> 20)) + " MiB free, the checkpoint needs about " +
                      std::to_string(static_cast<long long>(need) >> 20) + " MiB)");
}

// A checkpoint being written: its final path, the temporary file, and about how many bytes it takes.
struct Target {
  std::string path, tmp;
  double bytes = 0;
};

double checkpoint_bytes(const Layout& lay) { return 3.0 * 4.0 * static_cast<double>(lay.total); }  // params, 2 moments

// Why writing checkpoint `t` ran out of room, when the system can tell; else "". From errno right
// after the failing call (HDF5's serial driver leaves it; MPI-IO clears it), a file system with no
// block left, or a file size limit (ulimit -f) below the checkpoint's size.
std::string space_reason(int err, const Target& t) {
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) return std::strerror(err);
  const std::string dir = directory_of(t.path).string();
  struct statvfs sv{};
  if (::statvfs(dir.c_str(), &sv) == 0 && sv.f_bavail == 0)
    return std::string(std::strerror(ENOSPC)) + " (the file system holding " + dir + " is full)";
  struct rlimit rl{};
  if (::getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && static_cast<double>(rl.rlim_cur) < t.bytes)
    return std::string(std::strerror(EFBIG)) + " (the file size limit, ulimit -f, is " + std::to_string(rl.rlim_cur) +
           " bytes; the checkpoint needs about " + std::to_string(static_cast<long long>(t.bytes)) + ")";
  return "";
}

// Throws the failure of `what`, an HDF5 call writing checkpoint `t` (`err`: errno right after it):
// ConfigError (exit 2) naming the reason when it is room on the disk, the user's to make; else
// runtime_error with HDF5's message. Both name the checkpoint.
[[noreturn]] void write_failed(const Target& t, const std::string& what, int err) {
  const std::string where = " (" + what + "; HDF5: " + hdf5_error() + ")";
  const std::string reason = space_reason(err, t);
  if (!reason.empty()) throw ConfigError(t.path + ": cannot write checkpoint: " + reason + where);
  throw std::runtime_error(t.path + ": cannot write checkpoint" + where);
}

void fsync_path(const std::string& p, int flags, const std::string& what) {
  const int fd = ::open(p.c_str(), flags);
  if (fd < 0) throw std::runtime_error(what + ": cannot open " + p + " to fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc == 0) return;
  // data that could not reach the disk for lack of room: the user's to fix (exit 2), as a write
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) throw ConfigError(what + ": fsync " + p + ": " + std::strerror(err));
  throw std::runtime_error(what + ": fsync " + p + ": " + std::strerror(err));
}

// ---- integrity header (format 2) ------------------------------------------------------------

constexpr std::size_t kUserBlockBytes = 512;  // HDF5 user block: the library ignores its content
constexpr const char* kIntegrityMagic = "scanshard checkpoint\n";

struct Integrity {
  std::uint64_t crc = 0;    // CRC-32 (zlib) of bytes [512, end)
  std::uint64_t bytes = 0;  // the file's size when sealed
};

// CRC-32 of the file's bytes from the user block's end; the size read.
Integrity compute_integrity(int fd, const std::string& what) {
  Integrity in;
  uLong crc = crc32(0L, Z_NULL, 0);
  std::vector<unsigned char> buf(1 << 20);
  off_t at = static_cast<off_t>(kUserBlockBytes);
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), at);
    if (n < 0) throw std::runtime_error(what + ": read: " + std::strerror(errno));
    if (n == 0) break;
    crc = crc32(crc, buf.data(), static_cast<uInt>(n));
    at += n;
  }
  in.crc = crc;
  in.bytes = static_cast<std::uint64_t>(at);
  return in;
}

std::string integrity_header(const Integrity& in) {
  char line[160];
  std::snprintf(line, sizeof line, "%sintegrity: crc32 %08llx of bytes 512..%llu\n", kIntegrityMagic,
                static_cast<unsigned long long>(in.crc), static_cast<unsigned long long>(in.bytes));
  std::string h(line);
  h.resize(kUserBlockBytes, '\n');
  return h;
}

// The header's (crc, size), or nullopt-like {0,0} with ok = false when there is none.
bool parse_integrity(const std::string& block, Integrity& out) {
  if (block.rfind(kIntegrityMagic, 0) != 0) return false;
  unsigned long long crc = 0, bytes = 0;
  if (std::sscanf(block.c_str() + std::strlen(kIntegrityMagic), "integrity: crc32 %llx of bytes 512..%llu", &crc, &bytes) != 2)
    return false;
  out.crc = crc;
  out.bytes = bytes;
  return true;
}

Hid create_group(hid_t parent, const std::string& name, hid_t gcpl = H5P_DEFAULT) {
  return Hid(ok(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, gcpl, H5P_DEFAULT), "create group " + name), H5Gclose);
}

Hid create_file(const Group& g, const Target& t) {
  Hid fapl = plist(H5P_FILE_ACCESS, "file access properties");
  if (g.mpi()) ok_status(H5Pset_fapl_mpio(fapl.get(), g.comm, MPI_INFO_NULL), "H5Pset_fapl_mpio");
  // v1.8+ object headers: an attribute larger than 64 KiB (a long model YAML or plan) moves to dense storage.
  ok_status(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST), "H5Pset_libver_bounds");
  Hid fcpl = plist(H5P_FILE_CREATE, "file creation properties");
  ok_status(H5Pset_userblock(fcpl.get(), kUserBlockBytes), "H5Pset_userblock");  // the integrity header's room
  const hid_t fid = H5Fcreate(t.tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
  if (fid < 0)
    throw ConfigError(directory_of(t.path).string() + ": cannot create checkpoint file " + t.tmp + " (" + hdf5_error() + ")");
  return Hid(fid, H5Fclose);
}

void write_meta(hid_t file, const CheckpointMeta& meta) {
  write_string_attr(file, "description", kDescription);
  Hid m = create_group(file, "meta");
  write_string_attr(m.get(), "model_name", meta.model_name);
  write_string_attr(m.get(), "model_yaml", meta.model_yaml);
  write_string_attr(m.get(), "plan", meta.plan_text);
  write_int_attr<std::int64_t>(m.get(), "step", H5T_STD_I64LE, H5T_NATIVE_INT64, meta.step);
  write_int_attr<std::uint64_t>(m.get(), "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, meta.seed);
  write_int_attr<std::int64_t>(m.get(), "data_cursor", H5T_STD_I64LE, H5T_NATIVE_INT64, meta.data_cursor);
  if (!meta.optimizer_yaml.empty()) write_string_attr(m.get(), "optimizer", meta.optimizer_yaml);
  if (!meta.data_yaml.empty()) write_string_attr(m.get(), "data", meta.data_yaml);
  write_int_attr<std::int32_t>(m.get(), "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, kCheckpointFormatVersion);
}

void write_tensors(const Group& g, hid_t file, const Target& target, const Layout& lay, const std::vector<Slab>& slabs,
                   const std::vector<const float*>* data[3]) {
  Hid params = create_group(file, "params");
  Hid optim = create_group(file, "optim");
  Hid adam_m = create_group(optim.get(), "adam_m");
  Hid adam_v = create_group(optim.get(), "adam_v");
  const hid_t roots[3] = {params.get(), adam_m.get(), adam_v.get()};

  Hid dcpl = plist(H5P_DATASET_CREATE, "dataset creation properties");
  ok_status(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), "H5Pset_fill_time");  // every element is written
  Hid dxpl = plist(H5P_DATASET_XFER, "dataset transfer properties");
  if (g.mpi()) ok_status(H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio");

  static const float none = 0;
  for (int s = 0; s < 3; ++s) {
    std::map<std::string, Hid> blocks;
    for (size_t i = 0; i < lay.tensors.size(); ++i) {
      const auto& t = lay.tensors[i];
      auto it = blocks.find(t.block);
      if (it == blocks.end()) it = blocks.emplace(t.block, create_group(roots[s], t.block)).first;
      const std::string what = "write " + dataset_path(kSections[s], t);
      Hid fspace = simple_space(t.shape, what);
      Hid dset(ok(H5Dcreate2(it->second.get(), t.name.c_str(), H5T_IEEE_F32LE, fspace.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                  what),
               H5Dclose);
      const bool on = slabs[i].write;
      select_slab(fspace.get(), slabs[i], on, what);
      Hid mspace = memory_space(slabs[i], on, what);
      const float* buf = (*data[s])[i];
      // Every rank learns of a failed write here (e.g. the disk filled up on one rank's part): all
      // then leave together instead of waiting for each other.
      agree_or_throw(g, attempt([&] {
        errno = 0;
        if (H5Dwrite(dset.get(), H5T_NATIVE_FLOAT, mspace.get(), fspace.get(), dxpl.get(), buf ? buf : &none) < 0)
          write_failed(target, what + " to " + target.tmp, errno);
      }));
    }
  }
}

// Rank 0, right after the temporary file is created: reserves the checkpoint's blocks
// (fallocate, keeping the file's size, so HDF5 sees an empty file), so a disk that another job
// fills during the write cannot fail one rank's collective write half-way. OpenMPI's collective
// writer reports such a failure as success on the ranks that met it and the others then wait
// forever in the close (seen at 3 ranks). File systems without fallocate: no reservation.
void reserve_space(const Target& t) {
  const int fd = ::open(t.tmp.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) write_failed(t, "open " + t.tmp + " to reserve its space", errno);
  const double bytes = t.bytes * 1.02 + (1 << 20);
  const int rc = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(bytes));
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EOPNOTSUPP && err != ENOSYS) write_failed(t, "reserve " + std::to_string(static_cast<long long>(bytes)) + " bytes for " + t.tmp, err);
}

// Writes the checkpoint into t.tmp. The metadata HDF5 caches is flushed (and a failure agreed)
// before the close, so a full disk is met while the file can still be abandoned: HDF5 1.10 frees
// a file whose close fails but keeps its ID, and crashes closing it again when the library shuts
// down. A file that could not be written is therefore left open for that shutdown (write_impl
// removes its name at once).
void write_file(const Group& g, const Target& t, const Layout& lay, const std::vector<Slab>& slabs,
                const std::vector<const float*>* data[3], const CheckpointMeta& meta) {
  Hid file = create_file(g, t);
  try {
    agree_or_throw(g, attempt([&] {
      if (g.rank == 0) reserve_space(t);
    }));
    write_meta(file.get(), meta);
    write_tensors(g, file.get(), t, lay, slabs, data);
    agree_or_throw(g, attempt([&] {
      errno = 0;
      if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0) write_failed(t, "flush " + t.tmp, errno);
    }));
  } catch (...) {
    file.release();
    throw;
  }
  errno = 0;
  if (file.close() < 0) write_failed(t, "close " + t.tmp, errno);
}

// Rank 0: seals the written temporary file, fsyncs it, renames it to the checkpoint's path and
// fsyncs the directory.
void publish(const Target& t) {
  seal_checkpoint(t.tmp);
  fsync_path(t.tmp, O_RDONLY, "checkpoint " + t.path);
  std::error_code ec;
  fs::rename(t.tmp, t.path, ec);
  if (ec) throw ConfigError(t.path + ": cannot move the finished checkpoint " + t.tmp + " into place: " + ec.message());
  fsync_path(directory_of(t.path).string(), O_RDONLY | O_DIRECTORY, "checkpoint " + t.path);
}

void write_impl(const Group& g, const std::string& path, const Layout& lay, const std::vector<Slab>& slabs,
                const std::vector<const float*>& params, const std::vector<const float*>& m1,
                const std::vector<const float*>& m2, const CheckpointMeta& meta_in) {
  QuietHdf5 quiet;
  agree_or_throw(g, attempt([&] { check_arguments("write_checkpoint", lay, slabs, params, m1, m2, true); }));

  Target t{path, "", checkpoint_bytes(lay)};
  if (g.rank == 0) {
    const Failure f = attempt([&] {
      check_directory(path);
      check_space(path, t.bytes);
      t.tmp = path + ".tmp-" + std::to_string(::getpid());
    });
    agree_or_throw(g, f);
  } else {
    agree_or_throw(g, {});
  }
  t.tmp = bcast_string(g, t.tmp, 0);

  // Metadata (attributes) must be identical on every rank: take rank 0's.
  CheckpointMeta meta = meta_in;
  meta.model_name = bcast_string(g, meta.model_name, 0);
  meta.model_yaml = bcast_string(g, meta.model_yaml, 0);
  meta.plan_text = bcast_string(g, meta.plan_text, 0);
  meta.optimizer_yaml = bcast_string(g, meta.optimizer_yaml, 0);
  meta.data_yaml = bcast_string(g, meta.data_yaml, 0);
  bcast_value(g, meta.step, 0);
  bcast_value(g, meta.seed, 0);
  bcast_value(g, meta.data_cursor, 0);

  const std::vector<const float*>* data[3] = {&params, &m1, &m2};
  Failure f = agree(g, attempt([&] { write_file(g, t, lay, slabs, data, meta); }));
  if (!f && g.rank == 0) f = attempt([&] { publish(t); });
  if (g.rank == 0 && f) {
    std::error_code ec;
    fs::remove(t.tmp, ec);  // never leave a partial file behind
  }
  agree_or_throw(g, f);
}

}  // namespace

std::vector<std::string> remove_stale_partials(const std::string& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto at = name.rfind(".h5.tmp-");
    if (at == std::string::npos || at == 0) continue;
    const std::string pid = name.substr(at + 8);
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (::kill(static_cast<pid_t>(std::stol(pid)), 0) == 0 || errno == EPERM) continue;  // its writer is alive
    std::error_code rm;
    if (it->is_regular_file(rm) && fs::remove(it->path(), rm)) removed.push_back(it->path().string());
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

void seal_checkpoint(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot open to seal: " + std::strerror(errno));
  try {
    const std::string h = integrity_header(compute_integrity(fd, path));
    if (::pwrite(fd, h.data(), h.size(), 0) != static_cast<ssize_t>(h.size()))
      throw std::runtime_error(path + ": cannot write the integrity header: " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

namespace {

// ---- reading --------------------------------------------------------------------------------

// Rank 0: a readable, non-empty HDF5 file?
void precheck_file(const Reader& r) {
  std::error_code ec;
  const fs::file_status st = fs::status(r.path, ec);
  if (!fs::exists(st)) r.not_checkpoint("no such file");
  if (fs::is_directory(st)) r.not_checkpoint("it is a directory");
  if (!fs::is_regular_file(st)) r.not_checkpoint("not a regular file (a FIFO or a device)");
  if (::access(r.path.c_str(), R_OK) != 0) r.not_checkpoint(std::string("cannot read it: ") + std::strerror(errno));
  const auto size = fs::file_size(r.path, ec);
  if (ec) r.not_checkpoint("cannot read it: " + ec.message());
  if (size == 0) r.not_checkpoint("empty file");
  const htri_t is = H5Fis_hdf5(r.path.c_str());
  if (is < 0) r.not_checkpoint("cannot read it: " + hdf5_error());
  if (is == 0) r.not_checkpoint("not an HDF5 file");
  // The integrity header, before HDF5 parses more than its signature.
  const int fd = ::open(r.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) r.not_checkpoint(std::string("cannot read it: ") + std::strerror(errno));
  std::string block(kUserBlockBytes, '\0');
  const ssize_t got = ::pread(fd, block.data(), block.size(), 0);
  Integrity want, have;
  const bool has_header = got == static_cast<ssize_t>(kUserBlockBytes) && parse_integrity(block, want);
  if (has_header) {
    try {
      have = compute_integrity(fd, r.path);
    } catch (const std::exception& e) {
      ::close(fd);
      r.not_checkpoint(std::string("cannot read it: ") + e.what());
    }
  }
  ::close(fd);
  if (!has_header)
    r.not_checkpoint("no scanshard integrity header: written by another program or by a scanshard older than checkpoint "
                     "format_version " + std::to_string(kCheckpointFormatVersion));
  if (have.bytes != want.bytes)
    r.not_checkpoint("damaged or truncated HDF5 file: " + std::to_string(have.bytes) + " bytes, written as " +
                     std::to_string(want.bytes));
  if (have.crc != want.crc) r.not_checkpoint("damaged HDF5 file: its CRC-32 does not match the one written with it");
}

CheckpointMeta read_meta(const Reader& r, hid_t file) {
  Hid m = r.group(file, "meta", "/meta");
  CheckpointMeta meta;
  const std::int64_t version = r.int_attr<std::int64_t>(m.get(), "format_version", H5T_NATIVE_INT64);
  if (version != kCheckpointFormatVersion)  // compared before narrowing: 2 + 2^32 is not 2
    throw ConfigError(r.path + ": checkpoint format_version " + std::to_string(version) +
                      " is not supported (this scanshard reads format_version " + std::to_string(kCheckpointFormatVersion) + ")");
  meta.version = kCheckpointFormatVersion;
  meta.model_name = r.string_attr(m.get(), "model_name");
  meta.model_yaml = r.string_attr(m.get(), "model_yaml");
  meta.plan_text = r.string_attr(m.get(), "plan");
  meta.step = r.int_attr<std::int64_t>(m.get(), "step", H5T_NATIVE_INT64);
  meta.seed = r.int_attr<std::uint64_t>(m.get(), "seed", H5T_NATIVE_UINT64);
  meta.data_cursor = r.int_attr<std::int64_t>(m.get(), "data_cursor", H5T_NATIVE_INT64);
  if (H5Aexists(m.get(), "optimizer") > 0) meta.optimizer_yaml = r.string_attr(m.get(), "optimizer");
  if (H5Aexists(m.get(), "data") > 0) meta.data_yaml = r.string_attr(m.get(), "data");
  return meta;
}

// "float16", "float64", "big-endian float32", "int32", "a string", ... for messages.
std::string type_name(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const std::string bits = std::to_string(8 * H5Tget_size(type));
  const std::string order = H5Tget_order(type) == H5T_ORDER_BE ? "big-endian " : "";
  if (cls == H5T_FLOAT) return order + "float" + bits;
  if (cls == H5T_INTEGER) return order + (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + bits;
  if (cls == H5T_STRING) return "a string";
  return "a non-numeric type";
}

// Shape of the dataset `name` in `block` (throws "not a scanshard checkpoint" if it is not a float dataset).
std::vector<std::int64_t> dataset_shape(const Reader& r, hid_t block, const std::string& name, const std::string& full) {
  const hid_t d = H5Dopen2(block, name.c_str(), H5P_DEFAULT);
  if (d < 0) {
    H5Eclear2(H5E_DEFAULT);
    r.not_checkpoint(full + " is not a dataset");
  }
  Hid dset(d, H5Dclose);
  Hid type(ok(H5Dget_type(dset.get()), full), H5Tclose);
  if (H5Tequal(type.get(), H5T_IEEE_F32LE) <= 0)  // never converted: a float16 or float64 tensor is not ours
    r.not_checkpoint(full + " is stored as " + type_name(type.get()) + ", not as little-endian float32 (refused, not converted)");
  Hid space(ok(H5Dget_space(dset.get()), full), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) r.not_checkpoint(full + ": unreadable dataspace");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) ok_status(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), full);
  return {dims.begin(), dims.end()};
}

// All "<block>/<name>" -> shape under one section group.
std::map<std::string, std::vector<std::int64_t>> list_tensors(const Reader& r, hid_t file, const Section& s) {
  const std::string root = s.group;
  Hid sec = r.group(file, root, root);
  std::map<std::string, std::vector<std::int64_t>> out;
  for (const auto& block : link_names(sec.get(), root)) {
    Hid b = r.group(sec.get(), block, root + "/" + block);
    for (const auto& name : link_names(b.get(), root + "/" + block))
      out[block + "/" + name] = dataset_shape(r, b.get(), name, root + "/" + block + "/" + name);
  }
  return out;
}

void check_model(const Reader& r, hid_t file, const Layout& lay, const CheckpointMeta& meta) {
  const std::string whose = " (the checkpoint's model_name is '" + meta.model_name + "')";
  for (int s = 0; s < 3; ++s) {
    const auto found = list_tensors(r, file, kSections[s]);
    std::set<std::string> needed;
    for (const auto& t : lay.tensors) {
      const std::string n = tensor_name(t);
      needed.insert(n);
      const auto it = found.find(n);
      if (s == 0) {
        if (it == found.end())
          throw ConfigError(r.path + ": checkpoint is of another model: it has no tensor " + n + ", the model needs one of shape " +
                            shape_str(t.shape) + whose);
        if (it->second != t.shape)
          throw ConfigError(r.path + ": checkpoint is of another model: tensor " + n + " has shape " + shape_str(it->second) +
                            ", the model needs " + shape_str(t.shape) + whose);
      } else if (it == found.end() || it->second != t.shape) {
        r.not_checkpoint(std::string(kSections[s].what) + " " + dataset_path(kSections[s], t) +
                         (it == found.end() ? " is missing" : " has shape " + shape_str(it->second)) + ", the parameters have " +
                         shape_str(t.shape));
      }
    }
    if (s == 0)
      for (const auto& [n, shape] : found)
        if (!needed.count(n))
          throw ConfigError(r.path + ": checkpoint is of another model: it has tensor " + n + " of shape " + shape_str(shape) +
                            ", which the model does not have" + whose);
  }
}

void read_data(const Group& g, hid_t file, const Layout& lay, const std::vector<Slab>& slabs, const std::vector<float*>* data[3]) {
  Hid dxpl = plist(H5P_DATASET_XFER, "dataset transfer properties");
  if (g.mpi()) ok_status(H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio");
  static float none = 0;
  for (int s = 0; s < 3; ++s)
    for (size_t i = 0; i < lay.tensors.size(); ++i) {
      const std::string full = dataset_path(kSections[s], lay.tensors[i]);
      const std::string what = "read " + full;
      Hid dset(ok(H5Dopen2(file, full.c_str(), H5P_DEFAULT), what), H5Dclose);
      Hid fspace(ok(H5Dget_space(dset.get()), what), H5Sclose);
      select_slab(fspace.get(), slabs[i], true, what);
      Hid mspace = memory_space(slabs[i], true, what);
      float* buf = (*data[s])[i];
      ok_status(H5Dread(dset.get(), H5T_NATIVE_FLOAT, mspace.get(), fspace.get(), dxpl.get(), buf ? buf : &none), what);
    }
}

// The checkpoint opened read-only by every rank of g (MPI-IO when g is parallel).
Hid open_read(const Group& g, const Reader& r) {
  Hid fapl = plist(H5P_FILE_ACCESS, "file access properties");
  if (g.mpi()) ok_status(H5Pset_fapl_mpio(fapl.get(), g.comm, MPI_INFO_NULL), "H5Pset_fapl_mpio");
  const hid_t fid = H5Fopen(r.path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (fid < 0) r.not_checkpoint("damaged or truncated HDF5 file: " + hdf5_error());
  return Hid(fid, H5Fclose);
}

CheckpointMeta read_impl(const Group& g, const std::string& path, const Layout& lay, const std::vector<Slab>& slabs,
                         const std::vector<float*>& params, const std::vector<float*>& m1, const std::vector<float*>& m2) {
  QuietHdf5 quiet;
  const Reader r{path};
  agree_or_throw(g, attempt([&] { check_arguments("read_checkpoint", lay, slabs, params, m1, m2, false); }));
  agree_or_throw(g, g.rank == 0 ? attempt([&] { precheck_file(r); }) : Failure{});

  Hid file;
  CheckpointMeta meta;
  agree_or_throw(g, attempt([&] {
    file = open_read(g, r);
    meta = read_meta(r, file.get());
    check_model(r, file.get(), lay, meta);
  }));
  const std::vector<float*>* data[3] = {&params, &m1, &m2};
  agree_or_throw(g, attempt([&] {
    try {
      read_data(g, file.get(), lay, slabs, data);
    } catch (const std::runtime_error& e) {
      r.not_checkpoint(std::string("damaged data: ") + e.what());
    }
  }));
  agree_or_throw(g, attempt([&] { ok_status(file.close(), "close " + path); }));
  return meta;
}

}  // namespace

Slab whole_tensor(const ParamTensor& t, bool write) {
  Slab s;
  s.offset.assign(t.shape.size(), 0);
  s.count = t.shape;
  s.write = write;
  return s;
}

std::vector<Slab> shard_slabs(const ShardLayout& sl) {
  std::vector<Slab> slabs;
  for (std::size_t i = 0; i < sl.dim.size(); ++i) {
    Slab s = whole_tensor(sl.full.tensors[i]);
    s.count = sl.shape[i];
    if (sl.dim[i] >= 0) s.offset[static_cast<std::size_t>(sl.dim[i])] = sl.range[i].begin;
    slabs.push_back(std::move(s));
  }
  return slabs;
}

void write_checkpoint(const mpi::Comm& comm, const std::string& path, const Layout& lay, const std::vector<Slab>& slabs,
                      const std::vector<const float*>& params, const std::vector<const float*>& m1,
                      const std::vector<const float*>& m2, const CheckpointMeta& meta) {
  write_impl(group_of(&comm), path, lay, slabs, params, m1, m2, meta);
}

void write_checkpoint(const mpi::Comm* comm, const std::string& path, const Layout& lay, const std::vector<Slab>& slabs,
                      const std::vector<const float*>& params, const std::vector<const float*>& m1,
                      const std::vector<const float*>& m2, const CheckpointMeta& meta) {
  write_impl(group_of(comm), path, lay, slabs, params, m1, m2, meta);
}

CheckpointMeta read_checkpoint_meta(const mpi::Comm* comm, const std::string& path) {
  QuietHdf5 quiet;
  const Group g = group_of(comm);
  const Reader r{path};
  agree_or_throw(g, g.rank == 0 ? attempt([&] { precheck_file(r); }) : Failure{});
  CheckpointMeta meta;
  agree_or_throw(g, attempt([&] {
    Hid file = open_read(g, r);
    meta = read_meta(r, file.get());
    ok_status(file.close(), "close " + path);
  }));
  return meta;
}

CheckpointMeta read_checkpoint(const mpi::Comm& comm, const std::string& path, const Layout& lay,
                               const std::vector<Slab>& slabs, const std::vector<float*>& params,
                               const std::vector<float*>& m1, const std::vector<float*>& m2) {
  return read_impl(group_of(&comm), path, lay, slabs, params, m1, m2);
}

CheckpointMeta read_checkpoint(const mpi::Comm* comm, const std::string& path, const Layout& lay,
                               const std::vector<Slab>& slabs, const std::vector<float*>& params,
                               const std::vector<float*>& m1, const std::vector<float*>& m2) {
  return read_impl(group_of(comm), path, lay, slabs, params, m1, m2);
}

}  // namespace scanshard::train
