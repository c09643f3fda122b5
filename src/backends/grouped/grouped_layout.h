// Weight layout of the grouped backend's FC1: gate and up rows interleaved in blocks of 8,
//   stored row 16b + j      = gate row 8b + j   (j < 8)
//   stored row 16b + 8 + j  = up   row 8b + j
// so that a wgmma accumulator thread (rows r and r + 8 of a 16-row slice) holds a matching
// gate/up pair and the SwiGLU runs in the epilogue. Pure functions, tested on the CPU.
#pragma once

#include <cstdint>

namespace moe::grouped {

inline constexpr int kInterleave = 8;

struct SourceRow {
  bool up;      // false: gate (W1), true: up (W3)
  int64_t row;  // row of W1 or W3
};

/// Where stored FC1 row `r` comes from.
constexpr SourceRow fc1_source_row(int64_t r) {
  const int64_t block = r / (2 * kInterleave), j = r % (2 * kInterleave);
  return {j >= kInterleave, block * kInterleave + j % kInterleave};
}

/// Stored FC1 row of gate (up = false) or up (up = true) row `i`.
constexpr int64_t fc1_stored_row(bool up, int64_t i) {
  return (i / kInterleave) * 2 * kInterleave + (up ? kInterleave : 0) + i % kInterleave;
}

}  // namespace moe::grouped
