// Router: owns the router tensors of one layer and routes on its device.
//
// load(source) copies, in this order and each right after it is handed out (a source's view
// is valid only until its next call):
//   router_weight()    bf16/f32 [E, H], optional (without it the caller passes logits);
//                      kept in its dtype
//   router_bias()      f32/bf16 [E], stored as f32; required when the source has a router
//                      weight and config.has_router_bias, refused when the config has none
//   correction_bias()  f32 [E]; required iff routing.method is kDeepSeekV3 and
//                      routing.has_correction_bias, refused otherwise
// Every check runs before anything is replaced, so a failed load leaves the router as it was.
// On a CUDA device the checked host copies are then copied to the device (cudaMemcpy: load
// time only).
//
// On a CUDA device compute_logits and route run routing_cuda.h's kernels on the caller's
// stream, never synchronising; route passes the router's device error flag (allocated and
// zeroed in the constructor), which check_errors reads. A build without CUDA refuses a CUDA
// device in load, compute_logits and route.
#include "routing/router.h"

#include <cmath>
#include <cstring>

#include "moe/errors.h"
#include "quant/formats.h"
#include "routing/routing.h"

#ifdef MOE_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#include "routing/routing_cuda.h"
#endif

namespace moe {
namespace {

bool wants_correction_bias(const MoeConfig& config) {
  return config.routing.method == RoutingMethod::kDeepSeekV3 && config.routing.has_correction_bias;
}

// Throws for a device this build cannot route on.
void require_supported(Device device, const char* op) {
#ifdef MOE_HAVE_CUDA
  MOE_CHECK(device.is_cpu() || device.is_cuda(), "Router::", op, " on ", device.str(),
            ": unsupported device");
#else
  MOE_CHECK(device.is_cpu(), "Router::", op, " on ", device.str(),
            ": this build has no CUDA routing kernels (only the CPU router exists)");
#endif
}

// A contiguous host copy of a 1-D or 2-D host view, in `dtype` (the view's own dtype, or f32
// from bf16/f32).
Tensor host_copy(const TensorView& v, DType dtype) {
  Tensor t = Tensor::empty(v.shape(), dtype);
  const int64_t rows = v.ndim() == 2 ? v.size(0) : 1;
  const int64_t cols = v.size(-1);
  const int64_t row_stride = v.ndim() == 2 ? v.stride(0) : 0;
  const int64_t col_stride = v.stride(-1);
  const size_t in_bytes = dtype_bytes(v.dtype(), 1);
  const size_t out_bytes = dtype_bytes(dtype, 1);
  const auto* src = static_cast<const unsigned char*>(v.data());
  auto* dst = static_cast<unsigned char*>(t.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const unsigned char* in = src + (r * row_stride + c * col_stride) * in_bytes;
      unsigned char* out = dst + (r * cols + c) * out_bytes;
      if (dtype == v.dtype()) {
        std::memcpy(out, in, in_bytes);
      } else {  // bf16 -> f32
        uint16_t bits;
        std::memcpy(&bits, in, sizeof(bits));
        const float value = fmt::bf16_to_float(bits);
        std::memcpy(out, &value, sizeof(value));
      }
    }
  }
  return t;
}

// `host` (contiguous) on `device`; `host` itself when the device is the CPU.
Tensor on_device(Tensor host, Device device) {
  if (!host.defined() || device.is_cpu()) return host;
#ifdef MOE_HAVE_CUDA
  Tensor t = Tensor::empty(host.shape(), host.dtype(), device);
  if (host.nbytes() > 0) {
    MOE_CUDA_CHECK(cudaMemcpy(t.data(), host.data(), host.nbytes(), cudaMemcpyHostToDevice),
                   "copying a router tensor to ", device.str());
  }
  return t;
#else
  MOE_THROW("Router: cannot copy to ", device.str(), " in a build without CUDA");
#endif
}

}  // namespace

Router::Router(const MoeConfig& config, Device device) : config_(config), device_(device) {
  MOE_CHECK(config.num_experts >= 1, "Router: config.num_experts = ", config.num_experts);
  MOE_CHECK(config.hidden_size >= 1, "Router: config.hidden_size = ", config.hidden_size);
  MOE_CHECK(config.top_k >= 1 && config.top_k <= config.num_experts,
            "Router: config.top_k = ", config.top_k,
            " is outside [1, num_experts = ", config.num_experts, "]");
#ifdef MOE_HAVE_CUDA
  if (device_.is_cuda()) {
    error_flag_ = Tensor::empty({1}, DType::kI32, device_);
    const int32_t zero = 0;
    MOE_CUDA_CHECK(cudaMemcpy(error_flag_.data(), &zero, sizeof(zero), cudaMemcpyHostToDevice),
                   "clearing the router's error flag on ", device_.str());
  }
#endif
}

