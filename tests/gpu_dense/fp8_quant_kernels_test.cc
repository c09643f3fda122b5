// The FP8 activation quantization kernels (quant/fp8_quant_kernels.h) against the CPU
// quantizers, bit for bit: every e4m3 rounding boundary, random rows of every input type,
// groups at the scale floor, ties, signed zeros, partial groups, both scale layouts.
#include "quant/fp8_quant_kernels.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/gpu_test_util.h"
#include "core/cuda_check.h"
#include "core/random.h"
#include "quant/formats.h"
#include "quant/quantizers.h"

namespace moe {
namespace {

using testing::to_device;
using testing::to_host;

Tensor device_f32(const std::vector<float>& v) {
  return to_device(
      TensorView(const_cast<float*>(v.data()), DType::kF32, {static_cast<int64_t>(v.size())}));
}

std::vector<float> host_floats(const Tensor& device) {
  const Tensor h = to_host(device);
  return std::vector<float>(h.data_as<float>(), h.data_as<float>() + h.numel());
}

std::vector<uint8_t> host_bytes(const Tensor& device) {
  const Tensor h = to_host(device);
  return std::vector<uint8_t>(h.data_as<uint8_t>(), h.data_as<uint8_t>() + h.nbytes());
}

/// Every float where e4m3 rounding changes its mind, with neighbours, both signs; float
/// subnormals; saturation; random bit patterns. NaN excluded: the quantizers divide first,
/// and the GPU's division returns the canonical NaN (the CPU quantizers reject NaN).
std::vector<float> encoder_cases() {
  std::vector<float> v;
  for (int code = 0; code < 0x7E; ++code) {
    const float a = fmt::e4m3_to_float(static_cast<uint8_t>(code));
    const float b = fmt::e4m3_to_float(static_cast<uint8_t>(code + 1));
    const float mid = (a + b) / 2;  // exact: e4m3 values are floats with 3 mantissa bits
    for (float x : {a, b, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  for (float x :
       {0.0f, 448.0f, 460.0f, 464.0f, 480.0f, 1e6f, 3.4e38f, std::numeric_limits<float>::infinity(),
        std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(), 1e-30f,
        0.0009765625f /* 2^-10: tie to 0 */, 0.00048828125f}) {
    v.push_back(x);
    v.push_back(-x);
  }
  for (uint64_t i = 0; v.size() < (size_t{1} << 22); ++i) {
    const uint32_t bits = static_cast<uint32_t>(mix64(i));
    const float x = std::bit_cast<float>(bits);
    if (!std::isnan(x)) v.push_back(x);
  }
  return v;
}

/// The per-tensor kernel's codes of device rows xd [rows, cols] (contiguous, `dtype`) at
/// `scale`, into an output poisoned first.
std::vector<uint8_t> quantize_per_tensor_on_device(const Tensor& xd, DType dtype, int64_t rows,
                                                   int64_t cols, float scale) {
  const Tensor sd = device_f32({scale});
  Tensor q = Tensor::empty({rows, cols}, DType::kE4M3, Device::cuda(0));
  MOE_CUDA_CHECK(cudaMemset(q.data(), 0xA5, q.nbytes()));
  quant::Fp8QuantizePerTensorParams p;
  p.x = xd.data();
  p.x_dtype = dtype;
  p.rows = rows;
  p.cols = cols;
  p.x_ld = cols;
  p.scale = sd.data_as<float>();
  p.q = q.data_as<uint8_t>();
  p.q_ld = cols;
  quant::launch_fp8_quantize_per_tensor(p, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  return host_bytes(q);
}

TEST(Fp8QuantKernels, E4m3EncoderMatchesTheCpuCodec) {
  MOE_REQUIRE_HOPPER();
  const std::vector<float> x = encoder_cases();
  const int64_t cols = 4096, rows = static_cast<int64_t>(x.size()) / cols;
  const std::vector<uint8_t> got =
      quantize_per_tensor_on_device(device_f32(x), DType::kF32, rows, cols, 1.0f);
  int64_t mismatches = 0;
  for (int64_t i = 0; i < rows * cols; ++i) {
    const uint8_t want = fmt::float_to_e4m3(x[i] / 1.0f);
    if (got[i] != want && mismatches++ < 10) {
      ADD_FAILURE() << "x = " << x[i] << " (bits " << std::hex << std::bit_cast<uint32_t>(x[i])
                    << "): got 0x" << int(got[i]) << ", want 0x" << int(want) << std::dec;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

/// Host input [rows, cols] as floats with groups of every kind: random normal, all zero,
/// below the 1e-4 scale floor, amax 448 with exact e4m3 ties and tiny negatives (-> -0),
/// large.
std::vector<float> act_cases(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<float> x(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t group = c / 128;
      const int kind = static_cast<int>((r * 7 + group) % 6);
      const float n = normal_at(stream_id(seed, 1), r * cols + c);
      float v = n;
      switch (kind) {
        case 1:
          v = 0.0f;
          break;
        case 2:
          v = n * 1e-6f;
          break;
        case 3: {
          static const float kTies[] = {1.0625f,        -1.0625f, 0.0009765625f, -0.00048828125f,
                                        -0.0009765625f, 2.5f,     13.0f,         -0.0f};
          v = c % 128 == 0 ? 448.0f : kTies[c % 8];
          break;
        }
        case 4:
          v = n * 1e4f;  // large, still finite in f16
          break;
        default:
          break;
      }
      x[r * cols + c] = v;
    }
  }
  return x;
}

/// The input stored as `dtype` on the host, and the floats a kernel reads from it.
Tensor stored_as(const std::vector<float>& x, int64_t rows, int64_t cols, DType dtype,
                 std::vector<float>& seen) {
  Tensor t = Tensor::empty({rows, cols}, dtype);
  seen.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    switch (dtype) {
      case DType::kF32:
        t.data_as<float>()[i] = x[i];
        seen[i] = x[i];
        break;
      case DType::kBF16:
        t.data_as<uint16_t>()[i] = fmt::float_to_bf16(x[i]);
        seen[i] = fmt::bf16_to_float(t.data_as<uint16_t>()[i]);
        break;
      default:
        t.data_as<uint16_t>()[i] = fmt::float_to_f16(x[i]);
        seen[i] = fmt::f16_to_float(t.data_as<uint16_t>()[i]);
        break;
    }
  }
  return t;
}

TEST(Fp8QuantKernels, Act1x128MatchesTheCpuQuantizer) {
  MOE_REQUIRE_HOPPER();
  struct Case {
    int64_t rows, cols;
    DType dtype;
    bool pow2;
  };
  for (const Case& k : {Case{1, 128, DType::kBF16, false}, Case{3, 200, DType::kBF16, false},
                        Case{64, 7168, DType::kBF16, false}, Case{17, 384, DType::kF16, false},
                        Case{9, 300, DType::kF32, false}, Case{12, 2048, DType::kBF16, true},
                        Case{5, 640, DType::kF32, true}}) {
    SCOPED_TRACE(::testing::Message() << k.rows << "x" << k.cols << " " << dtype_name(k.dtype)
                                      << (k.pow2 ? " pow2" : ""));
    const int64_t groups = (k.cols + 127) / 128, ld = quant::fp8_scale_ld(k.rows + 1);
    std::vector<float> seen;
    const Tensor xh =
        stored_as(act_cases(k.rows, k.cols, k.rows * 31 + k.cols), k.rows, k.cols, k.dtype, seen);
    std::vector<uint8_t> want_q(k.rows * k.cols);
    std::vector<float> want_s(k.rows * groups);
    quant::quantize_fp8_act_1x128(seen.data(), k.rows, k.cols, k.pow2, want_q.data(),
                                  want_s.data());

    const Tensor xd = to_device(xh);
    // With and without a device row limit (rows past it untouched: still the poison).
    for (const int64_t limit : {k.rows, (k.rows + 1) / 2}) {
      SCOPED_TRACE(::testing::Message() << "limit " << limit);
      Tensor q = Tensor::empty({k.rows, k.cols}, DType::kE4M3, Device::cuda(0));
      Tensor s = Tensor::empty({k.rows, groups}, DType::kF32, Device::cuda(0));
      Tensor sg = Tensor::empty({groups, ld}, DType::kF32, Device::cuda(0));
      Tensor lim = Tensor::empty({1}, DType::kI32, Device::cuda(0));
      const int32_t limit32 = static_cast<int32_t>(limit);
      MOE_CUDA_CHECK(cudaMemcpy(lim.data(), &limit32, 4, cudaMemcpyHostToDevice));
      MOE_CUDA_CHECK(cudaMemset(q.data(), 0xAB, q.nbytes()));
      MOE_CUDA_CHECK(cudaMemset(s.data(), 0xFF, s.nbytes()));
      MOE_CUDA_CHECK(cudaMemset(sg.data(), 0xFF, sg.nbytes()));  // NaN: padding must be zeroed
      quant::Fp8Quantize1x128Params p;
      p.x = xd.data();
      p.x_dtype = k.dtype;
      p.rows = k.rows;
      p.cols = k.cols;
      p.x_ld = k.cols;
      p.q = q.data_as<uint8_t>();
      p.q_ld = k.cols;
      p.scales = s.data_as<float>();
      p.scales_gemm = sg.data_as<float>();
      p.scales_gemm_ld = ld;
      p.pow2_scale = k.pow2;
      if (limit < k.rows) p.rows_limit = lim.data_as<int32_t>();
      quant::launch_fp8_quantize_1x128(p, nullptr);
      MOE_CUDA_CHECK(cudaDeviceSynchronize());

      const std::vector<uint8_t> got_q = host_bytes(q);
      const std::vector<float> got_s = host_floats(s), got_sg = host_floats(sg);
      for (size_t i = 0; i < want_q.size(); ++i) {
        const bool written = static_cast<int64_t>(i) / k.cols < limit;
        const uint8_t want = written ? want_q[i] : 0xAB;
        if (got_q[i] == want) continue;
        ADD_FAILURE() << "first code mismatch at " << i << ": x = " << seen[i] << ", got "
                      << int(got_q[i]) << ", want " << int(want);
        break;
      }
      for (size_t i = 0; i < want_s.size(); ++i) {
        const bool written = static_cast<int64_t>(i) / groups < limit;
        ASSERT_EQ(std::bit_cast<uint32_t>(got_s[i]),
                  written ? std::bit_cast<uint32_t>(want_s[i]) : 0xFFFFFFFFu)
            << "scale " << i;
      }
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t r = 0; r < ld; ++r) {
          // Padding rows zeroed up to ld; with a limit, nothing past it is touched.
          const uint32_t want = r >= limit && limit < k.rows ? 0xFFFFFFFFu
                                : r < k.rows ? std::bit_cast<uint32_t>(want_s[r * groups + g])
                                             : 0u;
          ASSERT_EQ(std::bit_cast<uint32_t>(got_sg[g * ld + r]), want)
              << "GEMM-layout scale (group " << g << ", row " << r << ")";
        }
      }
    }
  }
}

// Both launches: 8 elements a thread (cols a multiple of 8) and one (1,003 columns).
TEST(Fp8QuantKernels, PerTensorMatchesTheCpuQuantizer) {
  MOE_REQUIRE_HOPPER();
  for (const int64_t cols : {1000, 1003}) {
    SCOPED_TRACE("cols " + std::to_string(cols));
    const int64_t rows = 33;
    std::vector<float> seen;
    const Tensor xh = stored_as(act_cases(rows, cols, 5), rows, cols, DType::kBF16, seen);
    // Keep the inputs in range of the static scale (the huge groups saturate, on purpose).
    const float scale = 6.0f / 448.0f;
    std::vector<uint8_t> want(rows * cols);
    quant::quantize_fp8_per_tensor(seen.data(), rows * cols, scale, want.data());
    const std::vector<uint8_t> got =
        quantize_per_tensor_on_device(to_device(xh), DType::kBF16, rows, cols, scale);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size()), 0);
  }
}

TEST(Fp8QuantKernels, ScalesToGemmLayout) {
  MOE_REQUIRE_HOPPER();
  const int64_t rows = 7, groups = 5, ld = 8;
  std::vector<float> s(rows * groups);
  for (size_t i = 0; i < s.size(); ++i) s[i] = 1.0f + static_cast<float>(i);
  const Tensor sd = device_f32(s);
  Tensor out = Tensor::empty({groups, ld}, DType::kF32, Device::cuda(0));
  MOE_CUDA_CHECK(cudaMemset(out.data(), 0xFF, out.nbytes()));
  quant::launch_fp8_scales_to_gemm_layout(sd.data_as<float>(), rows, groups, out.data_as<float>(),
                                          ld, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = host_floats(out);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < ld; ++r) {
      EXPECT_EQ(got[g * ld + r], r < rows ? s[r * groups + g] : 0.0f) << g << ", " << r;
    }
  }
}

}  // namespace
}  // namespace moe
