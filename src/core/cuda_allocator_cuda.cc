// cudaMalloc-backed allocator (built only with CUDA).
#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <mutex>

#include "core/cuda_check.h"
#include "moe/tensor.h"

namespace moe {
namespace {

class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int device) : device_(device) {}
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    int previous = 0;
    MOE_CUDA_CHECK(cudaGetDevice(&previous));
    MOE_CUDA_CHECK(cudaSetDevice(device_));
    void* p = nullptr;
    MOE_CUDA_CHECK(cudaMalloc(&p, bytes), "allocating ", bytes, " bytes on cuda:", device_);
    MOE_CUDA_CHECK(cudaSetDevice(previous));
    return p;
  }
  void deallocate(void* ptr, size_t) override { cudaFree(ptr); }
  Device device() const override { return Device::cuda(device_); }

 private:
  int device_;
};

}  // namespace

Allocator& cuda_allocator(int device_index) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<CudaAllocator>> allocators;
  std::lock_guard lock(mutex);
  auto& a = allocators[device_index];
  if (!a) a = std::make_unique<CudaAllocator>(device_index);
  return *a;
}

}  // namespace moe
