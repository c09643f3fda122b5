// Without CUDA there is no device allocator; asking for one is an error that says so.
#ifndef MOE_HAVE_CUDA
#include "moe/errors.h"
#include "moe/tensor.h"

namespace moe {
Allocator& cuda_allocator(int device_index) {
  MOE_THROW("cuda:", device_index, " memory requested, but MoE Engine was built without CUDA");
}
}  // namespace moe
#endif
