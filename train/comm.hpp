// train/comm.hpp — the one thin, error-checked wrapper through which every MPI call goes.
//
// For: collectives and point-to-point on a communicator (one per mesh axis later), with errors
// reported as MpiError naming the MPI call, source file, line and world rank. Communicators are
// switched to MPI_ERRORS_RETURN so a failed call throws instead of aborting silently.
// Not for: deciding what to communicate (program/ lowering) or timing it (the runner's trace).
#pragma once
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <mpi.h>

#include "train/watchdog.hpp"

namespace scanshard::mpi {

class MpiError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws MpiError if rc != MPI_SUCCESS: "<call> failed at file:line on rank r: <MPI message>".
void check(int rc, const char* call, const char* file, int line);
#define SCANSHARD_MPI(call) ::scanshard::mpi::check((call), #call, __FILE__, __LINE__)
// The blocking collective BLOCKING(args...), or while the watchdog is armed (watchdog.hpp) its
// non-blocking form NONBLOCKING(args..., &request) completed by watchdog_wait.
#define SCANSHARD_MPI_WAITED(BLOCKING, NONBLOCKING, ...)                       \
  do {                                                                          \
    if (!::scanshard::mpi::watchdog_armed()) {                                  \
      SCANSHARD_MPI(BLOCKING(__VA_ARGS__));                                     \
    } else {                                                                    \
      MPI_Request waited_request_ = MPI_REQUEST_NULL;                           \
      SCANSHARD_MPI(NONBLOCKING(__VA_ARGS__, &waited_request_));               \
      ::scanshard::mpi::watchdog_wait(waited_request_, #BLOCKING);              \
    }                                                                           \
  } while (0)

int world_rank();  // rank in MPI_COMM_WORLD (for messages); -1 before MPI_Init

// One bf16 element on the wire (kernels/bf16.hpp bit pattern): 2 bytes, summed by sum_op<Bf16>
// (each pair added in fp32, rounded to nearest even). train/wire.hpp packs and unpacks.
struct Bf16 { std::uint16_t bits; };

// Payload bytes this process has moved through Comm, by kind: a collective counts its whole
// buffer (all-reduce: the buffer; all-gather: the gathered output; reduce-scatter: the input) —
// the bytes program/lower.cpp puts in a collective step's comm_bytes —, point to point the bytes
// sent and received. Tests compare them with the lowering (tests/mpi/test_bf16.cpp).
struct Traffic {
  double collective_bytes = 0, sent_bytes = 0, received_bytes = 0;
  // What a step moved since `before`, in comm_bytes' terms: its collectives' buffers plus the
  // larger direction of its point-to-point messages.
  double step_bytes_since(const Traffic& before) const;
};
Traffic& traffic();

template <class T> MPI_Datatype datatype();
template <> inline MPI_Datatype datatype<float>() { return MPI_FLOAT; }
template <> inline MPI_Datatype datatype<double>() { return MPI_DOUBLE; }
template <> inline MPI_Datatype datatype<std::int32_t>() { return MPI_INT32_T; }
template <> inline MPI_Datatype datatype<std::int64_t>() { return MPI_INT64_T; }
template <> inline MPI_Datatype datatype<std::uint8_t>() { return MPI_UINT8_T; }
template <> inline MPI_Datatype datatype<Bf16>() { return MPI_UINT16_T; }
// The sum reduction of T: MPI_SUM, or for Bf16 a user operation (created once, comm.cpp).
template <class T> MPI_Op sum_op() { return MPI_SUM; }
template <> MPI_Op sum_op<Bf16>();

// A communicator handle. Owns (frees) communicators it created by split(); does not own world.
class Comm {
 public:
  static Comm world();
  Comm(Comm&& other) noexcept;
  Comm& operator=(Comm&& other) noexcept;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  ~Comm();

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm raw() const { return comm_; }

  // Ranks with the same color form a new communicator, ordered by key.
  Comm split(int color, int key) const;
  void barrier() const;

  // In-place sum over all ranks.
  template <class T> void allreduce_sum(std::span<T> data) const {
    collective_payload(data.size_bytes());
    SCANSHARD_MPI_WAITED(MPI_Allreduce, MPI_Iallreduce, MPI_IN_PLACE, data.data(), count(data.size()), datatype<T>(), sum_op<T>(), comm_);
  }
  template <class T> void allreduce_max(std::span<T> data) const {
    collective_payload(data.size_bytes());
    SCANSHARD_MPI_WAITED(MPI_Allreduce, MPI_Iallreduce, MPI_IN_PLACE, data.data(), count(data.size()), datatype<T>(), MPI_MAX, comm_);
  }
  // out[r*n .. (r+1)*n) = in of rank r; out.size() must be size()·in.size().
  template <class T> void allgather(std::span<const T> in, std::span<T> out) const {
    require(out.size() == in.size() * static_cast<size_t>(size_), "allgather: out.size() must be size()*in.size()");
    collective_payload(out.size_bytes());
    SCANSHARD_MPI_WAITED(MPI_Allgather, MPI_Iallgather, in.data(), count(in.size()), datatype<T>(), out.data(), count(in.size()),
                         datatype<T>(), comm_);
  }
  // Sum over ranks of in, scattered: rank r gets elements [r*n, (r+1)*n) with n = out.size().
  template <class T> void reduce_scatter_sum(std::span<const T> in, std::span<T> out) const {
    require(in.size() == out.size() * static_cast<size_t>(size_), "reduce_scatter: in.size() must be size()*out.size()");
    collective_payload(in.size_bytes());
    SCANSHARD_MPI_WAITED(MPI_Reduce_scatter_block, MPI_Ireduce_scatter_block, in.data(), out.data(), count(out.size()),
                         datatype<T>(), sum_op<T>(), comm_);
  }
  // Sum over ranks of `in` (length Σ counts); rank r receives its contiguous part of counts[r]
  // elements in `out` (ZeRO gradient sharding with uneven shards).
  template <class T> void reduce_scatter_sum_v(std::span<const T> in, std::span<T> out, const std::vector<int>& counts) const {
    require(counts.size() == static_cast<size_t>(size_) && out.size() == static_cast<size_t>(counts[static_cast<size_t>(rank_)]),
            "reduce_scatter_v: one count per rank, out sized to this rank's count");
    collective_payload(in.size_bytes());
    SCANSHARD_MPI_WAITED(MPI_Reduce_scatter, MPI_Ireduce_scatter, in.data(), out.data(), counts.data(), datatype<T>(), sum_op<T>(), comm_);
  }
  // In place: buf holds Σ counts elements, this rank's part (counts[rank] at its offset) is
  // current; afterwards every part is (ZeRO parameter gather).
  template <class T> void allgather_v_inplace(std::span<T> buf, const std::vector<int>& counts) const {
    std::vector<int> displs(counts.size(), 0);
    for (size_t i = 1; i < counts.size(); ++i) displs[i] = displs[i - 1] + counts[i - 1];
    require(counts.size() == static_cast<size_t>(size_) && buf.size() == static_cast<size_t>(displs.back() + counts.back()),
            "allgather_v: one count per rank summing to the buffer size");
    collective_payload(buf.size_bytes());
    SCANSHARD_MPI_WAITED(MPI_Allgatherv, MPI_Iallgatherv, MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf.data(), counts.data(),
                         displs.data(), datatype<T>(), comm_);
  }
  // Point to point (pipeline stages): a non-blocking send completed by wait_all, a blocking receive.
  template <class T> MPI_Request isend(std::span<const T> data, int dest, int tag) const {
    if (dest != MPI_PROC_NULL) traffic().sent_bytes += static_cast<double>(data.size_bytes());
    MPI_Request r = MPI_REQUEST_NULL;
    SCANSHARD_MPI(MPI_Isend(data.data(), count(data.size()), datatype<T>(), dest, tag, comm_, &r));
    return r;
  }
  template <class T> void recv(std::span<T> data, int source, int tag) const {
    if (source != MPI_PROC_NULL) traffic().received_bytes += static_cast<double>(data.size_bytes());
    if (!watchdog_armed()) {
      SCANSHARD_MPI(MPI_Recv(data.data(), count(data.size()), datatype<T>(), source, tag, comm_, MPI_STATUS_IGNORE));
      return;
    }
    MPI_Request r = MPI_REQUEST_NULL;
    SCANSHARD_MPI(MPI_Irecv(data.data(), count(data.size()), datatype<T>(), source, tag, comm_, &r));
    watchdog_wait(r, "MPI_Recv");
  }
  // Non-blocking in-place sum (a gradient bucket while the backward pass goes on); complete it
  // with wait_all. `data` must stay alive and untouched until then.
  template <class T> MPI_Request iallreduce_sum(std::span<T> data) const {
    collective_payload(data.size_bytes());
    MPI_Request r = MPI_REQUEST_NULL;
    SCANSHARD_MPI(MPI_Iallreduce(MPI_IN_PLACE, data.data(), count(data.size()), datatype<T>(), sum_op<T>(), comm_, &r));
    return r;
  }
  // Non-blocking reduce_scatter_sum_v (a block's gradient while the backward pass goes on);
  // complete it with wait_all. `in` and `out` must stay alive and untouched until then.
  template <class T> MPI_Request ireduce_scatter_sum_v(std::span<const T> in, std::span<T> out, const std::vector<int>& counts) const {
    require(counts.size() == static_cast<size_t>(size_) && out.size() == static_cast<size_t>(counts[static_cast<size_t>(rank_)]),
            "ireduce_scatter_v: one count per rank, out sized to this rank's count");
    collective_payload(in.size_bytes());
    MPI_Request r = MPI_REQUEST_NULL;
    SCANSHARD_MPI(MPI_Ireduce_scatter(in.data(), out.data(), counts.data(), datatype<T>(), sum_op<T>(), comm_, &r));
    return r;
  }
  // In-place reduction of `data` with a user operation `op` (e.g. the softmax statistics merge).
  template <class T> void allreduce_op(std::span<T> data, MPI_Op op) const {
    collective_payload(data.size_bytes());
    SCANSHARD_MPI_WAITED(MPI_Allreduce, MPI_Iallreduce, MPI_IN_PLACE, data.data(), count(data.size()), datatype<T>(), op, comm_);
  }
  // Lets outstanding requests progress (MPI moves non-blocking collectives on only inside MPI calls).
  static void test_all(std::vector<MPI_Request>& requests) {
    if (requests.empty()) return;
    int done = 0;
    SCANSHARD_MPI(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE));
    if (done) requests.clear();
  }
  static void wait_all(std::vector<MPI_Request>& requests) {
    watchdog_wait(requests, "MPI_Waitall");  // MPI_Waitall while the watchdog is disarmed
  }
  template <class T> void broadcast(std::span<T> data, int root) const {
    collective_payload(data.size_bytes());
    SCANSHARD_MPI_WAITED(MPI_Bcast, MPI_Ibcast, data.data(), count(data.size()), datatype<T>(), root, comm_);
  }
  // Send `send` to `dest` and receive `recv` from `source` (either may be MPI_PROC_NULL).
  template <class T> void sendrecv(std::span<const T> send, int dest, std::span<T> recv, int source, int tag = 0) const {
    if (dest != MPI_PROC_NULL) traffic().sent_bytes += static_cast<double>(send.size_bytes());
    if (source != MPI_PROC_NULL) traffic().received_bytes += static_cast<double>(recv.size_bytes());
    if (!watchdog_armed()) {
      SCANSHARD_MPI(MPI_Sendrecv(send.data(), count(send.size()), datatype<T>(), dest, tag, recv.data(),
                                 count(recv.size()), datatype<T>(), source, tag, comm_, MPI_STATUS_IGNORE));
      return;
    }
    std::vector<MPI_Request> r(2, MPI_REQUEST_NULL);
    SCANSHARD_MPI(MPI_Irecv(recv.data(), count(recv.size()), datatype<T>(), source, tag, comm_, &r[1]));
    SCANSHARD_MPI(MPI_Isend(send.data(), count(send.size()), datatype<T>(), dest, tag, comm_, &r[0]));
    watchdog_wait(r, "MPI_Sendrecv");
  }

 private:
  Comm(MPI_Comm comm, bool owned);
  static int count(size_t n);
  static void require(bool ok, const char* what);
  static void collective_payload(std::size_t bytes) { traffic().collective_bytes += static_cast<double>(bytes); }
  MPI_Comm comm_ = MPI_COMM_NULL;
  bool owned_ = false;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace scanshard::mpi
