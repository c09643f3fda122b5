// The one_sided kernels (contract in one_sided_kernels.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <nccl_device.h>

#include <algorithm>
#include <cuda/atomic>

#include "comm/nccl/ep_plan.cuh"
#include "comm/nccl/one_sided_kernels.h"
#include "core/cuda_check.h"
#include "core/launch.cuh"
#include "moe/errors.h"

namespace moe::ep {
namespace {

constexpr int kScatterThreads = 256;  // the scatter kernel: a warp per row
constexpr int kScatterUnroll = 4;     // 16-byte loads in flight per lane before its stores
constexpr int kGatherThreads = 256;
constexpr int kInitThreads = 256;
constexpr int kMaxScatterBlocks = 1024;
// Barrier epochs: chunk c's dispatch reaches 2c + 2 (and stores it), its combine 2c + 3 --
// read as the stored epoch + 1, stored by nobody: a combine's blocks need no completion
// count, and the next dispatch's +2 lands past it. A peer's arrival at a later barrier also
// satisfies a wait (it passed this one to get there).
constexpr uint32_t kEpochsPerChunk = 2;
constexpr int kMaxFusedDispatchBlocks = 264;  // two per SM of an H100 / H200

using SysAtomic = cuda::atomic_ref<uint32_t, cuda::thread_scope_system>;

__device__ inline uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

template <class T>
__device__ inline T* local_ptr(const OneSidedParams& p, size_t offset) {
  return static_cast<T*>(ncclGetLocalPointer(p.window, offset));
}

template <class T>
__device__ inline T* peer_ptr(const OneSidedParams& p, size_t offset, int peer) {
  return static_cast<T*>(ncclGetLsaPointer(p.window, offset, peer));
}

/// The expert padding rows of destination d carry: one d does not own (ExpertPartition's
/// foreign_expert).
__device__ inline int32_t foreign_expert(const OneSidedParams& p, int d) {
  return p.ep_size == 1 ? -1 : ((d + 1) % p.ep_size) * p.plan.experts_per_rank;
}

/// Arrival and wait of a cross-rank barrier for one block: threads < ep each serve one
/// peer. `epoch` is the value this barrier instance reaches (see kEpochsPerChunk).
/// `arrive`: this block stores the arrival (release, system scope) into every peer's inbox;
/// the block's own writes before the call are released with it (a system fence first), as
/// is everything ordered before the launch. The peers' writes before their arrival are
/// visible to the whole block after the wait.
__device__ void arrive_and_wait(const OneSidedParams& p, uint32_t epoch, int which, bool arrive) {
  if (arrive) __threadfence_system();
  __syncthreads();
  const int peer = threadIdx.x;
  if (peer < p.ep_size && peer != p.rank) {
    if (arrive) {
      SysAtomic(*peer_ptr<uint32_t>(p, p.layout.inbox_at + p.rank * sizeof(uint32_t), peer))
          .store(epoch, cuda::memory_order_release);
    }
    SysAtomic inbox(*local_ptr<uint32_t>(p, p.layout.inbox_at + peer * sizeof(uint32_t)));
    const uint64_t start = global_ns();
    while (static_cast<int32_t>(inbox.load(cuda::memory_order_acquire) - epoch) < 0) {
      const uint64_t waited = global_ns() - start;
      // A barrier that already failed (another block of this grid, waiting on the same
      // dead peer): give up at once rather than after a full timeout per wave of blocks.
      // Read only after 1 ms (the error word is host memory: not on the fast path).
      if (waited > 1000000 && *static_cast<volatile int32_t*>(p.error) != 0) break;
      if (waited > p.timeout_ns) {
        if (atomicCAS(&p.error[0], 0, kBarrierTimeout) == 0) {
          p.error[1] = which;
          p.error[2] = peer;
          __threadfence_system();
        }
        break;
      }
    }
  }
  __syncthreads();
}

/// True in the block that finishes last among the grid's (completion counter, reset by it).
/// Every block's writes before the call are visible to that block after it.
__device__ bool last_block_to_finish(const OneSidedParams& p) {
  __threadfence_system();
  __syncthreads();
  __shared__ bool last;
  const uint32_t blocks = gridDim.x * gridDim.y * gridDim.z;  // the split gather's grid is 2-D
  if (threadIdx.x == 0) last = atomicAdd(p.done_blocks, 1u) == blocks - 1;
  __syncthreads();
  if (last && threadIdx.x == 0) *p.done_blocks = 0;
  return last;
}

/// Padding in every destination's region: rows this rank wrote last chunk and not this one
/// (counts = this chunk's rows per destination). One block.
__device__ void pad_regions(const OneSidedParams& p, const int32_t* counts) {
  const int k = p.top_k;
  const size_t region_at = static_cast<size_t>(p.rank) * p.layout.region_rows;
  for (int d = 0; d < p.ep_size; ++d) {
    const int from = counts[d], to = p.sent_rows[d];
    if (to <= from) continue;
    int32_t* ids = peer_ptr<int32_t>(p, p.layout.ids_at, d) + (region_at + from) * k;
    float* weights = peer_ptr<float>(p, p.layout.weights_at, d) + (region_at + from) * k;
    const int32_t foreign = foreign_expert(p, d);
    for (int i = threadIdx.x; i < (to - from) * k; i += blockDim.x) {
      ids[i] = foreign;
      weights[i] = 0.0f;
    }
  }
  __syncthreads();
  for (int d = threadIdx.x; d < p.ep_size; d += blockDim.x) p.sent_rows[d] = counts[d];
}

/// Where row `row` of the plan goes: its destination and its row in that window.
struct RowTarget {
  int dest;
  size_t at;
};
__device__ inline RowTarget row_target(const OneSidedParams& p, const int32_t* offsets, int row) {
  int d = 0;
  while (offsets[d + 1] <= row) ++d;
  return {d, static_cast<size_t>(p.rank) * p.layout.region_rows + (row - offsets[d])};
}

// init (set-up): every row of this rank's window (at `base`, before registration) padded
// with its own foreign expert, nothing sent yet.
__global__ void __launch_bounds__(kInitThreads)
    one_sided_init_kernel(OneSidedParams p, uint8_t* base) {
  auto* ids = reinterpret_cast<int32_t*>(base + p.layout.ids_at);
  auto* weights = reinterpret_cast<float*>(base + p.layout.weights_at);
  const int32_t foreign = foreign_expert(p, p.rank);
  const int64_t n = static_cast<int64_t>(p.layout.capacity) * p.top_k;
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    ids[i] = foreign;
    weights[i] = 0.0f;
  }
  if (blockIdx.x == 0) {
    for (int d = threadIdx.x; d < p.ep_size; d += blockDim.x) p.sent_rows[d] = 0;
  }
}

// Fused dispatch (few tokens): plan, padding, rows, barrier in one launch. Block 0 plans into
// the plan buffers (combine reads them) and pads; every other block plans the same into
// shared memory (dynamic: dest_mask [T] u64, token_of_row [rows], counts, offsets) -- a
// redundant plan of at most kFusedDispatchMaxTokens tokens costs less than a second launch
// and a grid-wide wait. Each block writes whole rows (kPlanThreads threads: a 14 KB bf16 row
// is one 16-byte load and store per thread).
__global__ void __launch_bounds__(kPlanThreads) one_sided_dispatch_kernel(OneSidedParams p) {
  extern __shared__ uint64_t plan_smem[];
  PlanSendParams plan = p.plan;
  if (blockIdx.x != 0) {
    plan.dest_mask = plan_smem;
    plan.counts = reinterpret_cast<int32_t*>(plan_smem + p.num_tokens);
    plan.offsets = plan.counts + p.ep_size;
    plan.token_of_row = plan.offsets + p.ep_size + 1;
    plan.row_of = nullptr;
  }
  plan_send_block(plan);
  __syncthreads();
  if (blockIdx.x == 0) pad_regions(p, plan.counts);
  const int rows = plan.offsets[p.ep_size];
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    const RowTarget to = row_target(p, plan.offsets, row);
    const int t = plan.token_of_row[row];
    copy_row(static_cast<const uint8_t*>(p.x_data) + t * p.data_row_bytes,
             peer_ptr<uint8_t>(p, p.layout.data_at + to.at * p.data_row_bytes, to.dest),
             p.data_row_bytes);
    if (p.scale_row_bytes > 0) {
      copy_row(static_cast<const uint8_t*>(p.x_scales) + t * p.scale_row_bytes,
               peer_ptr<uint8_t>(p, p.layout.scales_at + to.at * p.scale_row_bytes, to.dest),
               p.scale_row_bytes);
    }
    const size_t id_row = p.top_k * sizeof(int32_t);
    copy_row(reinterpret_cast<const uint8_t*>(p.topk_ids + t * p.top_k),
             peer_ptr<uint8_t>(p, p.layout.ids_at + to.at * id_row, to.dest), id_row);
    copy_row(reinterpret_cast<const uint8_t*>(p.topk_weights + t * p.top_k),
             peer_ptr<uint8_t>(p, p.layout.weights_at + to.at * id_row, to.dest), id_row);
  }
  if (!last_block_to_finish(p)) return;
  const uint32_t next = *p.epoch + kEpochsPerChunk;
  arrive_and_wait(p, next, 2, /*arrive=*/true);
  if (threadIdx.x == 0) *p.epoch = next;
}

