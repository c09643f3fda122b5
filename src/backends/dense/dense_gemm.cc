// cuBLASLt GEMM planning and launch for the dense backend (contract in dense_gemm.h).
#include "backends/dense/dense_gemm.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>

#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe::dense {
namespace {

constexpr int kHeuristicCandidates = 8;
/// The alignment every pointer run() gets is guaranteed to have (16 bytes: rows of 8
/// 16-bit or 16 e4m3 elements, offsets by whole experts); cuBLASLt's default assumes 256.
/// cuBLASLt wants the same 16 bytes of FP8 scale tensors.
constexpr uint32_t kPointerAlignment = 16;
/// cuBLASLt requires the workspace 256-byte aligned (cublasLtMatmul's contract).
constexpr uintptr_t kWorkspaceAlignment = 256;
/// Block scaling (VEC128_32F / BLK128x128_32F): cuBLASLt wants M and N multiples of 4.
constexpr int64_t kBlockScaledDimMultiple = 4;

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kE4M3:
      return CUDA_R_8F_E4M3;
    default:
      MOE_THROW("dense GEMM: no cuBLASLt type for ", dtype_name(dtype));
  }
}

template <class T>
void set_op(cublasLtMatmulDesc_t op, cublasLtMatmulDescAttributes_t attr, const T& value) {
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, attr, &value, sizeof(value)),
                   "setting matmul attribute ", static_cast<int>(attr));
}

std::string shape_str(const GemmDesc& d) {
  return d.name + " [T, " + std::to_string(d.k) + "] x [" + std::to_string(d.n) + ", " +
         std::to_string(d.k) + "]^T (" + std::string(dtype_name(d.w_dtype)) + " -> " +
         std::string(dtype_name(d.out_dtype)) + ")";
}

/// RAII for the preference used while planning.
struct Preference {
  cublasLtMatmulPreference_t pref = nullptr;
  explicit Preference(size_t workspace_bytes) {
    MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t bytes = workspace_bytes;
    MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes, sizeof(bytes)));
    for (auto attr :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &kPointerAlignment,
                                                            sizeof(kPointerAlignment)));
    }
  }
  ~Preference() { cublasLtMatmulPreferenceDestroy(pref); }
};

/// Stand-in scale pointers for planning. cuBLASLt's heuristic rejects a block-scaled matmul
/// whose descriptor has no A / B scale pointer (CUBLAS_STATUS_INVALID_VALUE: "the scaling
/// mode ... requires a custom pointer"); it only checks them, never reads them. The stand-in
/// is 16-byte but not 32-byte aligned: the least alignment run() accepts, so no algorithm is
/// chosen for an alignment the real scales may lack.
struct PlanScales {
  void* base = nullptr;
  PlanScales() { MOE_CUDA_CHECK(cudaMalloc(&base, 64), "allocating the GEMM plan scales"); }
  ~PlanScales() { cudaFree(base); }
  PlanScales(const PlanScales&) = delete;
  PlanScales& operator=(const PlanScales&) = delete;
  const void* get() const { return static_cast<const char*>(base) + kPointerAlignment; }
};

}  // namespace

LtHandle::LtHandle() { MOE_CUBLAS_CHECK(cublasLtCreate(&handle_), "creating the cuBLASLt handle"); }

LtHandle::~LtHandle() {
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

LtGemm::LtGemm(cublasLtHandle_t handle, GemmDesc desc) : handle_(handle), desc_(std::move(desc)) {
  const GemmDesc& d = desc_;
  MOE_CHECK(d.n > 0 && d.k > 0 && d.ld_w >= d.k && d.ld_x >= d.k && d.ld_out >= d.n, "dense GEMM ",
            shape_str(d), ": bad leading dimensions w ", d.ld_w, ", x ", d.ld_x, ", out ",
            d.ld_out);
  MOE_CHECK(
      d.token_align >= 1 && d.max_tokens >= d.token_align && d.max_tokens % d.token_align == 0,
      "dense GEMM ", d.name, ": max_tokens ", d.max_tokens, " must be a multiple of ",
      d.token_align);
  if (d.scaling == GemmScaling::kBlock) {
    MOE_CHECK(d.n % kBlockScaledDimMultiple == 0 && d.token_align % kBlockScaledDimMultiple == 0,
              "dense GEMM ", shape_str(d), ": block scaling needs n (", d.n,
              ") and the token alignment (", d.token_align, ") to be multiples of ",
              kBlockScaledDimMultiple);
  }
  try {
    MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    set_op(op_, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
    set_op(op_, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
    if (d.scaling == GemmScaling::kBlock) {
      set_op(op_, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
             static_cast<int32_t>(CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F));
      set_op(op_, CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
             static_cast<int32_t>(CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F));
    }
    std::unique_ptr<PlanScales> plan_scales;
    if (d.scaling != GemmScaling::kNone) {
      // Fast accumulation off (the default, said explicitly): partial sums are promoted to
      // fp32 registers after every k-block, which the fp8 error bounds rely on.
      set_op(op_, CUBLASLT_MATMUL_DESC_FAST_ACCUM, static_cast<int8_t>(0));
      // Plan with the descriptor as run() will hand it over: scale pointers set.
      plan_scales = std::make_unique<PlanScales>();
      set_op(op_, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, plan_scales->get());
      set_op(op_, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, plan_scales->get());
    }
    // A = W as a column-major [k, n] matrix, transposed; B = x as column-major [k, T];
    // D (and C) = out as column-major [n, T].
    MOE_CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&w_layout_, cuda_type(d.w_dtype), d.k, d.n, d.ld_w));
    MOE_CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&x_layout_, cuda_type(d.x_dtype), d.k, d.max_tokens, d.ld_x));
    MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&out_layout_, cuda_type(d.out_dtype), d.n,
                                                d.max_tokens, d.ld_out));

    // Buckets (lo, hi]: hi = token_align * 2^i, the last one clamped to max_tokens; a bucket
    // no single algorithm covers is narrowed until one does (down to one token count).
    Preference pref(d.workspace_bytes);
    int64_t lo = 0;
    for (int64_t target = d.token_align; lo < d.max_tokens; target *= 2) {
      int64_t hi = std::min(target, d.max_tokens);
      while (!plan_bucket(lo, hi, pref.pref)) {
        MOE_CHECK(hi > lo + d.token_align, "cuBLASLt has no algorithm for ", shape_str(d),
                  " at T = ", hi, " (workspace ", d.workspace_bytes, " bytes)");
        hi = std::max(lo + d.token_align, (lo + hi) / 2 / d.token_align * d.token_align);
      }
      lo = target = hi;
    }
  } catch (...) {
    release();
    throw;
  }
}

