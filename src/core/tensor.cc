#include "moe/tensor.h"

#include <cstdlib>
#include <new>
#include <sstream>

#include "moe/errors.h"

namespace moe {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

namespace {

void check_dims(std::span<const int64_t> shape) {
  MOE_CHECK(shape.size() <= static_cast<size_t>(kMaxDims), "tensor of ", shape.size(),
            " dimensions; at most ", kMaxDims, " are supported");
  for (size_t i = 0; i < shape.size(); ++i) {
    MOE_CHECK(shape[i] >= 0, "negative size ", shape[i], " in dimension ", i);
  }
}

}  // namespace

TensorView::TensorView(void* data, DType dtype, std::span<const int64_t> shape, Device device)
    : data_(data), dtype_(dtype), device_(device), ndim_(static_cast<int>(shape.size())) {
  check_dims(shape);
  int64_t stride = 1;
  for (int i = ndim_ - 1; i >= 0; --i) {
    shape_[i] = shape[i];
    strides_[i] = stride;
    stride *= shape[i];
  }
  if (dtype == DType::kE2M1 && ndim_ > 0) {
    MOE_CHECK(shape_[ndim_ - 1] % 2 == 0, "e2m1 tensor with odd innermost size ", shape_[ndim_ - 1],
              " (two elements per byte)");
  }
}

TensorView::TensorView(void* data, DType dtype, std::span<const int64_t> shape,
                       std::span<const int64_t> strides, Device device)
    : data_(data), dtype_(dtype), device_(device), ndim_(static_cast<int>(shape.size())) {
  check_dims(shape);
  MOE_CHECK(strides.size() == shape.size(), "strides have ", strides.size(),
            " dimensions, shape has ", shape.size());
  for (int i = 0; i < ndim_; ++i) {
    shape_[i] = shape[i];
    strides_[i] = strides[i];
  }
  MOE_CHECK(dtype != DType::kE2M1 || ndim_ == 0 || strides_[ndim_ - 1] == 1,
            "e2m1 tensors need a contiguous innermost dimension");
}

int64_t TensorView::size(int dim) const {
  const int d = dim < 0 ? dim + ndim_ : dim;
  MOE_CHECK(d >= 0 && d < ndim_, "dimension ", dim, " out of range for ", str());
  return shape_[d];
}

int64_t TensorView::stride(int dim) const {
  const int d = dim < 0 ? dim + ndim_ : dim;
  MOE_CHECK(d >= 0 && d < ndim_, "dimension ", dim, " out of range for ", str());
  return strides_[d];
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= shape_[i];
  return n;
}

size_t TensorView::nbytes() const { return dtype_bytes(dtype_, numel()); }

bool TensorView::is_contiguous() const {
  int64_t stride = 1;
  for (int i = ndim_ - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != stride) return false;
    stride *= shape_[i];
  }
  return true;
}

TensorView TensorView::slice_rows(int64_t begin, int64_t end) const {
  MOE_CHECK(ndim_ >= 1, "slice_rows of a 0-d tensor");
  MOE_CHECK(0 <= begin && begin <= end && end <= shape_[0], "rows [", begin, ", ", end,
            ") out of range for ", str());
  TensorView v = *this;
  v.shape_[0] = end - begin;
  const int64_t offset_elems = begin * strides_[0];
  v.data_ = static_cast<char*>(data_) + dtype_bytes(dtype_, offset_elems);
  MOE_CHECK(dtype_bits(dtype_) % 8 == 0 || (offset_elems * dtype_bits(dtype_)) % 8 == 0,
            "row slice of ", str(), " does not start on a byte");
  return v;
}

TensorView TensorView::reshape(std::initializer_list<int64_t> shape) const {
  MOE_CHECK(is_contiguous(), "reshape of non-contiguous ", str());
  TensorView v(data_, dtype_, shape, device_);
  MOE_CHECK(v.numel() == numel(), "cannot reshape ", str(), " to ", v.str());
  return v;
}

std::string TensorView::str() const {
  std::ostringstream os;
  os << dtype_name(dtype_) << "[";
  for (int i = 0; i < ndim_; ++i) os << (i ? ", " : "") << shape_[i];
  os << "] on " << device_.str();
  return os.str();
}

// ---- Allocators ----------------------------------------------------------------------------

namespace {

class HostAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    MOE_CHECK(p != nullptr, "out of host memory allocating ", bytes, " bytes");
    return p;
  }
  void deallocate(void* ptr, size_t) override { std::free(ptr); }
  Device device() const override { return Device::cpu(); }
};

}  // namespace

Allocator& host_allocator() {
  static HostAllocator allocator;
  return allocator;
}

Allocator& allocator_for(Device device) {
  return device.is_cpu() ? host_allocator() : cuda_allocator(device.index);
}

Tensor Tensor::empty(std::span<const int64_t> shape, DType dtype, Device device) {
  Tensor t;
  TensorView probe(nullptr, dtype, shape, device);
  const size_t bytes = probe.nbytes();
  Allocator& alloc = allocator_for(device);
  void* ptr = alloc.allocate(bytes);
  // A zero-byte tensor still counts as defined.
  t.buffer_ =
      std::shared_ptr<void>(ptr ? ptr : static_cast<void*>(&t), [&alloc, bytes, ptr](void*) {
        if (ptr) alloc.deallocate(ptr, bytes);
      });
  t.view_ = TensorView(ptr, dtype, shape, device);
  return t;
}

void check_tensor(const TensorView& t, std::string_view what, DType dtype,
                  std::initializer_list<int64_t> shape) {
  TensorView expected(nullptr, dtype, shape, t.device());
  bool same = t.dtype() == dtype && t.ndim() == static_cast<int>(shape.size());
  for (int i = 0; same && i < t.ndim(); ++i) same = t.size(i) == expected.size(i);
  MOE_CHECK(same, what, ": expected ", dtype_name(dtype),
            expected.str().substr(expected.str().find('[')), ", got ", t.str());
}

}  // namespace moe
