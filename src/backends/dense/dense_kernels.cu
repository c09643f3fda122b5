// The dense backend's activation and finalize kernels (contract in dense_kernels.h).
//
// activation_kernel: grid (column chunks of 128, rows); thread j of a block owns one
// intermediate column. Per row:
//   1. w   = the row's routing weight for the column's segment (0 past the routed tokens);
//   2. h   = act(g, u) from the f32 FC1 output (skipped where w == 0);
//   3. out = act_dtype(w * h)                              (kAct16)
//          | e4m3(h / s_d), scale s_d * w                   (kFp8PerTensor)
//          | e4m3(h / s), s from the chunk's amax, scale s * w   (kFp8Block)
// For fp8 a chunk is exactly one 1x128 group of one segment (segments are multiples of 128),
// so w is uniform in the block and the group's scale is written once. The e4m3 encoding and
// the scale formula are quant/fp8_quant_kernels.h's, bit for bit the CPU quantizers on the
// same h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backends/dense/dense_kernels.h"
#include "core/launch.cuh"
#include "moe/errors.h"
#include "quant/fp8_quant_kernels.h"

namespace moe::dense {
namespace {

constexpr int kChunk = quant::kFp8GroupSize;  // columns per block = threads per block
constexpr int kWarps = kChunk / 32;
constexpr int64_t kMaxGridY = 65535;

template <class T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return __float2half_rn(v);
  }
}

template <class T>
__device__ __forceinline__ float to_float(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return __half2float(v);
  }
}

/// The routing weight of `row` for segment `seg` (sum over its k slots; 1 for shared).
__device__ __forceinline__ float segment_weight(const ActivationParams& p, int64_t row, int seg) {
  if (seg == p.num_experts) return p.with_shared ? 1.0f : 0.0f;
  if (!p.with_routed) return 0.0f;
  float w = 0.0f;
  const int32_t* ids = p.topk_ids + row * p.top_k;
  const float* weights = p.topk_weights + row * p.top_k;
  for (int k = 0; k < p.top_k; ++k) {
    if (ids[k] == p.expert_begin + seg) w += weights[k];
  }
  return w;
}

__device__ __forceinline__ float gated(float g, float u, const ActivationParams& p) {
  if (p.activation == Activation::kSwiGLUOAI) {
    const float limit = p.oai.limit;
    g = fminf(g, limit);
    u = fminf(fmaxf(u, -limit), limit);
    return (u + 1.0f) * g / (1.0f + expf(-p.oai.alpha * g));
  }
  return g / (1.0f + expf(-g)) * u;
}

/// Max over the block's 128 threads (all threads call it).
__device__ __forceinline__ float block_max(float v, float* smem) {
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, off));
  if (threadIdx.x % 32 == 0) smem[threadIdx.x / 32] = v;
  __syncthreads();
  float m = smem[0];
#pragma unroll
  for (int i = 1; i < kWarps; ++i) m = fmaxf(m, smem[i]);
  __syncthreads();  // smem is reused by the next row
  return m;
}

template <IntermediateFormat kFormat, class ActT>
__global__ void __launch_bounds__(kChunk)
    activation_kernel(ActivationParams p, int64_t col_begin, int64_t col_end) {
  __shared__ float smem[kWarps];
  const int64_t j = col_begin + static_cast<int64_t>(blockIdx.x) * kChunk + threadIdx.x;
  const bool valid = j < col_end;
  const int64_t routed_cols = p.num_experts * p.inter;
  const int seg = j < routed_cols ? static_cast<int>(j / p.inter) : p.num_experts;
  const int64_t i = j < routed_cols ? j - seg * p.inter : j - routed_cols;
  const int64_t seg_inter = seg < p.num_experts ? p.inter : p.shared_inter;
  const int64_t gate_col = (seg < p.num_experts ? 2 * seg * p.inter : 2 * routed_cols) + i;
  const int64_t up_col = gate_col + seg_inter;
  const int64_t group = j / kChunk;  // fp8: the column's 1x128 group in K2

  for (int64_t row = blockIdx.y; row < p.rows; row += gridDim.y) {
    const float w = valid && row < p.tokens ? segment_weight(p, row, seg) : 0.0f;
    float h = 0.0f;
    if (w != 0.0f) {
      const float* fc1 = p.fc1_out + row * p.n1;
      float g = fc1[gate_col], u = fc1[up_col];
      if (p.gate_scale != nullptr) {
        g *= p.gate_scale[seg];
        u *= p.up_scale[seg];
      }
      if (p.bias13 != nullptr) {
        g += p.bias13[gate_col];
        u += p.bias13[up_col];
      }
      h = gated(g, u, p);
    }
    if constexpr (kFormat == IntermediateFormat::kAct16) {
      if (valid) static_cast<ActT*>(p.out)[row * p.k2 + j] = from_float<ActT>(w * h);
    } else {
      float s;
      if constexpr (kFormat == IntermediateFormat::kFp8PerTensor) {
        s = *p.intermediate_scale;
      } else {
        s = quant::device::fp8_group_scale(block_max(fabsf(h), smem), false);
      }
      if (valid) {
        static_cast<uint8_t*>(p.out)[row * p.k2 + j] =
            w != 0.0f ? quant::device::float_to_e4m3(__fdiv_rn(h, s)) : uint8_t{0};
      }
      // NOTE: w is uniform over the chunk (one segment per 1x128 group).
      if (threadIdx.x == 0) p.out_scales[group * p.rows + row] = w != 0.0f ? s * w : 0.0f;
    }
  }
}

