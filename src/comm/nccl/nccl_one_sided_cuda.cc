// one_sided over NCCL symmetric memory (kernels and window layout in one_sided_kernels.h):
//   prepare_dispatch  records the routing (the plan is made on the device by dispatch)
//   dispatch          plan, padding, every token written straight into its region of its
//                     owners' windows, barrier: one kernel up to kFusedDispatchMaxTokens
//                     tokens, count + dispatch above. Returns views of this rank's window:
//                     `capacity` (max_num_tokens) rows, each source rank's region padded
//                     past its rows
//   combine           one kernel: each of my tokens' partial sums from the owners -- pushed
//                     into my window with flags when an owner got at most ll_rows rows from
//                     me, else pulled from its window after the combine barrier -- summed
//                     in ascending rank order
// No host synchronisation and no host-side size: CUDA-graph capturable. A barrier that times
// out records the failure in host-mapped memory; the next call on the host throws it.
// Set-up (initialize_buffers, collective): ncclMemAlloc, probe word, ncclCommWindowRegister
// (completed by NcclGroup::finish: on this non-blocking communicator NCCL writes the handle
// from a background job after the call has returned ncclSuccess), then a check of the
// window on the host before any kernel touches it: a symmetric window in device memory
// whose LSA copies of every peer hold that peer's probe. A failed check throws on every rank.
// The barriers are this file's own (one_sided_kernels.h), so no ncclDevComm is created.
// NOTE: requires every rank of the group in one LSA team (GPUs that reach each other's
// memory: NVLink or PCIe P2P); NVLink multicast is never used (no multimem anywhere).
#if defined(MOE_HAVE_NCCL) && defined(MOE_HAVE_MPI)

#include <algorithm>
#include <cstdlib>
#include <string>

#include "comm/nccl/nccl_communication.h"
#include "comm/nccl/one_sided_kernels.h"
#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe {
namespace {

constexpr size_t kSectionAlign = 256;
constexpr size_t kMaxLLBytes = size_t{64} << 20;  // the window's ll section at most

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

class NcclOneSided final : public NcclCommunication {
 public:
  using NcclCommunication::NcclCommunication;
  ~NcclOneSided() override { release(); }
  std::string_view name() const override { return "one_sided"; }

  Capability is_platform_supported() const override {
    Capability cap = NcclCommunication::is_platform_supported();
    if (!cap) return cap;
    if (NCCL_VERSION_CODE < NCCL_VERSION(2, 28, 0)) {
      return Capability::no("symmetric-memory device API needs NCCL >= 2.28");
    }
    // All ranks on one host (mpirun's local size): LSA reaches only GPUs of one node.
    if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
      const char* world = std::getenv("OMPI_COMM_WORLD_SIZE");
      if (world != nullptr && std::string(local) != world) {
        return Capability::no(std::string("the ranks span several hosts (") + local + " of " +
                              world +
                              " on this one): symmetric-memory loads and stores reach "
                              "only GPUs of one NVLink/P2P domain");
      }
    }
    // NCCL turns symmetric memory off with either variable at 0 (ncclCommWindowRegister then
    // returns a plain registration, unusable from a kernel).
    for (const char* var : {"NCCL_WIN_ENABLE", "NCCL_CUMEM_ENABLE"}) {
      const char* value = std::getenv(var);
      if (value != nullptr && std::string(value) == "0") {
        return Capability::no(std::string(var) +
                              "=0 turns off NCCL symmetric memory (windows), which one_sided "
                              "needs");
      }
    }
    int device = 0, devices = 0;
    cudaGetDevice(&device);
    cudaGetDeviceCount(&devices);
    for (int other = 0; other < devices; ++other) {
      int ok = 1;
      if (other != device && cudaDeviceCanAccessPeer(&ok, device, other) == cudaSuccess && !ok) {
        return Capability::no("GPU " + std::to_string(device) + " cannot access GPU " +
                              std::to_string(other) + "'s memory (no NVLink/P2P)");
      }
    }
    cap.reason = "NCCL symmetric memory (LSA loads/stores), CUDA-graph capturable; " + cap.reason;
    return cap;
  }

