// train/comm.cpp — see comm.hpp.
#include "train/comm.hpp"

#include <algorithm>
#include <climits>

#include "kernels/bf16.hpp"

namespace scanshard::mpi {

int world_rank() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return -1;
  int r = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

Traffic& traffic() {
  static Traffic t;
  return t;
}

double Traffic::step_bytes_since(const Traffic& before) const {
  return collective_bytes - before.collective_bytes +
         std::max(sent_bytes - before.sent_bytes, received_bytes - before.received_bytes);
}

namespace {
// io[i] = round_bf16(in[i] + io[i]): one bf16 sum, added in fp32 (both widen exactly).
void bf16_sum(void* in, void* io, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const std::uint16_t*>(in);
  auto* b = static_cast<std::uint16_t*>(io);
  for (int i = 0; i < *len; ++i) b[i] = kernels::to_bf16(kernels::from_bf16(a[i]) + kernels::from_bf16(b[i]));
}
}  // namespace

template <> MPI_Op sum_op<Bf16>() {
  static MPI_Op op = [] {
    MPI_Op o = MPI_OP_NULL;
    SCANSHARD_MPI(MPI_Op_create(&bf16_sum, 1, &o));  // commutative: a + b == b + a in fp32
    return o;
  }();
  return op;
}

void check(int rc, const char* call, const char* file, int line) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
  throw MpiError(std::string(call) + " failed at " + file + ":" + std::to_string(line) + " on rank " +
                 std::to_string(world_rank()) + ": " + std::string(msg, static_cast<size_t>(len)));
}

Comm::Comm(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
  SCANSHARD_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  SCANSHARD_MPI(MPI_Comm_rank(comm_, &rank_));
  SCANSHARD_MPI(MPI_Comm_size(comm_, &size_));
}

Comm Comm::world() { return Comm(MPI_COMM_WORLD, false); }

Comm::Comm(Comm&& o) noexcept : comm_(o.comm_), owned_(o.owned_), rank_(o.rank_), size_(o.size_) {
  o.comm_ = MPI_COMM_NULL;
  o.owned_ = false;
}

Comm& Comm::operator=(Comm&& o) noexcept {
  if (this != &o) {
    if (owned_ && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
    comm_ = o.comm_; owned_ = o.owned_; rank_ = o.rank_; size_ = o.size_;
    o.comm_ = MPI_COMM_NULL;
    o.owned_ = false;
  }
  return *this;
}

Comm::~Comm() {
  int fin = 0;
  MPI_Finalized(&fin);
  if (owned_ && comm_ != MPI_COMM_NULL && !fin) MPI_Comm_free(&comm_);
}

Comm Comm::split(int color, int key) const {
  MPI_Comm out = MPI_COMM_NULL;
  SCANSHARD_MPI(MPI_Comm_split(comm_, color, key, &out));
  return Comm(out, true);
}

void Comm::barrier() const { SCANSHARD_MPI_WAITED(MPI_Barrier, MPI_Ibarrier, comm_); }

int Comm::count(size_t n) {
  if (n > static_cast<size_t>(INT_MAX)) throw MpiError("message of " + std::to_string(n) + " elements exceeds MPI's int count");
  return static_cast<int>(n);
}

void Comm::require(bool ok, const char* what) {
  if (!ok) throw MpiError(what);
}

}  // namespace scanshard::mpi
