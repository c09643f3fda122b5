// The choice between the `dense` and the `grouped` backend for one layer: a pure function of
// the problem (E, k, H, I, shared size, tokens, quant) and the GPU (its SM count), header-only
// so that CPU tests and the factory's decision trace use the same numbers.
//
// Model (first principles; the constants in DenseCostModel are fitted to crossover points
// measured with `moe bench --backend dense,grouped` on the device):
//
//   Both backends run the shared MLP in full; they differ in the routed experts.
//   active(T)   = E * (1 - (1 - k/E)^T)       expected distinct experts hit by T tokens
//                                              under uniform, independent routing
//   W           = 3 * H * I * b_w               bytes of one expert (b_w: 2 for 16-bit, 1 fp8)
//   Ws          = 3 * H * S * b_w               bytes of the shared MLP
//   dense       bytes = E * W + Ws + T * (E*I + S) * (2 * 4 + 2 * 4 + 2 * b_a)
//                       (all experts' weights; the f32 FC1 output written and read; the
//                       intermediate written and read, b_a = 2 for 16-bit, 1 for fp8)
//               flops = 2 * T * 3 * H * (E * I + S)            (every expert, every token)
//   grouped     bytes = active(T) * W + Ws + T * (k + [S > 0]) * (2 * H + I) * 2 * b_a
//                       (activated experts' weights; gathered rows and the intermediate)
//               flops = 2 * T * 3 * H * (k * I + S)
//   time        = max(bytes / (eff_bw * BW), flops / (eff_math * PEAK)) + fixed launch time
//   BW, PEAK    = num_sms * (per-SM share of H100 SXM: 3.35 TB/s, 989 TFLOP/s bf16,
//                 x2 for fp8)
//   dense wins  when its time is lower.
//
// Assumptions, to be checked by measurement: uniform routing (real routers are skewed, which
// lowers active(T) and favours grouped); both GEMM paths memory-bound at small T with a
// constant fraction of peak bandwidth (cuBLASLt's one large GEMM reaching a higher fraction
// than the grouped kernel's per-expert tiles); a fixed cost per launch chain (dense: FC1,
// activation, FC2 [, finalize]; grouped: plan, gather, FC1, FC2, finalize). The consequence:
// dense wins only when nearly every expert is active (active(T) close to E: small E, large
// k/E) at tiny token counts, before it turns compute-bound by doing E/k times the FLOPs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>

#include "moe/config.h"

