// Routing kernels: route_cuda (logits -> top-k ids and weights) and router_logits_cuda (the
// router projection), for Hopper (sm_90a; nothing here is arch-specific).
//
// ---- route_kernel<method, kVpt> --------------------------------------------------------------
// Inputs:  logits f32 [T, E] (strided), correction bias f32 [E] (DeepSeek-V3, optional).
// Outputs: topk_ids i32 [T, k], topk_weights f32 [T, k] (strided); the error flag.
// One warp routes one token (kWarpsPerBlock tokens per block). Lane l holds the kVpt experts
// [l * kVpt, (l + 1) * kVpt) in registers; a contiguous range per lane, so that a sum in
// expert order is a chain from lane 0 to lane 31 (the softmax denominator).
// Steps, per token, in the fp32 operations and order of routing.cc (see there):
//   1. load the logits; note the first NaN / +inf (and an all -inf row under a softmax) for
//      the error flag; read NaN as -inf from here on.
//   2. selection scores: kSoftmaxTopK p[e] = exp(l[e] - max) / sum (sum chained in expert
//      order); kDeepSeekV3 b[e] = sigmoid(l[e]) (+ bias[e]), with the experts of dropped
//      groups removed (group score = top1 + top2 of b, or max of sigmoid(l) without a bias).
//      Groups of whole lanes (group_size a multiple of kVpt, a power-of-two lane count: every
//      preset) reduce their scores by butterflies, all groups at once, and each lane counts
//      the groups ranking before its own (lane_group_kept); otherwise groups are picked by
//      warp argmax, one group per lane (kept_groups). kLlama4, kGptOss the logits.
//   3. k rounds of warp argmax over (score desc, index asc) -- routing.cc's tie rule, so the
//      ids come out in its order; the owner lane removes the winner. Each round's weight is
//      added to a running total in output order; output i < 32 stays in lane i's registers,
//      later ones are written raw by lane (i % 32).
//   4. the lane holding output i divides its weight by the total (renormalize, GPT-OSS
//      softmax; DeepSeek-V3 adds 1e-20 first), multiplies by routed_scaling_factor and
//      writes it (and the id).
// The selection code is branch-free (selects, bitwise & and |): at one token the kernel is one
// warp's dependent chain, and the divergent branches of the short-circuit forms were most of
// it (DeepSeek-V3 20 -> 8.3 us, Qwen3-30B-A3B 10.5 -> 6.9 us, ncu, H100).
// Arithmetic uses the _rn intrinsics so that nvcc cannot contract a multiply and an add into
// one FMA (routing.cc rounds each operation).
//
// NOTE (exp): exp_f32 rounds the double-precision exp to fp32: the correctly rounded result
// (but for a 2^-29 fraction of double roundings). route_cpu calls glibc's expf, which is
// correctly rounded but for ~6e-4 of arguments (measured over [-20, 5]), where it is one ulp
// off. CUDA's expf (up to 2 ulp) would disagree far more often. Where they disagree:
//   - weights differ by an ulp or two (the tests allow 1e-6 relative);
//   - the ids of kSoftmaxTopK and kDeepSeekV3 can differ only if, in addition, the two
//     candidates at a selection boundary are within an ulp of each other. These ids rely on
//     exp agreeing: kSoftmaxTopK compares p (not the logits) because the CPU's p can tie where
//     the logits do not (exp rounding, underflow to 0), and ties go to the lower index;
//     DeepSeek-V3's biased scores are not a monotone function of the logits.
// kLlama4 and kGptOss select on the logits themselves: their ids are exact.
//
// ---- router_logits_cuda ----------------------------------------------------------------------
// bf16 x bf16 and f32 x f32: one cublasGemmEx (fp32 accumulation; one handle per device,
// created once and never destroyed), then a bias kernel when there is a bias. Other dtype
// pairs: router_logits_kernel, a 64 x 64 SIMT tile that converts x and W to f32 in shared
// memory and accumulates with FMAs in order of h, bias fused.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <map>
#include <mutex>
#include <utility>

#include "core/cuda_check.h"
#include "core/launch.cuh"
#include "moe/errors.h"
#include "routing/routing.h"
#include "routing/routing_cuda.h"

