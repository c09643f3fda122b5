// The dense backend's cuBLASLt GEMM (backends/dense/dense_gemm.h) alone against a float64
// product: 16-bit, per-tensor fp8 and block-scaled fp8 (which pins down the scale layouts:
// 128x128 weight scales with a leading dimension padded to 4, 1x128 activation scales
// group-major with the token count as leading dimension), every token bucket's ends, strided
// rows, accumulation.
#include "backends/dense/dense_gemm.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "common/gpu_test_util.h"
#include "core/compare.h"
#include "core/cuda_check.h"
#include "core/random.h"
#include "quant/formats.h"
#include "quant/fp8_quant_kernels.h"

namespace moe::dense {
namespace {

using testing::to_device;
using testing::to_host;

constexpr size_t kWorkspace = size_t{32} << 20;

/// Relative L2 bound of an e4m3 GEMM with f32 output against float64. The products of two
/// e4m3 values are exact in fp32 (4 x 4 significant bits), so what remains is accumulation:
/// Hopper's FP8 wgmma adds a k-slice of products into an accumulator that keeps only about
/// 14 significant bits (DeepSeek-V3 technical report, section 3.3.2, on H800), and cuBLASLt
/// (fast accumulation off) promotes each such partial sum to fp32 registers. Every output is
/// then a sum of a few partial sums each off by ~2^-14..2^-13 relative (6e-5..1.2e-4), which
/// is what an H100 shows (1.2e-4 for k = 512). 1e-3 leaves that a margin of ~8 while a wrong
/// scale, scale layout or operand is off by O(0.1 .. 1).
constexpr double kFp8GemmTolerance = 1e-3;

/// A random e4m3 code that is not NaN, of moderate magnitude (|v| <= 8).
uint8_t random_e4m3(uint64_t stream, uint64_t i) {
  const float v = normal_at(stream, i) * 2.0f;
  return fmt::float_to_e4m3(v);
}

struct Problem {
  int64_t n, k, ld_w, ld_x, max_tokens;
};

/// W [n, ld_w] (k used), x [T, ld_x] as host tensors of `dtype`, with their values.
struct Operands {
  Tensor w, x;  // host
  std::vector<double> wv, xv;
};

Operands make_operands(const Problem& p, int64_t t, DType dtype, uint64_t seed) {
  Operands o;
  o.w = Tensor::empty({p.n, p.ld_w}, dtype);
  o.x = Tensor::empty({t, p.ld_x}, dtype);
  o.wv.assign(p.n * p.ld_w, 0.0);
  o.xv.assign(t * p.ld_x, 0.0);
  auto fill = [&](Tensor& tensor, std::vector<double>& values, uint64_t stream, float stddev) {
    for (int64_t i = 0; i < tensor.numel(); ++i) {
      if (dtype == DType::kE4M3) {
        tensor.data_as<uint8_t>()[i] = random_e4m3(stream, i);
        values[i] = fmt::e4m3_to_float(tensor.data_as<uint8_t>()[i]);
      } else {
        const uint16_t b = fmt::float_to_bf16(normal_at(stream, i) * stddev);
        tensor.data_as<uint16_t>()[i] = b;
        values[i] = fmt::bf16_to_float(b);
      }
    }
  };
  fill(o.w, o.wv, stream_id(seed, 1), 0.05f);
  fill(o.x, o.xv, stream_id(seed, 2), 1.0f);
  return o;
}

TEST(DenseGemm, SixteenBitEveryBucketAgainstFloat64) {
  MOE_REQUIRE_HOPPER();
  LtHandle lt;
  const Problem p{200, 136, 144, 152, 48};  // strided rows, no dimension a multiple of 64
  GemmDesc d;
  d.name = "test bf16";
  d.w_dtype = d.x_dtype = DType::kBF16;
  d.out_dtype = DType::kF32;
  d.n = p.n;
  d.k = p.k;
  d.ld_w = p.ld_w;
  d.ld_x = p.ld_x;
  d.ld_out = 208;
  d.max_tokens = p.max_tokens;
  d.workspace_bytes = kWorkspace;
  LtGemm gemm(lt.get(), d);
  // Powers of two up to max_tokens (narrower where no algorithm covers a whole bucket).
  const std::vector<int64_t> ends = gemm.bucket_ends();
  ASSERT_FALSE(ends.empty());
  EXPECT_EQ(ends.back(), 48);
  EXPECT_TRUE(std::is_sorted(ends.begin(), ends.end()));
  EXPECT_LE(ends.size(), 12u);
  Tensor ws = Tensor::empty({static_cast<int64_t>(kWorkspace)}, DType::kU8, Device::cuda(0));
  for (int64_t t : {1, 2, 3, 5, 16, 17, 33, 48}) {
    const Operands o = make_operands(p, t, DType::kBF16, 10 + t);
    Tensor wd = to_device(o.w), xd = to_device(o.x);
    Tensor out = Tensor::empty({t, d.ld_out}, DType::kF32, Device::cuda(0));
    MOE_CUDA_CHECK(cudaMemset(out.data(), 0xFF, out.nbytes()));
    GemmArgs a;
    a.w = wd.data();
    a.x = xd.data();
    a.out = out.data();
    a.tokens = t;
    a.workspace = ws.data();
    gemm.run(a, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    const Tensor got = to_host(out);
    std::vector<double> g, want;
    for (int64_t r = 0; r < t; ++r) {
      for (int64_t c = 0; c < p.n; ++c) {
        double s = 0;
        for (int64_t q = 0; q < p.k; ++q) s += o.xv[r * p.ld_x + q] * o.wv[c * p.ld_w + q];
        want.push_back(s);
        g.push_back(got.data_as<float>()[r * d.ld_out + c]);
      }
    }
    EXPECT_LE(relative_l2(g, want), 1e-5) << "T = " << t;
  }
}

// Block-scaled fp8: W [n, k] in 128x128 blocks, x [T, k] in 1x128 groups, each with its own
// scale; k / 128 = 3 so the weight scales' padded leading dimension (4) differs from 3.
TEST(DenseGemm, BlockScaledFp8AgainstFloat64) {
  MOE_REQUIRE_HOPPER();
  LtHandle lt;
  const Problem p{384, 384, 384, 384, 64};
  GemmDesc d;
  d.name = "test fp8 block";
  d.w_dtype = d.x_dtype = DType::kE4M3;
  d.out_dtype = DType::kF32;
  d.n = p.n;
  d.k = p.k;
  d.ld_w = p.ld_w;
  d.ld_x = p.ld_x;
  d.ld_out = p.n;
  d.scaling = GemmScaling::kBlock;
  d.max_tokens = p.max_tokens;
  d.token_align = 4;
  d.workspace_bytes = kWorkspace;
  LtGemm gemm(lt.get(), d);
  for (int64_t end : gemm.bucket_ends()) EXPECT_EQ(end % 4, 0);
  EXPECT_EQ(gemm.bucket_ends().back(), 64);
  Tensor ws = Tensor::empty({static_cast<int64_t>(kWorkspace)}, DType::kU8, Device::cuda(0));
  const int64_t nb = p.n / 128, kb = p.k / 128, w_ld = quant::fp8_scale_ld(kb);
  for (int64_t t : {4, 8, 12, 64}) {
    SCOPED_TRACE(::testing::Message() << "T = " << t);
    const Operands o = make_operands(p, t, DType::kE4M3, 20 + t);
    std::vector<float> ws_host(nb * w_ld, -1.0f), xs_host(kb * t);  // padding never read
    for (int64_t i = 0; i < nb; ++i) {
      for (int64_t j = 0; j < kb; ++j) ws_host[i * w_ld + j] = 0.01f * (1 + i + 2 * j);
    }
    for (int64_t j = 0; j < kb; ++j) {
      for (int64_t r = 0; r < t; ++r) xs_host[j * t + r] = 0.5f + 0.25f * ((r + j) % 5);
    }
    Tensor wd = to_device(o.w), xd = to_device(o.x);
    Tensor wsd = to_device(TensorView(ws_host.data(), DType::kF32, {nb, w_ld}));
    Tensor xsd = to_device(TensorView(xs_host.data(), DType::kF32, {kb, t}));
    Tensor out = Tensor::empty({t, p.n}, DType::kF32, Device::cuda(0));
    MOE_CUDA_CHECK(cudaMemset(out.data(), 0xFF, out.nbytes()));
    GemmArgs a;
    a.w = wd.data();
    a.w_scale = wsd.data_as<float>();
    a.x = xd.data();
    a.x_scale = xsd.data_as<float>();
    a.out = out.data();
    a.tokens = t;
    a.workspace = ws.data();
    gemm.run(a, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<double> got = to_doubles(to_host(out));
    std::vector<double> want(t * p.n);
    for (int64_t r = 0; r < t; ++r) {
      for (int64_t c = 0; c < p.n; ++c) {
        double s = 0;
        for (int64_t q = 0; q < p.k; ++q) {
          s += o.xv[r * p.ld_x + q] * xs_host[(q / 128) * t + r] * o.wv[c * p.ld_w + q] *
               ws_host[(c / 128) * w_ld + q / 128];
        }
        want[r * p.n + c] = s;
      }
    }
    EXPECT_LE(relative_l2(got, want), kFp8GemmTolerance);
  }
}

// 16-bit into a bf16 output, accumulating: out = product + out, rounded once.
TEST(DenseGemm, SixteenBitAccumulatesIntoBf16) {
  MOE_REQUIRE_HOPPER();
  LtHandle lt;
  const Problem p{256, 128, 128, 128, 16};
  GemmDesc d;
  d.name = "test bf16 accumulate";
  d.w_dtype = d.x_dtype = DType::kBF16;
  d.out_dtype = DType::kBF16;
  d.n = p.n;
  d.k = p.k;
  d.ld_w = p.ld_w;
  d.ld_x = p.ld_x;
  d.ld_out = p.n;
  d.max_tokens = p.max_tokens;
  d.workspace_bytes = kWorkspace;
  LtGemm gemm(lt.get(), d);
  Tensor ws = Tensor::empty({static_cast<int64_t>(kWorkspace)}, DType::kU8, Device::cuda(0));
  const int64_t t = 7;
  const Operands o = make_operands(p, t, DType::kBF16, 4);
  Tensor base = Tensor::empty({t, p.n}, DType::kBF16);
  fill_normal(base, 5);
  const std::vector<double> base_v = to_doubles(base);
  Tensor wd = to_device(o.w), xd = to_device(o.x), out = to_device(base);
  GemmArgs a;
  a.w = wd.data();
  a.x = xd.data();
  a.out = out.data();
  a.tokens = t;
  a.accumulate = true;
  a.workspace = ws.data();
  gemm.run(a, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<double> got = to_doubles(to_host(out));
  std::vector<double> want(t * p.n);
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t c = 0; c < p.n; ++c) {
      double s = base_v[r * p.n + c];
      for (int64_t q = 0; q < p.k; ++q) s += o.xv[r * p.k + q] * o.wv[c * p.k + q];
      want[r * p.n + c] = s;
    }
  }
  EXPECT_LE(relative_l2(got, want), 5e-3);
}

TEST(DenseGemm, PerTensorFp8AgainstFloat64) {
  MOE_REQUIRE_HOPPER();
  LtHandle lt;
  const Problem p{256, 512, 512, 512, 16};
  GemmDesc d;
  d.name = "test fp8 scalar";
  d.w_dtype = d.x_dtype = DType::kE4M3;
  d.out_dtype = DType::kF32;
  d.n = p.n;
  d.k = p.k;
  d.ld_w = p.ld_w;
  d.ld_x = p.ld_x;
  d.ld_out = p.n;
  d.scaling = GemmScaling::kScalar;
  d.max_tokens = p.max_tokens;
  d.token_align = 4;
  d.workspace_bytes = kWorkspace;
  LtGemm gemm(lt.get(), d);
  Tensor ws = Tensor::empty({static_cast<int64_t>(kWorkspace)}, DType::kU8, Device::cuda(0));
  const int64_t t = 8;
  const Operands o = make_operands(p, t, DType::kE4M3, 3);
  const std::vector<float> x_scale = {0.125f};
  Tensor wd = to_device(o.w), xd = to_device(o.x);
  Tensor xsd = to_device(TensorView(const_cast<float*>(x_scale.data()), DType::kF32, {1}));
  Tensor out = Tensor::empty({t, p.n}, DType::kF32, Device::cuda(0));
  GemmArgs a;
  a.w = wd.data();
  a.x = xd.data();
  a.x_scale = xsd.data_as<float>();  // the weight's scale stays 1
  a.out = out.data();
  a.tokens = t;
  a.workspace = ws.data();
  gemm.run(a, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<double> got = to_doubles(to_host(out));
  std::vector<double> want(t * p.n);
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t c = 0; c < p.n; ++c) {
      double s = 0;
      for (int64_t q = 0; q < p.k; ++q) s += o.xv[r * p.k + q] * o.wv[c * p.k + q];
      want[r * p.n + c] = s * x_scale[0];
    }
  }
  EXPECT_LE(relative_l2(got, want), kFp8GemmTolerance);
}

// cuBLASLt's block-scaling preconditions are checked up front, with messages naming the GEMM.
TEST(DenseGemm, BlockScalingChecksItsPreconditions) {
  MOE_REQUIRE_HOPPER();
  LtHandle lt;
  GemmDesc d;
  d.name = "test block preconditions";
  d.w_dtype = d.x_dtype = DType::kE4M3;
  d.n = d.k = d.ld_w = d.ld_x = d.ld_out = 256;
  d.scaling = GemmScaling::kBlock;
  d.max_tokens = 8;
  d.token_align = 4;
  d.workspace_bytes = kWorkspace;
  GemmDesc odd_tokens = d;
  odd_tokens.token_align = 2;  // the 1x128 scales' leading dimension must be a multiple of 4
  EXPECT_THROW(LtGemm(lt.get(), odd_tokens), Error);
  GemmDesc odd_n = d;
  odd_n.n = 254;
  EXPECT_THROW(LtGemm(lt.get(), odd_n), Error);

  LtGemm gemm(lt.get(), d);
  Tensor ws = Tensor::empty({static_cast<int64_t>(kWorkspace)}, DType::kU8, Device::cuda(0));
  Tensor scales = Tensor::empty({64}, DType::kF32, Device::cuda(0));
  GemmArgs a;
  a.tokens = 4;
  a.workspace = ws.data();
  EXPECT_THROW(gemm.run(a, nullptr), Error);  // no scale tensors
  a.w_scale = a.x_scale = scales.data_as<float>();
  a.workspace = ws.data_as<uint8_t>() + 16;  // cuBLASLt wants 256-byte alignment
  EXPECT_THROW(gemm.run(a, nullptr), Error);
}

TEST(DenseGemm, RejectsTokenCountsOutsideThePlan) {
  MOE_REQUIRE_HOPPER();
  LtHandle lt;
  GemmDesc d;
  d.name = "test";
  d.n = 64;
  d.k = 64;
  d.ld_w = d.ld_x = 64;
  d.ld_out = 64;
  d.max_tokens = 8;
  d.token_align = 4;
  d.workspace_bytes = kWorkspace;
  d.w_dtype = d.x_dtype = DType::kE4M3;
  d.scaling = GemmScaling::kScalar;
  LtGemm gemm(lt.get(), d);
  GemmArgs a;
  a.tokens = 6;  // not a multiple of 4
  EXPECT_THROW(gemm.run(a, nullptr), Error);
  a.tokens = 12;  // over max_tokens
  EXPECT_THROW(gemm.run(a, nullptr), Error);
}

}  // namespace
}  // namespace moe::dense
