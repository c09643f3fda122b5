// Tensors: a non-owning TensorView (pointer, dtype, shape, strides, device) and a small
// owning Tensor whose memory comes from an Allocator.
//
// NOTE: shapes and strides count logical elements. For kE2M1 (two elements per byte) the
// innermost dimension must be contiguous and even-sized; strides of outer dimensions are
// still in elements.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>

#include "moe/dtype.h"

namespace moe {

enum class DeviceType : uint8_t { kCPU, kCUDA };

/// Where a tensor lives.
struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int index) { return {DeviceType::kCUDA, index}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const;  ///< "cpu" or "cuda:N"
};

inline constexpr int kMaxDims = 6;

/// Non-owning view. Cheap to copy; never frees.
class TensorView {
 public:
  TensorView() = default;
  /// Contiguous (row-major) view.
  TensorView(void* data, DType dtype, std::span<const int64_t> shape,
             Device device = Device::cpu());
  TensorView(void* data, DType dtype, std::initializer_list<int64_t> shape,
             Device device = Device::cpu())
      : TensorView(data, dtype, std::span<const int64_t>(shape.begin(), shape.size()), device) {}
  /// Strided view.
  TensorView(void* data, DType dtype, std::span<const int64_t> shape,
             std::span<const int64_t> strides, Device device);

  void* data() const { return data_; }
  template <class T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int ndim() const { return ndim_; }
  int64_t size(int dim) const;  ///< negative dims count from the back
  int64_t stride(int dim) const;
  std::span<const int64_t> shape() const { return {shape_.data(), static_cast<size_t>(ndim_)}; }
  std::span<const int64_t> strides() const { return {strides_.data(), static_cast<size_t>(ndim_)}; }
  int64_t numel() const;
  size_t nbytes() const;  ///< bytes spanned by a contiguous view
  bool empty() const { return data_ == nullptr && ndim_ == 0; }
  bool is_contiguous() const;

  /// Rows [begin, end) of dimension 0.
  TensorView slice_rows(int64_t begin, int64_t end) const;
  /// Same memory, new contiguous shape with the same number of elements.
  TensorView reshape(std::initializer_list<int64_t> shape) const;
  /// e.g. "bf16[32, 2048] on cpu"
  std::string str() const;

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Device device_{};
  int ndim_ = 0;
  std::array<int64_t, kMaxDims> shape_{};
  std::array<int64_t, kMaxDims> strides_{};
};

/// Host and device memory behind one interface.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual Device device() const = 0;
};

/// 64-byte aligned host memory.
Allocator& host_allocator();
/// cudaMalloc on the given device; throws when the library was built without CUDA.
Allocator& cuda_allocator(int device_index);
/// The allocator for `device`.
Allocator& allocator_for(Device device);

/// Owning, contiguous tensor.
class Tensor {
 public:
  Tensor() = default;
  /// Uninitialised contiguous tensor.
  static Tensor empty(std::span<const int64_t> shape, DType dtype, Device device = Device::cpu());
  static Tensor empty(std::initializer_list<int64_t> shape, DType dtype,
                      Device device = Device::cpu()) {
    return empty(std::span<const int64_t>(shape.begin(), shape.size()), dtype, device);
  }

  const TensorView& view() const { return view_; }
  operator TensorView() const { return view_; }  // NOLINT: a Tensor is usable as its view
  void* data() const { return view_.data(); }
  template <class T>
  T* data_as() const {
    return view_.data_as<T>();
  }
  DType dtype() const { return view_.dtype(); }
  Device device() const { return view_.device(); }
  int ndim() const { return view_.ndim(); }
  int64_t size(int dim) const { return view_.size(dim); }
  std::span<const int64_t> shape() const { return view_.shape(); }
  int64_t numel() const { return view_.numel(); }
  size_t nbytes() const { return view_.nbytes(); }
  bool defined() const { return buffer_ != nullptr; }

 private:
  std::shared_ptr<void> buffer_;
  TensorView view_;
};

/// Throws moe::Error naming `what` unless `t` has exactly `dtype` and `shape`.
void check_tensor(const TensorView& t, std::string_view what, DType dtype,
                  std::initializer_list<int64_t> shape);

}  // namespace moe
