// The NCCL strategies on two GPUs, one rank each (`mpirun -np 2 moe_gpu_comm_tests` on a
// machine with 2 GPUs; NCCL_NVLS_ENABLE=0). Without two ranks and two GPUs every test here
// skips with the reason. Each rank:
//   - Exchange: dispatch delivers exactly the tokens this rank owns experts of (every token
//     for allgather_reducescatter), in source-rank then token order, with scales, ids and
//     weights; padding rows carry a foreign expert and weight 0; combine returns per token the
//     sum over its owners of what they wrote;
//   - Layer: the grouped backend expert-parallel (Mapping{2, rank}) on this rank's share of
//     the tokens against one GPU running all tokens: uneven shares, a rank with no tokens,
//     skewed routing, fp8_block post-quant dispatch (skipped with the factory's reason while
//     the grouped backend cannot run it);
//   - EPLB online: a statistics-driven re-placement and a requested one move weights between
//     the GPUs, every forward matching one GPU; an unregistered W2 is caught;
//   - one_sided captured in a CUDA graph and replayed: the same results as eager;
//   - a stalled peer: the waiting rank fails with an error within the timeout.
// Order (suites run in the order their TEST_Ps appear below; parameter names carry the
// strategy, so --gtest_filter='-*one_sided*' leaves one_sided out): the host-driven strategies
// first, then everything one_sided (NCCL symmetric memory, device-side loads and stores),
// then the stalled peers (they abort the communicator). A test that finds a sticky CUDA error
// on either rank (an earlier kernel fault) skips, naming it, instead of failing for it.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "comm/comm_factory.h"
#include "comm/ep_plan.h"
#include "comm/nccl/nccl_communication.h"
#include "common/gpu_test_util.h"
#include "common/test_util.h"
#include "core/compare.h"
#include "core/copy.h"
#include "core/cuda_check.h"
#include "core/random.h"
#include "eplb/online_load_balancer.h"
#include "gpu_comm/sticky_cuda_error.h"
#include "moe/errors.h"
#include "moe/moe.h"
#include "quant/formats.h"
#include "quant/tolerance.h"

#ifdef MOE_HAVE_MPI
#include <mpi.h>
#endif

namespace moe {
namespace {

using testing::to_host;

#ifdef MOE_HAVE_MPI

/// MPI for the whole binary when launched by mpirun; each rank takes GPU local_rank.
class MpiGpuEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr && std::getenv("PMI_SIZE") == nullptr) {
      return;
    }
    // One GPU per rank, as `moe` does (apps/moe/mpi_launch.cc): the rank sees only GPU
    // local_rank, as its device 0. Before MPI_Init and any CUDA call.
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (local != nullptr && std::getenv("CUDA_VISIBLE_DEVICES") == nullptr) {
      setenv("CUDA_VISIBLE_DEVICES", local, 1);
    }
    MPI_Init(nullptr, nullptr);
    initialized_ = true;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
      MOE_CUDA_CHECK(cudaSetDevice(0));
    }
    cudaGetLastError();
    set_comm_timeout_seconds(60);
  }
  void TearDown() override {
    if (initialized_) MPI_Finalize();
  }

 private:
  bool initialized_ = false;
};
const ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new MpiGpuEnvironment);

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

/// Why this process cannot run the two-GPU tests, or "" when it can.
std::string why_not_two_gpu_ranks() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return "not launched by mpirun: run `mpirun -np 2 moe_gpu_comm_tests`";
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) return "needs exactly 2 ranks, got " + std::to_string(size);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  cudaGetLastError();
  // A sticky CUDA error on either rank: both skip (a rank alone would leave its peer waiting).
  const std::string sticky = devices > 0 ? testing::sticky_cuda_error() : std::string();
  int stuck[2] = {};
  const int mine = sticky.empty() ? 0 : 1;
  MPI_Allgather(&mine, 1, MPI_INT, stuck, 1, MPI_INT, MPI_COMM_WORLD);
  if (stuck[0] != 0 || stuck[1] != 0) {
    return "an earlier test left a sticky CUDA error on rank " +
           std::to_string(stuck[0] != 0 ? 0 : 1) +
           (sticky.empty() ? std::string() : " (here: " + sticky + ")") +
           ": the GPU context is unusable; see the first failure";
  }
  // Each rank needs a GPU of its own.
  char bus[32] = "none";
  if (devices > 0) cudaDeviceGetPCIBusId(bus, sizeof(bus), 0);
  char both[2][32] = {};
  MPI_Allgather(bus, 32, MPI_CHAR, both, 32, MPI_CHAR, MPI_COMM_WORLD);
  if (devices == 0 || std::strcmp(both[0], "none") == 0 || std::strcmp(both[1], "none") == 0) {
    return "needs a GPU per rank; this machine has " + std::to_string(devices) + " visible";
  }
  if (std::strcmp(both[0], both[1]) == 0) {
    return std::string("both ranks see only GPU ") + both[0] + ": needs 2 GPUs";
  }
  return "";
}

