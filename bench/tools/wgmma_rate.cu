// The block-scaled tokens-on-M tile's two sides apart, on an sm_90a GPU (bench/NOTES.md,
// twelfth session): what its compute side takes per K block with shared memory already full,
// and what bulk copies feed the SMs from L2 and DRAM -- so that the grouped GEMM's main loop
// can be set against both ceilings.
//
// Compute: one CTA per SM, two consumer warpgroups (64 token rows each) and one producer
// warpgroup, four stages of [128 token rows x 128 B] + [2 x 128 weight rows x 128 B] (the
// grouped kernel's paired stage, 48 KB) filled once with random e4m3 codes. A K block is
// 2 (warpgroups) x 2 (weight tiles) x 4 wgmma m64n128k32 = 8.4 MFLOP: 1,024 cycles at the
// tensor cores' 8,192 e4m3 FLOP per cycle per SM.
//   ss          : the kernel's order: tile 0's 4 wgmma (A and B from shared memory), wait,
//                 promote (64 FFMA), tile 1's, wait, promote.
//   ss-nopromote: the same without the FFMA (every chain accumulating into acc: ptxas drops a
//                 wgmma whose accumulators are overwritten unread).
//   ss-n256     : one m64n256k32 chain over both tiles a K block, no promotion.
//   rs          : as ss with A (the warpgroup's tokens) in registers (ldmatrix once per K
//                 block for both tiles): shared-memory operand bytes 48 -> 40 KB per K block.
//   ss-n64-overlap: the K block as four m64n64k32 chains (each weight tile by halves) into two
//                 accumulators alternately, each promoted while the next runs (nineteenth
//                 session: the warpgroup's own chains under its own promotions).
//   *+tma       : the producer warp streams 16 KB bulk copies from an L2-resident buffer into
//                 a separate 32 KB region meanwhile (the loads' shared-memory writes).
//   ss-pipeline : ss inside the grouped kernel's pipeline (pipe_kernel): stages refilled by the
//                 producer as the consumers release them (48 KB of bulk copies from L2, full /
//                 empty mbarriers), warpgroup 1 issuing after warpgroup 0 ('issued'); +scales:
//                 the kernel's per-K-block weight-scale loads and token-scale reads too;
//                 -unordered: without the 'issued' order; -32KB: the weight tiles refilled only.
// A check first: one K block of ss and rs against a float64 product on the host.
// Loads: l2-stream / dram-stream (one thread per SM, 16 KB bulk copies, 48-192 KB in flight,
// from 24 MB or 4 GB), and in 2-CTA clusters by rounds, unicast or multicast; with stores going
// out beside the loads (STG.128 from registers, or 16 KB bulk stores from shared memory), to
// an L2-resident or a DRAM region (fifteenth session: whether the SM's stores share its loads'
// budget).
// Output: cycles per K block (SM clock, clock64) and the rate they imply; bytes per cycle per
// SM and TB/s into shared memory.
// Usage: wgmma_rate [k_blocks per CTA, default 4096] [stores: the loads-with-stores rows only |
//        compute: the K-block rows only]
#include <cuda.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backends/grouped/sm90_ptx.cuh"
#include "backends/grouped/sm90_wgmma_generated.cuh"
#include "tool_check.h"

namespace {

constexpr int kStages = 4;
constexpr int kTokBytes = 128 * 128;    // 128 token rows x 128 B
constexpr int kWBytes = 2 * 128 * 128;  // two weight tiles
constexpr int kStageBytes = kTokBytes + kWBytes;
constexpr int kTmaRegion = 32 * 1024;
constexpr int kSmem = 1024 + kStages * kStageBytes + kTmaRegion;

enum Variant { kSS = 0, kSSNoPromote, kSSN256, kRS, kSSN64 };

// wgmma m64n128k32 e4m3 with A from registers (4 x b32: rows g / g + 8, K bytes 4t.. and
// 16 + 4t..; the mma.m16n8k32 8-bit A layout per warp), B from shared memory.
__device__ __forceinline__ void wgmma_rs_n128(float (&d)[64], const uint32_t (&a)[4],
                                              uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
      "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, "
      "%37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, "
      "%55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes,
                                          uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}

// The dynamic shared memory from its first 1024-byte boundary (128-byte swizzled TMA boxes).
__device__ __forceinline__ uint8_t* aligned_1024(uint8_t* p) {
  return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + 1023) & ~uintptr_t{1023});
}

// `n` mbarriers of one arrival each, initialised and fenced for TMA (one thread calls it).
__device__ __forceinline__ void init_barriers(uint64_t* bar, int n) {
  for (int i = 0; i < n; ++i) moe::sm90::mbar_init(&bar[i], 1);
  moe::sm90::fence_barrier_init();
}

// A chain's product acc (kGroups column groups of 8: m64n128 16, m64n64 8) promoted into t:
// column groups 2b gate (scales glo / ghi for the thread's rows lo / hi), 2b + 1 up (ulo /
// uhi), as the grouped kernel's FC1 promotion.
template <int kGroups>
__device__ __forceinline__ void promote_groups(float* t, const float (&acc)[kGroups * 4], float glo,
                                               float ghi, float ulo, float uhi) {
#pragma unroll
  for (int j = 0; j < kGroups; ++j) {
    t[j * 4 + 0] += acc[j * 4 + 0] * (j % 2 ? ulo : glo);
    t[j * 4 + 1] += acc[j * 4 + 1] * (j % 2 ? ulo : glo);
    t[j * 4 + 2] += acc[j * 4 + 2] * (j % 2 ? uhi : ghi);
    t[j * 4 + 3] += acc[j * 4 + 3] * (j % 2 ? uhi : ghi);
  }
}