  void prepare_dispatch(const RoutingView& routing, void* stream_ptr) override {
    check_routing(routing, "prepare_dispatch");
    check_health("one_sided prepare_dispatch");
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    tokens_ = routing.topk_ids.size(0);
    params_.num_tokens = static_cast<int>(tokens_);
    params_.topk_ids = routing.topk_ids.data_as<const int32_t>();
    params_.topk_weights = routing.topk_weights.data_as<const float>();
    params_.plan.topk_ids = params_.topk_ids;
    params_.plan.num_tokens = params_.num_tokens;
    params_.timeout_ns = static_cast<uint64_t>(comm_timeout_seconds() * 1e9);
    (void)stream;  // nothing runs before dispatch: its kernel plans on the device
    prepared_ = true;
  }

  DispatchResult dispatch(const QuantizedInput& x, const RoutingView& routing, const TensorView&,
                          void* stream_ptr) override {
    MOE_CHECK(prepared_, "one_sided dispatch: prepare_dispatch was not called for this chunk");
    prepared_ = false;
    const PayloadLayout layout = check_payload(x, tokens_);
    MOE_CHECK(routing.topk_ids.data() == params_.topk_ids,
              "one_sided dispatch: routing differs from prepare_dispatch's");
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    params_.x_data = x.data.data();
    params_.x_scales = layout.per_row_scales ? x.scales.data() : nullptr;
    params_.data_row_bytes = layout.data_row_bytes;
    params_.scale_row_bytes = layout.scale_row_bytes;
    ep::launch_one_sided_dispatch(params_, stream);
    dispatched_ = true;
    const ep::OneSidedLayout& l = params_.layout;
    return received(layout, l.capacity, base_ + l.data_at, base_ + l.scales_at, x.scales,
                    base_ + l.ids_at, base_ + l.weights_at, base_ + l.out_at);
  }

  void combine(const TensorView& expert_out, const TensorView& out, void* stream_ptr) override {
    MOE_CHECK(dispatched_, "one_sided combine: no dispatch to combine");
    dispatched_ = false;
    check_out(out, tokens_, "combine");
    MOE_CHECK(expert_out.data() == base_ + params_.layout.out_at, "one_sided combine: expert_out ",
              expert_out.str(), " is not the window section dispatch returned");
    auto stream = static_cast<cudaStream_t>(stream_ptr);
    params_.out = out.data();
    ep::launch_one_sided_gather(params_, config_.act_dtype, config_.ep_partial_dtype, stream);
  }

 private:
  /// Throws the failure a barrier recorded (read from host-mapped memory, no sync).
  void check_health(std::string_view what) {
    group().check_usable(what);
    const volatile int32_t* e = error_host_;
    if (e[0] == 0) return;
    failed_ = true;
    const char* where = e[1] == 2   ? "the dispatch barrier"
                        : e[1] == 3 ? "the combine barrier"
                        : e[1] == 4 ? "the combine's pushed partial rows"
                                    : "an unknown wait";
    group().abort(what, "EP rank " + std::to_string(mapping_.ep_rank) + " waited " +
                            std::to_string(comm_timeout_seconds()) + " s at " + where +
                            " for rank " + std::to_string(e[2]) +
                            " (comm timeout; MOE_COMM_TIMEOUT_S): a peer rank stalled or died");
  }

