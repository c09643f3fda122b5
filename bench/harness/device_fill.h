// Random bf16 / f16 / f32 / e4m3 data written directly on the GPU, for benchmark inputs and weights
// that need no host copy (generating tens of GB on the host would take minutes); and a read of
// a whole buffer, the benchmarks' clean L2 flush.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "moe/tensor.h"

namespace moe::bench {

/// Fills a contiguous bf16, f16, f32 or e4m3 tensor on the GPU with approximately
/// N(0, stddev^2) values (Irwin-Hall of four uniforms from one hash of (seed, index), as
/// core/random.h), on `stream`, asynchronously. Throws moe::Error for another dtype or a host
/// tensor.
void fill_random_device(const TensorView& t, uint64_t seed, float stddev, cudaStream_t stream);

/// Reads every 16-byte word of a GPU buffer on all SMs, the values discarded, on `stream`:
/// L2Flush's clean mode (L2 then holds clean lines of this buffer). `buffer` and `bytes`
/// multiples of 16; throws moe::Error otherwise.
void read_through_l2(const void* buffer, size_t bytes, cudaStream_t stream);

}  // namespace moe::bench