template <int kVariant, bool kTma>
__global__ void __launch_bounds__(384, 1)
    rate_kernel(const uint8_t* __restrict__ fill, const uint8_t* __restrict__ l2buf, int k_blocks,
                float* __restrict__ sink, long long* __restrict__ cycles, int write_sink) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = aligned_1024(smem_raw);
  __shared__ uint64_t tma_bar[2];
  __shared__ volatile int done;
  const int tid = threadIdx.x;
  for (int i = tid * 16; i < kStages * kStageBytes + kTmaRegion; i += blockDim.x * 16) {
    *reinterpret_cast<uint4*>(smem + i) = *reinterpret_cast<const uint4*>(fill + i);
  }
  if (tid == 0) {
    init_barriers(tma_bar, 2);
    done = 0;
  }
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();
  const int wg = tid / 128;
  if (wg == 0) {
    moe::sm90::setmaxnreg_dec<40>();
    // Producer: 16 KB bulk copies, two in flight, until the consumers finish.
    if constexpr (kTma) {
      if (tid == 0) {
        uint8_t* region = smem + kStages * kStageBytes;
        uint32_t phase[2] = {0, 0};
        for (int i = 0; i < 2; ++i) {
          moe::sm90::mbar_arrive_expect_tx(&tma_bar[i], 16384);
          bulk_load(moe::sm90::smem_addr(region + i * 16384), l2buf + i * 16384, 16384,
                    moe::sm90::smem_addr(&tma_bar[i]));
        }
        for (int n = 2; !done; ++n) {
          const int b = n & 1;
          moe::sm90::mbar_wait(&tma_bar[b], phase[b]);
          phase[b] ^= 1;
          moe::sm90::mbar_arrive_expect_tx(&tma_bar[b], 16384);
          bulk_load(moe::sm90::smem_addr(region + b * 16384), l2buf + (n % 64) * 16384, 16384,
                    moe::sm90::smem_addr(&tma_bar[b]));
        }
        for (int b = 0; b < 2; ++b) moe::sm90::mbar_wait(&tma_bar[b], phase[b]);
      }
    }
    return;
  }
  moe::sm90::setmaxnreg_inc<232>();  // as the grouped kernel: 40 + 2 x 232 of the 64K
  const int c = wg - 1;              // consumer warpgroup: token rows c * 64 ..
  const int lane = tid % 32, warp = (tid % 128) / 32;
  using Mma = moe::sm90::Wgmma<128, __nv_fp8_e4m3>;
  using Mma256 = moe::sm90::Wgmma<256, __nv_fp8_e4m3>;
  float acc[kVariant == kSSN256 ? 128 : 64];
  float acc_a[32], acc_b[32];  // kSSN64: the two half-tile accumulators
  using Mma64 = moe::sm90::Wgmma<64, __nv_fp8_e4m3>;
  float total[kVariant == kSSN256 ? 1 : 64], total2[kVariant == kSSN256 ? 1 : 64];
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    if constexpr (kVariant != kSSN256) {
      total[i] = 0.0f;
      total2[i] = 0.0f;
    }
  }
#pragma unroll
  for (int i = 0; i < (kVariant == kSSN256 ? 128 : 64); ++i) acc[i] = 0.0f;
#pragma unroll
  for (int i = 0; i < 32; ++i) acc_a[i] = acc_b[i] = 0.0f;
  const uint64_t desc_a0 = moe::sm90::smem_desc_sw128(smem + c * 64 * 128);
  const uint64_t desc_b0 = moe::sm90::smem_desc_sw128(smem + kTokBytes);
  const float sa = 1.0f + 1e-3f * lane, sb = 1.0f - 1e-3f * warp;
  const long long t0 = clock64();
  int s = 0;
  for (int kb = 0; kb < k_blocks; ++kb) {
    const uint64_t da = desc_a0 + static_cast<uint32_t>(s) * (kStageBytes >> 4);
    const uint64_t db = desc_b0 + static_cast<uint32_t>(s) * (kStageBytes >> 4);
    if constexpr (kVariant == kSSN64) {
      // Four m64n64k32 chains a K block (tile 0 rows 0-63, 64-127, then tile 1's), into two
      // accumulators alternately, one chain left in flight while the previous one's product is
      // promoted: the warpgroup's own chains overlap its own promotions.
      const float g = sa * sb, u = sa * sb * 0.5f;
      auto chain = [&](float(&a)[32], int q) {  // q = tile * 2 + half
#pragma unroll
        for (int i = 0; i < 32; ++i) moe::sm90::reg_fence(a[i]);
        moe::sm90::wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Mma64::mma(a, da + kk * 2, db + q * (64 * 128 >> 4) + kk * 2, kk > 0 ? 1 : 0);
        moe::sm90::wgmma_commit();
      };
      auto promote = [&](float(&a)[32], int q) {  // into the half's column groups of its tile
#pragma unroll
        for (int i = 0; i < 32; ++i) moe::sm90::reg_fence(a[i]);
        promote_groups<8>((q < 2 ? total : total2) + (q % 2) * 32, a, g, u, u, g);
      };
      chain(acc_a, 0);
      chain(acc_b, 1);
      moe::sm90::wgmma_wait<1>();
      promote(acc_a, 0);
      chain(acc_a, 2);
      moe::sm90::wgmma_wait<1>();
      promote(acc_b, 1);
      chain(acc_b, 3);
      moe::sm90::wgmma_wait<1>();
      promote(acc_a, 2);
      moe::sm90::wgmma_wait<0>();
      promote(acc_b, 3);
    } else if constexpr (kVariant == kSSN256) {
#pragma unroll
      for (int i = 0; i < 128; ++i) moe::sm90::reg_fence(acc[i]);
      moe::sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) Mma256::mma(acc, da + kk * 2, db + kk * 2, 1);
      moe::sm90::wgmma_commit();
      moe::sm90::wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 128; ++i) moe::sm90::reg_fence(acc[i]);
    } else {
      uint32_t afrag[4][4];
      if constexpr (kVariant == kRS) {
        // The warp's 16 token rows x 128 B of this stage, 128-byte swizzled rows.
        const int row = c * 64 + warp * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
        const uint32_t base = moe::sm90::smem_addr(smem + s * kStageBytes) + row * 128;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const int chunk = kk * 2 + lane / 16;  // 16-byte chunk of the 128-byte row
          ldmatrix_x4(afrag[kk], base + ((chunk ^ (row % 8)) * 16));
        }
      }
