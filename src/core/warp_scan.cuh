// Warp-level scans for device code.
#pragma once

namespace moe {

/// Inclusive prefix sum of `v` over the warp's lanes (`lane` = this thread's lane; all 32 lanes
/// call it): five shuffle steps (Hillis-Steele over the warp).
__device__ __forceinline__ int warp_inclusive_sum(int v, int lane) {
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int up = __shfl_up_sync(0xFFFFFFFFu, v, d);
    if (lane >= d) v += up;
  }
  return v;
}

}  // namespace moe
