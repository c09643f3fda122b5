// EPLB's transport for GPU ranks: slot bytes by ncclSend/ncclRecv on a communicator of its
// own (not the forward's), host agreement over the same ranks' MPI group. When every rank is
// on one host (and MOE_EPLB_NO_IPC is unset), share_rows maps the peers' weight tensors by
// CUDA IPC and receives are pulled by copy engines: no NCCL kernel then occupies SMs the
// forward's persistent GEMM waits for, nor spins until the peer's stream reaches it.
// One communicator per process and GPU serves every layer's transport (EplbGroup), and its
// peers are connected (about a second) once, at the first layer that needs NCCL transfers:
// with CUDA IPC pulls, never.
#include "eplb/eplb_transport.h"

#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>

#include "comm/nccl/nccl_group.h"
#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe {

namespace {

/// The process's EPLB communicator for an EP group on one GPU, shared by every layer.
struct EplbGroup {
  explicit EplbGroup(const Mapping& mapping) : nccl(mapping) {}
  NcclGroup nccl;
  bool connected = false;  // every peer connected (connect_peers)
};

/// Created (collectively) by the first layer's transport; every rank creates its layers in
/// the same order, so every rank shares the same way.
std::shared_ptr<EplbGroup> shared_eplb_group(const Mapping& mapping) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int>, std::weak_ptr<EplbGroup>> groups;
  int device = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard lock(mutex);
  auto& slot = groups[{mapping.ep_size, mapping.ep_rank, device}];
  std::shared_ptr<EplbGroup> group = slot.lock();
  if (!group) {
    group = std::make_shared<EplbGroup>(mapping);
    slot = group;
  }
  return group;
}

class NcclEplbTransport final : public EplbTransport {
 public:
  explicit NcclEplbTransport(const Mapping& mapping) : shared_(shared_eplb_group(mapping)) {}
  ~NcclEplbTransport() override { close_peers(); }

  bool share_rows(const ExpertTensorRegistry& registry) override {
    constexpr std::string_view kWhat = "EPLB transport: sharing weight rows (CUDA IPC)";
    close_peers();
    const std::vector<ExpertTensor>& tensors = registry.tensors();
    const size_t n = tensors.size();
    // One host (CUDA IPC does not cross hosts), tensors of one allocation each, not disabled.
    char host[kHostBytes] = {};
    gethostname(host, kHostBytes - 1);
    std::vector<char> hosts(kHostBytes * static_cast<size_t>(size()));
    allgather_bytes(host, kHostBytes, hosts.data(), kWhat);
    bool ok = std::getenv("MOE_EPLB_NO_IPC") == nullptr && n > 0;
    for (int r = 0; r < size(); ++r)
      ok &= std::strncmp(hosts.data() + r * kHostBytes, host, kHostBytes) == 0;
    for (const ExpertTensor& t : tensors) ok &= t.base != nullptr;
    std::vector<cudaIpcMemHandle_t> mine(n);
    for (size_t t = 0; ok && t < n; ++t)
      ok = cudaIpcGetMemHandle(&mine[t], tensors[t].base) == cudaSuccess;
    (void)cudaGetLastError();  // a failed export is an answer (fall back), not an error
    if (!all(ok)) {
      connect_peers();  // NCCL transfers instead: connected now, at set-up
      return false;
    }
    std::vector<cudaIpcMemHandle_t> every(n * static_cast<size_t>(size()));
    allgather_bytes(mine.data(), n * sizeof(cudaIpcMemHandle_t), every.data(), kWhat);
    peer_base_.assign(size(), std::vector<std::byte*>(n, nullptr));
    for (int peer = 0; ok && peer < size(); ++peer) {
      if (peer == rank()) continue;
      for (size_t t = 0; ok && t < n; ++t) {
        void* p = nullptr;
        ok = cudaIpcOpenMemHandle(&p, every[peer * n + t], cudaIpcMemLazyEnablePeerAccess) ==
             cudaSuccess;
        peer_base_[peer][t] = static_cast<std::byte*>(p);
      }
    }
    (void)cudaGetLastError();  // e.g. the peer's GPU not reachable: fall back
    if (!all(ok)) {
      close_peers();
      connect_peers();
      return false;
    }
    touch_peers();
    strides_.clear();
    for (const ExpertTensor& t : tensors) strides_.push_back(t.stride);
    return true;
  }