#pragma unroll
      for (int tile = 0; tile < 2; ++tile) {
#pragma unroll
        for (int i = 0; i < 64; ++i) moe::sm90::reg_fence(acc[i]);
        moe::sm90::wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          // Without the promotion every chain accumulates into acc, so that none is dead code
          // (ptxas drops a wgmma whose accumulators are overwritten unread).
          const int scale_d = kVariant == kSSNoPromote || kk > 0 ? 1 : 0;
          if constexpr (kVariant == kRS) {
            wgmma_rs_n128(acc, afrag[kk], db + tile * (128 * 128 >> 4) + kk * 2, scale_d);
          } else {
            Mma::mma(acc, da + kk * 2, db + tile * (128 * 128 >> 4) + kk * 2, scale_d);
          }
        }
        moe::sm90::wgmma_commit();
        moe::sm90::wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < 64; ++i) moe::sm90::reg_fence(acc[i]);
        if constexpr (kVariant != kSSNoPromote) {
          const float g = sa * sb, u = sa * sb * 0.5f;
          promote_groups<16>(tile == 0 ? total : total2, acc, g, u, u, g);
        }
      }
    }
    if (++s == kStages) s = 0;
  }
  const long long t1 = clock64();
  // Both consumer warpgroups done: stop the producer.
  asm volatile("bar.sync 1, 256;" ::: "memory");
  if (tid == 128) done = 1;
  if (tid % 128 == 0) cycles[blockIdx.x * 2 + c] = t1 - t0;
  if (write_sink == 2) {
    // The last chain's accumulators as they are (the check: tile 1 of the last stage used).
#pragma unroll
    for (int i = 0; i < 64; ++i) sink[(blockIdx.x * 256 + tid - 128) * 64 + i] = acc[i];
  } else if (write_sink) {
    float v = 0.0f;
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      if constexpr (kVariant == kSSN256) {
        v += acc[i] + acc[64 + i];
      } else if constexpr (kVariant == kSSNoPromote) {
        v += acc[i];
      } else {
        v += total[i] + total2[i];
      }
    }
    sink[blockIdx.x * 256 + tid - 128] = v;
  }
}

// Milliseconds of one launch (events around it).
template <class Launch>
float timed_ms(Launch&& launch) {
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  CHECK(cudaEventRecord(e0));
  launch();
  CHECK(cudaGetLastError());
  CHECK(cudaEventRecord(e1));
  CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, e0, e1));
  CHECK(cudaEventDestroy(e0));
  CHECK(cudaEventDestroy(e1));
  return ms;
}

// The per-CTA counts the kernels leave in `cycles` (two slots a CTA), copied back.
std::vector<long long> read_cycles(const long long* cycles, int ctas) {
  std::vector<long long> cyc(static_cast<size_t>(ctas) * 2);
  CHECK(cudaMemcpy(cyc.data(), cycles, cyc.size() * sizeof(long long), cudaMemcpyDeviceToHost));
  return cyc;
}

