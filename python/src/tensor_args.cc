// Python tensors <-> moe::TensorView (tensor_args.h).
#include "tensor_args.h"

#include <cstring>
#include <string>
#include <vector>

#include "moe/errors.h"

namespace moe::py {
namespace {

// PyTorch's objects this module uses, looked up once after the user imported torch.
// NOTE: deliberately leaked: they must outlive every Python call, and the interpreter's
// shutdown order would otherwise decide when they are released.
struct TorchApi {
  PyTypeObject* tensor_type = nullptr;
  nb::object bf16, f16, f32, i32, i64, u8, i8, u16, e4m3;
  nb::object current_raw_stream;  // torch._C._cuda_getCurrentRawStream(device) -> int
  nb::object current_stream;      // torch.cuda.current_stream, the fallback
  nb::str s_dtype{"dtype"}, s_data_ptr{"data_ptr"}, s_shape{"shape"}, s_stride{"stride"},
      s_is_cuda{"is_cuda"}, s_is_cpu{"is_cpu"}, s_get_device{"get_device"},
      s_new_empty{"new_empty"}, s_device{"device"};
};

nb::object attr_or_none(nb::handle obj, const char* name) {
  return nb::hasattr(obj, name) ? nb::getattr(obj, name) : nb::none();
}

const TorchApi* torch_api() {
  static TorchApi* api = nullptr;
  if (api != nullptr) return api;
  nb::handle torch = imported_torch();
  if (!torch.is_valid() || !nb::hasattr(torch, "Tensor") || !nb::hasattr(torch, "bfloat16")) {
    return nullptr;  // not imported, or still importing
  }
  auto* t = new TorchApi;
  t->tensor_type = reinterpret_cast<PyTypeObject*>(torch.attr("Tensor").ptr());
  t->bf16 = torch.attr("bfloat16");
  t->f16 = torch.attr("float16");
  t->f32 = torch.attr("float32");
  t->i32 = torch.attr("int32");
  t->i64 = torch.attr("int64");
  t->u8 = torch.attr("uint8");
  t->i8 = torch.attr("int8");
  t->u16 = attr_or_none(torch, "uint16");
  t->e4m3 = attr_or_none(torch, "float8_e4m3fn");
  nb::object c = attr_or_none(torch, "_C");
  if (!c.is_none()) t->current_raw_stream = attr_or_none(c, "_cuda_getCurrentRawStream");
  nb::object cuda = attr_or_none(torch, "cuda");
  if (!cuda.is_none()) t->current_stream = attr_or_none(cuda, "current_stream");
  api = t;
  return api;
}

std::string py_type_name(nb::handle obj) { return Py_TYPE(obj.ptr())->tp_name; }

DType byte_type(std::optional<DType> byte_dtype, const char* what, const std::string& got) {
  MOE_CHECK(byte_dtype.has_value(), what, ": 8-bit elements (", got,
            ") are not accepted here; expected float32, float16, bfloat16 (or uint16 bf16 "
            "bits), int32");
  return *byte_dtype;
}

int64_t as_int(PyObject* o) {
  const long long v = PyLong_AsLongLong(o);
  if (v == -1 && PyErr_Occurred()) throw nb::python_error();
  return v;
}

// The view of a tensor whose bytes are `byte_dtype` elements: e2m1 packs two per byte, so the
// last dimension doubles and outer strides (in elements) double.
void set_view(TensorArg& arg, void* data, DType dtype, int ndim, const int64_t* shape,
              const int64_t* strides, Device device, const char* what) {
  MOE_CHECK(ndim <= kMaxDims, what, ": at most ", kMaxDims, " dimensions, got ", ndim);
  int64_t s[kMaxDims], st[kMaxDims];
  int64_t numel = 1;
  for (int i = 0; i < ndim; ++i) numel *= shape[i];
  // NOTE: the stride of a dimension of size 1 (and every stride of an empty tensor) addresses
  // nothing, and producers set it freely (NumPy, PyTorch): it is set to the contiguous one so
  // that such views count as contiguous.
  int64_t contiguous = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    s[i] = shape[i];
    st[i] = (shape[i] == 1 || numel == 0) ? contiguous : strides[i];
    contiguous *= shape[i];
  }
  if (dtype == DType::kE2M1) {
    MOE_CHECK(ndim >= 1 && st[ndim - 1] == 1, what,
              ": packed fp4 bytes must be contiguous in the last dimension");
    s[ndim - 1] *= 2;
    for (int i = 0; i < ndim - 1; ++i) st[i] *= 2;
  }
  arg.view = TensorView(data, dtype, std::span<const int64_t>(s, ndim),
                        std::span<const int64_t>(st, ndim), device);
}

TensorArg torch_arg(nb::handle obj, const TorchApi& t, const char* what,
                    std::optional<DType> byte_dtype) {
  TensorArg arg;
  arg.framework = Framework::kTorch;
  arg.object = nb::borrow(obj);
  nb::object dt = obj.attr(t.s_dtype);
  DType dtype;
  if (dt.is(t.bf16)) {
    dtype = DType::kBF16;
  } else if (dt.is(t.f32)) {
    dtype = DType::kF32;
  } else if (dt.is(t.f16)) {
    dtype = DType::kF16;
  } else if (dt.is(t.i32)) {
    dtype = DType::kI32;
  } else if (dt.is(t.i64)) {
    dtype = DType::kI64;
  } else if (dt.is(t.u16)) {
    dtype = DType::kBF16;
  } else if (dt.is(t.u8) || dt.is(t.i8) || dt.is(t.e4m3)) {
    dtype = byte_type(byte_dtype, what, nb::str(dt).c_str());
  } else {
    MOE_THROW(what, ": unsupported element type ", nb::str(dt).c_str(),
              "; expected torch.bfloat16, float16, float32 or int32");
  }
  Device device;
  if (obj.attr(t.s_is_cuda).is(Py_True)) {
    device = Device::cuda(static_cast<int>(as_int(obj.attr(t.s_get_device)().ptr())));
  } else if (!obj.attr(t.s_is_cpu).is(Py_True)) {
    MOE_THROW(what, ": tensors on ", nb::str(obj.attr(t.s_device)).c_str(),
              " are not supported (cpu or cuda)");
  }
  nb::object ptr = obj.attr(t.s_data_ptr)();
  void* data = PyLong_AsVoidPtr(ptr.ptr());
  if (data == nullptr && PyErr_Occurred()) throw nb::python_error();
  nb::object shape = obj.attr(t.s_shape);
  nb::object stride = obj.attr(t.s_stride)();
  const int ndim = static_cast<int>(PyTuple_GET_SIZE(shape.ptr()));
  MOE_CHECK(ndim <= kMaxDims, what, ": at most ", kMaxDims, " dimensions, got ", ndim);
  int64_t s[kMaxDims], st[kMaxDims];
  for (int i = 0; i < ndim; ++i) {
    s[i] = as_int(PyTuple_GET_ITEM(shape.ptr(), i));
    st[i] = as_int(PyTuple_GET_ITEM(stride.ptr(), i));
  }
  set_view(arg, data, dtype, ndim, s, st, device, what);
  return arg;
}

DType dlpack_dtype(nb::dlpack::dtype dt, const char* what, std::optional<DType> byte_dtype) {
  using Code = nb::dlpack::dtype_code;
  const auto code = static_cast<Code>(dt.code);
  const std::string got = "DLPack code " + std::to_string(dt.code) + ", " +
                          std::to_string(dt.bits) + " bits x " + std::to_string(dt.lanes);
  MOE_CHECK(dt.lanes == 1, what, ": vector element types are not supported (", got, ")");
  if (code == Code::Float && dt.bits == 32) return DType::kF32;
  if (code == Code::Float && dt.bits == 16) return DType::kF16;
  if (code == Code::Bfloat && dt.bits == 16) return DType::kBF16;
  if (code == Code::UInt && dt.bits == 16) return DType::kBF16;  // bf16 bit patterns
  if (code == Code::Int && dt.bits == 32) return DType::kI32;
  if (code == Code::Int && dt.bits == 64) return DType::kI64;
  if (dt.bits == 8 && (code == Code::UInt || code == Code::Int || code == Code::Float8_E4M3FN)) {
    return byte_type(byte_dtype, what, got);
  }
  MOE_THROW(what, ": unsupported element type (", got,
            "); expected float32, float16, bfloat16 (or uint16 bf16 bits), int32");
}

nb::dlpack::dtype to_dlpack(DType dtype, bool numpy) {
  using Code = nb::dlpack::dtype_code;
  switch (dtype) {
    case DType::kF32:
      return {static_cast<uint8_t>(Code::Float), 32, 1};
    case DType::kF16:
      return {static_cast<uint8_t>(Code::Float), 16, 1};
    case DType::kBF16:  // NumPy has no bfloat16: its bit patterns as uint16
      return {static_cast<uint8_t>(numpy ? Code::UInt : Code::Bfloat), 16, 1};
    case DType::kI32:
      return {static_cast<uint8_t>(Code::Int), 32, 1};
    case DType::kI64:
      return {static_cast<uint8_t>(Code::Int), 64, 1};
    default:  // bytes: e4m3, e4m3 scales, ue8m0, u8, packed e2m1
      return {static_cast<uint8_t>(Code::UInt), 8, 1};
  }
}

nb::capsule owner_of(Tensor t) {
  return nb::capsule(new Tensor(std::move(t)),
                     [](void* p) noexcept { delete static_cast<Tensor*>(p); });
}

}  // namespace