#define MOE_REQUIRE_TWO_GPU_RANKS()                            \
  do {                                                         \
    const std::string why = why_not_two_gpu_ranks();           \
    if (!why.empty()) GTEST_SKIP() << "two-GPU test: " << why; \
  } while (0)

Device gpu() {
  int d = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&d));
  return Device::cuda(d);
}

/// A copy on this rank's GPU (testing::to_device copies to GPU 0).
Tensor to_device(const TensorView& host) { return copy_to(host, gpu()); }

// ---- Exchange ------------------------------------------------------------------------------

constexpr int kExperts = 8, kTopK = 3, kHidden = 256, kScaleCols = 2;

MoeConfig exchange_config() {
  MoeConfig c = testing::small_config(kExperts, kTopK, kHidden, 128);
  c.max_num_tokens = 16;  // 8 tokens per rank per chunk
  return c;
}

int64_t tokens_of(int r, int round) { return r == 1 && round == 1 ? 0 : 3 + (r + round) % 6; }

struct Payload {
  Tensor data, scales, ids, weights;  // host
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
      p.ids.data_as<int32_t>()[t * kTopK + j] =
          static_cast<int32_t>((r * 5 + t * 3 + round + j * 3) % kExperts);
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

float partial_value(int me, int64_t t, int c) { return (me + 1) * (1 + t % 5) + c % 3; }

bool rows_equal(const TensorView& a, int64_t i, const TensorView& b, int64_t j) {
  const size_t bytes = dtype_bytes(a.dtype(), a.size(1));
  return std::memcmp(static_cast<const uint8_t*>(a.data()) + i * bytes,
                     static_cast<const uint8_t*>(b.data()) + j * bytes, bytes) == 0;
}

/// What one rank expects after dispatch, and the partials it writes.
struct Expected {
  std::vector<std::pair<int, int64_t>> rows;  // (source, token)
  Tensor fill;                                // bf16 [rows of the result, H]
};
Expected expected_rows(const std::vector<Payload>& all, int me, bool all_tokens,
                       int64_t result_rows) {
  const ExpertPartition part{kExperts, 2};
  Expected e;
  for (int s = 0; s < 2; ++s) {
    for (int64_t t = 0; t < all[s].ids.size(0); ++t) {
      if (all_tokens || owns_any(all[s], t, part, me)) e.rows.emplace_back(s, t);
    }
  }
  e.fill = Tensor::empty({result_rows, kHidden}, DType::kBF16);
  std::memset(e.fill.data(), 0, e.fill.nbytes());
  for (size_t i = 0; i < e.rows.size() && static_cast<int64_t>(i) < result_rows; ++i) {
    const auto [s, t] = e.rows[i];
    if (!owns_any(all[s], t, part, me)) continue;
    for (int c = 0; c < kHidden; ++c) {
      e.fill.data_as<uint16_t>()[i * kHidden + c] = fmt::float_to_bf16(partial_value(me, t, c));
    }
  }
  return e;
}

/// Checks one rank's combined output against the sum over the owners of each token.
void expect_combined(const Payload& mine, const Tensor& out_host, int me) {
  const ExpertPartition part{kExperts, 2};
  for (int64_t t = 0; t < mine.ids.size(0); ++t) {
    for (int c = 0; c < kHidden; ++c) {
      float sum = 0;
      for (int r = 0; r < 2; ++r) {
        if (owns_any(mine, t, part, r)) sum += partial_value(r, t, c);
      }
      ASSERT_EQ(fmt::bf16_to_float(out_host.data_as<uint16_t>()[t * kHidden + c]), sum)
          << "rank " << me << " token " << t << " column " << c;
    }
  }
}

/// True on every rank when `ok` is true on every rank (skips must be agreed: a rank that
/// skips alone leaves its peer waiting in a collective).
bool on_all_ranks(bool ok) {
  int mine = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return all != 0;
}

std::string strategy_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

/// "" when `strategy` can run on this platform on every rank, else why not.
std::string why_strategy_cannot_run(const std::string& strategy, const MoeConfig& config) {
  const Capability cap =
      make_nccl_communication(strategy, config, Mapping{2, world_rank()})->is_platform_supported();
  if (on_all_ranks(cap.ok)) return "";
  return strategy + " is not supported here: " + (cap.ok ? "(see the other rank)" : cap.reason);
}

#define MOE_REQUIRE_STRATEGY(strategy, config)                             \
  do {                                                                     \
    const std::string why = why_strategy_cannot_run((strategy), (config)); \
    if (!why.empty()) GTEST_SKIP() << why;                                 \
  } while (0)

// ---- Exchange ------------------------------------------------------------------------------

/// Three rounds of dispatch and combine (rank 1 has no tokens in round 1).
// bf16 rows as the f32 partial sums run_moe writes under expert parallelism (exact).
Tensor as_f32(const Tensor& bf16) {
  Tensor f = Tensor::empty(bf16.shape(), DType::kF32);
  for (int64_t i = 0; i < bf16.numel(); ++i) {
    f.data_as<float>()[i] = fmt::bf16_to_float(bf16.data_as<uint16_t>()[i]);
  }
  return f;
}

/// Where each expected row (e.rows[i]) sits in the dispatch result of `result_rows` rows:
/// allgather_reducescatter: rank blocks of T_max rows, every token at its index; one_sided:
/// a region of capacity / ep rows per source rank, filled from its start; alltoall:
/// contiguous rows.
std::vector<int64_t> result_positions(const std::string& strategy, const Expected& e,
                                      int64_t result_rows) {
  const bool every = strategy == "allgather_reducescatter", regions = strategy == "one_sided";
  const int64_t block = every || regions ? result_rows / 2 : 0;
  std::vector<int64_t> at(e.rows.size());
  std::vector<int64_t> filled(2, 0);  // rows of each source's region so far
  for (size_t i = 0; i < e.rows.size(); ++i) {
    const auto [s, t] = e.rows[i];
    at[i] = every ? s * block + t : regions ? s * block + filled[s]++ : static_cast<int64_t>(i);
  }
  return at;
}

/// What run_moe writes (e.fill's row i at row at[i]; zeros elsewhere), bf16.
Tensor placed_fill(const Expected& e, const std::vector<int64_t>& at) {
  Tensor fill = Tensor::empty(e.fill.shape(), DType::kBF16);
  std::memset(fill.data(), 0, fill.nbytes());
  for (size_t i = 0; i < at.size(); ++i) {
    std::memcpy(fill.data_as<uint16_t>() + at[i] * kHidden,
                e.fill.data_as<uint16_t>() + i * kHidden, kHidden * 2);
  }
  return fill;
}

void check_exchange(const std::string& strategy) {
  const int me = world_rank();
  const MoeConfig config = exchange_config();
  auto comm = make_nccl_communication(strategy, config, Mapping{2, me});
  comm->initialize();
  EXPECT_EQ(comm->agree_num_chunks(me + 1, nullptr), 2);
  cudaStream_t stream = nullptr;
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const ExpertPartition part{kExperts, 2};
  for (int round = 0; round < 3; ++round) {
    const std::vector<Payload> all = {make_payload(0, round), make_payload(1, round)};
    const Payload& mine = all[me];
    const Tensor data = to_device(mine.data), scales = to_device(mine.scales),
                 ids = to_device(mine.ids), weights = to_device(mine.weights);
    const int64_t n = mine.ids.size(0);
    Tensor out = Tensor::empty({n, kHidden}, DType::kBF16, gpu());
    MOE_CUDA_CHECK(cudaMemset(out.data(), 0xFF, out.nbytes()));
    const RoutingView routing{ids, weights};
    comm->prepare_dispatch(routing, stream);
    const DispatchResult d = comm->dispatch({data, scales}, routing, out, stream);
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream), strategy, " dispatch, round ", round);
    const int64_t result_rows = d.x.data.size(0);
    const Expected e = expected_rows(all, me, strategy == "allgather_reducescatter", result_rows);
    const int64_t real = static_cast<int64_t>(e.rows.size());
    const Tensor got_data = to_host(d.x.data), got_scales = to_host(d.x.scales),
                 got_ids = to_host(d.routing.topk_ids), got_w = to_host(d.routing.topk_weights);
    if (strategy == "alltoall") {
      ASSERT_EQ(result_rows, real);
    }
    ASSERT_GE(result_rows, real);
    const std::vector<int64_t> at = result_positions(strategy, e, result_rows);
    for (int64_t i = 0; i < real; ++i) {
      const auto [s, t] = e.rows[i];
      EXPECT_TRUE(rows_equal(got_data, at[i], all[s].data, t)) << "data of row " << i;
      EXPECT_TRUE(rows_equal(got_scales, at[i], all[s].scales, t)) << "scales of row " << i;
      EXPECT_TRUE(rows_equal(got_ids, at[i], all[s].ids, t)) << "ids of row " << i;
      EXPECT_TRUE(rows_equal(got_w, at[i], all[s].weights, t)) << "weights of row " << i;
    }
    // Every other row is padding: an expert this rank does not own, weight 0.
    std::vector<bool> is_real(result_rows, false);
    for (int64_t i = 0; i < real; ++i) is_real[at[i]] = true;
    for (int64_t row = 0; row < result_rows; ++row) {
      if (is_real[row]) continue;
      for (int j = 0; j < kTopK; ++j) {
        EXPECT_NE(part.owner(got_ids.data_as<int32_t>()[row * kTopK + j]), me) << "pad " << row;
        EXPECT_EQ(got_w.data_as<float>()[row * kTopK + j], 0.0f) << "pad " << row;
      }
    }
    // What run_moe would write, then combine.
    const Tensor partials = as_f32(placed_fill(e, at));  // GPU partial sums travel in f32
    MOE_CUDA_CHECK(cudaMemcpy(d.expert_out.data(), partials.data(), partials.nbytes(),
                              cudaMemcpyHostToDevice));
    comm->combine(d.expert_out, out, stream);
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream), strategy, " combine, round ", round);
    expect_combined(mine, to_host(out), me);
  }
  MOE_CUDA_CHECK(cudaStreamDestroy(stream));
}

