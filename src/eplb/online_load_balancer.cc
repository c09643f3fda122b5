#include "eplb/online_load_balancer.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "backends/backend.h"
#include "comm/communication.h"
#include "moe/errors.h"

#ifdef MOE_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#endif

namespace moe {

namespace {

#ifdef MOE_HAVE_CUDA
cudaStream_t cuda_stream(void* s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t cuda_event(void* e) { return static_cast<cudaEvent_t>(e); }

/// True when `event` has completed; false while it runs; throws on an error.
bool event_done(void* event) {
  const cudaError_t state = cudaEventQuery(cuda_event(event));
  if (state == cudaErrorNotReady) {
    (void)cudaGetLastError();  // NOLINT: clears the not-ready status, which is no error
    return false;
  }
  MOE_CUDA_CHECK(state);
  return true;
}

bool capturing(void* stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  MOE_CUDA_CHECK(cudaStreamIsCapturing(cuda_stream(stream), &status));
  return status != cudaStreamCaptureStatusNone;
}
#endif

/// Copies `bytes` from `src` to `dst` on the layer's device (async on `stream` on GPUs).
void copy_bytes(Device device, void* dst, const void* src, int64_t bytes, void* stream) {
  if (device.is_cpu()) {
    std::memcpy(dst, src, static_cast<size_t>(bytes));
    return;
  }
#ifdef MOE_HAVE_CUDA
  MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                 cuda_stream(stream)));
#endif
}

}  // namespace

int eplb_staging_rows(const EplbOnlineOptions& options, int slots_per_rank) {
  MOE_CHECK(options.staging_slots >= 0, "EPLB online: staging_slots must be >= 0, got ",
            options.staging_slots);
  return options.staging_slots > 0 ? options.staging_slots : slots_per_rank;
}

std::vector<int32_t> eplb_initial_rows(const SlotLayout& layout, int staging_rows) {
  const int p = layout.slots_per_rank(), rows = p + staging_rows;
  std::vector<int32_t> row_of_slot(layout.num_slots);
  for (int s = 0; s < layout.num_slots; ++s) {
    row_of_slot[s] = layout.rank_of_slot(s) * rows + layout.local_slot(s);
  }
  return row_of_slot;
}

OnlineLoadBalancer::OnlineLoadBalancer(StaticLoadBalancer& routing,
                                       const EplbOnlineOptions& options, const Mapping& mapping,
                                       Device device)
    : routing_(routing),
      options_(options),
      ep_rank_(mapping.ep_rank),
      device_(device),
      rows_per_rank_(routing.table().layout().slots_per_rank() +
                     eplb_staging_rows(options, routing.table().layout().slots_per_rank())),
      window_(routing.table().layout().num_experts,
              options.window > 0 ? options.window : std::max(1, options.rebalance_interval)) {
  const SlotLayout& l = routing.table().layout();
  MOE_CHECK(options.rebalance_interval >= 1, "EPLB online: rebalance_interval must be >= 1, got ",
            options.rebalance_interval);
  MOE_CHECK(options.window >= 0, "EPLB online: window must be >= 0, got ", options.window);
  MOE_CHECK(options.min_improvement >= 0 && options.min_improvement < 1,
            "EPLB online: min_improvement must be in [0, 1), got ", options.min_improvement);
  MOE_CHECK(options.migration_step_bytes >= 0,
            "EPLB online: migration_step_bytes must be >= 0, got ", options.migration_step_bytes);
  MOE_CHECK(routing.maps_slots(), "EPLB online: the layer has no placement to update");
  request_.method = parse_placement_method(options.method);
  request_.num_slots = l.num_slots;
  request_.num_ranks = l.num_ranks;
  request_.num_nodes = options.num_nodes;
  request_.num_groups = options.num_groups;
  // Validates the request once, on a uniform load, before any forward depends on it.
  (void)place_experts(std::vector<double>(l.num_experts, 1.0), request_);
  last_counts_.assign(l.num_experts, 0);
  // The rows no slot uses are free, per rank, ascending.
  std::vector<bool> used(static_cast<size_t>(l.num_ranks) * rows_per_rank_, false);
  for (int32_t row : routing.row_of_slot()) {
    MOE_CHECK(row >= 0 && row < static_cast<int>(used.size()) && !used[row],
              "EPLB online: slot row ", row, " is outside the rows or used twice");
    used[row] = true;
  }
  free_rows_.resize(l.num_ranks);
  for (int row = 0; row < static_cast<int>(used.size()); ++row) {
    if (!used[row]) free_rows_[row / rows_per_rank_].push_back(row);
  }
  status_.enabled = status_.online = true;
  status_.num_slots = l.num_slots;
  routing.prepare_updates();

  transport_ = make_eplb_transport(mapping, device);
  if (device_.is_cuda()) {
#ifdef MOE_HAVE_CUDA
    cudaStream_t s = nullptr;
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    migration_stream_ = s;
    for (void** e : {&staged_event_, &swapped_event_, &snapshot_event_, &forward_event_}) {
      cudaEvent_t ev = nullptr;
      MOE_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
      *e = ev;
    }
    MOE_CUDA_CHECK(cudaEventRecord(cuda_event(swapped_event_), s));
    MOE_CUDA_CHECK(cudaMallocHost(&snapshot_, l.num_experts * sizeof(int64_t)));
#else
    MOE_THROW("EPLB online on ", device_.str(), ": this build has no CUDA");
#endif
  }
}

