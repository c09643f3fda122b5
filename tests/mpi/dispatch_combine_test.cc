// The MPI strategies' dispatch and combine on their own, with payloads whose every byte
// names its source rank, token and column: each rank checks that it received exactly the
// tokens it owns experts of (all tokens for allgather_reducescatter), in source-rank then
// token order, with their scales, ids and weights; and that combine returns, per token, the
// sum over the ranks that own its experts of what those ranks wrote. Also: the lockstep
// chunk agreement, the factory's choice and reasons, and a stalled rank turning into an
// error within the timeout.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "comm/comm_factory.h"
#include "comm/ep_plan.h"
#include "comm/mpi/mpi_communication.h"
#include "common/test_util.h"
#include "core/random.h"
#include "moe/errors.h"
#include "mpi/mpi_test_util.h"
#include "quant/formats.h"

namespace moe {
namespace {

constexpr int kExperts = 8;
constexpr int kTopK = 3;
constexpr int kHidden = 256;
constexpr int kScaleCols = 2;

MoeConfig exchange_config(int ep) {
  MoeConfig c = testing::small_config(kExperts, kTopK, kHidden, 128);
  c.max_num_tokens = 8 * ep;  // chunk capacity 8 tokens per rank
  return c;
}

/// Tokens rank r brings in round `round`: one rank brings none.
int64_t tokens_of(int r, int round) { return r == 1 ? 0 : 3 + (r + round) % 6; }

int32_t id_of(int r, int64_t t, int j, int round) {
  return static_cast<int32_t>((r * 5 + t * 3 + round + j * 3) % kExperts);  // distinct over j
}

/// The payload of rank r: data i32 [T, H/2], scales f32 [T, S], ids, weights.
struct Payload {
  Tensor data, scales, ids, weights;
};
Payload make_payload(int r, int round) {
  const int64_t n = tokens_of(r, round);
  Payload p{Tensor::empty({n, kHidden / 2}, DType::kI32),
            Tensor::empty({n, kScaleCols}, DType::kF32), Tensor::empty({n, kTopK}, DType::kI32),
            Tensor::empty({n, kTopK}, DType::kF32)};
  for (int64_t t = 0; t < n; ++t) {
    for (int c = 0; c < kHidden / 2; ++c) {
      p.data.data_as<int32_t>()[t * kHidden / 2 + c] = (r << 24) | (round << 20) | (t << 8) | c;
    }
    for (int c = 0; c < kScaleCols; ++c) {
      p.scales.data_as<float>()[t * kScaleCols + c] = r * 100.0f + t + 0.5f * c + round;
    }
    for (int j = 0; j < kTopK; ++j) {
      p.ids.data_as<int32_t>()[t * kTopK + j] = id_of(r, t, j, round);
      p.weights.data_as<float>()[t * kTopK + j] = 0.25f * (r + 1) + 0.125f * t + j;
    }
  }
  return p;
}

bool owns_any(const Payload& p, int64_t t, const ExpertPartition& part, int rank) {
  for (int j = 0; j < kTopK; ++j) {
    if (part.owner(p.ids.data_as<int32_t>()[t * kTopK + j]) == rank) return true;
  }
  return false;
}

/// What rank `me`'s run_moe would write for token t of its source: bf16 small integers.
float partial_value(int me, int64_t t, int c) { return (me + 1) * (1 + t % 5) + c % 3; }

bool rows_equal(const TensorView& a, int64_t i, const TensorView& b, int64_t j) {
  const size_t bytes = dtype_bytes(a.dtype(), a.size(1));
  return std::memcmp(static_cast<const uint8_t*>(a.data()) + i * bytes,
                     static_cast<const uint8_t*>(b.data()) + j * bytes, bytes) == 0;
}

class ExchangeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ExchangeTest, DeliversOwnedTokensAndSumsPartials) {
  const std::string strategy = GetParam();
  const bool all_tokens = strategy == "allgather_reducescatter";
  const int ep = mpi_test::world_size(), me = mpi_test::world_rank();
  const MoeConfig config = exchange_config(ep);
  const ExpertPartition part{kExperts, ep};
  auto comm = make_mpi_communication(strategy, config, Mapping{ep, me});
  ASSERT_TRUE(comm->is_platform_supported().ok) << comm->is_platform_supported().reason;
  ASSERT_TRUE(comm->is_workload_feasible(config, config.max_num_tokens).ok);
  EXPECT_TRUE(comm->supports_post_quant_dispatch());
  EXPECT_EQ(comm->chunk_capacity(config.max_num_tokens), 8);
  comm->initialize();
  EXPECT_EQ(comm->agree_num_chunks(me + 1, nullptr), ep);