class NcclExchange : public ::testing::TestWithParam<std::string> {};

TEST_P(NcclExchange, DeliversOwnedTokensAndSumsPartials) {
  MOE_REQUIRE_TWO_GPU_RANKS();
  MOE_REQUIRE_STRATEGY(GetParam(), exchange_config());
  check_exchange(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Nccl, NcclExchange,
                         ::testing::Values("allgather_reducescatter", "alltoall"), strategy_name);

// ---- Layer ---------------------------------------------------------------------------------

struct LayerCase {
  std::string name;
  std::string strategy;
  QuantMode quant = QuantMode::kBF16;
  int64_t total = 45;
  bool all_on_rank0 = false;
  bool skewed = false;
  int max_num_tokens = 32;  // 16 tokens per rank per chunk: several chunks
  int hidden = 1024;
  bool act_partials = false;  // ep_partial_dtype = act_dtype (bf16 partial sums)
};

void PrintTo(const LayerCase& c, std::ostream* os) {
  *os << c.strategy << " " << c.name << " (" << quant_mode_name(c.quant) << ", " << c.total
      << " tokens)";
}

std::string layer_case_name(const ::testing::TestParamInfo<LayerCase>& info) {
  return info.param.strategy + "_" + info.param.name;
}

MoeConfig layer_config(const LayerCase& c) {
  MoeConfig config = preset("qwen3-30b-a3b");
  config.hidden_size = c.hidden;
  config.intermediate_size = 256;
  config.num_experts = 16;
  config.top_k = 4;
  config.max_num_tokens = c.max_num_tokens;
  config.quant = c.quant;
  if (c.act_partials) config.ep_partial_dtype = config.act_dtype;
  config.validate();
  return config;
}

/// "" when the factory gave `report` the grouped backend, else the reason it gave for
/// grouped (its can_implement answer).
std::string grouped_refusal(const FactoryReport& report) {
  if (report.backend == "grouped") return "";
  for (const CandidateReport& b : report.backends) {
    if (b.name == "grouped") return b.reason;
  }
  return "the factory did not consider grouped:\n" + report.str();
}

void check_layer(const LayerCase& c) {
  const int me = world_rank();
  const MoeConfig config = layer_config(c);
  // The one-GPU reference; with fallback allowed the factory reports why grouped cannot run
  // this layer (e.g. a quant mode it does not implement yet) instead of throwing.
  MoeOptions single_options;
  single_options.backend = "grouped";
  single_options.allow_fallback = true;
  CreateResult single = create_moe(config, Mapping{}, single_options);
  const std::string refusal = grouped_refusal(single.report);
  if (!on_all_ranks(refusal.empty())) {
    GTEST_SKIP() << "the grouped backend cannot run " << quant_mode_name(c.quant) << ": "
                 << (refusal.empty() ? std::string("(see the other rank)") : refusal);
  }
  Tensor x = Tensor::empty({c.total, config.hidden_size}, config.act_dtype);
  fill_normal(x, stream_id(21, 1));
  Tensor logits = Tensor::empty({c.total, config.num_experts}, DType::kF32);
  fill_normal(logits, stream_id(21, 2));
  if (c.skewed) {
    for (int64_t t = 0; t < c.total; ++t) {
      for (int e = config.num_experts / 2; e < config.num_experts; ++e) {
        logits.data_as<float>()[t * config.num_experts + e] += 20.0f;
      }
    }
  }
  auto weights = make_random_weights(config, 5);
  single.moe->load_weights(*weights);
  const Tensor x_dev = to_device(x), logits_dev = to_device(logits);
  Tensor ref = Tensor::empty({c.total, config.hidden_size}, config.act_dtype, gpu());
  single.moe->forward(x_dev, logits_dev, ref);
  const Tensor ref_host = to_host(ref);

  const int64_t half = (c.total + 1) / 2;
  int64_t begin = me == 0 ? 0 : half, end = me == 0 ? half : c.total;
  if (c.all_on_rank0) begin = me == 0 ? 0 : c.total, end = c.total;
  MoeOptions options;
  options.backend = "grouped";
  options.communication = c.strategy;
  auto result = create_moe(config, Mapping{2, me}, options);
  ASSERT_EQ(result.report.communication, c.strategy) << result.report.str();
  result.moe->load_weights(*weights);
  Tensor out = Tensor::empty({end - begin, config.hidden_size}, config.act_dtype, gpu());
  MOE_CUDA_CHECK(cudaMemset(out.data(), 0xFF, out.nbytes()));
  // NOTE: create_moe must hand the backend's device to create_communication (the GPU
  // overload in comm_factory.h); with the host overload the strategy is the MPI one and this
  // forward fails naming the host/device mismatch.
  result.moe->forward(x_dev.view().slice_rows(begin, end), logits_dev.view().slice_rows(begin, end),
                      out);
  MOE_CUDA_CHECK(cudaDeviceSynchronize(), c.strategy, " layer forward");
  if (end > begin) {
    const Tensor got = to_host(out);
    const double err = relative_l2(got, ref_host.view().slice_rows(begin, end));
    EXPECT_LE(err, c.skewed ? 1e-3 : 5e-3) << "rank " << me << " vs one GPU";
  }
}

std::vector<LayerCase> layer_cases(const char* strategy) {
  return {{"uneven", strategy},
          {"zero_token_rank", strategy, QuantMode::kBF16, 40, true},
          {"skewed", strategy, QuantMode::kBF16, 37, false, true},
          {"fp8_block", strategy, QuantMode::kFP8Block, 29},
          // Chunks of 600 then 150 tokens per rank: one_sided's prepare + scatter kernels,
          // then its fused dispatch over the padding the larger chunk leaves.
          {"large_chunks", strategy, QuantMode::kBF16, 1501, false, false, 1200},
          // 256 tokens per rank at DeepSeek's hidden size: one_sided's largest fused dispatch
          // and a split gather of 256 x 7 blocks, more than an H100/H200 holds at once.
          {"wide_decode", strategy, QuantMode::kBF16, 512, false, false, 512, 7168},
          // one_sided: 9 tokens on rank 0, 8 on rank 1 in one chunk (owners push at most
          // 8 rows of partial sums back, more are pulled: both in one combine); then chunks
          // of 10 and 9 / 10 and 8 tokens (rank 1 from pulled to pushed).
          {"mixed_modes", strategy, QuantMode::kBF16, 17},
          {"mode_change", strategy, QuantMode::kBF16, 37, false, false, 20},
          // Partial sums in bf16: small chunks, then chunks of 600 tokens per rank.
          {"act_partials", strategy, QuantMode::kBF16, 45, false, false, 32, 1024, true},
          {"act_partials_large", strategy, QuantMode::kBF16, 1501, false, false, 1200, 1024, true}};
}

std::vector<LayerCase> host_driven_layer_cases() {
  std::vector<LayerCase> all = layer_cases("allgather_reducescatter");
  for (LayerCase& c : layer_cases("alltoall")) all.push_back(c);
  return all;
}

class NcclLayer : public ::testing::TestWithParam<LayerCase> {};

TEST_P(NcclLayer, MatchesOneGpu) {
  MOE_REQUIRE_TWO_GPU_RANKS();
  MOE_REQUIRE_HOPPER();
  MOE_REQUIRE_STRATEGY(GetParam().strategy, layer_config(GetParam()));
  check_layer(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Nccl, NcclLayer, ::testing::ValuesIn(host_driven_layer_cases()),
                         layer_case_name);

// ---- one_sided (after every host-driven strategy: see the top of the file) -----------------

class NcclOneSidedExchange : public ::testing::TestWithParam<std::string> {};

TEST_P(NcclOneSidedExchange, DeliversOwnedTokensAndSumsPartials) {
  MOE_REQUIRE_TWO_GPU_RANKS();
  MOE_REQUIRE_STRATEGY(GetParam(), exchange_config());
  check_exchange(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Nccl, NcclOneSidedExchange, ::testing::Values("one_sided"), strategy_name);

class NcclOneSidedLayer : public ::testing::TestWithParam<LayerCase> {};

TEST_P(NcclOneSidedLayer, MatchesOneGpu) {
  MOE_REQUIRE_TWO_GPU_RANKS();
  MOE_REQUIRE_HOPPER();
  MOE_REQUIRE_STRATEGY(GetParam().strategy, layer_config(GetParam()));
  check_layer(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Nccl, NcclOneSidedLayer, ::testing::ValuesIn(layer_cases("one_sided")),
                         layer_case_name);

// ---- EPLB online: weights move between the GPUs (NCCL send/recv, own communicator) ---------

/// Every slot takes the expert of the slot one rank further on.
std::vector<int32_t> rotated_by_a_rank(const std::vector<int32_t>& placement) {
  const size_t n = placement.size(), half = n / 2;
  std::vector<int32_t> out(n);
  for (size_t s = 0; s < n; ++s) out[s] = placement[(s + half) % n];
  return out;
}

class NcclEplbOnline : public ::testing::TestWithParam<LayerCase> {};

// Expert 13 is every token's first choice. A layer in online mode (24 slots, re-placement
// every 2 forwards) runs 6 forwards: the re-placement gives expert 13 a copy on each GPU, and
// every forward (before, while and after the weights move) matches one GPU without EPLB.
// Then a requested placement moves every slot to the other GPU (the rows left, poisoned);
// then, on a fresh layer, the same with W2 left unregistered, which some rank must see as a
// wrong output. Both transports: CUDA IPC pulls, and NCCL send/recv (MOE_EPLB_NO_IPC=1).
TEST_P(NcclEplbOnline, MigrationBetweenGpusKeepsTheOutput) {
  MOE_REQUIRE_TWO_GPU_RANKS();
  MOE_REQUIRE_HOPPER();
  const LayerCase& c = GetParam();
  MOE_REQUIRE_STRATEGY(c.strategy, layer_config(c));
  const int me = world_rank();
  const MoeConfig config = layer_config(c);
  constexpr int kHot = 13;
  Tensor x = Tensor::empty({c.total, config.hidden_size}, config.act_dtype);
  fill_normal(x, stream_id(23, 1));
  Tensor logits = Tensor::empty({c.total, config.num_experts}, DType::kF32);
  fill_normal(logits, stream_id(23, 2));
  for (int64_t t = 0; t < c.total; ++t)
    logits.data_as<float>()[t * config.num_experts + kHot] += 20;
  auto weights = make_random_weights(config, 7);
  MoeOptions single_options;
  single_options.backend = "grouped";
  auto single = create_moe(config, Mapping{}, single_options).moe;
  single->load_weights(*weights);
  const Tensor x_dev = to_device(x), logits_dev = to_device(logits);
  Tensor ref = Tensor::empty({c.total, config.hidden_size}, config.act_dtype, gpu());
  single->forward(x_dev, logits_dev, ref);
  const Tensor ref_host = to_host(ref);

  const int64_t half = (c.total + 1) / 2;
  const int64_t begin = me == 0 ? 0 : half, end = me == 0 ? half : c.total;
  // The weights move by copy engines through CUDA IPC on one host, or with
  // MOE_EPLB_NO_IPC=1 by NCCL send/recv: both, on fresh layers.
  for (const bool ipc : {true, false}) {
    SCOPED_TRACE(ipc ? "cuda ipc pull" : "nccl send/recv");
    if (!ipc) setenv("MOE_EPLB_NO_IPC", "1", 1);
    auto make_layer = [&] {
      MoeOptions options;
      options.backend = "grouped";
      options.communication = c.strategy;
      options.eplb_online.rebalance_interval = 2;
      options.eplb_online.num_slots = 24;
      options.eplb_online.method = "greedy";
      auto result = create_moe(config, Mapping{2, me}, options);
      EXPECT_EQ(result.report.communication, c.strategy) << result.report.str();
      result.moe->load_weights(*weights);
      return std::move(result.moe);
    };
    auto layer = make_layer();
    EXPECT_EQ(layer->eplb_status().transport, ipc ? "nccl + cuda ipc pull" : "nccl");
    Tensor out = Tensor::empty({end - begin, config.hidden_size}, config.act_dtype, gpu());
    const double tol = c.quant == QuantMode::kBF16 ? 5e-3 : 2e-2;
    auto forward_error = [&](ConfigurableMoE& l) {
      MOE_CUDA_CHECK(cudaMemset(out.data(), 0xFF, out.nbytes()));
      l.forward(x_dev.view().slice_rows(begin, end), logits_dev.view().slice_rows(begin, end), out);
      MOE_CUDA_CHECK(cudaDeviceSynchronize(), "EPLB online forward");
      return relative_l2(to_host(out), ref_host.view().slice_rows(begin, end));
    };
    for (int f = 0; f < 6; ++f) {
      EXPECT_LE(forward_error(*layer), tol) << "rank " << me << ", forward " << f;
    }
    layer->eplb_finish_migration();
    EplbStatus s = layer->eplb_status();
    EXPECT_GE(s.migrations, 1) << s.last_skip_reason;
    EXPECT_LT(s.last_imbalance_after, s.last_imbalance_before);
    EXPECT_EQ(std::count(s.slot_to_expert.begin(), s.slot_to_expert.end(), kHot), 2);
    // The rows the slots left, poisoned: a table still pointing at one would show.
    layer->online_load_balancer()->poison_free_rows_for_testing(nullptr);
    EXPECT_LE(forward_error(*layer), tol) << "rank " << me << ", after the re-placement";

    layer->eplb_request_placement(rotated_by_a_rank(s.slot_to_expert));
    layer->eplb_finish_migration();
    layer->online_load_balancer()->poison_free_rows_for_testing(nullptr);
    EXPECT_GT(layer->eplb_status().last_remote_moves, 0);
    EXPECT_LE(forward_error(*layer), tol) << "rank " << me << ", after every slot moved";

    // A fresh layer with W2 left unregistered: the moved slots keep stale W2 rows. (Both
    // layers alive: with NCCL send/recv they share the process's EPLB communicator, which
    // the first one connected.)
    auto stale = make_layer();
    stale->online_load_balancer()->drop_tensor_for_testing("w2");
    stale->eplb_request_placement(rotated_by_a_rank(stale->eplb_status().slot_to_expert));
    stale->eplb_finish_migration();
    EXPECT_FALSE(on_all_ranks(forward_error(*stale) <= tol)) << "a stale W2 went unnoticed";
    if (!ipc) unsetenv("MOE_EPLB_NO_IPC");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Nccl, NcclEplbOnline,
    ::testing::Values(LayerCase{"eplb_online", "alltoall", QuantMode::kBF16, 45},
                      LayerCase{"eplb_online", "one_sided", QuantMode::kBF16, 45},
                      LayerCase{"eplb_online_fp8_block", "one_sided", QuantMode::kFP8Block, 45}),
    layer_case_name);

// ---- CUDA graph: the strategies whose sizes never leave the GPU ----------------------------

class NcclGraphCapture : public ::testing::TestWithParam<std::string> {};

TEST_P(NcclGraphCapture, ReplaysMatchEager) {
  MOE_REQUIRE_TWO_GPU_RANKS();
  MOE_REQUIRE_STRATEGY(GetParam(), exchange_config());
  const int me = world_rank();
  const MoeConfig config = exchange_config();
  auto comm = make_nccl_communication(GetParam(), config, Mapping{2, me});
  comm->initialize();
  cudaStream_t stream = nullptr;
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const std::vector<Payload> all = {make_payload(0, 0), make_payload(1, 0)};
  const Payload& mine = all[me];
  const Tensor data = to_device(mine.data), scales = to_device(mine.scales),
               ids = to_device(mine.ids), weights = to_device(mine.weights);
  Tensor out = Tensor::empty({mine.ids.size(0), kHidden}, DType::kBF16, gpu());
  const RoutingView routing{ids, weights};
  // Eager once: the rows and what run_moe would write.
  comm->prepare_dispatch(routing, stream);
  DispatchResult d = comm->dispatch({data, scales}, routing, out, stream);
  const Expected e = expected_rows(all, me, false, d.x.data.size(0));
  const Tensor fill =
      to_device(as_f32(placed_fill(e, result_positions(GetParam(), e, d.x.data.size(0)))));
  MOE_CUDA_CHECK(cudaMemcpyAsync(d.expert_out.data(), fill.data(), fill.nbytes(),
                                 cudaMemcpyDeviceToDevice, stream));
  comm->combine(d.expert_out, out, stream);
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream), "eager dispatch + combine");
  expect_combined(mine, to_host(out), me);

  cudaGraph_t graph = nullptr;
  MOE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  comm->prepare_dispatch(routing, stream);
  d = comm->dispatch({data, scales}, routing, out, stream);
  MOE_CUDA_CHECK(cudaMemcpyAsync(d.expert_out.data(), fill.data(), fill.nbytes(),
                                 cudaMemcpyDeviceToDevice, stream));
  comm->combine(d.expert_out, out, stream);
  MOE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  MOE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 3; ++replay) {
    MOE_CUDA_CHECK(cudaMemsetAsync(out.data(), 0xFF, out.nbytes(), stream));
    MOE_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream), "graph replay ", replay);
    expect_combined(mine, to_host(out), me);
  }
  MOE_CUDA_CHECK(cudaGraphExecDestroy(exec));
  MOE_CUDA_CHECK(cudaGraphDestroy(graph));
  MOE_CUDA_CHECK(cudaStreamDestroy(stream));
}