  void pull(int peer, size_t tensor, int slot, void* dst, int64_t bytes, void* stream) override {
    MOE_CHECK(peer >= 0 && peer < static_cast<int>(peer_base_.size()) && peer != rank() &&
                  tensor < strides_.size(),
              "EPLB pull: rank ", peer, ", tensor ", tensor, " is not mapped");
    const std::byte* src = peer_base_[peer][tensor] + slot * strides_[tensor];
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                   static_cast<cudaStream_t>(stream)),
                   "EPLB pull of ", bytes, " bytes from rank ", peer);
  }
  int rank() const override { return group().rank(); }
  int size() const override { return group().size(); }
  std::string name() const override { return "nccl"; }
  std::vector<int64_t> allreduce_sum(std::span<const int64_t> values) override {
    return group().host().allreduce_sum(values, "EPLB load statistics (allreduce)");
  }
  bool all(bool value) override {
    return group().host().allreduce_max(value ? 0 : 1, "EPLB migration readiness (allreduce)") == 0;
  }
  void exchange(std::span<const ByteTransfer> sends, std::span<const ByteTransfer> receives,
                void* stream) override {
    connect_peers();  // collective like this call; a no-op once connected
    send_receive(sends, receives, stream);
  }

 private:
  static constexpr int kHostBytes = 256;

  NcclGroup& group() const { return shared_->nccl; }

  void send_receive(std::span<const ByteTransfer> sends, std::span<const ByteTransfer> receives,
                    void* stream) {
    constexpr std::string_view kWhat = "EPLB weight migration (ncclSend/ncclRecv)";
    NcclGroup& g = group();
    g.check_usable(kWhat);
    if (sends.empty() && receives.empty()) return;
    auto s = static_cast<cudaStream_t>(stream);
    g.finish(ncclGroupStart(), kWhat);
    // NCCL matches the i-th send to a peer with that peer's i-th receive from this rank.
    for (const ByteTransfer& t : sends) {
      g.finish(ncclSend(t.data, static_cast<size_t>(t.bytes), ncclUint8, t.peer, g.comm(), s),
               kWhat);
    }
    for (const ByteTransfer& t : receives) {
      g.finish(ncclRecv(t.data, static_cast<size_t>(t.bytes), ncclUint8, t.peer, g.comm(), s),
               kWhat);
    }
    g.finish(ncclGroupEnd(), kWhat);
  }

  /// Every rank's `bytes` bytes at `mine`, by rank, into `all` (bounded wait).
  void allgather_bytes(const void* mine, size_t bytes, void* all, std::string_view what) {
    MpiGroup& host = group().host();
    MOE_CHECK(bytes <= static_cast<size_t>(std::numeric_limits<int>::max()), what, ": ", bytes,
              " bytes");
    MPI_Request request = MPI_REQUEST_NULL;
    host.check(MPI_Iallgather(mine, static_cast<int>(bytes), MPI_BYTE, all, static_cast<int>(bytes),
                              MPI_BYTE, host.comm(), &request),
               what);
    host.wait({&request, 1}, what);
  }

  /// One byte from every mapped tensor: peer access is enabled lazily, at a mapping's first
  /// copy (hundreds of microseconds); here, at set-up, instead of inside a forward.
  void touch_peers() {
    void* scratch = nullptr;
    MOE_CUDA_CHECK(cudaMalloc(&scratch, 1));
    for (const auto& bases : peer_base_) {
      for (std::byte* p : bases) {
        if (p != nullptr) MOE_CUDA_CHECK(cudaMemcpy(scratch, p, 1, cudaMemcpyDeviceToDevice));
      }
    }
    MOE_CUDA_CHECK(cudaFree(scratch));
  }

  void close_peers() {
    for (auto& bases : peer_base_) {
      for (std::byte* p : bases) {
        if (p != nullptr) cudaIpcCloseMemHandle(p);  // destructor path: nothing to report to
      }
    }
    peer_base_.clear();
    strides_.clear();
  }

  /// NCCL connects two ranks at their first send/recv (about a second on two H200s): one byte
  /// to and from every peer, once per process, at set-up, so that no forward waits for it.
  void connect_peers() {
    if (size() == 1 || shared_->connected) return;
    shared_->connected = true;
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
    send_receive(sends, receives, stream);
    group().wait_stream(stream, "EPLB transport set-up (connecting the peers)");
    MOE_CUDA_CHECK(cudaStreamDestroy(stream));
    MOE_CUDA_CHECK(cudaFree(buf));
  }

  std::shared_ptr<EplbGroup> shared_;
  std::vector<std::vector<std::byte*>> peer_base_;  // [rank][tensor]: mapped, or nullptr
  std::vector<int64_t> strides_;                    // [tensor]
};

}  // namespace

std::unique_ptr<EplbTransport> make_nccl_eplb_transport(const Mapping& mapping) {
  return std::make_unique<NcclEplbTransport>(mapping);
}

}  // namespace moe

#endif  // MOE_HAVE_NCCL && MOE_HAVE_MPI
