// plan / gather / finalize kernels of the grouped backend (contracts in moe_kernels.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/moe_kernels.h"
#include "core/launch.cuh"
#include "core/warp_scan.cuh"
#include "moe/errors.h"
#include "quant/fp8_quant_kernels.h"

namespace moe::grouped {
namespace {

constexpr int kPlanThreads = 1024;
constexpr int kMaxGroups = 1024;

/// Exclusive scan of one value per thread (groups <= kPlanThreads; threads past them give 0)
/// into offsets[0..kPlanThreads]. All kPlanThreads threads: each warp scans its 32 values with
/// shuffles, warp 0 scans the 32 warp totals, then every thread adds its warp's base -- three
/// block barriers (a Hillis-Steele scan in shared memory took 20, ~1.5 us of a one-token
/// plan's 4.8, ncu on the H100).
__device__ void plan_scan(int value, int* offsets) {
  static_assert(kPlanThreads == 32 * 32, "one warp total per lane of warp 0");
  __shared__ int warp_totals[32];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int v = warp_inclusive_sum(value, lane);  // inclusive within the warp
  if (lane == 31) warp_totals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    warp_totals[lane] = warp_inclusive_sum(warp_totals[lane], lane);  // over the warps
  }
  __syncthreads();
  offsets[tid + 1] = (warp > 0 ? warp_totals[warp - 1] : 0) + v;
  if (tid == 0) offsets[0] = 0;
  __syncthreads();
}

/// Pair i (its router id; `weight()` its routing weight): its local expert's next row from the
/// shared-memory cursor, the pair's token and routing weight into it, and pair_row (-1: an
/// expert of another rank). `routed`: place routed pairs at all.
template <class Weight>
__device__ __forceinline__ void place_pair(const PlanParams& p, int i, int32_t id, Weight weight,
                                           int* cursor, bool routed) {
  const int e = id - p.expert_begin;
  int row = -1;
  if (routed && e >= 0 && e < p.num_local_experts) {
    row = atomicAdd(&cursor[e], 1);
    p.row_token[row] = i / p.top_k;
    p.row_weight[row] = weight();
  }
  p.pair_row[i] = row;
}

/// Rows of the (token, k) pairs [begin, end), thread-strided (place_pair).
__device__ void plan_place_pairs(const PlanParams& p, int begin, int end, int* cursor,
                                 bool routed) {
  for (int i = begin + static_cast<int>(threadIdx.x); i < end; i += kPlanThreads) {
    place_pair(
        p, i, p.topk_ids[i], [&] { return p.topk_weights[i]; }, cursor, routed);
  }
}

// plan_kernel: one block of 1024 threads.
//   counts per group (shared-memory atomics) -> exclusive scan -> offsets -> rows.
__global__ void __launch_bounds__(kPlanThreads) plan_kernel(PlanParams p) {
  __shared__ int counts[kMaxGroups];
  __shared__ int offsets[kMaxGroups + 1];
  const int tid = threadIdx.x;
  const int groups = p.num_local_experts + p.num_shared_groups;
  const int pairs = p.num_tokens * p.top_k;
  pdl_wait();
  pdl_launch_dependents();
  for (int g = tid; g < groups; g += kPlanThreads) {
    counts[g] = g < p.num_local_experts ? 0 : (p.with_shared ? p.num_tokens : 0);
  }
  __syncthreads();
  if (p.with_routed) {
    for (int i = tid; i < pairs; i += kPlanThreads) {
      const int e = p.topk_ids[i] - p.expert_begin;
      if (e >= 0 && e < p.num_local_experts) atomicAdd(&counts[e], 1);
    }
  }
  __syncthreads();
  // Exclusive scan over <= 1024 groups: one per thread.
  plan_scan(tid < groups ? counts[tid] : 0, offsets);
  for (int g = tid; g <= groups; g += kPlanThreads) p.expert_offsets[g] = offsets[g];
  // counts[] becomes the per-group cursor.
  for (int g = tid; g < groups; g += kPlanThreads) counts[g] = offsets[g];
  __syncthreads();
  plan_place_pairs(p, 0, pairs, counts, p.with_routed);
  if (p.with_shared) {
    for (int s = 0; s < p.num_shared_groups; ++s) {
      const int base = offsets[p.num_local_experts + s];
      for (int t = tid; t < p.num_tokens; t += kPlanThreads) {
        p.row_token[base + t] = t;
        p.row_weight[base + t] = 1.0f;
      }
    }
  }
}

// The multi-block plan (launch_plan): plan_count_kernel then plan_rows_kernel, B blocks each;
// block b owns pairs [b * per, (b + 1) * per).
constexpr int kPlanCountThreads = 256;
constexpr int kPlanMaxBlocks = 128;

int plan_blocks(int groups, int pairs) {
  // B * G <= kPlanScratchInts: every block of plan_rows_kernel reads all the counts.
  const int by_scratch = std::max(1, kPlanScratchInts / std::max(groups, 1));
  const int by_pairs = (pairs + 255) / 256;  // at least 256 pairs per block
  return std::max(1, std::min({kPlanMaxBlocks, by_scratch, by_pairs}));
}

__global__ void __launch_bounds__(kPlanCountThreads) plan_count_kernel(PlanParams p) {
  __shared__ int counts[kMaxGroups];
  const int routed = p.num_local_experts;
  const int pairs = p.num_tokens * p.top_k;
  const int per = (pairs + gridDim.x - 1) / gridDim.x;
  const int begin = blockIdx.x * per, end = min(pairs, begin + per);
  pdl_wait();
  pdl_launch_dependents();
  for (int g = threadIdx.x; g < routed; g += blockDim.x) counts[g] = 0;
  __syncthreads();
  for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int e = p.topk_ids[i] - p.expert_begin;
    if (e >= 0 && e < routed) atomicAdd(&counts[e], 1);
  }
  __syncthreads();
  for (int g = threadIdx.x; g < routed; g += blockDim.x) {
    p.block_counts[blockIdx.x * routed + g] = counts[g];
  }
}

