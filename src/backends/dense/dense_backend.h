// The `dense` backend (DESIGN.md "Backends"): every expert of the layer multiplied at once,
// for tiny batches with few, large experts, on Hopper through cuBLASLt.
//
//   FC1    f32 [T, N1]  = x [T, H] . W13 [N1, H]^T          one GEMM over all segments
//                         (E experts' [gate | up] and the shared MLP's, end to end)
//   act    [T, K2]      = w(t, seg) * act(gate, up)          per segment; w = the token's
//                         routing weight for the expert (0 where not selected, 1 shared)
//                         16-bit: stored as w * h; fp8: h quantized as the reference does,
//                         w folded into the 1x128 GEMM scales
//   FC2    [T, H]       = act . W2 [H, K2]^T                 one GEMM, K sums over experts
//   finalize (fp8, biases): out = act_dtype(FC2 + sum_k w_k b2[e_k] (+ out)), else FC2
//                         writes out itself (accumulating with beta = 1)
// RunMoeArgs: with_routed / with_shared pick a contiguous range of the segments (the layout
// of dense_layout.h), accumulate adds to out with one rounding.
// FC1's output is f32: fp8_per_tensor applies each expert's gate/up weight scale to it, and
// the activation sees FC1 unrounded, as the reference's; its traffic, T * N1 * 8 bytes, is a
// few percent of the weights' at the token counts where dense is chosen.
// cuBLASLt descriptors and algorithms are planned once (create_weights) per token bucket;
// run_moe does host work only: no synchronisation, no allocation, CUDA-graph capturable.
#pragma once

#include "backends/backend.h"

namespace moe {

/// The registry entry: name "dense", dense_can_implement (dense_capability.h), its
/// constructor.
const BackendEntry& dense_backend_entry();

}  // namespace moe