bool LtGemm::plan_bucket(int64_t lo, int64_t hi, cublasLtMatmulPreference_t pref) {
  const GemmDesc& d = desc_;
  set_tokens(hi);
  std::array<cublasLtMatmulHeuristicResult_t, kHeuristicCandidates> results{};
  int returned = 0;
  MOE_CUBLAS_CHECK(
      cublasLtMatmulAlgoGetHeuristic(handle_, op_, w_layout_, x_layout_, out_layout_, out_layout_,
                                     pref, kHeuristicCandidates, results.data(), &returned),
      "cuBLASLt heuristic for ", shape_str(d), " at T = ", hi);
  for (int i = 0; i < returned; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS || results[i].workspaceSize > d.workspace_bytes) {
      continue;
    }
    // The algorithm must also run the bucket's smallest token count.
    bool ok_lo = true;
    if (hi > lo + d.token_align) {
      set_tokens(lo + d.token_align);
      cublasLtMatmulHeuristicResult_t check{};
      ok_lo = cublasLtMatmulAlgoCheck(handle_, op_, w_layout_, x_layout_, out_layout_, out_layout_,
                                      &results[i].algo, &check) == CUBLAS_STATUS_SUCCESS &&
              check.workspaceSize <= d.workspace_bytes;
      set_tokens(hi);
    }
    if (ok_lo) {
      buckets_.push_back({hi, results[i].algo});
      return true;
    }
  }
  return false;
}

LtGemm::~LtGemm() { release(); }

void LtGemm::release() {
  if (out_layout_ != nullptr) cublasLtMatrixLayoutDestroy(out_layout_);
  if (x_layout_ != nullptr) cublasLtMatrixLayoutDestroy(x_layout_);
  if (w_layout_ != nullptr) cublasLtMatrixLayoutDestroy(w_layout_);
  if (op_ != nullptr) cublasLtMatmulDescDestroy(op_);
  out_layout_ = x_layout_ = w_layout_ = nullptr;
  op_ = nullptr;
}

std::vector<int64_t> LtGemm::bucket_ends() const {
  std::vector<int64_t> ends;
  for (const Bucket& b : buckets_) ends.push_back(b.max_tokens);
  return ends;
}

void LtGemm::set_tokens(int64_t tokens) {
  const uint64_t cols = static_cast<uint64_t>(tokens);
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(x_layout_, CUBLASLT_MATRIX_LAYOUT_COLS, &cols,
                                                    sizeof(cols)));
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(out_layout_, CUBLASLT_MATRIX_LAYOUT_COLS, &cols,
                                                    sizeof(cols)));
}

void LtGemm::run(const GemmArgs& a, cudaStream_t stream) {
  const GemmDesc& d = desc_;
  MOE_CHECK(a.tokens > 0 && a.tokens <= d.max_tokens && a.tokens % d.token_align == 0,
            "dense GEMM ", d.name, ": token count ", a.tokens, " must be a multiple of ",
            d.token_align, " in [1, ", d.max_tokens, "]");
  const Bucket* bucket = &buckets_.back();
  for (const Bucket& b : buckets_) {
    if (a.tokens <= b.max_tokens) {
      bucket = &b;
      break;
    }
  }
  for (const void* p : {a.w, a.x, static_cast<const void*>(a.out),
                        static_cast<const void*>(a.w_scale), static_cast<const void*>(a.x_scale)}) {
    MOE_CHECK(reinterpret_cast<uintptr_t>(p) % kPointerAlignment == 0, "dense GEMM ", d.name,
              ": pointer ", p, " is not ", kPointerAlignment, "-byte aligned");
  }
  MOE_CHECK(reinterpret_cast<uintptr_t>(a.workspace) % kWorkspaceAlignment == 0, "dense GEMM ",
            d.name, ": workspace ", a.workspace, " is not ", kWorkspaceAlignment, "-byte aligned");
  if (d.scaling == GemmScaling::kBlock) {
    MOE_CHECK(a.w_scale != nullptr && a.x_scale != nullptr, "dense GEMM ", d.name,
              ": block scaling needs both scale tensors");
  }
  set_tokens(a.tokens);
  if (d.scaling != GemmScaling::kNone) {
    set_op(op_, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(a.w_scale));
    set_op(op_, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(a.x_scale));
  }
  const float alpha = 1.0f, beta = a.accumulate ? 1.0f : 0.0f;
  MOE_CUBLAS_CHECK(cublasLtMatmul(handle_, op_, &alpha, a.w, w_layout_, a.x, x_layout_, &beta,
                                  a.out, out_layout_, a.out, out_layout_, &bucket->algo,
                                  a.workspace, d.workspace_bytes, stream),
                   "cuBLASLt matmul ", shape_str(d), " at T = ", a.tokens);
}

}  // namespace moe::dense