void Router::load(WeightSource& source) {
  require_supported(device_, "load");
  const int64_t num_experts = config_.num_experts;
  const int64_t hidden = config_.hidden_size;
  const std::string from = " (from " + source.describe() + ")";

  Tensor w_gate;
  if (const TensorView w = source.router_weight(); !w.empty()) {
    MOE_CHECK(w.device().is_cpu(), "router weight must be a host tensor, got ", w.str(), from);
    MOE_CHECK(w.dtype() == DType::kBF16 || w.dtype() == DType::kF32,
              "router weight: expected bf16 or f32, got ", w.str(), from);
    MOE_CHECK(w.ndim() == 2 && w.size(0) == num_experts && w.size(1) == hidden,
              "router weight: expected [num_experts = ", num_experts, ", hidden_size = ", hidden,
              "], got ", w.str(), from);
    w_gate = host_copy(w, w.dtype());
  }

  Tensor router_bias;
  if (const TensorView b = source.router_bias(); !b.empty()) {
    MOE_CHECK(config_.has_router_bias, "the source has a router bias ", b.str(),
              ", but config.has_router_bias is false", from);
    MOE_CHECK(w_gate.defined(), "the source has a router bias but no router weight", from);
    MOE_CHECK(b.device().is_cpu(), "router bias must be a host tensor, got ", b.str(), from);
    MOE_CHECK((b.dtype() == DType::kF32 || b.dtype() == DType::kBF16) && b.ndim() == 1 &&
                  b.size(0) == num_experts,
              "router bias: expected f32/bf16 [num_experts = ", num_experts, "], got ", b.str(),
              from);
    router_bias = host_copy(b, DType::kF32);
  } else {
    MOE_CHECK(!(config_.has_router_bias && w_gate.defined()),
              "config.has_router_bias is set, but the source has a router weight and no router "
              "bias (expected f32/bf16 [",
              num_experts, "])", from);
  }

  Tensor correction_bias;
  if (const TensorView c = source.correction_bias(); !c.empty()) {
    MOE_CHECK(wants_correction_bias(config_), "the source has a correction bias ", c.str(),
              ", but the config's routing (DeepSeek-V3 with has_correction_bias) uses none", from);
    MOE_CHECK(c.device().is_cpu(), "correction bias must be a host tensor, got ", c.str(), from);
    MOE_CHECK(c.dtype() == DType::kF32 && c.ndim() == 1 && c.size(0) == num_experts,
              "correction bias (e_score_correction_bias): expected f32[num_experts = ", num_experts,
              "], got ", c.str(), from);
    correction_bias = host_copy(c, DType::kF32);
    const float* values = correction_bias.data_as<const float>();
    for (int64_t e = 0; e < num_experts; ++e) {
      MOE_CHECK(std::isfinite(values[e]), "correction bias of expert ", e, " is ", values[e], from);
    }
  } else {
    MOE_CHECK(!wants_correction_bias(config_),
              "routing.has_correction_bias is set, but the source has no correction bias "
              "(e_score_correction_bias, expected f32[",
              num_experts, "])", from);
  }

  w_gate = on_device(std::move(w_gate), device_);
  router_bias = on_device(std::move(router_bias), device_);
  correction_bias = on_device(std::move(correction_bias), device_);
  w_gate_ = std::move(w_gate);
  router_bias_ = std::move(router_bias);
  correction_bias_ = std::move(correction_bias);
}

void Router::compute_logits(const TensorView& x, const TensorView& logits, void* stream) {
  require_supported(device_, "compute_logits");
  MOE_CHECK(has_weight(),
            "Router::compute_logits: no router weight is loaded (load a source that has it, or "
            "pass router logits)");
  MOE_CHECK(x.ndim() == 2 && x.size(1) == config_.hidden_size,
            "Router::compute_logits: x must be [T, hidden_size = ", config_.hidden_size, "], got ",
            x.str());
#ifdef MOE_HAVE_CUDA
  if (device_.is_cuda()) {
    router_logits_cuda(x, w_gate_, router_bias_, logits, stream);
    return;
  }
#endif
  router_logits_cpu(x, w_gate_, router_bias_, logits);
}

void Router::route(const TensorView& logits, const TensorView& topk_ids,
                   const TensorView& topk_weights, void* stream) {
  require_supported(device_, "route");
  MOE_CHECK(logits.ndim() == 2 && logits.size(1) == config_.num_experts,
            "Router::route: logits must be [T, num_experts = ", config_.num_experts, "], got ",
            logits.str());
  MOE_CHECK(!wants_correction_bias(config_) || correction_bias_.defined(),
            "Router::route: DeepSeek-V3 routing with has_correction_bias needs the correction "
            "bias; call load first");
#ifdef MOE_HAVE_CUDA
  if (device_.is_cuda()) {
    route_cuda(config_.routing, config_.top_k, logits, correction_bias_, topk_ids, topk_weights,
               error_flag_.data_as<int32_t>(), stream);
    return;
  }
#endif
  route_cpu(config_.routing, config_.top_k, logits, correction_bias_, topk_ids, topk_weights);
}

void Router::check_errors() {
  if (!error_flag_.defined()) return;  // CPU: route() has already thrown
#ifdef MOE_HAVE_CUDA
  const int32_t flag =
      read_routing_error_flag(error_flag_.data_as<int32_t>(), device_, /*clear=*/true);
  const RoutingError error = decode_routing_error(flag, config_.num_experts);
  MOE_CHECK(error.ok, "Router::check_errors on ", device_.str(), ": ", error.message());
#endif
}

}  // namespace moe