OnlineLoadBalancer::~OnlineLoadBalancer() {
#ifdef MOE_HAVE_CUDA
  // Nothing may still write into the weight rows or the snapshot when they are freed.
  if (migration_stream_ != nullptr) cudaStreamSynchronize(cuda_stream(migration_stream_));
  if (snapshot_event_ != nullptr) cudaEventSynchronize(cuda_event(snapshot_event_));
  for (void* e : {staged_event_, swapped_event_, snapshot_event_, forward_event_}) {
    if (e != nullptr) cudaEventDestroy(cuda_event(e));
  }
  if (migration_stream_ != nullptr) cudaStreamDestroy(cuda_stream(migration_stream_));
  if (snapshot_ != nullptr) cudaFreeHost(snapshot_);
#endif
}

std::vector<int32_t> OnlineLoadBalancer::row_experts() const {
  const SlotTable& table = routing_.table();
  const SlotLayout& l = table.layout();
  std::vector<int32_t> experts(static_cast<size_t>(l.num_ranks) * rows_per_rank_, -1);
  const auto rows = routing_.row_of_slot();
  for (int s = 0; s < l.num_slots; ++s) experts[rows[s]] = table.expert_of(s);
  // A free row holds whatever was loaded there: a copy of one of its rank's slots.
  for (int r = 0; r < l.num_ranks; ++r) {
    for (size_t i = 0; i < free_rows_[r].size(); ++i) {
      experts[free_rows_[r][i]] = table.expert_of(l.global_slot(r, i % l.slots_per_rank()));
    }
  }
  return experts;
}

int OnlineLoadBalancer::local_row(int global_row) const {
  const int row = global_row - ep_rank_ * rows_per_rank_;
  MOE_CHECK(row >= 0 && row < rows_per_rank_, "EPLB migration: row ", global_row,
            " is not one of rank ", ep_rank_, "'s rows");
  return row;
}

void OnlineLoadBalancer::attach(MoEBackend& backend) {
  MOE_CHECK(!pending_, "EPLB online: weights (re)loaded while a migration is pending");
#ifdef MOE_HAVE_CUDA
  // Nothing may still read the peers' mappings that share_rows replaces.
  if (device_.is_cuda()) MOE_CUDA_CHECK(cudaStreamSynchronize(cuda_stream(migration_stream_)));
#endif
  ExpertTensorRegistry registry(rows_per_rank_, device_);
  backend.register_eplb_tensors(registry);
  status_.support = std::string(eplb_support_name(registry.support())) +
                    (registry.reason().empty() ? "" : ": " + registry.reason());
  MOE_CHECK(registry.support() != EplbSupport::kNotSupported, "EPLB online mode: backend '",
            backend.name(), "' cannot migrate its weights: ", registry.reason());
  registry.validate();
  registry_.emplace(std::move(registry));
  share_rows();
}

