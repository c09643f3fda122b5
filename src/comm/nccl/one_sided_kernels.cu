// The one_sided kernels (contract in one_sided_kernels.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <nccl_device.h>

#include <cuda/atomic>

#include "comm/nccl/ep_plan.cuh"
#include "comm/nccl/one_sided_kernels.h"
#include "core/cuda_check.h"
#include "core/launch.cuh"
#include "moe/errors.h"

namespace moe::ep {
namespace {

constexpr int kScatterThreads = 256;
constexpr int kGatherThreads = 256;
constexpr int kBarrierThreads = 64;

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

/// The cross-rank barrier of one block (see the header): threads < ep each serve one peer.
/// Writes of the whole block before the call are released to the peers; the peers' writes
/// before their arrival are visible to the whole block after it.
__device__ void rank_barrier(const OneSidedParams& p, int which) {
  __threadfence_system();
  __syncthreads();
  const uint32_t next = *p.epoch + 1;
  const int peer = threadIdx.x;
  if (peer < p.ep_size && peer != p.rank) {
    SysAtomic(*peer_ptr<uint32_t>(p, p.layout.inbox_at + p.rank * sizeof(uint32_t), peer))
        .store(next, cuda::memory_order_release);
  }
  if (peer < p.ep_size && peer != p.rank) {
    SysAtomic inbox(*local_ptr<uint32_t>(p, p.layout.inbox_at + peer * sizeof(uint32_t)));
    const uint64_t start = global_ns();
    while (static_cast<int32_t>(inbox.load(cuda::memory_order_acquire) - next) < 0) {
      if (global_ns() - start > p.timeout_ns) {
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
  if (threadIdx.x == 0) *p.epoch = next;
  __syncthreads();
}

// prepare: plan, counts into the destinations, barrier 1, offsets and padding.
__global__ void __launch_bounds__(kPlanThreads) one_sided_prepare_kernel(OneSidedParams p) {
  plan_send_block(p.plan);
  __syncthreads();
  const int tid = threadIdx.x;
  if (tid < p.ep_size) {
    *peer_ptr<int32_t>(p, p.layout.counts_at + p.rank * sizeof(int32_t), tid) = p.plan.counts[tid];
  }
  rank_barrier(p, 1);
  __shared__ int recv_rows;
  if (tid == 0) {
    const int32_t* mine = local_ptr<int32_t>(p, p.layout.counts_at);
    int rows = 0;
    for (int s = 0; s < p.ep_size; ++s) rows += mine[s];
    recv_rows = rows;
    *p.recv_rows = rows;
  }
  if (tid < p.ep_size) {
    const int32_t* theirs = peer_ptr<int32_t>(p, p.layout.counts_at, tid);
    int first = 0;
    for (int s = 0; s < p.rank; ++s) first += theirs[s];
    p.dest_offset[tid] = first;
  }
  __syncthreads();
  int32_t* ids = local_ptr<int32_t>(p, p.layout.ids_at);
  float* weights = local_ptr<float>(p, p.layout.weights_at);
  for (int i = recv_rows * p.top_k + tid; i < p.layout.capacity * p.top_k; i += blockDim.x) {
    ids[i] = p.foreign_expert;
    weights[i] = 0.0f;
  }
}

// scatter: send rows into the destinations' windows; the last block runs barrier 2.
__global__ void __launch_bounds__(kScatterThreads) one_sided_scatter_kernel(OneSidedParams p) {
  const int32_t* offsets = p.plan.offsets;  // [ep + 1]
  const int rows = offsets[p.ep_size];
  const size_t id_row = p.top_k * sizeof(int32_t);
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    int d = 0;
    while (offsets[d + 1] <= row) ++d;
    const int t = p.plan.token_of_row[row];
    const size_t dst = p.dest_offset[d] + (row - offsets[d]);
    copy_row(static_cast<const uint8_t*>(p.x_data) + t * p.data_row_bytes,
             peer_ptr<uint8_t>(p, p.layout.data_at + dst * p.data_row_bytes, d), p.data_row_bytes);
    if (p.scale_row_bytes > 0) {
      copy_row(static_cast<const uint8_t*>(p.x_scales) + t * p.scale_row_bytes,
               peer_ptr<uint8_t>(p, p.layout.scales_at + dst * p.scale_row_bytes, d),
               p.scale_row_bytes);
    }
    copy_row(reinterpret_cast<const uint8_t*>(p.topk_ids + t * p.top_k),
             peer_ptr<uint8_t>(p, p.layout.ids_at + dst * id_row, d), id_row);
    copy_row(reinterpret_cast<const uint8_t*>(p.topk_weights + t * p.top_k),
             peer_ptr<uint8_t>(p, p.layout.weights_at + dst * id_row, d), id_row);
  }
  // Completion: the last block to finish runs the barrier for the whole grid.
  __threadfence_system();
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) last = atomicAdd(p.done_blocks, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  if (threadIdx.x == 0) *p.done_blocks = 0;
  rank_barrier(p, 2);
}

__global__ void __launch_bounds__(kBarrierThreads) one_sided_barrier_kernel(OneSidedParams p) {
  rank_barrier(p, 3);
}

template <class T>
__device__ inline T from_float(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return __float2half_rn(v);
  }
}

// gather, many tokens (bandwidth-bound): one block per token, looping over the columns; the
// destinations' partials in ascending rank order.
template <class T>
__global__ void __launch_bounds__(kGatherThreads) one_sided_gather_rows_kernel(OneSidedParams p) {
  const int t = blockIdx.x;
  const int32_t* row_of = p.plan.row_of + t * p.ep_size;
  T* out = static_cast<T*>(p.out) + static_cast<size_t>(t) * p.hidden;
  const size_t out_row = p.hidden * sizeof(float);  // the partials: f32, unrounded
  for (int c = threadIdx.x; c < p.hidden; c += blockDim.x) {
    float acc = 0.0f;
    for (int d = 0; d < p.ep_size; ++d) {
      const int row = row_of[d];
      if (row < 0) continue;
      const size_t dst = p.dest_offset[d] + (row - p.plan.offsets[d]);
      acc += peer_ptr<float>(p, p.layout.out_at + dst * out_row, d)[c];
    }
    out[c] = from_float<T>(acc);
  }
}

// gather, few tokens (latency-bound): token t = blockIdx.x, its columns split over
// blockIdx.y, kGatherCols per thread.
// Latency, not bandwidth, bounds a decode-sized combine: each remote load is a round trip
// over NVLink, so a thread issues the loads of every peer (up to kGatherBatch at a time)
// before it sums any, and the columns spread over as many threads as the row has; the sum
// stays in ascending rank order.
constexpr int kGatherCols = 4;              // 16 bytes of f32 partials per thread and peer
constexpr int kGatherBatch = 8;             // peers' loads in flight per thread
constexpr int kSplitGatherMaxTokens = 256;  // more tokens: one block per token (the row kernel)

template <class T>
__global__ void __launch_bounds__(kGatherThreads) one_sided_gather_split_kernel(OneSidedParams p) {
  const int t = blockIdx.x;
  const int c0 = (blockIdx.y * blockDim.x + threadIdx.x) * kGatherCols;
  if (c0 >= p.hidden) return;
  const int32_t* row_of = p.plan.row_of + t * p.ep_size;
  const size_t out_row = p.hidden * sizeof(float);  // the partials: f32, unrounded
  const bool whole = c0 + kGatherCols <= p.hidden && p.hidden % kGatherCols == 0;
  float acc[kGatherCols] = {};
  for (int d0 = 0; d0 < p.ep_size; d0 += kGatherBatch) {
    float part[kGatherBatch][kGatherCols];
#pragma unroll
    for (int i = 0; i < kGatherBatch; ++i) {
      const int d = d0 + i;
      const int row = d < p.ep_size ? row_of[d] : -1;
      if (row < 0) {
#pragma unroll
        for (int j = 0; j < kGatherCols; ++j) part[i][j] = 0.0f;
        continue;
      }
      const size_t dst = p.dest_offset[d] + (row - p.plan.offsets[d]);
      const float* src = peer_ptr<float>(p, p.layout.out_at + dst * out_row, d) + c0;
      if (whole) {
        const float4 v = *reinterpret_cast<const float4*>(src);
        part[i][0] = v.x, part[i][1] = v.y, part[i][2] = v.z, part[i][3] = v.w;
      } else {
#pragma unroll
        for (int j = 0; j < kGatherCols; ++j) part[i][j] = c0 + j < p.hidden ? src[j] : 0.0f;
      }
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

void launch_one_sided_prepare(const OneSidedParams& p, cudaStream_t stream) {
  MOE_CHECK(p.ep_size >= 1 && p.ep_size <= kMaxRanks && p.ep_size <= kPlanThreads,
            "one_sided: ep_size ", p.ep_size, " outside [1, ", kMaxRanks, "]");
  launch_kernel("one_sided_prepare", one_sided_prepare_kernel,
                {dim3(1), dim3(kPlanThreads), 0, stream}, p);
}

void launch_one_sided_scatter(const OneSidedParams& p, int blocks, cudaStream_t stream) {
  launch_kernel("one_sided_scatter", one_sided_scatter_kernel,
                {dim3(blocks < 1 ? 1 : blocks), dim3(kScatterThreads), 0, stream}, p);
}

void launch_one_sided_barrier(const OneSidedParams& p, cudaStream_t stream) {
  MOE_CHECK(p.ep_size <= kBarrierThreads, "one_sided barrier: ep_size ", p.ep_size);
  launch_kernel("one_sided_barrier", one_sided_barrier_kernel,
                {dim3(1), dim3(kBarrierThreads), 0, stream}, p);
}

void launch_one_sided_gather(const OneSidedParams& p, DType dtype, cudaStream_t stream) {
  if (p.num_tokens <= 0) return;
  MOE_CHECK(dtype == DType::kBF16 || dtype == DType::kF16, "one_sided gather: output dtype ",
            dtype_name(dtype), " is not bf16 or f16");
  const bool bf16 = dtype == DType::kBF16;
  // Measured on 2 H200s (bench/NOTES.md): the split kernel's combine takes 5.5 us at 1 token
  // and 16.7 us at 128 (the row kernel 38.9 / 40.6), the row kernel 234 us at 4096 (split 349).
  if (p.num_tokens <= kSplitGatherMaxTokens) {
    const int per_block = kGatherThreads * kGatherCols;
    const LaunchOptions o{dim3(p.num_tokens, (p.hidden + per_block - 1) / per_block),
                          dim3(kGatherThreads), 0, stream};
    if (bf16) {
      launch_kernel("one_sided_gather", one_sided_gather_split_kernel<__nv_bfloat16>, o, p);
    } else {
      launch_kernel("one_sided_gather", one_sided_gather_split_kernel<__half>, o, p);
    }
    return;
  }
  const LaunchOptions o{dim3(p.num_tokens), dim3(kGatherThreads), 0, stream};
  if (bf16) {
    launch_kernel("one_sided_gather", one_sided_gather_rows_kernel<__nv_bfloat16>, o, p);
  } else {
    launch_kernel("one_sided_gather", one_sided_gather_rows_kernel<__half>, o, p);
  }
}

}  // namespace moe::ep
