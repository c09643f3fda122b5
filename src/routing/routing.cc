// CPU routing: the oracle every routing kernel is compared with, bit for bit.
//
// route_cpu: logits f32 [T, E] -> topk_ids i32 [T, k], topk_weights f32 [T, k].
// Per token, all in fp32, in exactly this order (a kernel that wants to match bit for bit
// does the same operations in the same order):
//   sigmoid(x)            = 1.0f / (1.0f + std::exp(-x))
//   kSoftmaxTopK          m = max_e l[e]; p[e] = std::exp(l[e] - m); sum = p[0] + p[1] + ...
//                         (expert order); p[e] = p[e] / sum; S = topk(p);
//                         w = p[S]; if renormalize: w[i] = w[i] / (w[0] + ... + w[k-1]);
//                         w[i] = w[i] * routed_scaling_factor
//   kDeepSeekV3           s[e] = sigmoid(l[e]); b[e] = s[e] + bias[e] (b = s without a bias);
//                         group score = top1(b) + top2(b) of the group (with a bias) or max(s)
//                         (without); keep the topk_groups best groups; S = topk(b) over the
//                         experts of the kept groups (the others count as -inf);
//                         w = s[S]; if renormalize: w[i] = w[i] / (w[0] + ... + w[k-1] + 1e-20f);
//                         w[i] = w[i] * routed_scaling_factor
//   kLlama4               S = topk(l); w[i] = sigmoid(l[S[i]]) * routed_scaling_factor
//   kGptOss               S = topk(l); m = l[S[0]]; e[i] = std::exp(l[S[i]] - m);
//                         w[i] = e[i] / (e[0] + ... + e[k-1]) * routed_scaling_factor
// Every sum over the k selected runs in output order (i = 0, 1, ...). `renormalize` has no
// meaning for kLlama4 and kGptOss and is ignored there; the scaling factor (1 for those
// models) is applied by every method.
//
// topk: the k largest scores, listed in decreasing score; ties go to the lower index (for
// groups: the lower group index).
//
// Rejected with moe::Error: NaN or +inf logits (naming token and expert); a token whose
// logits are all -inf under a softmax (kSoftmaxTopK, kGptOss); non-finite correction bias
// (naming the expert); bad shapes, dtypes or devices; k outside [1, E]; group settings that
// do not divide E or keep fewer than k experts; a correction bias that the config does not
// announce, or a missing one that it does.
//
// router_logits_cpu: logits[t, e] = (sum_h x[t, h] * w[e, h]) + bias[e], the sum in fp32 in
// order of h starting from 0.0f. The weight is converted once per call to f32 in tiles of
// kExpertTile experts, transposed within the tile ([tile][h][8]), so that the 8 ordered sums
// of one token run side by side in SIMD lanes; work is spread over (token, tile) pairs.
#include "routing/routing.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/thread_pool.h"
#include "moe/errors.h"
#include "quant/formats.h"

namespace moe {
namespace {

constexpr float kRenormEpsilon = 1e-20f;  // DeepSeek-V3's norm_topk_prob denominator guard
constexpr float kPosInf = std::numeric_limits<float>::infinity();
constexpr float kNegInf = -kPosInf;

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

struct Candidate {
  float score;
  int index;
};

// The best k candidates offered so far, in decreasing score. Candidates must be offered in
// increasing index: an equal score then lands after the lower index already held, which is
// the tie rule. NaN is never offered (rejected before routing).
class TopK {
 public:
  TopK(Candidate* slots, int k) : slots_(slots), k_(k) {}

  void offer(float score, int index) {
    if (size_ == k_ && !(score > slots_[k_ - 1].score)) return;
    int pos = size_ < k_ ? size_++ : k_ - 1;
    while (pos > 0 && slots_[pos - 1].score < score) {
      slots_[pos] = slots_[pos - 1];
      --pos;
    }
    slots_[pos] = {score, index};
  }
  int size() const { return size_; }

 private:
  Candidate* slots_;
  int k_;
  int size_ = 0;
};

// Strided row access to a 2-D view.
template <class T>
struct Rows {
  T* base;
  int64_t row_stride;
  int64_t col_stride;