namespace moe {
namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpsPerBlock = 4;  // tokens per block
constexpr int kRouteThreads = kWarpsPerBlock * kWarpSize;
constexpr int kNoIndex = INT_MAX;      // "no candidate": loses to every expert
constexpr int32_t kNoError = INT_MAX;  // its position bits exceed every real one
constexpr float kNegInf = -__builtin_inff();
constexpr float kPosInf = __builtin_inff();
constexpr float kRenormEpsilon = 1e-20f;  // DeepSeek-V3's norm_topk_prob denominator guard

// Experts per lane compiled in, written once (E <= 32 * the largest). MOE_TRIM_KERNELS keeps
// two for fast builds.
#ifdef MOE_TRIM_KERNELS
constexpr int kExpertsPerLane[] = {4, 16};
#else
constexpr int kExpertsPerLane[] = {1, 2, 4, 8, 12, 16};
#endif
static_assert(kExpertsPerLane[std::size(kExpertsPerLane) - 1] * kWarpSize ==
              kMaxCudaRoutingExperts);
static_assert(kMaxCudaRoutingGroups <= kWarpSize, "one group per lane");

struct RouteParams {
  const float* logits;  // [T, E]
  int64_t logits_row_stride;
  int64_t logits_col_stride;
  const float* correction_bias;  // [E], or nullptr
  int32_t* topk_ids;             // [T, k]
  int64_t ids_row_stride;
  int64_t ids_col_stride;
  float* topk_weights;  // [T, k]
  int64_t weights_row_stride;
  int64_t weights_col_stride;
  int32_t* error_flag;  // or nullptr
  int num_tokens;
  int num_experts;
  int top_k;
  int num_groups;   // DeepSeek-V3
  int topk_groups;  // == num_groups: every group kept, no group scores
  bool renormalize;
  float routed_scaling_factor;
};

// ---- Device helpers -------------------------------------------------------------------------

// exp(x) rounded once to fp32 (see the NOTE at the top).
__device__ __forceinline__ float exp_f32(float x) {
  return __double2float_rn(exp(static_cast<double>(x)));
}

// 1 / (1 + exp(-x)), as routing.cc.
__device__ __forceinline__ float sigmoid_f32(float x) {
  return __fdiv_rn(1.0f, __fadd_rn(1.0f, exp_f32(-x)));
}

struct Candidate {
  float score;
  int index;
};

// routing.cc's order: higher score first, the lower index on a tie. A total order on the
// candidates of a warp (scores are never NaN; indices are distinct but for kNoIndex).
// NOTE: bitwise & and |, and selects rather than branches (here and in the selection loops):
// the short-circuit forms compiled to divergent branches (BSSY / BSYNC) that dominated the
// kernel's time at one token (ncu SASS view, bench/NOTES.md eighth session).
__device__ __forceinline__ bool ranks_before(const Candidate& a, const Candidate& b) {
  return (a.score > b.score) | ((a.score == b.score) & (a.index < b.index));
}

// `c` replaced by `other` where `take`.
__device__ __forceinline__ void take_if(Candidate& c, const Candidate& other, bool take) {
  c.score = take ? other.score : c.score;
  c.index = take ? other.index : c.index;
}

// A score as an unsigned key in the same order (scores are never NaN); -0 counts as +0, as
// the float comparison has them equal (the tie then goes to the lower index).
__device__ __forceinline__ uint32_t score_key(float score) {
  const uint32_t b = __float_as_uint(__fadd_rn(score, 0.0f));  // -0 + 0 = +0
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_score(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

// The best candidate of the warp (ranks_before's order), in every lane: the highest score by
// one redux.sync over the keys, then the lowest index among the lanes holding it by another
// (two instructions where a shuffle butterfly of (score, index) took ten shuffles and five
// compare-and-select steps on the selection's dependent chain).
__device__ __forceinline__ Candidate warp_best(Candidate c) {
  const uint32_t key = score_key(c.score);
  const uint32_t best = __reduce_max_sync(kFullMask, key);
  const uint32_t index =
      __reduce_min_sync(kFullMask, key == best ? static_cast<uint32_t>(c.index) : 0xFFFFFFFFu);
  return Candidate{key_score(best), static_cast<int>(index)};
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

// a[j] for a runtime j, without sending the array to local memory.
template <int kVpt>
__device__ __forceinline__ float pick(const float (&a)[kVpt], int j) {
  float v = 0.0f;
#pragma unroll
  for (int i = 0; i < kVpt; ++i) v = i == j ? a[i] : v;
  return v;
}

// ---- The error flag -------------------------------------------------------------------------

__device__ __forceinline__ int32_t error_code(RoutingError::Kind kind, int64_t position) {
  return (static_cast<int32_t>(kind) << kRoutingErrorKindShift) |
         static_cast<int32_t>(position + 1);
}

__device__ __forceinline__ bool earlier_error(int32_t a, int32_t b) {
  return (a & kRoutingErrorPositionMask) < (b & kRoutingErrorPositionMask);
}

__device__ __forceinline__ void note_error(int32_t& first, int32_t code) {
  if (earlier_error(code, first)) first = code;
}

// The earliest error of the warp, in every lane.
__device__ __forceinline__ int32_t warp_first_error(int32_t code) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    note_error(code, __shfl_xor_sync(kFullMask, code, offset));
  }
  return code;
}

// Keeps the earliest error in *flag (0 = none yet).
__device__ void record_error(int32_t* flag, int32_t code) {
  int32_t seen = atomicCAS(flag, 0, code);
  while (seen != 0 && earlier_error(code, seen)) {
    const int32_t previous = atomicCAS(flag, seen, code);
    if (previous == seen) break;
    seen = previous;
  }
}

// ---- DeepSeek-V3 group selection ------------------------------------------------------------

// Whether this lane's group is kept, where each group is a power-of-two run of whole lanes
// (group_size a multiple of kVpt: the lane's experts lie in group first / group_size): the
// group's top1 + top2 (or max) reduced over its lanes by butterflies, all groups at once, then
// each lane counts the groups that rank before its own (score desc, index asc: the order of
// kept_groups' argmax rounds). Lanes past the experts belong to no group and return false.
template <int kVpt>
__device__ bool lane_group_kept(const RouteParams& p, const float (&biased)[kVpt],
                                const float (&sig)[kVpt], int first, int lanes_per_group) {
  const int group_size = p.num_experts / p.num_groups;
  const bool has_bias = p.correction_bias != nullptr;
  float top1 = kNegInf, top2 = kNegInf;  // (has_bias) the lane's top two, as a multiset
#pragma unroll
  for (int j = 0; j < kVpt; ++j) {
    const float v = has_bias ? biased[j] : sig[j];
    const bool mine = first + j < p.num_experts;
    top2 = mine ? fmaxf(top2, fminf(top1, v)) : top2;
    top1 = mine ? fmaxf(top1, v) : top1;
  }
  for (int offset = 1; offset < lanes_per_group; offset *= 2) {
    const float other1 = __shfl_xor_sync(kFullMask, top1, offset);
    const float other2 = __shfl_xor_sync(kFullMask, top2, offset);
    top2 = fmaxf(fminf(top1, other1), fmaxf(top2, other2));
    top1 = fmaxf(top1, other1);
  }
  const float score = has_bias ? __fadd_rn(top1, top2) : top1;
  const int group = first / group_size;
  int before = 0;  // groups ranking before this lane's
  for (int g = 0; g < p.num_groups; ++g) {
    const Candidate other{__shfl_sync(kFullMask, score, g * lanes_per_group), g};
    before += ranks_before(other, Candidate{score, group}) ? 1 : 0;
  }
  return group < p.num_groups && before < p.topk_groups;
}

// Bit g set: group g is kept. Lane g computes nothing special; every lane gets the mask.
// (The general case: groups not aligned to lanes.)
template <int kVpt>
__device__ uint32_t kept_groups(const RouteParams& p, const float (&biased)[kVpt],
                                const float (&sig)[kVpt], int first, int lane) {
  const int group_size = p.num_experts / p.num_groups;
  const bool has_bias = p.correction_bias != nullptr;
  float my_group_score = kNegInf;  // lane g: group g
  for (int g = 0; g < p.num_groups; ++g) {
    const int begin = g * group_size;
    const int end = begin + group_size;
    float score;
    if (has_bias) {  // top1 + top2 of the biased scores (as a multiset: order-free)
      float top1 = kNegInf, top2 = kNegInf;
#pragma unroll
      for (int j = 0; j < kVpt; ++j) {
        const int e = first + j;
        if (e < begin || e >= end) continue;
        if (biased[j] > top1) {
          top2 = top1;
          top1 = biased[j];
        } else if (biased[j] > top2) {
          top2 = biased[j];
        }
      }
#pragma unroll
      for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        const float other1 = __shfl_xor_sync(kFullMask, top1, offset);
        const float other2 = __shfl_xor_sync(kFullMask, top2, offset);
        top2 = fmaxf(fminf(top1, other1), fmaxf(top2, other2));
        top1 = fmaxf(top1, other1);
      }
      score = __fadd_rn(top1, top2);
    } else {  // the best unbiased score
      float best = kNegInf;
#pragma unroll
      for (int j = 0; j < kVpt; ++j) {
        const int e = first + j;
        if (e >= begin && e < end) best = fmaxf(best, sig[j]);
      }
      score = warp_max(best);
    }
    if (lane == g) my_group_score = score;
  }

  Candidate mine{my_group_score, lane < p.num_groups ? lane : kNoIndex};
  uint32_t kept = 0;
  for (int i = 0; i < p.topk_groups; ++i) {
    const Candidate best = warp_best(mine);
    kept |= 1u << best.index;
    if (lane == best.index) mine = {kNegInf, kNoIndex};
  }
  return kept;
}

// ---- The routing kernel ---------------------------------------------------------------------

template <RoutingMethod kMethod, int kVpt>
__global__ void __launch_bounds__(kRouteThreads) route_kernel(const RouteParams p) {
  constexpr bool kSoftmax = kMethod == RoutingMethod::kSoftmaxTopK;
  constexpr bool kDeepSeek = kMethod == RoutingMethod::kDeepSeekV3;
  constexpr bool kGptOss = kMethod == RoutingMethod::kGptOss;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (token >= p.num_tokens) return;  // the whole warp leaves together
  const int num_experts = p.num_experts;
  const int first = lane * kVpt;  // this lane's experts: [first, first + kVpt)
  const float* row = p.logits + token * p.logits_row_stride;

  // 1. Logits; errors; NaN read as -inf. NOTE: the lane's kVpt loads (and DeepSeek-V3's
  // biases) all go out before any value is looked at: loaded inside the checking loop, each
  // waited for the previous one's checks -- kVpt round trips to memory in a row at one token
  // (3.8 us of Qwen3-30B-A3B's 33 us decode layer, 6.1 of DeepSeek-V3's 160).
  float logit[kVpt];  // then the selection scores
#pragma unroll
  for (int j = 0; j < kVpt; ++j) {
    const int e = first + j;
    logit[j] = e < num_experts ? row[e * p.logits_col_stride] : kNegInf;
  }
  float bias[kDeepSeek ? kVpt : 1];
  if constexpr (kDeepSeek) {
#pragma unroll
    for (int j = 0; j < kVpt; ++j) {
      const int e = first + j;
      bias[j] = p.correction_bias != nullptr && e < num_experts ? p.correction_bias[e] : 0.0f;
    }
  }
  uint32_t removed = 0;  // bit j: expert first + j is not (or no longer) a candidate
  int32_t first_error = kNoError;
  bool all_neg_inf = true;
#pragma unroll
  for (int j = 0; j < kVpt; ++j) {
    const int e = first + j;
    if (e >= num_experts) {
      removed |= 1u << j;
      continue;
    }
    float v = logit[j];
    all_neg_inf = all_neg_inf && v == kNegInf;
    if (isnan(v)) {
      note_error(first_error, error_code(RoutingError::Kind::kNaNLogit, token * num_experts + e));
      v = kNegInf;
    } else if (v == kPosInf) {
      note_error(first_error,
                 error_code(RoutingError::Kind::kPosInfLogit, token * num_experts + e));
    }
    logit[j] = v;
  }
  bool token_error = __any_sync(kFullMask, first_error != kNoError);
  if constexpr (kSoftmax || kGptOss) {
    if (__all_sync(kFullMask, all_neg_inf)) {
      token_error = true;
      first_error = error_code(RoutingError::Kind::kAllNegInfLogits, token * num_experts);
    }
  }

  // 2. Selection scores (in logit[]) and, for DeepSeek-V3, the weights (sig[]).
  float sig[kDeepSeek ? kVpt : 1];
  if constexpr (kSoftmax) {
    float max_logit = kNegInf;
#pragma unroll
    for (int j = 0; j < kVpt; ++j) max_logit = fmaxf(max_logit, logit[j]);
    max_logit = warp_max(max_logit);
#pragma unroll
    for (int j = 0; j < kVpt; ++j) logit[j] = exp_f32(__fsub_rn(logit[j], max_logit));
    // sum = p[0] + p[1] + ... in expert order: the warp's p in shared memory, lane 0 adds them
    // in order and broadcasts the sum (a chain of adds only; handing a running sum from lane
    // to lane put a shuffle's latency on every step).
    __shared__ float warp_p[kWarpsPerBlock][kMaxCudaRoutingExperts];
    float* p_row = warp_p[threadIdx.x / kWarpSize];
#pragma unroll
    for (int j = 0; j < kVpt; ++j) {
      if (first + j < num_experts) p_row[first + j] = logit[j];
    }
    __syncwarp();
    float sum = 0.0f;
    if (lane == 0) {
      for (int e = 0; e < num_experts; ++e) sum = __fadd_rn(sum, p_row[e]);
    }
    sum = __shfl_sync(kFullMask, sum, 0);
#pragma unroll
    for (int j = 0; j < kVpt; ++j) {
      const float prob = __fdiv_rn(logit[j], sum);
      logit[j] = isnan(prob) ? kNegInf : prob;  // NaN only for an all -inf row (an error)
    }
  } else if constexpr (kDeepSeek) {
#pragma unroll
    for (int j = 0; j < kVpt; ++j) {
      const int e = first + j;
      sig[j] = sigmoid_f32(logit[j]);
      if (p.correction_bias != nullptr && e < num_experts) {
        if (token == 0 && !isfinite(bias[j])) {
          note_error(first_error, error_code(RoutingError::Kind::kNonFiniteCorrectionBias, e));
        }
        const float biased = __fadd_rn(sig[j], bias[j]);
        logit[j] = isnan(biased) ? kNegInf : biased;
      } else {
        logit[j] = sig[j];
      }
    }
    if (p.topk_groups < p.num_groups) {
      const int group_size = num_experts / p.num_groups;
      const int lanes_per_group = group_size / kVpt;
      if (group_size % kVpt == 0 && (lanes_per_group & (lanes_per_group - 1)) == 0) {
        // NOTE: uniform over the warp; lanes past the experts have every bit removed already.
        if (!lane_group_kept<kVpt>(p, logit, sig, first, lanes_per_group)) removed = ~0u;
      } else {
        const uint32_t kept = kept_groups<kVpt>(p, logit, sig, first, lane);
#pragma unroll
        for (int j = 0; j < kVpt; ++j) {
          const int e = first + j;
          if (e < num_experts && !((kept >> (e / group_size)) & 1u)) removed |= 1u << j;
        }
      }
    }
  }

  if (p.error_flag != nullptr && __any_sync(kFullMask, first_error != kNoError)) {
    const int32_t code = warp_first_error(first_error);
    if (lane == 0) record_error(p.error_flag, code);
  }

  // 3. k rounds of warp argmax. NOTE: the host checked that at least k experts are
  // candidates, so the winner is always an expert.
  int32_t* ids = p.topk_ids + token * p.ids_row_stride;
  float* weights = p.topk_weights + token * p.weights_row_stride;
  float total = 0.0f;  // sum of the weights in output order
  float top_logit = 0.0f;
  // Output `lane` (< 32): its id and raw weight, written once normalised (step 4); outputs
  // from 32 on go to memory raw and are read back.
  int my_id = 0;
  float my_weight = 0.0f;
  for (int i = 0; i < p.top_k; ++i) {
    Candidate mine{kNegInf, kNoIndex};
#pragma unroll
    for (int j = 0; j < kVpt; ++j) {
      const Candidate c{logit[j], first + j};
      take_if(mine, c, !((removed >> j) & 1u) & ranks_before(c, mine));
    }
    const Candidate best = warp_best(mine);
    const int owner = best.index / kVpt;
    const int slot = best.index - owner * kVpt;
    removed |= lane == owner ? 1u << slot : 0u;

    float weight;
    if constexpr (kDeepSeek) {
      weight = __shfl_sync(kFullMask, pick(sig, slot), owner);
    } else if constexpr (kSoftmax) {
      weight = best.score;
    } else if constexpr (kGptOss) {
      if (i == 0) top_logit = best.score;
      weight = exp_f32(__fsub_rn(best.score, top_logit));
    } else {  // kLlama4
      weight = sigmoid_f32(best.score);
    }
    total = __fadd_rn(total, weight);
    my_id = lane == i ? best.index : my_id;
    my_weight = lane == i ? weight : my_weight;
    if (i >= kWarpSize && lane == i % kWarpSize) {
      ids[i * p.ids_col_stride] = best.index;
      weights[i * p.weights_col_stride] = weight;
    }
  }

  // 4. Normalise and scale this lane's weights.
  const bool normalize = kGptOss || ((kSoftmax || kDeepSeek) && p.renormalize);
  const float denom = kDeepSeek ? __fadd_rn(total, kRenormEpsilon) : total;
  for (int i = lane; i < p.top_k; i += kWarpSize) {
    float w = i == lane ? my_weight : weights[i * p.weights_col_stride];
    if (i == lane) ids[i * p.ids_col_stride] = my_id;
    if (normalize) w = __fdiv_rn(w, denom);
    w = __fmul_rn(w, p.routed_scaling_factor);
    weights[i * p.weights_col_stride] = token_error ? 0.0f : w;
  }
}

// ---- Router projection kernels --------------------------------------------------------------

constexpr int kGemmTile = 64;      // tokens and experts per block
constexpr int kGemmTileK = 16;     // h per shared-memory stage
constexpr int kGemmThreads = 256;  // 16 x 16, each 4 tokens x 4 experts

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

// logits[t, e] = sum_h x[t, h] w[e, h] (+ bias[e]). x [T, H] (row stride x_stride), w [E, H]
// contiguous, logits [T, E] (row stride out_stride). Block (bx, by): experts bx*64.., tokens
// by*64..; thread (ty, tx) owns tokens ty + 16 i and experts tx + 16 j.
template <class XT, class WT>
__global__ void __launch_bounds__(kGemmThreads)
    router_logits_kernel(const XT* x, int64_t x_stride, const WT* w, const float* bias,
                         float* logits, int64_t out_stride, int num_tokens, int num_experts,
                         int hidden) {
  __shared__ float xs[kGemmTileK][kGemmTile + 1];  // [h][token]
  __shared__ float ws[kGemmTileK][kGemmTile + 1];  // [h][expert]
  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % 16;
  const int ty = tid / 16;
  const int64_t token0 = static_cast<int64_t>(blockIdx.y) * kGemmTile;
  const int expert0 = static_cast<int>(blockIdx.x) * kGemmTile;
  float acc[4][4] = {};
  for (int h0 = 0; h0 < hidden; h0 += kGemmTileK) {
#pragma unroll
    for (int r = 0; r < kGemmTile * kGemmTileK / kGemmThreads; ++r) {
      const int idx = tid + r * kGemmThreads;
      const int row = idx / kGemmTileK;
      const int col = idx % kGemmTileK;
      const int h = h0 + col;
      const int64_t t = token0 + row;
      const int e = expert0 + row;
      xs[col][row] = t < num_tokens && h < hidden ? to_f32(x[t * x_stride + h]) : 0.0f;
      ws[col][row] =
          e < num_experts && h < hidden ? to_f32(w[static_cast<int64_t>(e) * hidden + h]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kGemmTileK; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[k][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = ws[k][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t t = token0 + ty + 16 * i;
    if (t >= num_tokens) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int e = expert0 + tx + 16 * j;
      if (e >= num_experts) continue;
      logits[t * out_stride + e] = bias != nullptr ? __fadd_rn(acc[i][j], bias[e]) : acc[i][j];
    }
  }
}

// logits[t, e] += bias[e]; logits [T, E] with row stride out_stride.
__global__ void add_bias_kernel(float* logits, int64_t out_stride, const float* bias,
                                int num_tokens, int num_experts) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(num_tokens) * num_experts) return;
  const int64_t t = i / num_experts;
  const int e = static_cast<int>(i % num_experts);
  float& v = logits[t * out_stride + e];
  v = __fadd_rn(v, bias[e]);
}

// ---- Host helpers ---------------------------------------------------------------------------

// Makes `device` current for the scope (launches and cuBLAS handles follow it).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    MOE_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) MOE_CUDA_CHECK(cudaSetDevice(device));
    changed_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

// `t` must be on `device`, where `reference` (named in the message) is.
void check_on_device(const TensorView& t, const char* what, Device device, const char* reference) {
  MOE_CHECK(t.device() == device, what, " must be on ", device.str(), " with the ", reference,
            ", got ", t.str());
}

void check_cuda_tensor(const TensorView& t, const char* what) {
  MOE_CHECK(t.device().is_cuda(), what, " must be on a CUDA device, got ", t.str());
}

// The shared checks (check_routing_args), placement on one CUDA device, and the kernel's limits.
void check_route_args(const RoutingConfig& routing, int top_k, const TensorView& logits,
                      const TensorView& correction_bias, const TensorView& topk_ids,
                      const TensorView& topk_weights, const int32_t* error_flag) {
  check_cuda_tensor(logits, "router logits");
  const Device device = logits.device();
  check_on_device(topk_ids, "topk_ids", device, "router logits");
  check_on_device(topk_weights, "topk_weights", device, "router logits");
  check_routing_args(routing, top_k, logits, correction_bias, topk_ids, topk_weights);
  const int64_t num_tokens = logits.size(0);
  const int64_t num_experts = logits.size(1);
  MOE_CHECK(num_experts <= kMaxCudaRoutingExperts, "CUDA routing handles at most ",
            kMaxCudaRoutingExperts, " experts, got ", logits.str());
  MOE_CHECK(
      error_flag == nullptr || num_tokens * num_experts < int64_t{kRoutingErrorPositionMask} - 1,
      "CUDA routing with an error flag handles at most ", kRoutingErrorPositionMask - 2,
      " (token, expert) pairs per call, got ", logits.str());
  if (routing.method != RoutingMethod::kDeepSeekV3) return;
  MOE_CHECK(
      routing.topk_groups == routing.num_groups || routing.num_groups <= kMaxCudaRoutingGroups,
      "CUDA routing selects among at most ", kMaxCudaRoutingGroups,
      " groups, got routing.num_groups = ", routing.num_groups);
  if (routing.has_correction_bias) {
    check_on_device(correction_bias, "correction bias", device, "router logits");
  }
}

template <RoutingMethod kMethod, int kVpt>
void launch_route(const RouteParams& p, cudaStream_t stream) {
  LaunchOptions o;
  o.grid = dim3(static_cast<unsigned>((p.num_tokens + kWarpsPerBlock - 1) / kWarpsPerBlock));
  o.block = dim3(kRouteThreads);
  o.stream = stream;
  launch_kernel("route_kernel", &route_kernel<kMethod, kVpt>, o, p);
}

template <RoutingMethod kMethod>
void dispatch_experts_per_lane(const RouteParams& p, cudaStream_t stream) {
  const int needed = (p.num_experts + kWarpSize - 1) / kWarpSize;
  bool done = false;
  auto try_one = [&]<int kVpt>() {
    if (!done && kVpt >= needed) {
      launch_route<kMethod, kVpt>(p, stream);
      done = true;
    }
  };
  [&]<size_t... I>(std::index_sequence<I...>) {
    (try_one.template operator()<kExpertsPerLane[I]>(), ...);
  }
  (std::make_index_sequence<std::size(kExpertsPerLane)>{});
  MOE_CHECK(done, "CUDA routing: no kernel for ", p.num_experts, " experts");
}

// ---- cuBLAS ---------------------------------------------------------------------------------

// One handle per device, created on first use and never destroyed (destroying it at exit
// can run after the CUDA context is gone). The mutex covers cublasSetStream and the GEMM
// call together, so that concurrent callers cannot swap each other's stream; the handle
// keeps cuBLAS's default workspace (allocated when the handle is created).
std::mutex& cublas_mutex() {
  static std::mutex mutex;
  return mutex;
}

cublasHandle_t cublas_handle_locked(int device) {
  static std::map<int, cublasHandle_t> handles;
  cublasHandle_t& handle = handles[device];
  if (handle == nullptr)
    MOE_CUBLAS_CHECK(cublasCreate(&handle), "creating the router's cuBLAS handle");
  return handle;
}

cudaDataType_t cuda_data_type(DType d) {
  switch (d) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      MOE_UNREACHABLE("dtype ", dtype_name(d), " in the router projection");
  }
}

template <class XT, class WT>
void launch_router_logits(const TensorView& x, const TensorView& w_gate, const float* bias,
                          const TensorView& logits, cudaStream_t stream) {
  const int num_tokens = static_cast<int>(x.size(0));
  const int hidden = static_cast<int>(x.size(1));
  const int num_experts = static_cast<int>(w_gate.size(0));
  LaunchOptions o;
  o.grid =
      dim3((num_experts + kGemmTile - 1) / kGemmTile, (num_tokens + kGemmTile - 1) / kGemmTile);
  o.block = dim3(kGemmThreads);
  o.stream = stream;
  launch_kernel("router_logits_kernel", &router_logits_kernel<XT, WT>, o, x.data_as<const XT>(),
                x.stride(0), w_gate.data_as<const WT>(), bias, logits.data_as<float>(),
                logits.stride(0), num_tokens, num_experts, hidden);
}

template <class XT>
void dispatch_weight_dtype(const TensorView& x, const TensorView& w_gate, const float* bias,
                           const TensorView& logits, cudaStream_t stream) {
  switch (w_gate.dtype()) {
    case DType::kBF16:
      return launch_router_logits<XT, __nv_bfloat16>(x, w_gate, bias, logits, stream);
    case DType::kF32:
      return launch_router_logits<XT, float>(x, w_gate, bias, logits, stream);
    default:
      MOE_UNREACHABLE("router weight dtype ", dtype_name(w_gate.dtype()));
  }
}

}  // namespace

