// Routing on CUDA GPUs: the kernels behind Router on a CUDA device. Built only with CUDA.
//
// route_cuda matches route_cpu (routing.h) for every method: the same fp32 operations in the
// same order, ids bit for bit, weights within 1e-6 relative (bit for bit where exp agrees,
// see routing_kernels.cu). Instead of throwing on bad logit values (which would need a host
// synchronisation), it reports them through a device error flag that the caller reads when
// it chooses (Router::check_errors):
//
//   flag = 0                                           no error
//   flag = (kind << kRoutingErrorKindShift) | (token * E + expert + 1)
//
// kind 0 is a NaN logit, so a NaN at (token, expert) is exactly token * E + expert + 1. When
// several entries are bad, the flag keeps the lowest token * E + expert (over all launches
// since it was last cleared), which is the one route_cpu would name. A token with an error
// still gets defined outputs: ids in [0, E) chosen with NaN read as -inf, and weights 0.
#pragma once

#include <cstdint>
#include <string>

#include "moe/config.h"
#include "moe/tensor.h"

namespace moe {

/// Experts route_cuda handles per token (16 per lane of the warp that routes a token).
inline constexpr int kMaxCudaRoutingExperts = 512;
/// DeepSeek-V3 groups route_cuda handles when it drops groups (one group per lane).
inline constexpr int kMaxCudaRoutingGroups = 32;

/// Routes T tokens on the GPU, in one kernel launch on `stream` (none for T = 0); never
/// synchronises. logits f32 [T, E] on a CUDA device (any strides); correction_bias f32 [E]
/// contiguous on that device, given iff routing.method is kDeepSeekV3 and
/// routing.has_correction_bias, empty otherwise; topk_ids i32 [T, k] and topk_weights f32
/// [T, k] on that device (any strides). error_flag: a device int32 (0 = no error) that the
/// kernel updates as described above, or nullptr to ignore bad values. Throws moe::Error
/// for what route_cpu rejects without looking at values (shapes, dtypes, devices, k, group
/// settings), and for E > kMaxCudaRoutingExperts or more than kMaxCudaRoutingGroups groups
/// when some are dropped.
void route_cuda(const RoutingConfig& routing, int top_k, const TensorView& logits,
                const TensorView& correction_bias, const TensorView& topk_ids,
                const TensorView& topk_weights, int32_t* error_flag, void* stream);

/// logits[t, e] = sum_h x[t, h] * w_gate[e, h] (+ bias[e]) in fp32, on the GPU; never
/// synchronises. x: bf16/f16/f32 [T, H] with unit column stride; w_gate: bf16/f32 [E, H]
/// contiguous; bias: f32 [E] contiguous or empty; logits: f32 [T, E] with unit column
/// stride; all on one CUDA device. bf16 x with a bf16 weight (and f32 with f32) runs as a
/// cuBLAS GEMM (fp32 accumulation, order of the sum not specified); other combinations run a
/// SIMT kernel that converts on load.
void router_logits_cuda(const TensorView& x, const TensorView& w_gate, const TensorView& bias,
                        const TensorView& logits, void* stream);

// ---- The error flag ------------------------------------------------------------------------

inline constexpr int kRoutingErrorKindShift = 28;
inline constexpr int32_t kRoutingErrorPositionMask = (int32_t{1} << kRoutingErrorKindShift) - 1;

/// A bad value found by route_cuda, decoded from its error flag.
struct RoutingError {
  enum class Kind : int32_t {
    kNaNLogit = 0,
    kPosInfLogit = 1,
    kAllNegInfLogits = 2,         ///< under a softmax (kSoftmaxTopK, kGptOss); expert is 0
    kNonFiniteCorrectionBias = 3  ///< token is 0
  };
  bool ok = true;
  Kind kind = Kind::kNaNLogit;
  int64_t token = 0;
  int64_t expert = 0;

  /// "router logit of token 5, expert 3 is NaN", or "" when ok.
  std::string message() const {
    if (ok) return "";
    const std::string where =
        "token " + std::to_string(token) + ", expert " + std::to_string(expert);
    switch (kind) {
      case Kind::kNaNLogit:
        return "router logit of " + where + " is NaN";
      case Kind::kPosInfLogit:
        return "router logit of " + where + " is +inf";
      case Kind::kAllNegInfLogits:
        return "router logits of token " + std::to_string(token) +
               " are all -inf: the softmax is undefined";
      case Kind::kNonFiniteCorrectionBias:
        return "correction bias of expert " + std::to_string(expert) + " is not finite";
    }
    return "unknown routing error kind " + std::to_string(static_cast<int32_t>(kind));
  }
};

/// Decodes a flag value written by route_cuda for logits with `num_experts` columns.
inline RoutingError decode_routing_error(int32_t flag, int64_t num_experts) {
  RoutingError e;
  if (flag == 0 || num_experts <= 0) return e;
  e.ok = false;
  e.kind = static_cast<RoutingError::Kind>(flag >> kRoutingErrorKindShift);
  const int64_t position = (flag & kRoutingErrorPositionMask) - 1;  // token * E + expert
  e.token = position / num_experts;
  e.expert = position % num_experts;
  return e;
}

/// Waits for the device (cudaDeviceSynchronize on the flag's device), reads the flag and,
/// when `clear`, sets it back to 0. For tests and debug paths, never for the forward path.
int32_t read_routing_error_flag(int32_t* error_flag, Device device, bool clear);
/// Sets the flag to 0 on `stream` (asynchronous).
void clear_routing_error_flag(int32_t* error_flag, void* stream);

}  // namespace moe