  explicit Rows(const TensorView& v)
      : base(v.data_as<T>()), row_stride(v.stride(0)), col_stride(v.stride(1)) {}
  T& at(int64_t row, int64_t col) const { return base[row * row_stride + col * col_stride]; }
};

bool is_softmax_method(RoutingMethod m) {
  return m == RoutingMethod::kSoftmaxTopK || m == RoutingMethod::kGptOss;
}

// ---- Checks -------------------------------------------------------------------------------

void check_host(const TensorView& t, const char* what) {
  MOE_CHECK(t.device().is_cpu(), what, " must be on the host for CPU routing, got ", t.str());
}

// The CPU router's checks: placement on the host, the shared checks, finite bias values;
// returns the correction bias to use (nullptr when there is none).
const float* check_route_args(const RoutingConfig& routing, int top_k, const TensorView& logits,
                              const TensorView& correction_bias, const TensorView& topk_ids,
                              const TensorView& topk_weights) {
  check_host(logits, "router logits");
  check_host(topk_ids, "topk_ids");
  check_host(topk_weights, "topk_weights");
  check_routing_args(routing, top_k, logits, correction_bias, topk_ids, topk_weights);
  if (routing.method != RoutingMethod::kDeepSeekV3 || !routing.has_correction_bias) return nullptr;
  check_host(correction_bias, "correction bias");
  const float* bias = correction_bias.data_as<float>();
  for (int64_t e = 0; e < logits.size(1); ++e) {
    MOE_CHECK(std::isfinite(bias[e]), "correction bias of expert ", e, " is ", bias[e]);
  }
  return bias;
}

// NaN and +inf are rejected everywhere; an all -inf row under a softmax has no distribution.
// Serial, so that the error names the first bad (token, expert) in order.
void check_logit_values(const Rows<const float>& logits, int64_t num_tokens, int64_t num_experts,
                        RoutingMethod method) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    bool all_neg_inf = true;
    for (int64_t e = 0; e < num_experts; ++e) {
      const float v = logits.at(t, e);
      MOE_CHECK(!std::isnan(v), "router logit of token ", t, ", expert ", e, " is NaN");
      MOE_CHECK(v != kPosInf, "router logit of token ", t, ", expert ", e, " is +inf");
      all_neg_inf = all_neg_inf && v == kNegInf;
    }
    MOE_CHECK(!(all_neg_inf && is_softmax_method(method)), "router logits of token ", t,
              " are all -inf: the softmax is undefined");
  }
}

// ---- Per-token routing --------------------------------------------------------------------

struct Scratch {
  std::vector<float> scores;  // [E] selection scores
  std::vector<float> probs;   // [E] unbiased scores (DeepSeek-V3)
  std::vector<Candidate> top;
  std::vector<Candidate> groups;
  std::vector<char> group_kept;
};

// One token's output row: k ids and k weights (strided).
struct TokenOut {
  int32_t* ids;
  float* weights;
  int64_t ids_stride;
  int64_t weights_stride;
  int k;

  float& w(int i) const { return weights[i * weights_stride]; }
  void set_id(int i, int id) const { ids[i * ids_stride] = id; }
};

void scale_weights(const TokenOut& out, float factor) {
  for (int i = 0; i < out.k; ++i) out.w(i) = out.w(i) * factor;
}

float sum_weights(const TokenOut& out) {
  float sum = 0.0f;
  for (int i = 0; i < out.k; ++i) sum += out.w(i);
  return sum;
}

void route_softmax_topk(const RoutingConfig& routing, const Rows<const float>& logits, int64_t t,
                        int num_experts, const TokenOut& out, Scratch& scratch) {
  float* p = scratch.scores.data();
  float max_logit = logits.at(t, 0);
  for (int e = 1; e < num_experts; ++e) max_logit = std::max(max_logit, logits.at(t, e));
  float sum = 0.0f;
  for (int e = 0; e < num_experts; ++e) {
    p[e] = std::exp(logits.at(t, e) - max_logit);
    sum += p[e];
  }
  TopK top(scratch.top.data(), out.k);
  for (int e = 0; e < num_experts; ++e) {
    p[e] = p[e] / sum;
    top.offer(p[e], e);
  }
  for (int i = 0; i < out.k; ++i) {
    out.set_id(i, scratch.top[i].index);
    out.w(i) = scratch.top[i].score;
  }
  if (routing.renormalize) {
    const float total = sum_weights(out);
    for (int i = 0; i < out.k; ++i) out.w(i) = out.w(i) / total;
  }
  scale_weights(out, routing.routed_scaling_factor);
}

