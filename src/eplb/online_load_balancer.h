// EPLB online mode (DESIGN.md "EPLB"; MoeOptions::eplb_online): statistics window,
// re-placement every N forwards, double-buffered weight migration, swap at a forward boundary.
//
// Rows. Each rank's backend holds rows_per_rank = slots_per_rank + staging weight rows (its
// "experts"); a slot lives in one of its rank's rows (row_of_slot), the other rows are free.
// A migration writes the new experts' weights into free rows while forwards read the live
// ones; the swap then only repoints the slots at their new rows (and frees the old ones):
// a table update, no weight copy, and no buffer ever moves, so CUDA graphs stay valid.
//
// It wraps the layer's StaticLoadBalancer (which counts tokens per expert on the device and
// maps expert ids to rows with tables it updates in place) and adds, at each forward
// boundary (step(): the start of an eager forward, or ConfigurableMoE::eplb_step between
// graph replays):
//   1. statistics: the device counters are copied (async) to pinned host memory; a copy that
//      has finished becomes one row of the window (no host wait: a copy still running is
//      read at a later boundary);
//   2. migration: the next batch of moves (at most migration_step_bytes, so that no forward
//      shares the GPU with much copy traffic) is issued on a side stream: local row copies
//      and NCCL send/recv on the balancer's own communicator; once every batch is issued and
//      complete on every rank (each asks its event, then one host allreduce), the swap
//      updates the tables on the forward's stream: the forward that follows uses them;
//   3. re-placement, every rebalance_interval boundaries: the window's totals are summed over
//      the ranks, placed (placement.h), aligned with the placement in use (migration.h),
//      kept only if it lowers the imbalance by min_improvement, and its first batch issued.
// Every decision is a function of values all ranks share (boundary count, summed load,
// placement and rows in use), so every rank takes the same branch of every collective.
//
// Weights move as the bytes of the tensors the backend's quant method registered
// (expert_tensors.h) over all rows_per_rank rows; a quant method whose status is "not
// supported" cannot use online mode (create_moe says why).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "eplb/eplb_transport.h"
#include "eplb/expert_load.h"
#include "eplb/expert_tensors.h"
#include "eplb/load_balancer.h"
#include "eplb/migration.h"
#include "eplb/placement.h"
#include "eplb/static_load_balancer.h"
#include "moe/configurable_moe.h"

namespace moe {

class MoEBackend;

/// Staging rows per rank of `options` for `slots_per_rank` slots (>= 1).
int eplb_staging_rows(const EplbOnlineOptions& options, int slots_per_rank);
/// The first rows of a layout: rank r's slots in its rows r * (P + staging) + local slot.
std::vector<int32_t> eplb_initial_rows(const SlotLayout& layout, int staging_rows);

class OnlineLoadBalancer final : public LoadBalancer {
 public:
  /// `routing` (the layer's, outliving this) holds the initial placement and rows (rank r's
  /// rows [r * R, (r + 1) * R), R = slots_per_rank + eplb_staging_rows). Collective when
  /// ep_size > 1 (creates the transport's communicator). Throws moe::Error on bad options.
  OnlineLoadBalancer(StaticLoadBalancer& routing, const EplbOnlineOptions& options,
                     const Mapping& mapping, Device device);
  ~OnlineLoadBalancer() override;

  int rows_per_rank() const { return rows_per_rank_; }
  /// The expert each global row holds (free rows: a copy of a slot's expert, what loading
  /// puts there) [num_ranks * rows_per_rank].
  std::vector<int32_t> row_experts() const;

  /// After the weights are loaded: registers the backend's per-expert tensors. Throws
  /// moe::Error with the quant method's reason when its tensors cannot migrate.
  void attach(MoEBackend& backend);

  void on_first_chunk(void* stream) override;
  void on_routed(const TensorView& topk_ids, void* stream) override;
  void on_last_chunk(void* stream) override;

  /// The boundary work (see the file comment). Collective.
  void step(void* stream);
  /// Starts a migration to `slot_to_expert` now (instead of one from the statistics).
  /// Collective; throws when a migration is pending or the placement is invalid.
  void request_placement(const std::vector<int32_t>& slot_to_expert, void* stream);
  /// Issues what is left of a pending migration and swaps it in (waits). Collective.
  void finish_migration(void* stream);
  EplbStatus status() const;

  /// The user is about to reset the counters: the tokens counted so far go into the window
  /// (synchronises `stream`), and the next snapshot starts from zero.
  void before_counts_reset(void* stream);

  /// The registered tensors.
  const ExpertTensorRegistry& registry() const;
  /// Testing: fills this rank's free rows of every registered tensor with 0xFF bytes (NaN),
  /// so that a table still pointing at a row a migration left is seen. No migration may be
  /// pending.
  void poison_free_rows_for_testing(void* stream);
  /// Testing: forgets tensor `name`, as if its quant method had not registered it, so that a
  /// test can prove stale slots are caught.
  void drop_tensor_for_testing(std::string_view name);
  const ExpertLoadWindow& window() const { return window_; }

 private:
  struct Pending {
    MigrationPlan plan;
    SlotTable next;
    std::vector<int32_t> dst_rows;                // [moves] the free row each move writes
    std::vector<int32_t> next_rows;               // row_of_slot after the swap
    std::vector<std::vector<int32_t>> next_free;  // free rows per rank after the swap
    size_t issued = 0;                            // moves issued so far
    std::chrono::steady_clock::time_point start;
  };

  void collect_statistics(void* stream);
  void rebalance(void* stream);
  void start_migration(const SlotTable& next, void* stream);
  void issue_batch();
  /// issue_batch, marking this rank's balancer failed (and dropping the migration) if it
  /// throws.
  void issue_batch_guarded();
  /// Throws unless weights are loaded and no migration failed here.
  void check_usable() const;
  /// Marks moves [.., end) issued; after the last, records the staging's event.
  void finish_batch(size_t end);
  /// Lets the transport map the registered tensors of every rank (collective).
  void share_rows();
  bool staged_locally() const;
  void swap(void* stream);
  int local_row(int global_row) const;

  StaticLoadBalancer& routing_;
  EplbOnlineOptions options_;
  PlacementRequest request_;
  int ep_rank_;
  Device device_;
  int rows_per_rank_;
  std::unique_ptr<EplbTransport> transport_;
  std::optional<ExpertTensorRegistry> registry_;
  bool pull_ = false;  // receives pulled from the peers' rows (transport share_rows)
  std::vector<std::vector<int32_t>> free_rows_;  // per rank, global rows, in use order

  ExpertLoadWindow window_;
  std::vector<int64_t> last_counts_;  // cumulative counts at the last folded snapshot
  int64_t forwards_since_placement_ = 0;
  std::optional<Pending> pending_;
  EplbStatus status_;

  // GPU: side stream of the staging, events, pinned snapshot of the counters.
  void* migration_stream_ = nullptr;
  void* staged_event_ = nullptr;    // every batch complete (migration stream)
  void* swapped_event_ = nullptr;   // last swap enqueued (forward stream)
  void* snapshot_event_ = nullptr;  // counter snapshot complete
  int64_t* snapshot_ = nullptr;     // pinned [num_experts]
  bool snapshot_in_flight_ = false;
  void* last_forward_stream_ = nullptr;  // the stream of the last forward (on_first_chunk)
  bool forward_seen_ = false;
  void* forward_event_ = nullptr;  // orders a swap on another stream after that forward
  std::string failed_;             // why a migration failed on this rank ("" if none)
};

}  // namespace moe
