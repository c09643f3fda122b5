// Launchers and kernels of ep_kernels.h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "comm/nccl/ep_kernels.h"
#include "comm/nccl/ep_plan.cuh"
#include "core/launch.cuh"
#include "moe/errors.h"

namespace moe::ep {
namespace {

constexpr int kCopyThreads = 256;
constexpr int kMaxCopyBlocks = 1024;
constexpr int kSumThreads = 256;

__global__ void __launch_bounds__(kPlanThreads) plan_send_kernel(PlanSendParams p) {
  plan_send_block(p);
}

// gather_rows_kernel: block-strided over destination rows; each block copies whole rows.
__global__ void __launch_bounds__(kCopyThreads) gather_rows_kernel(GatherRowsParams p) {
  const int rows = *p.num_rows;
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    const int src_row = p.src_row[row];
    for (const RowPart& part : p.parts) {
      if (part.row_bytes == 0) continue;
      copy_row(static_cast<const uint8_t*>(part.src) + src_row * part.row_bytes,
               static_cast<uint8_t*>(part.dst) + row * part.row_bytes, part.row_bytes);
    }
  }
}

template <class T>
__device__ inline float to_float(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return __half2float(v);
  }
}

template <class T>
__device__ inline T from_float(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return __float2half_rn(v);
  }
}

// sum_rows_kernel: one block per token; ranks in ascending order, fp32, one rounding.
// P: the partials' type (T or float).
template <class T, class P>
__global__ void __launch_bounds__(kSumThreads) sum_rows_kernel(SumRowsParams p) {
  const int t = blockIdx.x;
  const P* partial = static_cast<const P*>(p.partial);
  T* out = static_cast<T*>(p.out) + static_cast<size_t>(t) * p.hidden;
  const int32_t* rows = p.row_of + t * p.ep_size;
  for (int c = threadIdx.x; c < p.hidden; c += blockDim.x) {
    float acc = 0.0f;
    for (int d = 0; d < p.ep_size; ++d) {
      const int row = rows[d];
      if (row >= 0) acc += to_float(partial[static_cast<size_t>(row) * p.hidden + c]);
    }
    out[c] = from_float<T>(acc);
  }
}

template <class T>
__global__ void round_rows_kernel(const float* in, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(in[i]);
  }
}

__global__ void pad_rows_kernel(PadRowsParams p) {
  const int total = p.num_blocks * p.rows_per_block;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total * p.top_k;
       i += gridDim.x * blockDim.x) {
    const int row = i / p.top_k;
    if (row % p.rows_per_block < p.valid[row / p.rows_per_block]) continue;
    p.ids[i] = p.foreign_expert;
    p.weights[i] = 0.0f;
  }
}

}  // namespace

void launch_plan_send(const PlanSendParams& p, cudaStream_t stream) {
  MOE_CHECK(p.ep_size >= 1 && p.ep_size <= kMaxRanks, "plan_send: ep_size ", p.ep_size,
            " outside [1, ", kMaxRanks, "]");
  launch_kernel("plan_send", plan_send_kernel, {dim3(1), dim3(kPlanThreads), 0, stream}, p);
}

void launch_gather_rows(const GatherRowsParams& p, cudaStream_t stream) {
  if (p.max_rows <= 0) return;
  const int blocks = p.max_rows < kMaxCopyBlocks ? p.max_rows : kMaxCopyBlocks;
  launch_kernel("gather_rows", gather_rows_kernel, {dim3(blocks), dim3(kCopyThreads), 0, stream},
                p);
}

void launch_sum_rows(const SumRowsParams& p, DType dtype, cudaStream_t stream) {
  if (p.num_tokens <= 0) return;
  const LaunchOptions o{dim3(p.num_tokens), dim3(kSumThreads), 0, stream};
  switch (dtype) {
    case DType::kBF16:
      if (p.f32_partial)
        return launch_kernel("sum_rows", sum_rows_kernel<__nv_bfloat16, float>, o, p);
      return launch_kernel("sum_rows", sum_rows_kernel<__nv_bfloat16, __nv_bfloat16>, o, p);
    case DType::kF16:
      if (p.f32_partial) return launch_kernel("sum_rows", sum_rows_kernel<__half, float>, o, p);
      return launch_kernel("sum_rows", sum_rows_kernel<__half, __half>, o, p);
    default:
      MOE_THROW("sum_rows: output dtype ", dtype_name(dtype), " is not bf16 or f16");
  }
}

void launch_round_rows(const float* in, void* out, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t want = (n + kSumThreads - 1) / kSumThreads;
  const LaunchOptions o{dim3(static_cast<unsigned>(want < 1024 ? want : 1024)), dim3(kSumThreads),
                        0, stream};
  switch (dtype) {
    case DType::kBF16:
      return launch_kernel("round_rows", round_rows_kernel<__nv_bfloat16>, o, in,
                           static_cast<__nv_bfloat16*>(out), n);
    case DType::kF16:
      return launch_kernel("round_rows", round_rows_kernel<__half>, o, in,
                           static_cast<__half*>(out), n);
    default:
      MOE_THROW("round_rows: output dtype ", dtype_name(dtype), " is not bf16 or f16");
  }
}

void launch_pad_rows(const PadRowsParams& p, cudaStream_t stream) {
  const int total = p.num_blocks * p.rows_per_block * p.top_k;
  if (total <= 0) return;
  const int threads = 256;
  const int blocks =
      (total + threads - 1) / threads < 1024 ? (total + threads - 1) / threads : 1024;
  launch_kernel("pad_rows", pad_rows_kernel, {dim3(blocks), dim3(threads), 0, stream}, p);
}

}  // namespace moe::ep
