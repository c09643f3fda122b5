// The reference quant methods (contract in reference_quant_method.h): the common loading,
// splitting and validation driven by each mode's part layouts, then one class per mode
// with its row dequantization and activation emulation, and the one dispatch point
// make_reference_quant_method().
#include "backends/reference/reference_quant_method.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "moe/errors.h"
#include "quant/formats.h"
#include "quant/quantizers.h"

namespace moe {
namespace {

// ---- Decoding tables, built once from the codecs of quant/formats ------------------------

std::vector<float> build_table(int size, float (*decode)(uint16_t)) {
  std::vector<float> table(size);
  for (int i = 0; i < size; ++i) table[i] = decode(static_cast<uint16_t>(i));
  return table;
}

/// Value of every code of an element or scale type: 65536 entries for the 16-bit floats,
/// 256 for e4m3 / ue8m0, 16 for e2m1.
const float* decode_table(DType dtype) {
  static const std::vector<float> bf16 = build_table(1 << 16, fmt::bf16_to_float);
  static const std::vector<float> f16 = build_table(1 << 16, fmt::f16_to_float);
  static const std::vector<float> e4m3 =
      build_table(256, [](uint16_t c) { return fmt::e4m3_to_float(static_cast<uint8_t>(c)); });
  static const std::vector<float> e2m1 =
      build_table(16, [](uint16_t c) { return fmt::e2m1_to_float(static_cast<uint8_t>(c)); });
  static const std::vector<float> ue8m0 =
      build_table(256, [](uint16_t c) { return fmt::ue8m0_to_float(static_cast<uint8_t>(c)); });
  switch (dtype) {
    case DType::kBF16:
      return bf16.data();
    case DType::kF16:
      return f16.data();
    case DType::kE4M3:
    case DType::kE4M3Scale:
      return e4m3.data();
    case DType::kE2M1:
      return e2m1.data();
    case DType::kUE8M0:
      return ue8m0.data();
    default:
      MOE_UNREACHABLE("no decoding table for dtype ", dtype_name(dtype));
  }
}

/// Rounds a float to the 16-bit activation type.
float round_to_act(float x, DType act_dtype) {
  return act_dtype == DType::kBF16 ? fmt::round_bf16(x) : fmt::round_f16(x);
}

// ---- Tensors from a WeightSource ------------------------------------------------------------

std::string shape_str(DType dtype, const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

bool has_shape(const TensorView& t, DType dtype, const std::vector<int64_t>& shape) {
  if (t.dtype() != dtype || t.ndim() != static_cast<int>(shape.size())) return false;
  for (int i = 0; i < t.ndim(); ++i) {
    if (t.size(i) != shape[i]) return false;
  }
  return true;
}

/// Throws unless the source handed out a contiguous host tensor that is present.
void check_present(const TensorView& t, const std::string& name, const std::string& expected,
                   const WeightSource& source) {
  MOE_CHECK(!t.empty(), name, ": missing from ", source.describe(), " (expected ", expected, ")");
  MOE_CHECK(t.device().is_cpu() && t.is_contiguous(), name, ": expected a contiguous host tensor ",
            expected, ", got ", t.str(), " from ", source.describe());
}

void check_source_tensor(const TensorView& t, const std::string& name, DType dtype,
                         const std::vector<int64_t>& shape, const WeightSource& source) {
  const std::string expected = shape_str(dtype, shape);
  check_present(t, name, expected, source);
  MOE_CHECK(has_shape(t, dtype, shape), name, ": expected ", expected, ", got ", t.str(), " from ",
            source.describe());
}

/// Copies dst.size(0) indices of dim 0 of `src`, starting at `begin`, into `dst` (same
/// dtype and trailing dimensions).
void copy_dim0(const TensorView& src, int64_t begin, const Tensor& dst) {
  const size_t row_bytes = dst.size(0) == 0 ? 0 : dst.nbytes() / static_cast<size_t>(dst.size(0));
  std::memcpy(dst.data(), static_cast<const char*>(src.data()) + begin * row_bytes, dst.nbytes());
}

/// Reads a bias f32 or bf16 [n] into f32 values.
void read_bias(const TensorView& t, const std::string& name, int64_t n, const WeightSource& source,
               float* out) {
  const std::string expected = "f32[" + std::to_string(n) + "] or bf16[" + std::to_string(n) + "]";
  check_present(t, name, expected, source);
  MOE_CHECK(has_shape(t, DType::kF32, {n}) || has_shape(t, DType::kBF16, {n}), name, ": expected ",
            expected, ", got ", t.str(), " from ", source.describe());
  if (t.dtype() == DType::kF32) {
    std::memcpy(out, t.data(), n * sizeof(float));
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = fmt::bf16_to_float(t.data_as<uint16_t>()[i]);
  }
}

Tensor& part_tensor(RefProjWeights& w, Part part) {
  switch (part) {
    case Part::kWeight:
      return w.weight;
    case Part::kScale:
      return w.scale;
    case Part::kGlobalScale:
      return w.global_scale;
    case Part::kInputScale:
      return w.input_scale;
    case Part::kBias:
      return w.bias;
  }
  MOE_UNREACHABLE("tensor part code ", static_cast<int>(part));
}

const Tensor& part_tensor(const RefProjWeights& w, Part part) {
  return part_tensor(const_cast<RefProjWeights&>(w), part);
}

// ---- Value checks -----------------------------------------------------------------------------

std::string index_str(const Tensor& t, int64_t flat) {
  if (t.ndim() == 2) {
    return "[" + std::to_string(flat / t.size(1)) + ", " + std::to_string(flat % t.size(1)) + "]";
  }
  return "[" + std::to_string(flat) + "]";
}

/// What a value of a part must satisfy.
enum class ValueRule { kFinite, kPositive, kNonNegative };

void check_values(const Tensor& t, const std::string& name, ValueRule rule) {
  auto bad = [rule](double v) {
    switch (rule) {
      case ValueRule::kFinite:
        return !std::isfinite(v);
      case ValueRule::kPositive:
        return !(std::isfinite(v) && v > 0);
      case ValueRule::kNonNegative:
        return !(std::isfinite(v) && v >= 0);
    }
    return true;
  };
  const char* why = rule == ValueRule::kFinite     ? "must be finite"
                    : rule == ValueRule::kPositive ? "a scale must be finite and > 0"
                                                   : "a block scale must be finite and >= 0";
  const int64_t n = t.numel();
  auto fail = [&](int64_t i, double v) { MOE_THROW(name, index_str(t, i), " = ", v, ": ", why); };
  switch (t.dtype()) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) {
        if (bad(t.data_as<float>()[i])) fail(i, t.data_as<float>()[i]);
      }
      break;
    case DType::kBF16:
    case DType::kF16: {
      const float* table = decode_table(t.dtype());
      for (int64_t i = 0; i < n; ++i) {
        if (bad(table[t.data_as<uint16_t>()[i]])) fail(i, table[t.data_as<uint16_t>()[i]]);
      }
      break;
    }
    case DType::kE4M3:
    case DType::kE4M3Scale:
    case DType::kUE8M0: {
      const float* table = decode_table(t.dtype());
      for (int64_t i = 0; i < n; ++i) {
        if (bad(table[t.data_as<uint8_t>()[i]])) fail(i, table[t.data_as<uint8_t>()[i]]);
      }
      break;
    }
    case DType::kE2M1:
      break;  // every code is a finite number
    default:
      MOE_UNREACHABLE("value check of dtype ", dtype_name(t.dtype()));
  }
}

ValueRule rule_for(Part part, DType dtype) {
  if (part == Part::kWeight || part == Part::kBias) return ValueRule::kFinite;
  // NOTE: an NVFP4 block of zeros has the block scale 0.
  return dtype == DType::kE4M3Scale ? ValueRule::kNonNegative : ValueRule::kPositive;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// x act_dtype [T, H] row t -> float.
void act_row_to_float(const TensorView& x, int64_t t, float* out) {
  const float* table = decode_table(x.dtype());
  const int64_t h = x.size(1);
  const uint16_t* row = x.data_as<uint16_t>() + t * h;
  for (int64_t c = 0; c < h; ++c) out[c] = table[row[c]];
}

}  // namespace

// ---- Common weight handling ---------------------------------------------------------------------

RefProjWeights ReferenceQuantMethod::create(int64_t rows, int64_t cols, bool with_bias) const {
  RefProjWeights w;
  w.rows = rows;
  w.cols = cols;
  for (const PartLayout& l : layouts(rows, cols)) {
    part_tensor(w, l.part) = Tensor::empty(l.shape, l.dtype);
  }
  if (with_bias) w.bias = Tensor::empty({rows}, DType::kF32);
  return w;
}

void ReferenceQuantMethod::load(WeightSource& source, int expert, Proj proj,
                                RefProjWeights& dst) const {
  for (const PartLayout& l : layouts(dst.rows, dst.cols)) {
    const std::string name = expert_tensor_name(expert, proj, l.part);
    const TensorView t = source.expert_tensor(expert, proj, l.part);
    check_source_tensor(t, name, l.dtype, l.shape, source);
    const Tensor& to = part_tensor(dst, l.part);
    std::memcpy(to.data(), t.data(), to.nbytes());
  }
  if (dst.bias.defined()) {
    read_bias(source.expert_tensor(expert, proj, Part::kBias),
              expert_tensor_name(expert, proj, Part::kBias), dst.rows, source,
              dst.bias.data_as<float>());
  }
}

void ReferenceQuantMethod::load_fused_gate_up(WeightSource& source, int expert,
                                              RefProjWeights& gate, RefProjWeights& up) const {
  MOE_CHECK(gate.rows == up.rows && gate.cols == up.cols, "gate [", gate.rows, ", ", gate.cols,
            "] and up [", up.rows, ", ", up.cols, "] projections differ in shape");
  const int64_t inter = gate.rows;
  for (const PartLayout& l : layouts(2 * inter, gate.cols)) {
    const std::string name = expert_tensor_name(expert, Proj::kGateUp, l.part);
    if (l.rows_per_dim0 == 0) {
      // A per-tensor value: (gate, up), or one value shared by both.
      const TensorView t = source.expert_tensor(expert, Proj::kGateUp, l.part);
      const std::string expected = "f32[2] (gate, up) or f32[1] (shared)";
      check_present(t, name, expected, source);
      MOE_CHECK(has_shape(t, DType::kF32, {2}) || has_shape(t, DType::kF32, {1}), name,
                ": expected ", expected, ", got ", t.str(), " from ", source.describe());
      part_tensor(gate, l.part).data_as<float>()[0] = t.data_as<float>()[0];
      part_tensor(up, l.part).data_as<float>()[0] = t.data_as<float>()[t.size(0) - 1];
      continue;
    }
    MOE_CHECK(inter % l.rows_per_dim0 == 0, name, ": a fused gate_up_proj ", part_name(l.part),
              " in ", quant_mode_name(mode()), " covers ", l.rows_per_dim0,
              " rows per entry, so intermediate size ", inter, " must be a multiple of ",
              l.rows_per_dim0,
              " to split it into gate and up; load gate_proj and up_proj "
              "separately (LoadMode::kVanilla)");
    const TensorView t = source.expert_tensor(expert, Proj::kGateUp, l.part);
    check_source_tensor(t, name, l.dtype, l.shape, source);
    copy_dim0(t, 0, part_tensor(gate, l.part));
    copy_dim0(t, inter / l.rows_per_dim0, part_tensor(up, l.part));
  }
  if (gate.bias.defined()) {
    std::vector<float> bias(2 * inter);
    read_bias(source.expert_tensor(expert, Proj::kGateUp, Part::kBias),
              expert_tensor_name(expert, Proj::kGateUp, Part::kBias), 2 * inter, source,
              bias.data());
    std::copy(bias.begin(), bias.begin() + inter, gate.bias.data_as<float>());
    std::copy(bias.begin() + inter, bias.end(), up.bias.data_as<float>());
  }
}

void ReferenceQuantMethod::validate(const RefProjWeights& w, int expert, Proj proj) const {
  for (const PartLayout& l : layouts(w.rows, w.cols)) {
    check_values(part_tensor(w, l.part), expert_tensor_name(expert, proj, l.part),
                 rule_for(l.part, l.dtype));
  }
  if (w.bias.defined()) {
    check_values(w.bias, expert_tensor_name(expert, proj, Part::kBias), ValueRule::kFinite);
  }
}

// ---- Default activations: 16-bit, passed through ----------------------------------------------

RefInputBuffers ReferenceQuantMethod::create_input_buffers(int64_t, int64_t) const { return {}; }

QuantizedInput ReferenceQuantMethod::quantize_input(const TensorView& x, RefInputBuffers&) const {
  MOE_CHECK(x.ndim() == 2 && x.dtype() == config_.act_dtype && x.device().is_cpu() &&
                x.is_contiguous() && x.size(1) == config_.hidden_size,
            "quantize_input: expected a contiguous host ", dtype_name(config_.act_dtype), "[T, ",
            config_.hidden_size, "] tensor, got ", x.str());
  MOE_CHECK(x.size(0) <= config_.max_num_tokens, "quantize_input: ", x.size(0),
            " tokens exceed max_num_tokens = ", config_.max_num_tokens);
  return {x, {}};
}

void ReferenceQuantMethod::check_input(const QuantizedInput& x, int64_t hidden) const {
  const TensorView& d = x.data;
  MOE_CHECK(d.ndim() == 2 && d.dtype() == config_.act_dtype && d.size(1) == hidden,
            "input x: ", "expected ", dtype_name(config_.act_dtype), "[T, ", hidden, "] for quant ",
            quant_mode_name(mode()), ", got ", d.str());
  MOE_CHECK(x.scales.empty(), "input x: quant ", quant_mode_name(mode()),
            " takes unquantized activations, got scales ", x.scales.str());
}

void ReferenceQuantMethod::dequantize_input_row(const QuantizedInput& x, int64_t t,
                                                double* out) const {
  const float* table = decode_table(x.data.dtype());
  const int64_t h = x.data.size(1);
  const uint16_t* row = x.data.data_as<uint16_t>() + t * h;
  for (int64_t c = 0; c < h; ++c) out[c] = table[row[c]];
}

void ReferenceQuantMethod::quantize_intermediate(const double* h, int64_t n, double* out) const {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = round_to_act(static_cast<float>(h[i]), config_.act_dtype);
  }
}

