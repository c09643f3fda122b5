// measure_roofline (roofline.h).
#include "bench/harness/roofline.h"

#include <cublasLt.h>

#include <array>

#include "bench/harness/device_fill.h"
#include "bench/harness/timer.h"
#include "core/cuda_check.h"

namespace moe::bench {
namespace {

constexpr int kWarmup = 3;
constexpr int kReps = 20;
/// cuBLASLt's workspace for the FP8 GEMM: what cuBLAS recommends for Hopper.
constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;
/// NOTE: fast accumulation on: cuBLASLt's fastest e4m3 mode (no promotion of the partial
/// sums to fp32 registers). A floor is a ceiling no implementation beats, and our per-tensor
/// kernels do not promote either; the block-scaled ones pay their per-128 promotion against
/// it, as they should (DeepGEMM's Hopper kernels pay the same).
constexpr int8_t kFp8FastAccum = 1;

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

// The cuBLASLt objects of one matmul, destroyed in reverse order of creation.
struct LtMatmul {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;

  LtMatmul() = default;
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;
  ~LtMatmul() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
    if (handle) cublasLtDestroy(handle);
  }

  template <class T>
  void set(cublasLtMatmulDescAttributes_t attr, const T& value) {
    MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, attr, &value, sizeof(value)),
                     "roofline fp8 GEMM: matmul attribute ", static_cast<int>(attr));
  }
};

struct Fp8GemmTiming {
  TimingStats stats;  // of the fastest algorithm
  int algos = 0;      // algorithms timed
};

// out [M, N] bf16 = B [M, K] . A [N, K]^T on e4m3 operands with f32 per-tensor scales; in
// cuBLAS's column-major terms D (N x M) = op_T(A) . B, A stored as [K, N] and B as [K, M]:
// the "TN" layout Hopper's FP8 GEMMs need. Returns the fastest heuristic algorithm's times.
Fp8GemmTiming time_fp8_gemm(cudaStream_t stream, int device, uint64_t seed) {
  const int64_t n = kGemmN;
  const Device dev = Device::cuda(device);
  Tensor a = Tensor::empty({n, n}, DType::kE4M3, dev);  // [N, K]
  Tensor b = Tensor::empty({n, n}, DType::kE4M3, dev);  // [M, K]
  Tensor d = Tensor::empty({n, n}, DType::kBF16, dev);  // [M, N]
  // f32 [8]: A's scale at 0, B's at 4 (each 16-byte aligned).
  Tensor scales = Tensor::empty({8}, DType::kF32, dev);
  Tensor workspace = Tensor::empty({static_cast<int64_t>(kLtWorkspaceBytes)}, DType::kU8, dev);
  // NOTE: N(0, 1) values (|v| <= 3.5) round to e4m3 zero only below 2^-10: almost none.
  fill_random_device(a, seed ^ 0xF8A, 1.0f, stream);
  fill_random_device(b, seed ^ 0xF8B, 1.0f, stream);
  const std::array<float, 8> host_scales = {0.5f, 0, 0, 0, 0.25f, 0, 0, 0};
  MOE_CUDA_CHECK(cudaMemcpyAsync(scales.data(), host_scales.data(), scales.nbytes(),
                                 cudaMemcpyHostToDevice, stream));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream), "filling the fp8 roofline GEMM's operands");
  const float* a_scale = scales.data_as<const float>();
  const float* b_scale = a_scale + 4;

  LtMatmul m;
  MOE_CUBLAS_CHECK(cublasLtCreate(&m.handle), "creating the cuBLASLt handle of the roofline");
  MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&m.op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                   "roofline fp8 GEMM: matmul descriptor");
  m.set(CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  m.set(CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  m.set(CUBLASLT_MATMUL_DESC_FAST_ACCUM, kFp8FastAccum);
  // Scale modes stay at their default (SCALAR_32F): one f32 per operand, a device pointer.
  m.set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(a_scale));
  m.set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(b_scale));
  const uint64_t dim = kGemmN;
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&m.a, CUDA_R_8F_E4M3, dim, dim, dim),
                   "roofline fp8 GEMM: layout of A");
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&m.b, CUDA_R_8F_E4M3, dim, dim, dim),
                   "roofline fp8 GEMM: layout of B");
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&m.d, CUDA_R_16BF, dim, dim, dim),
                   "roofline fp8 GEMM: layout of D");
  MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&m.pref), "roofline fp8 GEMM: preference");
  const uint64_t workspace_bytes = kLtWorkspaceBytes;
  MOE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(m.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                           &workspace_bytes, sizeof(workspace_bytes)),
      "roofline fp8 GEMM: workspace preference");

  std::array<cublasLtMatmulHeuristicResult_t, kFp8GemmAlgos> results{};
  int returned = 0;
  MOE_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(m.handle, m.op, m.a, m.b, m.d, m.d, m.pref,
                                                  kFp8GemmAlgos, results.data(), &returned),
                   "cuBLASLt heuristic for the roofline's e4m3 GEMM ", kGemmN,
                   "^3 (FP8 needs sm_89 or newer)");
  const float alpha = 1.0f, beta = 0.0f;
  Fp8GemmTiming best;
  for (int i = 0; i < returned; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS || results[i].workspaceSize > kLtWorkspaceBytes) {
      continue;
    }
    const cublasLtMatmulAlgo_t* algo = &results[i].algo;
    const TimingStats stats =
        summarize_times(time_launches(stream, {kWarmup, kReps, nullptr}, [&](int) {
          MOE_CUBLAS_CHECK(
              cublasLtMatmul(m.handle, m.op, &alpha, a.data(), m.a, b.data(), m.b, &beta, d.data(),
                             m.d, d.data(), m.d, algo, workspace.data(), kLtWorkspaceBytes, stream),
              "roofline GEMM ", kGemmN, "^3 e4m3, heuristic algorithm ", i);
        }));
    if (best.algos == 0 || stats.median_ms < best.stats.median_ms) best.stats = stats;
    ++best.algos;
  }
  MOE_CHECK(best.algos > 0, "cuBLASLt has no usable algorithm for the roofline's e4m3 GEMM ",
            kGemmN, "^3 (", returned, " returned, none within ", kLtWorkspaceBytes >> 20,
            " MiB of workspace): the fp8 floor needs one");
  return best;
}

}  // namespace

RooflineReport measure_roofline(cudaStream_t stream, const CublasHandle& cublas, uint64_t seed,
                                bool fp8_gemm) {
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
  // NOTE: only when asked: it costs well under a second, but a GPU without FP8 tensor cores
  // (before sm_89) has no e4m3 GEMM, and bf16 runs there must still measure their roofline.
  if (fp8_gemm) {
    const Fp8GemmTiming fp8 = time_fp8_gemm(stream, device, seed);
    r.fp8_gemm = fp8.stats;
    r.fp8_gemm_n = kGemmN;
    r.fp8_gemm_algos = fp8.algos;
    r.fp8_gemm_fast_accum = kFp8FastAccum != 0;
    r.rates.fp8_gemm_flops_per_s = 2.0 * n * n * n / (fp8.stats.median_ms * 1e-3);
  }
  return r;
}

}  // namespace moe::bench