void route_deepseek_v3(const RoutingConfig& routing, const float* correction_bias,
                       const Rows<const float>& logits, int64_t t, int num_experts,
                       const TokenOut& out, Scratch& scratch) {
  float* s = scratch.probs.data();   // [E] sigmoid scores: the weights
  float* b = scratch.scores.data();  // [E] biased scores: the selection
  for (int e = 0; e < num_experts; ++e) {
    s[e] = sigmoid(logits.at(t, e));
    b[e] = correction_bias ? s[e] + correction_bias[e] : s[e];
  }

  const int num_groups = routing.num_groups;
  const int group_size = num_experts / num_groups;
  char* kept = scratch.group_kept.data();  // [num_groups]
  if (routing.topk_groups == num_groups) {
    std::fill(kept, kept + num_groups, 1);
  } else {
    std::fill(kept, kept + num_groups, 0);
    TopK best_groups(scratch.groups.data(), routing.topk_groups);
    for (int g = 0; g < num_groups; ++g) {
      const int first = g * group_size;
      float score;
      if (correction_bias) {  // top1 + top2 of the biased scores
        float top1 = kNegInf, top2 = kNegInf;
        for (int e = first; e < first + group_size; ++e) {
          if (b[e] > top1) {
            top2 = top1;
            top1 = b[e];
          } else if (b[e] > top2) {
            top2 = b[e];
          }
        }
        score = top1 + top2;
      } else {  // DeepSeek-V2 style: the best unbiased score
        score = s[first];
        for (int e = first + 1; e < first + group_size; ++e) score = std::max(score, s[e]);
      }
      best_groups.offer(score, g);
    }
    for (int i = 0; i < routing.topk_groups; ++i) kept[scratch.groups[i].index] = 1;
  }

  // Experts of dropped groups are never offered: the same as masking them with -inf, as
  // the kept groups hold at least k experts (checked).
  TopK top(scratch.top.data(), out.k);
  for (int g = 0; g < num_groups; ++g) {
    if (!kept[g]) continue;
    for (int e = g * group_size; e < (g + 1) * group_size; ++e) top.offer(b[e], e);
  }
  for (int i = 0; i < out.k; ++i) {
    out.set_id(i, scratch.top[i].index);
    out.w(i) = s[scratch.top[i].index];
  }
  if (routing.renormalize) {
    const float denom = sum_weights(out) + kRenormEpsilon;
    for (int i = 0; i < out.k; ++i) out.w(i) = out.w(i) / denom;
  }
  scale_weights(out, routing.routed_scaling_factor);
}

// kLlama4 and kGptOss: top-k on the raw logits.
void route_logit_topk(const RoutingConfig& routing, const Rows<const float>& logits, int64_t t,
                      int num_experts, const TokenOut& out, Scratch& scratch) {
  TopK top(scratch.top.data(), out.k);
  for (int e = 0; e < num_experts; ++e) top.offer(logits.at(t, e), e);
  const Candidate* sel = scratch.top.data();
  for (int i = 0; i < out.k; ++i) out.set_id(i, sel[i].index);
  if (routing.method == RoutingMethod::kLlama4) {
    for (int i = 0; i < out.k; ++i) out.w(i) = sigmoid(sel[i].score);
  } else {
    const float max_logit = sel[0].score;
    for (int i = 0; i < out.k; ++i) out.w(i) = std::exp(sel[i].score - max_logit);
    const float total = sum_weights(out);
    for (int i = 0; i < out.k; ++i) out.w(i) = out.w(i) / total;
  }
  scale_weights(out, routing.routed_scaling_factor);
}

// ---- Router projection --------------------------------------------------------------------

constexpr int kExpertTile = 8;

// Element (row, col) of a 2-D bf16/f16/f32 view as f32.
float load_as_float(const TensorView& v, int64_t row, int64_t col) {
  const int64_t offset = row * v.stride(0) + col * v.stride(1);
  switch (v.dtype()) {
    case DType::kF32:
      return v.data_as<const float>()[offset];
    case DType::kBF16:
      return fmt::bf16_to_float(v.data_as<const uint16_t>()[offset]);
    case DType::kF16:
      return fmt::f16_to_float(v.data_as<const uint16_t>()[offset]);
    default:
      MOE_UNREACHABLE("dtype ", dtype_name(v.dtype()), " in router projection");
  }
}

bool is_16_or_32_bit_float(DType d) {
  return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16;
}

}  // namespace

