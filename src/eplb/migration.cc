#include "eplb/migration.h"

#include <algorithm>
#include <limits>
#include <map>

#include "moe/errors.h"

namespace moe {

namespace {

bool same_layout(const SlotLayout& a, const SlotLayout& b) {
  return a.num_experts == b.num_experts && a.num_slots == b.num_slots && a.num_ranks == b.num_ranks;
}

/// Experts the two slot lists share, counted as multisets.
int shared_experts(std::span<const int32_t> a, std::span<const int32_t> b) {
  std::map<int32_t, int> count;
  for (int32_t e : a) ++count[e];
  int shared = 0;
  for (int32_t e : b) {
    auto it = count.find(e);
    if (it != count.end() && it->second > 0) {
      --it->second;
      ++shared;
    }
  }
  return shared;
}

/// The assignment old rank r -> new rank match[r] (a permutation of [0, n)) that maximises
/// the summed overlap[q * n + r]: the Hungarian algorithm on the costs -overlap, O(n^3).
/// Ties resolve deterministically (the first optimum the algorithm's fixed order reaches).
std::vector<int> max_overlap_assignment(const std::vector<int>& overlap, int n) {
  // Rows are old ranks r (1-based inside), columns new ranks q; cost[r][q] = -overlap.
  constexpr long long kInf = std::numeric_limits<long long>::max() / 4;
  std::vector<long long> u(n + 1, 0), v(n + 1, 0);
  std::vector<int> p(n + 1, 0), way(n + 1, 0);  // p[q]: the row matched to column q
  auto cost = [&](int r, int q) { return -static_cast<long long>(overlap[(q - 1) * n + (r - 1)]); };
  for (int r = 1; r <= n; ++r) {
    p[0] = r;
    int q0 = 0;
    std::vector<long long> minv(n + 1, kInf);
    std::vector<bool> used(n + 1, false);
    do {
      used[q0] = true;
      const int r0 = p[q0];
      long long delta = kInf;
      int q1 = 0;
      for (int q = 1; q <= n; ++q) {
        if (used[q]) continue;
        const long long cur = cost(r0, q) - u[r0] - v[q];
        if (cur < minv[q]) {
          minv[q] = cur;
          way[q] = q0;
        }
        if (minv[q] < delta) {
          delta = minv[q];
          q1 = q;
        }
      }
      for (int q = 0; q <= n; ++q) {
        if (used[q]) {
          u[p[q]] += delta;
          v[q] -= delta;
        } else {
          minv[q] -= delta;
        }
      }
      q0 = q1;
    } while (p[q0] != 0);
    do {
      const int q1 = way[q0];
      p[q0] = p[q1];
      q0 = q1;
    } while (q0 != 0);
  }
  std::vector<int> match(n);
  for (int q = 1; q <= n; ++q) match[p[q] - 1] = q - 1;
  return match;
}

}  // namespace

std::vector<int32_t> align_placement(const SlotTable& current, std::span<const int32_t> next,
                                     int num_nodes) {
  const SlotLayout& l = current.layout();
  MOE_CHECK(static_cast<int>(next.size()) == l.num_slots, "EPLB align: the new placement has ",
            next.size(), " slots, the current one ", l.num_slots);
  MOE_CHECK(num_nodes >= 1 && l.num_ranks % num_nodes == 0, "EPLB align: ", l.num_ranks,
            " ranks do not split into ", num_nodes, " nodes");
  const int p = l.slots_per_rank();
  const int ranks_per_node = l.num_ranks / num_nodes;
  auto next_rank = [&](int q) { return next.subspan(static_cast<size_t>(q) * p, p); };

  // 1. Which new rank's slot set each old rank takes (within its node).
  std::vector<int> source_of(l.num_ranks, -1);  // old rank -> new rank
  for (int n = 0; n < num_nodes; ++n) {
    const int r0 = n * ranks_per_node;
    std::vector<int> overlap(static_cast<size_t>(ranks_per_node) * ranks_per_node);
    for (int q = 0; q < ranks_per_node; ++q) {
      for (int r = 0; r < ranks_per_node; ++r) {
        overlap[q * ranks_per_node + r] =
            shared_experts(next_rank(r0 + q), current.rank_experts(r0 + r));
      }
    }
    const std::vector<int> match = max_overlap_assignment(overlap, ranks_per_node);
    for (int r = 0; r < ranks_per_node; ++r) source_of[r0 + r] = r0 + match[r];
  }

  // 2. Within each rank, experts it already held keep their local slot.
  std::vector<int32_t> out(next.size(), -1);
  for (int r = 0; r < l.num_ranks; ++r) {
    std::map<int32_t, int> pending;
    for (int32_t e : next_rank(source_of[r])) ++pending[e];
    std::span<const int32_t> old = current.rank_experts(r);
    int32_t* dst = out.data() + static_cast<size_t>(r) * p;
    for (int i = 0; i < p; ++i) {
      auto it = pending.find(old[i]);
      if (it != pending.end() && it->second > 0) {
        dst[i] = old[i];
        --it->second;
      }
    }
    int i = 0;
    for (int32_t e : next_rank(source_of[r])) {
      auto it = pending.find(e);
      if (it->second == 0) continue;
      --it->second;
      while (dst[i] != -1) ++i;
      dst[i] = e;
    }
  }
  return out;
}

int MigrationPlan::moves_into(int rank) const {
  return static_cast<int>(std::count_if(moves.begin(), moves.end(), [&](const SlotMove& m) {
    return layout.rank_of_slot(m.dst) == rank;
  }));
}

int MigrationPlan::max_moves_into_rank() const {
  int most = 0;
  for (int r = 0; r < layout.num_ranks; ++r) most = std::max(most, moves_into(r));
  return most;
}

int MigrationPlan::remote_moves() const {
  return static_cast<int>(std::count_if(moves.begin(), moves.end(), [&](const SlotMove& m) {
    return layout.rank_of_slot(m.dst) != layout.rank_of_slot(m.src);
  }));
}

MigrationPlan plan_migration(const SlotTable& current, const SlotTable& next) {
  MOE_CHECK(same_layout(current.layout(), next.layout()),
            "EPLB migration: the placements have different layouts (experts ",
            current.layout().num_experts, "/", next.layout().num_experts, ", slots ",
            current.layout().num_slots, "/", next.layout().num_slots, ", ranks ",
            current.layout().num_ranks, "/", next.layout().num_ranks, ")");
  MigrationPlan plan{current.layout(), {}};
  const SlotLayout& l = plan.layout;
  std::vector<int> sends(l.num_ranks, 0);
  for (int d = 0; d < l.num_slots; ++d) {
    const int e = next.expert_of(d);
    if (current.expert_of(d) == e) continue;
    const int rank = l.rank_of_slot(d);
    int src = -1;
    for (int s : current.slots_of(e)) {
      if (l.rank_of_slot(s) == rank) {
        src = s;
        break;
      }
    }
    if (src < 0) {
      for (int s : current.slots_of(e)) {
        if (src < 0 || sends[l.rank_of_slot(s)] < sends[l.rank_of_slot(src)]) src = s;
      }
      ++sends[l.rank_of_slot(src)];
    }
    plan.moves.push_back({d, src, e});
  }
  return plan;
}

RankMigration rank_migration(const MigrationPlan& plan, int rank) {
  const SlotLayout& l = plan.layout;
  MOE_CHECK(rank >= 0 && rank < l.num_ranks, "EPLB migration: rank ", rank, " outside [0, ",
            l.num_ranks, ")");
  RankMigration m;
  for (const SlotMove& move : plan.moves) {
    const int dst_rank = l.rank_of_slot(move.dst), src_rank = l.rank_of_slot(move.src);
    if (dst_rank == rank) {
      const int staging = static_cast<int>(m.swap_slots.size());
      m.swap_slots.push_back(l.local_slot(move.dst));
      if (src_rank == rank) {
        m.copies.push_back({l.local_slot(move.src), staging});
      } else {
        m.receives.push_back({src_rank, staging, l.local_slot(move.src)});
      }
    } else if (src_rank == rank) {
      m.sends.push_back({dst_rank, l.local_slot(move.src), l.local_slot(move.dst)});
    }
  }
  return m;
}

}  // namespace moe