// The ss order inside the grouped kernel's pipeline (nineteenth session: where the real main
// loop's ~1,470 cycles a K block go, against ss+tma's ~1,090): the producer (thread 0) refills
// each stage as the consumers release it -- 3 x 16 KB bulk copies from an L2-resident buffer
// (the stage's tokens and two weight tiles), full / empty mbarriers -- and consumer warpgroup 1
// issues a stage's first chain only after warpgroup 0 has (the kernel's 'issued' barrier).
// kScales: also the kernel's per-K-block scales -- four weight scales loaded from global memory
// a K block ahead and two token scales from shared memory, their products applied in the
// promotions instead of constants. kMode (bisection): 0 as described, 1 without the 'issued'
// ordering, 2 refilling 32 KB a stage (the weight tiles; the tokens stay).
template <bool kScales, int kMode = 0>
__global__ void __launch_bounds__(384, 1)
    pipe_kernel(const uint8_t* __restrict__ l2buf, const float* __restrict__ wscales, int k_blocks,
                float* __restrict__ sink, long long* __restrict__ cycles, int write_sink) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = aligned_1024(smem_raw);
  __shared__ uint64_t full[kStages], empty[kStages], issued[kStages];
  const int tid = threadIdx.x;
  float* tok_scales = reinterpret_cast<float*>(smem + kStages * kStageBytes);  // [128]
  if (tid < 128) tok_scales[tid] = 1.0f + 1e-3f * tid;
  if (tid == 0) {
    for (int i = 0; i < kStages; ++i) {
      moe::sm90::mbar_init(&full[i], 1);
      moe::sm90::mbar_init(&empty[i], 8);  // one arrival per consumer warp
      moe::sm90::mbar_init(&issued[i], 4);
    }
    moe::sm90::fence_barrier_init();
  }
  __syncthreads();
  const int wg = tid / 128;
  if (wg == 0) {
    moe::sm90::setmaxnreg_dec<40>();
    if (tid == 0) {
      int s = 0;
      uint32_t phase = 0;
      for (int kb = 0; kb < k_blocks; ++kb) {
        moe::sm90::mbar_wait(&empty[s], phase ^ 1);
        constexpr int kCopies = kMode == 2 ? 2 : 3;
        moe::sm90::mbar_arrive_expect_tx(&full[s], kCopies * 16384);
        for (int i = 3 - kCopies; i < 3; ++i) {
          bulk_load(moe::sm90::smem_addr(smem + s * kStageBytes + i * 16384),
                    l2buf + ((kb * 3 + i) % 64) * 16384, 16384, moe::sm90::smem_addr(&full[s]));
        }
        if (++s == kStages) {
          s = 0;
          phase ^= 1;
        }
      }
    }
    return;
  }
  moe::sm90::setmaxnreg_inc<232>();
  const int c = wg - 1;
  const int lane = tid % 32, warp = (tid % 128) / 32;
  using Mma = moe::sm90::Wgmma<128, __nv_fp8_e4m3>;
  float acc[64], total[64], total2[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = total[i] = total2[i] = 0.0f;
  const uint64_t desc_a0 = moe::sm90::smem_desc_sw128(smem + c * 64 * 128);
  const uint64_t desc_b0 = moe::sm90::smem_desc_sw128(smem + kTokBytes);
  const int tok_lo = c * 64 + warp * 16 + lane / 4;
  const float g = 1.0f + 1e-3f * lane, u = 1.0f - 1e-3f * warp;
  float w_next[4] = {1, 1, 1, 1};
  if constexpr (kScales) {
#pragma unroll
    for (int i = 0; i < 4; ++i) w_next[i] = __ldg(wscales + i * k_blocks);
  }
  // A chain of four m64n128k32 into acc, committed as one group; then its wait.
  auto issue = [&](uint64_t da, uint64_t db) {
#pragma unroll
    for (int i = 0; i < 64; ++i) moe::sm90::reg_fence(acc[i]);
    moe::sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) Mma::mma(acc, da + kk * 2, db + kk * 2, kk > 0 ? 1 : 0);
    moe::sm90::wgmma_commit();
  };
  auto wait = [&] {
    moe::sm90::wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 64; ++i) moe::sm90::reg_fence(acc[i]);
  };
  const long long t0 = clock64();
  int s = 0;
  uint32_t phase = 0;
  for (int kb = 0; kb < k_blocks; ++kb) {
    const uint64_t da = desc_a0 + static_cast<uint32_t>(s) * (kStageBytes >> 4);
    const uint64_t db = desc_b0 + static_cast<uint32_t>(s) * (kStageBytes >> 4);
    float w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = w_next[i];
    if constexpr (kScales) {
      const int kn = min(kb + 1, k_blocks - 1);
#pragma unroll
      for (int i = 0; i < 4; ++i) w_next[i] = __ldg(wscales + i * k_blocks + kn);
    }
    moe::sm90::mbar_wait(&full[s], phase);
    if (kMode != 1 && c > 0) {
      moe::sm90::mbar_wait(&issued[s], phase);
    }
    // Chain 1 (tile 0), as the kernel's block_scaled_k_block: issue, 'issued', scales, wait.
    issue(da, db);
    if (c == 0) {
      __syncwarp();
      if (lane == 0) moe::sm90::mbar_arrive(&issued[s]);
    }
    float glo = g, ghi = u, ulo = u, uhi = g, glo2 = g, ghi2 = u, ulo2 = u, uhi2 = g;
    if constexpr (kScales) {
      const float xlo = tok_scales[tok_lo], xhi = tok_scales[tok_lo + 8];
      glo = w[0] * xlo, ghi = w[0] * xhi, ulo = w[1] * xlo, uhi = w[1] * xhi;
      glo2 = w[2] * xlo, ghi2 = w[2] * xhi, ulo2 = w[3] * xlo, uhi2 = w[3] * xhi;
    }
    wait();
    promote_groups<16>(total, acc, glo, ghi, ulo, uhi);
    issue(da, db + (128 * 128 >> 4));  // chain 2 (tile 1)
    wait();
    __syncwarp();
    if (lane == 0) moe::sm90::mbar_arrive(&empty[s]);
    promote_groups<16>(total2, acc, glo2, ghi2, ulo2, uhi2);
    if (++s == kStages) {
      s = 0;
      phase ^= 1;
    }
  }
  const long long t1 = clock64();
  if (tid % 128 == 0) cycles[blockIdx.x * 2 + c] = t1 - t0;
  if (write_sink) {
    float v = 0.0f;
#pragma unroll
    for (int i = 0; i < 64; ++i) v += total[i] + total2[i];
    sink[blockIdx.x * 256 + tid - 128] = v;
  }
}

// The loads side alone: one thread per CTA streams `bytes`-sized bulk copies (global -> shared)
// through `kSlots` slots of 16 KB, each reissued as soon as it lands, from a buffer of
// `buf_bytes` (L2-resident when small) -- what TMA can feed the SMs, against the main loop's
// 48 KB per K block.
constexpr int kSlots = 12;
// Dynamic shared memory of the streaming kernels: 1024-byte alignment slack and the slot ring.
constexpr int kStreamSmem = 1024 + kSlots * 16384;
// One thread's stream: `copies` 16 KB bulk copies from `buf` through `slots` slots of `smem`
// (barriers `bar`, initialised by the caller), each slot reissued as soon as it lands. Returns
// the SM cycles it took.
__device__ long long stream_loads(uint8_t* smem, uint64_t* bar, int slots,
                                  const uint8_t* __restrict__ buf, size_t buf_bytes, int copies) {
  const size_t chunks = buf_bytes / 16384;
  size_t next = (static_cast<size_t>(blockIdx.x) * 977) % chunks;
  const long long t0 = clock64();
  uint32_t phase = 0;
  for (int n = 0; n < copies + slots; ++n) {
    const int slot = n % slots;
    if (n >= slots) {
      moe::sm90::mbar_wait(&bar[slot], phase);
      if (slot == slots - 1) phase ^= 1;
    }
    if (n < copies) {
      moe::sm90::mbar_arrive_expect_tx(&bar[slot], 16384);
      bulk_load(moe::sm90::smem_addr(smem + slot * 16384), buf + next * 16384, 16384,
                moe::sm90::smem_addr(&bar[slot]));
      next = (next + 131) % chunks;
    }
  }
  return clock64() - t0;
}

__global__ void __launch_bounds__(128, 1)
    stream_kernel(const uint8_t* __restrict__ buf, size_t buf_bytes, int copies, int slots,
                  long long* __restrict__ cycles) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = aligned_1024(smem_raw);
  __shared__ uint64_t bar[kSlots];
  if (threadIdx.x != 0) return;
  init_barriers(bar, kSlots);
  const long long c = stream_loads(smem, bar, slots, buf, buf_bytes, copies);
  cycles[blockIdx.x * 2] = c;
  cycles[blockIdx.x * 2 + 1] = c;
}