nb::handle imported_torch() {
  PyObject* modules = PyImport_GetModuleDict();
  return nb::handle(PyDict_GetItemString(modules, "torch"));  // borrowed; null when absent
}

TensorArg tensor_arg(nb::handle obj, const char* what, bool writable,
                     std::optional<DType> byte_dtype) {
  MOE_CHECK(!obj.is_none(), what, ": expected a tensor, got None");
  if (const TorchApi* t = torch_api();
      t != nullptr && PyObject_TypeCheck(obj.ptr(), t->tensor_type)) {
    return torch_arg(obj, *t, what, byte_dtype);
  }
  TensorArg arg;
  arg.object = nb::borrow(obj);
  arg.framework = std::strcmp(Py_TYPE(obj.ptr())->tp_name, "numpy.ndarray") == 0
                      ? Framework::kNumpy
                      : Framework::kOther;
  bool ok = false;
  if (writable) {
    ok = nb::try_cast(obj, arg.array);
    if (!ok) {
      nb::ndarray<nb::ro> read_only;
      MOE_CHECK(!nb::try_cast(obj, read_only), what, ": the ", py_type_name(obj),
                " is read-only, but it is written");
    }
  } else {
    nb::ndarray<nb::ro> read_only;
    ok = nb::try_cast(obj, read_only);
    if (ok) arg.array = nb::ndarray<>(read_only);
  }
  MOE_CHECK(ok, what,
            ": expected a tensor (an object with __dlpack__ or the buffer protocol: "
            "NumPy, PyTorch, CuPy, ...), got ",
            py_type_name(obj));
  const nb::ndarray<>& a = arg.array;
  Device device;
  switch (a.device_type()) {
    case nb::device::cpu::value:
    case nb::device::cuda_host::value:
      break;
    case nb::device::cuda::value:
    case nb::device::cuda_managed::value:
      device = Device::cuda(a.device_id());
      break;
    default:
      MOE_THROW(what, ": DLPack device type ", a.device_type(), " is not supported (cpu or cuda)");
  }
  const DType dtype = dlpack_dtype(a.dtype(), what, byte_dtype);
  const int ndim = static_cast<int>(a.ndim());
  std::vector<int64_t> shape(ndim), strides(ndim);
  int64_t contiguous = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    shape[i] = static_cast<int64_t>(a.shape(i));
    strides[i] = a.stride_ptr() != nullptr ? a.stride(i) : contiguous;
    contiguous *= shape[i];
  }
  set_view(arg, a.data(), dtype, ndim, shape.data(), strides.data(), device, what);
  return arg;
}

