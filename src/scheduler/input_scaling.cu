// CUDA version of apply_weight_on_input (input_scaling.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/launch.cuh"
#include "moe/errors.h"
#include "scheduler/input_scaling.h"

namespace moe {
namespace {

// Block t: out[t, :] = T(x[t, :] * w[t]); then w[t] = 1 (after the block has read it).
template <class T>
__global__ void scale_rows_kernel(const T* x, float* w, T* out, int hidden) {
  const int t = blockIdx.x;
  const float s = w[t];
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    out[static_cast<int64_t>(t) * hidden + i] =
        static_cast<T>(static_cast<float>(x[static_cast<int64_t>(t) * hidden + i]) * s);
  }
  __syncthreads();
  if (threadIdx.x == 0) w[t] = 1.0f;
}

}  // namespace

void apply_weight_on_input_cuda(const TensorView& x, const TensorView& topk_weights,
                                const TensorView& out, void* stream) {
  MOE_CHECK(topk_weights.ndim() == 2 && topk_weights.size(1) == 1,
            "applying the routing weight on the input needs top_k == 1, got weights ",
            topk_weights.str());
  const int64_t t = x.size(0);
  if (t == 0) return;
  LaunchOptions o;
  o.grid = dim3(static_cast<unsigned>(t));
  o.block = dim3(256);
  o.stream = static_cast<cudaStream_t>(stream);
  const int h = static_cast<int>(x.size(1));
  switch (x.dtype()) {
    case DType::kBF16:
      return launch_kernel("scale_rows_kernel", scale_rows_kernel<__nv_bfloat16>, o,
                           x.data_as<const __nv_bfloat16>(), topk_weights.data_as<float>(),
                           out.data_as<__nv_bfloat16>(), h);
    case DType::kF16:
      return launch_kernel("scale_rows_kernel", scale_rows_kernel<__half>, o,
                           x.data_as<const __half>(), topk_weights.data_as<float>(),
                           out.data_as<__half>(), h);
    default:
      MOE_THROW("apply_weight_on_input: x must be bf16/f16, got ", x.str());
  }
}

}  // namespace moe