void OnlineLoadBalancer::share_rows() {
  pull_ = transport_->share_rows(*registry_);
  status_.transport = transport_->name() + (pull_ ? " + cuda ipc pull" : "");
}

const ExpertTensorRegistry& OnlineLoadBalancer::registry() const {
  MOE_CHECK(registry_.has_value(), "EPLB online: no tensors registered before the weights load");
  return *registry_;
}

void OnlineLoadBalancer::drop_tensor_for_testing(std::string_view name) {
  MOE_CHECK(registry_.has_value(), "EPLB online: no tensors registered before the weights load");
  registry_->drop_for_testing(name);
  share_rows();  // the transport indexes the tensors too
}

void OnlineLoadBalancer::on_first_chunk(void* stream) {
  last_forward_stream_ = stream;  // also a capture's: its replays run there
  forward_seen_ = true;
#ifdef MOE_HAVE_CUDA
  // A graph capture records kernels only; its user steps between replays (eplb_step).
  if (device_.is_cpu() || !capturing(stream)) step(stream);
#else
  step(stream);
#endif
  routing_.on_first_chunk(stream);
}

void OnlineLoadBalancer::on_routed(const TensorView& topk_ids, void* stream) {
  routing_.on_routed(topk_ids, stream);
}

void OnlineLoadBalancer::on_last_chunk(void* stream) { routing_.on_last_chunk(stream); }

void OnlineLoadBalancer::collect_statistics(void* stream) {
  const int e = routing_.table().layout().num_experts;
  std::vector<int64_t> counts;
  if (device_.is_cpu()) {
    counts = routing_.token_counts(nullptr);
  } else {
#ifdef MOE_HAVE_CUDA
    if (snapshot_in_flight_ && event_done(snapshot_event_)) {
      counts.assign(snapshot_, snapshot_ + e);
      snapshot_in_flight_ = false;
    }
    if (!snapshot_in_flight_) {
      MOE_CUDA_CHECK(cudaMemcpyAsync(snapshot_, routing_.device_counts(), e * sizeof(int64_t),
                                     cudaMemcpyDeviceToHost, cuda_stream(stream)));
      MOE_CUDA_CHECK(cudaEventRecord(cuda_event(snapshot_event_), cuda_stream(stream)));
      snapshot_in_flight_ = true;
    }
#endif
  }
  if (counts.empty()) return;
  // Counters only grow; a reset (reset_expert_token_counts) zeroes last_counts_ too.
  std::vector<int64_t> delta(e);
  for (int i = 0; i < e; ++i) delta[i] = counts[i] - last_counts_[i];
  last_counts_ = std::move(counts);
  window_.add(delta);
}

bool OnlineLoadBalancer::staged_locally() const {
  if (device_.is_cpu()) return true;
#ifdef MOE_HAVE_CUDA
  return event_done(staged_event_);
#else
  return true;
#endif
}

void OnlineLoadBalancer::check_usable() const {
  MOE_CHECK(registry_.has_value(), "EPLB online: used before the weights were loaded");
  MOE_CHECK(failed_.empty(), "EPLB online on EP rank ", ep_rank_,
            " is unusable: an earlier migration failed: ", failed_);
}

void OnlineLoadBalancer::issue_batch_guarded() {
  try {
    issue_batch();
  } catch (const std::exception& e) {
    // The ranks match transfers by order: a rank that cannot issue this batch must not go
    // on with the next one. Its peers fail at their next exchange (bounded by the timeout).
    failed_ = e.what();
    pending_.reset();
    status_.migration_pending = false;
    throw;
  }
}

