// A WeightSource that repeats a few random experts: expert e is served expert e mod N of an
// underlying source (make_random_weights), cached on the host. A benchmark layer still holds
// one copy per expert on the GPU, so bytes moved and cache behaviour are those of distinct
// weights, but loading tens of GB costs N experts' host generation instead of E.
// The router tensors, the correction bias and the shared MLP pass through unchanged.
#pragma once

#include <memory>

#include "moe/weights.h"

namespace moe::bench {

/// Wraps `base` (of a layer with `num_experts` routed experts) so that routed expert e reads
/// base's expert e % pool. pool must be in [1, num_experts]. Views stay valid for the life
/// of the returned source; calls may come from several threads.
std::unique_ptr<WeightSource> make_pooled_weights(std::unique_ptr<WeightSource> base,
                                                  int num_experts, int pool);

}  // namespace moe::bench