void route_cuda(const RoutingConfig& routing, int top_k, const TensorView& logits,
                const TensorView& correction_bias, const TensorView& topk_ids,
                const TensorView& topk_weights, int32_t* error_flag, void* stream) {
  check_route_args(routing, top_k, logits, correction_bias, topk_ids, topk_weights, error_flag);
  const int64_t num_tokens = logits.size(0);
  if (num_tokens == 0) return;
  MOE_CHECK(num_tokens <= INT_MAX / 2, "CUDA routing: ", num_tokens, " tokens in one call");
  DeviceGuard guard(logits.device().index);

  RouteParams p{};
  p.logits = logits.data_as<const float>();
  p.logits_row_stride = logits.stride(0);
  p.logits_col_stride = logits.stride(1);
  p.correction_bias = correction_bias.empty() ? nullptr : correction_bias.data_as<const float>();
  p.topk_ids = topk_ids.data_as<int32_t>();
  p.ids_row_stride = topk_ids.stride(0);
  p.ids_col_stride = topk_ids.stride(1);
  p.topk_weights = topk_weights.data_as<float>();
  p.weights_row_stride = topk_weights.stride(0);
  p.weights_col_stride = topk_weights.stride(1);
  p.error_flag = error_flag;
  p.num_tokens = static_cast<int>(num_tokens);
  p.num_experts = static_cast<int>(logits.size(1));
  p.top_k = top_k;
  p.num_groups = routing.num_groups;
  p.topk_groups = routing.topk_groups;
  p.renormalize = routing.renormalize;
  p.routed_scaling_factor = routing.routed_scaling_factor;
  if (routing.method != RoutingMethod::kDeepSeekV3) p.num_groups = p.topk_groups = 1;

  const auto s = static_cast<cudaStream_t>(stream);
  switch (routing.method) {
    case RoutingMethod::kSoftmaxTopK:
      return dispatch_experts_per_lane<RoutingMethod::kSoftmaxTopK>(p, s);
    case RoutingMethod::kDeepSeekV3:
      return dispatch_experts_per_lane<RoutingMethod::kDeepSeekV3>(p, s);
    case RoutingMethod::kLlama4:
      return dispatch_experts_per_lane<RoutingMethod::kLlama4>(p, s);
    case RoutingMethod::kGptOss:
      return dispatch_experts_per_lane<RoutingMethod::kGptOss>(p, s);
  }
  MOE_UNREACHABLE("routing method ", static_cast<int>(routing.method));
}

