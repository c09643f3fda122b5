// The host-side exchange plan (ep_plan.h) and the factory on one process: which rank gets
// which token in which order, packing, the fixed-order sum of partials, payload layouts,
// buffer bounds, the timeout setting, and the factory's reasons without MPI ranks.
#include "comm/ep_plan.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "comm/comm_factory.h"
#include "comm/communication.h"
#include "common/test_util.h"
#include "core/random.h"
#include "moe/errors.h"
#include "quant/formats.h"

namespace moe {
namespace {

Tensor ids_tensor(const std::vector<std::vector<int32_t>>& rows) {
  const int64_t k = rows.empty() ? 1 : static_cast<int64_t>(rows[0].size());
  Tensor t = Tensor::empty({static_cast<int64_t>(rows.size()), k}, DType::kI32);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t j = 0; j < k; ++j) t.data_as<int32_t>()[i * k + j] = rows[i][j];
  }
  return t;
}

TEST(ExpertPartition, ContiguousRanges) {
  const ExpertPartition p{256, 8};
  EXPECT_EQ(p.experts_per_rank(), 32);
  EXPECT_EQ(p.owner(0), 0);
  EXPECT_EQ(p.owner(31), 0);
  EXPECT_EQ(p.owner(32), 1);
  EXPECT_EQ(p.owner(255), 7);
  EXPECT_EQ(p.first_expert(3), 96);
  EXPECT_EQ(p.owner(p.foreign_expert(7)), 0);
  EXPECT_EQ(p.owner(p.foreign_expert(2)), 3);
  EXPECT_EQ((ExpertPartition{8, 1}.foreign_expert(0)), -1);
}

TEST(PlanSend, OncePerDestinationInRankThenTokenOrder) {
  // 8 experts over 4 ranks (2 each); top-3.
  const Tensor ids = ids_tensor({
      {0, 1, 7},  // ranks 0 (twice) and 3
      {6, 7, 6},  // rank 3 only (repeated expert)
      {2, 4, 6},  // ranks 1, 2, 3
      {5, 4, 3},  // ranks 2 (twice), 1
  });
  const SendPlan plan = plan_send(ids, {8, 4});
  EXPECT_EQ(plan.counts, (std::vector<int64_t>{1, 2, 2, 3}));
  EXPECT_EQ(plan.offsets, (std::vector<int64_t>{0, 1, 3, 5, 8}));
  EXPECT_EQ(plan.token_of_row, (std::vector<int64_t>{0, 2, 3, 2, 3, 0, 1, 2}));
  EXPECT_EQ(plan.num_rows(), 8);
}

TEST(PlanSend, ZeroTokensAndOneRank) {
  const Tensor none = Tensor::empty({0, 2}, DType::kI32);
  const SendPlan empty = plan_send(none, {8, 2});
  EXPECT_EQ(empty.counts, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(empty.num_rows(), 0);
  const SendPlan one = plan_send(ids_tensor({{3, 5}, {1, 2}}), {8, 1});
  EXPECT_EQ(one.counts, (std::vector<int64_t>{2}));
  EXPECT_EQ(one.token_of_row, (std::vector<int64_t>{0, 1}));
}

TEST(PlanSend, RejectsIdsOutsideTheExperts) {
  try {
    plan_send(ids_tensor({{0, 1}, {2, 8}}), {8, 2});
    FAIL() << "expert 8 of 8 accepted";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("topk_ids[1, 1] = 8"), std::string::npos) << e.message();
  }
}

TEST(GatherRows, CopiesRowsOfAnyType) {
  Tensor src = Tensor::empty({4, 3}, DType::kE4M3);
  for (int i = 0; i < 12; ++i) src.data_as<uint8_t>()[i] = static_cast<uint8_t>(i * 7 + 1);
  Tensor dst = Tensor::empty({3, 3}, DType::kE4M3);
  fill_poison(dst);
  const std::vector<int64_t> rows = {3, 0, 3};
  gather_rows(src, rows, dst);
  for (int i = 0; i < 3; ++i) {
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(dst.data_as<uint8_t>()[i * 3 + c], src.data_as<uint8_t>()[rows[i] * 3 + c]);
    }
  }
  EXPECT_THROW(gather_rows(src, std::vector<int64_t>{4}, dst), Error);
}