void OnlineLoadBalancer::step(void* stream) {
  check_usable();
  ++status_.steps;
  collect_statistics(stream);
  if (pending_) {
    if (pending_->issued < pending_->plan.moves.size()) {
      issue_batch_guarded();
    } else if (transport_->all(staged_locally())) {
      swap(stream);
    }
  }
  if (++forwards_since_placement_ >= options_.rebalance_interval && !pending_) {
    forwards_since_placement_ = 0;
    rebalance(stream);
  }
}

void OnlineLoadBalancer::rebalance(void* stream) {
  ++status_.placements;
  const std::vector<int64_t> summed = transport_->allreduce_sum(window_.total());
  const std::vector<double> load(summed.begin(), summed.end());
  const SlotTable& current = routing_.table();
  const Placement placed = place_experts(load, request_);
  SlotTable next(current.layout(),
                 align_placement(current, placed.slot_to_expert, request_.num_nodes));
  const double before = imbalance(rank_loads(load, current));
  const double after = imbalance(rank_loads(load, next));
  if (after > before * (1 - options_.min_improvement)) {
    ++status_.skipped;
    status_.last_skip_reason = "imbalance " + std::to_string(before) + " -> " +
                               std::to_string(after) + " is not lower by min_improvement " +
                               std::to_string(options_.min_improvement);
    return;
  }
  status_.last_imbalance_before = before;
  status_.last_imbalance_after = after;
  start_migration(next, stream);
}

void OnlineLoadBalancer::request_placement(const std::vector<int32_t>& slot_to_expert,
                                           void* stream) {
  check_usable();
  MOE_CHECK(!pending_, "EPLB online: a migration is pending; finish it first");
  const SlotTable& current = routing_.table();
  MOE_CHECK(static_cast<int>(slot_to_expert.size()) == current.layout().num_slots,
            "EPLB online: the requested placement has ", slot_to_expert.size(),
            " slots, the layer ", current.layout().num_slots);
  start_migration(SlotTable(current.layout(), slot_to_expert), stream);
}

void OnlineLoadBalancer::start_migration(const SlotTable& next, void* stream) {
  MigrationPlan plan = plan_migration(routing_.table(), next);
  const SlotLayout& l = plan.layout;
  if (plan.moves.empty()) {
    ++status_.skipped;
    status_.last_skip_reason = "the new placement equals the one in use";
    return;
  }
  const int staging = rows_per_rank_ - l.slots_per_rank();
  if (plan.max_moves_into_rank() > staging) {
    ++status_.skipped;
    status_.last_skip_reason = "a rank would change " + std::to_string(plan.max_moves_into_rank()) +
                               " slots, more than its " + std::to_string(staging) + " staging rows";
    return;
  }
  // Every move writes a free row of its destination rank; the rows its slots leave become
  // free at the swap (not before: forwards read them until then).
  Pending p{std::move(plan), next, {}, {}, free_rows_, 0, std::chrono::steady_clock::now()};
  const auto rows = routing_.row_of_slot();
  p.next_rows.assign(rows.begin(), rows.end());
  std::vector<size_t> taken(l.num_ranks, 0);
  for (const SlotMove& m : p.plan.moves) {
    const int r = l.rank_of_slot(m.dst);
    const int32_t row = free_rows_[r][taken[r]++];
    p.dst_rows.push_back(row);
    p.next_rows[m.dst] = row;
  }
  for (int r = 0; r < l.num_ranks; ++r) {
    p.next_free[r].erase(p.next_free[r].begin(),
                         p.next_free[r].begin() + static_cast<std::ptrdiff_t>(taken[r]));
  }
  for (const SlotMove& m : p.plan.moves) p.next_free[l.rank_of_slot(m.dst)].push_back(rows[m.dst]);
#ifdef MOE_HAVE_CUDA
  // Free rows may still be read by forwards enqueued before the swap that freed them.
  if (device_.is_cuda()) {
    MOE_CUDA_CHECK(
        cudaStreamWaitEvent(cuda_stream(migration_stream_), cuda_event(swapped_event_), 0));
  }
#endif
  status_.last_slots_moved = static_cast<int>(p.plan.moves.size());
  status_.last_remote_moves = p.plan.remote_moves();
  status_.last_bytes_in = p.plan.moves_into(ep_rank_) * registry_->slot_bytes();
  status_.migration_pending = true;
  pending_ = std::move(p);
  issue_batch_guarded();
}

