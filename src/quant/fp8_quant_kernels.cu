// FP8 activation quantization kernels (contract in fp8_quant_kernels.h).
//
// 1x128 kernel: one warp per (row, 128-column group); each lane holds 4 consecutive
// elements, the group's amax is a warp max (exact: max does not round), then every lane
// divides and encodes its own elements. Warps of a block cover consecutive groups of one row.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "core/launch.cuh"
#include "moe/errors.h"
#include "quant/fp8_quant_kernels.h"

namespace moe::quant {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kElemsPerLane = kFp8GroupSize / 32;
static_assert(kElemsPerLane == 4, "device::quantize_lane4_1x128");

template <class T>
__device__ __forceinline__ float load_as_float(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return *p;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(*p);
  } else {
    return __half2float(*p);
  }
}

/// Four consecutive elements in one load (vectorized launches: 4-element aligned rows).
__device__ __forceinline__ void load4(const float* p, float (&v)[4]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
}
template <class T>
__device__ __forceinline__ void load4(const T* p, float (&v)[4]) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = load_as_float(e + i);
}

/// One warp quantizes group `group` of row `row`: inputs x [rows, cols] (ld x_ld). Vectorized
/// launches (4-element aligned rows of x and q) load 4 elements and store 4 codes at once.
template <class T>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    quantize_1x128_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t x_ld,
                          uint8_t* __restrict__ q, int64_t q_ld, float* __restrict__ scales,
                          float* __restrict__ scales_gemm, int64_t scales_gemm_ld,
                          int64_t padded_rows, int64_t num_groups, bool pow2_scale,
                          const int32_t* __restrict__ rows_limit, bool vectorized,
                          bool dependents_at_start) {
  const int lane = threadIdx.x % 32;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  // Programmatic dependent launch: the inputs after the previous kernel; the next kernel's
  // launch (e.g. the grouped GEMM's early weight loads) once this one is past its wait, or at
  // its start (dependents_at_start).
  if (dependents_at_start) pdl_launch_dependents();
  pdl_wait();
  pdl_launch_dependents();
  if (group >= num_groups) return;
  if (rows_limit != nullptr) {
    const int64_t limit = *rows_limit;
    if (limit < rows) rows = limit;
    if (limit < padded_rows) padded_rows = limit;
  }
  for (int64_t row = blockIdx.y; row < padded_rows; row += gridDim.y) {
    if (row >= rows) {
      // Padding columns of the GEMM layout.
      if (lane == 0 && scales_gemm != nullptr) scales_gemm[group * scales_gemm_ld + row] = 0.0f;
      continue;
    }
    const int64_t c0 = group * kFp8GroupSize + lane * kElemsPerLane;
    float v[kElemsPerLane];
    const bool whole = vectorized && c0 + kElemsPerLane <= cols;
    if (whole) {
      load4(x + row * x_ld + c0, v);
    } else {
#pragma unroll
      for (int i = 0; i < kElemsPerLane; ++i) {
        v[i] = c0 + i < cols ? load_as_float(x + row * x_ld + c0 + i) : 0.0f;
      }
    }
    float s;
    const uint32_t packed =
        device::quantize_lane4_1x128<!std::is_same_v<T, float>>(v, pow2_scale, s);
    if (whole) {
      *reinterpret_cast<uint32_t*>(q + row * q_ld + c0) = packed;
    } else {
#pragma unroll
      for (int i = 0; i < kElemsPerLane; ++i) {
        if (c0 + i < cols) q[row * q_ld + c0 + i] = static_cast<uint8_t>(packed >> (8 * i));
      }
    }
    if (lane == 0) {
      if (scales != nullptr) scales[row * num_groups + group] = s;
      if (scales_gemm != nullptr) scales_gemm[group * scales_gemm_ld + row] = s;
    }
  }
}

/// Eight consecutive elements in one 16-byte load (two for f32).
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
template <class T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = load_as_float(e + i);
}

/// q = e4m3(x / *scale), kPerThread consecutive elements of a row chunk a thread: 8 for
/// vectorized launches (8-element aligned rows of x and q: 16-byte loads, one 8-byte store of
/// codes), else 1 (a byte store a thread ran this memory-bound kernel at a third of DRAM's rate:
/// 504 us for DeepSeek-V3's 16384 x 7168, bench/NOTES.md twenty-sixth session).
template <class T, int kPerThread>
__global__ void quantize_per_tensor_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                           int64_t x_ld, const float* __restrict__ scale,
                                           uint8_t* __restrict__ q, int64_t q_ld) {
  static_assert(kPerThread == 1 || kPerThread == 8, "one element or 16 bytes of bf16 a thread");
  const float s = *scale;
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kPerThread;
  if (c >= cols) return;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    if constexpr (kPerThread == 1) {
      q[row * q_ld + c] =
          device::float_to_e4m3(device::div_rn(load_as_float(x + row * x_ld + c), s));
    } else {
      float v[8];
      load8(x + row * x_ld + c, v);
      uint32_t codes[2];
      device::quantize_lanes_static<8>(v, s, codes);
      *reinterpret_cast<uint2*>(q + row * q_ld + c) = make_uint2(codes[0], codes[1]);
    }
  }
}

__global__ void scales_to_gemm_layout_kernel(const float* __restrict__ scales, int64_t rows,
                                             int64_t groups, float* __restrict__ out,
                                             int64_t out_ld) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= groups * out_ld) return;
  const int64_t group = i / out_ld, row = i % out_ld;  // out [groups, out_ld]
  out[i] = row < rows ? scales[row * groups + group] : 0.0f;
}

