// The host-side plan of an expert-parallel exchange (contract in ep_plan.h).
#include "comm/ep_plan.h"

#include <algorithm>
#include <cstring>

#include "moe/errors.h"
#include "quant/formats.h"

namespace moe {
namespace {

double to_double(const void* row, int64_t c, DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return fmt::bf16_to_float(static_cast<const uint16_t*>(row)[c]);
    case DType::kF16:
      return fmt::f16_to_float(static_cast<const uint16_t*>(row)[c]);
    case DType::kF32:
      return static_cast<const float*>(row)[c];
    case DType::kF64:
      return static_cast<const double*>(row)[c];
    default:
      MOE_UNREACHABLE("sum_rows: dtype ", dtype_name(dtype));
  }
}

bool is_summable(DType dtype) {
  return dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF32 ||
         dtype == DType::kF64;
}

/// Bytes of one row of a contiguous 1-D or 2-D tensor.
size_t row_bytes(const TensorView& t) {
  return t.ndim() == 1 ? dtype_bytes(t.dtype(), 1) : dtype_bytes(t.dtype(), t.size(1));
}

}  // namespace

PayloadLayout payload_layout(const QuantizedInput& x, int top_k) {
  const TensorView& data = x.data;
  MOE_CHECK(data.ndim() == 2 && data.is_contiguous(),
            "dispatch: the input data must be a contiguous [T, H] tensor, got ", data.str());
  PayloadLayout layout;
  layout.data_dtype = data.dtype();
  layout.data_cols = data.size(1);
  layout.data_row_bytes = dtype_bytes(data.dtype(), data.size(1));
  layout.top_k = top_k;
  const TensorView& scales = x.scales;
  if (!scales.empty() && scales.ndim() == 2 && scales.size(0) == data.size(0)) {
    MOE_CHECK(scales.is_contiguous(), "dispatch: per-token scales must be contiguous, got ",
              scales.str());
    layout.per_row_scales = true;
    layout.scale_dtype = scales.dtype();
    layout.scale_cols = scales.size(1);
    layout.scale_row_bytes = dtype_bytes(scales.dtype(), scales.size(1));
  }
  return layout;
}

SendPlan plan_send(const TensorView& topk_ids, const ExpertPartition& partition) {
  MOE_CHECK(topk_ids.ndim() == 2 && topk_ids.dtype() == DType::kI32 && topk_ids.device().is_cpu() &&
                topk_ids.is_contiguous(),
            "plan_send: topk_ids must be a contiguous host i32 [T, k], got ", topk_ids.str());
  MOE_CHECK(partition.ep_size >= 1 && partition.num_experts % partition.ep_size == 0,
            "plan_send: ep_size ", partition.ep_size, " does not divide num_experts ",
            partition.num_experts);
  const int64_t tokens = topk_ids.size(0), top_k = topk_ids.size(1);
  const int ep = partition.ep_size;
  const int32_t* ids = topk_ids.data_as<const int32_t>();
  // dest_mask[t * ep + d]: token t has an expert on rank d.
  std::vector<uint8_t> dest_mask(static_cast<size_t>(tokens * ep), 0);
  SendPlan plan;
  plan.counts.assign(ep, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t k = 0; k < top_k; ++k) {
      const int32_t id = ids[t * top_k + k];
      MOE_CHECK(id >= 0 && id < partition.num_experts, "plan_send: topk_ids[", t, ", ", k,
                "] = ", id, " is not an expert id in [0, ", partition.num_experts, ")");
      uint8_t& m = dest_mask[t * ep + partition.owner(id)];
      if (!m) {
        m = 1;
        ++plan.counts[partition.owner(id)];
      }
    }
  }
  plan.offsets = exclusive_prefix(plan.counts);
  plan.token_of_row.resize(plan.offsets.back());
  std::vector<int64_t> cursor(plan.offsets.begin(), plan.offsets.end() - 1);
  for (int d = 0; d < ep; ++d) {
    for (int64_t t = 0; t < tokens; ++t) {
      if (dest_mask[t * ep + d]) plan.token_of_row[cursor[d]++] = t;
    }
  }
  return plan;
}

void gather_rows(const TensorView& src, std::span<const int64_t> rows, const TensorView& dst) {
  MOE_CHECK(src.device().is_cpu() && dst.device().is_cpu() && src.is_contiguous() &&
                dst.is_contiguous() && src.ndim() == dst.ndim() && src.ndim() <= 2 &&
                src.dtype() == dst.dtype(),
            "gather_rows: contiguous host tensors of one dtype and rank expected, got ", src.str(),
            " and ", dst.str());
  const size_t bytes = row_bytes(src);
  MOE_CHECK(bytes == row_bytes(dst), "gather_rows: row sizes differ: ", src.str(), " and ",
            dst.str());
  MOE_CHECK(static_cast<int64_t>(rows.size()) <= dst.size(0), "gather_rows: ", rows.size(),
            " rows do not fit in ", dst.str());
  const auto* s = static_cast<const uint8_t*>(src.data());
  auto* d = static_cast<uint8_t*>(dst.data());
  for (size_t i = 0; i < rows.size(); ++i) {
    MOE_CHECK(rows[i] >= 0 && rows[i] < src.size(0), "gather_rows: row ", rows[i], " is outside ",
              src.str());
    std::memcpy(d + i * bytes, s + rows[i] * bytes, bytes);
  }
}