namespace {

/// Shared by the modes that quantize the layer input to e4m3 rows [T, H] + scales:
/// validates x, then quantizes each row with `quantize_row(x_row_f32, t, q_row)`.
template <class QuantizeRow>
QuantizedInput quantize_rows(const TensorView& x, DType act_dtype, RefInputBuffers& buffers,
                             TensorView scales, QuantizeRow quantize_row) {
  MOE_CHECK(x.ndim() == 2 && x.dtype() == act_dtype && x.device().is_cpu() && x.is_contiguous(),
            "quantize_input: expected a contiguous host ", dtype_name(act_dtype),
            "[T, H] tensor, got ", x.str());
  const int64_t tokens = x.size(0);
  const int64_t hidden = x.size(1);
  MOE_CHECK(hidden == buffers.data.size(1), "quantize_input: x ", x.str(), " has hidden size ",
            hidden, ", the layer ", buffers.data.size(1));
  MOE_CHECK(tokens <= buffers.data.size(0), "quantize_input: ", tokens,
            " tokens exceed max_num_tokens = ", buffers.data.size(0));
  TensorView data = buffers.data.view().slice_rows(0, tokens);  // e4m3 [T, H]
  parallel_for(tokens, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> row(hidden);
    for (int64_t t = begin; t < end; ++t) {
      act_row_to_float(x, t, row.data());
      quantize_row(row.data(), t, data.data_as<uint8_t>() + t * hidden);
    }
  });
  return {data, scales};
}

