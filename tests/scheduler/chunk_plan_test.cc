// plan_chunks: sizes, coverage, evenness, zero-token chunks and lockstep padding.
#include "scheduler/chunk_plan.h"

#include <gtest/gtest.h>

#include "moe/errors.h"

namespace moe {
namespace {

void expect_covers(const std::vector<Chunk>& chunks, int64_t n, int64_t max_tokens) {
  int64_t next = 0;
  int64_t smallest = INT64_MAX, largest = 0;
  for (const Chunk& c : chunks) {
    EXPECT_EQ(c.begin, next);
    EXPECT_LE(c.size(), max_tokens);
    next = c.end;
    if (c.size() > 0) {
      smallest = std::min(smallest, c.size());
      largest = std::max(largest, c.size());
    }
  }
  EXPECT_EQ(next, n);
  if (n > 0) {
    EXPECT_LE(largest - smallest, 1) << "chunks are not even";
  }
}

TEST(ChunkPlan, SizesAroundTheLimit) {
  const int64_t max = 8;
  for (int64_t n : {0, 1, 7, 8, 9, 16, 17, 3 * 8 + 7}) {
    const auto chunks = plan_chunks(n, max);
    const int64_t expected = std::max<int64_t>(1, (n + max - 1) / max);
    EXPECT_EQ(static_cast<int64_t>(chunks.size()), expected) << "n = " << n;
    expect_covers(chunks, n, max);
  }
}

TEST(ChunkPlan, ZeroTokensIsOneEmptyChunk) {
  const auto chunks = plan_chunks(0, 16);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].size(), 0);
}

TEST(ChunkPlan, LockstepPadsWithEmptyChunks) {
  const auto chunks = plan_chunks(10, 8, 4);  // another rank needs 4 chunks
  ASSERT_EQ(chunks.size(), 4u);
  EXPECT_EQ(chunks[0].size() + chunks[1].size(), 10);
  EXPECT_EQ(chunks[2].size(), 0);
  EXPECT_EQ(chunks[3].size(), 0);
  EXPECT_EQ(chunks[3].begin, 10);
  expect_covers(chunks, 10, 8);
}

TEST(ChunkPlan, RejectsBadArguments) {
  EXPECT_THROW(plan_chunks(-1, 8), Error);
  EXPECT_THROW(plan_chunks(4, 0), Error);
}

}  // namespace
}  // namespace moe
