// One cuBLASLt GEMM of the dense backend, planned once and run many times:
//   out [T, n] = x [T, k] . W [n, k]^T   (* scales)   (+ out when accumulating)
// W is row-major with row stride ld_w (K-major: the weight as a checkpoint stores it), x is
// row-major with row stride ld_x, out row-major with row stride ld_out. In cuBLAS's
// column-major terms this is the "TN" product D (n x T) = op(A) B with A = W (transposed) and
// B = x: the layout FP8 GEMMs need on Hopper.
//
// Scaling:
//   kNone      16-bit operands
//   kScalar    e4m3 operands, one f32 scale each (SCALAR_32F), device pointers
//   kBlock     e4m3 operands: W in 128x128 blocks (BLK128x128_32F), scales f32
//              [ceil(n/128), fp8_scale_ld(ceil(k/128))] row-major; x in 1x128 groups
//              (VEC128_32F), scales f32 [ceil(k/128), T] group-major (T a multiple of 4)
//
// cuBLASLt's rules for the scaled (e4m3) GEMMs on Hopper, which this layout meets: "TN" only
// (A = W transposed, B = x), compute 32F with scale type 32F, 16-byte aligned pointers and
// leading dimensions, out f32 / bf16 / f16; kBlock further wants n and T multiples of 4,
// scale tensors 16-byte aligned, and both scale pointers set whenever the heuristic is asked.
// cuBLAS documents BLK128x128 x VEC128 in either operand order (BLK x BLK is not supported).
//
// Planning (the constructor) creates the descriptors and asks cuBLASLt's heuristic once per
// token bucket (powers of two times `token_align`, up to max_tokens), keeping for each bucket
// the first algorithm that is valid at both ends of the bucket and fits the workspace (a
// bucket without one is narrowed until it has one); scaled GEMMs plan with stand-in scale
// pointers, since the heuristic only checks them. run()
// picks the bucket from the host token count, sets the token count on the layouts (host
// only) and enqueues the matmul: no allocation, no synchronisation, graph-capturable.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/dtype.h"

namespace moe::dense {

enum class GemmScaling { kNone, kScalar, kBlock };

struct GemmDesc {
  std::string name;  // for messages, e.g. "fc1 (routed + shared)"
  DType w_dtype = DType::kBF16;
  DType x_dtype = DType::kBF16;
  DType out_dtype = DType::kF32;
  int64_t n = 0;
  int64_t k = 0;
  int64_t ld_w = 0;
  int64_t ld_x = 0;
  int64_t ld_out = 0;
  GemmScaling scaling = GemmScaling::kNone;
  int64_t max_tokens = 0;  // a multiple of token_align
  int token_align = 1;     // every T run() sees is a multiple of this
  size_t workspace_bytes = 0;
};

struct GemmArgs {
  const void* w = nullptr;
  const float* w_scale = nullptr;  // kScalar: f32 [1] (nullptr = 1); kBlock: block scales
  const void* x = nullptr;
  const float* x_scale = nullptr;  // kScalar: f32 [1]; kBlock: group-major scales, ld = T
  void* out = nullptr;
  int64_t tokens = 0;         // T
  bool accumulate = false;    // out = product + out (one rounding) instead of out = product
  void* workspace = nullptr;  // workspace_bytes, 256-byte aligned (cuBLASLt)
};

/// The cuBLASLt handle, created once per backend.
class LtHandle {
 public:
  LtHandle();
  ~LtHandle();
  LtHandle(const LtHandle&) = delete;
  LtHandle& operator=(const LtHandle&) = delete;
  cublasLtHandle_t get() const { return handle_; }

 private:
  cublasLtHandle_t handle_ = nullptr;
};

class LtGemm {
 public:
  /// Plans the GEMM; throws moe::Error naming the GEMM and the token count when cuBLASLt has
  /// no algorithm for a bucket.
  LtGemm(cublasLtHandle_t handle, GemmDesc desc);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  const GemmDesc& desc() const { return desc_; }
  /// Token counts at which the plan switches algorithm (the buckets' upper ends).
  std::vector<int64_t> bucket_ends() const;
  /// Enqueues the GEMM on `stream` (host work only).
  void run(const GemmArgs& args, cudaStream_t stream);

 private:
  struct Bucket {
    int64_t max_tokens;
    cublasLtMatmulAlgo_t algo;
  };
  void set_tokens(int64_t tokens);
  /// Appends the bucket (lo, hi] when one heuristic candidate at hi also runs lo + align.
  bool plan_bucket(int64_t lo, int64_t hi, cublasLtMatmulPreference_t pref);
  void release();  // destroys the descriptors (the destructor, or a failed constructor)

  cublasLtHandle_t handle_;
  GemmDesc desc_;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t w_layout_ = nullptr, x_layout_ = nullptr, out_layout_ = nullptr;
  std::vector<Bucket> buckets_;
};

}  // namespace moe::dense