__global__ void __launch_bounds__(kPlanThreads) plan_rows_kernel(PlanParams p) {
  __shared__ int cursor[kMaxGroups];
  __shared__ int offsets[kMaxGroups + 1];
  const int tid = threadIdx.x;
  const int routed = p.num_local_experts;
  const int groups = routed + p.num_shared_groups;
  const int pairs = p.num_tokens * p.top_k;
  const int blocks = gridDim.x, b = blockIdx.x;
  const int per = (pairs + blocks - 1) / blocks;
  const int begin = b * per, end = min(pairs, begin + per);
  __shared__ int2 sums[kMaxGroups];  // per routed group: (total, rows of blocks before b)
  // The block's first pair (each thread one; the rest in plan_place_pairs' loop) before the
  // wait: the router's ids and weights are complete whenever this kernel runs (plan_count,
  // before it, triggers its dependents only after its own wait), so their round trip overlaps
  // the counts' instead of following them.
  const int first = begin + tid;
  const int32_t first_id = first < end ? p.topk_ids[first] : 0;
  const float first_weight = first < end ? p.topk_weights[first] : 0.0f;
  pdl_wait();
  pdl_launch_dependents();
  // Per routed group: its total and the rows of the blocks before this one, summed by `lanes`
  // consecutive lanes (the most, up to 32, that the 1024 threads give every group), lane j
  // taking blocks j, j + lanes, ...: independent loads issued together, not `blocks` rounds of
  // one per thread (8 of the 12.5 us of plan_rows at Qwen3-30B-A3B 4096 tokens, 128 blocks).
  // NOTE: unrolled by 16, the rounds a thread has at 128 groups (8 lanes each, 128 blocks), so
  // that its loads go out together (by 4: four round trips). With the first pairs loaded before
  // the wait: plan_rows 8.56 -> 8.06 us at Qwen3-30B-A3B 4096 tokens, 12.58 -> 12.10 at 16384
  // (H100, layer timeline; bench/NOTES.md, twenty-second session).
  {
    int lanes = 32;
    while (lanes > 1 && routed * lanes > kPlanThreads) lanes /= 2;
    const int g = tid / lanes, j = tid % lanes;
    int total = 0, before = 0;
    if (g < routed) {
#pragma unroll 16
      for (int q = j; q < blocks; q += lanes) {
        const int c = p.block_counts[q * routed + g];
        total += c;
        before += q < b ? c : 0;
      }
    }
    // NOTE: lanes divides 32 and groups of lanes start at multiples of it: a group's lanes
    // are consecutive lanes of one warp (threads past the groups add zeros).
    for (int off = lanes / 2; off > 0; off /= 2) {
      total += __shfl_xor_sync(0xFFFFFFFFu, total, off);
      before += __shfl_xor_sync(0xFFFFFFFFu, before, off);
    }
    if (j == 0 && g < routed) sums[g] = make_int2(total, before);
  }
  __syncthreads();
  // Per group g (one per thread): its total, and the rows of blocks before this one.
  int total = 0, before = 0;
  if (tid < groups) {
    if (tid < routed) {
      total = sums[tid].x;
      before = sums[tid].y;
    } else {
      total = p.with_shared ? p.num_tokens : 0;  // a shared group: every token once
    }
  }
  // Exclusive scan of the totals over <= 1024 groups.
  plan_scan(total, offsets);
  if (b == 0) {
    for (int g = tid; g <= groups; g += kPlanThreads) p.expert_offsets[g] = offsets[g];
  }
  if (tid < routed) cursor[tid] = offsets[tid] + before;
  __syncthreads();
  if (first < end) {
    place_pair(
        p, first, first_id, [&] { return first_weight; }, cursor, /*routed=*/true);
  }
  plan_place_pairs(p, begin + kPlanThreads, end, cursor, /*routed=*/true);
  if (p.with_shared) {
    for (int s = 0; s < p.num_shared_groups; ++s) {
      const int base = offsets[routed + s];
      for (int t = b * kPlanThreads + tid; t < p.num_tokens; t += blocks * kPlanThreads) {
        p.row_token[base + t] = t;
        p.row_weight[base + t] = 1.0f;
      }
    }
  }
}

