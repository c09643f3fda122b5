// Expert-parallel layers on CPU ranks (reference backend, MPI strategies) against one rank
// running the whole layer. Every rank builds the same inputs and weights from one seed and
// runs its share of the tokens through a layer of Mapping{ep, rank}.
//
// Two checks per case:
//   - bit for bit against the expert-parallel result emulated in one process: the partial
//     sums of each rank's experts (a ReferenceBackend of Mapping{ep, r} on all tokens),
//     written unrounded (f64), summed over r in double, the shared MLP added, rounded once
//     (as the scheduler does): this pins down dispatch, combine, ordering and the weights
//     applied once;
//   - against the single-rank layer: bit for bit when every token's experts sit on one
//     rank (skewed routing), else within kExpertParallel = 1e-6 relative L2 (only the order
//     of double additions differs; fp8_per_tensor keeps its layer tolerance, since each
//     rank quantizes the input with its own experts' scale).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "backends/reference/reference_backend.h"
#include "comm/ep_plan.h"
#include "common/test_util.h"
#include "core/compare.h"
#include "core/random.h"
#include "moe/moe.h"
#include "mpi/mpi_test_util.h"
#include "quant/formats.h"
#include "quant/tolerance.h"

namespace moe {
namespace {

using mpi_test::Slice;

// Partial sums travel unrounded (f64) and are rounded once: only the order of the double
// additions differs from the single-rank layer.
constexpr double kExpertParallel = 1e-6;

enum class Tokens {
  kUneven,      // T not divisible by the ranks: the first T % ep ranks hold one more
  kAllOnRank0,  // the other ranks hold none (and run zero-token chunks)
  kNone,        // no rank holds any token
};

struct Case {
  std::string name;
  std::string strategy;
  int ep;  // 0: the world size
  QuantMode quant = QuantMode::kBF16;
  Tokens tokens = Tokens::kUneven;
  int64_t total = 29;
  bool skewed = false;  // every token routed to the experts of the last rank
  bool shared = false;  // one shared expert
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.strategy + "_" + info.param.name + "_ep" + std::to_string(info.param.ep);
}

MoeConfig layer_config(const Case& c) {
  MoeConfig config = testing::small_config(8, 2, 256, 128);
  config.max_num_tokens = 16;  // chunks of 16 / ep tokens per rank: several chunks
  config.quant = c.quant;
  if (c.shared) {
    config.num_shared_experts = 1;
    config.shared_intermediate_size = 128;
  }
  config.validate();
  return config;
}

Tensor make_x(const MoeConfig& config, int64_t tokens) {
  Tensor x = Tensor::empty({tokens, config.hidden_size}, config.act_dtype);  // [T, H]
  fill_normal(x, stream_id(7, 1));
  return x;
}

Tensor make_logits(const MoeConfig& config, int64_t tokens, bool skewed, int ep) {
  Tensor logits = Tensor::empty({tokens, config.num_experts}, DType::kF32);  // [T, E]
  fill_normal(logits, stream_id(7, 2));
  if (skewed) {
    const ExpertPartition partition{config.num_experts, ep};
    for (int64_t t = 0; t < tokens; ++t) {
      for (int e = partition.first_expert(ep - 1); e < config.num_experts; ++e) {
        logits.data_as<float>()[t * config.num_experts + e] += 20.0f;
      }
    }
  }
  return logits;
}

using testing::bit_identical;

/// The expert-parallel output of all tokens, computed in this process (see the file
/// comment).
Tensor emulate_ep(const MoeConfig& config, int ep, WeightSource& weights, const Tensor& x,
                  const Tensor& ids, const Tensor& topk_weights) {
  const int64_t tokens = x.size(0), hidden = config.hidden_size;
  Tensor sum = Tensor::empty({tokens, hidden}, DType::kF64);  // [T, H]
  std::fill_n(sum.data_as<double>(), tokens * hidden, 0.0);
  std::unique_ptr<ReferenceBackend> last;
  for (int r = 0; r < ep; ++r) {
    auto backend = std::make_unique<ReferenceBackend>(config, Mapping{ep, r});
    backend->create_weights();
    backend->load_weights(weights, LoadMode::kVanilla);
    backend->post_load_weights();
    backend->process_weights_after_loading();
    Tensor partial = Tensor::empty({tokens, hidden}, DType::kF64);  // unrounded partial sums
    for (int64_t t0 = 0; t0 < tokens; t0 += config.max_num_tokens) {
      const int64_t t1 = std::min<int64_t>(tokens, t0 + config.max_num_tokens);
      RunMoeArgs args;
      args.x = backend->quantize_input(x.view().slice_rows(t0, t1), nullptr);
      args.topk_ids = ids.view().slice_rows(t0, t1);
      args.topk_weights = topk_weights.view().slice_rows(t0, t1);
      args.out = partial.view().slice_rows(t0, t1);
      backend->run_moe(args, nullptr);
    }
    for (int64_t i = 0; i < tokens * hidden; ++i) {
      sum.data_as<double>()[i] += partial.data_as<double>()[i];
    }
    last = std::move(backend);
  }
  if (config.num_shared_experts > 0 && tokens > 0) {
    // The scheduler adds the shared MLP on the token's own rank to the combined sum.
    for (int64_t t0 = 0; t0 < tokens; t0 += config.max_num_tokens) {
      const int64_t t1 = std::min<int64_t>(tokens, t0 + config.max_num_tokens);
      RunMoeArgs args;
      args.x = last->quantize_input(x.view().slice_rows(t0, t1), nullptr);
      args.topk_ids = ids.view().slice_rows(t0, t1);
      args.topk_weights = topk_weights.view().slice_rows(t0, t1);
      args.out = sum.view().slice_rows(t0, t1);
      args.with_routed = false;
      args.with_shared = true;
      args.accumulate = true;
      last->run_moe(args, nullptr);
    }
  }
  Tensor out = Tensor::empty({tokens, hidden}, config.act_dtype);
  for (int64_t i = 0; i < tokens * hidden; ++i) {
    out.data_as<uint16_t>()[i] = fmt::float_to_bf16(static_cast<float>(sum.data_as<double>()[i]));
  }
  return out;
}

class EpLayerTest : public ::testing::TestWithParam<Case> {};

TEST_P(EpLayerTest, MatchesOneRank) {
  const Case& c = GetParam();
  std::string why_not;
  const std::optional<mpi_test::EpGroup> group = mpi_test::ep_group(c.ep, &why_not);
  if (!group) GTEST_SKIP() << why_not;
  const int rank = group->rank, ep = group->ep, ep_rank = group->ep_rank;
  const MoeConfig config = layer_config(c);
  const int64_t total = c.tokens == Tokens::kNone ? 0 : c.total;
  const Tensor x = make_x(config, total);
  const Tensor logits = make_logits(config, total, c.skewed, ep);
  auto weights = make_random_weights(config, 11);

  // One rank, all tokens.
  const mpi_test::SingleRank single = mpi_test::run_single_rank(config, *weights, x, logits);
  const Tensor& ref = single.out;
  const Tensor expected = emulate_ep(config, ep, *weights, x, single.ids, single.weights);

  // Expert parallel: this rank's share.
  const Slice slice = mpi_test::token_slice(total, *group, c.tokens == Tokens::kAllOnRank0);
  MoeOptions options;
  options.backend = "reference";
  options.communication = c.strategy;
  auto result = create_moe(config, Mapping{ep, ep_rank}, options);
  ASSERT_EQ(result.report.communication, c.strategy) << result.report.str();
  ConfigurableMoE& layer = *result.moe;
  layer.load_weights(*weights);
  const TensorView x_mine = x.view().slice_rows(slice.begin, slice.end);
  const TensorView logits_mine = logits.view().slice_rows(slice.begin, slice.end);
  const Tensor out = mpi_test::forward_poisoned(layer, x_mine, logits_mine);
  // A second forward on the same layer: the exchange leaves no state behind.
  const Tensor again = mpi_test::forward_poisoned(layer, x_mine, logits_mine);

  const TensorView expected_mine = expected.view().slice_rows(slice.begin, slice.end);
  const TensorView ref_mine = ref.view().slice_rows(slice.begin, slice.end);
  EXPECT_TRUE(bit_identical(out, expected_mine))
      << "rank " << rank << ": expert-parallel output differs from the emulated one, relative L2 "
      << relative_l2(out, expected_mine);
  EXPECT_TRUE(bit_identical(again, out)) << "rank " << rank << ": second forward differs";
  if (slice.size() > 0) {
    const double err = relative_l2(out, ref_mine);
    const bool one_rank_per_token = c.skewed && !c.shared;
    const double tol =
        config.quant == QuantMode::kFP8PerTensor ? layer_tolerance(config.quant) : kExpertParallel;
    if (one_rank_per_token) {
      EXPECT_TRUE(bit_identical(out, ref_mine))
          << "rank " << rank << ": skewed routing, relative L2 " << err;
    } else {
      EXPECT_LE(err, tol) << "rank " << rank << " vs the single-rank layer";
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const char* strategy : {"allgather_reducescatter", "alltoall", "one_sided"}) {
    for (int ep : {0, 2}) {
      all.push_back({"uneven", strategy, ep});
      all.push_back({"zero_token_ranks", strategy, ep, QuantMode::kBF16, Tokens::kAllOnRank0, 21});
      all.push_back({"no_tokens", strategy, ep, QuantMode::kBF16, Tokens::kNone});
      all.push_back({"skewed", strategy, ep, QuantMode::kBF16, Tokens::kUneven, 23, true});
      all.push_back({"fp8_block", strategy, ep, QuantMode::kFP8Block, Tokens::kUneven, 19});
      all.push_back(
          {"shared_expert", strategy, ep, QuantMode::kBF16, Tokens::kUneven, 13, false, true});
    }
    all.push_back({"fp8_per_tensor", strategy, 0, QuantMode::kFP8PerTensor, Tokens::kUneven, 11});
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Strategies, EpLayerTest, ::testing::ValuesIn(cases()), case_name);

}  // namespace
}  // namespace moe