  /// Checks the registered window before any kernel dereferences it (see the top of the
  /// file). Collective: when one rank finds a problem, every rank throws.
  void check_window() {
    NcclGroup& g = group();
    const ep::OneSidedLayout& l = params_.layout;
    const int me = mapping_.ep_rank;
    std::string problem;
    const ep::WindowInfo info = ep::read_window(window_);
    if (!info.device_resident) {
      problem = std::string(window_ == nullptr ? "ncclCommWindowRegister returned no window"
                                               : "ncclCommWindowRegister returned a plain "
                                                 "registration, not a symmetric window") +
                " (the communicator has no symmetric-memory support: it needs CUDA P2P "
                "between all its GPUs, cuMem, NCCL_CUMEM_ENABLE and NCCL_WIN_ENABLE not 0; "
                "NCCL_DEBUG=INFO says which)";
    } else if (info.lsa_rank != me || info.world_rank != g.rank() || info.stride_4g == 0 ||
               info.lsa_flat_base == nullptr) {
      problem = "the window reports LSA rank " + std::to_string(info.lsa_rank) + ", world rank " +
                std::to_string(info.world_rank) + ", stride " + std::to_string(info.stride_4g) +
                " x 4 GiB; expected rank " + std::to_string(me) + " and a non-zero stride";
    }
    // Every window is zeroed and its probe written before any rank reads a peer's.
    g.host().barrier("one_sided: window set-up");
    for (int peer = 0; problem.empty() && peer < mapping_.ep_size; ++peer) {
      uint32_t got = 0;
      const uint32_t want = ep::kProbeMagic ^ static_cast<uint32_t>(peer);
      const cudaError_t status =
          cudaMemcpy(&got, info.lsa_pointer(l.probe_at, peer), sizeof(got), cudaMemcpyDeviceToHost);
      if (status != cudaSuccess) {
        cudaGetLastError();
        problem = "reading rank " + std::to_string(peer) + "'s window through its LSA mapping " +
                  "failed: " + cudaGetErrorString(status);
      } else if (got != want) {
        problem = "rank " + std::to_string(peer) + "'s window reads " + std::to_string(got) +
                  " through its LSA mapping, expected " + std::to_string(want);
      }
    }
    const bool any_failed =
        g.host().allreduce_max(problem.empty() ? 0 : 1, "one_sided: window check") != 0;
    MOE_CHECK(!any_failed, "one_sided: NCCL symmetric window of EP rank ", me, ": ",
              problem.empty() ? std::string("fine here, but a peer rank's check failed (see its "
                                            "error)")
                              : problem);
  }

