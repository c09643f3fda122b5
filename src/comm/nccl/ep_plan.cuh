// plan_send as a device function of one block (shared by ep_kernels.cu and the one_sided
// kernels, which plan inside their first kernel). Contract in ep_kernels.h.
#pragma once

#include <cub/block/block_scan.cuh>

#include "comm/nccl/ep_kernels.h"

namespace moe::ep {

inline constexpr int kPlanThreads = 1024;

/// Must be called by all kPlanThreads threads of one block.
__device__ inline void plan_send_block(const PlanSendParams& p) {
  using BlockScan = cub::BlockScan<int, kPlanThreads>;
  __shared__ typename BlockScan::TempStorage scan_storage;
  __shared__ int counts[kMaxRanks];
  __shared__ int offsets[kMaxRanks + 1];
  __shared__ int running;
  const int tid = threadIdx.x;
  const int ep = p.ep_size;
  const int num_experts = p.experts_per_rank * ep;
  for (int d = tid; d < ep; d += kPlanThreads) counts[d] = 0;
  __syncthreads();
  // Pass 1: the destination ranks of each token, and the count per rank.
  for (int t = tid; t < p.num_tokens; t += kPlanThreads) {
    uint64_t mask = 0;
    for (int j = 0; j < p.top_k; ++j) {
      const int id = p.topk_ids[t * p.top_k + j];
      if (id >= 0 && id < num_experts) mask |= uint64_t{1} << (id / p.experts_per_rank);
    }
    p.dest_mask[t] = mask;
    for (uint64_t m = mask; m != 0; m &= m - 1) atomicAdd(&counts[__ffsll(m) - 1], 1);
  }
  __syncthreads();
  if (tid == 0) {
    offsets[0] = 0;
    for (int d = 0; d < ep; ++d) offsets[d + 1] = offsets[d] + counts[d];
  }
  __syncthreads();
  for (int d = tid; d < ep; d += kPlanThreads) p.counts[d] = counts[d];
  for (int d = tid; d <= ep; d += kPlanThreads) p.offsets[d] = offsets[d];
  // Pass 2: rows per destination, tokens ascending (a block scan per tile of tokens).
  for (int d = 0; d < ep; ++d) {
    if (tid == 0) running = offsets[d];
    __syncthreads();
    for (int t0 = 0; t0 < p.num_tokens; t0 += kPlanThreads) {
      const int t = t0 + tid;
      const int flag = t < p.num_tokens ? static_cast<int>((p.dest_mask[t] >> d) & 1) : 0;
      int prefix = 0, total = 0;
      BlockScan(scan_storage).ExclusiveSum(flag, prefix, total);
      const int row = running + prefix;
      if (t < p.num_tokens) {
        p.row_of[t * ep + d] = flag ? row : -1;
        if (flag) p.token_of_row[row] = t;
      }
      __syncthreads();
      if (tid == 0) running += total;
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