void sum_rows(const TensorView& partial, std::span<const int64_t> token_of_row,
              const TensorView& out) {
  MOE_CHECK(
      out.ndim() == 2 && out.device().is_cpu() && out.is_contiguous() && is_summable(out.dtype()),
      "combine: out must be a contiguous host bf16/f16/f32/f64 [T, H], got ", out.str());
  const int64_t tokens = out.size(0), hidden = out.size(1);
  const int64_t num_rows = static_cast<int64_t>(token_of_row.size());
  MOE_CHECK(partial.ndim() == 2 && partial.device().is_cpu() && partial.is_contiguous() &&
                is_summable(partial.dtype()) && partial.size(1) == hidden &&
                partial.size(0) >= num_rows,
            "combine: expert output must be a contiguous host bf16/f16/f32/f64 [>= ", num_rows,
            ", ", hidden, "], got ", partial.str());
  std::vector<double> acc(static_cast<size_t>(tokens * hidden), 0.0);  // [T, H]
  const auto* p = static_cast<const uint8_t*>(partial.data());
  const size_t p_row = dtype_bytes(partial.dtype(), hidden);
  for (int64_t i = 0; i < num_rows; ++i) {
    const int64_t t = token_of_row[i];
    MOE_CHECK(t >= 0 && t < tokens, "combine: row ", i, " names token ", t, " of ", tokens);
    double* a = acc.data() + t * hidden;
    const void* row = p + i * p_row;
    for (int64_t c = 0; c < hidden; ++c) a[c] += to_double(row, c, partial.dtype());
  }
  if (out.dtype() == DType::kF64) {  // wide: the sum itself, not rounded
    std::copy(acc.begin(), acc.end(), out.data_as<double>());
    return;
  }
  for (int64_t i = 0; i < tokens * hidden; ++i) {
    const float f = static_cast<float>(acc[i]);
    switch (out.dtype()) {
      case DType::kBF16:
        out.data_as<uint16_t>()[i] = fmt::float_to_bf16(f);
        break;
      case DType::kF16:
        out.data_as<uint16_t>()[i] = fmt::float_to_f16(f);
        break;
      default:
        out.data_as<float>()[i] = f;
    }
  }
}

size_t max_data_row_bytes(const MoeConfig& config) {
  return dtype_bytes(config.act_dtype, config.hidden_size);
}

size_t max_scale_row_bytes(const MoeConfig& config) {
  return sizeof(float) * static_cast<size_t>((config.hidden_size + 15) / 16);
}

bool post_quant_dispatch_ok(const MoeConfig& config) {
  return config.quant != QuantMode::kFP8PerTensor;
}

Capability ep_workload_feasible(const MoeConfig& config, const Mapping& mapping, int max_tokens) {
  if (config.num_experts % mapping.ep_size != 0) {
    return Capability::no("ep_size " + std::to_string(mapping.ep_size) +
                          " does not divide num_experts " + std::to_string(config.num_experts));
  }
  if (max_tokens < mapping.ep_size) {
    return Capability::no("max_num_tokens " + std::to_string(max_tokens) + " is below ep_size " +
                          std::to_string(mapping.ep_size) +
                          ": a chunk brings max_num_tokens / ep_size tokens per rank, so that "
                          "no rank receives more than max_num_tokens");
  }
  return Capability::yes("ep_size " + std::to_string(mapping.ep_size) + ", " +
                         std::to_string(config.num_experts / mapping.ep_size) +
                         " experts per rank, chunks of up to " +
                         std::to_string(max_tokens / mapping.ep_size) + " tokens per rank");
}

std::vector<int64_t> exclusive_prefix(std::span<const int64_t> counts) {
  std::vector<int64_t> offsets(counts.size() + 1, 0);
  for (size_t i = 0; i < counts.size(); ++i) offsets[i + 1] = offsets[i] + counts[i];
  return offsets;
}

void pack_send_rows(const QuantizedInput& x, const TensorView& topk_ids,
                    const TensorView& topk_weights, const PayloadLayout& layout,
                    const SendPlan& plan, int64_t top_k, void* data, void* scales, void* ids,
                    void* weights) {
  const int64_t sent = plan.num_rows();
  gather_rows(x.data, plan.token_of_row,
              TensorView(data, layout.data_dtype, {sent, layout.data_cols}));
  if (layout.per_row_scales) {
    gather_rows(x.scales, plan.token_of_row,
                TensorView(scales, layout.scale_dtype, {sent, layout.scale_cols}));
  }
  gather_rows(topk_ids, plan.token_of_row, TensorView(ids, DType::kI32, {sent, top_k}));
  gather_rows(topk_weights, plan.token_of_row, TensorView(weights, DType::kF32, {sent, top_k}));
}

}  // namespace moe
