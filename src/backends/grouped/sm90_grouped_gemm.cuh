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
//            weight tile through L2); CTAs stride over the tiles (persistent grid). FC1 quantizing
//            its output (block scaling: store_quantized_pair on M, store_quantized_group on N)
//            and the 128-token tokens-on-M tile (kPaired) take units of two adjacent weight
//            tiles (the second past n where m_tiles is odd: zero-filled, not stored).
//            kCluster == 2 (opt-in): 2-CTA clusters stride over units of one token tile x two
//            adjacent weight tiles, numbered expert-major, then weight-tile pair, then token
//            tile (consecutive clusters share a pair of weight tiles through L2); the token
//            tile is multicast to both CTAs (see the kernel's comment).
// Steps
//   1. All threads: copy expert offsets to shared memory; warp 0 scans tiles per expert.
//   2. Warpgroup 0 (one thread) produces: per 128-byte K block (64 bf16 or 128 e4m3), TMA
//      loads of a 128-row weight tile and a kBlockN-row token tile (and, kBlock, the K
//      block's kBlockN token scales) into stage s, completing on full[s].
//      p.offsets_before_wait (grouped_gemm.h): steps 1 and the first kStages weight loads come
//      before griddepcontrol.wait (the weights stream under the previous kernel's tail), the
//      token tiles after it.
//   3. Warpgroups 1 and 2 consume: each owns 64 weight rows; per K block, four wgmma
//      m64 n<kBlockN> k16 (k32 for e4m3) from shared memory, then release stage s (empty[s]).
//      kBlock promotes per 128-wide K block (as DeepGEMM does on Hopper): the block's wgmma
//      result is waited for and added to an fp32 total times weight scale x token scale.
//   kTokensOnM (e4m3, 128 or 192 tokens x 128 weight rows; GemmConfig::tokens_on_m):
//      the same stages, with wgmma's operands swapped: A = a consumer warpgroup's 64 token rows
//      (two warpgroups at 128 tokens, three at 192: 512 threads, 160 registers each after
//      setmaxnreg), B = the 128 weight rows, so the promotion multiplies by 2 token scales x 1
//      weight scale (gate / up) per thread, and the epilogue is per warp
//      (store_tile_tokens_on_m: 16 whole token rows each). At 128 tokens a stage holds two
//      adjacent weight tiles (weight_tiles_per_stage, kPaired): a unit is the token tile
//      against both, each K block's two products promoted one after the other into two
//      totals, the token tile loaded once for 256 weight rows. Per-tensor scaling (kTensorOnM)
//      runs the same tiles without promotion: each K block's wgmma (both weight tiles) into the
//      two totals themselves, one K block in flight, alpha at the unit's end.
//   4. Epilogue, per consumer warpgroup (its 64 weight rows: 64 output features of FC2, 32
//      intermediate features of FC1): bias, activation, routing weight, alpha and the e4m3
//      quantization are applied in registers, and the finished values are staged through
//      shared memory so that whole token rows leave with 16-byte stores. Per chunk of
//      epilogue_rows(kBlockN) tokens (gemm_heuristic.h): stmatrix .trans (16-bit outputs;
//      e4m3 bytes one by one) writes the chunk [tokens][features] into one of the warpgroup's
//      two buffers (row stride padded by 16 bytes: no bank conflicts), a named barrier of the
//      warpgroup's 128 threads, then consecutive threads store consecutive 16-byte pieces of
//      a token row (scalar stores where the output row is not 16-byte aligned: n % 8 for
//      16-bit, n % 16 for e4m3). The buffers alternate, so one barrier per chunk orders the
//      next chunk's writes after the previous chunk's reads. The tile's routing weights are
//      copied (cp.async) to shared memory and the per-thread constants loaded when the tile
//      starts, under the main loop. MOE_GROUPED_DIRECT_EPILOGUE keeps the epilogue that
//      stores each value from registers (2 bytes, 4 token rows per warp instruction).
//      Rows past an expert's count and weight rows past n are computed on TMA's zero fill and
//      not written.
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
#include "core/warp_scan.cuh"
#include "quant/fp8_quant_kernels.h"

namespace moe::grouped {

inline constexpr int kNumThreads = 384;      // producer warpgroup + 2 consumer warpgroups
                                             // (threads_for: 3 on the 192-token M tile)
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

// Work unit -> tile. kCluster == 1: unit = tile (expert, then weight tile, then token tile).
// kCluster == 2: a unit is an expert's token tile t with a pair of adjacent weight tiles
// 2 mp, 2 mp + 1 (expert, then pair mp, then t); cluster rank `rank` takes weight tile
// 2 mp + rank, which is m_tiles (past the last tile) for rank 1 of an odd m_tiles' last pair.
// __host__ too, so that a CPU test can enumerate the units.
template <int kBlockN, int kCluster = 1>
__host__ __device__ __forceinline__ TileCoord decode_tile(int tile, const int* tile_prefix,
                                                          const int* row_offsets, int num_experts,
                                                          int m_tiles, int rank = 0) {
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
  if constexpr (kCluster == 1) {
    (void)rank;
    return {lo, local / t_tiles, local % t_tiles};
  } else {
    return {lo, (local / t_tiles) * kCluster + rank, local % t_tiles};
  }
}

/// Weight-tile units per expert: the weight tiles, or (kCluster == 2) their pairs.
template <int kCluster>
__host__ __device__ __forceinline__ int weight_units(int m_tiles) {
  if constexpr (kCluster == 1) {
    return m_tiles;
  } else {
    return ceil_div(m_tiles, kCluster);
  }
}

// The persistent grid's walk over the work units: CTA by CTA, or (clusters) cluster by
// cluster, both CTAs of a cluster taking the same units.
template <int kCluster>
__device__ __forceinline__ int first_unit() {
  if constexpr (kCluster == 1) {
    return blockIdx.x;
  } else {
    return static_cast<int>(sm90::cluster_id_x());
  }
}
template <int kCluster>
__device__ __forceinline__ int unit_stride() {
  if constexpr (kCluster == 1) {
    return gridDim.x;
  } else {
    return static_cast<int>(sm90::num_clusters_x());
  }
}

// Weight scales of a K block for the accumulator rows a thread holds (r0 and r0 + 8 of its
// 16-row slice): FC1 tiles hold gate rows (r0) and up rows (r0 + 8); FC2 tiles one block.
struct RowScales {
  float lo, hi;
};

// The tile's weight scales (K block 0; block_weight_scales reads block kb): FC2 [KB], FC1
// [2][KB] (gate, up).
template <Epilogue kEpi>
__device__ __forceinline__ const float* tile_weight_scales(const GroupedGemmParams& p, int expert,
                                                           int m_tile, int num_k_blocks) {
  const int m_tiles = ceil_div(p.n, kBlockM);
  constexpr int kSets = kEpi == Epilogue::kRoutingWeight ? 1 : 2;
  return p.w_scales + (static_cast<int64_t>(expert) * m_tiles + m_tile) * kSets * num_k_blocks;
}

template <Epilogue kEpi>
__device__ __forceinline__ RowScales block_weight_scales(const float* tile_scales, int kb,
                                                         int num_k_blocks) {
  if constexpr (kEpi == Epilogue::kRoutingWeight) {
    const float s = __ldg(tile_scales + kb);
    return {s, s};
  } else {
    return {__ldg(tile_scales + kb), __ldg(tile_scales + num_k_blocks + kb)};
  }
}

// Per-tensor e4m3: an expert's alpha, weight scale x activation scale (FC2: one; FC1: gate lo,
// up hi).
template <Epilogue kEpi>
__device__ __forceinline__ RowScales tensor_alpha(const GroupedGemmParams& p, int expert) {
  const float a = *p.act_scale;
  if constexpr (kEpi == Epilogue::kRoutingWeight) {
    const float s = p.w_scales[expert] * a;
    return {s, s};
  } else {
    return {p.w_scales[2 * expert] * a, p.w_scales[2 * expert + 1] * a};
  }
}

// ---- Epilogue ------------------------------------------------------------------------------
// Thread (warp w, lane l) of a consumer warpgroup holds accumulator rows w*16 + l/4 ("lo") and
// w*16 + l/4 + 8 ("hi") of the warpgroup's 64, for token columns j*8 + (l%4)*2 + {0, 1}.

// A tile's per-thread epilogue constants (the same expressions in both epilogues).
struct EpilogueConsts {
  float alpha_lo = 1.0f, alpha_hi = 1.0f;  // per-tensor e4m3: weight scale x activation scale
  float bias_lo = 0.0f, bias_hi = 0.0f;    // FC2: bias of rows lo, hi; FC1: gate, up bias
  float out_scale = 1.0f;                  // e4m3 output (per-tensor FC1): its scale
};

template <class TOut, Epilogue kEpi, Scaling kScaling>
__device__ __forceinline__ EpilogueConsts load_epilogue_consts(const GroupedGemmParams& p,
                                                               const TileCoord& tc, int c, int warp,
                                                               int lane) {
  EpilogueConsts ec;
  if constexpr (kScaling == Scaling::kPerTensor) {
    const RowScales alpha = tensor_alpha<kEpi>(p, tc.expert);
    ec.alpha_lo = alpha.lo;
    ec.alpha_hi = alpha.hi;
  }
  const float* bias = p.bias ? p.bias + static_cast<int64_t>(tc.expert) * p.n : nullptr;
  const int r0 = tc.m_tile * kBlockM + c * 64 + warp * 16 + lane / 4;  // weight row "lo"
  if constexpr (kEpi == Epilogue::kRoutingWeight) {
    ec.bias_lo = (bias && r0 < p.n) ? bias[r0] : 0.0f;
    ec.bias_hi = (bias && r0 + 8 < p.n) ? bias[r0 + 8] : 0.0f;
  } else {
    const int i = tc.m_tile * (kBlockM / 2) + c * 32 + warp * 8 + lane / 4;  // intermediate idx
    ec.bias_lo = (bias && i < p.n / 2) ? bias[r0] : 0.0f;
    ec.bias_hi = (bias && i < p.n / 2) ? bias[r0 + 8] : 0.0f;
    // (Block scaling's e4m3 output has per-group scales instead: store_quantized_group.)
    if constexpr (sizeof(TOut) == 1 && kScaling == Scaling::kPerTensor) {
      ec.out_scale = *p.out_scale;
    }
  }
  return ec;
}

// FC2: (D * alpha + bias) * routing weight.
__device__ __forceinline__ float routed_value(float d, float alpha, float bias, float w) {
  return (d * alpha + bias) * w;
}

// g * sigmoid(a g) = g / (1 + e^(-a g)) on the special-function unit: ex2.approx and
// rcp.approx (__expf, __fdividef; a few ulp of fp32, far below the bf16 / e4m3 rounding of
// the activations). The IEEE expf and division took ~20 instructions a value: ~19% of FC1's
// stall samples at Qwen3-30B-A3B 4096 tokens were this epilogue's (bench/NOTES.md, eleventh
// session). Large negative g: 1 + e^(-a g) is inf or above 2^126 and the quotient 0 (-0), the
// limit.
__device__ __forceinline__ float g_sigmoid(float g, float a) {
  return __fdividef(g, 1.0f + __expf(-a * g));
}

// FC1's activation of a gate and an up value (scaled and biased).
template <Epilogue kEpi>
__device__ __forceinline__ float glu(float g, float u, const GroupedGemmParams& p) {
  if constexpr (kEpi == Epilogue::kSwiGLU) {
    return g_sigmoid(g, 1.0f) * u;
  } else {
    g = fminf(g, p.oai_limit);
    u = fminf(fmaxf(u, -p.oai_limit), p.oai_limit);
    return (u + 1.0f) * g_sigmoid(g, p.oai_alpha);
  }
}

// FC1: act(gate, up) of the scaled, biased accumulators.
template <Epilogue kEpi>
__device__ __forceinline__ float glu_value(float d_gate, float d_up, const EpilogueConsts& ec,
                                           const GroupedGemmParams& p) {
  return glu<kEpi>(d_gate * ec.alpha_lo + ec.bias_lo, d_up * ec.alpha_hi + ec.bias_hi, p);
}

// The per-tensor intermediate: e4m3(h / s_d), bit for bit the CPU quantizer.
__device__ __forceinline__ uint8_t e4m3_value(float h, float out_scale) {
  return quant::device::float_to_e4m3(quant::device::div_rn(h, out_scale));
}

template <class T>
__device__ __forceinline__ uint16_t bits16(T v);
template <>
__device__ __forceinline__ uint16_t bits16<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat16_as_ushort(v);
}
template <>
__device__ __forceinline__ uint16_t bits16<__half>(__half v) {
  return __half_as_ushort(v);
}