void check_e4m3_input(const QuantizedInput& x, int64_t hidden, DType scale_dtype,
                      const std::vector<int64_t>& scale_shape_for_t1, bool per_tensor,
                      std::string_view mode) {
  const TensorView& d = x.data;
  MOE_CHECK(d.ndim() == 2 && d.dtype() == DType::kE4M3 && d.size(1) == hidden,
            "input x: expected e4m3[T, ", hidden, "] for quant ", mode, ", got ", d.str());
  std::vector<int64_t> shape = scale_shape_for_t1;
  if (!per_tensor) shape[0] = d.size(0);
  MOE_CHECK(has_shape(x.scales, scale_dtype, shape), "input x scales: expected ",
            shape_str(scale_dtype, shape), " for quant ", mode, ", got ", x.scales.str());
}

// ---- bf16 / fp16 ----------------------------------------------------------------------------

class Float16Method final : public ReferenceQuantMethod {
 public:
  Float16Method(const MoeConfig& config, DType weight_dtype)
      : ReferenceQuantMethod(config), weight_dtype_(weight_dtype) {}

  void dequantize_row(const RefProjWeights& w, int64_t row, double* out) const override {
    const float* table = decode_table(weight_dtype_);
    const uint16_t* q = w.weight.data_as<uint16_t>() + row * w.cols;  // [cols]
    for (int64_t c = 0; c < w.cols; ++c) out[c] = table[q[c]];
  }