  for (int round = 0; round < 2; ++round) {
    std::vector<Payload> all;
    for (int r = 0; r < ep; ++r) all.push_back(make_payload(r, round));
    const Payload& mine = all[me];
    const int64_t n = mine.ids.size(0);
    const RoutingView routing{mine.ids, mine.weights};
    Tensor out = Tensor::empty({n, kHidden}, DType::kBF16);
    fill_poison(out);
    comm->prepare_dispatch(routing, nullptr);
    const DispatchResult d = comm->dispatch({mine.data, mine.scales}, routing, out, nullptr);

    // Expected rows: (source, token) in source order, then token order.
    std::vector<std::pair<int, int64_t>> expected;
    for (int s = 0; s < ep; ++s) {
      for (int64_t t = 0; t < all[s].ids.size(0); ++t) {
        if (all_tokens || owns_any(all[s], t, part, me)) expected.emplace_back(s, t);
      }
    }
    const int64_t rows = static_cast<int64_t>(expected.size());
    ASSERT_EQ(d.x.data.size(0), rows) << "rank " << me << " round " << round;
    ASSERT_EQ(d.x.data.dtype(), DType::kI32);
    ASSERT_EQ(d.x.scales.size(0), rows);
    ASSERT_EQ(d.routing.topk_ids.size(0), rows);
    ASSERT_EQ(d.expert_out.size(0), rows);
    ASSERT_EQ(d.expert_out.dtype(), DType::kF64) << "partial sums must travel unrounded";
    for (int64_t i = 0; i < rows; ++i) {
      const auto [s, t] = expected[i];
      EXPECT_TRUE(rows_equal(d.x.data, i, all[s].data, t)) << "data row " << i;
      EXPECT_TRUE(rows_equal(d.x.scales, i, all[s].scales, t)) << "scales row " << i;
      EXPECT_TRUE(rows_equal(d.routing.topk_ids, i, all[s].ids, t)) << "ids row " << i;
      EXPECT_TRUE(rows_equal(d.routing.topk_weights, i, all[s].weights, t)) << "weights row " << i;
    }

    // What run_moe would write: the partial of my experts (f64, not representable in bf16:
    // a rounding on the way shows), 0 for tokens I own none of.
    const auto wide_partial = [](int r, int64_t t, int c) { return partial_value(r, t, c) / 3.0; };
    for (int64_t i = 0; i < rows; ++i) {
      const auto [s, t] = expected[i];
      const bool mine_too = owns_any(all[s], t, part, me);
      for (int c = 0; c < kHidden; ++c) {
        d.expert_out.data_as<double>()[i * kHidden + c] = mine_too ? wide_partial(me, t, c) : 0.0;
      }
    }
    comm->combine(d.expert_out, out, nullptr);
    for (int64_t t = 0; t < n; ++t) {
      for (int c = 0; c < kHidden; ++c) {
        double sum = 0;  // ascending rank order, rounded once
        for (int r = 0; r < ep; ++r) {
          if (owns_any(mine, t, part, r)) sum += wide_partial(r, t, c);
        }
        ASSERT_EQ(out.data_as<uint16_t>()[t * kHidden + c],
                  fmt::float_to_bf16(static_cast<float>(sum)))
            << "rank " << me << " token " << t << " column " << c;
      }
    }
  }
}

TEST_P(ExchangeTest, PerTensorScaledInputsTravelUnquantized) {
  MoeConfig config = exchange_config(mpi_test::world_size());
  config.quant = QuantMode::kFP8PerTensor;
  auto comm = make_mpi_communication(GetParam(), config,
                                     Mapping{mpi_test::world_size(), mpi_test::world_rank()});
  EXPECT_FALSE(comm->supports_post_quant_dispatch());
}

TEST_P(ExchangeTest, StalledRankFailsTheOthersWithinTheTimeout) {
  const int ep = mpi_test::world_size(), me = mpi_test::world_rank();
  if (GetParam() == "one_sided") {
    GTEST_SKIP() << "one_sided's window release is collective: a rank that never returns "
                    "would keep this test's stalled rank waiting";
  }
  const MoeConfig config = exchange_config(ep);
  auto comm = make_mpi_communication(GetParam(), config, Mapping{ep, me});
  comm->initialize();
  set_comm_timeout_seconds(1.0);
  const bool stalled = me == ep - 1;
  if (!stalled) {
    const Payload p = make_payload(me, 0);
    const auto start = std::chrono::steady_clock::now();
    try {
      comm->prepare_dispatch({p.ids, p.weights}, nullptr);
      ADD_FAILURE() << "rank " << me << ": prepare_dispatch returned although a peer stalled";
    } catch (const Error& e) {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_GE(s, 0.9);
      EXPECT_LE(s, 20.0);
      EXPECT_NE(e.message().find("stalled or died"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("token counts exchange"), std::string::npos) << e.message();
    }
    try {
      comm->prepare_dispatch({p.ids, p.weights}, nullptr);
      ADD_FAILURE() << "a broken exchange accepted more work";
    } catch (const Error& e) {
      EXPECT_NE(e.message().find("unusable after an earlier failure"), std::string::npos)
          << e.message();
    }
  }
  set_comm_timeout_seconds(60.0);
  MPI_Barrier(MPI_COMM_WORLD);
}

INSTANTIATE_TEST_SUITE_P(Mpi, ExchangeTest,
                         ::testing::Values("allgather_reducescatter", "alltoall", "one_sided"));

TEST(MpiFactory, AutoPicksTheFirstFeasibleAndSaysWhy) {
  const int ep = mpi_test::world_size(), me = mpi_test::world_rank();
  const MoeConfig config = exchange_config(ep);
  std::vector<CandidateReport> report;
  auto comm = create_communication(config, Mapping{ep, me}, Device::cpu(), "auto", report);
  EXPECT_EQ(comm->name(), "one_sided");
  ASSERT_EQ(report.size(), 2u);
  EXPECT_EQ(report[0].name, "local");
  EXPECT_FALSE(report[0].feasible);
  EXPECT_NE(report[0].reason.find("ep_size is " + std::to_string(ep)), std::string::npos);
  EXPECT_TRUE(report[1].chosen);
}

TEST(MpiFactory, RejectsAMappingThatIsNotTheWorldRank) {
  const int ep = mpi_test::world_size(), me = mpi_test::world_rank();
  const MoeConfig config = exchange_config(ep);
  std::vector<CandidateReport> report;
  try {
    create_communication(config, Mapping{ep, (me + 1) % ep}, Device::cpu(), "alltoall", report);
    ADD_FAILURE() << "a mapping with another rank was accepted";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("but the mapping says ep_rank"), std::string::npos) << e.message();
  }
}

TEST(MpiFactory, TooFewTokensPerRankIsInfeasible) {
  const int ep = mpi_test::world_size(), me = mpi_test::world_rank();
  MoeConfig config = exchange_config(ep);
  config.max_num_tokens = ep - 1;
  auto comm = make_mpi_communication("alltoall", config, Mapping{ep, me});
  const Capability cap = comm->is_workload_feasible(config, config.max_num_tokens);
  EXPECT_FALSE(cap.ok);
  EXPECT_NE(cap.reason.find("below ep_size"), std::string::npos) << cap.reason;
}

}  // namespace
}  // namespace moe