// Two 16-bit outputs in one register, `lo` in the low half (stmatrix's column order).
template <class TOut>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  return static_cast<uint32_t>(bits16(from_float<TOut>(lo))) |
         (static_cast<uint32_t>(bits16(from_float<TOut>(hi))) << 16);
}

// MOE_GROUPED_DIRECT_EPILOGUE: each value stored from registers.
template <class TOut, int kBlockN, Epilogue kEpi>
__device__ __forceinline__ void store_tile_direct(const float (&acc)[kBlockN / 2],
                                                  const EpilogueConsts& ec,
                                                  const GroupedGemmParams& p, const TileCoord& tc,
                                                  int c, int warp, int lane, int count,
                                                  int row_base) {
  const int tok0 = tc.t_tile * kBlockN;
  TOut* out = static_cast<TOut*>(p.out);
  if constexpr (kEpi == Epilogue::kRoutingWeight) {
    const int r0 = tc.m_tile * kBlockM + c * 64 + warp * 16 + lane / 4;  // output features
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int col = j * 8 + (lane % 4) * 2 + q;
        if (tok0 + col >= count) continue;
        const int64_t row = row_base + col;
        const float w = p.row_weights ? p.row_weights[row] : 1.0f;
        if (r0 < p.n) {
          out[row * p.n + r0] =
              from_float<TOut>(routed_value(acc[j * 4 + q], ec.alpha_lo, ec.bias_lo, w));
        }
        if (r0 + 8 < p.n) {
          out[row * p.n + r0 + 8] =
              from_float<TOut>(routed_value(acc[j * 4 + 2 + q], ec.alpha_hi, ec.bias_hi, w));
        }
      }
    }
  } else {
    const int inter = p.n / 2;
    const int i = tc.m_tile * (kBlockM / 2) + c * 32 + warp * 8 + lane / 4;  // intermediate idx
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int col = j * 8 + (lane % 4) * 2 + q;
        if (tok0 + col >= count || i >= inter) continue;
        const float h = glu_value<kEpi>(acc[j * 4 + q], acc[j * 4 + 2 + q], ec, p);
        const int64_t idx = static_cast<int64_t>(row_base + col) * inter + i;
        if constexpr (sizeof(TOut) == 1) {
          reinterpret_cast<uint8_t*>(out)[idx] = e4m3_value(h, ec.out_scale);
        } else {
          out[idx] = from_float<TOut>(h);
        }
      }
    }
  }
}

// NOTE: gemm_heuristic.h's constexpr functions are host functions to nvcc: device code reads
// their values through these namespace-scope constants.
template <int kBlockN>
inline constexpr int kEpilogueSmemBytes = epilogue_smem_bytes(kBlockN, epilogue_rows(kBlockN));
// gemm_heuristic.h's host constexpr functions as constants the kernel can read.
template <int kBlockN, bool kTokensOnM>
inline constexpr int kConsumersOf = consumer_warpgroups(kBlockN, kTokensOnM);
template <int kBlockN, bool kTokensOnM>
inline constexpr int kThreadsOf = threads_for(kBlockN, kTokensOnM);
template <int kBlockN>
inline constexpr int kTokensOnMStagingBytes = tokens_on_m_staging_bytes(kBlockN);
template <int kBlockN>
inline constexpr bool kIsTokensOnMBlockN = is_tokens_on_m_block_n(kBlockN);
template <int kBlockN, bool kTokensOnM>
inline constexpr int kStageWeightTilesOf = weight_tiles_per_stage(kBlockN, kTokensOnM);

// One consumer warpgroup's share of the staged epilogue's shared memory.
template <int kBlockN>
struct StagingSmem {
  static constexpr int kRows = epilogue_rows(kBlockN);        // tokens per chunk
  static constexpr int kBufBytes = kRows * kStagingRowBytes;  // one chunk buffer
  static constexpr int kBytes = 2 * kBufBytes + kBlockN * 4;  // per warpgroup
  static_assert(2 * kBytes == epilogue_smem_bytes(kBlockN, kRows));
  static_assert(kRows % 8 == 0 && kBlockN % kRows == 0, "chunks of whole 8-token slices");
  uint8_t* chunks;     // [2][kRows][kStagingRowBytes]
  float* row_weights;  // [kBlockN] routing weights of the tile's tokens (FC2)
};

// FC2, when a tile starts: its routing weights to shared memory (cp.async; waited for by
// store_tile_staged). Thread t of the warpgroup copies tokens t, t + 128.
template <int kBlockN>
__device__ __forceinline__ void prefetch_row_weights(const GroupedGemmParams& p,
                                                     const StagingSmem<kBlockN>& sm, int row_base,
                                                     int tile_rows, int t) {
  if (!p.row_weights) return;
#pragma unroll
  for (int r = t; r < kBlockN; r += 128) {
    if (r < tile_rows) sm90::cp_async_4(sm.row_weights + r, p.row_weights + row_base + r);
  }
}

// The staged epilogue of one tile (step 4): chunk by chunk, registers -> shared memory
// [kRows tokens][features] -> whole token rows to global memory with 16-byte stores. `buf`
// (the warpgroup's next chunk buffer) carries over from tile to tile.
// NOTE: every chunk writes buffer buf, then bar.sync(1 + c, 128), then reads it; the next
// chunk writes the other buffer, whose reads (two chunks back) all came before that barrier.
// The tile's last barrier also comes after its last read of the routing weights, so the next
// tile's cp.async may overwrite them.
template <class TOut, int kBlockN, Epilogue kEpi>
__device__ __forceinline__ void store_tile_staged(const float (&acc)[kBlockN / 2],
                                                  const EpilogueConsts& ec,
                                                  const GroupedGemmParams& p, const TileCoord& tc,
                                                  const StagingSmem<kBlockN>& sm, int c, int warp,
                                                  int lane, int tile_rows, int row_base, int& buf) {
  using Smem = StagingSmem<kBlockN>;
  constexpr bool kFc2 = kEpi == Epilogue::kRoutingWeight;
  constexpr bool kBytes = sizeof(TOut) == 1;
  static_assert(!(kFc2 && kBytes), "FC2 writes 16-bit outputs");
  constexpr int kRows = Smem::kRows;
  constexpr int kChunks = kBlockN / kRows;
  constexpr int kFeatures = kFc2 ? 64 : 32;  // per warpgroup
  constexpr int kRowBytes = kFeatures * static_cast<int>(sizeof(TOut));
  constexpr int kStride = kRowBytes + 16;  // bank-conflict-free stmatrix rows
  static_assert(kStride <= kStagingRowBytes);
  constexpr int kVec = 16 / static_cast<int>(sizeof(TOut));   // elements per 16-byte store
  constexpr int kPieces = kRowBytes / 16;                     // 16-byte pieces per token row
  constexpr int kPerThread = ceil_div(kRows * kPieces, 128);  // pieces per thread per chunk
  constexpr int kTokStep = 128 / kPieces;                     // tokens between one thread's pieces
  const int t = warp * 32 + lane;                             // thread in the warpgroup
  const int ld = kFc2 ? p.n : p.n / 2;
  const int feat0 = kFc2 ? tc.m_tile * kBlockM + c * 64 : tc.m_tile * (kBlockM / 2) + c * 32;
  // NOTE: uniform over the CTA (so are the barriers below).
  const bool vec_ok = ld % kVec == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  const int num_chunks = ceil_div(tile_rows, kRows);
  TOut* out = static_cast<TOut*>(p.out) + static_cast<int64_t>(row_base) * ld + feat0;
  // Thread t copies piece t % kPieces of tokens t / kPieces + i * kTokStep of each chunk:
  // consecutive threads, consecutive 16-byte pieces of a token row.
  const int tok_t = t / kPieces;
  const int piece_t = t % kPieces;
  const bool piece_ok = feat0 + piece_t * kVec < ld;  // features past n are not written
  TOut* out_t = out + static_cast<int64_t>(tok_t) * ld + piece_t * kVec;
  const int src_t = tok_t * kStride + piece_t * 16;

  if constexpr (kFc2) {
    if (p.row_weights) {
      sm90::cp_async_wait_all();
      sm90::named_barrier_sync<128>(1 + c);
    }
  }

  // Chunk ch's values into buffer dst: [kRows tokens][kStride bytes].
  auto stage = [&](int ch, uint8_t* dst) {
    if constexpr (kBytes) {
#pragma unroll
      for (int jl = 0; jl < kRows / 8; ++jl) {
        const int j = ch * (kRows / 8) + jl;
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const float h = glu_value<kEpi>(acc[j * 4 + q], acc[j * 4 + 2 + q], ec, p);
          sm90::st_shared_u8(dst + (jl * 8 + (lane % 4) * 2 + q) * kStride + warp * 8 + lane / 4,
                             e4m3_value(h, ec.out_scale));
        }
      }
    } else {
      // 8x8 matrices (features x tokens) of the warp: FC2 two per 8 tokens (rows lo, hi),
      // FC1 one; stored transposed, 4 at a time.
      constexpr int kPerJ = kFc2 ? 2 : 1;
      constexpr int kMats = kRows / 8 * kPerJ;
      constexpr int kGroup = kMats < 4 ? kMats : 4;
#pragma unroll
      for (int m0 = 0; m0 < kMats; m0 += kGroup) {
        uint32_t r[kGroup];
        float2 w = make_float2(1.0f, 1.0f);  // FC2: routing weights of the two token columns
#pragma unroll
        for (int mi = 0; mi < kGroup; ++mi) {
          const int j = ch * (kRows / 8) + (m0 + mi) / kPerJ;
          const int h = (m0 + mi) % kPerJ;
          if constexpr (kFc2) {
            if (h == 0 && p.row_weights) {
              w = sm90::ld_shared_f2(sm.row_weights + j * 8 + (lane % 4) * 2);
            }
            const float alpha = h == 0 ? ec.alpha_lo : ec.alpha_hi;
            const float bias = h == 0 ? ec.bias_lo : ec.bias_hi;
            r[mi] = pack2<TOut>(routed_value(acc[j * 4 + 2 * h], alpha, bias, w.x),
                                routed_value(acc[j * 4 + 2 * h + 1], alpha, bias, w.y));
          } else {
            r[mi] = pack2<TOut>(glu_value<kEpi>(acc[j * 4], acc[j * 4 + 2], ec, p),
                                glu_value<kEpi>(acc[j * 4 + 1], acc[j * 4 + 3], ec, p));
          }
        }
        // Lane l addresses stored row l % 8 (a token) of matrix m0 + (l / 8) % kGroup.
        const int m = m0 + (lane / 8) % kGroup;
        const int tok = (m / kPerJ) * 8 + lane % 8;
        const int feature = warp * 8 * kPerJ + (m % kPerJ) * 8;
        sm90::stmatrix_trans<kGroup>(dst + tok * kStride + feature * 2, r);
      }
    }
  };

  stage(0, sm.chunks + buf * Smem::kBufBytes);
  sm90::named_barrier_sync<128>(1 + c);