 protected:
  std::vector<PartLayout> layouts(int64_t rows, int64_t cols) const override {
    return {{Part::kWeight, weight_dtype_, {rows, cols}, 1}};
  }

 private:
  DType weight_dtype_;
};

// ---- fp8 per-tensor: static per-tensor e4m3 activations -----------------------------------------

class Fp8PerTensorMethod final : public ReferenceQuantMethod {
 public:
  using ReferenceQuantMethod::ReferenceQuantMethod;

  void dequantize_row(const RefProjWeights& w, int64_t row, double* out) const override {
    const float* e4m3 = decode_table(DType::kE4M3);
    const double scale = w.scale.data_as<float>()[0];
    const uint8_t* q = w.weight.data_as<uint8_t>() + row * w.cols;  // [cols]
    for (int64_t c = 0; c < w.cols; ++c) out[c] = e4m3[q[c]] * scale;
  }

  void set_activation_scales(const std::vector<const RefExpertWeights*>& experts) override {
    input_scale_ = 0;
    intermediate_scale_ = 0;
    for (const RefExpertWeights* e : experts) {
      input_scale_ = std::max({input_scale_, e->gate.input_scale.data_as<float>()[0],
                               e->up.input_scale.data_as<float>()[0]});
      intermediate_scale_ = std::max(intermediate_scale_, e->down.input_scale.data_as<float>()[0]);
    }
  }