// gather_kernel: block r copies x[row_token[r]] to x_perm[r] with 16-byte accesses.
__global__ void gather_kernel(GatherParams p, int elem_bytes) {
  const int row = blockIdx.x;
  if (p.dependents_at_start) pdl_launch_dependents();
  pdl_wait();
  pdl_launch_dependents();
  if (row >= *p.total_rows) return;
  const int vecs = p.hidden * elem_bytes / 16;
  const uint4* src = reinterpret_cast<const uint4*>(static_cast<const char*>(p.x) +
                                                    static_cast<int64_t>(p.row_token[row]) *
                                                        p.hidden * elem_bytes);
  uint4* dst = reinterpret_cast<uint4*>(static_cast<char*>(p.x_perm) +
                                        static_cast<int64_t>(row) * p.hidden * elem_bytes);
  for (int i = threadIdx.x; i < vecs; i += blockDim.x) dst[i] = src[i];
  if (p.scales != nullptr) {
    const float* s = p.scales + static_cast<int64_t>(p.row_token[row]) * p.scale_groups;
    for (int g = threadIdx.x; g < p.scale_groups; g += blockDim.x) {
      p.scales_t[static_cast<int64_t>(g) * p.scales_ld + row] = s[g];
    }
  }
}

// quantize_scatter_kernel: warp w of block (bx, by) quantizes 1x128 group bx * kScatterWarps +
// w of tokens by, by + gridDim.y, ... (lane l: elements 4l .. 4l + 3 of the group), as
// quant::quantize_1x128_kernel does, and stores the 128 codes (4 bytes per lane) and the scale
// to each of the token's rows.
// NOTE: x is read before griddepcontrol.wait: x comes before the plan in the stream, and the
// plan kernels (this kernel's predecessor) trigger their dependents only after their own wait,
// so x is complete whenever this kernel runs; the plan's outputs (pair_row, offsets) are read
// after the wait. The first token's quantization thus overlaps the plan.
constexpr int kScatterWarps = 4;

// Calls store(row) for every row of token t (its routed rows in k order, then its row of each
// shared group): 32 rows at a time, lane j loading row j and every lane taking each in turn (one
// round of independent loads instead of k dependent ones). All lanes of the warp.
template <class Store>
__device__ __forceinline__ void for_each_token_row(const QuantizeScatterParams& p, int t, int lane,
                                                   Store&& store) {
  const int32_t* rows = p.pair_row + static_cast<int64_t>(t) * p.top_k;
  for (int j0 = 0; j0 < p.top_k; j0 += 32) {
    const int mine = j0 + lane < p.top_k ? rows[j0 + lane] : -1;
    const int n = min(32, p.top_k - j0);
    for (int j = 0; j < n; ++j) {
      const int row = __shfl_sync(0xFFFFFFFFu, mine, j);
      if (row >= 0) store(row);
    }
  }
  if (p.with_shared) {
    for (int g = 0; g < p.num_shared_groups; ++g) {
      store(p.expert_offsets[p.num_local_experts + g] + t);
    }
  }
}

