// Greedy and hierarchical EPLB placement (contract and method in placement.h).
//
// Both methods run the same two steps on a "scope" (greedy: every expert and rank; the
// hierarchical method: one node's experts and ranks, after packing expert groups onto nodes):
//   replicate_experts  replica counts [scope experts], summing to the scope's slots
//   pack_replicas      replicas onto the scope's ranks, no two copies of one expert on a
//                      rank unless unavoidable
#include "eplb/placement.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "moe/errors.h"

namespace moe {
namespace {

// One node's (or, for greedy, the whole layer's) experts and ranks.
struct Scope {
  std::vector<int> experts;  // [scope experts] global expert ids, ascending
  int first_rank = 0;        // global rank of the scope's rank 0
  int num_ranks = 0;
};

// Indices of `weight` sorted heaviest first; ties keep the lower index first.
std::vector<int> heaviest_first(std::span<const double> weight) {
  std::vector<int> order(weight.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return weight[a] > weight[b]; });
  return order;
}

// Packs items of `weight` [n] into num_packs packs of exactly n / num_packs items each: the
// heaviest item onto the least loaded pack with room. Returns the pack of each item [n].
std::vector<int> balanced_packing(std::span<const double> weight, int num_packs) {
  const int per_pack = static_cast<int>(weight.size()) / num_packs;
  std::vector<int> pack_of(weight.size(), -1);
  std::vector<double> pack_load(num_packs, 0);
  std::vector<int> pack_size(num_packs, 0);
  for (int item : heaviest_first(weight)) {
    int best = -1;
    for (int p = 0; p < num_packs; ++p) {
      if (pack_size[p] < per_pack && (best < 0 || pack_load[p] < pack_load[best])) best = p;
    }
    pack_of[item] = best;
    pack_load[best] += weight[item];
    ++pack_size[best];
  }
  return pack_of;
}

// Fills placement.slot_to_expert from the scopes (replicate, then pack, in each).
void place_scopes(std::span<const double> expert_load, const std::vector<Scope>& scopes,
                  Placement& placement) {
  const SlotLayout& layout = placement.layout;
  const int slots_per_rank = layout.slots_per_rank();
  placement.slot_to_expert.assign(layout.num_slots, -1);
  for (const Scope& scope : scopes) {
    std::vector<double> loads;
    for (int e : scope.experts) loads.push_back(expert_load[e]);
    const std::vector<int> count =
        replicate_experts(loads, scope.num_ranks * slots_per_rank, scope.num_ranks);
    // Scope-local expert indices; scope.experts is ascending, so each rank stays sorted.
    const std::vector<int32_t> packed = pack_replicas(loads, count, scope.num_ranks);
    const int first_slot = layout.global_slot(scope.first_rank, 0);
    for (size_t i = 0; i < packed.size(); ++i) {
      placement.slot_to_expert[first_slot + i] = scope.experts[packed[i]];
    }
  }
}

// The duplicates of the placement, as one warning line (empty when there are none).
std::string describe_duplicates(const SlotTable& table, int experts_per_scope) {
  constexpr int kListed = 8;
  const SlotLayout& layout = table.layout();
  std::ostringstream list;
  int num_extra = 0, num_listed = 0;
  for (int r = 0; r < layout.num_ranks; ++r) {
    std::vector<int32_t> experts(table.rank_experts(r).begin(), table.rank_experts(r).end());
    std::sort(experts.begin(), experts.end());
    for (size_t i = 0; i < experts.size();) {
      size_t j = i + 1;
      while (j < experts.size() && experts[j] == experts[i]) ++j;
      if (j - i > 1) {
        num_extra += static_cast<int>(j - i - 1);
        if (num_listed++ < kListed) {
          list << (num_listed > 1 ? ", " : "") << "expert " << experts[i] << " x" << j - i
               << " on rank " << r;
        }
      }
      i = j;
    }
  }
  if (num_extra == 0) return "";
  std::ostringstream msg;
  msg << num_extra << " extra cop" << (num_extra == 1 ? "y" : "ies")
      << " of an expert on a rank that already holds it (" << list.str()
      << (num_listed > kListed ? ", ..." : "") << "): ";
  if (layout.slots_per_rank() > experts_per_scope) {
    msg << "unavoidable, a rank has " << layout.slots_per_rank() << " slots but only "
        << experts_per_scope << " experts can be placed on it";
  } else {
    msg << "the packing could not avoid it (please report this load)";
  }
  return msg.str();
}

void check_request(std::span<const double> expert_load, const PlacementRequest& request) {
  const int num_experts = static_cast<int>(expert_load.size());
  for (int e = 0; e < num_experts; ++e) {
    MOE_CHECK(std::isfinite(expert_load[e]) && expert_load[e] >= 0,
              "EPLB placement: load of expert ", e, " must be finite and >= 0, got ",
              expert_load[e]);
  }
  make_slot_layout(num_experts, request.num_slots, request.num_ranks);  // throws with the reason
  MOE_CHECK(request.num_nodes >= 1, "EPLB placement: num_nodes must be >= 1, got ",
            request.num_nodes);
  MOE_CHECK(request.num_ranks % request.num_nodes == 0, "EPLB placement: num_ranks (",
            request.num_ranks, ") is not divisible by num_nodes (", request.num_nodes,
            "): every node needs the same number of ranks");
  if (request.method == PlacementMethod::kGreedy) {
    MOE_CHECK(request.num_nodes == 1,
              "EPLB placement: the greedy method places over all ranks "
              "and has no nodes (got num_nodes = ",
              request.num_nodes, "); use the hierarchical method for nodes");
    return;
  }
  const int num_groups = request.num_groups == 0 ? num_experts : request.num_groups;
  MOE_CHECK(num_groups >= 1,
            "EPLB placement: num_groups must be >= 1 (or 0 for one group per "
            "expert), got ",
            request.num_groups);
  MOE_CHECK(num_experts % num_groups == 0, "EPLB placement: num_experts (", num_experts,
            ") is not divisible by num_groups (", num_groups, ")");
  MOE_CHECK(num_groups % request.num_nodes == 0, "EPLB placement: num_groups (", num_groups,
            ") is not divisible by num_nodes (", request.num_nodes,
            "): each node takes whole expert groups, the same number each");
}

}  // namespace

