// Deterministic, order-independent random numbers (counter-based), for weights and inputs.
#pragma once

#include <cstdint>

#include "moe/tensor.h"

namespace moe {

/// splitmix64 finaliser: a well-mixed 64-bit hash.
uint64_t mix64(uint64_t x);
/// Approximately standard normal number `index` of stream `stream` (Irwin-Hall of four
/// uniforms from one hash: mean 0, variance 1, bounded to +-3.46). One hash per value.
float normal_at(uint64_t stream, uint64_t index);
/// Uniform [0, 1) number `index` of stream `stream`.
float uniform_at(uint64_t stream, uint64_t index);
/// Stream id from a seed and up to three tags.
uint64_t stream_id(uint64_t seed, uint64_t a = 0, uint64_t b = 0, uint64_t c = 0);

/// Fills a contiguous host f32/bf16/f16 tensor with N(0, stddev^2) from `stream`.
void fill_normal(const TensorView& t, uint64_t stream, float stddev = 1.0f);
/// Fills a contiguous host tensor of any byte-aligned type with a poison pattern (NaN for
/// floats, 0x7FFFFFFF for ints), so that unwritten outputs are caught.
void fill_poison(const TensorView& t);

}  // namespace moe