void OnlineLoadBalancer::issue_batch() {
  Pending& p = *pending_;
  const std::vector<SlotMove>& moves = p.plan.moves;
  // The batch: moves from `issued` while their bytes fit the step's budget (one at least);
  // the same on every rank, since the sizes are.
  const int64_t move_bytes = registry_->slot_bytes();
  const int64_t budget = options_.migration_step_bytes;
  size_t end = p.issued + 1;
  while (end < moves.size() &&
         (budget == 0 || static_cast<int64_t>(end + 1 - p.issued) * move_bytes <= budget)) {
    ++end;
  }
  MigrationPlan batch{p.plan.layout,
                      {moves.begin() + static_cast<std::ptrdiff_t>(p.issued),
                       moves.begin() + static_cast<std::ptrdiff_t>(end)}};
  const RankMigration mine = rank_migration(batch, ep_rank_);
  // The batch's moves into this rank, in plan order, are its staging entries 0, 1, ...
  std::vector<int> dst_local;
  for (size_t i = p.issued; i < end; ++i) {
    if (p.plan.layout.rank_of_slot(moves[i].dst) == ep_rank_) {
      dst_local.push_back(local_row(p.dst_rows[i]));
    }
  }
  const auto rows = routing_.row_of_slot();
  const SlotLayout& l = p.plan.layout;
  auto src_local = [&](int local_slot) {
    return local_row(rows[l.global_slot(ep_rank_, local_slot)]);
  };
  const std::vector<ExpertTensor>& tensors = registry_->tensors();
  void* s = device_.is_cpu() ? nullptr : migration_stream_;
  for (const ExpertTensor& t : tensors) {
    for (const RankMigration::Copy& c : mine.copies) {
      copy_bytes(device_, t.slots[dst_local[c.staging]], t.slots[src_local(c.src_local)],
                 t.slot_bytes, s);
    }
  }
  if (pull_) {
    // Copy engines read the peers' live rows (they stay until every rank has swapped).
    for (const RankMigration::Transfer& x : mine.receives) {
      const int peer_row = rows[l.global_slot(x.peer, x.remote)] - x.peer * rows_per_rank_;
      for (size_t t = 0; t < tensors.size(); ++t) {
        transport_->pull(x.peer, t, peer_row, tensors[t].slots[dst_local[x.local]],
                         tensors[t].slot_bytes, s);
      }
    }
    finish_batch(end);
    return;
  }
  // Sends and receives in plan order, each move's tensors in registration order: the peer
  // derives the same sequence from the same plan.
  std::vector<ByteTransfer> sends, receives;
  for (const RankMigration::Transfer& x : mine.sends) {
    for (const ExpertTensor& t : tensors) {
      sends.push_back({x.peer, t.slots[src_local(x.local)], t.slot_bytes});
    }
  }
  for (const RankMigration::Transfer& x : mine.receives) {
    for (const ExpertTensor& t : tensors) {
      receives.push_back({x.peer, t.slots[dst_local[x.local]], t.slot_bytes});
    }
  }
  transport_->exchange(sends, receives, s);
  finish_batch(end);
}

void OnlineLoadBalancer::finish_batch(size_t end) {
  pending_->issued = end;
#ifdef MOE_HAVE_CUDA
  if (end == pending_->plan.moves.size() && device_.is_cuda()) {
    MOE_CUDA_CHECK(cudaEventRecord(cuda_event(staged_event_), cuda_stream(migration_stream_)));
  }
#endif
}