template <class ActT>
__global__ void finalize_kernel(FinalizeParams p) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= p.hidden) return;
  for (int64_t row = blockIdx.y; row < p.tokens; row += gridDim.y) {
    float v = p.y[row * p.hidden + c];
    if (p.bias2 != nullptr && p.with_routed) {
      for (int k = 0; k < p.top_k; ++k) {
        const int e = p.topk_ids[row * p.top_k + k] - p.expert_begin;
        if (e >= 0 && e < p.num_experts) {
          v += p.topk_weights[row * p.top_k + k] * p.bias2[e * p.hidden + c];
        }
      }
    }
    ActT* out = static_cast<ActT*>(p.out) + row * p.hidden + c;
    if (p.accumulate) v += to_float(*out);
    *out = from_float<ActT>(v);
  }
}

unsigned grid_y(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(rows, 1), kMaxGridY));
}

template <class Fn>
void dispatch_act(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kBF16:
      fn(__nv_bfloat16{});
      break;
    case DType::kF16:
      fn(__half{});
      break;
    default:
      MOE_THROW("dense: activation dtype must be bf16 or f16, got ", dtype_name(dtype));
  }
}

}  // namespace

void launch_dense_activation(const ActivationParams& p, int64_t col_begin, int64_t col_end,
                             cudaStream_t stream) {
  MOE_CHECK(col_begin >= 0 && col_begin <= col_end && col_end <= p.k2,
            "dense activation: columns [", col_begin, ", ", col_end, ") outside [0, ", p.k2, ")");
  if (p.rows == 0 || col_begin == col_end) return;
  const bool fp8 = p.format != IntermediateFormat::kAct16;
  MOE_CHECK(!fp8 || (col_begin % kChunk == 0 && p.inter % kChunk == 0 &&
                     p.shared_inter % kChunk == 0 && p.out_scales != nullptr),
            "dense activation: fp8 intermediates need 128-aligned segments and a scale buffer");
  LaunchOptions o;
  o.grid = dim3(static_cast<unsigned>((col_end - col_begin + kChunk - 1) / kChunk), grid_y(p.rows));
  o.block = dim3(kChunk);
  o.stream = stream;
  switch (p.format) {
    case IntermediateFormat::kAct16:
      dispatch_act(p.act_dtype, [&](auto tag) {
        launch_kernel("dense activation_kernel",
                      activation_kernel<IntermediateFormat::kAct16, decltype(tag)>, o, p, col_begin,
                      col_end);
      });
      break;
    case IntermediateFormat::kFp8PerTensor:
      launch_kernel("dense activation_kernel",
                    activation_kernel<IntermediateFormat::kFp8PerTensor, float>, o, p, col_begin,
                    col_end);
      break;
    case IntermediateFormat::kFp8Block:
      launch_kernel("dense activation_kernel",
                    activation_kernel<IntermediateFormat::kFp8Block, float>, o, p, col_begin,
                    col_end);
      break;
  }
}

void launch_dense_finalize(const FinalizeParams& p, cudaStream_t stream) {
  if (p.tokens == 0) return;
  constexpr int kThreads = 256;
  LaunchOptions o;
  o.grid = dim3(static_cast<unsigned>((p.hidden + kThreads - 1) / kThreads), grid_y(p.tokens));
  o.block = dim3(kThreads);
  o.stream = stream;
  dispatch_act(p.act_dtype, [&](auto tag) {
    launch_kernel("dense finalize_kernel", finalize_kernel<decltype(tag)>, o, p);
  });
}

}  // namespace moe::dense
