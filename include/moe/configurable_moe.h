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
struct DeviceInfo;

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

  // Parts, for the scheduler (library-internal types).
  MoEBackend& backend() { return *backend_; }
  Communication& communication() { return *comm_; }
  Router& router() { return *router_; }
  LoadBalancer* load_balancer();

 private:
  friend struct MoeBuilder;
  ConfigurableMoE(MoeConfig config, Mapping mapping, std::unique_ptr<MoEBackend> backend,
                  std::unique_ptr<Communication> comm, std::unique_ptr<StaticLoadBalancer> eplb);
  void load_backend_weights(WeightSource& source, LoadMode mode);

  MoeConfig config_;
  Mapping mapping_;
  std::unique_ptr<MoEBackend> backend_;
  std::unique_ptr<Communication> comm_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<MoEScheduler> scheduler_;
  std::unique_ptr<StaticLoadBalancer> eplb_;  // null: no EPLB and no counting
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
