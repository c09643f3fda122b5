// The one table of tolerances: how far a backend's layer output may be from the reference
// backend's (relative L2), per quant mode. Both sides quantize activations the same way,
// so what remains is accumulation order, fp32 vs float64 math and 16-bit rounding of the
// intermediate and the output.
#pragma once

#include "moe/config.h"

namespace moe {

constexpr double layer_tolerance(QuantMode mode) {
  switch (mode) {
    case QuantMode::kBF16:
      return 1e-2;
    case QuantMode::kFP16:
      return 5e-3;
    case QuantMode::kFP8PerTensor:
    case QuantMode::kFP8Block:
    case QuantMode::kW4A8MXFP4MXFP8:
      // A flipped e4m3 rounding of the re-quantized intermediate moves one element by 1/16.
      return 3e-2;
    case QuantMode::kNVFP4:
    case QuantMode::kMXFP4:
      return 1.5e-2;
  }
  return 0;
}

}  // namespace moe