  RefInputBuffers create_input_buffers(int64_t max_tokens, int64_t hidden) const override {
    return {Tensor::empty({max_tokens, hidden}, DType::kE4M3), Tensor::empty({1}, DType::kF32)};
  }

  QuantizedInput quantize_input(const TensorView& x, RefInputBuffers& buffers) const override {
    MOE_CHECK(input_scale_ > 0,
              "fp8_per_tensor: the static input scale is not set (load the "
              "weights first)");
    buffers.scales.data_as<float>()[0] = input_scale_;
    const float scale = input_scale_;
    const int64_t hidden = x.ndim() == 2 ? x.size(1) : 0;
    return quantize_rows(x, config().act_dtype, buffers, buffers.scales,
                         [&](const float* row, int64_t, uint8_t* q) {
                           quant::quantize_fp8_per_tensor(row, hidden, scale, q);
                         });
  }

  void check_input(const QuantizedInput& x, int64_t hidden) const override {
    check_e4m3_input(x, hidden, DType::kF32, {1}, true, quant_mode_name(mode()));
  }

  void dequantize_input_row(const QuantizedInput& x, int64_t t, double* out) const override {
    const float* e4m3 = decode_table(DType::kE4M3);
    const int64_t h = x.data.size(1);
    const double scale = x.scales.data_as<float>()[0];
    const uint8_t* q = x.data.data_as<uint8_t>() + t * h;
    for (int64_t c = 0; c < h; ++c) out[c] = e4m3[q[c]] * scale;
  }

