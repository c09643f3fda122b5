// The dense backend's quant methods: one per QuantMode it runs, behind one interface. A quant
// method owns, for its mode, the device weights in the stacked layout of dense_layout.h, how
// they are loaded from checkpoint format, the scales the GEMMs take, and the quantization of
// the layer input.
//
//   mode            W13 / W2   FC1 scaling                 FC2 scaling        intermediate
//   bf16, fp16      16-bit     none                        none               act dtype, w*h
//   fp8_per_tensor  e4m3       scalar x scale (static s_in); per-segment gate/up weight
//                              scales applied to the f32 FC1 output
//                                                          block (see below)  e4m3(h / s_d)
//   fp8_block       e4m3       block: W13 128x128 scales,  block              e4m3 1x128
//                              x 1x128 (VEC128) scales
//
// FC2 folds the routing weight into the 1x128 activation scales (scale * w per token and
// segment), so the intermediate is quantized exactly like the reference backend's (h, not
// w * h). fp8_per_tensor therefore runs FC2 block-scaled too: every 128x128 block of
// expert e's down projection gets its per-tensor scale.
//
// Block scale tensors (cuBLASLt BLK128x128_32F): f32 [rows / 128, fp8_scale_ld(cols / 128)]
// row-major. W2's depend on the K range a call uses, so there is one per variant.
// Static activation scales (fp8_per_tensor): s_in = max gate/up input_scale, s_d = max down
// input_scale, over every segment this GPU runs (as the reference backend).
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <memory>

#include "backends/backend.h"
#include "backends/dense/dense_gemm.h"
#include "backends/dense/dense_kernels.h"
#include "backends/dense/dense_layout.h"
#include "moe/config.h"
#include "moe/tensor.h"
#include "moe/weights.h"

namespace moe::dense {

/// The FC1 activation operand for one chunk of rows, as the GEMM reads it.
struct GemmInput {
  const void* data = nullptr;    // the chunk's first row of x (16-bit or e4m3), row stride H
  const float* scale = nullptr;  // per-tensor f32 [1], or 1x128 scales [H/128, rows padded to 4]
};

class DenseQuantMethod {
 public:
  /// chunk_tokens: the most tokens one pass of run_moe hands to the GEMMs (a multiple of 4).
  DenseQuantMethod(const MoeConfig& config, const DenseDims& dims, int expert_begin,
                   int64_t chunk_tokens, Device device);
  virtual ~DenseQuantMethod() = default;
  DenseQuantMethod(const DenseQuantMethod&) = delete;
  DenseQuantMethod& operator=(const DenseQuantMethod&) = delete;

  // ---- Lifecycle ----------------------------------------------------------------------
  /// Allocates the stacked weights (and biases, scales) on the device.
  void create_weights();
  /// Reads this GPU's experts and the shared MLP in checkpoint format (include/moe/weights.h)
  /// into the stacked layout; throws moe::Error naming the tensor on a wrong dtype or shape.
  void load_weights(WeightSource& source, LoadMode mode);
  /// Builds the scale tensors from what was loaded; the weights are usable from here on.
  void process_weights_after_loading();
  void pre_reload_weights() { loaded_ = false; }
  bool loaded() const { return loaded_; }

  // ---- What the GEMMs and kernels read -------------------------------------------------
  DType weight_dtype() const { return weight_dtype_; }
  /// Element type of x and of the intermediate as the GEMMs read them.
  virtual DType gemm_act_dtype() const = 0;
  virtual GemmScaling fc1_scaling() const = 0;
  virtual GemmScaling fc2_scaling() const = 0;
  virtual IntermediateFormat intermediate_format() const = 0;
  /// Token counts of the GEMMs are multiples of this (4 where 1x128 scales are laid out with
  /// the token count as their leading dimension).
  virtual int token_align() const { return 1; }
  const void* w13() const { return w13_.data(); }                                   // [N1, H]
  const void* w2() const { return w2_.data(); }                                     // [H, K2]
  const float* b13() const { return has_bias_ ? b13_.data_as<float>() : nullptr; }  // [N1]
  const float* b2() const { return has_bias_ ? b2_.data_as<float>() : nullptr; }    // [E, H]
  /// kBlock FC1: W13's block scales [N1/128, fp8_scale_ld(H/128)].
  virtual const float* w13_block_scales() const { return nullptr; }
  /// kBlock FC2: W2's block scales over the variant's K range.
  virtual const float* w2_block_scales(Variant) const { return nullptr; }
  /// fp8_per_tensor: per-segment weight scales of the gate and up projections [E + 1].
  virtual const float* gate_scales() const { return nullptr; }
  virtual const float* up_scales() const { return nullptr; }
  /// fp8_per_tensor: the intermediate's static scale s_d, device f32 [1].
  virtual const float* intermediate_scale() const { return nullptr; }

  // ---- Activations --------------------------------------------------------------------------
  /// x act_dtype [T, H] on the device -> the input run_moe consumes (views of x or of
  /// buffers sized for max_num_tokens).
  virtual QuantizedInput quantize_input(const TensorView& x, cudaStream_t stream) = 0;
  /// The FC1 operand for rows [row0, row0 + rows) of run_moe's input x [T, H] (rows <=
  /// chunk_tokens), in the order run_moe walks its chunks (row0 = 0 first). fp8 modes read
  /// rows padded to a multiple of 4 from their own buffer (x is copied there at row0 = 0 when
  /// it is not the method's own) and lay out the chunk's 1x128 scales for the GEMM.
  virtual GemmInput gemm_input(const QuantizedInput& x, int64_t row0, int64_t rows,
                               cudaStream_t stream) = 0;

 protected:
  /// Per projection, after its weight was copied: reads the mode's other parts
  /// (scales) of `proj` of `expert` (kGateUp: both halves) for segment `seg`.
  virtual void load_parts(WeightSource& source, int expert, int seg, Proj proj) {}
  /// Before the first segment of a load (resets what load_parts accumulates).
  virtual void begin_load() {}
  /// Allocates the mode's own tensors (create_weights).
  virtual void create_parts() {}
  /// Builds the mode's device tensors from what load_parts kept (process_weights_after_loading).
  virtual void process_parts() {}

  /// Checks x is a contiguous device [T, H] tensor of `dtype` with T <= max_num_tokens.
  void check_x(const TensorView& x, DType dtype, const char* what) const;
  /// Reads a per-tensor f32 part: kGateUp gives (gate, up) from f32 [2] or one shared f32 [1].
  std::array<float, 2> read_scalar_part(WeightSource& source, int expert, Proj proj,
                                        Part part) const;

  MoeConfig config_;
  DenseDims dims_;
  int expert_begin_;
  int64_t chunk_tokens_;
  Device device_;
  DType weight_dtype_;
  bool has_bias_;
  bool loaded_ = false;

 private:
  void load_segment(WeightSource& source, LoadMode mode, int seg);

  Tensor w13_, w2_, b13_, b2_;  // device
};

/// The dense quant method of config.quant (bf16, fp16, fp8_per_tensor, fp8_block).
std::unique_ptr<DenseQuantMethod> make_dense_quant_method(const MoeConfig& config,
                                                          const DenseDims& dims, int expert_begin,
                                                          int64_t chunk_tokens, Device device);

}  // namespace moe::dense
