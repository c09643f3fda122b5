// The backends built into this library and the order "auto" tries them in.
#pragma once

#include <string_view>
#include <vector>

#include "backends/backend.h"

namespace moe {

/// Every backend compiled in, in the order "auto" prefers them (GPU backends first, the
/// CPU oracle last).
const std::vector<const BackendEntry*>& backend_registry();
/// nullptr when `name` is not built in.
const BackendEntry* find_backend(std::string_view name);

/// The order "auto" tries the backends for this layer: the registry order, except that
/// `dense` goes before `grouped` when the dense-vs-grouped cost model (dense_choice.h)
/// expects it to be faster at config.max_num_tokens tokens. `why` gets that model's reason.
std::vector<const BackendEntry*> auto_order(const MoeConfig& config, const Mapping& mapping,
                                            const DeviceInfo& device, std::string* why);

}  // namespace moe
