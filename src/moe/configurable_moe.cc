// ConfigurableMoE (the assembler) and create_moe (the factory).
//
// The assembler builds backend, communication, router and scheduler from a MoeConfig and a
// Mapping, delegates the weight lifecycle, validates the forward's tensors once and counts
// iterations. It holds no chunking, routing, communication or backend-specific branches.
#include "moe/configurable_moe.h"

#include <optional>
#include <sstream>

#include "backends/backend.h"
#include "comm/comm_factory.h"
#include "comm/communication.h"
#include "core/device_info.h"
#include "eplb/expert_tensors.h"
#include "eplb/online_load_balancer.h"
#include "eplb/placement.h"
#include "eplb/slot_weight_source.h"
#include "eplb/static_load_balancer.h"
#include "moe/backend_registry.h"
#include "moe/errors.h"
#include "routing/router.h"
#include "scheduler/scheduler.h"

namespace moe {

ConfigurableMoE::ConfigurableMoE(MoeConfig config, Mapping mapping,
                                 std::unique_ptr<MoEBackend> backend,
                                 std::unique_ptr<Communication> comm,
                                 std::unique_ptr<StaticLoadBalancer> eplb,
                                 std::unique_ptr<OnlineLoadBalancer> online)
    : config_(std::move(config)),
      mapping_(mapping),
      backend_(std::move(backend)),
      comm_(std::move(comm)),
      router_(std::make_unique<Router>(config_, backend_->device())),
      eplb_(std::move(eplb)),
      online_(std::move(online)) {
  switch (backend_->scheduler_kind()) {
    case SchedulerKind::kExternalComm:
      scheduler_ = make_external_comm_scheduler(config_, backend_->device());
      break;
    case SchedulerKind::kFusedComm:
      MOE_THROW("backend '", backend_->name(),
                "' exchanges tokens inside its kernel, but this build has no fused-comm scheduler");
  }
}

ConfigurableMoE::~ConfigurableMoE() = default;

std::string_view ConfigurableMoE::backend_name() const { return backend_->name(); }

LoadBalancer* ConfigurableMoE::load_balancer() {
  if (online_) return online_.get();
  return eplb_.get();
}

void ConfigurableMoE::eplb_step(void* stream) {
  if (online_) online_->step(stream);
}

void ConfigurableMoE::eplb_request_placement(const std::vector<int32_t>& slot_to_expert,
                                             void* stream) {
  MOE_CHECK(online_ != nullptr, "eplb_request_placement: the layer has no EPLB online mode");
  online_->request_placement(slot_to_expert, stream);
}

void ConfigurableMoE::eplb_finish_migration(void* stream) {
  if (online_) online_->finish_migration(stream);
}

EplbStatus ConfigurableMoE::eplb_status() const {
  if (online_) return online_->status();
  EplbStatus s;
  s.num_slots = num_slots();
  if (eplb_ && eplb_->maps_slots()) {
    s.enabled = true;
    const auto map = eplb_->table().slot_to_expert();
    s.slot_to_expert.assign(map.begin(), map.end());
  }
  return s;
}

int ConfigurableMoE::num_slots() const {
  return eplb_ ? eplb_->table().layout().num_slots : config_.num_experts;
}

std::vector<int64_t> ConfigurableMoE::expert_token_counts(void* stream) {
  return eplb_ ? eplb_->token_counts(stream) : std::vector<int64_t>{};
}

void ConfigurableMoE::reset_expert_token_counts(void* stream) {
  if (online_) online_->before_counts_reset(stream);
  if (eplb_) eplb_->reset_counts(stream);
}

void ConfigurableMoE::load_backend_weights(WeightSource& source, LoadMode mode) {
  // Under EPLB the backend's experts are global slots (slot s loads expert
  // slot_to_expert[s]), or in online mode weight rows (row_experts()).
  if (online_) {
    const std::vector<int32_t> rows = online_->row_experts();
    SlotWeightSource slots(source, rows);
    backend_->load_weights(slots, mode);
  } else if (eplb_ && eplb_->maps_slots()) {
    SlotWeightSource slots(source, eplb_->table().slot_to_expert());
    backend_->load_weights(slots, mode);
  } else {
    backend_->load_weights(source, mode);
  }
}

Device ConfigurableMoE::device() const { return backend_->device(); }

void ConfigurableMoE::load_weights(WeightSource& source, LoadMode mode) {
  if (weights_loaded_) {
    reload_weights(source, mode);
    return;
  }
  backend_->create_weights();
  router_->load(source);
  load_backend_weights(source, mode);
  backend_->post_load_weights();
  backend_->process_weights_after_loading();
  if (online_) online_->attach(*backend_);
  weights_loaded_ = true;
}

void ConfigurableMoE::reload_weights(WeightSource& source, LoadMode mode) {
  MOE_CHECK(weights_loaded_, "reload_weights before load_weights");
  // A pending migration writes rows the loader is about to fill: land it first (collective,
  // as reloading is).
  if (online_) online_->finish_migration(nullptr);
  backend_->pre_reload_weights();
  weights_loaded_ = false;
  router_->load(source);
  load_backend_weights(source, mode);
  backend_->post_load_weights();
  backend_->process_weights_after_loading();
  if (online_) online_->attach(*backend_);
  weights_loaded_ = true;
}

namespace {

void check_activation(const TensorView& t, std::string_view what, const MoeConfig& c, Device device,
                      int64_t rows) {
  MOE_CHECK(t.ndim() == 2 && t.size(1) == c.hidden_size && (rows < 0 || t.size(0) == rows), what,
            ": expected [T, ", c.hidden_size, "]",
            rows >= 0 ? " with T = " + std::to_string(rows) : "", ", got ", t.str());
  MOE_CHECK(t.dtype() == c.act_dtype, what, ": expected ", dtype_name(c.act_dtype), ", got ",
            t.str());
  MOE_CHECK(t.device() == device, what, " is on ", t.device().str(), " but the layer runs on ",
            device.str());
  MOE_CHECK(t.is_contiguous(), what, " must be contiguous, got strides of ", t.str());
}

}  // namespace

void ConfigurableMoE::forward(const TensorView& x, const TensorView& router_logits,
                              const TensorView& out, void* stream) {
  MOE_CHECK(weights_loaded_, "forward before load_weights");
  check_activation(x, "x", config_, device(), -1);
  check_activation(out, "out", config_, device(), x.size(0));
  if (router_logits.empty()) {
    MOE_CHECK(router_->has_weight(),
              "no router_logits given and the layer has no router weight loaded");
  } else {
    MOE_CHECK(router_logits.ndim() == 2 && router_logits.size(0) == x.size(0) &&
                  router_logits.size(1) == config_.num_experts &&
                  router_logits.dtype() == DType::kF32,
              "router_logits: expected f32[", x.size(0), ", ", config_.num_experts, "], got ",
              router_logits.str());
    MOE_CHECK(router_logits.device() == device() && router_logits.is_contiguous(),
              "router_logits must be contiguous on ", device().str(), ", got ",
              router_logits.str());
  }
  scheduler_->forward(*this, x, router_logits, out, stream);
  ++iteration_;
}

void ConfigurableMoE::route(const TensorView& x, const TensorView& router_logits,
                            const TensorView& topk_ids, const TensorView& topk_weights,
                            void* stream) {
  if (!router_logits.empty()) {
    router_->route(router_logits, topk_ids, topk_weights, stream);
    return;
  }
  MOE_CHECK(router_->has_weight(), "route: no router_logits and no router weight loaded");
  check_activation(x, "x", config_, device(), -1);
  Tensor logits = Tensor::empty({x.size(0), config_.num_experts}, DType::kF32, device());
  router_->compute_logits(x, logits, stream);
  router_->route(logits, topk_ids, topk_weights, stream);
}

// ---- Factory ---------------------------------------------------------------------------

std::string FactoryReport::str() const {
  std::ostringstream os;
  auto list = [&os](const std::vector<CandidateReport>& candidates) {
    for (const auto& c : candidates) {
      os << "  "
         << (c.chosen     ? "[chosen]  "
             : c.feasible ? "[ok]      "
                          : "[no]      ")
         << c.name << ": " << c.reason << "\n";
    }
  };
  os << "device: " << device << "\n";
  os << "backend: " << backend << " (requested: " << requested_backend << ")\n";
  if (!auto_policy.empty()) os << "  policy: " << auto_policy << "\n";
  list(backends);
  os << "communication: " << communication << "\n";
  list(communications);
  return os.str();
}

std::vector<std::string> backend_names() {
  std::vector<std::string> names;
  for (const BackendEntry* e : backend_registry()) names.emplace_back(e->name);
  return names;
}

struct MoeBuilder {
  static std::unique_ptr<ConfigurableMoE> build(const MoeConfig& c, const Mapping& m,
                                                std::unique_ptr<MoEBackend> b,
                                                std::unique_ptr<Communication> comm,
                                                std::unique_ptr<StaticLoadBalancer> eplb,
                                                std::unique_ptr<OnlineLoadBalancer> online) {
    return std::unique_ptr<ConfigurableMoE>(new ConfigurableMoE(
        c, m, std::move(b), std::move(comm), std::move(eplb), std::move(online)));
  }
};

namespace {

/// The layer as the backend and the communication see it under EPLB: its experts are the
/// global slots. They never route (the router and the load balancer did), so the routing
/// groups, which refer to expert ids, are dropped.
MoeConfig slot_space_config(const MoeConfig& c, int num_slots) {
  MoeConfig s = c;
  s.num_experts = num_slots;
  s.routing.num_groups = 1;
  s.routing.topk_groups = 1;
  s.routing.has_correction_bias = false;
  return s;
}

/// Online mode without a placement file: the placement of a uniform load.
SlotTable initial_online_placement(const MoeConfig& c, const Mapping& m,
                                   const EplbOnlineOptions& o) {
  PlacementRequest request;
  request.method = parse_placement_method(o.method);
  request.num_slots = o.num_slots > 0 ? o.num_slots : c.num_experts;
  request.num_ranks = m.ep_size;
  request.num_nodes = o.num_nodes;
  request.num_groups = o.num_groups;
  return place_experts(std::vector<double>(c.num_experts, 1.0), request).table();
}

}  // namespace

CreateResult create_moe(const MoeConfig& config, const Mapping& mapping,
                        const MoeOptions& options) {
  config.validate();
  mapping.validate();
  const DeviceInfo device = DeviceInfo::detect();
  const bool online = options.eplb_online.rebalance_interval > 0;
  const bool eplb = !options.eplb_slot_to_expert.empty() || online;
  std::optional<SlotTable> slot_table;
  if (!options.eplb_slot_to_expert.empty()) {
    const int slots = static_cast<int>(options.eplb_slot_to_expert.size());
    MOE_CHECK(
        !online || options.eplb_online.num_slots == 0 || options.eplb_online.num_slots == slots,
        "EPLB: eplb_online.num_slots (", options.eplb_online.num_slots,
        ") disagrees with the placement given (", slots, " slots)");
    slot_table.emplace(make_slot_layout(config.num_experts, slots, mapping.ep_size),
                       options.eplb_slot_to_expert);
  } else if (online) {
    slot_table.emplace(initial_online_placement(config, mapping, options.eplb_online));
  }
  // The backend and the communication work in slot space under EPLB; in online mode in row
  // space: each rank holds its slots and the spare rows migrations write into.
  const int staging_rows =
      online ? eplb_staging_rows(options.eplb_online, slot_table->layout().slots_per_rank()) : 0;
  const MoeConfig backend_config =
      eplb ? slot_space_config(config, slot_table->layout().num_slots +
                                           staging_rows * slot_table->layout().num_ranks)
           : config;
  FactoryReport report;
  report.requested_backend = options.backend;
  report.device = device.str();

  const bool any = options.backend == "auto";
  if (!any && find_backend(options.backend) == nullptr) {
    std::string names;
    for (const auto& n : backend_names()) names += (names.empty() ? "" : ", ") + n;
    MOE_THROW("unknown backend '", options.backend, "' (built: ", names, ")");
  }
  // The requested backend first; with "auto" or fallback allowed, the rest in preference order.
  const BackendEntry* chosen = nullptr;
  std::vector<const BackendEntry*> order;
  if (!any) order.push_back(find_backend(options.backend));
  if (any || options.allow_fallback) {
    for (const BackendEntry* e : auto_order(backend_config, mapping, device, &report.auto_policy)) {
      if (e->name != options.backend) order.push_back(e);
    }
  }
  // Every candidate is asked, so the report says why each one could or could not run.
  for (const BackendEntry* entry : order) {
    const Capability cap = entry->can_implement(backend_config, mapping, device);
    const bool take = cap.ok && chosen == nullptr;
    report.backends.push_back({std::string(entry->name), cap.ok, take, cap.reason});
    if (take) chosen = entry;
  }
  if (chosen == nullptr) {
    MOE_THROW("no backend can run layer '", config.name, "' as requested (", options.backend, ")\n",
              report.str());
  }
  report.backend = std::string(chosen->name);

  // The strategy depends on where the backend's tensors live (MPI for host, NCCL for GPU).
  auto backend = chosen->create(backend_config, mapping, device);
  MOE_CHECK(!eplb || backend->supports_load_balancer(), "backend '", backend->name(),
            "' does not support EPLB (its experts cannot be loaded per slot)");
  auto comm = create_communication(backend_config, mapping, backend->device(),
                                   options.communication, report.communications);
  report.communication = std::string(comm->name());
  if (online) {
    // Known before any allocation: the quant method declares its status up front.
    ExpertTensorRegistry probe(slot_table->layout().slots_per_rank() + staging_rows,
                               backend->device());
    backend->register_eplb_tensors(probe);
    MOE_CHECK(probe.support() != EplbSupport::kNotSupported, "EPLB online mode: backend '",
              backend->name(), "' (", quant_mode_name(config.quant),
              ") cannot migrate its weights: ", probe.reason());
  }
  std::unique_ptr<StaticLoadBalancer> balancer;
  std::unique_ptr<OnlineLoadBalancer> online_balancer;
  if (eplb) {
    std::vector<int32_t> rows =
        online ? eplb_initial_rows(slot_table->layout(), staging_rows) : std::vector<int32_t>{};
    balancer = std::make_unique<StaticLoadBalancer>(std::move(*slot_table), mapping.ep_rank,
                                                    backend->device(), /*count_only=*/false,
                                                    std::move(rows));
    if (online) {
      online_balancer = std::make_unique<OnlineLoadBalancer>(*balancer, options.eplb_online,
                                                             mapping, backend->device());
    }
  } else if (options.count_expert_load) {
    const SlotLayout identity = make_slot_layout(config.num_experts, config.num_experts, 1);
    balancer = std::make_unique<StaticLoadBalancer>(SlotTable::identity(identity), mapping.ep_rank,
                                                    backend->device(),
                                                    /*count_only=*/true);
  }
  return {MoeBuilder::build(config, mapping, std::move(backend), std::move(comm),
                            std::move(balancer), std::move(online_balancer)),
          report};
}

}  // namespace moe