// kScatterTokens tokens a block round (1 at decode; 2 from QuantizeScatterParams::
// scatter_pair_from tokens: their loads in flight together). kStatic: per-tensor codes at
// QuantizeScatterParams::static_scale, no scales.
template <class T, int kScatterTokens, bool kStatic>
__global__ void __launch_bounds__(kScatterWarps * 32)
    quantize_scatter_kernel(QuantizeScatterParams p) {
  static_assert(sizeof(T) == 2, "16-bit activations");
  const int lane = threadIdx.x % 32;
  const int group = blockIdx.x * kScatterWarps + threadIdx.x / 32;
  const int c0 = group * quant::kFp8GroupSize + lane * 4;  // this lane's first element
  const bool has_group = group * quant::kFp8GroupSize < p.hidden;
  const bool in = c0 < p.hidden;  // whole: hidden % 16 == 0
  if (p.dependents_at_start) pdl_launch_dependents();
  float static_scale = 0.0f;
  if constexpr (kStatic) static_scale = *p.static_scale;  // set at load: before the wait
  bool waited = false;
  // kScatterTokens tokens a round (t0, t0 + gridDim.y, ...): all their x loads issued before the
  // first is quantized, kScatterTokens times the bytes in flight a block.
  const int step = gridDim.y * kScatterTokens;
  for (int t0 = blockIdx.y; t0 < p.num_tokens; t0 += step) {
    float v[kScatterTokens][4];
#pragma unroll
    for (int q = 0; q < kScatterTokens; ++q) {
      const int t = t0 + q * static_cast<int>(gridDim.y);
#pragma unroll
      for (int i = 0; i < 4; ++i) v[q][i] = 0.0f;
      if (in && t < p.num_tokens) {
        const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const T*>(p.x) +
                                                          static_cast<int64_t>(t) * p.hidden + c0);
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int i = 0; i < 4; ++i) v[q][i] = static_cast<float>(e[i]);
      }
    }
    float s[kScatterTokens];
    uint32_t packed[kScatterTokens];
#pragma unroll
    for (int q = 0; q < kScatterTokens; ++q) {
      if constexpr (kStatic) {
        uint32_t word[1];
        quant::device::quantize_lanes_static<4>(v[q], static_scale, word);
        packed[q] = word[0];
      } else {
        packed[q] = quant::device::quantize_lane4_1x128<true>(v[q], /*pow2_scale=*/false, s[q]);
      }
    }
    if (!waited) {
      pdl_wait();
      pdl_launch_dependents();
      waited = true;
    }
    if (!has_group) continue;
#pragma unroll
    for (int q = 0; q < kScatterTokens; ++q) {
      const int t = t0 + q * static_cast<int>(gridDim.y);
      if (t >= p.num_tokens) break;
      auto store = [&](int row) {
        if (in) {
          *reinterpret_cast<uint32_t*>(p.x_perm + static_cast<int64_t>(row) * p.hidden + c0) =
              packed[q];
        }
        if (!kStatic && lane == 0) {
          p.scales_t[static_cast<int64_t>(group) * p.scales_ld + row] = s[q];
        }
      };
      for_each_token_row(p, t, lane, store);
    }
  }
  if (!waited) {
    pdl_wait();
    pdl_launch_dependents();
  }
}

// quantize_scatter_rows_kernel (QuantizeScatterParams::whole_rows): block b quantizes tokens
// b and b + gridDim.x (two a round: their loads together), warp w of it groups 2w and 2w + 1 of
// each (lane l: elements 8l .. 8l + 7 of the warp's 256, its half-warp's group), and stores the
// codes (8 bytes a lane: 256 contiguous bytes a warp) and the two scales to each of the token's
// rows -- whole rows per block, where quantize_scatter_kernel's blocks write 512-byte pieces
// of them (quant::device::quantize_lane8_1x128: the codes and scales of quantize_lane4_1x128;
// kStatic: per-tensor codes, no scales).
constexpr int kScatterRowsTokens = 2;

template <class T, bool kStatic>
__global__ void __launch_bounds__(1024) quantize_scatter_rows_kernel(QuantizeScatterParams p) {
  static_assert(sizeof(T) == 2, "16-bit activations");
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int c0 = warp * 256 + lane * 8;  // this lane's first element
  const int group = c0 / quant::kFp8GroupSize;
  const bool in = c0 < p.hidden;  // whole: hidden % 16 == 0
  if (p.dependents_at_start) pdl_launch_dependents();
  float static_scale = 0.0f;
  if constexpr (kStatic) static_scale = *p.static_scale;  // set at load: before the wait
  float v[kScatterRowsTokens][8];
#pragma unroll
  for (int q = 0; q < kScatterRowsTokens; ++q) {
    const int t = blockIdx.x + q * static_cast<int>(gridDim.x);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[q][i] = 0.0f;
    if (in && t < p.num_tokens) {
      const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) +
                                                        static_cast<int64_t>(t) * p.hidden + c0);
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[q][i] = static_cast<float>(e[i]);
    }
  }
  float s[kScatterRowsTokens];
  uint2 packed[kScatterRowsTokens];