#pragma unroll
  for (int ch = 0; ch < kChunks; ++ch) {
    if (ch >= num_chunks) break;
    const uint8_t* src = sm.chunks + buf * Smem::kBufBytes;
    const int rows = min(kRows, tile_rows - ch * kRows);  // tokens of the chunk to store
    TOut* dst = out + static_cast<int64_t>(ch * kRows) * ld;
    // The chunk's stores wait until the next chunk is staged (the shared loads' latency hides
    // under it).
    uint4 v[kPerThread];
    bool ok[kPerThread];
    if (vec_ok) {
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        ok[i] = piece_ok && tok_t + i * kTokStep < rows;
        if (ok[i]) v[i] = sm90::ld_shared_v4(src + src_t + i * kTokStep * kStride);
      }
    } else {
      // A row not 16-byte aligned: element by element.
      for (int idx = t; idx < kRows * kFeatures; idx += 128) {
        const int tok = idx / kFeatures, f = idx % kFeatures;
        if (tok < rows && feat0 + f < ld) {
          dst[static_cast<int64_t>(tok) * ld + f] =
              *reinterpret_cast<const TOut*>(src + tok * kStride + f * sizeof(TOut));
        }
      }
    }
    buf ^= 1;
    if (ch + 1 < kChunks && ch + 1 < num_chunks) stage(ch + 1, sm.chunks + buf * Smem::kBufBytes);
    if (vec_ok) {
      TOut* dst_t = out_t + static_cast<int64_t>(ch * kRows) * ld;
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        if (ok[i]) {
          *reinterpret_cast<uint4*>(dst_t + static_cast<int64_t>(i * kTokStep) * ld) = v[i];
        }
      }
    }
    if (ch + 1 < num_chunks) sm90::named_barrier_sync<128>(1 + c);
  }
}

// A warp's staged 16 token rows of 128 bytes (buffer rows kWarpStagingStride apart) to `out`
// (row stride ld elements of T), the first `rows` rows and `cols` elements of each: consecutive
// lanes store consecutive 16-byte pieces of a row (lane l: piece l % 8 of rows 4i + l / 8), or
// element by element where the rows are not 16-byte aligned (!vec_ok).
template <class T>
__device__ __forceinline__ void copy_out_rows(const uint8_t* buf, T* out, int64_t ld, int rows,
                                              int cols, bool vec_ok, int lane) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  constexpr int kElems = 128 / static_cast<int>(sizeof(T));
  if (vec_ok) {
    const int piece = lane % 8;
    if (piece * kVec < cols) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = 4 * i + lane / 8;
        if (row < rows) {
          *reinterpret_cast<uint4*>(out + row * ld + piece * kVec) =
              sm90::ld_shared_v4(buf + row * kWarpStagingStride + piece * 16);
        }
      }
    }
  } else {
    for (int idx = lane; idx < 16 * kElems; idx += 32) {
      const int row = idx / kElems, f = idx % kElems;
      if (row < rows && f < cols) {
        out[row * ld + f] =
            *reinterpret_cast<const T*>(buf + row * kWarpStagingStride + f * sizeof(T));
      }
    }
  }
}

// FC1 on the tokens-on-N tile, block-scaled, its output quantized (TOut e4m3): the unit's
// activations of one finished weight tile, rounded to bf16 as the unfused path stores them --
// h[j * 2 + q] for token column j * 8 + (lane % 4) * 2 + q and intermediate feature
// c * 32 + warp * 8 + lane / 4 of the tile (zero past n: TMA's zero fill, no bias there).
template <int kBlockN, Epilogue kEpi>
__device__ __forceinline__ void tile_act_bf16(const float (&acc)[kBlockN / 2],
                                              const EpilogueConsts& ec, const GroupedGemmParams& p,
                                              float (&h)[kBlockN / 4]) {
#pragma unroll
  for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      h[j * 2 + q] = __bfloat162float(
          __float2bfloat16_rn(glu_value<kEpi>(acc[j * 4 + q], acc[j * 4 + 2 + q], ec, p)));
    }
  }
}

/// Shared memory of store_quantized_group (the staging's: static_assert in the kernel): the 8
/// consumer warps' amax per token, each token's (scale, reciprocal), its 128 codes (rows
/// kWarpStagingStride apart, as copy_out_rows reads them).
template <int kBlockN>
inline constexpr int kQuantGroupSmemBytes = kBlockN*(8 * 4 + 8 + kWarpStagingStride);
/// The named barrier of the two consumer warpgroups (the staged epilogue's are 1 and 2).
inline constexpr int kQuantGroupBarrier = 3;

// FC1 on the tokens-on-N tile with its output quantized (block scaling, TOut e4m3; decode and
// small batches, where the unfused path's 1x128 kernel is a wave of blocks between FC1 and FC2):
// a unit is a token tile against two adjacent weight tiles -- one 1x128 group of the
// intermediate for each token -- both computed by the CTA's two consumer warpgroups, one after
// the other. h0 / h1: the thread's activations of the first / second tile (tile_act_bf16; h1
// zero where there is no second tile). Bit for bit quant::launch_fp8_quantize_1x128 on the bf16
// activations: per token column, the amax of the 8 lanes holding it (shuffles), then of the 8
// consumer warps (shared memory); thread t < kBlockN of the 256 forms token t's scale and its
// divisor and writes the scale to out_scales [group][row] (FC2's layout); every thread encodes
// its 2 x kBlockN / 4 values into the tokens' 128-byte code rows in shared memory, and each warp
// stores 16 of the rows inside the expert (copy_out_rows; features past n / 2 not written).
// NOTE: three barriers of the 256 consumer threads. The next unit's first shared writes (red)
// come after its first barrier, which every thread reaches only after this unit's last reads.
template <int kBlockN>
__device__ __forceinline__ void store_quantized_group(const float (&h0)[kBlockN / 4],
                                                      const float (&h1)[kBlockN / 4],
                                                      const GroupedGemmParams& p, int group,
                                                      uint8_t* smem, int c, int warp, int lane,
                                                      int tile_rows, int row_base) {
  static_assert(kBlockN <= 8 * 16, "each of the 8 consumer warps stores 16 tokens");
  constexpr int kCols = kBlockN / 4;
  constexpr int kStride = kWarpStagingStride;
  float* red = reinterpret_cast<float*>(smem);                       // [8][kBlockN]
  float2* divs = reinterpret_cast<float2*>(smem + 8 * kBlockN * 4);  // [kBlockN]
  uint8_t* codes = smem + 8 * kBlockN * 4 + kBlockN * 8;             // [kBlockN][kStride]
  const int t = c * 128 + warp * 32 + lane;  // the thread among the 256 consumers
  float amax[kCols];
#pragma unroll
  for (int i = 0; i < kCols; ++i) {
    amax[i] = fmaxf(fabsf(h0[i]), fabsf(h1[i]));
#pragma unroll
    for (int off = 4; off < 32; off *= 2) {
      amax[i] = fmaxf(amax[i], __shfl_xor_sync(0xFFFFFFFFu, amax[i], off));
    }
  }
  if (lane < 4) {
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
      *reinterpret_cast<float2*>(red + (c * 4 + warp) * kBlockN + j * 8 + lane * 2) =
          make_float2(amax[j * 2], amax[j * 2 + 1]);
    }
  }
  sm90::named_barrier_sync<256>(kQuantGroupBarrier);
  if (t < kBlockN) {
    float a = red[t];
#pragma unroll
    for (int w = 1; w < 8; ++w) a = fmaxf(a, red[w * kBlockN + t]);
    const float sc = quant::device::fp8_group_scale(a, /*pow2_scale=*/false);
    const quant::device::GroupDivisor d = quant::device::group_divisor(sc);
    divs[t] = make_float2(d.s, d.r);
    if (t < tile_rows)
      p.out_scales[static_cast<int64_t>(group) * p.out_scales_ld + row_base + t] = sc;
  }
  sm90::named_barrier_sync<256>(kQuantGroupBarrier);
  const int f = c * 32 + warp * 8 + lane / 4;  // the thread's feature in the first tile's half
#pragma unroll
  for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const int col = j * 8 + (lane % 4) * 2 + q;
      const float2 dv = divs[col];
      const quant::device::GroupDivisor d{dv.x, dv.y};
      uint8_t* row = codes + col * kStride + f;
      sm90::st_shared_u8(row,
                         quant::device::float_to_e4m3(quant::device::divide(h0[j * 2 + q], d)));
      sm90::st_shared_u8(row + 64,
                         quant::device::float_to_e4m3(quant::device::divide(h1[j * 2 + q], d)));
    }
  }
  sm90::named_barrier_sync<256>(kQuantGroupBarrier);
  // Warp w of the 8 stores tokens 16w .. 16w + 15 (the rows inside the expert; features past
  // n / 2 not written).
  const int ld = p.n / 2;
  const int f0 = group * 128;
  const int tok0 = (c * 4 + warp) * 16;
  if (tok0 < tile_rows) {
    // NOTE: uniform over the CTA.
    const bool vec_ok = ld % 16 == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
    copy_out_rows(codes + tok0 * kStride,
                  static_cast<uint8_t*>(p.out) + static_cast<int64_t>(row_base + tok0) * ld + f0,
                  ld, min(16, tile_rows - tok0), ld - f0, vec_ok, lane);
  }
}

// ---- Tokens on wgmma's M side (kTokensOnM: e4m3, 128 or 192 tokens x 128) ---------------------
// Consumer warpgroup c computes tokens c*64 .. c*64 + 63 of the tile against all 128 weight rows
// (wgmma A = the token tile, B = the weight tile): thread (warp w, lane l) holds token rows
// w*16 + l/4 ("lo") and + 8 ("hi") of its 64, for weight rows j*8 + (l%4)*2 + {0, 1}. Each warp
// owns 16 whole token rows, so its epilogue needs no other warp; its staging buffer
// (kWarpStagingBytes, gemm_heuristic.h) holds 16 token rows of 128 bytes.

// FC1, tokens on M: the thread's 32 activations act(gate, up) of a finished tile, h[r * 16 +
// b * 2 + q] for token row r (0: lo, 1: hi) and intermediate feature b * 8 + (lane % 4) * 2 + q of
// the tile (gate / up column groups 2b, 2b + 1).
template <Epilogue kEpi>
__device__ __forceinline__ void tile_glu(const float (&acc)[64], const GroupedGemmParams& p,
                                         int expert, int m_tile, int lane, float (&h)[32]) {
  const int w_rows = p.n - m_tile * kBlockM;  // weight rows of the tile inside n
  const float* bias =
      p.bias ? p.bias + static_cast<int64_t>(expert) * p.n + m_tile * kBlockM : nullptr;
  const int q2 = (lane % 4) * 2;
  auto fill = [&](auto&& bias_at) {
#pragma unroll
    for (int b = 0; b < 8; ++b) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int jg = 2 * b, ju = 2 * b + 1;
          h[r * 16 + b * 2 + q] = glu<kEpi>(acc[jg * 4 + 2 * r + q] + bias_at(jg * 8 + q2 + q),
                                            acc[ju * 4 + 2 * r + q] + bias_at(ju * 8 + q2 + q), p);
        }
      }
    }
  };
  // NOTE: a uniform branch, not a predicate per column: without expert biases (most models)
  // the 32 predicated loads and their address arithmetic cost issue slots all the same (ncu
  // SASS view, bench/NOTES.md eleventh session). The + 0.0f stays (-0 -> +0, as before).
  if (bias == nullptr) {
    fill([](int) { return 0.0f; });
  } else {
    fill([&](int col) { return col < w_rows ? __ldg(bias + col) : 0.0f; });
  }
}

// Per-tensor, tokens on M (kTensorOnM): a weight tile's totals times the expert's alpha
// (tensor_alpha), column group j of 8 weight rows -- FC1: j = 2b gate, 2b + 1 up.
template <Epilogue kEpi>
__device__ __forceinline__ void scale_by_alpha(float (&t)[64], RowScales alpha) {
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    const float a = kEpi != Epilogue::kRoutingWeight && j % 2 == 1 ? alpha.hi : alpha.lo;
#pragma unroll
    for (int q = 0; q < 4; ++q) t[j * 4 + q] *= a;
  }
}

// FC2: the bias of the thread's 16 columns of half `half` of a weight tile (column group jl of
// the half, q: bv[jl * 2 + q]; zero past the tile's `w_rows` rows inside n), loaded under a
// uniform branch (see tile_glu).
__device__ __forceinline__ void fc2_half_bias(const float* bias, int half, int w_rows, int q2,
                                              float (&bv)[16]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) bv[i] = 0.0f;
  if (bias != nullptr) {
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const int col = (half * 8 + i / 2) * 8 + q2 + i % 2;
      if (col < w_rows) bv[i] = __ldg(bias + col);
    }
  }
}