// prepare (many tokens): the plan into the plan buffers, padding. Local work only.
__global__ void __launch_bounds__(kPlanThreads) one_sided_prepare_kernel(OneSidedParams p) {
  plan_send_block(p.plan);
  __syncthreads();
  pad_regions(p, p.plan.counts);
}

/// One lane's share of a row copy: 16-byte chunks lane, lane + 32, ...; kScatterUnroll
/// chunks loaded before any is stored. `bytes` a multiple of 16, both pointers 16-aligned.
__device__ inline void warp_copy16(const uint8_t* src, uint8_t* dst, size_t bytes, int lane) {
  const auto* s = reinterpret_cast<const uint4*>(src);
  auto* d = reinterpret_cast<uint4*>(dst);
  const int n = static_cast<int>(bytes / 16);
  for (int i0 = lane; i0 < n; i0 += 32 * kScatterUnroll) {
    uint4 v[kScatterUnroll];
#pragma unroll
    for (int u = 0; u < kScatterUnroll; ++u) {
      const int i = i0 + u * 32;
      if (i < n) v[u] = __ldg(s + i);
    }
#pragma unroll
    for (int u = 0; u < kScatterUnroll; ++u) {
      const int i = i0 + u * 32;
      if (i < n) d[i] = v[u];
    }
  }
}

