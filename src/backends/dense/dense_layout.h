// The dense backend's stacked layout, as pure functions (tested on the CPU).
//
// E routed experts of intermediate size I and a shared MLP of size S (0 without one) are
// laid end to end:
//   W13  [N1, H], N1 = 2 (E I + S)   rows: expert e's gate [2eI, 2eI + I), its up
//                                     [2eI + I, 2(e + 1)I); the shared gate [2EI, 2EI + S),
//                                     its up [2EI + S, N1)  ([gate | up] per segment)
//   W2   [H, K2], K2 = E I + S       columns: expert e [eI, (e + 1)I), shared [EI, K2)
// so FC1 is one GEMM over all segments and FC2 one GEMM whose K sums over them. A call that
// runs only the routed experts or only the shared MLP uses a contiguous sub-range of both.
#pragma once

#include <cstdint>

namespace moe::dense {

struct DenseDims {
  int num_experts = 0;       // E, routed experts on this GPU
  int64_t hidden = 0;        // H
  int64_t inter = 0;         // I
  int64_t shared_inter = 0;  // S (0: no shared MLP)

  constexpr int64_t n1() const { return 2 * (num_experts * inter + shared_inter); }
  constexpr int64_t k2() const { return num_experts * inter + shared_inter; }
  constexpr int num_segments() const { return num_experts + (shared_inter > 0 ? 1 : 0); }
  /// Intermediate size of segment `seg` (seg == num_experts: the shared MLP).
  constexpr int64_t segment_inter(int seg) const {
    return seg < num_experts ? inter : shared_inter;
  }
  /// First W13 row (FC1 output column) of segment `seg`'s gate; its up follows after
  /// segment_inter(seg) rows.
  constexpr int64_t gate_row(int seg) const { return 2 * seg * inter; }
  /// First W2 column (intermediate column) of segment `seg`.
  constexpr int64_t down_col(int seg) const { return seg * inter; }
};

/// Which segments one run_moe call computes.
enum class Variant : int { kRoutedAndShared = 0, kRouted = 1, kShared = 2 };
inline constexpr int kNumVariants = 3;

/// The contiguous ranges a variant uses: W13 rows [n_begin, n_end), W2 columns and
/// intermediate columns [k_begin, k_end).
struct VariantRange {
  int64_t n_begin, n_end;
  int64_t k_begin, k_end;
};

constexpr VariantRange variant_range(const DenseDims& d, Variant v) {
  const int64_t routed_k = d.num_experts * d.inter;
  switch (v) {
    case Variant::kRouted:
      return {0, 2 * routed_k, 0, routed_k};
    case Variant::kShared:
      return {2 * routed_k, d.n1(), routed_k, d.k2()};
    case Variant::kRoutedAndShared:
      break;
  }
  return {0, d.n1(), 0, d.k2()};
}

/// The variants a layer has: with a shared MLP all three, without one only kRouted.
constexpr bool variant_exists(const DenseDims& d, Variant v) {
  return d.shared_inter > 0 || v == Variant::kRouted;
}

constexpr int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/// The fp8 GEMMs run token counts padded to a multiple of this: their 1x128 activation
/// scales are laid out with the token count as leading dimension, which cuBLASLt wants
/// 16-byte aligned (the padding also makes that layout convention-independent).
/// NOTE: the one place to raise it should cuBLASLt want more on some version.
inline constexpr int64_t kFp8TokenAlign = 4;

/// Budget for the f32 FC1 output of one chunk of tokens.
inline constexpr int64_t kFc1ChunkBytes = int64_t{256} << 20;

/// Tokens run_moe processes per pass (its buffers hold one pass): as many as the FC1 budget
/// allows, between 16 and 256 (dense runs few tokens; past 256 it is compute-bound and grouped
/// wins), never more than max_num_tokens needs; a multiple of kFp8TokenAlign.
constexpr int64_t dense_chunk_tokens(const DenseDims& d, int64_t max_num_tokens) {
  int64_t by_budget = kFc1ChunkBytes / (d.n1() * 4);
  by_budget = by_budget < 16 ? 16 : (by_budget > 256 ? 256 : by_budget);
  const int64_t needed = round_up(max_num_tokens, kFp8TokenAlign);
  return (needed < by_budget ? needed : by_budget) / kFp8TokenAlign * kFp8TokenAlign;
}

}  // namespace moe::dense