TensorArg new_tensor_like(const TensorArg& like, std::initializer_list<int64_t> shape,
                          DType dtype) {
  const Device device = like.view.device();
  if (like.framework == Framework::kTorch) {
    const TorchApi& t = *torch_api();
    nb::object torch_dtype = dtype == DType::kBF16  ? t.bf16
                             : dtype == DType::kF16 ? t.f16
                             : dtype == DType::kF32 ? t.f32
                                                    : t.i32;
    nb::list dims;
    for (int64_t d : shape) dims.append(d);
    nb::object out =
        like.object.attr(t.s_new_empty)(nb::tuple(dims), nb::arg("dtype") = torch_dtype);
    return torch_arg(out, t, "output", std::nullopt);
  }
  const bool numpy = like.framework == Framework::kNumpy && device.is_cpu();
  Tensor storage = Tensor::empty(shape, dtype, device);
  TensorArg arg;
  arg.framework = numpy ? Framework::kNumpy : Framework::kOther;
  arg.view = storage.view();
  std::vector<size_t> dims(shape.begin(), shape.end());
  const int device_type = device.is_cuda() ? nb::device::cuda::value : nb::device::cpu::value;
  void* data = storage.data();
  nb::capsule owner = owner_of(std::move(storage));
  if (numpy) {
    arg.object = nb::ndarray<nb::numpy>(data, dims.size(), dims.data(), owner, nullptr,
                                        to_dlpack(dtype, true), device_type)
                     .cast();
  } else {
    // array_api: a nanobind ndarray object with __dlpack__, __dlpack_device__ and the buffer
    // protocol, which any framework's from_dlpack() takes.
    arg.object = nb::ndarray<nb::array_api>(data, dims.size(), dims.data(), owner, nullptr,
                                            to_dlpack(dtype, false), device_type, device.index)
                     .cast();
  }
  return arg;
}