void router_logits_cuda(const TensorView& x, const TensorView& w_gate, const TensorView& bias,
                        const TensorView& logits, void* stream) {
  check_cuda_tensor(x, "router input x");
  const Device device = x.device();
  check_on_device(w_gate, "router weight", device, "router input x");
  check_on_device(logits, "router logits", device, "router input x");
  MOE_CHECK(x.ndim() == 2 &&
                (x.dtype() == DType::kBF16 || x.dtype() == DType::kF16 || x.dtype() == DType::kF32),
            "router input x: expected bf16/f16/f32 [T, H], got ", x.str());
  MOE_CHECK(w_gate.ndim() == 2 && (w_gate.dtype() == DType::kBF16 || w_gate.dtype() == DType::kF32),
            "router weight: expected bf16/f32 [E, H], got ", w_gate.str());
  const int64_t num_tokens = x.size(0);
  const int64_t hidden = x.size(1);
  const int64_t num_experts = w_gate.size(0);
  MOE_CHECK(w_gate.size(1) == hidden, "router weight ", w_gate.str(), " does not match x ", x.str(),
            ": hidden sizes ", w_gate.size(1), " vs ", hidden);
  MOE_CHECK(w_gate.is_contiguous(), "router weight must be contiguous, got ", w_gate.str());
  MOE_CHECK(hidden == 0 || x.stride(1) == 1, "router input x must have unit column stride, got ",
            x.str());
  check_tensor(logits, "router logits", DType::kF32, {num_tokens, num_experts});
  MOE_CHECK(logits.stride(1) == 1, "router logits must have unit column stride, got ",
            logits.str());
  MOE_CHECK(num_tokens <= INT_MAX && num_experts <= INT_MAX && hidden <= INT_MAX,
            "router projection too large: ", x.str(), " x ", w_gate.str());
  const float* bias_ptr = nullptr;
  if (!bias.empty()) {
    check_on_device(bias, "router bias", device, "router input x");
    check_tensor(bias, "router bias", DType::kF32, {num_experts});
    MOE_CHECK(bias.is_contiguous(), "router bias must be contiguous, got ", bias.str());
    bias_ptr = bias.data_as<const float>();
  }
  if (num_tokens == 0 || num_experts == 0) return;
  DeviceGuard guard(device.index);
  const auto s = static_cast<cudaStream_t>(stream);

  if (x.dtype() == w_gate.dtype() && hidden > 0) {  // bf16 x bf16 or f32 x f32: cuBLAS
    // Column-major view: logits^T [E, T] = W [E, H] (stored as H x E, transposed) x x^T.
    const int m = static_cast<int>(num_experts);
    const int n = static_cast<int>(num_tokens);
    const int k = static_cast<int>(hidden);
    const float alpha = 1.0f;
    const float beta = 0.0f;
    const cudaDataType_t type = cuda_data_type(x.dtype());
    {
      std::lock_guard lock(cublas_mutex());
      cublasHandle_t handle = cublas_handle_locked(device.index);
      MOE_CUBLAS_CHECK(cublasSetStream(handle, s));
      MOE_CUBLAS_CHECK(
          cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w_gate.data(), type, k,
                       x.data(), type, static_cast<int>(x.stride(0)), &beta, logits.data(),
                       CUDA_R_32F, static_cast<int>(logits.stride(0)), CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT),
          "router projection ", x.str(), " x ", w_gate.str());
    }
    if (bias_ptr != nullptr) {
      const int64_t count = num_tokens * num_experts;
      LaunchOptions o;
      o.grid = dim3(static_cast<unsigned>((count + 255) / 256));
      o.block = dim3(256);
      o.stream = s;
      launch_kernel("add_bias_kernel", &add_bias_kernel, o, logits.data_as<float>(),
                    logits.stride(0), bias_ptr, static_cast<int>(num_tokens),
                    static_cast<int>(num_experts));
    }
    return;
  }
  switch (x.dtype()) {
    case DType::kBF16:
      return dispatch_weight_dtype<__nv_bfloat16>(x, w_gate, bias_ptr, logits, s);
    case DType::kF16:
      return dispatch_weight_dtype<__half>(x, w_gate, bias_ptr, logits, s);
    case DType::kF32:
      return dispatch_weight_dtype<float>(x, w_gate, bias_ptr, logits, s);
    default:
      MOE_UNREACHABLE("router input dtype ", dtype_name(x.dtype()));
  }
}

int32_t read_routing_error_flag(int32_t* error_flag, Device device, bool clear) {
  MOE_CHECK(error_flag != nullptr, "read_routing_error_flag: no flag");
  MOE_CHECK(device.is_cuda(), "read_routing_error_flag: the flag must be on a CUDA device, got ",
            device.str());
  DeviceGuard guard(device.index);
  MOE_CUDA_CHECK(cudaDeviceSynchronize(), "waiting for the routing kernels");
  int32_t value = 0;
  MOE_CUDA_CHECK(cudaMemcpy(&value, error_flag, sizeof(value), cudaMemcpyDeviceToHost));
  if (clear && value != 0) MOE_CUDA_CHECK(cudaMemset(error_flag, 0, sizeof(value)));
  return value;
}

void clear_routing_error_flag(int32_t* error_flag, void* stream) {
  MOE_CHECK(error_flag != nullptr, "clear_routing_error_flag: no flag");
  MOE_CUDA_CHECK(
      cudaMemsetAsync(error_flag, 0, sizeof(int32_t), static_cast<cudaStream_t>(stream)));
}

}  // namespace moe
