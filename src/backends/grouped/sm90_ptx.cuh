// Hopper (sm_90a) primitives: shared-memory accesses, mbarriers, clusters, named barriers, TMA
// loads (multicast too), cp.async, wgmma, stmatrix and register reconfiguration. Thin inline-PTX
// wrappers; every kernel that drives the tensor cores builds on these.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace moe::sm90 {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier ----------------------------------------------------------------------------

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}

/// Makes barrier initialisation visible to the async proxy (TMA) and the other threads.
__device__ __forceinline__ void fence_barrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t phase) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT_%=;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(phase)
      : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

// ---- clusters (sm_90) ----------------------------------------------------------------------
// A thread block cluster's CTAs see each other's shared memory (shared::cluster addresses,
// from mapa). Used by the 2-CTA variant of the grouped GEMM (sm90_grouped_gemm.cuh).

/// This CTA's rank in its cluster (%cluster_ctarank).
__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

/// The cluster's index in the grid, x dimension (%clusterid.x), and the number of clusters
/// (%nclusterid.x).
__device__ __forceinline__ uint32_t cluster_id_x() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(r));
  return r;
}
__device__ __forceinline__ uint32_t num_clusters_x() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%nclusterid.x;" : "=r"(r));
  return r;
}

/// Cluster barrier, split in two: every thread of every CTA of the cluster arrives, then
/// waits. `relaxed`: the arrive orders no memory accesses (a barrier initialisation is made
/// visible by fence_barrier_init instead); the default arrive releases and the wait acquires
/// at cluster scope. NOTE: not .aligned, so warps need not be converged.
__device__ __forceinline__ void cluster_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");
}
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait;" ::: "memory");
}

/// The shared::cluster address of the variable at shared::cta address `addr` in the CTA of
/// rank `cta` of this cluster. Offsets carry over: mapa(a, r) + d == mapa(a + d, r).
__device__ __forceinline__ uint32_t mapa_shared(uint32_t addr, uint32_t cta) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(addr), "r"(cta));
  return r;
}

/// Arrives (one arrival, result discarded) on the mbarrier at shared::cluster address
/// `cluster_addr` (from mapa_shared), possibly in another CTA of the cluster. As CUTLASS's
/// ClusterBarrier::arrive(cta_id, pred).
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t cluster_addr) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(cluster_addr) : "memory");
}

// ---- shared memory -------------------------------------------------------------------------
// NOTE: a shared pointer that went through an integer is generic: plain C++ accesses through
// it compile to LD.E/ST.E (global-like latency). Align the dynamic buffer by an offset from
// the extern __shared__ array instead (sm90_grouped_gemm.cuh); these name the space where a
// vector width or the async proxy needs it.

__device__ __forceinline__ uint4 ld_shared_v4(const void* p) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(smem_addr(p)));
  return v;
}

__device__ __forceinline__ float2 ld_shared_f2(const void* p) {
  float2 v;
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];" : "=f"(v.x), "=f"(v.y) : "r"(smem_addr(p)));
  return v;
}

__device__ __forceinline__ void st_shared_u8(void* p, uint8_t v) {
  asm volatile("st.shared.u8 [%0], %1;" ::"r"(smem_addr(p)), "h"(static_cast<uint16_t>(v))
               : "memory");
}

__device__ __forceinline__ void st_shared_u16(void* p, uint16_t v) {
  asm volatile("st.shared.u16 [%0], %1;" ::"r"(smem_addr(p)), "h"(v) : "memory");
}

__device__ __forceinline__ void st_shared_u32(void* p, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;" ::"r"(smem_addr(p)), "r"(v) : "memory");
}

__device__ __forceinline__ uint32_t ld_shared_u32(const void* p) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(smem_addr(p)) : "memory");
  return v;
}

// ---- named barriers -----------------------------------------------------------------------

/// bar.sync on named barrier `id` (1..15; 0 is __syncthreads) among kThreads threads (a
/// multiple of 32, e.g. one warpgroup); it also orders their shared-memory accesses.
template <int kThreads>
__device__ __forceinline__ void named_barrier_sync(int id) {
  static_assert(kThreads % 32 == 0, "named barriers count whole warps");
  asm volatile("bar.sync %0, %1;" ::"r"(id), "n"(kThreads) : "memory");
}

// ---- cp.async (4-byte, global -> shared) ---------------------------------------------------

__device__ __forceinline__ void cp_async_4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_addr(dst)),
               "l"(reinterpret_cast<uint64_t>(src))
               : "memory");
}

