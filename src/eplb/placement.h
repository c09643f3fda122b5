// EPLB placement: which expert each slot holds, from the experts' loads. Pure functions of
// (load, sizes), unit-tested on the CPU (DESIGN.md "EPLB"; slot_table.h for the index spaces).
//
// A slot's load is its expert's load divided by the expert's replica count (slot_routing.h
// spreads an expert's tokens evenly over its replicas); a rank's load is the sum over its
// slots. imbalance = max rank load / mean rank load (1 is perfect; 1 also when every load is
// zero). "Before" is the placement without EPLB: experts spread contiguously over the ranks
// without replicas, rank r holding experts [r * E / R, (r + 1) * E / R) (with num_slots ==
// num_experts and R dividing E, exactly SlotTable::identity).
//
// Methods (both deterministic; ties go to the lower index):
//   greedy        1. replicate: while slots are left, add a replica to the expert with the
//                    highest load per replica;
//                 2. pack: replicas from the heaviest down, each onto the least loaded rank
//                    with a free slot.
//   hierarchical  DeepSeek's hierarchical balancing (deepseek-ai/EPLB,
//                 rebalance_experts_hierarchical; written anew here):
//                 1. experts form num_groups groups of consecutive ids; pack the groups onto
//                    the nodes, equal groups per node, heaviest group onto the least loaded
//                    node with room (a group never straddles nodes);
//                 2. within each node, replicate over the node's num_slots / num_nodes slots
//                    as in greedy step 1;
//                 3. within each node, pack its replicas onto its num_ranks / num_nodes ranks
//                    as in greedy step 2.
//                 With one node this is exactly greedy (the node step has nothing to decide).
// Both methods keep two copies of one expert off one rank:
//   - an expert gets at most as many replicas as there are ranks in its scope (all ranks, or
//     its node's), since a further copy cannot lower any rank's load;
//   - packing puts a replica only on a rank without a copy of its expert, and when the
//     greedy order leaves no such rank with a free slot, swaps a replica of another expert
//     out of a rank without a copy to make room (always possible when the counts allow).
// A duplicate is left only when unavoidable: when a rank's slots outnumber the experts of its
// scope (slots_per_rank > num_experts / num_nodes); the result says so
// (duplicate_on_rank and a warning naming the expert and rank).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eplb/slot_table.h"

namespace moe {

enum class PlacementMethod { kHierarchical, kGreedy };

/// "hierarchical" or "greedy".
std::string_view placement_method_name(PlacementMethod method);
/// The method called `name`; throws moe::Error listing the choices.
PlacementMethod parse_placement_method(std::string_view name);

/// What to place: the sizes; the loads come separately.
struct PlacementRequest {
  PlacementMethod method = PlacementMethod::kHierarchical;
  int num_slots = 0;   // >= num_experts, divisible by num_ranks
  int num_ranks = 1;   // EP ranks
  int num_nodes = 1;   // hierarchical: nodes (num_ranks divisible by it); greedy: must be 1
  int num_groups = 0;  // hierarchical: expert groups, dividing num_experts and divisible by
                       // num_nodes; 0 = one group per expert. Greedy ignores it.
};

/// A placement and how well it balances the load it was computed from.
struct Placement {
  SlotLayout layout;
  PlacementMethod method = PlacementMethod::kHierarchical;
  int num_nodes = 1;
  int num_groups = 0;                    // as used (0 never: resolved to num_experts)
  std::vector<int32_t> slot_to_expert;   // [num_slots]
  std::vector<double> rank_load;         // [num_ranks] after
  std::vector<double> rank_load_before;  // [num_ranks] contiguous experts, no replicas
  double imbalance = 1;                  // max / mean of rank_load
  double imbalance_before = 1;           // max / mean of rank_load_before
  bool duplicate_on_rank = false;        // some rank holds two copies of one expert
  std::vector<std::string> warnings;     // one line each, e.g. the duplicates and why

  /// The two-way slot tables of slot_to_expert.
  SlotTable table() const { return SlotTable(layout, slot_to_expert); }
};

/// Places `expert_load` [num_experts] (tokens per expert, >= 0, finite) as `request` says.
/// Throws moe::Error with the reason on bad arguments: num_slots < num_experts, num_slots not
/// divisible by num_ranks, num_ranks not divisible by num_nodes, num_groups not dividing
/// num_experts or not divisible by num_nodes, num_nodes != 1 with greedy, a negative or
/// non-finite load.
Placement place_experts(std::span<const double> expert_load, const PlacementRequest& request);

/// The two steps of both methods, on their own (for callers that choose replica counts
/// themselves, e.g. a static placement).
/// Step 1: replica counts [E] summing to num_slots: one each, then one at a time to the
/// expert with the highest load per replica among those below max_replicas (only once every
/// expert has max_replicas does any go beyond). Throws on num_slots < E or max_replicas < 1.
std::vector<int> replicate_experts(std::span<const double> expert_load, int num_slots,
                                   int max_replicas);
/// Step 2: replicas (expert e: replica_counts[e] copies of load[e] / replica_counts[e]) onto
/// num_ranks ranks of sum / num_ranks slots, heaviest first onto the least loaded rank with a
/// free slot and no copy of the expert; where the order leaves none, a replica of another
/// expert moves from a rank without a copy to one with room, and the new replica takes its
/// slot. A rank gets a second copy only when no such move exists (an expert with more copies
/// than ranks). Returns slot -> expert [sum of counts], rank r's slots [r * P, (r + 1) * P),
/// ascending within a rank. Throws when the sum is 0 or not divisible by num_ranks.
std::vector<int32_t> pack_replicas(std::span<const double> expert_load,
                                   std::span<const int> replica_counts, int num_ranks);

/// Rank loads [num_ranks] of any placement: each expert's load split evenly over its slots.
std::vector<double> rank_loads(std::span<const double> expert_load, const SlotTable& table);
/// Rank loads [num_ranks] without EPLB: experts [r * E / R, (r + 1) * E / R) on rank r.
std::vector<double> contiguous_rank_loads(std::span<const double> expert_load, int num_ranks);
/// max / mean; 1 when every rank's load is 0.
double imbalance(std::span<const double> rank_load);

}  // namespace moe