std::vector<int> replicate_experts(std::span<const double> expert_load, int num_slots,
                                   int max_replicas) {
  const int n = static_cast<int>(expert_load.size());
  MOE_CHECK(n >= 1 && num_slots >= n, "replicate_experts: ", num_slots, " slots for ", n,
            " experts (need at least one slot each)");
  MOE_CHECK(max_replicas >= 1, "replicate_experts: max_replicas must be >= 1, got ", max_replicas);
  std::vector<int> count(n, 1);
  // load[a] / count[a] > load[b] / count[b], without the divisions.
  auto hotter = [&](int a, int b) { return expert_load[a] * count[b] > expert_load[b] * count[a]; };
  for (int slot = n; slot < num_slots; ++slot) {
    int best = -1;
    for (int i = 0; i < n; ++i) {
      if (count[i] < max_replicas && (best < 0 || hotter(i, best))) best = i;
    }
    if (best < 0) {  // every expert has max_replicas already
      best = 0;
      for (int i = 1; i < n; ++i) {
        if (hotter(i, best)) best = i;
      }
    }
    ++count[best];
  }
  return count;
}

std::vector<int32_t> pack_replicas(std::span<const double> expert_load,
                                   std::span<const int> replica_counts, int num_ranks) {
  MOE_CHECK(replica_counts.size() == expert_load.size(), "pack_replicas: ", replica_counts.size(),
            " replica counts for ", expert_load.size(), " experts");
  MOE_CHECK(num_ranks >= 1, "pack_replicas: num_ranks must be >= 1, got ", num_ranks);
  struct Replica {
    int expert;
    double load;
  };
  std::vector<Replica> replicas;
  for (size_t e = 0; e < expert_load.size(); ++e) {
    MOE_CHECK(replica_counts[e] >= 0, "pack_replicas: expert ", e, " has a negative count (",
              replica_counts[e], ")");
    for (int c = 0; c < replica_counts[e]; ++c) {
      replicas.push_back({static_cast<int>(e), expert_load[e] / replica_counts[e]});
    }
  }
  const int num_slots = static_cast<int>(replicas.size());
  MOE_CHECK(num_slots > 0 && num_slots % num_ranks == 0, "pack_replicas: ", num_slots,
            " replicas do not fill ", num_ranks, " ranks evenly");
  const int slots_per_rank = num_slots / num_ranks;
  std::stable_sort(replicas.begin(), replicas.end(),
                   [](const Replica& a, const Replica& b) { return a.load > b.load; });

  const size_t num_experts = expert_load.size();
  std::vector<std::vector<Replica>> held(num_ranks);  // [rank][<= slots_per_rank]
  std::vector<double> load(num_ranks, 0);
  std::vector<int> copies(static_cast<size_t>(num_ranks) * num_experts, 0);  // [rank, expert]
  auto copies_of = [&](int r, int e) -> int& { return copies[r * num_experts + e]; };
  auto put = [&](int r, const Replica& x) {
    held[r].push_back(x);
    load[r] += x.load;
    ++copies_of(r, x.expert);
  };
  auto has_room = [&](int r) { return static_cast<int>(held[r].size()) < slots_per_rank; };

  for (const Replica& x : replicas) {
    int best = -1;
    for (int r = 0; r < num_ranks; ++r) {
      if (has_room(r) && copies_of(r, x.expert) == 0 && (best < 0 || load[r] < load[best])) {
        best = r;
      }
    }
    if (best >= 0) {
      put(best, x);
      continue;
    }
    // Every rank with room already has x's expert. Least loaded such rank: `room`.
    int room = -1;
    for (int r = 0; r < num_ranks; ++r) {
      if (has_room(r) && (room < 0 || load[r] < load[room])) room = r;
    }
    // Swap: replica y (expert not on `room`) of a rank j without x's expert moves to `room`,
    // x takes y's slot on j; the pair that keeps the larger of the two loads lowest.
    int swap_rank = -1;
    size_t swap_pos = 0;
    double swap_peak = 0;
    for (int j = 0; j < num_ranks; ++j) {
      if (j == room || copies_of(j, x.expert) != 0) continue;
      for (size_t q = 0; q < held[j].size(); ++q) {
        const Replica& y = held[j][q];
        if (copies_of(room, y.expert) != 0) continue;
        const double peak = std::max(load[room] + y.load, load[j] - y.load + x.load);
        if (swap_rank < 0 || peak < swap_peak) {
          swap_rank = j;
          swap_pos = q;
          swap_peak = peak;
        }
      }
    }
    if (swap_rank < 0) {  // unavoidable: x's expert has more copies than the scope has ranks
      put(room, x);
      continue;
    }
    const Replica y = held[swap_rank][swap_pos];
    load[swap_rank] += x.load - y.load;
    --copies_of(swap_rank, y.expert);
    ++copies_of(swap_rank, x.expert);
    held[swap_rank][swap_pos] = x;
    put(room, y);
  }

  std::vector<int32_t> slot_to_expert;  // [num_slots]
  slot_to_expert.reserve(num_slots);
  for (int r = 0; r < num_ranks; ++r) {
    const auto first = slot_to_expert.end() - slot_to_expert.begin();
    for (const Replica& x : held[r]) slot_to_expert.push_back(x.expert);
    // NOTE: local slot order does not change any load; ascending expert ids read best.
    std::sort(slot_to_expert.begin() + first, slot_to_expert.end());
  }
  return slot_to_expert;
}

