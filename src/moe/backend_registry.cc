#include "moe/backend_registry.h"

#include "backends/reference/reference_backend.h"
#ifdef MOE_HAVE_CUDA
#include "backends/grouped/grouped_backend.h"
#endif

namespace moe {

const std::vector<const BackendEntry*>& backend_registry() {
  // NOTE: order is the "auto" preference. GPU backends go before `reference` as they land.
  static const std::vector<const BackendEntry*> entries = {
#ifdef MOE_HAVE_CUDA
      &grouped_backend_entry(),
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

}  // namespace moe
