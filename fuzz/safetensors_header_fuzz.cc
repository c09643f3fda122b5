// libFuzzer target for the safetensors header parser (src/weights/safetensors.cc).
//
// Contract under test: for any byte string, parse_safetensors_header either returns a header
// whose every tensor range lies inside the data section and whose byte counts match
// shape x dtype, or throws moe::Error. Any other exception, a crash or a sanitizer report is
// a bug. Build and run with scripts/fuzz.sh (clang -fsanitize=fuzzer,address,undefined);
// seeds in fuzz/corpus/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "moe/errors.h"
#include "weights/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const moe::StHeader h =
        moe::parse_safetensors_header(std::span<const uint8_t>(data, size), "fuzz-input");
    for (const moe::StTensorInfo& t : h.tensors) {
      const uint64_t bits = static_cast<uint64_t>(t.numel()) * t.dtype->bits;
      if (t.end > h.data_size || t.begin > t.end || bits / 8 != t.nbytes()) std::abort();
      if (h.data_offset + h.data_size != size) std::abort();
    }
  } catch (const moe::Error&) {
    // rejected with a message: the expected outcome for malformed input
  }
  return 0;
}