  void initialize_buffers() override {
    NcclGroup& g = group();
    const ep::LsaTeam lsa = ep::lsa_team(g.comm());
    MOE_CHECK(lsa.num_ranks == mapping_.ep_size && lsa.rank == mapping_.ep_rank, "one_sided: the ",
              mapping_.ep_size, " ranks are not one LSA team (NCCL reports ", lsa.num_ranks,
              " ranks, this one ", lsa.rank,
              "): symmetric-memory loads and stores need every "
              "GPU of the group reachable over NVLink or PCIe P2P");
    const int64_t cap = config_.max_num_tokens, k = config_.top_k, ep = mapping_.ep_size;
    const int64_t per_rank = chunk_capacity(config_.max_num_tokens);
    ep::OneSidedLayout& l = params_.layout;
    size_t at = 0;
    auto section = [&at](size_t bytes) {
      const size_t begin = at;
      at = align_up(at + bytes, kSectionAlign);
      return begin;
    };
    l.probe_at = section(sizeof(uint32_t));
    l.inbox_at = section(ep * sizeof(uint32_t));
    l.arrivals_at = section(ep * sizeof(uint32_t));
    l.data_at = section(cap * max_data_row_bytes(config_));
    l.scales_at = section(cap * max_scale_row_bytes(config_));
    l.ids_at = section(cap * k * sizeof(int32_t));
    l.weights_at = section(cap * k * sizeof(float));
    l.out_at = section(cap * partial_row_bytes());  // partial sums (ep_partial_dtype)
    l.counts_at = section(ep * sizeof(uint32_t));
    // Pushed partial rows (decode-sized combines): whole 16-byte vectors of partials per
    // gather thread, and at most kMaxLLBytes of window.
    const size_t partial_row = partial_row_bytes();
    l.ll_row_bytes = 2 * partial_row;
    l.ll_rows = static_cast<int>(std::min<int64_t>(ep::kLLMaxRows, per_rank));
    if (partial_row % 16 != 0 || ep * l.ll_rows * l.ll_row_bytes > kMaxLLBytes) l.ll_rows = 0;
    l.ll_at = section(ep * l.ll_rows * l.ll_row_bytes);
    l.bytes = align_up(at, NCCL_WIN_REQUIRED_ALIGNMENT);
    l.capacity = static_cast<int>(cap);
    l.region_rows = static_cast<int>(per_rank);  // ep regions: ep * (cap / ep) <= cap

    const Device dev = device();
    auto ints = [&](int64_t n) {
      return Tensor::empty({std::max<int64_t>(n, 1)}, DType::kI32, dev);
    };
    dest_mask_ = Tensor::empty({std::max<int64_t>(per_rank, 1)}, DType::kI64, dev);
    tile_counts_ =
        ints((per_rank + ep::kFusedDispatchMaxTokens - 1) / ep::kFusedDispatchMaxTokens * ep);
    row_of_ = ints(per_rank * ep);
    sent_rows_ = ints(ep);
    state_ = ints(1);  // epoch
    MOE_CUDA_CHECK(cudaMemset(state_.data(), 0, state_.nbytes()));
    MOE_CUDA_CHECK(cudaHostAlloc(&error_host_, 4 * sizeof(int32_t), cudaHostAllocMapped));
    error_host_[0] = error_host_[1] = error_host_[2] = 0;
    void* error_dev = nullptr;
    MOE_CUDA_CHECK(cudaHostGetDevicePointer(&error_dev, error_host_, 0));

    params_.rank = mapping_.ep_rank;
    params_.ep_size = mapping_.ep_size;
    params_.top_k = config_.top_k;
    params_.hidden = config_.hidden_size;
    params_.plan.top_k = config_.top_k;
    params_.plan.experts_per_rank = partition_.experts_per_rank();
    params_.plan.ep_size = mapping_.ep_size;
    params_.plan.dest_mask = reinterpret_cast<uint64_t*>(dest_mask_.data());
    params_.tile_counts = tile_counts_.data_as<int32_t>();
    params_.plan.row_of = row_of_.data_as<int32_t>();
    params_.sent_rows = sent_rows_.data_as<int32_t>();
    params_.epoch = reinterpret_cast<uint32_t*>(state_.data_as<int32_t>());
    params_.error = static_cast<int32_t*>(error_dev);

    void* buffer = nullptr;
    g.finish(ncclMemAlloc(&buffer, l.bytes), "one_sided: ncclMemAlloc of the window");
    base_ = static_cast<uint8_t*>(buffer);
    MOE_CUDA_CHECK(cudaMemset(base_, 0, l.bytes));
    const uint32_t probe = ep::kProbeMagic ^ static_cast<uint32_t>(mapping_.ep_rank);
    MOE_CUDA_CHECK(cudaMemcpy(base_ + l.probe_at, &probe, sizeof(probe), cudaMemcpyHostToDevice));
    // Every row padded before any peer can write (check_window's host barrier follows).
    ep::launch_one_sided_init(params_, base_, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    // NOTE: NCCL writes window_ from a background job; finish() waits until it has.
    g.finish(ncclCommWindowRegister(g.comm(), buffer, l.bytes, &window_, NCCL_WIN_COLL_SYMMETRIC),
             "one_sided: ncclCommWindowRegister");
    check_window();
    const ep::WindowInfo info = ep::read_window(window_);
    params_.lsa_base = info.lsa_flat_base;
    params_.lsa_stride_4g = info.stride_4g;
  }

  void release() {
    if (error_host_ != nullptr) cudaFreeHost(error_host_);
    if (base_ == nullptr) return;
    cudaDeviceSynchronize();
    bool usable = !failed_;
    try {
      group().check_usable("one_sided: window release");
    } catch (const Error&) {
      usable = false;
    }
    // Deregistering is collective; after a failure the peers may be gone, and an aborted
    // communicator owns nothing more to release.
    if (usable) {
      try {
        group().finish(ncclCommWindowDeregister(group().comm(), window_),
                       "one_sided: ncclCommWindowDeregister");
        ncclMemFree(base_);
      } catch (const Error&) {
        // The group is aborted now; its memory goes with the process.
      }
    }
  }

  ep::OneSidedParams params_;
  ncclWindow_t window_ = nullptr;
  uint8_t* base_ = nullptr;  // my window (ncclMemAlloc)
  int32_t* error_host_ = nullptr;
  int64_t tokens_ = 0;
  bool prepared_ = false, dispatched_ = false, failed_ = false;
  Tensor dest_mask_, tile_counts_, row_of_, sent_rows_, state_;
};

}  // namespace

std::unique_ptr<Communication> make_nccl_one_sided(const MoeConfig& config,
                                                   const Mapping& mapping) {
  return std::make_unique<NcclOneSided>(config, mapping);
}

}  // namespace moe

#endif  // MOE_HAVE_NCCL && MOE_HAVE_MPI
