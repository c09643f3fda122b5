#include "backends/grouped/tma_map.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe::grouped {
namespace {

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encode_fn() {
  static EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    MOE_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                                    cudaEnableDefault, &q));
    MOE_CHECK(q == cudaDriverEntryPointSuccess && p, "the driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

CUtensorMapDataType tma_dtype(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    case DType::kF16:
      return CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    case DType::kE4M3:
    case DType::kU8:
      return CU_TENSOR_MAP_DATA_TYPE_UINT8;
    case DType::kF32:
      return CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
    default:
      MOE_THROW("no TMA element type for ", dtype_name(dtype));
  }
}

CUtensorMap encode(const void* base, DType dtype, int rank, const cuuint64_t* dims,
                   const cuuint64_t* strides_bytes, const cuuint32_t* box,
                   CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B) {
  MOE_CHECK(reinterpret_cast<uintptr_t>(base) % 16 == 0,
            "TMA base address must be 16-byte aligned");
  CUtensorMap map{};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  const CUresult r =
      encode_fn()(&map, tma_dtype(dtype), rank, const_cast<void*>(base), dims, strides_bytes, box,
                  elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  MOE_CHECK(r == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed with CUresult ", static_cast<int>(r),
            " (rank ", rank, ", dims ", dims[0], " x ", dims[1], ")");
  return map;
}

}  // namespace

CUtensorMap make_weight_map(const void* w, DType dtype, int64_t experts, int64_t n, int64_t k) {
  const int64_t elem = dtype_bits(dtype) / 8;
  MOE_CHECK((k * elem) % 16 == 0, "TMA needs rows of a multiple of 16 bytes; k = ", k);
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(n),
                              static_cast<cuuint64_t>(experts)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(k * elem),
                                 static_cast<cuuint64_t>(n * k * elem)};
  const cuuint32_t box[3] = {static_cast<cuuint32_t>(128 / elem), 128, 1};
  return encode(w, dtype, 3, dims, strides, box);
}

CUtensorMap make_rows_map(const void* x, DType dtype, int64_t rows, int64_t k, int box_rows) {
  const int64_t elem = dtype_bits(dtype) / 8;
  MOE_CHECK((k * elem) % 16 == 0, "TMA needs rows of a multiple of 16 bytes; k = ", k);
  MOE_CHECK(box_rows >= 1 && box_rows <= 256, "TMA box of ", box_rows, " rows");
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(k),
                              static_cast<cuuint64_t>(std::max<int64_t>(rows, 1))};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(k * elem)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(128 / elem),
                             static_cast<cuuint32_t>(box_rows)};
  return encode(x, dtype, 2, dims, strides, box);
}

CUtensorMap make_scales_map(const float* scales, int64_t groups, int64_t ld, int box_rows) {
  MOE_CHECK(ld % 4 == 0, "TMA needs scale rows of a multiple of 16 bytes; ld = ", ld);
  MOE_CHECK(box_rows >= 4 && box_rows <= 256, "TMA scale box of ", box_rows, " rows");
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(ld),
                              static_cast<cuuint64_t>(std::max<int64_t>(groups, 1))};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld * 4)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_rows), 1};
  return encode(scales, DType::kF32, 2, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_NONE);
}

}  // namespace moe::grouped