/// A row copy by one warp: 16-byte chunks when both pointers and the size allow, else 4
/// bytes, else bytes.
__device__ inline void warp_copy(const void* from, void* to, size_t bytes, int lane) {
  const auto* src = static_cast<const uint8_t*>(from);
  auto* dst = static_cast<uint8_t*>(to);
  const auto a = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst) | bytes;
  if (a % 16 == 0) {
    warp_copy16(src, dst, bytes, lane);
  } else if (a % 4 == 0) {
    for (size_t i = lane; i < bytes / 4; i += 32) {
      reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
    }
  } else {
    for (size_t i = lane; i < bytes; i += 32) dst[i] = src[i];
  }
}

// scatter (many tokens): a warp per row into the destinations' regions; the last block runs
// the barrier. (Measured on 2 H200s: one lane-strided run over all four parts of a row, the
// small ones riding in the data's load rounds, was slower at 4096 tokens: 208 vs 188 us.)
__global__ void __launch_bounds__(kScatterThreads) one_sided_scatter_kernel(OneSidedParams p) {
  const int32_t* offsets = p.plan.offsets;  // [ep + 1]
  const int rows = offsets[p.ep_size];
  const int lane = threadIdx.x % 32;
  const int warps = kScatterThreads / 32;
  const size_t id_row = p.top_k * sizeof(int32_t);
  for (int row = blockIdx.x * warps + threadIdx.x / 32; row < rows; row += gridDim.x * warps) {
    const RowTarget to = row_target(p, offsets, row);
    const int t = p.plan.token_of_row[row];
    warp_copy(static_cast<const uint8_t*>(p.x_data) + t * p.data_row_bytes,
              peer_ptr<uint8_t>(p, p.layout.data_at + to.at * p.data_row_bytes, to.dest),
              p.data_row_bytes, lane);
    if (p.scale_row_bytes > 0) {
      warp_copy(static_cast<const uint8_t*>(p.x_scales) + t * p.scale_row_bytes,
                peer_ptr<uint8_t>(p, p.layout.scales_at + to.at * p.scale_row_bytes, to.dest),
                p.scale_row_bytes, lane);
    }
    warp_copy(p.topk_ids + t * p.top_k,
              peer_ptr<uint8_t>(p, p.layout.ids_at + to.at * id_row, to.dest), id_row, lane);
    warp_copy(p.topk_weights + t * p.top_k,
              peer_ptr<uint8_t>(p, p.layout.weights_at + to.at * id_row, to.dest), id_row, lane);
  }
  if (!last_block_to_finish(p)) return;
  const uint32_t next = *p.epoch + kEpochsPerChunk;
  arrive_and_wait(p, next, 2, /*arrive=*/true);
  if (threadIdx.x == 0) *p.epoch = next;
}