#pragma unroll
  for (int q = 0; q < kScatterRowsTokens; ++q) {
    if constexpr (kStatic) {
      uint32_t words[2];
      quant::device::quantize_lanes_static<8>(v[q], static_scale, words);
      packed[q] = make_uint2(words[0], words[1]);
    } else {
      packed[q] = quant::device::quantize_lane8_1x128(v[q], /*pow2_scale=*/false, s[q]);
    }
  }
  pdl_wait();
  pdl_launch_dependents();
  const int groups = (p.hidden + quant::kFp8GroupSize - 1) / quant::kFp8GroupSize;
  // Block scaling: the token's scales once, token-major (launch_transpose_scales spreads them),
  // or (scales_tok null) to each of its rows.
  const bool per_token_scales = !kStatic && p.scales_tok != nullptr;
#pragma unroll
  for (int q = 0; q < kScatterRowsTokens; ++q) {
    const int t = blockIdx.x + q * static_cast<int>(gridDim.x);
    if (t >= p.num_tokens) break;
    if (per_token_scales && in && lane % 16 == 0) {
      p.scales_tok[static_cast<int64_t>(t) * groups + group] = s[q];
    }
    auto store = [&](int row) {
      if (in) {
        *reinterpret_cast<uint2*>(p.x_perm + static_cast<int64_t>(row) * p.hidden + c0) = packed[q];
        if (!kStatic && !per_token_scales && lane % 16 == 0) {
          p.scales_t[static_cast<int64_t>(group) * p.scales_ld + row] = s[q];
        }
      }
    };
    for_each_token_row(p, t, lane, store);
  }
}

// transpose_scales_kernel: thread (r, c) of the grid writes groups [8c, 8c + 8) of row r's
// scales (a warp's stores of a group: 32 consecutive rows) from its token's token-major scales.
// The plan's row count and row_token are read before griddepcontrol.wait: quantize_scatter, this
// kernel's predecessor, triggers its dependents only after its own wait (launch_quantize_scatter
// drops its dependents_at_start here), so they are complete whenever this kernel runs, and after
// the wait one round trip (the scales' loads, issued together) is left.
constexpr int kTransposeThreads = 256;
constexpr int kTransposeChunk = 8;

__global__ void __launch_bounds__(kTransposeThreads)
    transpose_scales_kernel(TransposeScalesParams p) {
  const int row = blockIdx.x * kTransposeThreads + threadIdx.x;
  const int g0 = blockIdx.y * kTransposeChunk;
  const bool live = row < *p.total_rows;
  const int token = live ? p.row_token[row] : 0;
  pdl_wait();
  pdl_launch_dependents();
  if (!live) return;
  const float* __restrict__ s = p.scales + static_cast<int64_t>(token) * p.groups + g0;
  float* __restrict__ out = p.scales_t + static_cast<int64_t>(g0) * p.scales_ld + row;
  const int n = min(kTransposeChunk, p.groups - g0);
  float v[kTransposeChunk];
#pragma unroll
  for (int i = 0; i < kTransposeChunk; ++i) {
    if (i < n) v[i] = __ldg(s + i);
  }
#pragma unroll
  for (int i = 0; i < kTransposeChunk; ++i) {
    if (i < n) out[static_cast<int64_t>(i) * p.scales_ld] = v[i];
  }
}

template <class T>
__device__ __forceinline__ void add8(float (&acc)[8], const T* src) {
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] += static_cast<float>(v[i]);
}

/// acc += 8 f32 values (two 16-byte loads).
__device__ __forceinline__ void add8(float (&acc)[8], const float* src) {
  const float4 a = *reinterpret_cast<const float4*>(src);
  const float4 b = *reinterpret_cast<const float4*>(src + 4);
  acc[0] += a.x, acc[1] += a.y, acc[2] += a.z, acc[3] += a.w;
  acc[4] += b.x, acc[5] += b.y, acc[6] += b.z, acc[7] += b.w;
}