void stream(const char* name, int sms, const uint8_t* buf, size_t buf_bytes, long long* cycles,
            int slots = kSlots) {
  const int smem = kStreamSmem;
  CHECK(cudaFuncSetAttribute(&stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int copies = 4096;
  stream_kernel<<<sms, 128, smem>>>(buf, buf_bytes, 64, slots, cycles);  // warm-up
  CHECK(cudaGetLastError());
  const float ms =
      timed_ms([&] { stream_kernel<<<sms, 128, smem>>>(buf, buf_bytes, copies, slots, cycles); });
  const std::vector<long long> cyc = read_cycles(cycles, sms);
  double mean = 0;
  for (int i = 0; i < sms; ++i) mean += static_cast<double>(cyc[i * 2]) / sms;
  const double bytes = 16384.0 * copies * sms;
  std::printf(
      "%-20s %6.1f B/cycle/SM  %6.2f TB/s into shared memory (%3d SMs, %3d KB in flight, "
      "buffer %zu MB)\n",
      name, 16384.0 * copies / mean, bytes / (ms * 1e9), sms, slots * 16, buf_bytes >> 20);
}

// The loads side with stores going out beside it: thread 0 streams bulk loads (stream_loads,
// 8 slots of 16 KB); meanwhile kStore kStoreLsu: warps 1-3 store 16 bytes a thread a step
// from registers (STG.128, the grouped GEMM's epilogue), kStoreBulk: thread 32 issues 16 KB
// bulk stores from shared memory (TMA's store path), up to 4 in flight, both to `out` (a
// region of out_bytes: L2-resident when small). Whether the SM's loads keep their bytes per
// cycle while its stores go out (separate paths) or share one budget with them.
enum StoreKind { kStoreNone, kStoreLsu, kStoreBulk };
constexpr int kStoreSlots = 8;
template <int kStore>
__global__ void __launch_bounds__(128, 1)
    stream_store_kernel(const uint8_t* __restrict__ buf, size_t buf_bytes, uint8_t* out,
                        size_t out_bytes, int copies, long long* __restrict__ cycles,
                        unsigned long long* __restrict__ stored) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = aligned_1024(smem_raw);
  __shared__ uint64_t bar[kStoreSlots];
  __shared__ volatile int done;
  if (threadIdx.x == 0) {
    init_barriers(bar, kStoreSlots);
    done = 0;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    cycles[blockIdx.x * 2] = stream_loads(smem, bar, kStoreSlots, buf, buf_bytes, copies);
    done = 1;
    return;
  }
  if (threadIdx.x < 32) return;
  const size_t out_chunks = out_bytes / 16384;
  size_t chunk = (static_cast<size_t>(blockIdx.x) * 613) % out_chunks;
  unsigned long long bytes = 0;
  if constexpr (kStore == kStoreLsu) {
    const uint4 v = make_uint4(threadIdx.x, blockIdx.x, 1, 2);
    while (!done) {
      // 96 threads x 16 bytes x 8 = 12 KB a step, inside one 16 KB chunk.
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        *reinterpret_cast<uint4*>(out + chunk * 16384 + (i * 96 + threadIdx.x - 32) * 16) = v;
      }
      bytes += 8 * 16;
      chunk = (chunk + 131) % out_chunks;
    }
  } else if constexpr (kStore == kStoreBulk) {
    if (threadIdx.x != 32) return;
    const uint32_t src = moe::sm90::smem_addr(smem + kStoreSlots * 16384);
    while (!done) {
      asm volatile(
          "cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(out + chunk * 16384),
          "r"(src), "r"(16384)
          : "memory");
      asm volatile("cp.async.bulk.commit_group;" ::: "memory");
      asm volatile("cp.async.bulk.wait_group.read 3;" ::: "memory");
      bytes += 16384;
      chunk = (chunk + 131) % out_chunks;
    }
    asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
  }
  atomicAdd(&stored[blockIdx.x], bytes);
}

template <int kStore>
void stream_store(const char* name, int sms, const uint8_t* buf, size_t buf_bytes, uint8_t* out,
                  size_t out_bytes, long long* cycles, unsigned long long* stored) {
  const int smem = 1024 + (kStoreSlots + 1) * 16384;
  auto kernel = &stream_store_kernel<kStore>;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int copies = 4096;
  kernel<<<sms, 128, smem>>>(buf, buf_bytes, out, out_bytes, 64, cycles, stored);  // warm-up
  CHECK(cudaGetLastError());
  CHECK(cudaMemset(stored, 0, sizeof(unsigned long long) * sms));
  const float ms = timed_ms(
      [&] { kernel<<<sms, 128, smem>>>(buf, buf_bytes, out, out_bytes, copies, cycles, stored); });
  const std::vector<long long> cyc = read_cycles(cycles, sms);
  std::vector<unsigned long long> st(sms);
  CHECK(cudaMemcpy(st.data(), stored, sizeof(unsigned long long) * sms, cudaMemcpyDeviceToHost));
  double mean = 0, st_mean = 0;
  for (int i = 0; i < sms; ++i) {
    mean += static_cast<double>(cyc[i * 2]) / sms;
    st_mean += static_cast<double>(st[i]) / sms;
  }
  // (The stores run until the loads end: their bytes over the loads' cycles.)
  const double loads = 16384.0 * copies;
  std::printf(
      "%-20s loads %5.1f B/cycle/SM, stores %5.1f B/cycle/SM (%3d SMs, out %zu MB, %.2f ms)\n",
      name, loads / mean, st_mean / mean, sms, out_bytes >> 20, ms);
}