  void quantize_intermediate(const double* h, int64_t n, double* out) const override {
    std::vector<float> hf(h, h + n);
    std::vector<uint8_t> q(n);
    quant::quantize_fp8_per_tensor(hf.data(), n, intermediate_scale_, q.data());
    const float* e4m3 = decode_table(DType::kE4M3);
    for (int64_t i = 0; i < n; ++i) out[i] = e4m3[q[i]] * static_cast<double>(intermediate_scale_);
  }

 protected:
  std::vector<PartLayout> layouts(int64_t rows, int64_t cols) const override {
    return {{Part::kWeight, DType::kE4M3, {rows, cols}, 1},
            {Part::kScale, DType::kF32, {1}, 0},
            {Part::kInputScale, DType::kF32, {1}, 0}};
  }

 private:
  float input_scale_ = 0;         // max gate/up input_scale of the experts this rank runs
  float intermediate_scale_ = 0;  // max down input_scale
};

// ---- fp8 block: 128x128 weight blocks, 1x128 activation groups ------------------------------

inline constexpr int64_t kFp8Block = 128;

class Fp8BlockMethod final : public ReferenceQuantMethod {
 public:
  using ReferenceQuantMethod::ReferenceQuantMethod;

  void dequantize_row(const RefProjWeights& w, int64_t row, double* out) const override {
    const float* e4m3 = decode_table(DType::kE4M3);
    const int64_t col_blocks = ceil_div(w.cols, kFp8Block);
    const float* scales = w.scale.data_as<float>() + (row / kFp8Block) * col_blocks;  // [kb]
    const uint8_t* q = w.weight.data_as<uint8_t>() + row * w.cols;                    // [cols]
    for (int64_t c = 0; c < w.cols; ++c) {
      out[c] = e4m3[q[c]] * static_cast<double>(scales[c / kFp8Block]);
    }
  }

  RefInputBuffers create_input_buffers(int64_t max_tokens, int64_t hidden) const override {
    return {Tensor::empty({max_tokens, hidden}, DType::kE4M3),
            Tensor::empty({max_tokens, ceil_div(hidden, kFp8Block)}, DType::kF32)};
  }

  QuantizedInput quantize_input(const TensorView& x, RefInputBuffers& buffers) const override {
    const int64_t tokens = x.ndim() == 2 ? x.size(0) : 0;
    const int64_t hidden = x.ndim() == 2 ? x.size(1) : 0;
    const int64_t groups = ceil_div(hidden, kFp8Block);
    MOE_CHECK(tokens <= buffers.scales.size(0), "quantize_input: ", tokens,
              " tokens exceed max_num_tokens = ", buffers.scales.size(0));
    TensorView scales = buffers.scales.view().slice_rows(0, tokens);  // f32 [T, H/128]
    return quantize_rows(x, config().act_dtype, buffers, scales,
                         [&](const float* row, int64_t t, uint8_t* q) {
                           quant::quantize_fp8_act_1x128(row, 1, hidden, false, q,
                                                         scales.data_as<float>() + t * groups);
                         });
  }

  void check_input(const QuantizedInput& x, int64_t hidden) const override {
    check_e4m3_input(x, hidden, DType::kF32, {1, ceil_div(hidden, kFp8Block)}, false,
                     quant_mode_name(mode()));
  }

  void dequantize_input_row(const QuantizedInput& x, int64_t t, double* out) const override {
    const float* e4m3 = decode_table(DType::kE4M3);
    const int64_t h = x.data.size(1);
    const float* scales = x.scales.data_as<float>() + t * ceil_div(h, kFp8Block);
    const uint8_t* q = x.data.data_as<uint8_t>() + t * h;
    for (int64_t c = 0; c < h; ++c)
      out[c] = e4m3[q[c]] * static_cast<double>(scales[c / kFp8Block]);
  }