/// The combine's barrier, run by every block of a gather: the first block arrives (one
/// store per peer: arrivals from every block would all hit the peer's one inbox word), every
/// block waits. run_moe's partials were written by earlier kernels, so the arrival releases
/// them. NOTE: block 0 is scheduled no later than any other block (hardware order, which
/// CUB's single-pass scans also rely on), so a block waiting here never starves it.
__device__ void combine_barrier(const OneSidedParams& p) {
  const bool first = blockIdx.x == 0 && blockIdx.y == 0;
  arrive_and_wait(p, *p.epoch + 1, 3, first);
}

template <class T>
__device__ inline T from_float(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return __float2half_rn(v);
  }
}

template <class P>
__device__ inline float to_float(P v) {
  if constexpr (std::is_same_v<P, float>) {
    return v;
  } else {
    return static_cast<float>(v);
  }
}

/// kGatherCols (4) partials of type P at `src` as floats: one 16-byte (f32) or 8-byte
/// (16-bit) load when `whole`, else element by element up to `valid`.
template <class P>
__device__ inline void load4(const P* src, bool whole, int valid, float (&v)[4]) {
  if (whole) {
    if constexpr (std::is_same_v<P, float>) {
      const float4 q = *reinterpret_cast<const float4*>(src);
      v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    } else {
      const uint2 q = *reinterpret_cast<const uint2*>(src);
      const P* h = reinterpret_cast<const P*>(&q);
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = to_float(h[j]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = j < valid ? to_float(src[j]) : 0.0f;
  }
}

/// Token t's partial row in each destination's window (-1: t has no expert there), into
/// shared memory by threads < ep. Plan buffers only (written by this rank's dispatch): read
/// before the barrier, so the wait hides their latency.
__device__ inline void load_partial_rows(const OneSidedParams& p, int t, int64_t* at) {
  const int d = threadIdx.x;
  if (d < p.ep_size && t < p.num_tokens) {
    const int row = p.plan.row_of[t * p.ep_size + d];
    at[d] = row < 0
                ? -1
                : static_cast<int64_t>(p.rank) * p.layout.region_rows + (row - p.plan.offsets[d]);
  }
}

// gather, many tokens (bandwidth-bound): one block per token, looping over the columns; the
// destinations' partials in ascending rank order. T: the output's type; P: the partials' (f32,
// or T: ep_partial_dtype).
template <class T, class P>
__global__ void __launch_bounds__(kGatherThreads) one_sided_gather_rows_kernel(OneSidedParams p) {
  const int t = blockIdx.x;
  __shared__ int64_t at[kMaxRanks];
  load_partial_rows(p, t, at);
  combine_barrier(p);  // also orders `at` for the block
  if (t < p.num_tokens) {
    T* out = static_cast<T*>(p.out) + static_cast<size_t>(t) * p.hidden;
    const size_t out_row = p.hidden * sizeof(P);
    for (int c = threadIdx.x; c < p.hidden; c += blockDim.x) {
      float acc = 0.0f;
      for (int d = 0; d < p.ep_size; ++d) {
        if (at[d] < 0) continue;
        acc += to_float(peer_ptr<P>(p, p.layout.out_at + at[d] * out_row, d)[c]);
      }
      out[c] = from_float<T>(acc);
    }
  }
}

// gather, few tokens (latency-bound): token t = blockIdx.x, its columns split over
// blockIdx.y, kGatherCols per thread. Zero tokens: one block, the barrier only.
// Latency, not bandwidth, bounds a decode-sized combine: each remote load is a round trip
// over NVLink, so a thread issues the loads of every peer (up to kGatherBatch at a time)
// before it sums any, and the columns spread over as many threads as the row has; the sum
// stays in ascending rank order.
constexpr int kGatherCols = 4;   // 16 bytes of f32 partials per thread and peer (8 of 16-bit)
constexpr int kGatherBatch = 8;  // peers' loads in flight per thread
constexpr int kSplitGatherMaxTokens = 256;  // more tokens: one block per token (the row kernel)

template <class T, class P>
__global__ void __launch_bounds__(kGatherThreads) one_sided_gather_split_kernel(OneSidedParams p) {
  const int t = blockIdx.x;
  __shared__ int64_t at[kMaxRanks];
  load_partial_rows(p, t, at);
  combine_barrier(p);  // also orders `at` for the block
  const int c0 = (blockIdx.y * blockDim.x + threadIdx.x) * kGatherCols;
  if (t < p.num_tokens && c0 < p.hidden) {
    const size_t out_row = p.hidden * sizeof(P);
    const bool whole = c0 + kGatherCols <= p.hidden && p.hidden % kGatherCols == 0;
    float acc[kGatherCols] = {};
    for (int d0 = 0; d0 < p.ep_size; d0 += kGatherBatch) {
      float part[kGatherBatch][kGatherCols];
#pragma unroll
      for (int i = 0; i < kGatherBatch; ++i) {
        const int d = d0 + i;
        const int64_t row = d < p.ep_size ? at[d] : -1;
        if (row < 0) {
#pragma unroll
          for (int j = 0; j < kGatherCols; ++j) part[i][j] = 0.0f;
          continue;
        }
        load4(peer_ptr<P>(p, p.layout.out_at + row * out_row, d) + c0, whole, p.hidden - c0,
              part[i]);
      }
#pragma unroll
      for (int i = 0; i < kGatherBatch; ++i) {
#pragma unroll
        for (int j = 0; j < kGatherCols; ++j) acc[j] += part[i][j];
      }
    }
    T* out = static_cast<T*>(p.out) + static_cast<size_t>(t) * p.hidden;
#pragma unroll
    for (int j = 0; j < kGatherCols; ++j) {
      if (c0 + j < p.hidden) out[c0 + j] = from_float<T>(acc[j]);
    }
  }
}

}  // namespace

LsaTeam lsa_team(ncclComm_t comm) {
  const ncclTeam_t team = ncclTeamLsa(comm);
  return {team.nRanks, team.rank};
}

void* WindowInfo::lsa_pointer(size_t offset, int peer) const {
  return nccl::utility::add4G(lsa_flat_base, peer * static_cast<int>(stride_4g)) + offset;
}

WindowInfo read_window(ncclWindow_t window) {
  WindowInfo info;
  if (window == nullptr) return info;
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, window) != cudaSuccess) {
    cudaGetLastError();  // not a pointer CUDA knows: not a window in device memory
    return info;
  }
  if (attributes.type != cudaMemoryTypeDevice) return info;
  ncclWindow_vidmem w{};
  MOE_CUDA_CHECK(cudaMemcpy(&w, window, sizeof(w), cudaMemcpyDeviceToHost),
                 "reading back the one_sided window handle");
  info.device_resident = true;
  info.lsa_flat_base = w.lsaFlatBase;
  info.stride_4g = w.stride4G;
  info.lsa_rank = w.lsaRank;
  info.world_rank = w.worldRank;
  return info;
}