// FC2: stmatrix group g of half `half` of a weight tile's accumulators -- of the 16 matrices
// (token rows lo / hi x 8 column groups of the half), four per stmatrix, group g holds (lo, 2g),
// (hi, 2g), (lo, 2g + 1), (hi, 2g + 1) -- as (acc + bias) * the rows' routing weights, packed.
template <class TOut>
__device__ __forceinline__ void fc2_pack_group(const float (&acc)[64], const float (&bv)[16],
                                               int half, int g, float rw_lo, float rw_hi,
                                               uint32_t (&r)[4]) {
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
    const int jl = 2 * g + mi / 2;  // column group within the half
    const int hr = mi % 2;          // 0: rows lo, 1: rows hi
    const int j = half * 8 + jl;
    const float w = hr == 0 ? rw_lo : rw_hi;
    r[mi] = pack2<TOut>((acc[j * 4 + 2 * hr] + bv[jl * 2]) * w,
                        (acc[j * 4 + 2 * hr + 1] + bv[jl * 2 + 1]) * w);
  }
}

// The epilogue of one warp's 16 token rows (`warp_tok0` .. + 15 of the tile): FC2 writes the
// tile's 128 output features in two halves of 64, FC1 the 64 intermediate features of its
// gate / up pairs (weight rows 16b .. 16b + 7 gate, 16b + 8 .. 16b + 15 up: groups j = 2b and
// 2b + 1, both in the thread). Per half: registers -> stmatrix into the warp's buffer [16 tokens]
// [64 features] -> consecutive lanes store consecutive 16-byte pieces of a token row.
// NOTE: __syncwarp orders the warp's shared writes before its reads and the reads before the
// next half's writes.
template <class TOut, Epilogue kEpi>
__device__ __forceinline__ void store_tile_tokens_on_m(const float (&acc)[64],
                                                       const GroupedGemmParams& p,
                                                       const TileCoord& tc, uint8_t* buf,
                                                       int warp_tok0, int lane, int tile_rows,
                                                       int row_base, float rw_lo, float rw_hi) {
  static_assert(sizeof(TOut) == 2, "block-scaled e4m3 writes 16-bit outputs");
  constexpr bool kFc2 = kEpi == Epilogue::kRoutingWeight;
  const int rows = min(16, tile_rows - warp_tok0);  // the warp's token rows to store
  if (rows <= 0) return;
  const int ld = kFc2 ? p.n : p.n / 2;
  const int feat0 = kFc2 ? tc.m_tile * kBlockM : tc.m_tile * (kBlockM / 2);
  const int w_rows = p.n - tc.m_tile * kBlockM;  // weight rows of the tile inside n
  const float* bias =
      p.bias ? p.bias + static_cast<int64_t>(tc.expert) * p.n + tc.m_tile * kBlockM : nullptr;
  float h[kFc2 ? 1 : 32];  // FC1: the activations (tile_glu)
  if constexpr (!kFc2) tile_glu<kEpi>(acc, p, tc.expert, tc.m_tile, lane, h);
  // NOTE: uniform over the warp.
  const bool vec_ok = ld % 8 == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  TOut* out = static_cast<TOut*>(p.out) + static_cast<int64_t>(row_base + warp_tok0) * ld + feat0;
  const int q2 = (lane % 4) * 2;  // the thread's first column within a group of 8
#pragma unroll
  for (int half = 0; half < (kFc2 ? 2 : 1); ++half) {
    float bv[16];  // FC2: the half's bias
    if constexpr (kFc2) {
      fc2_half_bias(bias, half, w_rows, q2, bv);
    }
    // 16 matrices (token rows lo / hi x 8 column groups of the half), four per stmatrix: group g
    // holds (lo, 2g), (hi, 2g), (lo, 2g + 1), (hi, 2g + 1).
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      uint32_t r[4];
      if constexpr (kFc2) {
        fc2_pack_group<TOut>(acc, bv, half, g, rw_lo, rw_hi, r);
      } else {
#pragma unroll
        for (int mi = 0; mi < 4; ++mi) {
          const int jl = 2 * g + mi / 2, hr = mi % 2;
          r[mi] = pack2<TOut>(h[hr * 16 + jl * 2], h[hr * 16 + jl * 2 + 1]);
        }
      }
      const int m = lane / 8;  // the matrix whose row lane % 8 this lane addresses
      sm90::stmatrix_x4(buf + ((m % 2) * 8 + lane % 8) * kWarpStagingStride + (2 * g + m / 2) * 16,
                        r);
    }
    __syncwarp();
    copy_out_rows(buf, out + half * 64, ld, rows, ld - (feat0 + half * 64), vec_ok, lane);
    __syncwarp();
  }
}

// FC2 on the paired tile with its output staged whole (kUnitOut): the warp's 16 token rows
// (`warp_tok0` .. + 15 of the unit, whose first row is y's row `row_base`) of both weight tiles'
// totals, biased and times the rows' routing weights, as bf16 into `staging` [128 rows][256
// features] in y's blocked layout (y_block_offset: row r's 16-byte pieces permuted by
// (row_base + r) % 8), then handed to the store warp (store_unit_out). Waits first until the
// store warp's copy has read the previous unit out of the staging (y_empty; `parity`: the
// units staged before this one, mod 2 -- the first passes at once).
// NOTE: each thread's stmatrix writes are made visible to the bulk copy's async proxy
// (fence.proxy.async) before its warp arrives on y_full.
template <class TOut>
__device__ __forceinline__ void stage_unit_out(const float (&t0)[64], const float (&t1)[64],
                                               bool has_second, const GroupedGemmParams& p,
                                               const TileCoord& tc, uint8_t* staging, int row_base,
                                               int warp_tok0, int lane, float rw_lo, float rw_hi,
                                               uint64_t* y_full, uint64_t* y_empty,
                                               uint32_t parity) {
  const int q2 = (lane % 4) * 2;
  const int m = lane / 8;  // the matrix whose row lane % 8 this lane addresses
  const int r = warp_tok0 + (m % 2) * 8 + lane % 8;  // that row, within the unit
  uint8_t* row = staging + r * kUnitOutStride;
  const int swz = (row_base + r) & 7;  // y_block_offset's permutation of the row's pieces
  sm90::mbar_wait(y_empty, parity ^ 1);
  auto stage_tile = [&](const float(&t)[64], int tile) {
    const int m_tile = tc.m_tile + tile;
    const int w_rows = p.n - m_tile * kBlockM;  // weight rows of the tile inside n
    const float* bias =
        p.bias ? p.bias + static_cast<int64_t>(tc.expert) * p.n + m_tile * kBlockM : nullptr;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float bv[16];
      fc2_half_bias(bias, half, w_rows, q2, bv);
      // Group g of the half (fc2_pack_group): this lane addresses piece tile * 16 + half * 8 +
      // 2g + m / 2 of its row.
#pragma unroll
      for (int g = 0; g < 4; ++g) {
        uint32_t v[4];
        fc2_pack_group<TOut>(t, bv, half, g, rw_lo, rw_hi, v);
        sm90::stmatrix_x4(row + (tile * 16 + half * 8 + ((2 * g + m / 2) ^ swz)) * 16, v);
      }
    }
  };
  stage_tile(t0, 0);
  if (has_second) stage_tile(t1, 1);
  sm90::fence_proxy_async_shared();
  __syncwarp();
  if (lane == 0) sm90::mbar_arrive(y_full);
}

// The store warp of kUnitOut (warp 1 of the producer warpgroup): for each of the CTA's units, in
// the consumers' order, waits for the staged unit (y_full), copies its rows inside the expert's
// rows to y's blocked layout (p.out_scales_ld block rows: one contiguous run) in one bulk copy
// issued by lane 0, waits until the copy has read the staging and releases it (y_empty).
// Before exiting, waits for its copies' writes. (Features of the unit past n are staged and
// copied too: they stay inside the last 256-wide block, which the finalize reads only below n.)
template <class TOut, int kBlockN>
__device__ __forceinline__ void store_unit_out(const GroupedGemmParams& p, int total_tiles,
                                               const int* tile_prefix, const int* row_offsets,
                                               int m_tiles, const uint8_t* staging,
                                               uint64_t* y_full, uint64_t* y_empty) {
  if (threadIdx.x % 32 != 0) return;
  uint32_t parity = 0;
  for (int tile = first_unit<1>(); tile < total_tiles; tile += unit_stride<1>()) {
    const TileCoord tc =
        decode_tile<kBlockN, 2>(tile, tile_prefix, row_offsets, p.num_experts, m_tiles);
    const int count = row_offsets[tc.expert + 1] - row_offsets[tc.expert];
    const int rows = min(kBlockN, count - tc.t_tile * kBlockN);
    const int row_base = row_offsets[tc.expert] + tc.t_tile * kBlockN;
    // Row row_base of block m_tile / 2 (a unit's pair starts at an even weight tile).
    TOut* out = static_cast<TOut*>(p.out) +
                (static_cast<int64_t>(tc.m_tile / 2) * p.out_scales_ld + row_base) * (2 * kBlockM);
    sm90::mbar_wait(y_full, parity);
    sm90::bulk_copy_s2g(out, staging, static_cast<uint32_t>(rows) * kUnitOutStride);
    sm90::bulk_commit();
    sm90::bulk_wait_read_all();
    sm90::mbar_arrive(y_empty);
    parity ^= 1;
  }
  sm90::bulk_wait_all();
}

// The first weight tile's activations of a quantized FC1 unit (tile_glu's h, as bf16 pairs),
// parked in the warp's staging buffer until the second tile is done (not held in registers
// across its main loop): pair i = r * 8 + b of the thread at its own place, token row r * 8 +
// lane / 4, features b * 8 + (lane % 4) * 2 + {0, 1} (4-byte stores, rows 36 words apart:
// the 8 rows of a warp's store hit distinct banks). store_quantized_pair reads them back.
__device__ __forceinline__ int parked_pair_offset(int i, int lane) {
  return ((i / 8) * 8 + lane / 4) * kWarpStagingStride + ((i % 8) * 8 + (lane % 4) * 2) * 2;
}

__device__ __forceinline__ void park_first_tile(const float (&h)[32], uint8_t* buf, int lane) {
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    sm90::st_shared_u32(buf + parked_pair_offset(i, lane),
                        pack2<__nv_bfloat16>(h[2 * i], h[2 * i + 1]));
  }
}

// Where a quantized FC1 unit stages the two codes of features t * 64 + bb * 8 + (lane % 4) * 2
// + {0, 1} (t: the unit's weight tile) of token row r * 8 + lane / 4 in a warp's staging rows.
__device__ __forceinline__ int staged_code_offset(int r, int t, int bb, int lane) {
  return (r * 8 + lane / 4) * kWarpStagingStride + t * 64 + bb * 8 + (lane % 4) * 2;
}

// The warp's `rows` token rows of one 128-wide group's codes, staged in `buf` (16-byte rows of
// the warp's staging), to the e4m3 intermediate [rows, n / 2] from row `row0`.
__device__ __forceinline__ void copy_out_group_codes(const uint8_t* buf, const GroupedGemmParams& p,
                                                     int group, int row0, int rows, int lane) {
  const int ld = p.n / 2;
  const int f0 = group * 128;
  uint8_t* out = static_cast<uint8_t*>(p.out) + static_cast<int64_t>(row0) * ld + f0;
  // NOTE: uniform over the warp.
  const bool vec_ok = ld % 16 == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  copy_out_rows(buf, out, ld, rows, ld - f0, vec_ok, lane);
}