// The loads side through the LSU instead of TMA: every thread but warp 0's streams 16-byte
// loads (8 in flight each) from an L2-resident buffer into registers; kWithTma: warp 0's lane 0
// streams bulk copies meanwhile (as stream_kernel, 12 x 16 KB in flight). Whether an SM takes
// in more through both paths than through TMA alone.
template <bool kWithTma>
__global__ void __launch_bounds__(384, 1)
    ldg_stream_kernel(const uint4* __restrict__ buf, size_t buf_vecs, int rounds,
                      const uint8_t* __restrict__ bytes, size_t buf_bytes,
                      long long* __restrict__ cycles, uint4* __restrict__ sink) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = aligned_1024(smem_raw);
  __shared__ uint64_t bar[kSlots];
  __shared__ volatile int done;
  if (threadIdx.x == 0) {
    init_barriers(bar, kSlots);
    done = 0;
  }
  __syncthreads();
  const long long t0 = clock64();
  if (threadIdx.x < 32) {
    long long copies = 0;
    if (kWithTma && threadIdx.x == 0) {
      const size_t chunks = buf_bytes / 16384;
      size_t next = (static_cast<size_t>(blockIdx.x) * 977) % chunks;
      int n = 0;  // copy n goes to slot n % kSlots, completing its phase (n / kSlots) & 1
      for (;; ++n) {
        if (n >= kSlots) {
          moe::sm90::mbar_wait(&bar[n % kSlots], ((n - kSlots) / kSlots) & 1);
          ++copies;
        }
        if (done) break;
        moe::sm90::mbar_arrive_expect_tx(&bar[n % kSlots], 16384);
        bulk_load(moe::sm90::smem_addr(smem + (n % kSlots) * 16384), bytes + next * 16384, 16384,
                  moe::sm90::smem_addr(&bar[n % kSlots]));
        next = (next + 131) % chunks;
      }
      // The copies still in flight land before the CTA exits (not counted).
      for (int m = n - kSlots + 1; m < n; ++m) {
        if (m >= 0) moe::sm90::mbar_wait(&bar[m % kSlots], (m / kSlots) & 1);
      }
      cycles[blockIdx.x * 2 + 1] = copies;
    }
    return;
  }
  const int t = threadIdx.x - 32, nt = blockDim.x - 32;
  size_t i = (static_cast<size_t>(blockIdx.x) * 4099 * 8 + t) % buf_vecs;
  uint4 x = make_uint4(0, 0, 0, 0);
  for (int r = 0; r < rounds; ++r) {
    uint4 v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = __ldcg(buf + (i + static_cast<size_t>(j) * nt) % buf_vecs);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      x.x ^= v[j].x;
      x.y ^= v[j].y;
      x.z ^= v[j].z;
      x.w ^= v[j].w;
    }
    i = (i + static_cast<size_t>(8) * nt) % buf_vecs;
  }
  asm volatile("bar.sync 1, 352;" ::: "memory");
  if (t == 0) {
    cycles[blockIdx.x * 2] = clock64() - t0;
    done = 1;
  }
  if (x.x == 0x12345678u) sink[blockIdx.x] = x;  // never: keeps the loads
}

template <bool kWithTma>
void ldg_stream(const char* name, int sms, const uint8_t* buf, size_t buf_bytes,
                long long* cycles) {
  const int smem = kStreamSmem;
  auto kernel = &ldg_stream_kernel<kWithTma>;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int rounds = 2048;
  uint4* sink;
  CHECK(cudaMalloc(&sink, static_cast<size_t>(sms) * sizeof(uint4)));
  kernel<<<sms, 384, smem>>>(reinterpret_cast<const uint4*>(buf), buf_bytes / 16, rounds, buf,
                             buf_bytes, cycles, sink);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaFree(sink));
  const std::vector<long long> cyc = read_cycles(cycles, sms);
  double mean = 0, tma = 0;
  for (int b = 0; b < sms; ++b) {
    mean += static_cast<double>(cyc[b * 2]) / sms;
    tma += kWithTma ? static_cast<double>(cyc[b * 2 + 1]) * 16384 / sms : 0.0;
  }
  const double ldg = 16.0 * 8 * 352 * rounds;
  std::printf("%-20s %6.1f B/cycle/SM by LDG + %5.1f by TMA = %5.1f (132 SMs, buffer %zu MB)\n",
              name, ldg / mean, tma / mean, (ldg + tma) / mean, buf_bytes >> 20);
}

// The loads side in 2-CTA clusters, in rounds: each round every CTA takes in 12 x 16 KB and the
// cluster meets at a barrier. kMulticast: each CTA issues 6 of the 12 copies with
// .multicast::cluster into both CTAs (L2 reads per SM halved); else each issues its own 12.
// Whether an SM can take in more than it does alone says if L2's output or the SM's intake
// bounds the loads.
template <bool kMulticast>
__global__ void __launch_bounds__(128, 1)
    cluster_stream_kernel(const uint8_t* __restrict__ buf, size_t buf_bytes, int rounds,
                          long long* __restrict__ cycles) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = aligned_1024(smem_raw);
  __shared__ uint64_t bar;
  const uint32_t rank = moe::sm90::cluster_ctarank();
  if (threadIdx.x == 0) {
    init_barriers(&bar, 1);
  }
  moe::sm90::cluster_arrive_relaxed();
  moe::sm90::cluster_wait();
  const size_t chunks = buf_bytes / 16384;
  size_t next = (static_cast<size_t>(blockIdx.x / 2) * 977 + (kMulticast ? 0 : rank * 7)) % chunks;
  const long long t0 = clock64();
  for (int r = 0; r < rounds; ++r) {
    if (threadIdx.x == 0) {
      moe::sm90::mbar_arrive_expect_tx(&bar, kSlots * 16384);
      for (int i = 0; i < (kMulticast ? kSlots / 2 : kSlots); ++i) {
        const int slot = kMulticast ? rank * (kSlots / 2) + i : i;
        const uint32_t dst = moe::sm90::smem_addr(smem + slot * 16384);
        const uint8_t* src =
            buf + ((next + (kMulticast ? rank * 11 : 0) + i * 131) % chunks) * 16384;
        if constexpr (kMulticast) {
          asm volatile(
              "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
              " [%0], [%1], %2, [%3], %4;" ::"r"(dst),
              "l"(src), "r"(16384), "r"(moe::sm90::smem_addr(&bar)), "h"(uint16_t{3})
              : "memory");
        } else {
          bulk_load(dst, src, 16384, moe::sm90::smem_addr(&bar));
        }
      }
      next = (next + 13 * 131) % chunks;
      moe::sm90::mbar_wait(&bar, r & 1);
    }
    moe::sm90::cluster_arrive();
    moe::sm90::cluster_wait();
  }
  if (threadIdx.x == 0) cycles[blockIdx.x * 2] = clock64() - t0;
}