void check_routing_args(const RoutingConfig& routing, int top_k, const TensorView& logits,
                        const TensorView& correction_bias, const TensorView& topk_ids,
                        const TensorView& topk_weights) {
  MOE_CHECK(logits.dtype() == DType::kF32 && logits.ndim() == 2,
            "router logits: expected f32[T, E], got ", logits.str());
  const int64_t num_tokens = logits.size(0);
  const int64_t num_experts = logits.size(1);
  MOE_CHECK(num_experts >= 1, "router logits have no experts: ", logits.str());
  MOE_CHECK(top_k >= 1 && top_k <= num_experts, "top_k = ", top_k,
            " is outside [1, number of experts = ", num_experts, "]");
  check_tensor(topk_ids, "topk_ids", DType::kI32, {num_tokens, top_k});
  check_tensor(topk_weights, "topk_weights", DType::kF32, {num_tokens, top_k});
  MOE_CHECK(std::isfinite(routing.routed_scaling_factor) && routing.routed_scaling_factor > 0.0f,
            "routing.routed_scaling_factor = ", routing.routed_scaling_factor,
            " must be finite and positive");

  const bool deepseek = routing.method == RoutingMethod::kDeepSeekV3;
  MOE_CHECK(deepseek || !routing.has_correction_bias,
            "routing.has_correction_bias is set, but only DeepSeek-V3 routing uses a correction "
            "bias");
  if (!deepseek || !routing.has_correction_bias) {
    MOE_CHECK(correction_bias.empty(), "a correction bias ", correction_bias.str(),
              " was given, but routing.has_correction_bias is false");
  }
  if (!deepseek) return;

  const int num_groups = routing.num_groups;
  const int topk_groups = routing.topk_groups;
  MOE_CHECK(num_groups >= 1 && num_experts % num_groups == 0, "routing.num_groups = ", num_groups,
            " does not divide the number of experts ", num_experts);
  MOE_CHECK(topk_groups >= 1 && topk_groups <= num_groups, "routing.topk_groups = ", topk_groups,
            " is outside [1, routing.num_groups = ", num_groups, "]");
  const int64_t group_size = num_experts / num_groups;
  MOE_CHECK(top_k <= topk_groups * group_size, "top_k = ", top_k, " exceeds the ",
            topk_groups * group_size, " experts of the routing.topk_groups = ", topk_groups,
            " kept groups (", group_size, " experts each)");
  if (!routing.has_correction_bias) return;

  MOE_CHECK(group_size >= 2,
            "DeepSeek-V3 group score is the sum of the 2 best experts, but "
            "routing.num_groups = ",
            num_groups, " leaves groups of ", group_size, " expert");
  MOE_CHECK(!correction_bias.empty(),
            "routing.has_correction_bias is set, but no correction bias was given (expected f32[",
            num_experts, "])");
  check_tensor(correction_bias, "correction bias", DType::kF32, {num_experts});
  MOE_CHECK(correction_bias.is_contiguous(), "correction bias must be contiguous, got ",
            correction_bias.str());
}

void route_cpu(const RoutingConfig& routing, int top_k, const TensorView& logits,
               const TensorView& correction_bias, const TensorView& topk_ids,
               const TensorView& topk_weights) {
  const float* bias =
      check_route_args(routing, top_k, logits, correction_bias, topk_ids, topk_weights);
  const int64_t num_tokens = logits.size(0);
  const int num_experts = static_cast<int>(logits.size(1));
  const Rows<const float> logit_rows(logits);
  check_logit_values(logit_rows, num_tokens, num_experts, routing.method);

  const Rows<int32_t> id_rows(topk_ids);
  const Rows<float> weight_rows(topk_weights);
  const int64_t grain = std::max<int64_t>(1, 16384 / (num_experts * top_k));
  parallel_for(num_tokens, grain, [&](int64_t begin, int64_t end) {
    Scratch scratch;
    scratch.scores.resize(num_experts);
    scratch.probs.resize(num_experts);
    scratch.top.resize(top_k);
    scratch.groups.resize(std::max(routing.num_groups, 1));
    scratch.group_kept.resize(std::max(routing.num_groups, 1));
    for (int64_t t = begin; t < end; ++t) {
      const TokenOut out{&id_rows.at(t, 0), &weight_rows.at(t, 0), id_rows.col_stride,
                         weight_rows.col_stride, top_k};
      switch (routing.method) {
        case RoutingMethod::kSoftmaxTopK:
          route_softmax_topk(routing, logit_rows, t, num_experts, out, scratch);
          break;
        case RoutingMethod::kDeepSeekV3:
          route_deepseek_v3(routing, bias, logit_rows, t, num_experts, out, scratch);
          break;
        case RoutingMethod::kLlama4:
        case RoutingMethod::kGptOss:
          route_logit_topk(routing, logit_rows, t, num_experts, out, scratch);
          break;
        default:
          MOE_UNREACHABLE("routing method ", static_cast<int>(routing.method));
      }
    }
  });
}