void launch_one_sided_init(const OneSidedParams& p, void* window_base, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(p.layout.capacity) * p.top_k;
  const int blocks =
      static_cast<int>(std::clamp<int64_t>((n + kInitThreads - 1) / kInitThreads, 1, 1024));
  launch_kernel("one_sided_init", one_sided_init_kernel,
                {dim3(blocks), dim3(kInitThreads), 0, stream}, p,
                static_cast<uint8_t*>(window_base));
}

void launch_one_sided_dispatch(const OneSidedParams& p, cudaStream_t stream) {
  MOE_CHECK(p.ep_size >= 1 && p.ep_size <= kMaxRanks, "one_sided: ep_size ", p.ep_size,
            " outside [1, ", kMaxRanks, "]");
  MOE_CHECK(p.num_tokens <= p.layout.region_rows, "one_sided dispatch: ", p.num_tokens,
            " tokens exceed a rank's region of ", p.layout.region_rows, " rows");
  // Rows this chunk can send: a token goes to at most min(k, ep) ranks.
  const int64_t rows = static_cast<int64_t>(p.num_tokens) * std::min(p.top_k, p.ep_size);
  if (p.num_tokens <= kFusedDispatchMaxTokens) {
    const size_t smem =
        p.num_tokens * sizeof(uint64_t) + (2 * p.ep_size + 1 + rows) * sizeof(int32_t);
    const int blocks = static_cast<int>(std::clamp<int64_t>(rows, 1, kMaxFusedDispatchBlocks));
    launch_kernel("one_sided_dispatch", one_sided_dispatch_kernel,
                  {dim3(blocks), dim3(kPlanThreads), smem, stream}, p);
    return;
  }
  launch_kernel("one_sided_prepare", one_sided_prepare_kernel,
                {dim3(1), dim3(kPlanThreads), 0, stream}, p);
  const int64_t warps = kScatterThreads / 32;
  const int blocks =
      static_cast<int>(std::clamp<int64_t>((rows + warps - 1) / warps, 1, kMaxScatterBlocks));
  launch_kernel("one_sided_scatter", one_sided_scatter_kernel,
                {dim3(blocks), dim3(kScatterThreads), 0, stream}, p);
}

