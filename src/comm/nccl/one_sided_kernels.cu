// The one_sided kernels (contract in one_sided_kernels.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <nccl_device.h>

#include <algorithm>
#include <cuda/atomic>

#include "comm/nccl/one_sided_kernels.h"
#include "core/cuda_check.h"
#include "core/launch.cuh"
#include "moe/errors.h"

namespace moe::ep {
namespace {

constexpr int kTile = kFusedDispatchMaxTokens;  // tokens one block plans (a thread each)
constexpr int kDispatchThreads = kTile;         // the dispatch kernel: a warp per (token, part)
constexpr int kDispatchWarps = kDispatchThreads / 32;
static_assert(kMaxRanks <= kDispatchThreads, "a thread per rank in the dispatch's block 0");
constexpr int kCopyUnroll = 4;      // 16-byte chunks in flight per lane before their stores
constexpr int kTargetWarps = 2048;  // warps a few-token dispatch spreads its rows over
constexpr int kGatherThreads = 256;
constexpr int kSplitGatherMaxTokens = 256;  // more tokens: one gather block per token
constexpr int kInitThreads = 256;
// Barrier epochs: chunk c's dispatch reaches 2c + 2 (block 0 stores it once every peer's
// dispatch has arrived: their `arrivals` counters at (c + 1) * kArrivalsPerChunk), its
// combine 2c + 3 -- read as the stored epoch + 1, stored by nobody: a combine's blocks need
// no completion count, and the next dispatch's +2 lands past it. A peer's arrival at a later
// combine also satisfies a wait (it passed this one to get there).
constexpr uint32_t kEpochsPerChunk = 2;

using SysAtomic = cuda::atomic_ref<uint32_t, cuda::thread_scope_system>;

__device__ inline uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

#if defined(MOE_ONE_SIDED_TRACE)
constexpr bool kTrace = true;
__device__ unsigned long long g_trace[kTraceRecords][kTraceFields];
#else
constexpr bool kTrace = false;
#endif

/// The trace fields that keep the earliest time over blocks (the others the latest).
[[maybe_unused]] __host__ __device__ constexpr bool trace_earliest(int f) {
  return f == kTraceDispatchStart || f == kTracePrepareStart || f == kTraceGatherStart ||
         f == kTraceDispatchEntry || f == kTraceGatherEntry;
}

/// The chunk's epoch for trace(): read only in a tracing build.
__device__ inline uint32_t trace_epoch(const OneSidedParams& p) { return kTrace ? *p.epoch : 0; }

/// Tracing build only: thread 0 of the block records the time into field f of the record of
/// the chunk whose dispatch started at `epoch` -- the earliest block for the start fields
/// (stored inverted, so that one atomicMax serves both), the latest for the others.
__device__ inline void trace_at(TraceField f, uint32_t epoch, uint64_t when) {
#if defined(MOE_ONE_SIDED_TRACE)
  if (threadIdx.x != 0) return;
  const bool earliest = trace_earliest(f);
  const unsigned long long now = when;
  atomicMax(&g_trace[(epoch / kEpochsPerChunk) % kTraceRecords][f], earliest ? ~now : now);
#else
  (void)f, (void)epoch, (void)when;
#endif
}
__device__ inline void trace(TraceField f, uint32_t epoch) {
  if constexpr (kTrace) trace_at(f, epoch, global_ns());
}
/// Tracing build: the time once `v` is available (its load done).
__device__ inline uint64_t time_after(uint64_t v) {
  if constexpr (!kTrace) return 0;
  if (v == 0x5eed5eed5eed5eedull) asm volatile("trap;");  // a use of v: waits for its load
  return global_ns();
}
__device__ inline uint64_t trace_now() {
  if constexpr (!kTrace) return 0;
  return global_ns();
}

/// A block-wide point for trace() in a tracing build (no cost otherwise).
__device__ inline void trace_sync() {
  if constexpr (kTrace) __syncthreads();
}

/// Rank `peer`'s copy of byte `offset` of the window, from the window's LSA base and stride
/// carried in the params (ncclGetLsaPointer computes the same, but loads them from the
/// window handle in device memory: a dependent load in front of every kernel's first
/// remote access).
template <class T>
__device__ inline T* peer_ptr(const OneSidedParams& p, size_t offset, int peer) {
  return reinterpret_cast<T*>(
      nccl::utility::add4G(p.lsa_base, peer * static_cast<int>(p.lsa_stride_4g)) + offset);
}

template <class T>
__device__ inline T* local_ptr(const OneSidedParams& p, size_t offset) {
  return peer_ptr<T>(p, offset, p.rank);
}

/// The expert padding rows of destination d carry: one d does not own (ExpertPartition's
/// foreign_expert).
__device__ inline int32_t foreign_expert(const OneSidedParams& p, int d) {
  return p.ep_size == 1 ? -1 : ((d + 1) % p.ep_size) * p.plan.experts_per_rank;
}

/// Arrival at a cross-rank barrier: threads < ep (but this rank's) store `epoch`, the value
/// this barrier instance reaches (see kEpochsPerChunk), into their peer's inbox, release at
/// system scope. Called after bar.sync, the release is cumulative over the block's writes
/// before it (NCCL's LSA barrier and cooperative groups' grid sync rely on the same), so no
/// thread fences on its own; everything ordered before the launch is covered too.
__device__ inline void arrive(const OneSidedParams& p, uint32_t epoch) {
  const int peer = threadIdx.x;
  if (peer < p.ep_size && peer != p.rank) {
    SysAtomic(*peer_ptr<uint32_t>(p, p.layout.inbox_at + p.rank * sizeof(uint32_t), peer))
        .store(epoch, cuda::memory_order_release);
  }
}

/// A barrier's wait, by the whole block: each thread whose `wait` is set waits until peer
/// threadIdx.x's u32 slot at window offset `slots_at` + peer reaches `epoch` (a signed
/// difference, so the counters may wrap), acquire at system scope; then bar.sync, so the
/// peers' writes before their arrivals are visible to the whole block. With a deadline: a
/// peer that does not arrive within timeout_ns makes the wait give up and record (kind,
/// barrier `which`, peer) in p.error.
__device__ void wait_for_peers(const OneSidedParams& p, size_t slots_at, uint32_t epoch, int which,
                               bool wait) {
  const int peer = threadIdx.x;
  if (wait) {
    SysAtomic inbox(*local_ptr<uint32_t>(p, slots_at + peer * sizeof(uint32_t)));
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

/// The dispatch barrier's arrival, by every block once its rows are written: threads < ep
/// (but this rank's) add to this rank's slot of their peer's `arrivals` counter, release at
/// system scope after bar.sync (cumulative over the block's writes, as in arrive()). The
/// adds of one chunk total kArrivalsPerChunk whatever the grid: block 0 adds what the
/// others do not. A peer's counter at chunk c's target -- (c + 1) * kArrivalsPerChunk,
/// modulo 2^32 -- means every block of that peer's dispatch c has written its rows. No
/// completion count and no second fence: each block's release fence overlaps the others'.
__device__ inline void arrive_dispatch(const OneSidedParams& p) {
  __syncthreads();
  const int peer = threadIdx.x;
  if (peer < p.ep_size && peer != p.rank) {
    const uint32_t blocks = gridDim.x;
    const uint32_t add = blockIdx.x == 0 ? kArrivalsPerChunk - (blocks - 1) : 1u;
    uint32_t* slot = peer_ptr<uint32_t>(p, p.layout.arrivals_at + p.rank * sizeof(uint32_t), peer);
    asm volatile("red.release.sys.global.add.u32 [%0], %1;" ::"l"(slot), "r"(add) : "memory");
  }
}

/// Padding in every destination's region: rows this rank wrote last chunk (sent: p.sent_rows
/// read earlier, in shared memory) and not this one (counts = this chunk's rows per
/// destination). One block.
__device__ void pad_regions(const OneSidedParams& p, const int32_t* counts, const int32_t* sent) {
  const int k = p.top_k;
  const size_t region_at = static_cast<size_t>(p.rank) * p.layout.region_rows;
  for (int d = 0; d < p.ep_size; ++d) {
    const int from = counts[d], to = sent[d];
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

/// One lane's share of a row copy: 16-byte chunks lane, lane + 32, ...; kCopyUnroll
/// chunks loaded before any is stored. `bytes` a multiple of 16, both pointers 16-aligned.
__device__ inline void warp_copy16(const uint8_t* src, uint8_t* dst, size_t bytes, int lane) {
  const auto* s = reinterpret_cast<const uint4*>(src);
  auto* d = reinterpret_cast<uint4*>(dst);
  const int n = static_cast<int>(bytes / 16);
  for (int i0 = lane; i0 < n; i0 += 32 * kCopyUnroll) {
    uint4 v[kCopyUnroll];
#pragma unroll
    for (int u = 0; u < kCopyUnroll; ++u) {
      const int i = i0 + u * 32;
      if (i < n) v[u] = __ldg(s + i);
    }
#pragma unroll
    for (int u = 0; u < kCopyUnroll; ++u) {
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

/// The ranks token t has an expert on (bit d: rank d). The ids are loaded kIdBatch at a
/// time, all in flight before any is used (a plain loop over top_k waits for each load).
__device__ inline uint64_t token_mask(const OneSidedParams& p, int t) {
  constexpr int kIdBatch = 8;
  const int per_rank = p.plan.experts_per_rank;
  const int num_experts = per_rank * p.ep_size;
  const int32_t* ids = p.topk_ids + static_cast<int64_t>(t) * p.top_k;
  uint64_t mask = 0;
  for (int j0 = 0; j0 < p.top_k; j0 += kIdBatch) {
    int id[kIdBatch];
#pragma unroll
    for (int u = 0; u < kIdBatch; ++u) id[u] = j0 + u < p.top_k ? __ldg(ids + j0 + u) : -1;
#pragma unroll
    for (int u = 0; u < kIdBatch; ++u) {
      if (id[u] >= 0 && id[u] < num_experts) mask |= uint64_t{1} << (id[u] / per_rank);
    }
  }
  return mask;
}

__device__ inline int warp_sum(int v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

__device__ inline unsigned lanes_below() {
  unsigned m;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(m));
  return m;
}

// count (more than one tile of tokens): per tile of kTile tokens, each token's destination
// mask (dest_mask) and the tile's rows per destination (tile_counts [tiles, ep]).
__global__ void __launch_bounds__(kTile) one_sided_count_kernel(OneSidedParams p) {
  __shared__ int counts[kMaxRanks];
  pdl_wait();  // launched with programmatic dependent launch: the ids' producer is done
  pdl_launch_dependents();
  const uint32_t traced = trace_epoch(p);
  trace(kTracePrepareStart, traced);
  const int t = blockIdx.x * kTile + threadIdx.x;
  for (int d = threadIdx.x; d < p.ep_size; d += kTile) counts[d] = 0;
  const uint64_t mask = t < p.num_tokens ? token_mask(p, t) : 0;
  if (t < p.num_tokens) p.plan.dest_mask[t] = mask;
  __syncthreads();
  for (int d = 0; d < p.ep_size; ++d) {
    const int n = __popc(__ballot_sync(0xFFFFFFFFu, (mask >> d) & 1));
    if (threadIdx.x % 32 == 0 && n > 0) atomicAdd(&counts[d], n);
  }
  __syncthreads();
  for (int d = threadIdx.x; d < p.ep_size; d += kTile) {
    p.tile_counts[blockIdx.x * p.ep_size + d] = counts[d];
  }
  trace(kTracePrepareEnd, traced);  // thread 0, past the block's last bar.sync
}

/// The small parts of a token's row (ids, weights, scales) as 4-byte words, lane l holding
/// words l, l + 32, ...: loaded with the first round of data, stored after the plan.
constexpr int kSmallWords = 2;  // per lane and part: rows up to 256 bytes (more: copied later)
struct SmallParts {
  uint32_t ids[kSmallWords], weights[kSmallWords], scales[kSmallWords];
};
__device__ inline void load_words(const uint32_t* src, int words, int lane,
                                  uint32_t (&v)[kSmallWords]) {
#pragma unroll
  for (int u = 0; u < kSmallWords; ++u) {
    const int i = lane + 32 * u;
    if (i < words) v[u] = src[i];
  }
}
__device__ inline void store_words(uint32_t* dst, int words, int lane,
                                   const uint32_t (&v)[kSmallWords]) {
#pragma unroll
  for (int u = 0; u < kSmallWords; ++u) {
    const int i = lane + 32 * u;
    if (i < words) dst[i] = v[u];
  }
}

// dispatch: every token written straight into its region of each owner's window. A warp per
// (token, part): `parts` column ranges of a row (several when few tokens, so that enough
// warps move the bytes). Each block first plans its tile of kTile tokens (a thread per
// token; one tile -- kCounted false -- when the chunk has at most kTile tokens, else the
// count kernel's masks and per-tile counts): its tokens' rows in each destination's region
// (tokens ascending) by warp ballots, no scan. The first round of a warp's data loads is in
// flight during the plan. Block 0 pads; every block arrives (arrive_dispatch) once its rows
// are written, and block 0 waits for every peer's arrivals.
template <bool kCounted>
__global__ void __launch_bounds__(kDispatchThreads, 3) one_sided_dispatch_kernel(OneSidedParams p) {
  constexpr int kWarps = kDispatchWarps;
  __shared__ int warp_counts[kWarps][kMaxRanks];  // the tile's rows of d per warp of tokens
  __shared__ int before[kMaxRanks];               // rows of d from earlier tiles
  __shared__ int totals[kMaxRanks];               // the chunk's rows of d
  __shared__ int rows[kWarps][kMaxRanks];         // the block's tokens' rows in d's region
  __shared__ uint64_t masks[kWarps];              // the block's tokens' destinations
  __shared__ int sent[kMaxRanks];                 // block 0: p.sent_rows, for the padding
  const uint64_t entered = trace_now();
  // Launched with programmatic dependent launch: the previous kernel (x's and the ids'
  // producer, or the last combine) is done after the wait. Dependents may launch at once:
  // every kernel launched that way waits the same before reading anything.
  pdl_wait();
  pdl_launch_dependents();
  const uint64_t waited = trace_now();
  // The barrier's epoch, loaded first (only this kernel's block 0 stores it, at its end).
  const uint32_t next = *p.epoch + kEpochsPerChunk;
  const uint32_t traced = trace_epoch(p);
  trace(kTraceDispatchStart, traced);
  trace_at(kTraceDispatchEntry, traced, entered);
  if (blockIdx.x == 0) trace_at(kTraceDispatchWaited, traced, waited);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int unit = blockIdx.x * kWarps + warp;
  const int t = unit / p.parts, part = unit % p.parts;  // this warp's token and row part
  const int first = blockIdx.x * kWarps / p.parts;      // the block's first token
  const bool active = t < p.num_tokens;

  // This warp's share of its row: 16-byte chunks [c, end) when the row allows them.
  const bool vec = (reinterpret_cast<uintptr_t>(p.x_data) | p.data_row_bytes) % 16 == 0;
  const int chunks = static_cast<int>(p.data_row_bytes / 16);
  const int per_part = (chunks + p.parts - 1) / p.parts;
  const int c_begin = part * per_part, c_end = min(chunks, c_begin + per_part);
  const uint4* src = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.x_data) +
                                                    static_cast<size_t>(t) * p.data_row_bytes);
  uint4 v[kCopyUnroll];
  auto load_round = [&](int c) {
#pragma unroll
    for (int u = 0; u < kCopyUnroll; ++u) {
      const int i = c + lane + 32 * u;
      if (i < c_end) v[u] = __ldg(src + i);
    }
  };
  const int id_words = p.top_k;
  const int scale_words = static_cast<int>(p.scale_row_bytes / 4);
  const bool small_in_registers = scale_words <= 32 * kSmallWords && id_words <= 32 * kSmallWords;
  SmallParts small;
  // Block 0: p.sent_rows (for the padding), held in a register until the mask is made (a
  // store to shared memory would wait for the load before the loads below are issued).
  const int sent_d = blockIdx.x == 0 && tid < p.ep_size ? p.sent_rows[tid] : 0;
  if (active && vec) load_round(c_begin);
  if (active && part == 0 && small_in_registers) {
    load_words(reinterpret_cast<const uint32_t*>(p.topk_ids) + static_cast<size_t>(t) * id_words,
               id_words, lane, small.ids);
    load_words(
        reinterpret_cast<const uint32_t*>(p.topk_weights) + static_cast<size_t>(t) * id_words,
        id_words, lane, small.weights);
    if (scale_words > 0) {
      load_words(reinterpret_cast<const uint32_t*>(static_cast<const uint8_t*>(p.x_scales) +
                                                   static_cast<size_t>(t) * p.scale_row_bytes),
                 scale_words, lane, small.scales);
    }
  }

  // The plan of the block's tile: thread tid plans token tile_start + tid.
  const int tile_start = kCounted ? first / kTile * kTile : 0;
  const int last = min((static_cast<int>(blockIdx.x) * kWarps + kWarps - 1) / p.parts,
                       p.num_tokens - 1);  // the block's last token
  const int i = tile_start + tid;
  uint64_t mask = 0;
  if (i < p.num_tokens) mask = kCounted ? p.plan.dest_mask[i] : token_mask(p, i);
  if (kTrace && blockIdx.x == 0) trace_at(kTraceMasked, traced, time_after(mask));
  if (kCounted) {
    // Rows of each destination in earlier tiles, and in the whole chunk: a warp per rank.
    const int tiles = (p.num_tokens + kTile - 1) / kTile;
    const int tile = tile_start / kTile;
    for (int d = warp; d < p.ep_size; d += kWarps) {
      int b = 0, all = 0;
      for (int j = lane; j < tiles; j += 32) {
        const int n = p.tile_counts[j * p.ep_size + d];
        all += n;
        b += j < tile ? n : 0;
      }
      b = warp_sum(b);
      all = warp_sum(all);
      if (lane == 0) before[d] = b, totals[d] = all;
    }
  } else {
    for (int d = tid; d < p.ep_size; d += kDispatchThreads) before[d] = 0;
  }
  if (blockIdx.x == 0 && tid < p.ep_size) sent[tid] = sent_d;
  const bool mine = i >= first && i <= last;  // thread tid plans one of the block's tokens
  for (int d = 0; d < p.ep_size; ++d) {
    const unsigned ballot = __ballot_sync(0xFFFFFFFFu, (mask >> d) & 1);
    if (lane == 0) warp_counts[warp][d] = __popc(ballot);
    if (mine) rows[i - first][d] = __popc(ballot & lanes_below());
  }
  if (mine) masks[i - first] = mask;
  __syncthreads();
  if (mine) {
    // The block that holds the token's part 0 records its rows for the combine.
    const bool record = i * p.parts / kWarps == static_cast<int>(blockIdx.x);
    for (int d = 0; d < p.ep_size; ++d) {
      int row = -1;
      if ((mask >> d) & 1) {
        row = before[d] + rows[i - first][d];
        for (int w = 0; w < warp; ++w) row += warp_counts[w][d];
        rows[i - first][d] = row;
      }
      if (record) p.plan.row_of[static_cast<int64_t>(i) * p.ep_size + d] = row;
    }
  }
  if (!kCounted) {
    for (int d = tid; d < p.ep_size; d += kDispatchThreads) {
      int n = 0;
      for (int w = 0; w < kWarps; ++w) n += warp_counts[w][d];
      totals[d] = n;
    }
  }
  __syncthreads();
  if (blockIdx.x == 0) trace(kTracePlanned, traced);
  if (blockIdx.x == 0) {
    // The rows each destination gets from me: its combine pushes them back when few.
    for (int d = tid; d < p.ep_size; d += kDispatchThreads) {
      *peer_ptr<uint32_t>(p, p.layout.counts_at + p.rank * sizeof(uint32_t), d) = totals[d];
    }
    pad_regions(p, totals, sent);
  }

  if (active) {
    const int b = t - first;
    const uint64_t dests = masks[b];
    const size_t region_at = static_cast<size_t>(p.rank) * p.layout.region_rows;
    if (vec) {
      for (int c = c_begin; c < c_end; c += 32 * kCopyUnroll) {
        if (c != c_begin) load_round(c);
        for (uint64_t m = dests; m != 0; m &= m - 1) {
          const int d = __ffsll(static_cast<long long>(m)) - 1;
          uint4* dst =
              peer_ptr<uint4>(p, p.layout.data_at + (region_at + rows[b][d]) * p.data_row_bytes, d);
#pragma unroll
          for (int u = 0; u < kCopyUnroll; ++u) {
            const int at = c + lane + 32 * u;
            if (at < c_end) dst[at] = v[u];
          }
        }
      }
    } else if (part == 0) {  // parts == 1 (the host's choice for such rows)
      for (uint64_t m = dests; m != 0; m &= m - 1) {
        const int d = __ffsll(static_cast<long long>(m)) - 1;
        warp_copy(
            src,
            peer_ptr<uint8_t>(p, p.layout.data_at + (region_at + rows[b][d]) * p.data_row_bytes, d),
            p.data_row_bytes, lane);
      }
    }
    if (part == 0) {
      const size_t id_row = id_words * sizeof(int32_t);
      for (uint64_t m = dests; m != 0; m &= m - 1) {
        const int d = __ffsll(static_cast<long long>(m)) - 1;
        const size_t row = region_at + rows[b][d];
        auto* ids = peer_ptr<uint32_t>(p, p.layout.ids_at + row * id_row, d);
        auto* weights = peer_ptr<uint32_t>(p, p.layout.weights_at + row * id_row, d);
        auto* scales = peer_ptr<uint32_t>(p, p.layout.scales_at + row * p.scale_row_bytes, d);
        if (small_in_registers) {
          store_words(ids, id_words, lane, small.ids);
          store_words(weights, id_words, lane, small.weights);
          if (scale_words > 0) store_words(scales, scale_words, lane, small.scales);
        } else {
          warp_copy(p.topk_ids + static_cast<size_t>(t) * id_words, ids, id_row, lane);
          warp_copy(p.topk_weights + static_cast<size_t>(t) * id_words, weights, id_row, lane);
          if (p.scale_row_bytes > 0) {
            warp_copy(static_cast<const uint8_t*>(p.x_scales) + t * p.scale_row_bytes, scales,
                      p.scale_row_bytes, lane);
          }
        }
      }
    }
  }
  trace_sync();
  trace(kTraceRowsDone, traced);
  arrive_dispatch(p);
  if (blockIdx.x != 0) return;
  // Block 0 waits for every peer's whole dispatch (the grid ends only when it has).
  trace(kTraceCounted, traced);
  wait_for_peers(p, p.layout.arrivals_at, next / kEpochsPerChunk * kArrivalsPerChunk, 2,
                 tid < p.ep_size && tid != p.rank);
  trace(kTraceDispatchEnd, traced);
  // NOTE: a block of this grid that starts only after this store (possible: the peers'
  // arrivals do not wait for my blocks) reads the new epoch: it uses it for nothing but its
  // trace record (tracing builds file its phases under the next chunk).
  if (tid == 0) *p.epoch = next;
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

/// kV partials of type P at `src` as floats: one 16-byte load when `whole`, else element by
/// element up to `valid`.
template <class P, int kV>
__device__ inline void load_partials(const P* src, bool whole, int valid, float (&v)[kV]) {
  if (whole) {
    const uint4 q = *reinterpret_cast<const uint4*>(src);
    const P* h = reinterpret_cast<const P*>(&q);
#pragma unroll
    for (int j = 0; j < kV; ++j) v[j] = to_float(h[j]);
  } else {
#pragma unroll
    for (int j = 0; j < kV; ++j) v[j] = j < valid ? to_float(src[j]) : 0.0f;
  }
}

/// Token t's partial row in each destination's window (-1: t has no expert there) and how it
/// comes back (pull: a round trip to the owner's `out`; push: from my ll section), into
/// shared memory by threads < ep. Plan buffers only (written by this rank's dispatch).
__device__ inline void load_partial_rows(const OneSidedParams& p, int t, int* row, bool* pushed) {
  const int d = threadIdx.x;
  if (d < p.ep_size && t < p.num_tokens) {
    row[d] = p.plan.row_of[t * p.ep_size + d];
    // sent_rows: the rows this chunk sent d (the dispatch's padding step stored them).
    pushed[d] = d != p.rank && p.sent_rows[d] <= p.layout.ll_rows;
  }
}

/// One 16-byte ll line {data, flag, data, flag}.
__device__ inline void store_ll(uint4* dst, uint32_t a, uint32_t b, uint32_t flag) {
  asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(a), "r"(flag),
               "r"(b), "r"(flag)
               : "memory");
}
/// Polls one ll line until both halves carry `flag` (or the deadline passes: then records
/// the failure, which = 4, and returns what it has). Its 8 data bytes.
__device__ inline uint2 load_ll(const OneSidedParams& p, const uint4* src, uint32_t flag,
                                int peer) {
  uint4 v;
  uint64_t start = 0;
  for (;;) {
    asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(src)
                 : "memory");
    if (v.y == flag && v.w == flag) break;
    const uint64_t now = global_ns();
    if (start == 0) start = now;
    const uint64_t waited = now - start;
    if (waited > 1000000 && *static_cast<volatile int32_t*>(p.error) != 0) break;
    if (waited > p.timeout_ns) {
      if (atomicCAS(&p.error[0], 0, kBarrierTimeout) == 0) {
        p.error[1] = 4;
        p.error[2] = peer;
        __threadfence_system();
      }
      break;
    }
  }
  return make_uint2(v.x, v.z);
}

// gather (see the top): blocks [0, push_blocks) push -- block (s, r, range) stores row r of
// source s's region of my `out` into s's ll section when s sent me at most ll_rows rows --
// the rest gather: block (token t, column range). Push blocks come first in the grid, so
// they are scheduled no later than any gathering block that may poll for a peer's pushes.
// Each thread of a gather block sums 16 bytes of partials (kV) per destination in ascending
// rank order, fp32, rounded once to T; every pulled peer's loads in flight before the sum.
// Zero tokens: one gather block (the arrival). T: the output's type; P: the partials' (f32,
// or T: ep_partial_dtype).
template <class T, class P>
__global__ void __launch_bounds__(kGatherThreads)
    one_sided_gather_kernel(OneSidedParams p, int push_blocks, int ranges) {
  constexpr int kV = 16 / sizeof(P);
  constexpr int kBatch = 32 / kV;  // 32 partials in flight per thread
  const uint64_t entered = trace_now();
  pdl_wait();  // programmatic dependent launch: run_moe's partials are written after this
  pdl_launch_dependents();
  const uint32_t traced = trace_epoch(p) - kEpochsPerChunk;  // past this chunk's dispatch
  trace(kTraceGatherStart, traced);
  trace_at(kTraceGatherEntry, traced, entered);
  const uint32_t epoch = *p.epoch + 1;
  const size_t partial_row = p.hidden * sizeof(P);
  const int lines = static_cast<int>(p.layout.ll_row_bytes / 16);  // per ll row: 8 data bytes each
  if (static_cast<int>(blockIdx.x) < push_blocks) {
    // Push: block = (source s, row r, range of lines).
    const int per_source = p.layout.ll_rows * ranges;
    const int s = blockIdx.x / per_source;
    const int r = blockIdx.x % per_source / ranges;
    const int range = blockIdx.x % ranges;
    if (s == p.rank) return;
    const size_t region_row = static_cast<size_t>(s) * p.layout.region_rows + r;
    const auto* src = reinterpret_cast<const uint2*>(
        local_ptr<uint8_t>(p, p.layout.out_at + region_row * partial_row));
    // The first partials are loaded before the count (a row of the window either way), so
    // the two loads' latencies overlap.
    int i = range * blockDim.x + threadIdx.x;
    uint2 v = i < lines ? src[i] : make_uint2(0, 0);
    const uint32_t count = *local_ptr<uint32_t>(p, p.layout.counts_at + s * sizeof(uint32_t));
    if (count > static_cast<uint32_t>(p.layout.ll_rows) || static_cast<uint32_t>(r) >= count)
      return;
    auto* dst =
        peer_ptr<uint4>(p,
                        p.layout.ll_at + (static_cast<size_t>(p.rank) * p.layout.ll_rows + r) *
                                             p.layout.ll_row_bytes,
                        s);
    for (; i < lines; i += ranges * blockDim.x) {
      store_ll(dst + i, v.x, v.y, epoch);
      if (i + ranges * blockDim.x < lines) v = src[i + ranges * blockDim.x];
    }
    return;
  }
  const int g = blockIdx.x - push_blocks;
  const int t = g / ranges, range = g % ranges;
  if (g == 0) arrive(p, epoch);  // my partials are written (pulling peers wait for this)
  __shared__ int row[kMaxRanks];
  __shared__ bool pushed[kMaxRanks];
  load_partial_rows(p, t, row, pushed);
  __syncthreads();
  // Every peer's arrival -- past it, the peer's run_moe has read the rows I wrote, so my
  // next dispatch (which starts once this grid has ended) may overwrite them -- except
  // from an owner whose pushed rows this block polls: those lines carry this combine's
  // epoch and leave the owner after its run_moe, so they say the same one NVLink crossing
  // sooner than an arrival behind a system fence. Owners that push nothing to this block,
  // pulled ones (their partials are written) and those without my tokens are waited for:
  // a wait only for the owners pulled from let a source with nothing on a peer write into
  // that peer's window while its run_moe still read it.
  {
    const int d = threadIdx.x;
    const bool polls = t < p.num_tokens && d < p.ep_size && pushed[d] && row[d] >= 0;
    wait_for_peers(p, p.layout.inbox_at, epoch, 3, d < p.ep_size && d != p.rank && !polls);
  }
  trace(kTraceGatherBarrier, traced);
  if (t < p.num_tokens) {
    T* out = static_cast<T*>(p.out) + static_cast<size_t>(t) * p.hidden;
    // Whole vectors: every row's start 16-byte aligned for the partials, kV * sizeof(T) for
    // the output.
    const bool vectors =
        p.hidden % kV == 0 && reinterpret_cast<uintptr_t>(p.out) % (kV * sizeof(T)) == 0;
    const int stride = ranges * blockDim.x * kV;
    for (int c0 = (range * blockDim.x + threadIdx.x) * kV; c0 < p.hidden; c0 += stride) {
      const bool whole = vectors && c0 + kV <= p.hidden;
      float acc[kV] = {};
      for (int d0 = 0; d0 < p.ep_size; d0 += kBatch) {
        float part[kBatch][kV];
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
          const int d = d0 + i;
          const int r = d < p.ep_size ? row[d] : -1;
          if (r < 0) {
#pragma unroll
            for (int j = 0; j < kV; ++j) part[i][j] = 0.0f;
            continue;
          }
          if (pushed[d]) {
            // 16 bytes of partials = two ll lines of my own window, both whole (vectors).
            const auto* line =
                local_ptr<uint4>(p,
                                 p.layout.ll_at + (static_cast<size_t>(d) * p.layout.ll_rows + r) *
                                                      p.layout.ll_row_bytes) +
                c0 * sizeof(P) / 8;
            uint4 q;
            const uint2 lo = load_ll(p, line, epoch, d), hi = load_ll(p, line + 1, epoch, d);
            q.x = lo.x, q.y = lo.y, q.z = hi.x, q.w = hi.y;
            const P* h = reinterpret_cast<const P*>(&q);
#pragma unroll
            for (int j = 0; j < kV; ++j) part[i][j] = to_float(h[j]);
            continue;
          }
          const size_t at = static_cast<size_t>(p.rank) * p.layout.region_rows + r;
          load_partials<P, kV>(peer_ptr<P>(p, p.layout.out_at + at * partial_row, d) + c0, whole,
                               p.hidden - c0, part[i]);
        }
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
#pragma unroll
          for (int j = 0; j < kV; ++j) acc[j] += part[i][j];
        }
      }
      if (whole) {
        T o[kV];
#pragma unroll
        for (int j = 0; j < kV; ++j) o[j] = from_float<T>(acc[j]);
        if constexpr (kV * sizeof(T) == 16) {
          *reinterpret_cast<uint4*>(out + c0) = *reinterpret_cast<const uint4*>(o);
        } else {
          *reinterpret_cast<uint2*>(out + c0) = *reinterpret_cast<const uint2*>(o);
        }
      } else {
#pragma unroll
        for (int j = 0; j < kV; ++j) {
          if (c0 + j < p.hidden) out[c0 + j] = from_float<T>(acc[j]);
        }
      }
    }
  }
  trace_sync();
  trace(kTraceGatherEnd, traced);
}

}  // namespace

bool one_sided_trace_compiled() { return kTrace; }

void one_sided_trace_reset() {
#if defined(MOE_ONE_SIDED_TRACE)
  void* ring = nullptr;
  MOE_CUDA_CHECK(cudaGetSymbolAddress(&ring, g_trace), "one_sided trace ring");
  MOE_CUDA_CHECK(cudaMemset(ring, 0, sizeof(g_trace)), "clearing the one_sided trace");
  MOE_CUDA_CHECK(cudaDeviceSynchronize(), "clearing the one_sided trace");
#endif
}

std::vector<TraceRecord> one_sided_trace_read() {
  std::vector<TraceRecord> records;
#if defined(MOE_ONE_SIDED_TRACE)
  std::vector<unsigned long long> ring(kTraceRecords * kTraceFields);
  MOE_CUDA_CHECK(cudaMemcpyFromSymbol(ring.data(), g_trace, sizeof(g_trace)),
                 "reading the one_sided trace");
  records.resize(kTraceRecords);
  for (int r = 0; r < kTraceRecords; ++r) {
    for (int f = 0; f < kTraceFields; ++f) {
      const unsigned long long v = ring[r * kTraceFields + f];
      const bool earliest = trace_earliest(f);
      records[r].t[f] = earliest && v != 0 ? ~v : v;
    }
  }
#endif
  return records;
}

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

void launch_one_sided_dispatch(const OneSidedParams& params, cudaStream_t stream) {
  MOE_CHECK(params.ep_size >= 1 && params.ep_size <= kMaxRanks, "one_sided: ep_size ",
            params.ep_size, " outside [1, ", kMaxRanks, "]");
  MOE_CHECK(params.num_tokens <= params.layout.region_rows,
            "one_sided dispatch: ", params.num_tokens, " tokens exceed a rank's region of ",
            params.layout.region_rows, " rows");
  OneSidedParams p = params;
  const int tokens = std::max(p.num_tokens, 1);
  const bool counted = p.num_tokens > kTile;
  const bool vec = (reinterpret_cast<uintptr_t>(p.x_data) | p.data_row_bytes) % 16 == 0;
  // Parts per row: one when many tokens (a block's tokens must lie in one tile) or rows not
  // in 16-byte chunks; with few tokens, up to one 16-byte chunk per lane, so that about
  // kTargetWarps warps move the bytes.
  p.parts = 1;
  if (!counted && vec) {
    const int lane_rounds = static_cast<int>((p.data_row_bytes / 16 + 31) / 32);
    p.parts = std::clamp(kTargetWarps / tokens, 1, std::max(lane_rounds, 1));
  }
  const int blocks = static_cast<int>(
      (static_cast<int64_t>(tokens) * p.parts + kDispatchWarps - 1) / kDispatchWarps);
  MOE_CHECK(static_cast<uint32_t>(blocks) < kArrivalsPerChunk, "one_sided dispatch: ", blocks,
            " blocks reach the dispatch barrier's per-chunk total ", kArrivalsPerChunk);
  if (!counted) {
    launch_kernel("one_sided_dispatch", one_sided_dispatch_kernel<false>,
                  {dim3(blocks), dim3(kDispatchThreads), 0, stream, /*pdl=*/true}, p);
    return;
  }
  launch_kernel("one_sided_count", one_sided_count_kernel,
                {dim3((p.num_tokens + kTile - 1) / kTile), dim3(kTile), 0, stream, true}, p);
  launch_kernel("one_sided_dispatch", one_sided_dispatch_kernel<true>,
                {dim3(blocks), dim3(kDispatchThreads), 0, stream, true}, p);
}

namespace {

/// The gather kernel for output type T and partial type P (f32, or T).
template <class T, class P>
void launch_gather_typed(const OneSidedParams& p, cudaStream_t stream) {
  // The barrier runs in every block: with zero tokens, one block runs only the barrier.
  const int tokens = std::max(p.num_tokens, 1);
  // Up to kSplitGatherMaxTokens tokens (latency-bound) a block per 16-byte column range of
  // a token; more (bandwidth-bound), one block per token.
  const int per_block = kGatherThreads * static_cast<int>(16 / sizeof(P));
  const int ranges = std::max(
      p.num_tokens <= kSplitGatherMaxTokens ? (p.hidden + per_block - 1) / per_block : 1, 1);
  // Push blocks: every (source, ll row, range) -- those with nothing to push return at once.
  const int push_blocks = p.layout.ll_rows * p.ep_size * ranges;
  launch_kernel("one_sided_gather", one_sided_gather_kernel<T, P>,
                {dim3(push_blocks + tokens * ranges), dim3(kGatherThreads), 0, stream,
                 /*pdl=*/true},
                p, push_blocks, ranges);
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
