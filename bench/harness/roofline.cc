// measure_roofline (roofline.h).
#include "bench/harness/roofline.h"

#include "bench/harness/device_fill.h"
#include "bench/harness/timer.h"
#include "core/cuda_check.h"

namespace moe::bench {
namespace {

constexpr int kWarmup = 3;
constexpr int kReps = 20;

TimingStats time_copy(cudaStream_t stream, int device) {
  const auto n = static_cast<int64_t>(kCopyBufferBytes);
  Tensor src = Tensor::empty({n}, DType::kU8, Device::cuda(device));
  Tensor dst = Tensor::empty({n}, DType::kU8, Device::cuda(device));
  MOE_CUDA_CHECK(cudaMemsetAsync(src.data(), 0x5A, src.nbytes(), stream));
  return summarize_times(time_launches(stream, {kWarmup, kReps, nullptr}, [&](int) {
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), kCopyBufferBytes,
                                   cudaMemcpyDeviceToDevice, stream));
  }));
}

TimingStats time_gemm(cudaStream_t stream, const CublasHandle& cublas, int device, uint64_t seed) {
  const int64_t n = kGemmN;
  Tensor a = Tensor::empty({n, n}, DType::kBF16, Device::cuda(device));  // [N, K]
  Tensor b = Tensor::empty({n, n}, DType::kBF16, Device::cuda(device));  // [M, K]
  Tensor c = Tensor::empty({n, n}, DType::kBF16, Device::cuda(device));  // [M, N]
  fill_random_device(a, seed ^ 0xA, 1.0f, stream);
  fill_random_device(b, seed ^ 0xB, 1.0f, stream);
  const float alpha = 1.0f, beta = 0.0f;
  const int dim = kGemmN;
  return summarize_times(time_launches(stream, {kWarmup, kReps, nullptr}, [&](int) {
    MOE_CUBLAS_CHECK(
        cublasGemmEx(cublas.get(), CUBLAS_OP_T, CUBLAS_OP_N, dim, dim, dim, &alpha, a.data(),
                     CUDA_R_16BF, dim, b.data(), CUDA_R_16BF, dim, &beta, c.data(), CUDA_R_16BF,
                     dim, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "roofline GEMM ", dim, "^3 bf16");
  }));
}

}  // namespace

RooflineReport measure_roofline(cudaStream_t stream, const CublasHandle& cublas, uint64_t seed) {
  int device = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&device));
  size_t free_bytes = 0, total_bytes = 0;
  MOE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const size_t needed = 2 * kCopyBufferBytes + (size_t{256} << 20);
  MOE_CHECK(free_bytes >= needed, "measuring the copy bandwidth needs ", needed >> 20,
            " MiB of free device memory, ", free_bytes >> 20, " MiB are free");

  RooflineReport r;
  r.copy_buffer_bytes = kCopyBufferBytes;
  r.copy = time_copy(stream, device);
  r.rates.copy_bytes_per_s =
      2.0 * static_cast<double>(kCopyBufferBytes) / (r.copy.median_ms * 1e-3);
  r.gemm_n = kGemmN;
  r.gemm = time_gemm(stream, cublas, device, seed);
  const double n = kGemmN;
  r.rates.gemm_flops_per_s = 2.0 * n * n * n / (r.gemm.median_ms * 1e-3);
  return r;
}

}  // namespace moe::bench
