// Whether the `dense` backend can run a layer, and why not: a pure function of the config,
// the mapping and the device, header-only so that CPU tests check every reason.
//
// The dense backend keeps every expert's weights on one GPU as two stacked matrices and runs
// them through cuBLASLt on Hopper:
//   - no expert parallelism (each rank would need every expert);
//   - bf16 / fp16 with activations of the same type; fp8_per_tensor and fp8_block (e4m3,
//     block-scaled cuBLASLt GEMMs, sm_90);
//   - rows 16-byte aligned for cuBLASLt: H, I, S multiples of 8 (16-bit) and of 128 (fp8:
//     the 1x128 activation groups and 128x128 weight blocks must not straddle an expert);
//   - every expert's weights fit in the GPU's memory.
#pragma once

#include <cstdint>
#include <string>

#include "backends/backend.h"
#include "backends/dense/dense_choice.h"
#include "moe/errors.h"

namespace moe {

/// Weight bytes the dense backend keeps for a layer (all experts + shared MLP, scales aside).
inline int64_t dense_weight_bytes(const MoeConfig& c) {
  const bool fp8 = c.quant == QuantMode::kFP8PerTensor || c.quant == QuantMode::kFP8Block;
  const int64_t elems =
      3 * static_cast<int64_t>(c.hidden_size) *
      (static_cast<int64_t>(c.num_experts) * c.intermediate_size + c.shared_intermediate_size);
  return elems * (fp8 ? 1 : 2);
}

/// The dense backend's capability check (its BackendEntry::can_implement).
inline Capability dense_can_implement(const MoeConfig& c, const Mapping& m, const DeviceInfo& d) {
  try {
    c.validate();
    m.validate();
  } catch (const Error& e) {
    return Capability::no(e.message());
  }
  if (!d.cuda_built) return Capability::no("built without CUDA");
  if (!d.has_cuda) return Capability::no("no CUDA device found");
  if (d.sm_major != 9) {
    return Capability::no(
        "needs a Hopper GPU (sm_90: cuBLASLt block-scaled FP8, tuned and tested there); found "
        "sm_" +
        std::to_string(d.sm_major) + std::to_string(d.sm_minor));
  }
  if (m.ep_size != 1) {
    return Capability::no("expert parallelism (ep_size " + std::to_string(m.ep_size) +
                          ") is not supported: dense multiplies by every expert's weights, so "
                          "each rank would need all of them");
  }
  if (!dense_supports_quant(c.quant)) {
    return Capability::no("quant mode " + std::string(quant_mode_name(c.quant)) +
                          " is not supported (dense runs bf16, fp16, fp8_per_tensor, fp8_block)");
  }
  if (c.activation != Activation::kSwiGLU && c.activation != Activation::kSwiGLUOAI) {
    return Capability::no("activation " + std::string(activation_name(c.activation)) +
                          " is not supported (swiglu, swiglu_oai)");
  }
  const bool fp8 = c.quant == QuantMode::kFP8PerTensor || c.quant == QuantMode::kFP8Block;
  if (!fp8) {
    const DType weight = c.quant == QuantMode::kFP16 ? DType::kF16 : DType::kBF16;
    if (c.act_dtype != weight) {
      return Capability::no("activations " + std::string(dtype_name(c.act_dtype)) + " with " +
                            std::string(dtype_name(weight)) +
                            " weights: cuBLASLt multiplies only like 16-bit types");
    }
  }
  const int align = fp8 ? 128 : 8;
  const char* why = fp8 ? " (e4m3 1x128 activation groups and 128x128 weight blocks must not "
                          "straddle an expert)"
                        : " (cuBLASLt needs 16-byte aligned rows)";
  auto check_multiple = [&](const char* what, int value) -> std::string {
    if (value % align == 0) return "";
    return std::string(what) + " = " + std::to_string(value) + " must be a multiple of " +
           std::to_string(align) + " for quant " + std::string(quant_mode_name(c.quant)) + why;
  };
  for (const auto& [what, value] : {std::pair<const char*, int>{"hidden_size", c.hidden_size},
                                    {"intermediate_size", c.intermediate_size},
                                    {"shared_intermediate_size", c.shared_intermediate_size}}) {
    if (std::string r = check_multiple(what, value); !r.empty()) return Capability::no(r);
  }
  if (d.memory_bytes > 0 && static_cast<size_t>(dense_weight_bytes(c)) > d.memory_bytes) {
    return Capability::no("all " + std::to_string(c.num_experts) + " experts' weights need " +
                          std::to_string(dense_weight_bytes(c) >> 20) + " MiB, the GPU has " +
                          std::to_string(d.memory_bytes >> 20) + " MiB");
  }
  return Capability::yes("every expert in two cuBLASLt GEMMs (" +
                         std::string(quant_mode_name(c.quant)) + ", Hopper)");
}

}  // namespace moe
