// sm90_grouped_gemm_kernel: the persistent, warp-specialised grouped GEMM of grouped_gemm.h.
//
// Contract
//   inputs : W [E, n, k] (TMA 3D map, box {128 bytes, 128, 1}), X [rows, k] (TMA 2D map, box
//            {128 bytes, kBlockN}), expert_offsets [E + 1] (device), row_weights [rows],
//            bias [E, n]; TIn bf16 / f16, or e4m3 with the scaling of grouped_gemm.h
//            (kBlock: X's 1x128 scales [k/128, ld] through a third TMA map, box {kBlockN, 1})
//   output : FC1 act(gate, up) [rows, n/2] or FC2 (D + bias) * row_weight [rows, n], TOut
//            (e4m3 for the per-tensor FC1: e4m3(act / out_scale))
//   tiles  : for every expert, ceil(n / 128) weight tiles x ceil(rows_e / kBlockN) token tiles,
//            numbered expert-major, then weight tile, then token tile (consecutive CTAs share a
//            weight tile through L2); CTAs stride over the tiles (persistent grid).
// Steps
//   1. All threads: copy expert offsets to shared memory; warp 0 scans tiles per expert.
//   2. Warpgroup 0 (one thread) produces: per 128-byte K block (64 bf16 or 128 e4m3), TMA
//      loads of a 128-row weight tile and a kBlockN-row token tile (and, kBlock, the K
//      block's kBlockN token scales) into stage s, completing on full[s].
//   3. Warpgroups 1 and 2 consume: each owns 64 weight rows; per K block, four wgmma
//      m64 n<kBlockN> k16 (k32 for e4m3) from shared memory, then release stage s (empty[s]).
//      kBlock promotes per 128-wide K block (as DeepGEMM does on Hopper): the block's wgmma
//      result is waited for and added to an fp32 total times weight scale x token scale.
//   4. The epilogue runs from registers: rows past an expert's count and weight rows past n
//      are computed on TMA's zero fill and not written.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backends/grouped/grouped_gemm.h"
#include "backends/grouped/sm90_ptx.cuh"
#include "backends/grouped/sm90_wgmma_generated.cuh"
#include "core/launch.cuh"
#include "quant/fp8_quant_kernels.h"

namespace moe::grouped {

inline constexpr int kNumThreads = 384;      // producer warpgroup + 2 consumer warpgroups
inline constexpr int kKBytes = kBlockK * 2;  // one 128-byte swizzle row per K block
inline constexpr int kABytes = kBlockM * kKBytes;

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
// e4m3 outputs are quantized (with their scale) by the epilogue itself.

struct TileCoord {
  int expert;
  int m_tile;  // weight-row tile
  int t_tile;  // token tile
};

template <int kBlockN>
__device__ __forceinline__ TileCoord decode_tile(int tile, const int* tile_prefix,
                                                 const int* row_offsets, int num_experts,
                                                 int m_tiles) {
  // Largest e with tile_prefix[e] <= tile (experts with no tiles have equal prefixes).
  int lo = 0, hi = num_experts - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tile_prefix[mid] <= tile) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int local = tile - tile_prefix[lo];
  const int t_tiles = ceil_div(row_offsets[lo + 1] - row_offsets[lo], kBlockN);
  (void)m_tiles;
  return {lo, local / t_tiles, local % t_tiles};
}

// Weight scales of a K block for the accumulator rows a thread holds (r0 and r0 + 8 of its
// 16-row slice): FC1 tiles hold gate rows (r0) and up rows (r0 + 8); FC2 tiles one block.
struct RowScales {
  float lo, hi;
};

template <Epilogue kEpi>
__device__ __forceinline__ RowScales block_weight_scales(const GroupedGemmParams& p, int expert,
                                                         int m_tile, int kb, int num_k_blocks) {
  const int m_tiles = ceil_div(p.n, kBlockM);
  if constexpr (kEpi == Epilogue::kRoutingWeight) {
    const float s =
        __ldg(p.w_scales + (static_cast<int64_t>(expert) * m_tiles + m_tile) * num_k_blocks + kb);
    return {s, s};
  } else {
    const float* base =
        p.w_scales + (static_cast<int64_t>(expert) * m_tiles + m_tile) * 2 * num_k_blocks + kb;
    return {__ldg(base), __ldg(base + num_k_blocks)};
  }
}