namespace {

/// The gather kernel for output type T and partial type P (f32, or T).
template <class T, class P>
void launch_gather_typed(const OneSidedParams& p, cudaStream_t stream) {
  // The barrier runs in every block: with zero tokens, one block runs only the barrier.
  const int tokens = std::max(p.num_tokens, 1);
  // Measured on 2 H200s (bench/NOTES.md): the split kernel's combine takes 5.5 us at 1 token
  // and 16.7 us at 128 (the row kernel 38.9 / 40.6); above 256 tokens the row kernel.
  if (p.num_tokens <= kSplitGatherMaxTokens) {
    const int per_block = kGatherThreads * kGatherCols;
    const LaunchOptions o{dim3(tokens, (p.hidden + per_block - 1) / per_block),
                          dim3(kGatherThreads), 0, stream};
    launch_kernel("one_sided_gather", one_sided_gather_split_kernel<T, P>, o, p);
    return;
  }
  const LaunchOptions o{dim3(tokens), dim3(kGatherThreads), 0, stream};
  launch_kernel("one_sided_gather", one_sided_gather_rows_kernel<T, P>, o, p);
}

}  // namespace

void launch_one_sided_gather(const OneSidedParams& p, DType dtype, DType partial_dtype,
                             cudaStream_t stream) {
  MOE_CHECK(dtype == DType::kBF16 || dtype == DType::kF16, "one_sided gather: output dtype ",
            dtype_name(dtype), " is not bf16 or f16");
  MOE_CHECK(partial_dtype == DType::kF32 || partial_dtype == dtype,
            "one_sided gather: partial sums in ", dtype_name(partial_dtype), " (f32 or ",
            dtype_name(dtype), ")");
  MOE_CHECK(p.ep_size <= kGatherThreads, "one_sided gather: ep_size ", p.ep_size);
  const bool wide = partial_dtype == DType::kF32;
  if (dtype == DType::kBF16) {
    wide ? launch_gather_typed<__nv_bfloat16, float>(p, stream)
         : launch_gather_typed<__nv_bfloat16, __nv_bfloat16>(p, stream);
  } else {
    wide ? launch_gather_typed<__half, float>(p, stream)
         : launch_gather_typed<__half, __half>(p, stream);
  }
}

}  // namespace moe::ep