void router_logits_cpu(const TensorView& x, const TensorView& w_gate, const TensorView& bias,
                       const TensorView& logits) {
  check_host(x, "router input x");
  check_host(w_gate, "router weight");
  check_host(logits, "router logits");
  MOE_CHECK(x.ndim() == 2 && is_16_or_32_bit_float(x.dtype()),
            "router input x: expected bf16/f16/f32 [T, H], got ", x.str());
  MOE_CHECK(w_gate.ndim() == 2 && is_16_or_32_bit_float(w_gate.dtype()),
            "router weight: expected bf16/f16/f32 [E, H], got ", w_gate.str());
  const int64_t num_tokens = x.size(0);
  const int64_t hidden = x.size(1);
  const int64_t num_experts = w_gate.size(0);
  MOE_CHECK(w_gate.size(1) == hidden, "router weight ", w_gate.str(), " does not match x ", x.str(),
            ": hidden sizes ", w_gate.size(1), " vs ", hidden);
  check_tensor(logits, "router logits", DType::kF32, {num_tokens, num_experts});
  const bool has_bias = !bias.empty();
  if (has_bias) {
    check_host(bias, "router bias");
    MOE_CHECK(bias.ndim() == 1 && bias.size(0) == num_experts &&
                  (bias.dtype() == DType::kF32 || bias.dtype() == DType::kBF16),
              "router bias: expected f32/bf16 [", num_experts, "], got ", bias.str());
  }
  if (num_tokens == 0 || num_experts == 0) return;

  // x as contiguous f32 [T, H] (used in place when it already is).
  std::vector<float> x_copy;
  const float* xf = nullptr;
  if (x.dtype() == DType::kF32 && x.is_contiguous()) {
    xf = x.data_as<const float>();
  } else {
    x_copy.resize(num_tokens * hidden);
    parallel_for(num_tokens, std::max<int64_t>(1, 65536 / std::max<int64_t>(hidden, 1)),
                 [&](int64_t begin, int64_t end) {
                   for (int64_t t = begin; t < end; ++t) {
                     for (int64_t h = 0; h < hidden; ++h) {
                       x_copy[t * hidden + h] = load_as_float(x, t, h);
                     }
                   }
                 });
    xf = x_copy.data();
  }

  // W as f32 in expert tiles, transposed within the tile: wt[tile][h][j] = W[tile*8 + j][h],
  // zero past the last expert.
  const int64_t num_tiles = (num_experts + kExpertTile - 1) / kExpertTile;
  std::vector<float> wt(num_tiles * hidden * kExpertTile);
  parallel_for(num_tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      float* dst = wt.data() + tile * hidden * kExpertTile;  // [H][8]
      for (int j = 0; j < kExpertTile; ++j) {
        const int64_t e = tile * kExpertTile + j;
        for (int64_t h = 0; h < hidden; ++h) {
          dst[h * kExpertTile + j] = e < num_experts ? load_as_float(w_gate, e, h) : 0.0f;
        }
      }
    }
  });

  std::vector<float> bias_f(has_bias ? num_experts : 0);
  for (int64_t e = 0; e < static_cast<int64_t>(bias_f.size()); ++e) {
    bias_f[e] = bias.dtype() == DType::kF32
                    ? bias.data_as<const float>()[e * bias.stride(0)]
                    : fmt::bf16_to_float(bias.data_as<const uint16_t>()[e * bias.stride(0)]);
  }

  const Rows<float> out(logits);
  const int64_t grain = std::max<int64_t>(1, 65536 / (kExpertTile * std::max<int64_t>(hidden, 1)));
  parallel_for(num_tokens * num_tiles, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / num_tiles;
      const int64_t tile = item % num_tiles;
      const float* xr = xf + t * hidden;                             // [H]
      const float* wtile = wt.data() + tile * hidden * kExpertTile;  // [H][8]
      float acc[kExpertTile] = {};
      for (int64_t h = 0; h < hidden; ++h) {
        const float xv = xr[h];
        const float* wh = wtile + h * kExpertTile;
        for (int j = 0; j < kExpertTile; ++j) acc[j] += xv * wh[j];
      }
      const int64_t first = tile * kExpertTile;
      const int count = static_cast<int>(std::min<int64_t>(kExpertTile, num_experts - first));
      for (int j = 0; j < count; ++j) {
        out.at(t, first + j) = has_bias ? acc[j] + bias_f[first + j] : acc[j];
      }
    }
  });
}

}  // namespace moe
