// The `grouped` backend (DESIGN.md): permute tokens by expert, grouped GEMM FC1 with the
// activation fused, grouped GEMM FC2 with the routing weight fused, deterministic finalize.
// Hopper (sm_90a), bf16 / fp16. Every size is read from device memory in run_moe: no host
// synchronisation, no allocation, CUDA-graph capturable.
#pragma once

#include "backends/backend.h"

namespace moe {

const BackendEntry& grouped_backend_entry();

}  // namespace moe