// FC1 with its output quantized (block scaling, tokens on M, TOut e4m3): the 1x128 groups of
// the intermediate, bit for bit quant::launch_fp8_quantize_1x128 on the bf16 activations
// (s = max(amax, 1e-4) / 448, e4m3(h / s)). A group is the activations of two weight tiles
// (64 features each), computed one after the other by the same warps: the first's are parked
// in `buf` (park_first_tile), `b` holds the second's (zero past n). Per token row the quad of
// lanes holding it reduces the amax; the codes go through the warp's staging buffer to 16-byte
// row stores, the scales to out_scales [group][row] (FC2's layout).
template <Epilogue kEpi>
__device__ __forceinline__ void store_quantized_pair(const float (&b)[32],
                                                     const GroupedGemmParams& p, int group,
                                                     uint8_t* buf, int warp_tok0, int lane,
                                                     int tile_rows, int row_base) {
  const int rows = min(16, tile_rows - warp_tok0);  // the warp's token rows to store
  if (rows <= 0) return;
  float v[2][32];  // [tile][r * 16 + b * 2 + q], rounded to bf16 as the unfused path stores them
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const uint32_t a = sm90::ld_shared_u32(buf + parked_pair_offset(i, lane));
    v[0][2 * i] = __uint_as_float(a << 16);
    v[0][2 * i + 1] = __uint_as_float(a & 0xFFFF0000u);
    v[1][2 * i] = __bfloat162float(__float2bfloat16_rn(b[2 * i]));
    v[1][2 * i + 1] = __bfloat162float(__float2bfloat16_rn(b[2 * i + 1]));
  }
  __syncwarp();  // every lane's parked pairs read before the codes overwrite the buffer
  float amax[2] = {0.0f, 0.0f};  // rows lo, hi
#pragma unroll
  for (int t = 0; t < 2; ++t) {
#pragma unroll
    for (int i = 0; i < 32; ++i) amax[i / 16] = fmaxf(amax[i / 16], fabsf(v[t][i]));
  }
  float sc[2];
  quant::device::GroupDivisor div[2];  // v are bf16 values: GroupDivisor's domain
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    amax[r] = fmaxf(amax[r], __shfl_xor_sync(0xFFFFFFFFu, amax[r], 1));
    amax[r] = fmaxf(amax[r], __shfl_xor_sync(0xFFFFFFFFu, amax[r], 2));
    sc[r] = quant::device::fp8_group_scale(amax[r], /*pow2_scale=*/false);
    div[r] = quant::device::group_divisor(sc[r]);
  }
  // Codes of feature t * 64 + b * 8 + (lane % 4) * 2 + {0, 1} of token row r * 8 + lane / 4.
#pragma unroll
  for (int t = 0; t < 2; ++t) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
#pragma unroll
      for (int bb = 0; bb < 8; ++bb) {
        const uint32_t c0 =
            quant::device::float_to_e4m3(quant::device::divide(v[t][r * 16 + bb * 2], div[r]));
        const uint32_t c1 =
            quant::device::float_to_e4m3(quant::device::divide(v[t][r * 16 + bb * 2 + 1], div[r]));
        sm90::st_shared_u16(buf + staged_code_offset(r, t, bb, lane),
                            static_cast<uint16_t>(c0 | (c1 << 8)));
      }
    }
  }
  __syncwarp();
  copy_out_group_codes(buf, p, group, row_base + warp_tok0, rows, lane);
  if (lane % 4 == 0) {
    float* scales = p.out_scales + static_cast<int64_t>(group) * p.out_scales_ld + row_base +
                    warp_tok0 + lane / 4;
    if (lane / 4 < rows) scales[0] = sc[0];
    if (lane / 4 + 8 < rows) scales[8] = sc[1];
  }
  __syncwarp();
}

// FC1 with its output quantized at a static scale (kStaticOut: fp8_per_tensor's prefill, tokens
// on M): e4m3(h / *p.out_scale) of the fp32 activations, the
// per-tensor epilogue's e4m3_value (div_rn, as the CPU quantizer). No amax couples the unit's two
// weight tiles, so each tile's codes go to its 64 columns of the warp's staging rows as soon as
// it is done (t = 0: the first tile, instead of parking its activations), in
// store_quantized_pair's layout; store_static_pair adds the second's and writes the rows out.
__device__ __forceinline__ void encode_tile_static(const float (&h)[32], float s, uint8_t* buf,
                                                   int t, int lane) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int bb = 0; bb < 8; ++bb) {
      const uint32_t c0 = e4m3_value(h[r * 16 + bb * 2], s);
      const uint32_t c1 = e4m3_value(h[r * 16 + bb * 2 + 1], s);
      sm90::st_shared_u16(buf + staged_code_offset(r, t, bb, lane),
                          static_cast<uint16_t>(c0 | (c1 << 8)));
    }
  }
}

__device__ __forceinline__ void store_static_pair(const float (&b)[32], const GroupedGemmParams& p,
                                                  int group, uint8_t* buf, int warp_tok0, int lane,
                                                  int tile_rows, int row_base) {
  const int rows = min(16, tile_rows - warp_tok0);  // the warp's token rows to store
  if (rows <= 0) return;
  encode_tile_static(b, __ldg(p.out_scale), buf, 1, lane);
  __syncwarp();
  copy_out_group_codes(buf, p, group, row_base + warp_tok0, rows, lane);
  __syncwarp();
}

// kCluster == 2 (opt-in, MOE_GROUPED_CLUSTER=2; grouped_gemm_launch.cuh): 2-CTA clusters whose
// CTAs compute one token tile of one expert against two adjacent weight tiles (decode_tile),
// the token tile (X) loaded once for both: as DeepGEMM's sm90 kernels with TMA multicast
// (docs/notes/sm90-tma-multicast.md). Per K block, L2 serves a cluster 2 x 16 KB of W and X
// once: 16 KB + half of X per CTA instead of 16 KB + all of X (each SM still receives both).
//   - Each CTA's producer loads its own W tile (and, kBlock, its own copy of the token scales:
//     <= 0.8 KB, not worth a cross-CTA dependency); rank 0 alone loads the X box with TMA
//     multicast into the same stage of both CTAs (the box is the caller's x_map's, so X is not
//     split between the ranks). Each producer expects on its own full[s] every byte that lands
//     in its CTA (its W and scales + all of X), with no handshake: a peer's complete_tx that
//     comes before the local expect_tx leaves the phase pending on the local arrival.
//   - empty[s] counts both CTAs' consumers (2 x 8 warps for kBlock, 2 x 2 warpgroups else):
//     each releasing warp (warpgroup) arrives on its own CTA's empty[s] and, through mapa, on
//     the peer's, at the place where today's kernel releases the stage. So a stage is refilled
//     (W locally, X by the multicast) only once both CTAs have finished reading it. Producers
//     wait on their local empty[s] only; there is no cluster barrier in the loop.
//   - Rank 1 of a pair without a second weight tile (odd m_tiles, last pair) still takes the
//     stages (X lands there too): its producer expects X only, its consumers wait on full[s]
//     and release both CTAs' empty[s], with no wgmma and no epilogue.
//   - Start: barriers initialised and fenced (fence.mbarrier_init.release.cluster), then a
//     cluster barrier (all threads) before the first TMA or remote arrive. End: the producer
//     waits until every stage it filled was released by both CTAs (as CUTLASS's producer_tail),
//     then every thread of both CTAs meets at a cluster barrier before exiting, so that no CTA
//     leaves while its peer can still multicast into it or arrive on its barriers.
template <class TIn, class TOut, int kBlockN, int kStages, Epilogue kEpi, Scaling kScaling,
          int kCluster = 1, bool kTokensOnM = false, bool kUnitOut = false>
__global__ void __launch_bounds__(kThreadsOf<kBlockN, kTokensOnM>, 1)
    sm90_grouped_gemm_kernel(const __grid_constant__ CUtensorMap w_map,
                             const __grid_constant__ CUtensorMap x_map,
                             const __grid_constant__ CUtensorMap xs_map, GroupedGemmParams p) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  // wgmma's N: the token tile, or (kTokensOnM) the 128 weight rows.
  using Mma = sm90::Wgmma<kTokensOnM ? kBlockM : kBlockN, TIn>;
  constexpr int kConsumers = kConsumersOf<kBlockN, kTokensOnM>;
  constexpr int kThreads = kThreadsOf<kBlockN, kTokensOnM>;
  // Registers per thread after setmaxnreg (the 64K of the SM shared out: 40 + 2 x 232 for two
  // consumer warpgroups, 32 + 3 x 160 for three, as FlashAttention-3's three-MMA-warpgroup
  // kernels): the producer keeps few, the consumers' accumulators get the rest.
  constexpr int kProducerRegs = kConsumers == 2 ? 40 : 32;
  constexpr int kConsumerRegs = kConsumers == 2 ? 232 : 160;
  static_assert(kConsumers == 2 || kConsumers == 3, "two or three consumer warpgroups");
  // setmaxnreg moves registers within the CTA's allocation, which is what __launch_bounds__
  // gave each thread at launch (65536 / threads, down to a multiple of 8: 168 at 384 threads,
  // 128 at 512) times the threads: asking for more makes setmaxnreg.inc wait forever (48 + 2 x
  // 232 hung every kernel on the H100).
  static_assert(kProducerRegs + kConsumers * kConsumerRegs <=
                (1 + kConsumers) * (65536 / kThreads / 8 * 8));
  constexpr bool kFp8 = sizeof(TIn) == 1;
  constexpr bool kBlockScaled = kScaling == Scaling::kBlock;
  static_assert(kFp8 == (kScaling != Scaling::kNone), "e4m3 operands come with their scaling");
  static_assert(kBlockK * 2 == 128 && kKBytes / static_cast<int>(sizeof(TIn)) / Mma::kK == 4,
                "one stage is one 128-byte swizzle row of K: four wgmma");
  static_assert(kCluster == 1 || kCluster == 2, "1 CTA, or 2-CTA clusters");
  static_assert(!kTokensOnM || (kFp8 && kIsTokensOnMBlockN<kBlockN> && kCluster == 1),
                "tokens on M: e4m3 tiles of 128 or 192 tokens x 128 weight rows, one CTA");
  // Tokens on M with per-tensor scales (fp8_per_tensor's prefill): no promotion -- the K blocks
  // accumulate in the tensor cores' accumulators, one K block's wgmma in flight, and alpha
  // (weight scale x activation scale) multiplies the totals at the unit's end.
  constexpr bool kTensorOnM = kTokensOnM && kScaling == Scaling::kPerTensor;
  // FC1 quantizing its output (store_quantized_pair / store_static_pair, tokens on M;
  // store_quantized_group, tokens on N): a work unit is a token tile against two adjacent weight
  // tiles (one 128-wide group of the intermediate). (The per-tensor FC1 on the tokens-on-N tiles
  // writes e4m3 from its own epilogue, e4m3_value.)
  constexpr bool kQuantOut = (kBlockScaled || kTensorOnM) && sizeof(TOut) == 1;
  static_assert(!kQuantOut || (kEpi != Epilogue::kRoutingWeight && kCluster == 1),
                "block-scaled e4m3 output: FC1, one CTA");
  // The per-tensor FC1 on M writes its e4m3 output at the static scale *p.out_scale
  // (store_static_pair).
  constexpr bool kStaticOut = kTensorOnM && kQuantOut;
#ifdef MOE_GROUPED_DIRECT_EPILOGUE
  static_assert(!kQuantOut || kTokensOnM, "tokens on N quantizes through the staging buffers");
#endif
  // Weight tiles per stage (weight_tiles_per_stage): two on the 128-token tokens-on-M tile,
  // whose unit is then its token tile against two adjacent weight tiles, both computed from
  // each stage (the second's total in total2).
  constexpr int kStageTiles = kStageWeightTilesOf<kBlockN, kTokensOnM>;
  constexpr bool kPaired = kStageTiles == 2;
  static_assert(!kPaired || (kTokensOnM && kCluster == 1), "two weight tiles a stage: tokens on M");
  // A quantizing FC1 with one weight tile a stage runs its unit's two tiles one after the other.
  constexpr int kSubTiles = kQuantOut && !kPaired ? 2 : 1;  // K loops per unit
  // The producer hands each unit's coordinates to the consumers (unit_tc below).
  constexpr bool kPublishUnits = kTokensOnM && kCluster == 1;
  constexpr int kUnitTiles = kQuantOut || kPaired ? 2 : kCluster;  // weight tiles per unit
  // kUnitOut (FC2 on the paired tile, GemmConfig::unit_out): the consumers stage the unit's
  // whole output in shared memory (stage_unit_out) and warp 1 of the producer warpgroup writes
  // it to y's blocked layout in one bulk copy (store_unit_out) while they go on with the next
  // unit's K loop.
  static_assert(!kUnitOut || (kPaired && kEpi == Epilogue::kRoutingWeight && sizeof(TOut) == 2 &&
                              kBlockN == 128),
                "the unit's output staged whole: FC2 on the 128-token paired tile");
