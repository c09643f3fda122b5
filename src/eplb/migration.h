// EPLB online mode, the pure parts (DESIGN.md "EPLB"): how a new placement lines up with the
// one in place, and which slot bytes move where. Unit-tested on the CPU.
//
// A placement change moves weights: every global slot whose expert changes receives the new
// expert's bytes from a slot that holds that expert in the placement being replaced. Reads
// come only from the old placement's slots (they stay live until the swap), writes go to a
// staging buffer and reach the slot at the swap, so a slot that is both read and rewritten
// in one migration is safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "eplb/slot_table.h"

namespace moe {

/// Rearranges `next` [num_slots] (a placement of the same layout as `current`) so that it
/// keeps as many slots as possible where they are, without changing which experts each rank
/// holds beyond a relabelling of ranks within a node:
///   1. ranks: within each node (num_nodes consecutive blocks of ranks), the new ranks' slot
///      sets are given to the old ranks so that the experts they share, summed, is largest
///      (an optimal assignment: the Hungarian algorithm, O(ranks per node ^ 3));
///   2. slots: within a rank, an expert that the rank already held keeps its local slot.
/// The rank loads of `next` are unchanged as a multiset (so are its imbalance and its
/// duplicate-on-rank status). Deterministic. Throws moe::Error when sizes disagree.
std::vector<int32_t> align_placement(const SlotTable& current, std::span<const int32_t> next,
                                     int num_nodes = 1);

/// One slot that changes: global slot `dst` receives the bytes of global slot `src` (which
/// holds the new expert in the current placement).
struct SlotMove {
  int dst = 0;
  int src = 0;
  int expert = 0;  // the expert dst holds afterwards
};

/// Every slot that changes, ascending by dst. A source on dst's own rank is taken when there
/// is one (a local copy); otherwise the new expert's current slot whose rank has been given
/// the fewest sends so far (ties to the lower slot), spreading the senders.
struct MigrationPlan {
  SlotLayout layout;
  std::vector<SlotMove> moves;

  /// Moves into slots of `rank`.
  int moves_into(int rank) const;
  /// The largest moves_into over the ranks.
  int max_moves_into_rank() const;
  /// Moves whose source and destination are on different ranks.
  int remote_moves() const;
};

/// The moves from `current` to `next` (same layout). Throws moe::Error when layouts differ.
MigrationPlan plan_migration(const SlotTable& current, const SlotTable& next);

/// What one rank does in a migration, derived from the plan (all ranks derive theirs from the
/// same plan, so the order of sends to a peer matches the order of that peer's receives).
struct RankMigration {
  struct Copy {
    int src_local = 0;  // local slot read (live)
    int staging = 0;    // staging entry written
  };
  struct Transfer {
    int peer = 0;
    int local = 0;   // send: local slot read (live); receive: staging entry written
    int remote = 0;  // the peer's local slot: send: the one written; receive: the one read
  };
  std::vector<Copy> copies;        // source on this rank
  std::vector<Transfer> sends;     // this rank's slot to a peer, in plan order
  std::vector<Transfer> receives;  // a peer's slot into staging, in plan order
  /// Staging entry i goes to local slot swap_slots[i] at the swap.
  std::vector<int> swap_slots;
};

/// Rank `rank`'s part of `plan`: its moves in plan order take staging entries 0, 1, ...
RankMigration rank_migration(const MigrationPlan& plan, int rank);

}  // namespace moe
