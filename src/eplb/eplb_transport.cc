#include "eplb/eplb_transport.h"

#include <climits>
#include <cstring>

#include "moe/errors.h"

#ifdef MOE_HAVE_MPI
#include "comm/mpi/mpi_group.h"
#endif

namespace moe {

namespace {

class LocalEplbTransport final : public EplbTransport {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "local"; }
  std::vector<int64_t> allreduce_sum(std::span<const int64_t> values) override {
    return {values.begin(), values.end()};
  }
  bool all(bool value) override { return value; }
  void exchange(std::span<const ByteTransfer> sends, std::span<const ByteTransfer> receives,
                void*) override {
    MOE_CHECK(sends.empty() && receives.empty(),
              "EPLB: a single rank has no peer to exchange slot bytes with");
  }
};

#ifdef MOE_HAVE_MPI
/// CPU ranks: host buffers over MPI, on a communicator of their own.
class MpiEplbTransport final : public EplbTransport {
 public:
  explicit MpiEplbTransport(const Mapping& mapping) : group_(mapping) {}
  int rank() const override { return group_.rank(); }
  int size() const override { return group_.size(); }
  std::string name() const override { return "mpi"; }
  std::vector<int64_t> allreduce_sum(std::span<const int64_t> values) override {
    return group_.allreduce_sum(values, "EPLB load statistics (allreduce)");
  }
  bool all(bool value) override {
    return group_.allreduce_max(value ? 0 : 1, "EPLB migration readiness (allreduce)") == 0;
  }
  void exchange(std::span<const ByteTransfer> sends, std::span<const ByteTransfer> receives,
                void*) override {
    constexpr int kTag = 7201;
    constexpr std::string_view kWhat = "EPLB weight migration (send/recv)";
    group_.check_usable(kWhat);
    std::vector<MPI_Request> requests;
    requests.reserve(sends.size() + receives.size());
    // MPI keeps messages of one (source, tag, communicator) in order, which matches the i-th
    // send to a peer with that peer's i-th receive.
    for (const ByteTransfer& r : receives) {
      requests.push_back(MPI_REQUEST_NULL);
      group_.check(MPI_Irecv(r.data, 1, group_.row_type(checked_bytes(r)), r.peer, kTag,
                             group_.comm(), &requests.back()),
                   kWhat);
    }
    for (const ByteTransfer& s : sends) {
      requests.push_back(MPI_REQUEST_NULL);
      group_.check(MPI_Isend(s.data, 1, group_.row_type(checked_bytes(s)), s.peer, kTag,
                             group_.comm(), &requests.back()),
                   kWhat);
    }
    group_.wait(requests, kWhat);
  }

 private:
  static size_t checked_bytes(const ByteTransfer& t) {
    MOE_CHECK(t.bytes > 0 && t.bytes <= INT_MAX, "EPLB migration: a transfer of ", t.bytes,
              " bytes to/from rank ", t.peer, " (MPI moves 1 .. 2^31-1 bytes per slot tensor)");
    return static_cast<size_t>(t.bytes);
  }

  MpiGroup group_;
};
#endif

}  // namespace

std::unique_ptr<EplbTransport> make_eplb_transport(const Mapping& mapping, Device device) {
  if (mapping.ep_size == 1) return std::make_unique<LocalEplbTransport>();
  if (device.is_cpu()) {
#ifdef MOE_HAVE_MPI
    return std::make_unique<MpiEplbTransport>(mapping);
#else
    MOE_THROW("EPLB online mode over ", mapping.ep_size,
              " CPU ranks needs MPI; this build has none");
#endif
  }
#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)
  return make_nccl_eplb_transport(mapping);
#else
  MOE_THROW("EPLB online mode over ", mapping.ep_size,
            " GPU ranks needs NCCL and MPI; this build lacks one");
#endif
}

}  // namespace moe