#ifdef MOE_GROUPED_DIRECT_EPILOGUE
  static_assert(!kTokensOnM, "tokens on M stores through the staging buffers");
#else
#endif
  // The epilogue's staging: the unit's output (kUnitOut), per warp (kTokensOnM) or per consumer
  // warpgroup (StagingSmem).
  constexpr int kStagingBytes = kUnitOut     ? kUnitOutStagingBytes
                                : kTokensOnM ? kTokensOnMStagingBytes<kBlockN>
                                             : kEpilogueSmemBytes<kBlockN>;
  static_assert(!kQuantOut || kTokensOnM || kQuantGroupSmemBytes<kBlockN> <= kStagingBytes,
                "store_quantized_group works in the tokens-on-N staging");
  constexpr int kKElems = kKBytes / static_cast<int>(sizeof(TIn));  // K per stage
  constexpr int kAStageBytes = kStageTiles * kABytes;               // a stage's weight tiles
  constexpr int kBBytes = kBlockN * kKBytes;
  // The K block's token scales: TMA needs a 16-byte aligned start in the inner dimension, so
  // kSBox = kBlockN + 4 scales are loaded from row0 rounded down to a multiple of 4; each
  // stage's slot is 128-byte aligned (scale_slot_bytes).
  constexpr int kSBox = kBlockN + 4;
  constexpr int kSBytes = kBlockScaled ? (kSBox * 4 + 127) / 128 * 128 : 0;
  static_assert(kBBytes % 1024 == 0, "each stage's token tile must keep 1024-byte alignment");
  static_assert(kSBytes % 16 == 0 && kStagingBytes % 16 == 0,
                "the barriers and unit coordinates after the staging stay 16-byte aligned");
  // Stage releases per CTA: one per consumer warpgroup; kBlock: per consumer warp (each reads
  // scales). A cluster's stage is released by the consumers of all its CTAs.
  constexpr int kReleases = kBlockScaled ? 4 * kConsumers : kConsumers;

  extern __shared__ uint8_t smem_raw[];
  // 1024-byte alignment (128-byte swizzle) by an offset from smem_raw, not through an integer
  // pointer: every pointer below stays known to be shared, so plain C++ accesses (the token
  // scales of the promotion, the offsets and tile prefix sums of the tile walk) compile to
  // LDS/STS. Through an integer they were generic loads (LD.E) with global-like latency on the
  // promotion's critical path (ncu SASS view, bench/NOTES.md sixth session).
  uint8_t* base = smem_raw + ((1024u - (sm90::smem_addr(smem_raw) & 1023u)) & 1023u);
  uint8_t* smem_a = base;  // [kStages][kStageTiles][128 rows x 128 B] weights
  uint8_t* smem_b = base + kStages * kAStageBytes;  // [kStages][kBlockN rows x 128 B] tokens
  float* smem_s = reinterpret_cast<float*>(smem_b + kStages * kBBytes);  // [kStages][slot]
  // The staged epilogue's buffers (none under MOE_GROUPED_DIRECT_EPILOGUE): [2 warpgroups]
  // [StagingSmem], or (kTokensOnM) [consumer warps][kWarpStagingBytes], apart from the stages
  // (the producer fills them during the epilogue).
  uint8_t* staging = smem_b + kStages * (kBBytes + kSBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(staging + kStagingBytes);
  uint64_t* empty = full + kStages;
  // kBlock: [kConsumers - 1][kStages]: consumer warpgroup c's wgmma of a stage are issued
  // (warpgroup c + 1 waits for it; see the main loop).
  uint64_t* issued = empty + kStages;
  // kUnitOut: the unit staging's full (one arrival per consumer warp) and empty (the store
  // warp) barriers.
  uint64_t* y_full = issued + (kConsumers - 1) * kStages;
  uint64_t* y_empty = y_full + 1;
  // [kStages]: the unit whose first fill stage s holds (written by the producer before it
  // arrives on full[s]; one CTA): the consumers read it instead of searching tile_prefix.
  // NOTE: 16-byte aligned by a compile-time offset from full (itself 16-byte aligned: the
  // stages and staging before it are multiples of 16 bytes).
  int4* unit_tc = reinterpret_cast<int4*>(
      reinterpret_cast<uint8_t*>(full) +
      ((1 + kConsumers) * kStages * 8 + (kUnitOut ? 16 : 0) + 15) / 16 * 16);
  int* row_offsets = reinterpret_cast<int*>(unit_tc + kStages);  // [E + 1]
  int* tile_prefix = row_offsets + p.num_experts + 1;            // [E + 1]

  const int tid = threadIdx.x;
  const int num_experts = p.num_experts;
  const int m_tiles = ceil_div(p.n, kBlockM);
  const int num_k_blocks = ceil_div(p.k, kKElems);
  // Clusters: this CTA's rank (which weight tile of a pair it computes).
  int rank = 0;
  if constexpr (kCluster > 1) rank = static_cast<int>(sm90::cluster_ctarank());

  // 1. Offsets and the tile prefix sum. Barrier setup overlaps the previous kernel's tail
  // (programmatic dependent launch); its outputs are read only after griddepcontrol.wait.
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      sm90::mbar_init(&full[s], 1);
      sm90::mbar_init(&empty[s], kCluster * kReleases);
      for (int c = 0; c + 1 < kConsumers; ++c) {
        sm90::mbar_init(&issued[c * kStages + s], 4);  // one arrival per warp of warpgroup c
      }
    }
    if constexpr (kUnitOut) {
      sm90::mbar_init(y_full, 4 * kConsumers);
      sm90::mbar_init(y_empty, 1);
    }
    sm90::fence_barrier_init();
    sm90::tma_prefetch_desc(&w_map);
    sm90::tma_prefetch_desc(&x_map);
    if constexpr (kBlockScaled) sm90::tma_prefetch_desc(&xs_map);
  }
  // Clusters: the peer may touch this CTA's barriers only after the cluster barrier, which
  // completes below (cluster_wait), after both CTAs initialised theirs.
  if constexpr (kCluster > 1) sm90::cluster_arrive_relaxed();
  // p.offsets_before_wait: the offsets are complete already (see grouped_gemm.h); every thread
  // waits below instead, the producer after sending its first stages' weight loads.
  const bool early = kCluster == 1 && p.offsets_before_wait;  // NOTE: uniform
  if (!early) {
    pdl_wait();
    pdl_launch_dependents();
  }
  // Decode with the router's pairs (p.offsets_from_pairs): the offsets from their counts.
  bool from_pairs = false;
  if constexpr (!kTokensOnM) from_pairs = p.offsets_from_pairs;
  if (from_pairs) {
    // row_offsets[g + 1] = rows of group g (shared-memory counts of the routed pairs), then
    // warp 0's inclusive scan in place.
    const int routed = num_experts - p.shared_groups;
    for (int g = tid; g < num_experts; g += kThreads) {
      row_offsets[g + 1] = g < routed ? 0 : p.num_tokens;
    }
    if (tid == 0) row_offsets[0] = 0;
    __syncthreads();
    const int32_t* topk_ids = p.expert_offsets;  // offsets_from_pairs: the router's ids
    for (int i = tid; i < p.num_tokens * p.top_k; i += kThreads) {
      const int g = topk_ids[i] - p.expert_begin;
      if (g >= 0 && g < routed) atomicAdd(&row_offsets[g + 1], 1);
    }
    __syncthreads();
    if (tid < 32) {
      int rows_before = 0;
      for (int e0 = 0; e0 < num_experts; e0 += 32) {
        const int e = e0 + tid;
        const int c = warp_inclusive_sum(e < num_experts ? row_offsets[e + 1] : 0, tid);
        if (e < num_experts) row_offsets[e + 1] = rows_before + c;
        rows_before += __shfl_sync(0xFFFFFFFFu, c, 31);
      }
    }
  } else {
    for (int e = tid; e <= num_experts; e += kThreads) row_offsets[e] = p.expert_offsets[e];
  }
  __syncthreads();
  if (tid < 32) {
    const int m_units = weight_units<kUnitTiles>(m_tiles);
    int running = 0;
    for (int e0 = 0; e0 < num_experts; e0 += 32) {
      const int e = e0 + tid;
      const int v = warp_inclusive_sum(
          e < num_experts ? ceil_div(row_offsets[e + 1] - row_offsets[e], kBlockN) * m_units : 0,
          tid);
      if (e < num_experts) tile_prefix[e + 1] = running + v;
      running += __shfl_sync(0xFFFFFFFFu, v, 31);
    }
    if (tid == 0) tile_prefix[0] = 0;
  }
  __syncthreads();
  if constexpr (kCluster > 1) sm90::cluster_wait();
  // Work units: tiles, or (clusters) token tiles x weight-tile pairs (decode_tile).
  // NOTE: __shfl_sync tells nvcc these are warp-uniform, so that what derives from them (the
  // stage index, the wgmma descriptors) can live in uniform registers (as CUTLASS and DeepGEMM
  // do): otherwise every descriptor is built per thread and moved over with R2UR.
  const int total_tiles = __shfl_sync(0xFFFFFFFFu, tile_prefix[num_experts], 0);
  const int warpgroup = __shfl_sync(0xFFFFFFFFu, tid / 128, 0);

  if (warpgroup == 0) {
    // 2. Producer.
    sm90::setmaxnreg_dec<kProducerRegs>();
    if (tid == 0) {
      int s = 0;
      uint32_t phase = 0;
      // The CTA's stage fills in order: fill(tc, m_tile, kb, row0, has_tile) for every K block
      // of every weight tile of every unit; stops when fill returns false.
      auto for_each_fill = [&](auto&& fill) {
        for (int tile = first_unit<kCluster>(); tile < total_tiles;
             tile += unit_stride<kCluster>()) {
          const TileCoord tc = decode_tile<kBlockN, kUnitTiles>(tile, tile_prefix, row_offsets,
                                                                num_experts, m_tiles, rank);
          const int row0 = row_offsets[tc.expert] + tc.t_tile * kBlockN;
          // Clusters: rank 1 of an odd m_tiles' last pair has no weight tile (X only).
          const bool has_tile = kCluster == 1 || tc.m_tile < m_tiles;
          // kQuantOut: the unit's weight tiles one after the other (the second may be past n).
          for (int sub = 0; sub < kSubTiles; ++sub) {
            const int m_tile = tc.m_tile + sub;
            if (sub > 0 && m_tile >= m_tiles) break;
            for (int kb = 0; kb < num_k_blocks; ++kb) {
              if (!fill(tc, m_tile, kb, row0, has_tile)) return;
            }
          }
        }
      };
      auto next_stage = [&] {
        if (++s == kStages) {
          s = 0;
          phase ^= 1;
        }
      };
      auto bytes_of = [&](bool has_tile) -> uint32_t {
        return kBBytes + (has_tile ? kAStageBytes + (kBlockScaled ? kSBox * 4 : 0) : 0);
      };
      // The unit's first fill: its tile coordinates for the consumers (kPublishUnits; the
      // other variants decode them in the consumers).
      auto publish_unit = [&](const TileCoord& tc, int m_tile, int kb) {
        if (kPublishUnits && m_tile == tc.m_tile && kb == 0) {
          unit_tc[s] = make_int4(tc.expert, tc.m_tile, tc.t_tile, 0);
        }
      };
      // kPaired: tiles m_tile and m_tile + 1 (past n, as the last of an odd m_tiles: TMA's zero
      // fill, which counts its bytes as any box).
      auto load_w = [&](const TileCoord& tc, int m_tile, int kb) {
#pragma unroll
        for (int t = 0; t < kStageTiles; ++t) {
          sm90::tma_load_3d(smem_a + s * kAStageBytes + t * kABytes, &w_map, &full[s], kb * kKElems,
                            (m_tile + t) * kBlockM, tc.expert);
        }
      };
      // X (rank 0 of a cluster multicasts it) and, kBlock, X's scales.
      auto load_x = [&](int kb, int row0, bool has_tile) {
        if constexpr (kCluster == 1) {
          sm90::tma_load_2d(smem_b + s * kBBytes, &x_map, &full[s], kb * kKElems, row0);
        } else if (rank == 0) {
          sm90::tma_load_2d_multicast(smem_b + s * kBBytes, &x_map, &full[s], kb * kKElems, row0,
                                      static_cast<uint16_t>((1u << kCluster) - 1));
        }
        if (kBlockScaled && has_tile) {
          sm90::tma_load_2d(smem_s + s * (kSBytes / 4), &xs_map, &full[s], row0 & ~3, kb);
        }
      };
      // early: the first kStages fills' weight tiles go out before griddepcontrol.wait (the
      // stages are all free; each expects its whole fill), their X after it.
      int early_fills = 0;
      if (early) {
        for_each_fill([&](const TileCoord& tc, int m_tile, int kb, int, bool has_tile) {
          if (early_fills == kStages) return false;
          publish_unit(tc, m_tile, kb);
          sm90::mbar_arrive_expect_tx(&full[s], bytes_of(has_tile));
          load_w(tc, m_tile, kb);
          next_stage();
          ++early_fills;
          return true;
        });
        pdl_wait();
        pdl_launch_dependents();
        s = 0;
        phase = 0;
      }
      int fills = 0;
      for_each_fill([&](const TileCoord& tc, int m_tile, int kb, int row0, bool has_tile) {
        if (fills++ < early_fills) {
          load_x(kb, row0, has_tile);
        } else {
          // Released by the consumers of every CTA of the cluster: a peer's X may be
          // overwritten too.
          sm90::mbar_wait(&empty[s], phase ^ 1);
          publish_unit(tc, m_tile, kb);
          sm90::mbar_arrive_expect_tx(&full[s], bytes_of(has_tile));
          if (has_tile) load_w(tc, m_tile, kb);
          load_x(kb, row0, has_tile);
        }
        next_stage();
        return true;
      });
      if constexpr (kCluster > 1) {
        // Producer tail: every stage's last fill released by both CTAs' consumers, i.e. all
        // of the peer's arrivals on this CTA's empty barriers have landed (a stage never
        // filled passes at once: its parity-(phase ^ 1) phase counts as complete).
        for (int i = 0; i < kStages; ++i) {
          sm90::mbar_wait(&empty[s], phase ^ 1);
          if (++s == kStages) {
            s = 0;
            phase ^= 1;
          }
        }
      }
    }
    if constexpr (kUnitOut) {
      if (tid / 32 == 1) {
        store_unit_out<TOut, kBlockN>(p, total_tiles, tile_prefix, row_offsets, m_tiles, staging,
                                      y_full, y_empty);
      }
    }
    if constexpr (kCluster > 1) {
      __syncwarp();
      sm90::cluster_arrive();
      sm90::cluster_wait();
    }
    return;
  }

  // 3. Consumers.
  sm90::setmaxnreg_inc<kConsumerRegs>();
  // early: the predecessor's outputs come in through the stages; the wait keeps every trigger
  // of this kernel's dependents behind this kernel's own wait (grouped_gemm.h).
  if (early) {
    pdl_wait();
    pdl_launch_dependents();
  }
  const int c = warpgroup - 1;  // which 64 weight rows (kTokensOnM: token rows) of the tile
  const int warp = (tid / 32) % 4;
  const int lane = tid % 32;
  int s = 0;
  uint32_t phase = 0;
  // Clusters: empty[0] of the peer CTA (shared::cluster address; empty[s] is 8 s further).
  uint32_t peer_empty = 0;
  if constexpr (kCluster > 1) {
    peer_empty = sm90::mapa_shared(sm90::smem_addr(empty), static_cast<uint32_t>(rank ^ 1));
  }
  static_assert(Mma::kRegs == (kTokensOnM ? kBlockM : kBlockN) / 2,
                "a 64 x N fp32 accumulator per warpgroup");
  float acc[Mma::kRegs];