namespace moe {

/// What the choice looks at.
struct DenseChoiceProblem {
  int num_experts = 0;   // E (routed, on this GPU)
  int top_k = 0;         // k
  int hidden = 0;        // H
  int inter = 0;         // I, per routed expert
  int shared_inter = 0;  // S, 0 without shared experts
  int64_t tokens = 0;    // T, tokens per forward (chunk)
  QuantMode quant = QuantMode::kBF16;
  int num_sms = 132;  // the GPU
};

/// Constants of the cost model, fitted to `moe bench --backend dense,grouped` on an H100
/// (bench/results/h100-dense-vs-grouped.json: mixtral-8x7b, mixtral-8x22b, llama4-scout,
/// qwen3-30b-a3b, deepseek-v2-lite, gpt-oss-20b at 1..64 tokens, bf16). Grouped was the faster
/// in all 42 cases: memory-bound, it streams its experts at ~0.88 of the 3.35 TB/s spec
/// (time/floor 1.0-1.15 on large experts) where dense reaches ~0.70 (1.23-1.36 with every
/// expert active); grouped's chain of small kernels costs ~30 us (qwen3-30b-a3b at 1 token:
/// 60 us against a 25 us floor), dense's ~15 us. With these, dense wins only for small layers
/// whose experts are all active, where the fixed costs dominate (not seen among the presets).
struct DenseCostModel {
  double hbm_bytes_per_s_per_sm = 3.35e12 / 132;
  double bf16_flops_per_s_per_sm = 989e12 / 132;
  double dense_bw_efficiency = 0.70;    // cuBLASLt, one GEMM per FC over every expert
  double grouped_bw_efficiency = 0.88;  // grouped GEMM over the activated experts
  double dense_math_efficiency = 0.7;
  double grouped_math_efficiency = 0.6;
  double dense_fixed_us = 15.0;    // FC1 + activation + FC2 (+ finalize)
  double grouped_fixed_us = 30.0;  // route + plan + gather + FC1 + FC2 + finalize
};

/// The decision, with the estimates behind it (for the factory's trace).
struct DenseChoice {
  bool dense = false;
  double dense_us = 0;
  double grouped_us = 0;
  double active_experts = 0;
  std::string reason;
};

/// Expected number of distinct experts that T tokens, each picking k of E uniformly without
/// replacement, activate: E * (1 - (1 - k/E)^T).
inline double expected_active_experts(int num_experts, int top_k, int64_t tokens) {
  if (num_experts <= 0 || tokens <= 0) return 0;
  const double miss = 1.0 - static_cast<double>(std::min(top_k, num_experts)) / num_experts;
  return num_experts * (1.0 - std::pow(miss, static_cast<double>(tokens)));
}

/// True for the quant modes the dense backend runs.
constexpr bool dense_supports_quant(QuantMode q) {
  return q == QuantMode::kBF16 || q == QuantMode::kFP16 || q == QuantMode::kFP8PerTensor ||
         q == QuantMode::kFP8Block;
}

/// Estimated times of both backends and the choice (see the model above).
inline DenseChoice choose_dense(const DenseChoiceProblem& p, const DenseCostModel& m = {}) {
  DenseChoice c;
  if (!dense_supports_quant(p.quant)) {
    c.reason = "dense does not run quant " + std::string(quant_mode_name(p.quant));
    return c;
  }
  if (p.num_experts <= 0 || p.top_k <= 0 || p.hidden <= 0 || p.inter <= 0 || p.tokens <= 0 ||
      p.num_sms <= 0) {
    c.reason = "empty problem";
    return c;
  }
  const bool fp8 = p.quant == QuantMode::kFP8PerTensor || p.quant == QuantMode::kFP8Block;
  const double b_w = fp8 ? 1.0 : 2.0, b_a = fp8 ? 1.0 : 2.0;
  const double e = p.num_experts, k = std::min(p.top_k, p.num_experts), h = p.hidden, i = p.inter,
               s = p.shared_inter, t = static_cast<double>(p.tokens);
  const double bw = p.num_sms * m.hbm_bytes_per_s_per_sm;
  const double peak = p.num_sms * m.bf16_flops_per_s_per_sm * (fp8 ? 2.0 : 1.0);
  c.active_experts = expected_active_experts(p.num_experts, p.top_k, p.tokens);

  const double expert_bytes = 3 * h * i * b_w, shared_bytes = 3 * h * s * b_w;
  const double dense_bytes = e * expert_bytes + shared_bytes + t * (e * i + s) * (16 + 2 * b_a);
  const double dense_flops = 2 * t * 3 * h * (e * i + s);
  const double grouped_bytes = c.active_experts * expert_bytes + shared_bytes +
                               t * (k + (s > 0 ? 1 : 0)) * (2 * h + i) * 2 * b_a;
  const double grouped_flops = 2 * t * 3 * h * (k * i + s);
  auto time_us = [&](double bytes, double flops, double bw_eff, double math_eff, double fixed) {
    return std::max(bytes / (bw_eff * bw), flops / (math_eff * peak)) * 1e6 + fixed;
  };
  c.dense_us = time_us(dense_bytes, dense_flops, m.dense_bw_efficiency, m.dense_math_efficiency,
                       m.dense_fixed_us);
  c.grouped_us = time_us(grouped_bytes, grouped_flops, m.grouped_bw_efficiency,
                         m.grouped_math_efficiency, m.grouped_fixed_us);
  c.dense = c.dense_us < c.grouped_us;
  std::ostringstream os;
  os.precision(3);
  os << "cost model at T=" << p.tokens << ": dense " << c.dense_us << " us vs grouped "
     << c.grouped_us << " us (" << c.active_experts << " of " << p.num_experts
     << " experts active) -> " << (c.dense ? "dense" : "grouped");
  c.reason = os.str();
  return c;
}

}  // namespace moe
