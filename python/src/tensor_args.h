// Python tensors <-> moe::TensorView, without copies, for the moe_engine module.
//
// Accepted: any object with __dlpack__ or the buffer protocol (NumPy, PyTorch, CuPy, JAX, ...),
// on the CPU or a CUDA device. PyTorch tensors take a faster path that reads their attributes
// (dtype, is_cuda + get_device() or is_cpu, data_ptr(), shape, is_contiguous(); stride() only
// when not contiguous) instead of exporting a DLPack capsule: about 0.35 us per tensor on a
// desktop CPU, all read on every call (python/tests/bench_overhead.py). Element types:
//   float32 -> f32, float16 -> f16, bfloat16 -> bf16, int32 -> i32, int64 -> i64,
//   uint16 -> bf16 (NumPy has no bfloat16: a uint16 array is read as bf16 bit patterns),
//   uint8 / int8 / float8_e4m3fn -> the 8-bit type the caller expects (e4m3, ue8m0, ...).
// Outputs are made like an input: PyTorch -> a torch tensor (torch.empty_like(x) when x has
// the output's shape and dtype, else torch.empty on x's device: the caching allocator,
// capturable in torch.cuda.graph), NumPy -> a NumPy array, anything else -> a DLPack-capable
// nanobind ndarray (GPU memory from cudaMalloc, freed when it is dropped).
#pragma once

#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <initializer_list>
#include <optional>

#include "moe/tensor.h"

namespace moe::py {

namespace nb = nanobind;

/// Where a tensor argument came from.
enum class Framework : uint8_t { kTorch, kNumpy, kOther };

/// A tensor argument seen as a TensorView. `keep` holds what the view's memory needs alive
/// (the DLPack import; the object itself for torch).
struct TensorArg {
  TensorView view;
  Framework framework = Framework::kOther;
  nb::object object;       // the Python object passed
  nb::ndarray<> array;     // the DLPack / buffer import (not used for torch)
  nb::handle torch_dtype;  // torch only: its torch.dtype (torch keeps these alive)
};

/// Views `obj` (see the file comment). `what` names the argument in errors; `byte_dtype`
/// is the DType 8-bit element types are read as (nullopt: 8-bit input is an error), and
/// `writable` asks for memory that will be written. Throws moe::Error naming `what`.
TensorArg tensor_arg(nb::handle obj, const char* what, bool writable,
                     std::optional<DType> byte_dtype = std::nullopt);

/// A new contiguous tensor of `shape` and `dtype` on `like`'s device, in `like`'s framework.
TensorArg new_tensor_like(const TensorArg& like, std::initializer_list<int64_t> shape, DType dtype);

/// The cudaStream_t a Python `stream` argument stands for: an int (the handle), an object
/// with `cuda_stream` (torch.cuda.Stream) or `ptr` (cupy) attributes, or None: PyTorch's
/// current stream on `device` when torch is imported, else the default stream (0).
void* stream_arg(nb::handle stream, Device device);

/// A NumPy copy of a host tensor: f32, f16, i32, i64 as such; bf16 as uint16 bits; 8-bit
/// and packed 4-bit types as uint8 bytes ([.., n / 2] for e2m1).
nb::object numpy_copy(const TensorView& t);

/// PyTorch's module when the user has imported it (this module never imports torch).
nb::handle imported_torch();

}  // namespace moe::py