TEST(SumRows, FixedOrderDoubleSumRoundedOnce) {
  // Three bf16 partials of token 0 whose float sum in another order would round differently.
  const float a = 1.0f, b = fmt::round_bf16(1.0f / 256), c = fmt::round_bf16(1.0f / 256);
  Tensor partial = Tensor::empty({4, 2}, DType::kBF16);
  const float v[4][2] = {{a, 2}, {b, 3}, {c, -1}, {5, 0.5f}};
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 2; ++j)
      partial.data_as<uint16_t>()[i * 2 + j] = fmt::float_to_bf16(v[i][j]);
  }
  Tensor out = Tensor::empty({3, 2}, DType::kBF16);
  fill_poison(out);
  sum_rows(partial, std::vector<int64_t>{0, 0, 0, 2}, out);
  auto at = [&](int t, int j) { return fmt::bf16_to_float(out.data_as<uint16_t>()[t * 2 + j]); };
  EXPECT_EQ(at(0, 0), fmt::round_bf16(static_cast<float>(double(a) + double(b) + double(c))));
  EXPECT_EQ(at(0, 1), 4.0f);
  EXPECT_EQ(at(1, 0), 0.0f) << "a token without rows gets 0";
  EXPECT_EQ(at(1, 1), 0.0f);
  EXPECT_EQ(at(2, 0), 5.0f);
  EXPECT_EQ(at(2, 1), 0.5f);
}

TEST(SumRows, OneRowIsCopiedExactly) {
  Tensor partial = Tensor::empty({5, 64}, DType::kBF16);
  fill_normal(partial, stream_id(3));
  Tensor out = Tensor::empty({5, 64}, DType::kBF16);
  fill_poison(out);
  sum_rows(partial, std::vector<int64_t>{0, 1, 2, 3, 4}, out);
  EXPECT_EQ(std::memcmp(out.data(), partial.data(), out.nbytes()), 0);
}

TEST(PayloadLayout, PerTokenScalesTravelPerTensorOnesDoNot) {
  Tensor data = Tensor::empty({6, 256}, DType::kE4M3);
  Tensor row_scales = Tensor::empty({6, 2}, DType::kF32);
  const PayloadLayout fp8 = payload_layout({data, row_scales}, 8);
  EXPECT_EQ(fp8.data_row_bytes, 256u);
  EXPECT_TRUE(fp8.per_row_scales);
  EXPECT_EQ(fp8.scale_row_bytes, 8u);
  Tensor tensor_scale = Tensor::empty({1}, DType::kF32);
  EXPECT_FALSE(payload_layout({data, tensor_scale}, 8).per_row_scales);
  Tensor fp4 = Tensor::empty({6, 256}, DType::kE2M1);
  EXPECT_EQ(payload_layout({fp4, {}}, 8).data_row_bytes, 128u);
}

TEST(Bounds, BuffersHoldEveryPayloadAndPolicies) {
  MoeConfig c = testing::small_config(8, 2, 7168, 256);
  EXPECT_EQ(max_data_row_bytes(c), 7168u * 2);
  EXPECT_GE(max_scale_row_bytes(c), 56u * 4);     // fp8_block: f32 per 128
  EXPECT_GE(max_scale_row_bytes(c), 7168u / 32);  // w4a8: ue8m0 per 32
  EXPECT_TRUE(post_quant_dispatch_ok(c));
  c.quant = QuantMode::kFP8PerTensor;
  EXPECT_FALSE(post_quant_dispatch_ok(c));
  EXPECT_FALSE(ep_workload_feasible(c, Mapping{3, 0}, 64).ok) << "3 does not divide 8 experts";
  EXPECT_FALSE(ep_workload_feasible(c, Mapping{4, 0}, 3).ok);
  EXPECT_TRUE(ep_workload_feasible(c, Mapping{4, 0}, 4).ok);
}

