// The one_sided strategy's kernels: NCCL symmetric memory reached through LSA pointers
// (ncclGetLsaPointer: a peer's copy of a window, loads and stores over NVLink). No size
// leaves the GPU, so the two or three launches of a dispatch/combine pair can be captured in
// a CUDA graph.
//
// Every rank's window (one ncclMemAlloc buffer, registered NCCL_WIN_COLL_SYMMETRIC; every
// offset below is relative to the window's start, as ncclGetLsaPointer takes it):
//   probe  u32               kProbeMagic ^ rank, written once at set-up: peers read it
//                            through their LSA mapping to check the mapping before any kernel
//   inbox  u32 [ep]          combine barrier: slot s holds the last epoch rank s reached
//   arrivals u32 [ep]        dispatch barrier: slot s counts rank s's dispatch blocks done,
//                            kArrivalsPerChunk per chunk whatever its grid
//   data   [capacity, D]     the received tokens: source rank s owns the region of rows
//                            [s * region_rows, (s + 1) * region_rows) and fills it from its
//                            start, tokens ascending (region_rows = a rank's chunk capacity)
//   scales [capacity, S]     their per-token scales (when the input has them)
//   ids    i32 [capacity, k], weights f32 [capacity, k]
//   out    [capacity, H] run_moe's partial sums of the received rows (ep_partial_dtype:
//                            f32, unrounded, or act_dtype)
// Every row past its region's count carries an expert this rank does not own and weight 0,
// so run_moe can run on all `capacity` rows (a shape fixed at capture time). Fixed regions
// mean a source knows where its rows go without asking: no count exchange, no barrier
// before the data moves. Keeping the padding costs a source only the rows it wrote last time
// and not this time (sent_rows): set-up pads every row once (launch_one_sided_init).
//
// Steps (kernels):
//   dispatch  a warp per (token, part of its row): the token's row loaded once and stored
//             into every destination's region (parts: up to one 16-byte chunk per lane
//             when few tokens, so that ~2048 warps move the bytes; one above a tile). Each
//             block plans its tile of kFusedDispatchMaxTokens tokens by warp ballots (a
//             thread per token; no scan) while its first data loads are in flight, and
//             records row_of for the combine; block 0 pads; every block adds its arrival
//             to each peer's counter once its rows are written (one release fence per
//             block, all overlapping) and block 0 waits until every peer's counter holds
//             the chunk's total. Up to one tile: one launch. More: a
//             `count` kernel first (per tile: each token's destinations, rows per
//             destination), from which each block adds the earlier tiles' rows.
//   gather    out[t] = round(sum over destinations d ascending of d's partial row of t),
//             fp32, rounded once to act_dtype; 16 bytes of partials per thread and peer,
//             every peer's loads in flight before the sum. Up to 256 tokens
//             (latency-bound): blocks (token, column range); more (bandwidth-bound): one
//             block per token. How a partial row reaches its source, per (source s, owner
//             d) pair, decided by the rows s sent d this chunk (both know it: s from its
//             plan, d from the counts word s wrote into d's window during dispatch):
//               pull  (more than ll_rows rows) loads from d's `out` over NVLink (a round
//                     trip) after the barrier;
//               push  (at most ll_rows rows: decode) d's push blocks store the rows into
//                     s's ll section with the combine's epoch as a flag in every 8 bytes;
//                     s polls its own memory: one NVLink crossing instead of a round trip.
//             The barrier: the first gather block arrives as its first step (my partials
//             are written); every gather block waits for every peer's arrival -- also one
//             without my tokens: my next dispatch may then overwrite the rows its run_moe
//             read -- except an owner whose pushed lines the block polls (they leave the
//             owner after its run_moe, one crossing sooner than an arrival).
//             Its own partials a rank reads locally.
// Every kernel is launched with programmatic dependent launch: it waits (griddepcontrol.wait)
// before reading anything and lets its dependents launch at once, so launch latency hides
// behind the previous kernel's tail inside a graph.
// NOTE: the barriers and flags also order chunk i+1's writes after chunk i's reads: a rank
// writes into a peer's window (dispatch) only after the combine barrier the peer reaches,
// or the pushed rows the peer sends, once its run_moe has read my rows; run_moe overwrites
// `out`, and a push overwrites a peer's ll rows, only after the dispatch barrier its peers
// reach once they have gathered. A push block still reading a counts word that the next
// dispatch has rewritten pushes at most stale rows under the old epoch's flag, which the
// next combine's poll does not accept, before the next push (stream order) overwrites them.
//
// Barriers: the combine's, the epoch protocol of NCCL's LSA barrier (release-store my epoch
// into every peer's inbox, acquire-load theirs from mine); the dispatch's, release-adds
// into counters with a fixed total per chunk. Both with a deadline: a peer that does not arrive
// within timeout_ns makes the barrier give up and record (kind, barrier, peer) in `error`
// (host-mapped memory that the host reads without synchronising), so a dead peer turns into
// an error instead of a hang.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "comm/nccl/ep_kernels.h"
#include "moe/dtype.h"