/// dst[0..8) = acc, rounded once to O (f32: not rounded).
template <class O>
__device__ __forceinline__ void store8(O* dst, const float (&acc)[8]) {
  if constexpr (std::is_same_v<O, float>) {
    *reinterpret_cast<float4*>(dst) = make_float4(acc[0], acc[1], acc[2], acc[3]);
    *reinterpret_cast<float4*>(dst + 4) = make_float4(acc[4], acc[5], acc[6], acc[7]);
  } else {
    uint4 packed;
    O* o = reinterpret_cast<O*>(&packed);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = static_cast<O>(acc[i]);
    *reinterpret_cast<uint4*>(dst) = packed;
  }
}

// finalize_kernel: block (t, y) sums its token's rows, 8 features per thread per step, over
// the features y * blockDim.x * 8 + gridDim.y * blockDim.x * 8 * i (gridDim.y > 1 for a few
// tokens of a wide H: the chunks of one token run in parallel). T: the rows' (act) type; O:
// out's type (T, or f32 for expert parallelism's partial sums).
constexpr int kRowsInFlight = 8;           // finalize: routed rows whose loads are issued together
constexpr int kFinalizeSplitTokens = 128;  // finalize: fewer tokens split each token's features

template <class T, class O>
__global__ void finalize_kernel(FinalizeParams p) {
  const int t = blockIdx.x;
  // The token's first kRowsInFlight rows (and the first shared group's base), read before the
  // wait: pair_row and the offsets are the plan's, four kernels back, and FC2 (this kernel's
  // predecessor) triggers its dependents only after its own wait, so they are complete
  // whenever this kernel runs; at one token their load's round trip then overlaps FC2's tail
  // instead of following it.
  int first_rows[kRowsInFlight];
#pragma unroll
  for (int u = 0; u < kRowsInFlight; ++u) {
    first_rows[u] = p.with_routed && u < p.top_k ? p.pair_row[t * p.top_k + u] : -1;
  }
  const int first_shared = p.with_shared && p.num_shared_groups > 0
                               ? p.expert_offsets[p.num_local_experts]  // the plan's too
                               : 0;
  pdl_wait();
  pdl_launch_dependents();
  const T* y = static_cast<const T*>(p.y);
  // Features c .. c + 7 of row `row` (c a multiple of 8: one 16-byte piece in either layout).
  auto y_at = [&](int row, int c) {
    return p.y_block_rows > 0 ? y + y_block_offset(row, c, p.y_block_rows)
                              : y + static_cast<int64_t>(row) * p.hidden + c;
  };
  O* out = static_cast<O*>(p.out) + static_cast<int64_t>(t) * p.hidden;
  for (int c = (blockIdx.y * blockDim.x + threadIdx.x) * 8; c < p.hidden;
       c += gridDim.y * blockDim.x * 8) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (p.accumulate) add8(acc, out + c);
    if (p.with_routed) {
      // kRowsInFlight rows at a time: their indices, then their 16-byte loads, all issued
      // before the first add (one dependent load after another cost two memory latencies per
      // row: ~7 us for one token of top-8). The adds keep the k order.
      for (int j0 = 0; j0 < p.top_k; j0 += kRowsInFlight) {
        int rows[kRowsInFlight];
#pragma unroll
        for (int u = 0; u < kRowsInFlight; ++u) {
          rows[u] = j0 == 0            ? first_rows[u]
                    : j0 + u < p.top_k ? p.pair_row[t * p.top_k + j0 + u]
                                       : -1;
        }
        uint4 raw[kRowsInFlight];
#pragma unroll
        for (int u = 0; u < kRowsInFlight; ++u) {
          if (rows[u] >= 0) {
            raw[u] = *reinterpret_cast<const uint4*>(y_at(rows[u], c));
          }
        }
#pragma unroll
        for (int u = 0; u < kRowsInFlight; ++u) {
          if (rows[u] >= 0) add8(acc, reinterpret_cast<const T*>(&raw[u]));
        }
      }
    }
    if (p.with_shared) {
      for (int s = 0; s < p.num_shared_groups; ++s) {
        const int row = (s == 0 ? first_shared : p.expert_offsets[p.num_local_experts + s]) + t;
        add8(acc, y_at(row, c));
      }
    }
    store8(out + c, acc);
  }
}

}  // namespace

