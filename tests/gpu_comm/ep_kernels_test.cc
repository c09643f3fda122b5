// The NCCL strategies' non-communication kernels on one GPU against the CPU plan
// (ep_plan.h): the dispatch plan bit for bit, packing rows, the fixed-order sum of partials
// and padding rows.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <vector>

#include "comm/ep_plan.h"
#include "comm/nccl/ep_kernels.h"
#include "common/gpu_test_util.h"
#include "core/copy.h"
#include "core/cuda_check.h"
#include "core/random.h"
#include "gpu_comm/sticky_cuda_error.h"
#include "quant/formats.h"

namespace moe {
namespace {

using testing::to_host;

/// The current device (under mpirun each rank has its own).
Device gpu() {
  int d = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&d));
  return Device::cuda(d);
}
Tensor to_device(const TensorView& host) { return copy_to(host, gpu()); }

#define MOE_REQUIRE_GPU()                                              \
  do {                                                                 \
    if (!::moe::testing::gpu_available()) {                            \
      GTEST_SKIP() << "no CUDA GPU on this machine: GPU test skipped"; \
    }                                                                  \
    MOE_REQUIRE_USABLE_CUDA_CONTEXT();                                 \
  } while (0)

Tensor random_ids(int64_t tokens, int k, int experts, uint64_t seed) {
  Tensor ids = Tensor::empty({tokens, k}, DType::kI32);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < k; ++j) {
      ids.data_as<int32_t>()[t * k + j] =
          static_cast<int32_t>(uniform_at(stream_id(seed, 5), t * k + j) * experts);
    }
  }
  return ids;
}

Tensor device_ints(int64_t n) {
  return Tensor::empty({std::max<int64_t>(n, 1)}, DType::kI32, gpu());
}

std::vector<int32_t> host_ints(const Tensor& t, int64_t n) {
  const Tensor h = to_host(t);
  return std::vector<int32_t>(h.data_as<int32_t>(), h.data_as<int32_t>() + n);
}

struct PlanCase {
  int64_t tokens;
  int k;
  int experts;
  int ep;
};

void PrintTo(const PlanCase& c, std::ostream* os) {
  *os << "T=" << c.tokens << " k=" << c.k << " E=" << c.experts << " ep=" << c.ep;
}

class PlanSendKernel : public ::testing::TestWithParam<PlanCase> {};