void OnlineLoadBalancer::swap(void* stream) {
  Pending& p = *pending_;
#ifdef MOE_HAVE_CUDA
  // The swap on `stream` comes after the staging and after the last forward (on whatever
  // stream it ran); that forward's stream then waits for the swap, so forwards either side
  // of it see one table each, and the rows freed here are written only once it is done.
  const bool other = forward_seen_ && last_forward_stream_ != stream;
  if (device_.is_cuda()) {
    MOE_CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(stream), cuda_event(staged_event_), 0));
    if (other) {
      MOE_CUDA_CHECK(
          cudaEventRecord(cuda_event(forward_event_), cuda_stream(last_forward_stream_)));
      MOE_CUDA_CHECK(cudaStreamWaitEvent(cuda_stream(stream), cuda_event(forward_event_), 0));
    }
  }
#endif
  routing_.set_table(p.next, p.next_rows, stream);
  free_rows_ = std::move(p.next_free);
#ifdef MOE_HAVE_CUDA
  if (device_.is_cuda()) {
    MOE_CUDA_CHECK(cudaEventRecord(cuda_event(swapped_event_), cuda_stream(stream)));
    if (other) {
      MOE_CUDA_CHECK(
          cudaStreamWaitEvent(cuda_stream(last_forward_stream_), cuda_event(swapped_event_), 0));
    }
  }
#endif
  status_.last_migration_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - p.start).count();
  ++status_.migrations;
  status_.migration_pending = false;
  pending_.reset();
}

void OnlineLoadBalancer::finish_migration(void* stream) {
  if (!pending_) return;
  check_usable();
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(comm_timeout_seconds());
  while (pending_) {
    if (pending_->issued < pending_->plan.moves.size()) {
      issue_batch_guarded();
      continue;
    }
    // Every rank leaves on the same round: `all` gives each the same answer.
    if (transport_->all(staged_locally())) {
      swap(stream);
      break;
    }
    MOE_CHECK(std::chrono::steady_clock::now() < until, "EPLB online: EP rank ", ep_rank_,
              " waited ", comm_timeout_seconds(),
              " s for a migration's staging (comm timeout; MOE_COMM_TIMEOUT_S)");
    std::this_thread::yield();
  }
}

void OnlineLoadBalancer::before_counts_reset(void* stream) {
#ifdef MOE_HAVE_CUDA
  // A snapshot in flight is superseded by the full read below.
  if (snapshot_in_flight_) MOE_CUDA_CHECK(cudaEventSynchronize(cuda_event(snapshot_event_)));
#endif
  snapshot_in_flight_ = false;
  // The tokens counted since the last snapshot go into the window before the counters
  // restart (a host read: a reset is the user's call, not a forward's).
  const std::vector<int64_t> counts = routing_.token_counts(stream);
  std::vector<int64_t> delta(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) delta[i] = counts[i] - last_counts_[i];
  window_.add(delta);
  std::fill(last_counts_.begin(), last_counts_.end(), 0);
}

void OnlineLoadBalancer::poison_free_rows_for_testing(void* stream) {
  check_usable();
  MOE_CHECK(!pending_, "EPLB online: poisoning free rows while a migration writes them");
  for (int32_t row : free_rows_[ep_rank_]) {
    for (const ExpertTensor& t : registry_->tensors()) {
      std::byte* dst = t.slots[local_row(row)];
      if (device_.is_cpu()) {
        std::memset(dst, 0xFF, static_cast<size_t>(t.slot_bytes));
      } else {
#ifdef MOE_HAVE_CUDA
        MOE_CUDA_CHECK(
            cudaMemsetAsync(dst, 0xFF, static_cast<size_t>(t.slot_bytes), cuda_stream(stream)));
#endif
      }
    }
  }
}

EplbStatus OnlineLoadBalancer::status() const {
  EplbStatus s = status_;
  const auto map = routing_.table().slot_to_expert();
  s.slot_to_expert.assign(map.begin(), map.end());
  return s;
}

}  // namespace moe