std::string_view placement_method_name(PlacementMethod method) {
  switch (method) {
    case PlacementMethod::kHierarchical:
      return "hierarchical";
    case PlacementMethod::kGreedy:
      return "greedy";
  }
  MOE_UNREACHABLE("placement method ", static_cast<int>(method));
}

PlacementMethod parse_placement_method(std::string_view name) {
  for (PlacementMethod m : {PlacementMethod::kHierarchical, PlacementMethod::kGreedy}) {
    if (name == placement_method_name(m)) return m;
  }
  MOE_THROW("unknown EPLB placement method '", name, "' (choices: hierarchical, greedy)");
}

double imbalance(std::span<const double> rank_load) {
  MOE_CHECK(!rank_load.empty(), "imbalance: no ranks");
  const double total = std::accumulate(rank_load.begin(), rank_load.end(), 0.0);
  if (total <= 0) return 1.0;
  const double peak = *std::max_element(rank_load.begin(), rank_load.end());
  return peak / (total / static_cast<double>(rank_load.size()));
}

std::vector<double> rank_loads(std::span<const double> expert_load, const SlotTable& table) {
  const SlotLayout& layout = table.layout();
  MOE_CHECK(static_cast<int>(expert_load.size()) == layout.num_experts,
            "rank_loads: ", expert_load.size(), " loads for a table of ", layout.num_experts,
            " experts");
  std::vector<double> load(layout.num_ranks, 0);
  for (int s = 0; s < layout.num_slots; ++s) {
    const int e = table.expert_of(s);
    load[layout.rank_of_slot(s)] += expert_load[e] / table.num_replicas(e);
  }
  return load;
}

