// The dense backend's can_implement: every "no" names what and why. A pure function of the
// config, mapping and device, checked on the CPU with made-up devices.
#include "backends/dense/dense_capability.h"

#include <gtest/gtest.h>

#include <string>

#include "common/test_util.h"

namespace moe {
namespace {

DeviceInfo hopper() {
  DeviceInfo d;
  d.cuda_built = true;
  d.has_cuda = true;
  d.sm_major = 9;
  d.sm_minor = 0;
  d.num_sms = 132;
  d.memory_bytes = size_t{80} << 30;
  d.name = "test H100";
  return d;
}

MoeConfig small(QuantMode q = QuantMode::kBF16) {
  MoeConfig c = testing::small_config(8, 2, 256, 128);
  c.quant = q;
  c.act_dtype = q == QuantMode::kFP16 ? DType::kF16 : DType::kBF16;
  return c;
}

void expect_no(const Capability& cap, const std::string& needle) {
  EXPECT_FALSE(cap.ok);
  EXPECT_NE(cap.reason.find(needle), std::string::npos)
      << "reason '" << cap.reason << "' does not mention '" << needle << "'";
}

TEST(DenseCapability, RunsTheSupportedModesOnHopper) {
  for (QuantMode q :
       {QuantMode::kBF16, QuantMode::kFP16, QuantMode::kFP8PerTensor, QuantMode::kFP8Block}) {
    const Capability cap = dense_can_implement(small(q), Mapping{}, hopper());
    EXPECT_TRUE(cap.ok) << quant_mode_name(q) << ": " << cap.reason;
  }
  MoeConfig oai = small();
  oai.activation = Activation::kSwiGLUOAI;
  oai.has_expert_biases = true;
  EXPECT_TRUE(dense_can_implement(oai, Mapping{}, hopper()).ok);
  MoeConfig shared = small(QuantMode::kFP8Block);
  shared.num_shared_experts = 1;
  shared.shared_intermediate_size = 256;
  EXPECT_TRUE(dense_can_implement(shared, Mapping{}, hopper()).ok);
}

TEST(DenseCapability, NoExpertParallelism) {
  Mapping m;
  m.ep_size = 2;
  m.ep_rank = 1;
  expect_no(dense_can_implement(small(), m, hopper()), "expert parallelism");
}

TEST(DenseCapability, UnsupportedQuantModes) {
  for (QuantMode q : {QuantMode::kNVFP4, QuantMode::kMXFP4, QuantMode::kW4A8MXFP4MXFP8}) {
    MoeConfig c = small(q);
    expect_no(dense_can_implement(c, Mapping{}, hopper()), std::string(quant_mode_name(q)));
  }
}

TEST(DenseCapability, NeedsAHopperGpu) {
  DeviceInfo ampere = hopper();
  ampere.sm_major = 8;
  expect_no(dense_can_implement(small(), Mapping{}, ampere), "Hopper");
  DeviceInfo blackwell = hopper();
  blackwell.sm_major = 10;
  expect_no(dense_can_implement(small(), Mapping{}, blackwell), "sm_100");
  DeviceInfo none = hopper();
  none.has_cuda = false;
  expect_no(dense_can_implement(small(), Mapping{}, none), "no CUDA device");
  expect_no(dense_can_implement(small(), Mapping{}, DeviceInfo::cpu_only()), "CUDA");
}

TEST(DenseCapability, ShapesCuBlasLtCannotTake) {
  MoeConfig h = small();
  h.hidden_size = 100;  // 200-byte rows: not 16-byte aligned
  expect_no(dense_can_implement(h, Mapping{}, hopper()), "hidden_size = 100");
  MoeConfig i = small(QuantMode::kFP8Block);
  i.intermediate_size = 192;  // a 1x128 group would straddle two experts
  expect_no(dense_can_implement(i, Mapping{}, hopper()), "intermediate_size = 192");
  MoeConfig s = small(QuantMode::kFP8PerTensor);
  s.num_shared_experts = 1;
  s.shared_intermediate_size = 200;
  expect_no(dense_can_implement(s, Mapping{}, hopper()), "shared_intermediate_size = 200");
  MoeConfig h8 = small(QuantMode::kFP8PerTensor);
  h8.hidden_size = 200;
  expect_no(dense_can_implement(h8, Mapping{}, hopper()), "multiple of 128");
  // 16-bit only needs 8-element rows.
  MoeConfig odd = small();
  odd.hidden_size = 200;
  odd.intermediate_size = 72;
  EXPECT_TRUE(dense_can_implement(odd, Mapping{}, hopper()).ok);
}

TEST(DenseCapability, SixteenBitActivationsMatchTheWeights) {
  MoeConfig c = small(QuantMode::kBF16);
  c.act_dtype = DType::kF16;
  expect_no(dense_can_implement(c, Mapping{}, hopper()), "f16");
  // fp8 quantizes either activation type.
  MoeConfig f = small(QuantMode::kFP8Block);
  f.act_dtype = DType::kF16;
  EXPECT_TRUE(dense_can_implement(f, Mapping{}, hopper()).ok);
}

TEST(DenseCapability, AllWeightsMustFitTheGpu) {
  MoeConfig c = preset("deepseek-v3");  // 256 experts + shared: 10.5 GiB of fp8 per layer
  c.quant = QuantMode::kFP8Block;
  EXPECT_TRUE(dense_can_implement(c, Mapping{}, hopper()).ok);
  DeviceInfo small_gpu = hopper();
  small_gpu.memory_bytes = size_t{8} << 30;
  expect_no(dense_can_implement(c, Mapping{}, small_gpu), "MiB");
}

TEST(DenseCapability, InvalidConfigsSayWhichField) {
  MoeConfig c = small();
  c.top_k = 9;  // more than the 8 experts
  expect_no(dense_can_implement(c, Mapping{}, hopper()), "top_k");
}

}  // namespace
}  // namespace moe