void* stream_arg(nb::handle stream, Device device) {
  if (stream.is_none()) {
    if (!device.is_cuda()) return nullptr;
    const TorchApi* t = torch_api();
    if (t == nullptr) return nullptr;
    if (t->current_raw_stream.is_valid() && !t->current_raw_stream.is_none()) {
      return PyLong_AsVoidPtr(t->current_raw_stream(device.index).ptr());
    }
    return PyLong_AsVoidPtr(t->current_stream(device.index).attr("cuda_stream").ptr());
  }
  nb::object handle = nb::borrow(stream);
  if (!PyLong_Check(stream.ptr())) {
    if (nb::hasattr(stream, "cuda_stream")) {
      handle = stream.attr("cuda_stream");
    } else if (nb::hasattr(stream, "ptr")) {
      handle = stream.attr("ptr");
    } else {
      MOE_THROW(
          "stream: expected None, an int (a cudaStream_t) or a stream object with a "
          "'cuda_stream' or 'ptr' attribute, got ",
          py_type_name(stream));
    }
  }
  void* s = PyLong_AsVoidPtr(handle.ptr());
  if (s == nullptr && PyErr_Occurred()) throw nb::python_error();
  MOE_CHECK(s == nullptr || device.is_cuda(),
            "stream: a CUDA stream was given, but the layer runs on ", device.str());
  return s;
}

nb::object numpy_copy(const TensorView& t) {
  MOE_CHECK(t.device().is_cpu() && t.is_contiguous(),
            "numpy_copy: expected a contiguous host tensor, got ", t.str());
  Tensor copy = Tensor::empty(t.shape(), t.dtype());
  std::memcpy(copy.data(), t.data(), t.nbytes());
  std::vector<size_t> dims(t.shape().begin(), t.shape().end());
  if (t.dtype() == DType::kE2M1 && !dims.empty()) dims.back() /= 2;  // packed bytes
  void* data = copy.data();
  return nb::ndarray<nb::numpy>(data, dims.size(), dims.data(), owner_of(std::move(copy)), nullptr,
                                to_dlpack(t.dtype(), true))
      .cast();
}

}  // namespace moe::py