TEST_P(PlanSendKernel, MatchesTheCpuPlan) {
  MOE_REQUIRE_GPU();
  const PlanCase c = GetParam();
  const Tensor ids = random_ids(c.tokens, c.k, c.experts, c.tokens + c.ep);
  const SendPlan want = plan_send(ids, {c.experts, c.ep});
  const Tensor d_ids = to_device(ids);
  Tensor mask = Tensor::empty({std::max<int64_t>(c.tokens, 1)}, DType::kI64, gpu());
  Tensor counts = device_ints(c.ep), offsets = device_ints(c.ep + 1);
  Tensor token_of_row = device_ints(c.tokens * std::min(c.k, c.ep));
  Tensor row_of = device_ints(c.tokens * c.ep);
  MOE_CUDA_CHECK(cudaMemset(token_of_row.data(), 0xFF, token_of_row.nbytes()));
  ep::PlanSendParams p;
  p.topk_ids = d_ids.data_as<int32_t>();
  p.num_tokens = static_cast<int>(c.tokens);
  p.top_k = c.k;
  p.experts_per_rank = c.experts / c.ep;
  p.ep_size = c.ep;
  p.dest_mask = reinterpret_cast<uint64_t*>(mask.data());
  p.counts = counts.data_as<int32_t>();
  p.offsets = offsets.data_as<int32_t>();
  p.token_of_row = token_of_row.data_as<int32_t>();
  p.row_of = row_of.data_as<int32_t>();
  ep::launch_plan_send(p, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<int32_t> got_counts = host_ints(counts, c.ep);
  const std::vector<int32_t> got_offsets = host_ints(offsets, c.ep + 1);
  const std::vector<int32_t> got_rows = host_ints(token_of_row, want.num_rows());
  const std::vector<int32_t> got_row_of = host_ints(row_of, c.tokens * c.ep);
  for (int d = 0; d < c.ep; ++d) EXPECT_EQ(got_counts[d], want.counts[d]) << "rank " << d;
  for (int d = 0; d <= c.ep; ++d) EXPECT_EQ(got_offsets[d], want.offsets[d]) << "rank " << d;
  for (int64_t i = 0; i < want.num_rows(); ++i) {
    ASSERT_EQ(got_rows[i], want.token_of_row[i]) << "row " << i;
  }
  // row_of inverts token_of_row.
  std::vector<int32_t> expect_row_of(c.tokens * c.ep, -1);
  for (int d = 0; d < c.ep; ++d) {
    for (int64_t i = want.offsets[d]; i < want.offsets[d + 1]; ++i) {
      expect_row_of[want.token_of_row[i] * c.ep + d] = static_cast<int32_t>(i);
    }
  }
  EXPECT_EQ(got_row_of, expect_row_of);
}

INSTANTIATE_TEST_SUITE_P(Shapes, PlanSendKernel,
                         ::testing::Values(PlanCase{0, 8, 256, 2}, PlanCase{1, 8, 256, 2},
                                           PlanCase{37, 2, 8, 4}, PlanCase{1500, 8, 256, 8},
                                           PlanCase{4096, 8, 256, 2}, PlanCase{300, 6, 64, 64},
                                           PlanCase{100, 4, 16, 1}));

TEST(GatherRowsKernel, PacksRowsOfEveryPart) {
  MOE_REQUIRE_GPU();
  const int64_t rows = 50, out_rows = 70;
  Tensor data = Tensor::empty({rows, 300}, DType::kE4M3);  // 300 bytes: not a multiple of 16
  for (int64_t i = 0; i < data.numel(); ++i)
    data.data_as<uint8_t>()[i] = static_cast<uint8_t>(i * 13);
  Tensor ids = random_ids(rows, 8, 256, 3);
  std::vector<int32_t> src_row(out_rows);
  for (int64_t i = 0; i < out_rows; ++i) src_row[i] = static_cast<int32_t>((i * 7) % rows);
  Tensor src_row_t = Tensor::empty({out_rows}, DType::kI32);
  std::memcpy(src_row_t.data(), src_row.data(), out_rows * 4);
  Tensor n = Tensor::empty({1}, DType::kI32);
  n.data_as<int32_t>()[0] = static_cast<int32_t>(out_rows - 5);
  const Tensor d_data = to_device(data), d_ids = to_device(ids), d_src = to_device(src_row_t),
               d_n = to_device(n);
  Tensor out_data = Tensor::empty({out_rows, 300}, DType::kE4M3, gpu());
  Tensor out_ids = Tensor::empty({out_rows, 8}, DType::kI32, gpu());
  MOE_CUDA_CHECK(cudaMemset(out_data.data(), 0, out_data.nbytes()));
  MOE_CUDA_CHECK(cudaMemset(out_ids.data(), 0xFF, out_ids.nbytes()));
  ep::GatherRowsParams p;
  p.parts[0] = {d_data.data(), out_data.data(), 300};
  p.parts[1] = {d_ids.data(), out_ids.data(), 8 * sizeof(int32_t)};
  p.src_row = d_src.data_as<int32_t>();
  p.num_rows = d_n.data_as<int32_t>();
  p.max_rows = static_cast<int>(out_rows);
  ep::launch_gather_rows(p, nullptr);
  const Tensor h_data = to_host(out_data), h_ids = to_host(out_ids);
  for (int64_t i = 0; i < out_rows; ++i) {
    const bool copied = i < out_rows - 5;
    for (int c = 0; c < 300; ++c) {
      ASSERT_EQ(h_data.data_as<uint8_t>()[i * 300 + c],
                copied ? data.data_as<uint8_t>()[src_row[i] * 300 + c] : 0)
          << "row " << i << " byte " << c;
    }
    for (int j = 0; j < 8; ++j) {
      ASSERT_EQ(h_ids.data_as<int32_t>()[i * 8 + j],
                copied ? ids.data_as<int32_t>()[src_row[i] * 8 + j] : -1);
    }
  }
}

TEST(SumRowsKernel, MatchesTheCpuSum) {
  MOE_REQUIRE_GPU();
  const int64_t tokens = 33, hidden = 7168, ep = 4;
  Tensor ids = random_ids(tokens, 8, 256, 9);
  const SendPlan plan = plan_send(ids, {256, static_cast<int>(ep)});
  Tensor partial = Tensor::empty({plan.num_rows(), hidden}, DType::kBF16);
  fill_normal(partial, stream_id(4));
  Tensor row_of = Tensor::empty({tokens * ep}, DType::kI32);
  std::fill(row_of.data_as<int32_t>(), row_of.data_as<int32_t>() + tokens * ep, -1);
  for (int d = 0; d < ep; ++d) {
    for (int64_t i = plan.offsets[d]; i < plan.offsets[d + 1]; ++i) {
      row_of.data_as<int32_t>()[plan.token_of_row[i] * ep + d] = static_cast<int32_t>(i);
    }
  }
  Tensor want = Tensor::empty({tokens, hidden}, DType::kBF16);
  sum_rows(partial, plan.token_of_row, want);
  const Tensor d_partial = to_device(partial), d_row_of = to_device(row_of);
  Tensor out = Tensor::empty({tokens, hidden}, DType::kBF16, gpu());
  MOE_CUDA_CHECK(cudaMemset(out.data(), 0xFF, out.nbytes()));
  ep::SumRowsParams p;
  p.partial = d_partial.data();
  p.row_of = d_row_of.data_as<int32_t>();
  p.out = out.data();
  p.num_tokens = static_cast<int>(tokens);
  p.ep_size = static_cast<int>(ep);
  p.hidden = static_cast<int>(hidden);
  ep::launch_sum_rows(p, DType::kBF16, nullptr);
  const Tensor got = to_host(out);
  // fp32 against double summation of <= 4 bf16 terms: equal but for ties of the rounding.
  int64_t differ = 0;
  for (int64_t i = 0; i < tokens * hidden; ++i) {
    const float a = fmt::bf16_to_float(got.data_as<uint16_t>()[i]);
    const float b = fmt::bf16_to_float(want.data_as<uint16_t>()[i]);
    ASSERT_LE(std::abs(a - b), std::abs(b) * (1.0f / 128) + 1e-30f) << "element " << i;
    differ += a != b;
  }
  EXPECT_LE(differ, tokens * hidden / 1000) << "more than 0.1% of elements differ";
}

TEST(PadRowsKernel, MarksOnlyRowsPastEachBlocksCount) {
  MOE_REQUIRE_GPU();
  const int k = 4, per_block = 6, blocks = 3;
  Tensor ids = Tensor::empty({blocks * per_block, k}, DType::kI32);
  Tensor w = Tensor::empty({blocks * per_block, k}, DType::kF32);
  for (int i = 0; i < blocks * per_block * k; ++i) {
    ids.data_as<int32_t>()[i] = i;
    w.data_as<float>()[i] = 1.0f + i;
  }
  const Tensor d_ids = to_device(ids), d_w = to_device(w);
  ep::PadRowsParams p;
  p.ids = d_ids.data_as<int32_t>();
  p.weights = d_w.data_as<float>();
  p.top_k = k;
  p.rows_per_block = per_block;
  p.num_blocks = blocks;
  p.foreign_expert = 77;
  p.valid[0] = 6;
  p.valid[1] = 0;
  p.valid[2] = 4;
  ep::launch_pad_rows(p, nullptr);
  const Tensor h_ids = to_host(d_ids), h_w = to_host(d_w);
  for (int row = 0; row < blocks * per_block; ++row) {
    const bool pad = row % per_block >= p.valid[row / per_block];
    for (int j = 0; j < k; ++j) {
      const int i = row * k + j;
      EXPECT_EQ(h_ids.data_as<int32_t>()[i], pad ? 77 : i) << "row " << row;
      EXPECT_EQ(h_w.data_as<float>()[i], pad ? 0.0f : 1.0f + i) << "row " << row;
    }
  }
}

}  // namespace
}  // namespace moe