namespace moe::ep {

/// Byte offsets of the window's sections.
struct OneSidedLayout {
  size_t probe_at = 0;
  size_t inbox_at = 0;
  size_t arrivals_at = 0;
  size_t data_at = 0;
  size_t scales_at = 0;
  size_t ids_at = 0;
  size_t weights_at = 0;
  size_t out_at = 0;
  size_t counts_at = 0;  // u32 [ep]: rows source s wrote into my window this chunk
  size_t ll_at = 0;      // [ep owners][ll_rows][ll_row_bytes]: partial rows pushed to me
  size_t ll_row_bytes = 0;
  size_t bytes = 0;     // the whole window
  int capacity = 0;     // rows of each section
  int region_rows = 0;  // rows of one source rank's region (>= its chunk's tokens)
  int ll_rows = 0;      // rows per owner of the ll section; 0: every combine pulls
};

/// The ll section's row of partial sums: 16-byte lines {4 data bytes, flag, 4 data bytes,
/// flag} (NCCL's LL protocol: each 8-byte half is written by one store, so a reader that
/// sees the flag sees its data).
inline constexpr size_t ll_row_bytes(int hidden, size_t partial_bytes) {
  return hidden * partial_bytes * 2;
}
/// Rows per owner of the ll section (see the combine at the top).
inline constexpr int kLLMaxRows = 8;

/// Chunks of at most this many tokens are dispatched by one kernel (more: a count kernel
/// first); also the tile of tokens one block plans.
inline constexpr int kFusedDispatchMaxTokens = 256;

/// What one chunk's dispatch blocks add to a peer's arrivals counter, together (block 0
/// adds what the others do not); more than any dispatch grid's blocks.
inline constexpr uint32_t kArrivalsPerChunk = 1u << 20;

/// error[0] after a failed barrier.
inline constexpr int32_t kBarrierTimeout = 1;
/// The probe word of rank r's window holds kProbeMagic ^ r.
inline constexpr uint32_t kProbeMagic = 0x05ed0000u;

struct OneSidedParams {
  // The window's LSA mapping (WindowInfo, read back once at set-up): rank r's copy starts
  // at lsa_base + r * lsa_stride_4g * 4 GiB.
  char* lsa_base = nullptr;
  uint32_t lsa_stride_4g = 0;
  OneSidedLayout layout;
  int rank = 0;
  int ep_size = 1;
  int top_k = 0;
  int hidden = 0;
  // This rank's chunk.
  int num_tokens = 0;
  const void* x_data = nullptr;    // [T, D]
  const void* x_scales = nullptr;  // [T, S] or null
  const int32_t* topk_ids = nullptr;
  const float* topk_weights = nullptr;
  size_t data_row_bytes = 0;
  size_t scale_row_bytes = 0;
  void* out = nullptr;  // act [T, H] (gather)
  // Device state.
  PlanSendParams plan;             // used: dest_mask [T] (many tokens), row_of [T, ep]
  int32_t* tile_counts = nullptr;  // [tiles, ep]: rows per destination of each kTile tokens
  int parts = 1;                   // set by launch_one_sided_dispatch: warps per row
  int32_t* sent_rows = nullptr;    // [ep]: rows this rank wrote into each region last chunk
  uint32_t* epoch = nullptr;       // [1]: barriers passed
  int32_t* error = nullptr;        // host-mapped [3]: kind, barrier, peer
  uint64_t timeout_ns = 0;
};

/// Phase timestamps of the one_sided kernels, for `moe_comm_bench --trace`: compiled in only
/// with the CMake option MOE_COMM_TRACE (thread 0 of a block adds one global atomic per
/// phase; never in a release build). One record per chunk in a ring of kTraceRecords (chunk
/// = the dispatch epoch / kEpochsPerChunk), %globaltimer nanoseconds, 0 = not reached.
enum TraceField : int {
  kTraceDispatchStart,   // first block of the fused dispatch or of the scatter to start
  kTracePrepareStart,    // the count kernel (more than kFusedDispatchMaxTokens tokens):
  kTracePrepareEnd,      // its first block to start, its last to finish
  kTracePlanned,         // the fused dispatch's block 0, its plan made
  kTraceRowsDone,        // last dispatch block done with its rows
  kTraceCounted,         // the dispatch's block 0, arrived (its rows written and fenced)
  kTraceDispatchEnd,     // the dispatch barrier passed
  kTraceGatherStart,     // first gather block to start
  kTraceGatherBarrier,   // last gather block past the combine barrier
  kTraceGatherEnd,       // last gather block done
  kTraceDispatchEntry,   // first dispatch block's first instruction (before the PDL wait)
  kTraceDispatchWaited,  // the dispatch's block 0 past the PDL wait
  kTraceMasked,          // the dispatch's block 0, thread 0's token mask loaded
  kTraceGatherEntry,     // first gather block's first instruction (before the PDL wait)
  kTraceFields
};
inline constexpr int kTraceRecords = 512;
struct TraceRecord {
  uint64_t t[kTraceFields] = {};
};
/// True when the kernels were compiled with MOE_COMM_TRACE.
bool one_sided_trace_compiled();
/// Clears the ring (synchronous; not while a one_sided kernel runs).
void one_sided_trace_reset();
/// The ring, record i = chunk i mod kTraceRecords (synchronous).
std::vector<TraceRecord> one_sided_trace_read();

/// This rank's LSA team (ncclTeamLsa): the ranks whose windows it reaches by load/store.
struct LsaTeam {
  int num_ranks = 0;
  int rank = 0;
};
LsaTeam lsa_team(ncclComm_t comm);

/// What a window handle from ncclCommWindowRegister holds, read back to the host (NCCL
/// 2.28's ncclWindow_vidmem, in device memory) so that the registration is checked before a
/// kernel dereferences it. NOTE: a communicator without symmetric-memory support (no CUDA
/// P2P between all its GPUs, NCCL_CUMEM_ENABLE=0 or NCCL_WIN_ENABLE=0) returns a local
/// registration handle in host memory instead, which `device_resident` reports.
struct WindowInfo {
  bool device_resident = false;   // the handle is device memory (a symmetric window)
  char* lsa_flat_base = nullptr;  // LSA rank 0's copy of the window's first byte
  uint32_t stride_4g = 0;         // distance between LSA ranks' copies, in units of 4 GiB
  int lsa_rank = -1;
  int world_rank = -1;
  /// LSA rank `peer`'s copy of byte `offset` of the window, in this process's address
  /// space (what ncclGetLsaPointer computes on the device); host code may cudaMemcpy it.
  void* lsa_pointer(size_t offset, int peer) const;
};
/// Reads `window` back; `device_resident` false (and nothing else set) when it is null or
/// not device memory. Throws moe::Error when the copy fails.
WindowInfo read_window(ncclWindow_t window);

/// Set-up, before any peer writes into the window: every row of this rank's window (its
/// local buffer at `window_base`) padded (an expert it does not own,
/// weight 0), sent_rows zero. Needs p's layout, rank, ep_size, top_k,
/// plan.experts_per_rank and sent_rows.
void launch_one_sided_init(const OneSidedParams& p, void* window_base, cudaStream_t stream);
/// The dispatch of p.num_tokens tokens (fused, or prepare + scatter; see the top).
void launch_one_sided_dispatch(const OneSidedParams& p, cudaStream_t stream);
/// The combine: barrier and gather in one launch (also with zero tokens: the barrier).
/// dtype: the output's (act_dtype); partial_dtype: the partial sums' in the windows (f32,
/// or act_dtype: MoeConfig::ep_partial_dtype).
void launch_one_sided_gather(const OneSidedParams& p, DType dtype, DType partial_dtype,
                             cudaStream_t stream);

}  // namespace moe::ep