void launch_plan(const PlanParams& p, cudaStream_t stream) {
  const int groups = p.num_local_experts + p.num_shared_groups;
  MOE_CHECK(groups <= kMaxGroups, "plan: ", groups, " expert groups (at most ", kMaxGroups, ")");
  LaunchOptions o;
  o.stream = stream;
  o.programmatic_dependent_launch = true;
  const int pairs = p.with_routed ? p.num_tokens * p.top_k : 0;
  if (p.block_counts == nullptr || pairs <= kPlanOneBlockPairs) {
    o.grid = dim3(1);
    o.block = dim3(kPlanThreads);
    launch_kernel("plan_kernel", plan_kernel, o, p);
    return;
  }
  o.grid = dim3(plan_blocks(p.num_local_experts, pairs));
  o.block = dim3(kPlanCountThreads);
  launch_kernel("plan_count_kernel", plan_count_kernel, o, p);
  o.block = dim3(kPlanThreads);
  launch_kernel("plan_rows_kernel", plan_rows_kernel, o, p);
}

void launch_gather(const GatherParams& p, DType dtype, cudaStream_t stream) {
  if (p.max_rows == 0) return;
  const int elem = dtype_bits(dtype) / 8;
  MOE_CHECK((p.hidden * elem) % 16 == 0, "gather: rows of ", p.hidden,
            " elements are not 16-byte multiples");
  MOE_CHECK(p.scales == nullptr || (p.scales_t != nullptr && p.scales_ld >= p.max_rows),
            "gather: scales need scales_t with ld >= ", p.max_rows, " (got ", p.scales_ld, ")");
  LaunchOptions o;
  o.grid = dim3(p.max_rows);
  o.block = dim3(std::min(256, std::max(32, p.hidden * elem / 16)));
  o.stream = stream;
  o.programmatic_dependent_launch = true;
  if (p.scales == nullptr || !p.transpose_scales) {
    launch_kernel("gather_kernel", gather_kernel, o, p, elem);
    return;
  }
  // The rows alone, then their scales by row (the transposition reads the plan's outputs before
  // its wait: the gather's trigger after its own).
  GatherParams kp = p;
  kp.scales = nullptr;
  kp.dependents_at_start = false;
  launch_kernel("gather_kernel", gather_kernel, o, kp, elem);
  launch_transpose_scales({.scales = p.scales,
                           .row_token = p.row_token,
                           .total_rows = p.total_rows,
                           .max_rows = p.max_rows,
                           .groups = p.scale_groups,
                           .scales_t = p.scales_t,
                           .scales_ld = p.scales_ld},
                          stream);
}

void launch_transpose_scales(const TransposeScalesParams& p, cudaStream_t stream) {
  if (p.max_rows == 0) return;
  MOE_CHECK(p.scales != nullptr && p.row_token != nullptr && p.total_rows != nullptr &&
                p.scales_t != nullptr && p.groups > 0 && p.scales_ld >= p.max_rows,
            "transpose_scales: missing buffers, or scales_ld ", p.scales_ld, " < ", p.max_rows);
  LaunchOptions o;
  o.grid = dim3(static_cast<unsigned>((p.max_rows + kTransposeThreads - 1) / kTransposeThreads),
                static_cast<unsigned>((p.groups + kTransposeChunk - 1) / kTransposeChunk));
  o.block = dim3(kTransposeThreads);
  o.stream = stream;
  o.programmatic_dependent_launch = true;
  launch_kernel("transpose_scales_kernel", transpose_scales_kernel, o, p);
}