TEST(CommTimeout, SetAndEnvironment) {
  setenv("MOE_COMM_TIMEOUT_S", "12.5", 1);
  EXPECT_EQ(comm_timeout_seconds(), 12.5);
  setenv("MOE_COMM_TIMEOUT_S", "soon", 1);
  EXPECT_THROW(comm_timeout_seconds(), Error);
  unsetenv("MOE_COMM_TIMEOUT_S");
  EXPECT_EQ(comm_timeout_seconds(), 300.0);
  set_comm_timeout_seconds(2.0);
  EXPECT_EQ(comm_timeout_seconds(), 2.0);
  EXPECT_THROW(set_comm_timeout_seconds(0), Error);
  set_comm_timeout_seconds(300.0);
}

TEST(CommFactory, OrderAndOneRank) {
  const std::vector<std::string_view> expected = {"local", "one_sided", "alltoall",
                                                  "allgather_reducescatter"};
  EXPECT_EQ(communication_names(), expected);
  std::vector<CandidateReport> report;
  auto comm = create_communication(testing::small_config(), Mapping{}, "auto", report);
  EXPECT_EQ(comm->name(), "local");
  ASSERT_EQ(report.size(), 1u);
  EXPECT_TRUE(report[0].chosen);
  EXPECT_EQ(comm->chunk_capacity(64), 64);
  EXPECT_EQ(comm->agree_num_chunks(3, nullptr), 3);
}

TEST(CommFactory, CrossRankStrategiesSayWhyTheyCannotRun) {
  // One process without mpirun: every cross-rank strategy is listed with its reason.
  std::vector<CandidateReport> report;
  try {
    create_communication(testing::small_config(), Mapping{2, 0}, "auto", report);
    FAIL() << "ep_size 2 without ranks was accepted";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("alltoall: "), std::string::npos) << e.message();
  }
  ASSERT_EQ(report.size(), 4u);
  for (const CandidateReport& c : report) {
    EXPECT_FALSE(c.feasible) << c.name;
    EXPECT_FALSE(c.reason.empty()) << c.name;
  }
#ifdef MOE_HAVE_MPI
  EXPECT_NE(report[2].reason.find("MPI is not initialised"), std::string::npos) << report[2].reason;
#endif
  EXPECT_THROW(create_communication(testing::small_config(), Mapping{}, "carrier_pigeon", report),
               Error);
}

TEST(CommFactory, GpuBackendsUseNccl) {
  std::vector<CandidateReport> report;
  EXPECT_THROW(create_communication(testing::small_config(), Mapping{2, 0}, Device::cuda(0),
                                    "alltoall", report),
               Error);
  ASSERT_EQ(report.size(), 1u);
#ifndef MOE_HAVE_NCCL
  EXPECT_NE(report[0].reason.find("NCCL"), std::string::npos) << report[0].reason;
#endif
}

TEST(LocalCommunication, HandsTheOutputThrough) {
  LocalCommunication local(Mapping{});
  Tensor x = Tensor::empty({3, 8}, DType::kBF16);
  Tensor ids = Tensor::empty({3, 2}, DType::kI32);
  Tensor w = Tensor::empty({3, 2}, DType::kF32);
  Tensor out = Tensor::empty({3, 8}, DType::kBF16);
  const DispatchResult d = local.dispatch({x, {}}, {ids, w}, out, nullptr);
  EXPECT_EQ(d.expert_out.data(), out.data());
  EXPECT_EQ(d.x.data.data(), x.data());
  local.combine(d.expert_out, out, nullptr);
  EXPECT_THROW(local.combine(x, out, nullptr), Error);
}

}  // namespace
}  // namespace moe