/// Waits for all of this thread's cp.async copies (other threads' need a barrier after it).
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

// ---- TMA ---------------------------------------------------------------------------------

__device__ __forceinline__ void tma_prefetch_desc(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar,
                                            int32_t c0, int32_t c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1)
      : "memory");
}

__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar,
                                            int32_t c0, int32_t c1, int32_t c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

/// tma_load_2d multicast: the box lands at dst's CTA-relative offset in every CTA of the
/// cluster named in cta_mask (bit r: rank r), and each of those CTAs' mbarrier at bar's offset
/// gets the box's bytes as complete_tx. Issued by one CTA for all of them.
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const CUtensorMap* map,
                                                      uint64_t* bar, int32_t c0, int32_t c1,
                                                      uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%3, %4}], [%2], %5;" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "h"(cta_mask)
      : "memory");
}

// ---- Bulk copies, shared -> global (the async proxy) ------------------------------------

/// Makes this thread's generic-proxy writes to shared memory visible to the async proxy (a
/// bulk copy or TMA store that another thread issues after a barrier).
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/// `bytes` (a multiple of 16; both addresses 16-byte aligned) from shared memory to global
/// memory, in this thread's current bulk group.
__device__ __forceinline__ void bulk_copy_s2g(void* dst, const void* src, uint32_t bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(
                   reinterpret_cast<uint64_t>(dst)),
               "r"(smem_addr(src)), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}

/// Waits until this thread's committed bulk copies have read their shared-memory sources.
__device__ __forceinline__ void bulk_wait_read_all() {
  asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
}

/// Waits until this thread's committed bulk copies are complete (written to global memory).
__device__ __forceinline__ void bulk_wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

// ---- wgmma -------------------------------------------------------------------------------

/// Shared-memory matrix descriptor for a K-major tile written by TMA with 128-byte swizzle:
/// rows of 64 bf16 (128 B), 8-row atoms of 1024 B.
__device__ __forceinline__ uint64_t smem_desc_sw128(const void* p) {
  const uint64_t addr = smem_addr(p);
  uint64_t desc = 0;
  desc |= (addr & 0x3FFFF) >> 4;      // start address
  desc |= uint64_t{16 >> 4} << 16;    // leading byte offset (unused for swizzled K-major)
  desc |= uint64_t{1024 >> 4} << 32;  // stride byte offset: one 8-row atom
  desc |= uint64_t{1} << 62;          // 128-byte swizzle
  return desc;
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

/// stmatrix .trans: stores kNum (1, 2 or 4) 8x8 b16 matrices transposed. Matrix m comes from
/// r[m] of every lane in the mma fragment layout (lane l: row l/4, columns 2(l%4), +1, the
/// lower column in the low half); lanes 8m..8m+7 give the shared addresses of its stored rows
/// (16 bytes each, 16-byte aligned), stored row i holding column i of the fragment.
template <int kNum>
__device__ __forceinline__ void stmatrix_trans(void* row, const uint32_t (&r)[kNum]) {
  static_assert(kNum == 1 || kNum == 2 || kNum == 4, "stmatrix stores 1, 2 or 4 matrices");
  const uint32_t a = smem_addr(row);
  if constexpr (kNum == 1) {
    asm volatile("stmatrix.sync.aligned.m8n8.x1.trans.shared.b16 [%0], {%1};" ::"r"(a), "r"(r[0])
                 : "memory");
  } else if constexpr (kNum == 2) {
    asm volatile("stmatrix.sync.aligned.m8n8.x2.trans.shared.b16 [%0], {%1, %2};" ::"r"(a),
                 "r"(r[0]), "r"(r[1])
                 : "memory");
  } else {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(a),
                 "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
                 : "memory");
  }
}

/// stmatrix (not transposed), four 8x8 b16 matrices: matrix m comes from r[m] of every lane in
/// the mma fragment layout (lane l: row l/4, columns 2(l%4), +1); lanes 8m..8m+7 give the
/// shared addresses of its rows 0..7 (16 bytes each, 16-byte aligned).
__device__ __forceinline__ void stmatrix_x4(void* row, const uint32_t (&r)[4]) {
  asm volatile(
      "stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(smem_addr(row)),
      "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
      : "memory");
}

/// Keeps the compiler from moving accumulator reads/writes across wgmma boundaries.
__device__ __forceinline__ void reg_fence(float& r) { asm volatile("" : "+f"(r)::"memory"); }

template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegs));
}

}  // namespace moe::sm90
