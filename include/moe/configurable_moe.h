// The MoE layer a user holds: ConfigurableMoE, built by create_moe().
//
//   auto [moe, report] = moe::create_moe(moe::preset("qwen3-30b-a3b"), {}, {});
//   moe->load_weights(*moe::make_random_weights(moe->config(), 1));
//   moe->forward(x, router_logits, out);   // x, out: act_dtype [T, H]; logits f32 [T, E]
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/config.h"
#include "moe/tensor.h"
#include "moe/weights.h"

namespace moe {

class MoEBackend;
class Communication;
class MoEScheduler;
class Router;
class LoadBalancer;
class StaticLoadBalancer;
class OnlineLoadBalancer;
struct DeviceInfo;

/// EPLB online mode (DESIGN.md "EPLB"): every `rebalance_interval` forwards the placement is
/// recomputed from the tokens per expert of the last `window` forwards (summed over the EP
/// ranks) and the weights of the slots that change move between ranks (or within one) into
/// spare weight rows while forwards go on; at a later forward boundary every rank repoints
/// those slots at their new rows (a table update in place, no copy). Buffers never move, so
/// CUDA graphs captured before a migration stay valid; a graph's user calls
/// ConfigurableMoE::eplb_step() between replays (eager forwards run it at their start).
struct EplbOnlineOptions {
  /// Forwards between re-placements; 0 turns online mode off.
  int rebalance_interval = 0;
  /// Forwards of statistics a placement uses; 0: rebalance_interval.
  int window = 0;
  /// Slots of the initial placement when MoeOptions::eplb_slot_to_expert is empty (a
  /// placement of a uniform load); 0: num_experts (then only moves, no replicas, help).
  int num_slots = 0;
  /// Placement method ("hierarchical" or "greedy"), nodes and expert groups (placement.h).
  std::string method = "hierarchical";
  int num_nodes = 1;
  int num_groups = 0;
  /// Spare weight rows per rank that migrations write into (0: slots per rank). A
  /// re-placement that changes more of one rank's slots than this is skipped (and said).
  int staging_slots = 0;
  /// Bytes of moved weights (all ranks together) issued per forward boundary, so that little
  /// copy traffic shares the GPU with any one forward; 0: a migration's moves all at once.
  int64_t migration_step_bytes = int64_t{16} << 20;
  /// A re-placement is skipped unless it lowers the window's imbalance by this fraction.
  double min_improvement = 0.02;
};

/// Where EPLB stands (ConfigurableMoE::eplb_status).
struct EplbStatus {
  bool enabled = false;  // a placement is in use (static or online)
  bool online = false;
  int num_slots = 0;
  std::vector<int32_t> slot_to_expert;  // the placement in use [num_slots]
  int64_t steps = 0;                    // forward boundaries seen by online mode
  int64_t placements = 0;               // re-placements computed
  int64_t migrations = 0;               // migrations swapped in
  int64_t skipped = 0;                  // re-placements not carried out
  std::string last_skip_reason;
  bool migration_pending = false;    // staged (or staging), not yet swapped
  int last_slots_moved = 0;          // slots that changed, all ranks
  int last_remote_moves = 0;         // of which moved between ranks
  int64_t last_bytes_in = 0;         // bytes this rank received or copied into its slots
  double last_imbalance_before = 1;  // the window's load on the old / new placement
  double last_imbalance_after = 1;
  double last_migration_ms = 0;  // host time from staging start to the swap
  std::string support;           // the quant method's migration status and reason
  std::string transport;         // how weights move: local, mpi, nccl, nccl + cuda ipc pull
};

/// What the caller asks of the factory.
struct MoeOptions {
  /// "auto" or a backend name ("reference", ...).
  std::string backend = "auto";
  /// "auto" or a communication strategy name ("local", ...).
  std::string communication = "auto";
  /// Allow the factory to fall back to the next candidate when the requested backend
  /// cannot run this layer; when false such a request is an error.
  bool allow_fallback = false;
  /// Expert-parallel load balancing, static mode (DESIGN.md "EPLB"): global slot -> expert
  /// [num_slots], num_slots >= num_experts and divisible by ep_size, every expert in at least
  /// one slot (e.g. from `moe eplb plan --out`, read with read_eplb_placement). The backend
  /// and the communication then work in slot space (rank r holds slots [r * S/ep, (r+1) *
  /// S/ep)), each rank loads the experts of its slots, and routed tokens go to one of their
  /// expert's slots (eplb/slot_routing.h). Empty: no EPLB.
  std::vector<int32_t> eplb_slot_to_expert;
  /// Count tokens per expert in every forward (ConfigurableMoE::expert_token_counts); on
  /// whenever eplb_slot_to_expert is given.
  bool count_expert_load = false;
  /// EPLB online mode (off unless rebalance_interval > 0); eplb_slot_to_expert, when given,
  /// is its initial placement.
  EplbOnlineOptions eplb_online;
};

/// Reads a placement file written by `moe eplb plan --out` (JSON: num_experts, num_slots,
/// num_ranks, slot_to_expert) and checks it against `config` and `ep_size`; throws moe::Error
/// naming the file and the field.
std::vector<int32_t> read_eplb_placement(const std::string& path, const MoeConfig& config,
                                         int ep_size);

/// One backend or strategy the factory considered.
struct CandidateReport {
  std::string name;
  bool feasible = false;
  bool chosen = false;
  std::string reason;  ///< why it can or cannot run this layer
};

/// Every decision the factory made, with reasons.
struct FactoryReport {
  std::string requested_backend;
  std::string backend;  ///< the one chosen
  std::vector<CandidateReport> backends;
  std::string auto_policy;  ///< why "auto" ordered the candidates as it did, when it matters
  std::string communication;
  std::vector<CandidateReport> communications;
  std::string device;       ///< the device the layer runs on
  std::string str() const;  ///< multi-line trace for printing
};

class ConfigurableMoE {
 public:
  ~ConfigurableMoE();
  ConfigurableMoE(const ConfigurableMoE&) = delete;
  ConfigurableMoE& operator=(const ConfigurableMoE&) = delete;