  void quantize_intermediate(const double* h, int64_t n, double* out) const override {
    std::vector<float> hf(h, h + n);
    std::vector<uint8_t> q(n);
    std::vector<float> scales(ceil_div(n, kFp8Block));
    quant::quantize_fp8_act_1x128(hf.data(), 1, n, false, q.data(), scales.data());
    const float* e4m3 = decode_table(DType::kE4M3);
    for (int64_t i = 0; i < n; ++i) {
      out[i] = e4m3[q[i]] * static_cast<double>(scales[i / kFp8Block]);
    }
  }

 protected:
  std::vector<PartLayout> layouts(int64_t rows, int64_t cols) const override {
    return {{Part::kWeight, DType::kE4M3, {rows, cols}, 1},
            {Part::kScale,
             DType::kF32,
             {ceil_div(rows, kFp8Block), ceil_div(cols, kFp8Block)},
             kFp8Block}};
  }
};

// ---- nvfp4: e2m1 weights, e4m3 scale per 16, f32 global; 16-bit activations -------------------

inline constexpr int64_t kNvfp4Block = 16;

class Nvfp4Method final : public ReferenceQuantMethod {
 public:
  using ReferenceQuantMethod::ReferenceQuantMethod;

  void dequantize_row(const RefProjWeights& w, int64_t row, double* out) const override {
    const float* e2m1 = decode_table(DType::kE2M1);
    const float* e4m3 = decode_table(DType::kE4M3Scale);
    const double global = w.global_scale.data_as<float>()[0];
    const uint8_t* q = w.weight.data_as<uint8_t>() + row * (w.cols / 2);            // [cols/2]
    const uint8_t* sf = w.scale.data_as<uint8_t>() + row * (w.cols / kNvfp4Block);  // [cols/16]
    for (int64_t c = 0; c < w.cols; c += 2) {
      const double s = e4m3[sf[c / kNvfp4Block]] * global;
      out[c] = e2m1[fmt::e2m1_low(q[c / 2])] * s;
      out[c + 1] = e2m1[fmt::e2m1_high(q[c / 2])] * s;
    }
  }

 protected:
  std::vector<PartLayout> layouts(int64_t rows, int64_t cols) const override {
    return {{Part::kWeight, DType::kE2M1, {rows, cols}, 1},
            {Part::kScale, DType::kE4M3Scale, {rows, cols / kNvfp4Block}, 1},
            {Part::kGlobalScale, DType::kF32, {1}, 0}};
  }
};

// ---- mxfp4: e2m1 weights, ue8m0 scale per 32; 16-bit activations ----------------------------

inline constexpr int64_t kMxBlock = 32;

class Mxfp4Method : public ReferenceQuantMethod {
 public:
  using ReferenceQuantMethod::ReferenceQuantMethod;

  void dequantize_row(const RefProjWeights& w, int64_t row, double* out) const override {
    const float* e2m1 = decode_table(DType::kE2M1);
    const float* ue8m0 = decode_table(DType::kUE8M0);
    const uint8_t* q = w.weight.data_as<uint8_t>() + row * (w.cols / 2);         // [cols/2]
    const uint8_t* sf = w.scale.data_as<uint8_t>() + row * (w.cols / kMxBlock);  // [cols/32]
    for (int64_t c = 0; c < w.cols; c += 2) {
      const double s = ue8m0[sf[c / kMxBlock]];
      out[c] = e2m1[fmt::e2m1_low(q[c / 2])] * s;
      out[c + 1] = e2m1[fmt::e2m1_high(q[c / 2])] * s;
    }
  }

 protected:
  std::vector<PartLayout> layouts(int64_t rows, int64_t cols) const override {
    return {{Part::kWeight, DType::kE2M1, {rows, cols}, 1},
            {Part::kScale, DType::kUE8M0, {rows, cols / kMxBlock}, 1}};
  }
};