constexpr int64_t kMaxGridY = 65535;

unsigned grid_y(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(rows, 1), kMaxGridY));
}

/// Calls fn(T*) with x cast to its element type.
template <class Fn>
void dispatch_input(DType dtype, const void* x, const char* what, Fn&& fn) {
  switch (dtype) {
    case DType::kBF16:
      fn(static_cast<const __nv_bfloat16*>(x));
      break;
    case DType::kF16:
      fn(static_cast<const __half*>(x));
      break;
    case DType::kF32:
      fn(static_cast<const float*>(x));
      break;
    default:
      MOE_THROW(what, ": input must be bf16, f16 or f32, got ", dtype_name(dtype));
  }
}

}  // namespace

void launch_fp8_quantize_1x128(const Fp8Quantize1x128Params& p, void* stream) {
  MOE_CHECK(p.rows >= 0 && p.cols > 0 && p.x_ld >= p.cols && p.q_ld >= p.cols,
            "fp8 1x128 quantization: bad shape rows ", p.rows, ", cols ", p.cols, ", x_ld ", p.x_ld,
            ", q_ld ", p.q_ld);
  MOE_CHECK(p.scales_gemm == nullptr || p.scales_gemm_ld >= p.rows,
            "fp8 1x128 quantization: scales_gemm_ld ", p.scales_gemm_ld, " < rows ", p.rows);
  const int64_t padded_rows =
      p.scales_gemm != nullptr && p.pad_scales_gemm ? p.scales_gemm_ld : p.rows;
  if (padded_rows == 0) return;
  const int64_t groups = (p.cols + kFp8GroupSize - 1) / kFp8GroupSize;
  LaunchOptions o;
  o.grid = dim3(static_cast<unsigned>((groups + kWarpsPerBlock - 1) / kWarpsPerBlock),
                grid_y(padded_rows));
  o.block = dim3(kWarpsPerBlock * 32);
  o.stream = static_cast<cudaStream_t>(stream);
  o.programmatic_dependent_launch = true;
  const size_t elem = dtype_bits(p.x_dtype) / 8;
  const bool vectorized = p.x_ld % 4 == 0 && p.q_ld % 4 == 0 &&
                          reinterpret_cast<uintptr_t>(p.x) % (4 * elem) == 0 &&
                          reinterpret_cast<uintptr_t>(p.q) % 4 == 0;
  dispatch_input(p.x_dtype, p.x, "fp8 1x128 quantization", [&](auto* x) {
    launch_kernel("quantize_1x128_kernel",
                  quantize_1x128_kernel<std::remove_cv_t<std::remove_pointer_t<decltype(x)>>>, o, x,
                  p.rows, p.cols, p.x_ld, p.q, p.q_ld, p.scales, p.scales_gemm, p.scales_gemm_ld,
                  padded_rows, groups, p.pow2_scale, p.rows_limit, vectorized,
                  p.dependents_at_start);
  });
}

void launch_fp8_quantize_per_tensor(const Fp8QuantizePerTensorParams& p, void* stream) {
  MOE_CHECK(p.rows >= 0 && p.cols > 0 && p.x_ld >= p.cols && p.q_ld >= p.cols,
            "fp8 per-tensor quantization: bad shape rows ", p.rows, ", cols ", p.cols);
  MOE_CHECK(p.scale != nullptr, "fp8 per-tensor quantization: no scale");
  if (p.rows == 0) return;
  constexpr int kThreads = 256;
  const bool vectorized = p.cols % 8 == 0 && p.x_ld % 8 == 0 && p.q_ld % 8 == 0 &&
                          reinterpret_cast<uintptr_t>(p.x) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(p.q) % 8 == 0;
  const int64_t per_thread = vectorized ? 8 : 1;
  const int64_t threads = (p.cols + per_thread - 1) / per_thread;
  LaunchOptions o;
  o.grid = dim3(static_cast<unsigned>((threads + kThreads - 1) / kThreads), grid_y(p.rows));
  o.block = dim3(kThreads);
  o.stream = static_cast<cudaStream_t>(stream);
  dispatch_input(p.x_dtype, p.x, "fp8 per-tensor quantization", [&](auto* x) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(x)>>;
    launch_kernel("quantize_per_tensor_kernel",
                  vectorized ? quantize_per_tensor_kernel<T, 8> : quantize_per_tensor_kernel<T, 1>,
                  o, x, p.rows, p.cols, p.x_ld, p.scale, p.q, p.q_ld);
  });
}

void launch_fp8_scales_to_gemm_layout(const float* scales, int64_t rows, int64_t groups, float* out,
                                      int64_t out_ld, void* stream) {
  MOE_CHECK(rows >= 0 && groups > 0 && out_ld >= rows, "fp8 scales to GEMM layout: rows ", rows,
            ", groups ", groups, ", out_ld ", out_ld);
  const int64_t n = groups * out_ld;
  if (n == 0) return;
  constexpr int kThreads = 256;
  LaunchOptions o;
  o.grid = dim3(static_cast<unsigned>((n + kThreads - 1) / kThreads));
  o.block = dim3(kThreads);
  o.stream = static_cast<cudaStream_t>(stream);
  launch_kernel("scales_to_gemm_layout_kernel", scales_to_gemm_layout_kernel, o, scales, rows,
                groups, out, out_ld);
}

}  // namespace moe::quant