std::vector<double> contiguous_rank_loads(std::span<const double> expert_load, int num_ranks) {
  MOE_CHECK(num_ranks >= 1, "contiguous_rank_loads: num_ranks must be >= 1, got ", num_ranks);
  const int64_t num_experts = static_cast<int64_t>(expert_load.size());
  std::vector<double> load(num_ranks, 0);
  for (int r = 0; r < num_ranks; ++r) {
    for (int64_t e = r * num_experts / num_ranks; e < (r + 1) * num_experts / num_ranks; ++e) {
      load[r] += expert_load[e];
    }
  }
  return load;
}

Placement place_experts(std::span<const double> expert_load, const PlacementRequest& request) {
  MOE_CHECK(!expert_load.empty(), "EPLB placement: no experts (empty load vector)");
  check_request(expert_load, request);
  const int num_experts = static_cast<int>(expert_load.size());

  Placement placement;
  placement.layout = make_slot_layout(num_experts, request.num_slots, request.num_ranks);
  placement.method = request.method;
  placement.num_nodes = request.num_nodes;
  placement.num_groups = request.method == PlacementMethod::kGreedy ? 1
                         : request.num_groups == 0                  ? num_experts
                                                                    : request.num_groups;

  std::vector<Scope> scopes(placement.num_nodes);
  const int ranks_per_node = request.num_ranks / placement.num_nodes;
  for (int n = 0; n < placement.num_nodes; ++n) {
    scopes[n].first_rank = n * ranks_per_node;
    scopes[n].num_ranks = ranks_per_node;
  }
  if (placement.num_nodes == 1) {
    scopes[0].experts.resize(num_experts);
    std::iota(scopes[0].experts.begin(), scopes[0].experts.end(), 0);
  } else {
    // Step 1 of the hierarchical method: whole groups onto nodes.
    const int group_size = num_experts / placement.num_groups;
    std::vector<double> group_load(placement.num_groups, 0);
    for (int e = 0; e < num_experts; ++e) group_load[e / group_size] += expert_load[e];
    const std::vector<int> node_of_group = balanced_packing(group_load, placement.num_nodes);
    for (int g = 0; g < placement.num_groups; ++g) {
      for (int e = g * group_size; e < (g + 1) * group_size; ++e) {
        scopes[node_of_group[g]].experts.push_back(e);
      }
    }
  }
  place_scopes(expert_load, scopes, placement);

  const SlotTable table = placement.table();  // checks that every expert has a slot
  placement.rank_load = rank_loads(expert_load, table);
  placement.rank_load_before = contiguous_rank_loads(expert_load, request.num_ranks);
  placement.imbalance = imbalance(placement.rank_load);
  placement.imbalance_before = imbalance(placement.rank_load_before);
  placement.duplicate_on_rank = table.has_duplicate_on_rank();
  if (placement.duplicate_on_rank) {
    placement.warnings.push_back(describe_duplicates(table, num_experts / placement.num_nodes));
  }
  return placement;
}

}  // namespace moe
