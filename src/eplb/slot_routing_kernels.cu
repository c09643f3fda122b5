// launch_slot_routing (slot_routing_cuda.h): one thread per (token, position) entry.
#include "core/launch.cuh"
#include "eplb/slot_routing_cuda.h"

namespace moe {
namespace {

__global__ void slot_routing_kernel(SlotRoutingParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.entries) return;
  const int e = p.ids[i];
  if (e < 0 || e >= p.num_experts) return;
  if (p.counts != nullptr) atomicAdd(p.counts + e, 1ull);
  if (!p.map) return;
  const int64_t t = i / p.top_k, j = i % p.top_k;
  const int begin = p.expert_slot_offsets[e];
  const uint64_t r = static_cast<uint64_t>(p.expert_slot_offsets[e + 1] - begin);
  const uint64_t replica =
      (static_cast<uint64_t>(p.token_offset + t) + static_cast<uint64_t>(j)) % r;
  p.ids[i] = p.expert_slots[begin + replica];
}

}  // namespace

void launch_slot_routing(const SlotRoutingParams& p, cudaStream_t stream) {
  if (p.entries == 0) return;
  constexpr int kThreads = 256;
  LaunchOptions o;
  o.grid = dim3(static_cast<unsigned>((p.entries + kThreads - 1) / kThreads));
  o.block = dim3(kThreads);
  o.stream = stream;
  launch_kernel("slot_routing_kernel", slot_routing_kernel, o, p);
}

}  // namespace moe
