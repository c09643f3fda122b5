// The reference backend's quant methods: one per QuantMode, behind one interface. A quant
// method owns, for its mode:
//   - the layout: each projection W [rows, cols] (rows = output features) is kept exactly in
//     checkpoint format (include/moe/weights.h), one tensor per part:
//       mode             weight            scale                                global / input
//       bf16, fp16       bf16 / f16        -                                    -
//       fp8_per_tensor   e4m3              f32 [1]                              - / f32 [1]
//       fp8_block        e4m3              f32 [ceil(rows/128), ceil(cols/128)] -
//       nvfp4            e2m1              e4m3scale [rows, cols/16]            f32 [1] / -
//       mxfp4, w4a8      e2m1              ue8m0 [rows, cols/32]                -
//     plus an optional bias f32 [rows] (a bf16 bias in the checkpoint is widened to f32);
//   - loading with exact dtype/shape checks (the error names expert_tensor_name(...), the
//     expected and the received tensor), including the split of a fused gate_up_proj;
//   - validation of the loaded values;
//   - exact dequantization of a weight row to double;
//   - emulation of the activation quantization a GPU kernel of this mode does: the layer
//     input (quantize_input) and the FC1 -> FC2 intermediate.
//
// Fused gate_up_proj (LoadMode::kFusedGateUpProj): every part of kGateUp is the
// concatenation along dim 0 of the gate part and the up part: weight [2I, H], row-blocked
// scales [2 * blocks(I), ...] (fp8_block needs I % 128 == 0 for the split), per-tensor f32
// parts [2] = (gate, up) -- a single [1] value, shared by gate and up, is accepted too --
// and bias [2I].
//
// Static activation scales (fp8_per_tensor): the layer input is quantized with the max of
// the gate/up input_scale, the intermediate with the max of the down input_scale, both
// over every expert this rank runs (its local experts and the shared MLP).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/backend.h"
#include "moe/config.h"
#include "moe/tensor.h"
#include "moe/weights.h"

namespace moe {

/// One projection W [rows, cols] in checkpoint format. Undefined tensors are parts the mode
/// does not use.
struct RefProjWeights {
  int64_t rows = 0;
  int64_t cols = 0;
  Tensor weight;        // [rows, cols] in the mode's weight dtype
  Tensor scale;         // see the table above
  Tensor global_scale;  // nvfp4: f32 [1], the dequantization factor (weight_scale_2)
  Tensor input_scale;   // fp8_per_tensor: f32 [1], static scale of this projection's input
  Tensor bias;          // f32 [rows] when the layer has biases
};

/// The three projections of a routed expert or of the shared MLP.
struct RefExpertWeights {
  int expert = 0;       // global expert id, or kSharedExpert
  RefProjWeights gate;  // W1 [I, H]
  RefProjWeights up;    // W3 [I, H]
  RefProjWeights down;  // W2 [H, I]
};

/// The buffers quantize_input writes (undefined for modes that pass x through).
struct RefInputBuffers {
  Tensor data;    // e4m3 [max_tokens, H]
  Tensor scales;  // mode-specific, sized for max_tokens
};

class ReferenceQuantMethod {
 public:
  explicit ReferenceQuantMethod(const MoeConfig& config) : config_(config) {}
  virtual ~ReferenceQuantMethod() = default;
  ReferenceQuantMethod(const ReferenceQuantMethod&) = delete;
  ReferenceQuantMethod& operator=(const ReferenceQuantMethod&) = delete;

  QuantMode mode() const { return config_.quant; }

  // ---- Weights -------------------------------------------------------------------------
  /// Allocates the checkpoint-format tensors of W [rows, cols] (+ an f32 bias when asked).
  RefProjWeights create(int64_t rows, int64_t cols, bool with_bias) const;
  /// Reads projection `proj` (kGate, kUp or kDown) of `expert` from `source` into `dst`
  /// (created by create()); throws moe::Error naming the tensor unless every part has
  /// exactly the expected dtype and shape.
  void load(WeightSource& source, int expert, Proj proj, RefProjWeights& dst) const;
  /// Reads kGateUp [2I, H] of `expert` and splits every part into `gate` and `up`.
  void load_fused_gate_up(WeightSource& source, int expert, RefProjWeights& gate,
                          RefProjWeights& up) const;
  /// Checks loaded values: scales finite and > 0 (NVFP4 block scales >= 0), weights and
  /// biases free of NaN/Inf. Throws moe::Error naming the tensor and the element's index.
  void validate(const RefProjWeights& w, int expert, Proj proj) const;
  /// Row `row` of W dequantized exactly to double: out [cols] = q * scale (* global scale).
  virtual void dequantize_row(const RefProjWeights& w, int64_t row, double* out) const = 0;

  // ---- Activations ----------------------------------------------------------------------
  /// Sets the static activation scales from the loaded experts this rank runs.
  virtual void set_activation_scales(const std::vector<const RefExpertWeights*>& experts) {}
  /// Allocates quantize_input's output for up to `max_tokens` rows of `hidden` elements.
  virtual RefInputBuffers create_input_buffers(int64_t max_tokens, int64_t hidden) const;
  /// x act_dtype [T, H] -> the input run_moe consumes; views of x or of `buffers`.
  virtual QuantizedInput quantize_input(const TensorView& x, RefInputBuffers& buffers) const;
  /// Throws moe::Error unless `x` has the dtypes and shapes of this mode's input [T, hidden].
  virtual void check_input(const QuantizedInput& x, int64_t hidden) const;
  /// Row t of the (quantized) input, exactly as a GEMM sees it: out [H] in double.
  virtual void dequantize_input_row(const QuantizedInput& x, int64_t t, double* out) const;
  /// Emulates the quantization of the intermediate h [n] (one token) before FC2: h is
  /// rounded to float, quantized as the GPU kernel does, and dequantized into out [n].
  virtual void quantize_intermediate(const double* h, int64_t n, double* out) const;

 protected:
  /// Where a part's tensor lives and what shape it has for W [rows, cols].
  struct PartLayout {
    Part part;
    DType dtype;
    std::vector<int64_t> shape;
    /// Weight rows covered by one index of dim 0; 0 for a per-tensor f32 [1] value.
    int64_t rows_per_dim0;
  };
  /// The parts this mode stores for W [rows, cols], the weight first; the bias is common.
  virtual std::vector<PartLayout> layouts(int64_t rows, int64_t cols) const = 0;

  const MoeConfig& config() const { return config_; }

 private:
  MoeConfig config_;
};

/// The reference quant method of config.quant (the one dispatch point over modes).
std::unique_ptr<ReferenceQuantMethod> make_reference_quant_method(const MoeConfig& config);

}  // namespace moe