template <bool kMulticast>
void cluster_stream(const char* name, int sms, const uint8_t* buf, size_t buf_bytes,
                    long long* cycles) {
  const int smem = kStreamSmem;
  auto kernel = &cluster_stream_kernel<kMulticast>;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 2;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  config.blockDim = dim3(128);
  config.dynamicSmemBytes = smem;
  config.attrs = attr;
  config.numAttrs = 1;
  int clusters = 0;
  config.gridDim = dim3(sms);
  CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
  config.gridDim = dim3(2 * clusters);
  const int rounds = 512;
  CHECK(cudaLaunchKernelEx(&config, kernel, buf, buf_bytes, 8, cycles));  // warm-up
  CHECK(cudaDeviceSynchronize());
  const float ms =
      timed_ms([&] { CHECK(cudaLaunchKernelEx(&config, kernel, buf, buf_bytes, rounds, cycles)); });
  const std::vector<long long> cyc = read_cycles(cycles, sms);
  double mean = 0;
  for (int i = 0; i < 2 * clusters; ++i) mean += static_cast<double>(cyc[i * 2]) / (2 * clusters);
  const double per_sm = 16384.0 * kSlots * rounds;
  std::printf("%-20s %6.1f B/cycle/SM  %6.2f TB/s into shared memory (%d CTAs, buffer %zu MB)\n",
              name, per_sm / mean, per_sm * 2 * clusters / (ms * 1e9), 2 * clusters,
              buf_bytes >> 20);
}

// e4m3 code -> float (no NaN among the fill's codes).
float e4m3(uint8_t b) {
  const int sign = b >> 7, exp = (b >> 3) & 15, man = b & 7;
  const float v = exp == 0 ? std::ldexp(man / 8.0f, -6) : std::ldexp(1.0f + man / 8.0f, exp - 7);
  return sign ? -v : v;
}

// Logical byte (row, k) of a 128-byte swizzled tile.
uint8_t swizzled(const uint8_t* tile, int row, int k) {
  return tile[row * 128 + (((k / 16) ^ (row % 8)) * 16) + k % 16];
}

// The tile-1 product of stage 0 (one K block: k_blocks = 1) against the accumulators of variant
// kVariant's last chain: relative L2 error, so that a variant measures real products.
template <int kVariant>
double check(const std::vector<uint8_t>& host, const uint8_t* fill, const uint8_t* l2buf,
             float* sink, long long* cycles) {
  auto kernel = &rate_kernel<kVariant, false>;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  kernel<<<1, 384, kSmem>>>(fill, l2buf, 1, sink, cycles, 2);
  CHECK(cudaGetLastError());
  std::vector<float> acc(256 * 64);
  CHECK(cudaMemcpy(acc.data(), sink, acc.size() * sizeof(float), cudaMemcpyDeviceToHost));
  const uint8_t* tok = host.data();
  const uint8_t* w1 = host.data() + kTokBytes + 128 * 128;
  double err = 0, ref = 0;
  for (int t = 0; t < 256; ++t) {
    const int c = t / 128, warp = (t % 128) / 32, lane = t % 32;
    for (int i = 0; i < 64; ++i) {
      const int j = i / 4;
      const int row = c * 64 + warp * 16 + lane / 4 + (i % 4 >= 2 ? 8 : 0);
      const int col = j * 8 + (lane % 4) * 2 + i % 2;
      double d = 0;
      for (int k = 0; k < 128; ++k)
        d += double(e4m3(swizzled(tok, row, k))) * e4m3(swizzled(w1, col, k));
      err += (acc[t * 64 + i] - d) * (acc[t * 64 + i] - d);
      ref += d * d;
    }
  }
  return std::sqrt(err / ref);
}

// One timed launch of a K-block kernel (`launch(k)` runs k K blocks a CTA; a warm-up of 64
// first): cycles per K block from the CTAs' clock64 counts, the rate and the clock they imply.
template <class Launch>
void time_k_blocks(const char* name, int sms, int k_blocks, long long* cycles, Launch&& launch) {
  launch(64);  // warm-up
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  const float ms = timed_ms([&] { launch(k_blocks); });
  const std::vector<long long> cyc = read_cycles(cycles, sms);
  long long worst = 0;
  double mean = 0;
  for (long long v : cyc) {
    worst = v > worst ? v : worst;
    mean += static_cast<double>(v) / cyc.size();
  }
  const double flop = 8.0 * 1024 * 1024 * static_cast<double>(k_blocks) * sms;  // 2*2*4*m64n128k32
  const double ghz = worst / (ms * 1e6);
  std::printf("%-20s %8.1f cycles/K block (ideal 1024: %5.1f%%)  %7.1f TFLOP/s  clock ~%.2f GHz\n",
              name, mean / k_blocks, 100.0 * 1024.0 / (mean / k_blocks), flop / (ms * 1e9), ghz);
}

template <int kVariant, bool kTma>
void run(const char* name, int sms, int k_blocks, const uint8_t* fill, const uint8_t* l2buf,
         float* sink, long long* cycles) {
  auto kernel = &rate_kernel<kVariant, kTma>;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  time_k_blocks(name, sms, k_blocks, cycles,
                [&](int k) { kernel<<<sms, 384, kSmem>>>(fill, l2buf, k, sink, cycles, 0); });
}

template <bool kScales, int kMode = 0>
void run_pipe(const char* name, int sms, int k_blocks, const uint8_t* l2buf, const float* wscales,
              float* sink, long long* cycles) {
  auto kernel = &pipe_kernel<kScales, kMode>;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  time_k_blocks(name, sms, k_blocks, cycles,
                [&](int k) { kernel<<<sms, 384, kSmem>>>(l2buf, wscales, k, sink, cycles, 0); });
}

}  // namespace