INSTANTIATE_TEST_SUITE_P(Nccl, NcclGraphCapture, ::testing::Values("one_sided"), strategy_name);

// ---- A stalled peer (last: it aborts the communicator) -------------------------------------

class NcclStalledPeer : public ::testing::TestWithParam<std::string> {};

TEST_P(NcclStalledPeer, FailsWithinTheTimeout) {
  MOE_REQUIRE_TWO_GPU_RANKS();
  MOE_REQUIRE_STRATEGY(GetParam(), exchange_config());
  const int me = world_rank();
  const MoeConfig config = exchange_config();
  set_comm_timeout_seconds(2.0);
  {
    auto comm = make_nccl_communication(GetParam(), config, Mapping{2, me});
    comm->initialize();
    if (me == 0) {
      const Payload p = make_payload(0, 0);
      const Tensor data = to_device(p.data), scales = to_device(p.scales), ids = to_device(p.ids),
                   weights = to_device(p.weights);
      Tensor out = Tensor::empty({p.ids.size(0), kHidden}, DType::kBF16, gpu());
      const auto start = std::chrono::steady_clock::now();
      std::string message;
      try {
        // alltoall waits in prepare_dispatch; one_sided's dispatch kernel records the
        // timeout on the device, and the next call reports it.
        for (int i = 0; i < 2; ++i) {
          comm->prepare_dispatch({ids, weights}, nullptr);
          comm->dispatch({data, scales}, {ids, weights}, out, nullptr);
          MOE_CUDA_CHECK(cudaDeviceSynchronize());
        }
      } catch (const Error& e) {
        message = e.message();
      }
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_NE(message.find("stalled or died"), std::string::npos) << "got: " << message;
      EXPECT_LE(s, 30.0);
    }
    // Rank 1 stalls: it waits for rank 0 outside NCCL.
    MPI_Barrier(MPI_COMM_WORLD);
  }  // the strategies go with the short timeout: releasing them may wait on a dead peer
  set_comm_timeout_seconds(60.0);
}

INSTANTIATE_TEST_SUITE_P(Nccl, NcclStalledPeer, ::testing::Values("alltoall", "one_sided"),
                         strategy_name);

#else  // MOE_HAVE_MPI

TEST(NcclExchange, NeedsMpi) { GTEST_SKIP() << "built without MPI: no multi-rank GPU tests"; }

#endif  // MOE_HAVE_MPI

}  // namespace
}  // namespace moe