// ---- w4a8: mxfp4 weights, MXFP8 (e4m3, ue8m0 per 32, RCEIL) activations -------------------------

class W4A8Method final : public Mxfp4Method {
 public:
  using Mxfp4Method::Mxfp4Method;

  RefInputBuffers create_input_buffers(int64_t max_tokens, int64_t hidden) const override {
    return {Tensor::empty({max_tokens, hidden}, DType::kE4M3),
            Tensor::empty({max_tokens, hidden / kMxBlock}, DType::kUE8M0)};
  }

  QuantizedInput quantize_input(const TensorView& x, RefInputBuffers& buffers) const override {
    const int64_t tokens = x.ndim() == 2 ? x.size(0) : 0;
    const int64_t hidden = x.ndim() == 2 ? x.size(1) : 0;
    MOE_CHECK(tokens <= buffers.scales.size(0), "quantize_input: ", tokens,
              " tokens exceed max_num_tokens = ", buffers.scales.size(0));
    TensorView scales = buffers.scales.view().slice_rows(0, tokens);  // ue8m0 [T, H/32]
    return quantize_rows(
        x, config().act_dtype, buffers, scales, [&](const float* row, int64_t t, uint8_t* q) {
          quant::quantize_mx(quant::MxElem::kE4M3, quant::MxScaleRule::kRceil, row, 1, hidden, q,
                             scales.data_as<uint8_t>() + t * (hidden / kMxBlock));
        });
  }

  void check_input(const QuantizedInput& x, int64_t hidden) const override {
    check_e4m3_input(x, hidden, DType::kUE8M0, {1, hidden / kMxBlock}, false,
                     quant_mode_name(mode()));
  }

  void dequantize_input_row(const QuantizedInput& x, int64_t t, double* out) const override {
    const float* e4m3 = decode_table(DType::kE4M3);
    const float* ue8m0 = decode_table(DType::kUE8M0);
    const int64_t h = x.data.size(1);
    const uint8_t* scales = x.scales.data_as<uint8_t>() + t * (h / kMxBlock);
    const uint8_t* q = x.data.data_as<uint8_t>() + t * h;
    for (int64_t c = 0; c < h; ++c) {
      out[c] = e4m3[q[c]] * static_cast<double>(ue8m0[scales[c / kMxBlock]]);
    }
  }

  void quantize_intermediate(const double* h, int64_t n, double* out) const override {
    std::vector<float> hf(h, h + n);
    std::vector<uint8_t> q(n);
    std::vector<uint8_t> scales(n / kMxBlock);
    quant::quantize_mx(quant::MxElem::kE4M3, quant::MxScaleRule::kRceil, hf.data(), 1, n, q.data(),
                       scales.data());
    const float* e4m3 = decode_table(DType::kE4M3);
    const float* ue8m0 = decode_table(DType::kUE8M0);
    for (int64_t i = 0; i < n; ++i) {
      out[i] = e4m3[q[i]] * static_cast<double>(ue8m0[scales[i / kMxBlock]]);
    }
  }
};

}  // namespace

std::unique_ptr<ReferenceQuantMethod> make_reference_quant_method(const MoeConfig& config) {
  switch (config.quant) {
    case QuantMode::kBF16:
      return std::make_unique<Float16Method>(config, DType::kBF16);
    case QuantMode::kFP16:
      return std::make_unique<Float16Method>(config, DType::kF16);
    case QuantMode::kFP8PerTensor:
      return std::make_unique<Fp8PerTensorMethod>(config);
    case QuantMode::kFP8Block:
      return std::make_unique<Fp8BlockMethod>(config);
    case QuantMode::kNVFP4:
      return std::make_unique<Nvfp4Method>(config);
    case QuantMode::kMXFP4:
      return std::make_unique<Mxfp4Method>(config);
    case QuantMode::kW4A8MXFP4MXFP8:
      return std::make_unique<W4A8Method>(config);
  }
  MOE_UNREACHABLE("quant mode code ", static_cast<int>(config.quant));
}

}  // namespace moe