// Loads with stores beside them, the stores to 16 MB (L2-resident) and to 1 GB (DRAM).
void loads_with_stores(int sms, uint8_t* big, float* sink, long long* cycles) {
  unsigned long long* stored = reinterpret_cast<unsigned long long*>(sink);
  for (size_t out_mb : {size_t{16}, size_t{1024}}) {
    uint8_t* out = big + (size_t{2} << 30);
    stream_store<kStoreNone>("l2-loads", sms, big, size_t{24} << 20, out, out_mb << 20, cycles,
                             stored);
    stream_store<kStoreLsu>("l2-loads+stg", sms, big, size_t{24} << 20, out, out_mb << 20, cycles,
                            stored);
    stream_store<kStoreBulk>("l2-loads+bulk-store", sms, big, size_t{24} << 20, out, out_mb << 20,
                             cycles, stored);
  }
}

int main(int argc, char** argv) {
  const int k_blocks = argc > 1 ? std::atoi(argv[1]) : 4096;
  int dev = 0, sms = 0, major = 0;
  CHECK(cudaGetDevice(&dev));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  if (major != 9) {
    std::printf("wgmma_rate: needs an sm_90 GPU (found compute capability %d.x); skipped\n", major);
    return 0;
  }
  // Random e4m3 codes, no NaN (0x7F / 0xFF), small magnitudes.
  std::vector<uint8_t> host(kStages * kStageBytes + kTmaRegion);
  uint32_t x = 12345;
  for (auto& b : host) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>((x >> 24) & 0xBF);  // exponent < 8: |v| < 2
  }
  uint8_t *fill, *l2buf;
  float* sink;
  long long* cycles;
  CHECK(cudaMalloc(&fill, host.size()));
  CHECK(cudaMemcpy(fill, host.data(), host.size(), cudaMemcpyHostToDevice));
  CHECK(cudaMalloc(&l2buf, 64 * 16384));
  CHECK(cudaMemset(l2buf, 0x11, 64 * 16384));
  CHECK(cudaMalloc(&sink, static_cast<size_t>(sms) * 256 * sizeof(float)));
  CHECK(cudaMalloc(&cycles, static_cast<size_t>(sms) * 2 * sizeof(long long)));
  // The pipeline rows' weight scales: [4][k_blocks] (gate / up of two tiles), near 1.
  float* wscales;
  {
    std::vector<float> ws(static_cast<size_t>(4) * k_blocks);
    for (size_t i = 0; i < ws.size(); ++i) ws[i] = 1.0f + 1e-4f * static_cast<float>(i % 97);
    CHECK(cudaMalloc(&wscales, ws.size() * sizeof(float)));
    CHECK(cudaMemcpy(wscales, ws.data(), ws.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  std::printf("wgmma_rate: %d SMs, %d K blocks per CTA\n", sms, k_blocks);
  std::printf("check (relative L2 of tile 1, one K block): ss %.2e, rs %.2e\n",
              check<kSS>(host, fill, l2buf, sink, cycles),
              check<kRS>(host, fill, l2buf, sink, cycles));
  uint8_t* big;
  const size_t big_bytes = size_t{4} << 30;
  CHECK(cudaMalloc(&big, big_bytes));
  CHECK(cudaMemset(big, 0x22, big_bytes));
  if (argc > 2 && std::string(argv[2]) == "stores") {  // `wgmma_rate K stores`: these rows only
    for (int rep = 0; rep < 2; ++rep) loads_with_stores(sms, big, sink, cycles);
    return 0;
  }
  const bool compute_only = argc > 2 && std::string(argv[2]) == "compute";  // the K-block rows
  for (int rep = 0; rep < (compute_only ? 0 : 2); ++rep) {
    for (int slots : {3, 6, 9, 12}) stream("l2-stream", sms, big, size_t{24} << 20, cycles, slots);
    // Fewer SMs: a per-SM intake limit keeps the bytes per cycle per SM, an aggregate L2 one
    // gives each SM more.
    for (int n : {sms / 2, sms / 4, 8})
      stream("l2-stream-fewer-sms", n, big, size_t{24} << 20, cycles);
    for (int slots : {3, 6, 9, 12}) stream("dram-stream", sms, big, big_bytes, cycles, slots);
    ldg_stream<false>("l2-ldg", sms, big, size_t{24} << 20, cycles);
    ldg_stream<true>("l2-ldg+tma", sms, big, size_t{24} << 20, cycles);
    cluster_stream<false>("l2-cluster-rounds", sms, big, size_t{24} << 20, cycles);
    cluster_stream<true>("l2-multicast-rounds", sms, big, size_t{24} << 20, cycles);
    loads_with_stores(sms, big, sink, cycles);
  }
  for (int rep = 0; rep < 2; ++rep) {
    run<kSSN256, false>("ss-n256", sms, k_blocks, fill, l2buf, sink, cycles);
    run<kSSNoPromote, false>("ss-nopromote", sms, k_blocks, fill, l2buf, sink, cycles);
    run<kSS, false>("ss", sms, k_blocks, fill, l2buf, sink, cycles);
    run<kRS, false>("rs", sms, k_blocks, fill, l2buf, sink, cycles);
    run<kSSN64, false>("ss-n64-overlap", sms, k_blocks, fill, l2buf, sink, cycles);
    run<kSSN256, true>("ss-n256+tma", sms, k_blocks, fill, l2buf, sink, cycles);
    run<kSSNoPromote, true>("ss-nopromote+tma", sms, k_blocks, fill, l2buf, sink, cycles);
    run<kSS, true>("ss+tma", sms, k_blocks, fill, l2buf, sink, cycles);
    run<kRS, true>("rs+tma", sms, k_blocks, fill, l2buf, sink, cycles);
    run<kSSN64, true>("ss-n64-overlap+tma", sms, k_blocks, fill, l2buf, sink, cycles);
    run_pipe<false>("ss-pipeline", sms, k_blocks, l2buf, wscales, sink, cycles);
    run_pipe<true>("ss-pipeline+scales", sms, k_blocks, l2buf, wscales, sink, cycles);
    run_pipe<false, 1>("ss-pipeline-unordered", sms, k_blocks, l2buf, wscales, sink, cycles);
    run_pipe<false, 2>("ss-pipeline-32KB", sms, k_blocks, l2buf, wscales, sink, cycles);
  }
  return 0;
}