void launch_quantize_scatter(const QuantizeScatterParams& p, DType dtype, cudaStream_t stream) {
  if (p.num_tokens == 0) return;
  MOE_CHECK(p.hidden % 16 == 0, "quantize_scatter: rows of ", p.hidden,
            " e4m3 codes are not 16-byte multiples");
  MOE_CHECK(p.x_perm != nullptr && (p.scales_t != nullptr || p.static_scale != nullptr) &&
                p.pair_row != nullptr && (!p.with_shared || p.expert_offsets != nullptr),
            "quantize_scatter: missing buffers");
  const int groups = (p.hidden + quant::kFp8GroupSize - 1) / quant::kFp8GroupSize;
  LaunchOptions o;
  o.stream = stream;
  o.programmatic_dependent_launch = true;
  // A token a block up to scatter_pair_from tokens (decode: more blocks, each shorter); pairs of
  // tokens above, in blocks of their whole rows (whole_rows, up to 1024 threads: H <= 8192) or
  // of four groups.
  const int per_block = p.num_tokens >= p.scatter_pair_from ? 2 : 1;
  const int row_threads = (p.hidden + 255) / 256 * 32;
  const bool whole_rows = per_block == 2 && p.whole_rows && row_threads <= 1024;
  if (whole_rows) {
    o.grid =
        dim3(static_cast<unsigned>((p.num_tokens + kScatterRowsTokens - 1) / kScatterRowsTokens));
    o.block = dim3(row_threads);
  } else {
    const int blocks_y = (p.num_tokens + per_block - 1) / per_block;
    o.grid = dim3((groups + kScatterWarps - 1) / kScatterWarps,
                  static_cast<unsigned>(std::min(blocks_y, 65535)));
    o.block = dim3(kScatterWarps * 32);
  }
  // The kernel of the activations' type T and the scaling (kStatic: per tensor).
  // Block scaling, whole rows, scales_tok: the scales token-major, then transposed by row.
  const bool transpose = whole_rows && p.static_scale == nullptr && p.scales_tok != nullptr;
  MOE_CHECK(!transpose || (p.row_token != nullptr && p.max_rows > 0 && p.expert_offsets != nullptr),
            "quantize_scatter: scales_tok needs row_token, max_rows and expert_offsets");
  QuantizeScatterParams kp = p;
  if (!transpose) kp.scales_tok = nullptr;  // every other form stores the scales by row
  // The transposition reads the plan's outputs before its wait: its trigger after the wait.
  if (transpose) kp.dependents_at_start = false;
  auto launch = [&]<class T, bool kStatic>() {
    if (whole_rows) {
      launch_kernel("quantize_scatter_rows_kernel", quantize_scatter_rows_kernel<T, kStatic>, o,
                    kp);
      if (transpose) {
        launch_transpose_scales(
            {.scales = p.scales_tok,
             .row_token = p.row_token,
             .total_rows = p.expert_offsets + p.num_local_experts + p.num_shared_groups,
             .max_rows = p.max_rows,
             .groups = groups,
             .scales_t = p.scales_t,
             .scales_ld = p.scales_ld},
            stream);
      }
    } else {
      launch_kernel("quantize_scatter_kernel",
                    per_block == 2 ? quantize_scatter_kernel<T, 2, kStatic>
                                   : quantize_scatter_kernel<T, 1, kStatic>,
                    o, kp);
    }
  };
  auto launch_scaling = [&]<class T>() {
    if (p.static_scale != nullptr) return launch.template operator()<T, true>();
    return launch.template operator()<T, false>();
  };
  switch (dtype) {
    case DType::kBF16:
      return launch_scaling.template operator()<__nv_bfloat16>();
    case DType::kF16:
      return launch_scaling.template operator()<__half>();
    default:
      MOE_THROW("quantize_scatter: activations must be bf16 or f16, got ", dtype_name(dtype));
  }
}

void launch_finalize(const FinalizeParams& p, DType dtype, cudaStream_t stream) {
  launch_finalize(p, dtype, dtype, stream);
}

void launch_finalize(const FinalizeParams& p, DType dtype, DType out_dtype, cudaStream_t stream) {
  if (p.num_tokens == 0) return;
  MOE_CHECK(p.hidden % 8 == 0, "finalize: hidden size ", p.hidden, " is not a multiple of 8");
  LaunchOptions o;
  o.block = dim3(std::min(256, std::max(32, p.hidden / 8)));
  // A few tokens: each token's features in chunks of one step of the block (2048 features at
  // 256 threads), one block a chunk, so that a wide H (DeepSeek-V3: 7168, 3.5 steps) is not one
  // block's serial chain of dependent loads. Many tokens: a block a token.
  const int step = static_cast<int>(o.block.x) * 8;
  const int steps = (p.hidden + step - 1) / step;
  o.grid = dim3(p.num_tokens, p.num_tokens < kFinalizeSplitTokens ? steps : 1);
  o.stream = stream;
  o.programmatic_dependent_launch = true;
  MOE_CHECK(out_dtype == dtype || out_dtype == DType::kF32, "finalize: output dtype ",
            dtype_name(out_dtype), " (", dtype_name(dtype), " or f32 only)");
  const bool wide = out_dtype == DType::kF32;
  switch (dtype) {
    case DType::kBF16:
      if (wide)
        return launch_kernel("finalize_kernel", finalize_kernel<__nv_bfloat16, float>, o, p);
      return launch_kernel("finalize_kernel", finalize_kernel<__nv_bfloat16, __nv_bfloat16>, o, p);
    case DType::kF16:
      if (wide) return launch_kernel("finalize_kernel", finalize_kernel<__half, float>, o, p);
      return launch_kernel("finalize_kernel", finalize_kernel<__half, __half>, o, p);
    default:
      MOE_THROW("finalize: dtype ", dtype_name(dtype), " (bf16 or f16 only)");
  }
}

}  // namespace moe::grouped