template <class TIn, class TOut, int kBlockN, int kStages, Epilogue kEpi, Scaling kScaling>
__global__ void __launch_bounds__(kNumThreads, 1)
    sm90_grouped_gemm_kernel(const __grid_constant__ CUtensorMap w_map,
                             const __grid_constant__ CUtensorMap x_map,
                             const __grid_constant__ CUtensorMap xs_map, GroupedGemmParams p) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Mma = sm90::Wgmma<kBlockN, TIn>;
  constexpr bool kFp8 = sizeof(TIn) == 1;
  constexpr bool kBlockScaled = kScaling == Scaling::kBlock;
  static_assert(kFp8 == (kScaling != Scaling::kNone), "e4m3 operands come with their scaling");
  static_assert(kBlockK * 2 == 128 && kKBytes / static_cast<int>(sizeof(TIn)) / Mma::kK == 4,
                "one stage is one 128-byte swizzle row of K: four wgmma");
  constexpr int kKElems = kKBytes / static_cast<int>(sizeof(TIn));  // K per stage
  constexpr int kBBytes = kBlockN * kKBytes;
  // The K block's token scales: TMA needs a 16-byte aligned start in the inner dimension, so
  // kSBox = kBlockN + 4 scales are loaded from row0 rounded down to a multiple of 4; each
  // stage's slot is 128-byte aligned (scale_slot_bytes).
  constexpr int kSBox = kBlockN + 4;
  constexpr int kSBytes = kBlockScaled ? (kSBox * 4 + 127) / 128 * 128 : 0;
  static_assert(kBBytes % 1024 == 0, "each stage's token tile must keep 1024-byte alignment");

  extern __shared__ uint8_t smem_raw[];
  uint8_t* base =
      reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint8_t* smem_a = base;                      // [kStages][128 rows x 128 B] weights
  uint8_t* smem_b = base + kStages * kABytes;  // [kStages][kBlockN rows x 128 B] tokens
  float* smem_s = reinterpret_cast<float*>(smem_b + kStages * kBBytes);  // [kStages][slot]
  uint64_t* full = reinterpret_cast<uint64_t*>(smem_b + kStages * (kBBytes + kSBytes));
  uint64_t* empty = full + kStages;
  int* row_offsets = reinterpret_cast<int*>(empty + kStages);  // [E + 1]
  int* tile_prefix = row_offsets + p.num_experts + 1;          // [E + 1]

  const int tid = threadIdx.x;
  const int num_experts = p.num_experts;
  const int m_tiles = ceil_div(p.n, kBlockM);
  const int num_k_blocks = ceil_div(p.k, kKElems);

  // 1. Offsets and the tile prefix sum. Barrier setup overlaps the previous kernel's tail
  // (programmatic dependent launch); its outputs are read only after griddepcontrol.wait.
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      sm90::mbar_init(&full[s], 1);
      // One arrival per consumer warpgroup; kBlock: per consumer warp (each reads scales).
      sm90::mbar_init(&empty[s], kBlockScaled ? 8 : 2);
    }
    sm90::fence_barrier_init();
    sm90::tma_prefetch_desc(&w_map);
    sm90::tma_prefetch_desc(&x_map);
    if constexpr (kBlockScaled) sm90::tma_prefetch_desc(&xs_map);
  }
  pdl_wait();
  pdl_launch_dependents();
  for (int e = tid; e <= num_experts; e += kNumThreads) row_offsets[e] = p.expert_offsets[e];
  __syncthreads();
  if (tid < 32) {
    int running = 0;
    for (int e0 = 0; e0 < num_experts; e0 += 32) {
      const int e = e0 + tid;
      int v =
          e < num_experts ? ceil_div(row_offsets[e + 1] - row_offsets[e], kBlockN) * m_tiles : 0;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const int up = __shfl_up_sync(0xFFFFFFFFu, v, d);
        if (tid >= d) v += up;
      }
      if (e < num_experts) tile_prefix[e + 1] = running + v;
      running += __shfl_sync(0xFFFFFFFFu, v, 31);
    }
    if (tid == 0) tile_prefix[0] = 0;
  }
  __syncthreads();
  const int total_tiles = tile_prefix[num_experts];
  const int warpgroup = tid / 128;

  if (warpgroup == 0) {
    // 2. Producer.
    sm90::setmaxnreg_dec<40>();
    if (tid == 0) {
      int s = 0;
      uint32_t phase = 0;
      for (int tile = blockIdx.x; tile < total_tiles; tile += gridDim.x) {
        const TileCoord tc =
            decode_tile<kBlockN>(tile, tile_prefix, row_offsets, num_experts, m_tiles);
        const int row0 = row_offsets[tc.expert] + tc.t_tile * kBlockN;
        for (int kb = 0; kb < num_k_blocks; ++kb) {
          sm90::mbar_wait(&empty[s], phase ^ 1);
          sm90::mbar_arrive_expect_tx(&full[s], kABytes + kBBytes + (kBlockScaled ? kSBox * 4 : 0));
          sm90::tma_load_3d(smem_a + s * kABytes, &w_map, &full[s], kb * kKElems,
                            tc.m_tile * kBlockM, tc.expert);
          sm90::tma_load_2d(smem_b + s * kBBytes, &x_map, &full[s], kb * kKElems, row0);
          if constexpr (kBlockScaled) {
            sm90::tma_load_2d(smem_s + s * (kSBytes / 4), &xs_map, &full[s], row0 & ~3, kb);
          }
          if (++s == kStages) {
            s = 0;
            phase ^= 1;
          }
        }
      }
    }
    return;
  }

  // 3. Consumers.
  sm90::setmaxnreg_inc<232>();
  const int c = warpgroup - 1;  // which 64 weight rows of the tile
  const int warp = (tid / 32) % 4;
  const int lane = tid % 32;
  int s = 0;
  uint32_t phase = 0;
  float acc[Mma::kRegs];
  // kBlock: the promoted fp32 total (acc holds one K block's product).
  float total[kBlockScaled ? Mma::kRegs : 1];
  // One K block of stage `stage`: four wgmma into acc (the first overwrites it unless
  // `accumulate`), committed as one group.
  auto issue_k_block = [&](int stage, bool accumulate) {
#pragma unroll
    for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(acc[i]);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint64_t da = sm90::smem_desc_sw128(smem_a + stage * kABytes + c * 64 * 128 + kk * 32);
      const uint64_t db = sm90::smem_desc_sw128(smem_b + stage * kBBytes + kk * 32);
      Mma::mma(acc, da, db, (accumulate || kk > 0) ? 1 : 0);
    }
    sm90::wgmma_commit();
  };
  for (int tile = blockIdx.x; tile < total_tiles; tile += gridDim.x) {
    const TileCoord tc = decode_tile<kBlockN>(tile, tile_prefix, row_offsets, num_experts, m_tiles);
    if constexpr (kBlockScaled) {
      const int row0 = row_offsets[tc.expert] + tc.t_tile * kBlockN;
#pragma unroll
      for (int i = 0; i < Mma::kRegs; ++i) total[i] = 0.0f;
      for (int kb = 0; kb < num_k_blocks; ++kb) {
        // The weight scales' loads start before the wait on the stage.
        const RowScales ws = block_weight_scales<kEpi>(p, tc.expert, tc.m_tile, kb, num_k_blocks);
        sm90::mbar_wait(&full[s], phase);
        issue_k_block(s, /*accumulate=*/false);
        sm90::wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(acc[i]);
        // Thread (warp w, lane l) holds token columns j*8 + (l%4)*2 + {0, 1}.
        const float* sx = smem_s + s * (kSBytes / 4) + (row0 & 3) + (lane % 4) * 2;
        float2 xs[kBlockN / 8];
#pragma unroll
        for (int j = 0; j < kBlockN / 8; ++j) xs[j] = make_float2(sx[j * 8], sx[j * 8 + 1]);
        __syncwarp();
        if (lane == 0) sm90::mbar_arrive(&empty[s]);
#pragma unroll
        for (int j = 0; j < kBlockN / 8; ++j) {
          total[j * 4 + 0] += acc[j * 4 + 0] * (ws.lo * xs[j].x);
          total[j * 4 + 1] += acc[j * 4 + 1] * (ws.lo * xs[j].y);
          total[j * 4 + 2] += acc[j * 4 + 2] * (ws.hi * xs[j].x);
          total[j * 4 + 3] += acc[j * 4 + 3] * (ws.hi * xs[j].y);
        }
        if (++s == kStages) {
          s = 0;
          phase ^= 1;
        }
      }
#pragma unroll
      for (int i = 0; i < Mma::kRegs; ++i) acc[i] = total[i];
    } else {
#pragma unroll
      for (int i = 0; i < Mma::kRegs; ++i) acc[i] = 0.0f;
      // One wgmma batch stays in flight: stage s is released once the batch after it has
      // been issued and wgmma.wait_group 1 says the batch reading s has finished.
      int prev_s = -1;
      for (int kb = 0; kb < num_k_blocks; ++kb) {
        sm90::mbar_wait(&full[s], phase);
        issue_k_block(s, /*accumulate=*/true);
        sm90::wgmma_wait<1>();
#pragma unroll
        for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(acc[i]);
        if (prev_s >= 0 && tid % 128 == 0) sm90::mbar_arrive(&empty[prev_s]);
        prev_s = s;
        if (++s == kStages) {
          s = 0;
          phase ^= 1;
        }
      }
      sm90::wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(acc[i]);
      if (prev_s >= 0 && tid % 128 == 0) sm90::mbar_arrive(&empty[prev_s]);
    }

    // 4. Epilogue. Thread (warp w, lane l) holds rows w*16 + l/4 and +8 of its warpgroup's
    // 64, for token columns j*8 + (l%4)*2 + {0, 1}. Per-tensor e4m3 scales the rows here:
    // alpha = weight scale x activation scale (FC1: gate rows, up rows).
    float alpha_lo = 1.0f, alpha_hi = 1.0f;
    if constexpr (kScaling == Scaling::kPerTensor) {
      const float a = *p.act_scale;
      if constexpr (kEpi == Epilogue::kRoutingWeight) {
        alpha_lo = alpha_hi = p.w_scales[tc.expert] * a;
      } else {
        alpha_lo = p.w_scales[2 * tc.expert] * a;
        alpha_hi = p.w_scales[2 * tc.expert + 1] * a;
      }
    }
    const int count = row_offsets[tc.expert + 1] - row_offsets[tc.expert];
    const int tok0 = tc.t_tile * kBlockN;
    const int row_base = row_offsets[tc.expert] + tok0;
    TOut* out = static_cast<TOut*>(p.out);
    if constexpr (kEpi == Epilogue::kRoutingWeight) {
      const int r0 = tc.m_tile * kBlockM + c * 64 + warp * 16 + lane / 4;  // output features
      const float* bias = p.bias ? p.bias + static_cast<int64_t>(tc.expert) * p.n : nullptr;
      const float b0 = (bias && r0 < p.n) ? bias[r0] : 0.0f;
      const float b1 = (bias && r0 + 8 < p.n) ? bias[r0 + 8] : 0.0f;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int col = j * 8 + (lane % 4) * 2 + q;
          if (tok0 + col >= count) continue;
          const int64_t row = row_base + col;
          const float w = p.row_weights ? p.row_weights[row] : 1.0f;
          if (r0 < p.n) {
            out[row * p.n + r0] = from_float<TOut>((acc[j * 4 + q] * alpha_lo + b0) * w);
          }
          if (r0 + 8 < p.n) {
            out[row * p.n + r0 + 8] = from_float<TOut>((acc[j * 4 + 2 + q] * alpha_hi + b1) * w);
          }
        }
      }
    } else {
      const int inter = p.n / 2;
      const int i = tc.m_tile * (kBlockM / 2) + c * 32 + warp * 8 + lane / 4;  // intermediate idx
      const int gate_row = tc.m_tile * kBlockM + c * 64 + warp * 16 + lane / 4;
      const float* bias = p.bias ? p.bias + static_cast<int64_t>(tc.expert) * p.n : nullptr;
      const float bg = (bias && i < inter) ? bias[gate_row] : 0.0f;
      const float bu = (bias && i < inter) ? bias[gate_row + 8] : 0.0f;
      float out_scale = 1.0f;
      if constexpr (sizeof(TOut) == 1) out_scale = *p.out_scale;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int col = j * 8 + (lane % 4) * 2 + q;
          if (tok0 + col >= count || i >= inter) continue;
          float g = acc[j * 4 + q] * alpha_lo + bg;
          float u = acc[j * 4 + 2 + q] * alpha_hi + bu;
          float h;
          if constexpr (kEpi == Epilogue::kSwiGLU) {
            h = g / (1.0f + expf(-g)) * u;
          } else {
            g = fminf(g, p.oai_limit);
            u = fminf(fmaxf(u, -p.oai_limit), p.oai_limit);
            h = (u + 1.0f) * g / (1.0f + expf(-p.oai_alpha * g));
          }
          const int64_t idx = static_cast<int64_t>(row_base + col) * inter + i;
          if constexpr (sizeof(TOut) == 1) {
            // The per-tensor intermediate: e4m3(h / s_d), bit for bit the CPU quantizer.
            reinterpret_cast<uint8_t*>(out)[idx] =
                quant::device::float_to_e4m3(quant::device::div_rn(h, out_scale));
          } else {
            out[idx] = from_float<TOut>(h);
          }
        }
      }
    }
  }
#endif
}

}  // namespace moe::grouped
