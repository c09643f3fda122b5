// EPLB's transport for GPU ranks: slot bytes by ncclSend/ncclRecv on a communicator of its
// own (not the forward's), host agreement over the same ranks' MPI group.
#include "eplb/eplb_transport.h"

#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)

#include "comm/nccl/nccl_group.h"
#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe {

namespace {

class NcclEplbTransport final : public EplbTransport {
 public:
  explicit NcclEplbTransport(const Mapping& mapping) : group_(mapping) { connect_peers(); }
  int rank() const override { return group_.rank(); }
  int size() const override { return group_.size(); }
  std::string name() const override { return "nccl"; }
  std::vector<int64_t> allreduce_sum(std::span<const int64_t> values) override {
    return group_.host().allreduce_sum(values, "EPLB load statistics (allreduce)");
  }
  bool all(bool value) override {
    return group_.host().allreduce_max(value ? 0 : 1, "EPLB migration readiness (allreduce)") == 0;
  }
  void exchange(std::span<const ByteTransfer> sends, std::span<const ByteTransfer> receives,
                void* stream) override {
    constexpr std::string_view kWhat = "EPLB weight migration (ncclSend/ncclRecv)";
    group_.check_usable(kWhat);
    if (sends.empty() && receives.empty()) return;
    auto s = static_cast<cudaStream_t>(stream);
    group_.finish(ncclGroupStart(), kWhat);
    // NCCL matches the i-th send to a peer with that peer's i-th receive from this rank.
    for (const ByteTransfer& t : sends) {
      group_.finish(
          ncclSend(t.data, static_cast<size_t>(t.bytes), ncclUint8, t.peer, group_.comm(), s),
          kWhat);
    }
    for (const ByteTransfer& t : receives) {
      group_.finish(
          ncclRecv(t.data, static_cast<size_t>(t.bytes), ncclUint8, t.peer, group_.comm(), s),
          kWhat);
    }
    group_.finish(ncclGroupEnd(), kWhat);
  }

 private:
  /// NCCL connects two ranks at their first send/recv (about a second on two H200s): one byte
  /// to and from every peer now, at set-up, so that no forward waits for it.
  void connect_peers() {
    if (size() == 1) return;
    void* buf = nullptr;
    MOE_CUDA_CHECK(cudaMalloc(&buf, 2 * static_cast<size_t>(size())));
    cudaStream_t stream = nullptr;
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    std::vector<ByteTransfer> sends, receives;
    auto* bytes = static_cast<char*>(buf);
    for (int peer = 0; peer < size(); ++peer) {
      if (peer == rank()) continue;
      sends.push_back({peer, bytes + peer, 1});
      receives.push_back({peer, bytes + size() + peer, 1});
    }
    exchange(sends, receives, stream);
    group_.wait_stream(stream, "EPLB transport set-up (connecting the peers)");
    MOE_CUDA_CHECK(cudaStreamDestroy(stream));
    MOE_CUDA_CHECK(cudaFree(buf));
  }

  NcclGroup group_;
};

}  // namespace

std::unique_ptr<EplbTransport> make_nccl_eplb_transport(const Mapping& mapping) {
  return std::make_unique<NcclEplbTransport>(mapping);
}

}  // namespace moe

#endif  // MOE_HAVE_NCCL && MOE_HAVE_MPI