  const MoeConfig& config() const { return config_; }
  const Mapping& mapping() const { return mapping_; }
  std::string_view backend_name() const;
  /// Where x, router_logits and out must live.
  Device device() const;

  /// create_weights -> load_weights -> post_load_weights -> process_weights_after_loading.
  /// Loads the router weight and biases the source has, and only the experts of this rank.
  void load_weights(WeightSource& source, LoadMode mode = LoadMode::kVanilla);
  /// pre_reload_weights, then the load sequence again with new weights.
  void reload_weights(WeightSource& source, LoadMode mode = LoadMode::kVanilla);

  /// Runs the layer. x: act_dtype [T, H]; router_logits: f32 [T, E], or an empty view to
  /// compute them from the loaded router weight; out: act_dtype [T, H]. T may be 0 or larger
  /// than max_num_tokens (the scheduler chunks). `stream` is a cudaStream_t for GPU backends.
  void forward(const TensorView& x, const TensorView& router_logits, const TensorView& out,
               void* stream = nullptr);

  /// Runs only the router: topk_ids i32 [T, k], topk_weights f32 [T, k].
  void route(const TensorView& x, const TensorView& router_logits, const TensorView& topk_ids,
             const TensorView& topk_weights, void* stream = nullptr);

  /// Number of forwards run so far.
  int64_t iteration() const { return iteration_; }

  /// Tokens this rank routed to each expert [num_experts] since the layer was built or the
  /// counts were reset (MoeOptions::count_expert_load or EPLB); synchronises `stream`.
  /// Empty when counting is off.
  std::vector<int64_t> expert_token_counts(void* stream = nullptr);
  void reset_expert_token_counts(void* stream = nullptr);
  /// Global slots of the layer (num_experts without EPLB).
  int num_slots() const;
  /// EPLB online mode's work at a forward boundary: fold the finished statistics into the
  /// window, swap in a migration every rank has staged, start a re-placement when due.
  /// Collective over the EP ranks. Eager forwards call it at their start; between CUDA graph
  /// replays (which cannot) call it once per replay, on the replays' stream (another stream
  /// is ordered after the last forward's, and that one after the swap). No-op without
  /// online mode.
  void eplb_step(void* stream = nullptr);
  /// Online mode: re-places now with `slot_to_expert` (same slot count) instead of waiting
  /// for the statistics; the migration is staged and swapped in by later steps. Collective.
  void eplb_request_placement(const std::vector<int32_t>& slot_to_expert, void* stream = nullptr);
  /// Online mode: blocks until no migration is pending (steps until the swap). Collective.
  void eplb_finish_migration(void* stream = nullptr);
  EplbStatus eplb_status() const;

  // Parts, for the scheduler (library-internal types).
  MoEBackend& backend() { return *backend_; }
  Communication& communication() { return *comm_; }
  Router& router() { return *router_; }
  LoadBalancer* load_balancer();
  /// Online mode's balancer (nullptr without online mode), e.g. for tests.
  OnlineLoadBalancer* online_load_balancer() { return online_.get(); }

 private:
  friend struct MoeBuilder;
  ConfigurableMoE(MoeConfig config, Mapping mapping, std::unique_ptr<MoEBackend> backend,
                  std::unique_ptr<Communication> comm, std::unique_ptr<StaticLoadBalancer> eplb,
                  std::unique_ptr<OnlineLoadBalancer> online);
  void load_backend_weights(WeightSource& source, LoadMode mode);

  MoeConfig config_;
  Mapping mapping_;
  std::unique_ptr<MoEBackend> backend_;
  std::unique_ptr<Communication> comm_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<MoEScheduler> scheduler_;
  std::unique_ptr<StaticLoadBalancer> eplb_;    // null: no EPLB and no counting
  std::unique_ptr<OnlineLoadBalancer> online_;  // online mode (wraps eplb_)
  bool weights_loaded_ = false;
  int64_t iteration_ = 0;
};

struct CreateResult {
  std::unique_ptr<ConfigurableMoE> moe;
  FactoryReport report;
};

/// Chooses a backend (requested or "auto": the best that can run this layer on this
/// machine) and a communication strategy, and assembles the layer. Throws moe::Error whose
/// message carries the report when nothing can run it.
CreateResult create_moe(const MoeConfig& config, const Mapping& mapping = {},
                        const MoeOptions& options = {});

/// Names of the backends built into this library.
std::vector<std::string> backend_names();

}  // namespace moe
