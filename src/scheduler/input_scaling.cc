#include "scheduler/input_scaling.h"

#include "moe/errors.h"
#include "quant/formats.h"

namespace moe {

void apply_weight_on_input_cpu(const TensorView& x, const TensorView& topk_weights,
                               const TensorView& out) {
  MOE_CHECK(x.device().is_cpu(), "apply_weight_on_input_cpu: x is on ", x.device().str());
  MOE_CHECK(topk_weights.ndim() == 2 && topk_weights.size(1) == 1,
            "applying the routing weight on the input needs top_k == 1, got weights ",
            topk_weights.str());
  MOE_CHECK(x.dtype() == out.dtype() && x.numel() == out.numel(), "scaled input ", out.str(),
            " does not match x ", x.str());
  const int64_t t_count = x.size(0), h = x.size(1);
  float* w = topk_weights.data_as<float>();
  const auto* in = x.data_as<const uint16_t>();
  auto* o = out.data_as<uint16_t>();
  const bool bf16 = x.dtype() == DType::kBF16;
  MOE_CHECK(bf16 || x.dtype() == DType::kF16, "apply_weight_on_input_cpu: x must be bf16/f16, got ",
            x.str());
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t i = 0; i < h; ++i) {
      const float v =
          (bf16 ? fmt::bf16_to_float(in[t * h + i]) : fmt::f16_to_float(in[t * h + i])) * w[t];
      o[t * h + i] = bf16 ? fmt::float_to_bf16(v) : fmt::float_to_f16(v);
    }
    w[t] = 1.0f;
  }
}

void apply_weight_on_input(const TensorView& x, const TensorView& topk_weights,
                           const TensorView& out, void* stream) {
  if (x.device().is_cpu()) return apply_weight_on_input_cpu(x, topk_weights, out);
#ifdef MOE_HAVE_CUDA
  apply_weight_on_input_cuda(x, topk_weights, out, stream);
#else
  MOE_THROW("apply_weight_on_input: x is on ", x.device().str(), " but the library has no CUDA");
#endif
}

}  // namespace moe
