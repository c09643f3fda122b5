#include "scheduler/chunk_plan.h"

#include <algorithm>

#include "moe/errors.h"

namespace moe {

std::vector<Chunk> plan_chunks(int64_t num_tokens, int64_t max_tokens, int64_t min_chunks) {
  MOE_CHECK(num_tokens >= 0, "plan_chunks: negative token count ", num_tokens);
  MOE_CHECK(max_tokens > 0, "plan_chunks: max_tokens must be positive, got ", max_tokens);
  const int64_t needed = (num_tokens + max_tokens - 1) / max_tokens;
  const int64_t count = std::max({needed, min_chunks, int64_t{1}});
  std::vector<Chunk> chunks;
  chunks.reserve(count);
  for (int64_t i = 0; i < needed; ++i) {
    chunks.push_back({num_tokens * i / needed, num_tokens * (i + 1) / needed});
  }
  while (static_cast<int64_t>(chunks.size()) < count) chunks.push_back({num_tokens, num_tokens});
  return chunks;
}

}  // namespace moe