#ifndef MOE_GROUPED_DIRECT_EPILOGUE
  const StagingSmem<kBlockN> staging_smem{
      staging + c * StagingSmem<kBlockN>::kBytes,
      reinterpret_cast<float*>(staging + c * StagingSmem<kBlockN>::kBytes +
                               2 * StagingSmem<kBlockN>::kBufBytes)};
  int staging_buf = 0;  // the warpgroup's next chunk buffer
#endif
  // kBlock: the promoted fp32 total (acc holds one K block's product); kPaired: total2, the
  // second weight tile's.
  // kTensorOnM: total (and total2) are the wgmma accumulators themselves.
  float total[kBlockScaled || kTensorOnM ? Mma::kRegs : 1];
  float total2[kPaired ? Mma::kRegs : 1];
  [[maybe_unused]] uint32_t unit_parity = 0;  // kUnitOut: the units staged so far, mod 2
  // One K block of stage `stage`: four wgmma into acc (the first overwrites it unless
  // `accumulate`), committed as one group. A: the warpgroup's 64 weight rows (kTokensOnM: its
  // 64 token rows); B: the token tile (kTokensOnM: the weight tile). The descriptors are those
  // of stage 0, K step 0 plus the start-address offset (in 16-byte units: a stage's tile size,
  // 32 bytes per K step), so a K block costs a few integer adds rather than eight descriptors
  // built from pointers.
  const uint64_t desc_a0 = sm90::smem_desc_sw128((kTokensOnM ? smem_b : smem_a) + c * 64 * 128);
  const uint64_t desc_b0 = sm90::smem_desc_sw128(kTokensOnM ? smem_a : smem_b);
  constexpr uint32_t kADescStage = (kTokensOnM ? kBBytes : kAStageBytes) >> 4;
  constexpr uint32_t kBDescStage = (kTokensOnM ? kAStageBytes : kBBytes) >> 4;
  // The four wgmma of stage `stage`'s K block into d (weight_tile, kPaired: which of the stage's
  // weight tiles is B), not committed.
  auto issue_wgmma = [&](float(&d)[Mma::kRegs], int stage, bool accumulate, int weight_tile) {
    const uint64_t da = desc_a0 + static_cast<uint32_t>(stage) * kADescStage;
    const uint64_t db = desc_b0 + static_cast<uint32_t>(stage) * kBDescStage +
                        static_cast<uint32_t>(weight_tile) * (kABytes >> 4);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      Mma::mma(d, da + kk * 2, db + kk * 2, (accumulate || kk > 0) ? 1 : 0);
    }
  };
  auto issue_k_block = [&](int stage, bool accumulate, int weight_tile = 0) {
#pragma unroll
    for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(acc[i]);
    sm90::wgmma_fence();
    issue_wgmma(acc, stage, accumulate, weight_tile);
    sm90::wgmma_commit();
  };
  // Block scaling, K block kb of stage s: its weight scales (loads started before the wait on
  // the stage), then the K block issued and waited for. The warpgroups' wgmma of a stage go to
  // the tensor cores one warpgroup after the other (warpgroup c + 1 issues once warpgroup c has):
  // warpgroup 0's K block completes first and its promotion runs under the others', instead of
  // all finishing together and promoting with the tensor cores idle. The caller reads the
  // stage's token scales, releases it and promotes; under_wgmma() runs between the issue and
  // the wait (the tokens-on-M tile reads its stage's token scales there, off the path from the
  // wait to the promotion).
  auto block_scaled_k_block = [&](auto&& under_wgmma) {
    sm90::mbar_wait(&full[s], phase);
    // Two consumers: one row of 'issued' (index arithmetic known at compile time).
    if (c > 0) sm90::mbar_wait(&issued[(kConsumers == 2 ? 0 : c - 1) * kStages + s], phase);
    issue_k_block(s, /*accumulate=*/false);
    if (c + 1 < kConsumers) {
      __syncwarp();
      if (lane == 0) sm90::mbar_arrive(&issued[(kConsumers == 2 ? 0 : c) * kStages + s]);
    }
    under_wgmma();
    sm90::wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(acc[i]);
  };
  for (int tile = first_unit<kCluster>(); tile < total_tiles; tile += unit_stride<kCluster>()) {
    // Tokens on M (prefill): the unit's coordinates from its first stage, where the producer
    // put them (a binary search over tile_prefix per unit per thread was ~6% of a short-K FC2's
    // samples: Qwen3-30B-A3B 4096 tokens -1.8%). Decode tiles search: waiting for the first
    // stage before the epilogue's constants and weight scales load cost ~0.5 us at one token.
    TileCoord tc;
    if constexpr (kPublishUnits) {
      sm90::mbar_wait(&full[s], phase);
      const int4 u = unit_tc[s];
      tc = TileCoord{u.x, u.y, u.z};
    } else {
      tc = decode_tile<kBlockN, kUnitTiles>(tile, tile_prefix, row_offsets, num_experts, m_tiles,
                                            rank);
    }
    if constexpr (kCluster > 1) {
      if (tc.m_tile >= m_tiles) {
        // No weight tile (rank 1, odd m_tiles): take the stages, release them in both CTAs.
        for (int kb = 0; kb < num_k_blocks; ++kb) {
          sm90::mbar_wait(&full[s], phase);
          const bool releases = kBlockScaled ? lane == 0 : tid % 128 == 0;
          if (releases) {
            sm90::mbar_arrive(&empty[s]);
            sm90::mbar_arrive_cluster(peer_empty + s * 8);
          }
          // kBlock: issued[s] completes once per fill of s, as in the main loop, so that
          // warpgroup 1's parity stays the stage's.
          if (kBlockScaled && c == 0 && lane == 0) sm90::mbar_arrive(&issued[s]);
          if (++s == kStages) {
            s = 0;
            phase ^= 1;
          }
        }
        continue;
      }
    }
    const int count = row_offsets[tc.expert + 1] - row_offsets[tc.expert];
    const int row_base = row_offsets[tc.expert] + tc.t_tile * kBlockN;  // the tile's first row
    if constexpr (kTokensOnM) {
      // Block-scaled, tokens on M: per K block one token scale per accumulator row (2 per
      // thread, shared memory) and one weight scale per gate / up half (FC2: one), so the
      // promotion is 4 FMUL + 64 FFMA (weights on M: 32 LDS + 64 FMUL + 64 FFMA).
      const int tile_rows = min(kBlockN, count - tc.t_tile * kBlockN);
      const int tok_lo = c * 64 + warp * 16 + lane / 4;  // the thread's token rows lo, lo + 8
      float rw_lo = 1.0f, rw_hi = 1.0f;  // FC2: their routing weights (loaded under the loop)
      if constexpr (kEpi == Epilogue::kRoutingWeight) {
        if (p.row_weights) {
          rw_lo = tok_lo < tile_rows ? p.row_weights[row_base + tok_lo] : 0.0f;
          rw_hi = tok_lo + 8 < tile_rows ? p.row_weights[row_base + tok_lo + 8] : 0.0f;
        }
      }
      // kPaired: whether the unit's second weight tile is inside n (else TMA filled it with
      // zeros: computed on, never stored).
      const bool has_second = tc.m_tile + 1 < m_tiles;
      for (int sub = 0; sub < kSubTiles; ++sub) {
        const int m_tile = tc.m_tile + sub;
        if (sub > 0 && m_tile >= m_tiles) break;
        if constexpr (kBlockScaled) {
          const float* w_scales = tile_weight_scales<kEpi>(p, tc.expert, m_tile, num_k_blocks);
          // The second tile's scales (kPaired; the first's where there is no second tile: finite
          // values for its zero products).
          const float* w_scales2 =
              kPaired && has_second
                  ? tile_weight_scales<kEpi>(p, tc.expert, m_tile + 1, num_k_blocks)
                  : w_scales;
#pragma unroll
          for (int i = 0; i < Mma::kRegs; ++i) total[i] = 0.0f;
          if constexpr (kPaired) {
#pragma unroll
            for (int i = 0; i < Mma::kRegs; ++i) total2[i] = 0.0f;
          }
          // The K block's scale products for the thread's two token rows (lo, hi): FC1's
          // RowScales are the gate (lo) and up (hi) scales of the weight tile, xs the token rows'
          // scales (FC2: one weight scale).
          struct PromoteScales {
            float g_lo, g_hi, u_lo, u_hi;
          };
          auto scale_products = [](const RowScales& ws, float xs_lo, float xs_hi) {
            return PromoteScales{ws.lo * xs_lo, ws.lo * xs_hi, ws.hi * xs_lo, ws.hi * xs_hi};
          };
          // acc times the K block's scale products into t.
          auto promote = [&](float(&t)[Mma::kRegs], const PromoteScales& ps) {
            const float g_lo = ps.g_lo, g_hi = ps.g_hi, u_lo = ps.u_lo, u_hi = ps.u_hi;
#pragma unroll
            for (int j = 0; j < kBlockM / 8; ++j) {
              // FC1: column groups 2b gate, 2b + 1 up.
              const bool up = kEpi != Epilogue::kRoutingWeight && j % 2 == 1;
              t[j * 4 + 0] += acc[j * 4 + 0] * (up ? u_lo : g_lo);
              t[j * 4 + 1] += acc[j * 4 + 1] * (up ? u_lo : g_lo);
              t[j * 4 + 2] += acc[j * 4 + 2] * (up ? u_hi : g_hi);
              t[j * 4 + 3] += acc[j * 4 + 3] * (up ? u_hi : g_hi);
            }
          };
          // The weight scales a K block ahead (their loads' latency under the prefill's L2
          // traffic was on the first promotion's path: bench/NOTES.md sixteenth session).
          RowScales ws_next = block_weight_scales<kEpi>(w_scales, 0, num_k_blocks);
          RowScales ws2_next{};
          if constexpr (kPaired) ws2_next = block_weight_scales<kEpi>(w_scales2, 0, num_k_blocks);
          for (int kb = 0; kb < num_k_blocks; ++kb) {
            const RowScales ws_kb = ws_next, ws2 = ws2_next;
            const int kb_next = min(kb + 1, num_k_blocks - 1);
            ws_next = block_weight_scales<kEpi>(w_scales, kb_next, num_k_blocks);
            if constexpr (kPaired) {
              ws2_next = block_weight_scales<kEpi>(w_scales2, kb_next, num_k_blocks);
            }
            // The stage's token scales read under the wgmma and their products with the weight
            // scales formed there where registers allow (ptxas keeps the FMULs after the wait:
            // the accumulators are locked), so the first promotion no longer waits for the LDS
            // (bench/NOTES.md sixteenth session).
            PromoteScales ps{}, ps2{};
            block_scaled_k_block([&] {
              const float* sx = smem_s + s * (kSBytes / 4) + (row_base & 3) + tok_lo;
              const float xs_lo = sx[0], xs_hi = sx[8];
              ps = scale_products(ws_kb, xs_lo, xs_hi);
              if constexpr (kPaired) ps2 = scale_products(ws2, xs_lo, xs_hi);
            });
            if constexpr (kPaired) {
              // The second weight tile of the stage into acc once the first's product is added
              // (the other warpgroup's wgmma keep the tensor cores busy meanwhile); the stage is
              // released after both have read it.
              promote(total, ps);
              issue_k_block(s, /*accumulate=*/false, /*weight_tile=*/1);
              sm90::wgmma_wait<0>();
#pragma unroll
              for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(acc[i]);
              __syncwarp();
              if (lane == 0) sm90::mbar_arrive(&empty[s]);
              promote(total2, ps2);
            } else {
              __syncwarp();
              if (lane == 0) sm90::mbar_arrive(&empty[s]);
              promote(total, ps);
            }
            if (++s == kStages) {
              s = 0;
              phase ^= 1;
            }
          }
        } else {
          // Per-tensor (kTensorOnM): each K block's wgmma accumulate into total (kPaired: and
          // total2, the stage's second weight tile) in one commit group; the group before stays
          // in flight while this one issues, and its stage is released once wgmma.wait_group 1
          // says it is read (as the tokens-on-N tiles). No 'issued' order: nothing runs between
          // the warpgroups' chains.
          const RowScales alpha = tensor_alpha<kEpi>(p, tc.expert);  // loaded under the loop
          int prev_s = -1;
          for (int kb = 0; kb < num_k_blocks; ++kb) {
            sm90::mbar_wait(&full[s], phase);
#pragma unroll
            for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(total[i]);
            if constexpr (kPaired) {
#pragma unroll
              for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(total2[i]);
            }
            sm90::wgmma_fence();
            issue_wgmma(total, s, kb > 0, 0);
            if constexpr (kPaired) issue_wgmma(total2, s, kb > 0, 1);
            sm90::wgmma_commit();
            sm90::wgmma_wait<1>();
            if (prev_s >= 0 && tid % 128 == 0) sm90::mbar_arrive(&empty[prev_s]);
            prev_s = s;
            if (++s == kStages) {
              s = 0;
              phase ^= 1;
            }
          }
          sm90::wgmma_wait<0>();
#pragma unroll
          for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(total[i]);
          if constexpr (kPaired) {
#pragma unroll
            for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(total2[i]);
          }
          if (tid % 128 == 0) sm90::mbar_arrive(&empty[prev_s]);
          scale_by_alpha<kEpi>(total, alpha);
          if constexpr (kPaired) scale_by_alpha<kEpi>(total2, alpha);
        }
        // The warp's 16 token rows (c * 64 + warp * 16, from tok_lo: one register fewer live
        // across the main loop) and its staging buffer.
        const int warp_tok0 = tok_lo & ~15;
        uint8_t* warp_buf = staging + (warp_tok0 / 16) * kWarpStagingBytes;
        if constexpr (kQuantOut) {
          float h[32];
          tile_glu<kEpi>(total, p, tc.expert, m_tile, lane, h);
          if (sub == 0) {
            if constexpr (kStaticOut) {
              encode_tile_static(h, __ldg(p.out_scale), warp_buf, 0, lane);
            } else {
              park_first_tile(h, warp_buf, lane);
            }
            if constexpr (kPaired) {
              if (has_second) tile_glu<kEpi>(total2, p, tc.expert, m_tile + 1, lane, h);
            } else {
              if (has_second) continue;  // the second tile's K loop
            }
            if (!has_second) {
#pragma unroll
              for (int i = 0; i < 32; ++i) h[i] = 0.0f;  // no second tile: features past n
            }
          }
          if constexpr (kStaticOut) {
            store_static_pair(h, p, tc.m_tile / 2, warp_buf, warp_tok0, lane, tile_rows, row_base);
          } else {
            store_quantized_pair<kEpi>(h, p, tc.m_tile / 2, warp_buf, warp_tok0, lane, tile_rows,
                                       row_base);
          }
        } else if constexpr (kUnitOut) {
          stage_unit_out<TOut>(total, total2, has_second, p, tc, staging, row_base, warp_tok0, lane,
                               rw_lo, rw_hi, y_full, y_empty, unit_parity);
          unit_parity ^= 1;
        } else {
          store_tile_tokens_on_m<TOut, kEpi>(total, p, TileCoord{tc.expert, m_tile, tc.t_tile},
                                             warp_buf, warp_tok0, lane, tile_rows, row_base, rw_lo,
                                             rw_hi);
          if constexpr (kPaired) {
            if (has_second) {
              store_tile_tokens_on_m<TOut, kEpi>(
                  total2, p, TileCoord{tc.expert, m_tile + 1, tc.t_tile}, warp_buf, warp_tok0, lane,
                  tile_rows, row_base, rw_lo, rw_hi);
            }
          }
        }
      }
    } else {
      // kQuantOut: the unit's two weight tiles one after the other (as the producer fills them),
      // the first's activations kept in h0 until the second's are done.
      [[maybe_unused]] float h0[kQuantOut ? kBlockN / 4 : 1];
      for (int sub = 0; sub < kSubTiles; ++sub) {
        const TileCoord tcs{tc.expert, tc.m_tile + sub, tc.t_tile};
        if (sub > 0 && tcs.m_tile >= m_tiles) break;
#ifndef MOE_GROUPED_DIRECT_EPILOGUE
        // The epilogue's inputs start loading now, under the main loop.
        const int tile_rows = min(kBlockN, count - tc.t_tile * kBlockN);
        const EpilogueConsts ec = load_epilogue_consts<TOut, kEpi, kScaling>(p, tcs, c, warp, lane);
        if constexpr (kEpi == Epilogue::kRoutingWeight) {
          prefetch_row_weights<kBlockN>(p, staging_smem, row_base, tile_rows, tid % 128);
        }
#endif
        if constexpr (kBlockScaled) {
          const float* w_scales = tile_weight_scales<kEpi>(p, tcs.expert, tcs.m_tile, num_k_blocks);
#pragma unroll
          for (int i = 0; i < Mma::kRegs; ++i) total[i] = 0.0f;
          for (int kb = 0; kb < num_k_blocks; ++kb) {
            const RowScales ws = block_weight_scales<kEpi>(w_scales, kb, num_k_blocks);
            block_scaled_k_block([] {});
            // Thread (warp w, lane l) holds token columns j*8 + (l%4)*2 + {0, 1}.
            const float* sx = smem_s + s * (kSBytes / 4) + (row_base & 3) + (lane % 4) * 2;
            float2 xs[kBlockN / 8];
#pragma unroll
            for (int j = 0; j < kBlockN / 8; ++j) xs[j] = make_float2(sx[j * 8], sx[j * 8 + 1]);
            __syncwarp();
            if (lane == 0) {
              sm90::mbar_arrive(&empty[s]);
              if constexpr (kCluster > 1) sm90::mbar_arrive_cluster(peer_empty + s * 8);
            }
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
            if (prev_s >= 0 && tid % 128 == 0) {
              sm90::mbar_arrive(&empty[prev_s]);
              if constexpr (kCluster > 1) sm90::mbar_arrive_cluster(peer_empty + prev_s * 8);
            }
            prev_s = s;
            if (++s == kStages) {
              s = 0;
              phase ^= 1;
            }
          }
          sm90::wgmma_wait<0>();
#pragma unroll
          for (int i = 0; i < Mma::kRegs; ++i) sm90::reg_fence(acc[i]);
          if (prev_s >= 0 && tid % 128 == 0) {
            sm90::mbar_arrive(&empty[prev_s]);
            if constexpr (kCluster > 1) sm90::mbar_arrive_cluster(peer_empty + prev_s * 8);
          }
        }

        // 4. Epilogue.
#ifdef MOE_GROUPED_DIRECT_EPILOGUE
        const EpilogueConsts ec = load_epilogue_consts<TOut, kEpi, kScaling>(p, tcs, c, warp, lane);
        store_tile_direct<TOut, kBlockN, kEpi>(acc, ec, p, tcs, c, warp, lane, count, row_base);
#else
        if constexpr (kQuantOut) {
          float h[kBlockN / 4];
          tile_act_bf16<kBlockN, kEpi>(acc, ec, p, h);
          if (sub == 0) {
#pragma unroll
            for (int i = 0; i < kBlockN / 4; ++i) h0[i] = h[i];
            if (tc.m_tile + 1 < m_tiles) continue;              // the second tile's K loop
#pragma unroll
            for (int i = 0; i < kBlockN / 4; ++i) h[i] = 0.0f;  // no second tile: past n
          }
          store_quantized_group<kBlockN>(h0, h, p, tc.m_tile / 2, staging, c, warp, lane, tile_rows,
                                         row_base);
        } else {
          store_tile_staged<TOut, kBlockN, kEpi>(acc, ec, p, tcs, staging_smem, c, warp, lane,
                                                 tile_rows, row_base, staging_buf);
        }
#endif
      }
    }
  }
  if constexpr (kCluster > 1) {
    // Every stage this CTA took was filled and released (see the producer's tail): meet the
    // peer before exiting.
    __syncwarp();
    sm90::cluster_arrive();
    sm90::cluster_wait();
  }
#endif
}

}  // namespace moe::grouped
