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

}  // namespace moe
