// plan_send as a device function of one block (ep_kernels.cu; the one_sided kernels plan by
// warp ballots of their own). Contract in ep_kernels.h.
#pragma once

#include <cub/block/block_scan.cuh>

#include "comm/nccl/ep_kernels.h"

namespace moe::ep {

inline constexpr int kPlanThreads = 1024;

/// Must be called by all kPlanThreads threads of one block. The outputs may be global or
/// shared memory; row_of may be null (not written).
__device__ inline void plan_send_block(const PlanSendParams& p) {
  // Pass 2 scans kPack destinations at once: 16-bit fields of one u64 (a tile of
  // kPlanThreads tokens counts at most 1024 per field).
  constexpr int kPack = 4;
  static_assert(kPlanThreads < (1 << 16), "a tile's count must fit a 16-bit field");
  using BlockScan = cub::BlockScan<uint64_t, kPlanThreads>;
  __shared__ typename BlockScan::TempStorage scan_storage;
  __shared__ int counts[kMaxRanks];
  __shared__ int offsets[kMaxRanks + 1];
  __shared__ int running[kPack];
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int ep = p.ep_size;
  const int num_experts = p.experts_per_rank * ep;
  for (int d = tid; d < ep; d += kPlanThreads) counts[d] = 0;
  __syncthreads();
  // Pass 1: the destination ranks of each token, and the count per rank (one shared-memory
  // atomic per warp and rank: a 4096-token prefill would otherwise pile ~8,000 atomics on
  // the same few words).
  for (int t0 = 0; t0 < p.num_tokens; t0 += kPlanThreads) {
    const int t = t0 + tid;
    uint64_t mask = 0;
    if (t < p.num_tokens) {
      for (int j = 0; j < p.top_k; ++j) {
        const int id = p.topk_ids[t * p.top_k + j];
        if (id >= 0 && id < num_experts) mask |= uint64_t{1} << (id / p.experts_per_rank);
      }
      p.dest_mask[t] = mask;
    }
    for (int d = 0; d < ep; ++d) {
      const int n = __popc(__ballot_sync(0xFFFFFFFFu, (mask >> d) & 1));
      if (lane == 0 && n > 0) atomicAdd(&counts[d], n);
    }
  }
  __syncthreads();
  if (tid == 0) {
    offsets[0] = 0;
    for (int d = 0; d < ep; ++d) offsets[d + 1] = offsets[d] + counts[d];
  }
  __syncthreads();
  for (int d = tid; d < ep; d += kPlanThreads) p.counts[d] = counts[d];
  for (int d = tid; d <= ep; d += kPlanThreads) p.offsets[d] = offsets[d];
  // Pass 2: rows per destination, tokens ascending: per group of kPack destinations, a block
  // scan per tile of tokens.
  for (int d0 = 0; d0 < ep; d0 += kPack) {
    if (tid < kPack && d0 + tid < ep) running[tid] = offsets[d0 + tid];
    __syncthreads();
    for (int t0 = 0; t0 < p.num_tokens; t0 += kPlanThreads) {
      const int t = t0 + tid;
      const uint64_t mask = t < p.num_tokens ? p.dest_mask[t] >> d0 : 0;
      uint64_t flags = 0;
#pragma unroll
      for (int i = 0; i < kPack; ++i) flags |= ((mask >> i) & 1) << (16 * i);
      uint64_t prefix = 0, total = 0;
      BlockScan(scan_storage).ExclusiveSum(flags, prefix, total);
      if (t < p.num_tokens) {
#pragma unroll
        for (int i = 0; i < kPack; ++i) {
          const int d = d0 + i;
          if (d >= ep) break;
          const bool flag = (mask >> i) & 1;
          const int row = running[i] + static_cast<int>((prefix >> (16 * i)) & 0xFFFF);
          if (p.row_of != nullptr) p.row_of[t * ep + d] = flag ? row : -1;
          if (flag) p.token_of_row[row] = t;
        }
      }
      __syncthreads();
      if (tid < kPack) running[tid] += static_cast<int>((total >> (16 * tid)) & 0xFFFF);
      __syncthreads();
    }
  }
}

/// Copies one row of `bytes` bytes with the widest access both pointers and the size allow
/// (the whole block cooperates).
__device__ inline void copy_row(const uint8_t* src, uint8_t* dst, size_t bytes) {
  const auto a = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst) | bytes;
  if (a % 16 == 0) {
    for (size_t i = threadIdx.x; i < bytes / 16; i += blockDim.x) {
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
    }
  } else if (a % 4 == 0) {
    for (size_t i = threadIdx.x; i < bytes / 4; i += blockDim.x) {
      reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
    }
  } else {
    for (size_t i = threadIdx.x; i < bytes; i += blockDim.x) dst[i] = src[i];
  }
}

}  // namespace moe::ep
