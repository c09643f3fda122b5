#include "moe/backend_registry.h"

#include <algorithm>
#include <string>

#include "backends/reference/reference_backend.h"
#ifdef MOE_HAVE_CUDA
#include "backends/dense/dense_backend.h"
#include "backends/dense/dense_choice.h"
#include "backends/grouped/grouped_backend.h"
#endif

namespace moe {

const std::vector<const BackendEntry*>& backend_registry() {
  // NOTE: order is the "auto" preference. GPU backends go before `reference` as they land.
  static const std::vector<const BackendEntry*> entries = {
#ifdef MOE_HAVE_CUDA
      &grouped_backend_entry(),
      &dense_backend_entry(),
#endif
      &reference_backend_entry(),
  };
  return entries;
}

const BackendEntry* find_backend(std::string_view name) {
  for (const BackendEntry* e : backend_registry()) {
    if (e->name == name) return e;
  }
  return nullptr;
}

std::vector<const BackendEntry*> auto_order(const MoeConfig& config, const Mapping& mapping,
                                            const DeviceInfo& device, std::string* why) {
  std::vector<const BackendEntry*> order = backend_registry();
#ifdef MOE_HAVE_CUDA
  const BackendEntry* dense = find_backend("dense");
  const BackendEntry* grouped = find_backend("grouped");
  if (dense->can_implement(config, mapping, device) &&
      grouped->can_implement(config, mapping, device)) {
    DenseChoiceProblem p;
    p.num_experts = config.num_experts / mapping.ep_size;
    p.top_k = config.top_k;
    p.hidden = config.hidden_size;
    p.inter = config.intermediate_size;
    p.shared_inter = config.num_shared_experts > 0 ? config.shared_intermediate_size : 0;
    p.tokens = config.max_num_tokens;
    p.quant = config.quant;
    p.num_sms = device.num_sms;
    const DenseChoice choice = choose_dense(p);
    if (why) *why = "dense vs grouped at " + std::to_string(p.tokens) + " tokens: " + choice.reason;
    if (choice.dense) {
      std::erase(order, dense);
      order.insert(std::find(order.begin(), order.end(), grouped), dense);
    }
  }
#else
  (void)config;
  (void)mapping;
  (void)device;
  (void)why;
#endif
  return order;
}

}  // namespace moe
