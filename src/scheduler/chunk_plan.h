// How a forward of T tokens is split into chunks: a pure function, unit-tested.
#pragma once

#include <cstdint>
#include <vector>

namespace moe {

struct Chunk {
  int64_t begin = 0;  // first token
  int64_t end = 0;    // one past the last; end == begin for a zero-token chunk
  int64_t size() const { return end - begin; }
};

/// Splits [0, num_tokens) into ceil(num_tokens / max_tokens) chunks of at most max_tokens,
/// as even as possible (sizes differ by at most one), then pads with zero-token chunks up
/// to min_chunks (ranks in lockstep run the same number of chunks). num_tokens == 0 gives
/// max(1, min_chunks) zero-token chunks: every rank still takes part.
std::vector<Chunk> plan_chunks(int64_t num_tokens, int64_t max_tokens, int64_t min_chunks = 1);

}  // namespace moe
