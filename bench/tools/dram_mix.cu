// `build/dram_mix`: what DRAM gives a pure read stream, a pure write stream, a copy (1 : 1) and
// quantize_scatter's mix (each row read once and written k times at scattered rows), so that
// the scatter kernel's rate (bench/NOTES.md, twenty-second session: ~2.2 TB/s at 16,384
// tokens) can be read against what its bytes allow. Grid-stride kernels of 16-byte accesses
// (the scatter also of 8-byte ones: the same rate on the H100, bench/NOTES.md twenty-third
// session), every SM full; times by CUDA events over 20 runs (median); GB/s counts read + write
// bytes.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "tool_check.h"
#include "tool_kernels.cuh"

namespace {

__global__ void write_kernel(uint4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    dst[i] = make_uint4(static_cast<uint32_t>(i), 1u, 2u, 3u);
  }
}

__global__ void copy_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    dst[i] = src[i];
  }
}

// Row r of `src` (row_vecs pieces of V: 16 or 8 bytes) to rows dest[r * k + j] of `dst`,
// j < k: a block a row, as quantize_scatter's rows kernel writes a token's k rows.
template <class V>
__global__ void scatter_kernel(const V* __restrict__ src, V* __restrict__ dst,
                               const int32_t* __restrict__ dest, int rows, int row_vecs, int k) {
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int c = threadIdx.x; c < row_vecs; c += blockDim.x) {
      const V v = src[static_cast<size_t>(r) * row_vecs + c];
      for (int j = 0; j < k; ++j) {
        dst[static_cast<size_t>(dest[r * k + j]) * row_vecs + c] = v;
      }
    }
  }
}

template <class Launch>
double median_ms(Launch launch) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  launch();
  CHECK(cudaDeviceSynchronize());
  std::vector<float> ms(20);
  for (float& m : ms) {
    CHECK(cudaEventRecord(a));
    launch();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    CHECK(cudaEventElapsedTime(&m, a, b));
  }
  std::sort(ms.begin(), ms.end());
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return ms[ms.size() / 2];
}

}  // namespace

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t bytes = size_t{2} << 30;  // 2 GiB per buffer: far past L2
  const size_t n = bytes / sizeof(uint4);
  uint4 *a = nullptr, *b = nullptr;
  uint32_t* sink = nullptr;
  CHECK(cudaMalloc(&a, bytes));
  CHECK(cudaMalloc(&b, bytes));
  CHECK(cudaMalloc(&sink, 4));
  CHECK(cudaMemset(a, 1, bytes));
  CHECK(cudaMemset(b, 2, bytes));
  const int grid = sms * 8, threads = 256;
  auto report = [](const char* what, double moved, double ms) {
    std::printf("%-44s %8.3f ms %7.0f GB/s\n", what, ms, moved / (ms * 1e-3) / 1e9);
  };
  report("read 2 GiB", bytes, median_ms([&] {
           read_all<<<grid, threads>>>(a, n, sink);
           CHECK(cudaGetLastError());
         }));
  report("write 2 GiB", bytes, median_ms([&] {
           write_kernel<<<grid, threads>>>(b, n);
           CHECK(cudaGetLastError());
         }));
  report("copy 1 GiB (read + write)", bytes, median_ms([&] {
           copy_kernel<<<grid, threads>>>(a, b, n / 2);
           CHECK(cudaGetLastError());
         }));
  // quantize_scatter's shapes: rows of 2,048 (Qwen3-30B-A3B) and 7,168 bytes (DeepSeek-V3, e4m3
  // codes), each written to k = 8 rows of a random permutation of rows * k.
  for (const int row_bytes : {2048, 7168}) {
    const int k = 8, row_vecs = row_bytes / 16;
    const int rows = static_cast<int>(bytes / (static_cast<size_t>(row_bytes) * k));
    std::vector<int32_t> dest(static_cast<size_t>(rows) * k);
    std::iota(dest.begin(), dest.end(), 0);
    std::shuffle(dest.begin(), dest.end(), std::mt19937(1));
    int32_t* dest_d = nullptr;
    CHECK(cudaMalloc(&dest_d, dest.size() * sizeof(int32_t)));
    CHECK(cudaMemcpy(dest_d, dest.data(), dest.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    const double moved = static_cast<double>(rows) * row_bytes * (1 + k);
    char what[64];
    std::snprintf(what, sizeof what, "scatter %d-byte rows x 8, 16-byte stores", row_bytes);
    report(what, moved, median_ms([&] {
             scatter_kernel<<<sms * 16, 128>>>(a, b, dest_d, rows, row_vecs, k);
             CHECK(cudaGetLastError());
           }));
    // The same with 8-byte accesses (a warp's 256 bytes), as quantize_scatter's rows kernel
    // stores them.
    std::snprintf(what, sizeof what, "scatter %d-byte rows x 8, 8-byte stores", row_bytes);
    report(what, moved, median_ms([&] {
             scatter_kernel<<<sms * 16, 128>>>(reinterpret_cast<const uint2*>(a),
                                               reinterpret_cast<uint2*>(b), dest_d, rows,
                                               row_vecs * 2, k);
             CHECK(cudaGetLastError());
           }));
    CHECK(cudaFree(dest_d));
  }
  CHECK(cudaFree(a));
  CHECK(cudaFree(b));
  CHECK(cudaFree(sink));
  return 0;
}
