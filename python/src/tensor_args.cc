// Python tensors <-> moe::TensorView (tensor_args.h).
#include "tensor_args.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "moe/errors.h"

namespace moe::py {
namespace {

// One PyTorch tensor attribute (a property such as `dtype`) or argument-less method (such as
// `data_ptr`), resolved once on torch.Tensor.
struct TorchMember {
  PyObject* name = nullptr;    // interned
  PyObject* member = nullptr;  // torch.Tensor.<name>: a descriptor or an unbound method
  descrgetfunc get = nullptr;  // the property's getter (null: read by name)
  bool is_property = false;
};

// PyTorch's objects this module uses, looked up once after the user imported torch.
// NOTE: deliberately leaked: they must outlive every Python call, and the interpreter's
// shutdown order would otherwise decide when they are released.
struct TorchApi {
  PyTypeObject* tensor_type = nullptr;
  nb::object bf16, f16, f32, i32, i64, u8, i8, u16, e4m3;
  TorchMember dtype, is_cuda, is_cpu, shape, get_device, data_ptr, is_contiguous, stride;
  nb::object empty;                      // torch.empty(*sizes, dtype=, device=): output allocations
  nb::object empty_like;                 // torch.empty_like(x): forward's output
  nb::object kw_dtype_device;            // ("dtype", "device"): its keyword names
  nb::object device_type;                // torch.device
  nb::object cpu_device;                 // torch.device("cpu")
  std::vector<nb::object> cuda_devices;  // torch.device("cuda", i), made when first used
  nb::object current_raw_stream;         // torch._C._cuda_getCurrentRawStream(device) -> int
  nb::object current_stream;             // torch.cuda.current_stream, the fallback
};

nb::object attr_or_none(nb::handle obj, const char* name) {
  return nb::hasattr(obj, name) ? nb::getattr(obj, name) : nb::none();
}

TorchMember torch_member(nb::handle tensor_type, const char* name, bool property) {
  TorchMember m;
  m.is_property = property;
  m.name = PyUnicode_InternFromString(name);
  if (m.name == nullptr) throw nb::python_error();
  m.member = PyObject_GetAttr(tensor_type.ptr(), m.name);
  if (m.member == nullptr) {
    PyErr_Clear();  // not in this PyTorch: read by name (and fail there, naming it)
    return m;
  }
  if (property) {
    m.get = Py_TYPE(m.member)->tp_descr_get;
    if (m.get == nullptr) Py_CLEAR(m.member);  // not a descriptor: read by name
  }
  return m;
}

TorchApi* torch_api() {
  static TorchApi* api = nullptr;
  if (api != nullptr) return api;
  nb::handle torch = imported_torch();
  if (!torch.is_valid() || !nb::hasattr(torch, "Tensor") || !nb::hasattr(torch, "bfloat16") ||
      !nb::hasattr(torch, "empty_like") || !nb::hasattr(torch, "device")) {
    return nullptr;  // not imported, or still importing
  }
  auto* t = new TorchApi;
  nb::object tensor = torch.attr("Tensor");
  t->tensor_type = reinterpret_cast<PyTypeObject*>(tensor.ptr());
  t->bf16 = torch.attr("bfloat16");
  t->f16 = torch.attr("float16");
  t->f32 = torch.attr("float32");
  t->i32 = torch.attr("int32");
  t->i64 = torch.attr("int64");
  t->u8 = torch.attr("uint8");
  t->i8 = torch.attr("int8");
  t->u16 = attr_or_none(torch, "uint16");
  t->e4m3 = attr_or_none(torch, "float8_e4m3fn");
  t->dtype = torch_member(tensor, "dtype", true);
  t->is_cuda = torch_member(tensor, "is_cuda", true);
  t->is_cpu = torch_member(tensor, "is_cpu", true);
  t->shape = torch_member(tensor, "shape", true);
  t->get_device = torch_member(tensor, "get_device", false);
  t->data_ptr = torch_member(tensor, "data_ptr", false);
  t->is_contiguous = torch_member(tensor, "is_contiguous", false);
  t->stride = torch_member(tensor, "stride", false);
  t->empty = torch.attr("empty");
  t->empty_like = torch.attr("empty_like");
  t->kw_dtype_device = nb::make_tuple("dtype", "device");
  t->device_type = torch.attr("device");
  t->cpu_device = t->device_type("cpu");
  nb::object c = attr_or_none(torch, "_C");
  if (!c.is_none()) t->current_raw_stream = attr_or_none(c, "_cuda_getCurrentRawStream");
  nb::object cuda = attr_or_none(torch, "cuda");
  if (!cuda.is_none()) t->current_stream = attr_or_none(cuda, "current_stream");
  api = t;
  return api;
}

// obj.<m> (a property) or obj.<m>() (a method). An exact torch.Tensor is read through the
// member resolved on torch.Tensor (no attribute lookup, no bound method); a subclass by name,
// since it may override the member in Python.
nb::object torch_read(nb::handle obj, const TorchApi& t, const TorchMember& m) {
  PyObject* o = obj.ptr();
  PyObject* r;
  if (m.member != nullptr && Py_TYPE(o) == t.tensor_type) {
    r = m.get != nullptr ? m.get(m.member, o, reinterpret_cast<PyObject*>(Py_TYPE(o)))
                         : PyObject_Vectorcall(m.member, &o, 1, nullptr);
  } else {
    r = m.is_property ? PyObject_GetAttr(o, m.name) : PyObject_CallMethodNoArgs(o, m.name);
  }
  if (r == nullptr) throw nb::python_error();
  return nb::steal(r);
}

std::string py_type_name(nb::handle obj) { return Py_TYPE(obj.ptr())->tp_name; }

// str(obj), for messages.
std::string py_str(nb::handle obj) {
  nb::object s = nb::steal(PyObject_Str(obj.ptr()));
  if (!s.is_valid()) throw nb::python_error();
  const char* text = PyUnicode_AsUTF8(s.ptr());
  if (text == nullptr) throw nb::python_error();
  return text;
}

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

// The ints of a tuple (torch.Size, a stride tuple) into `out`; returns how many.
int int_tuple(nb::handle tuple, int64_t* out, const char* what, const char* which) {
  MOE_CHECK(PyTuple_Check(tuple.ptr()), what, ": its ", which, " is a ", py_type_name(tuple),
            ", expected a tuple of ints");
  const int n = static_cast<int>(PyTuple_GET_SIZE(tuple.ptr()));
  MOE_CHECK(n <= kMaxDims, what, ": at most ", kMaxDims, " dimensions, got ", n);
  for (int i = 0; i < n; ++i) out[i] = as_int(PyTuple_GET_ITEM(tuple.ptr(), i));
  return n;
}

DType torch_dtype(nb::handle dt, const TorchApi& t, const char* what,
                  std::optional<DType> byte_dtype) {
  if (dt.is(t.bf16)) return DType::kBF16;
  if (dt.is(t.f32)) return DType::kF32;
  if (dt.is(t.f16)) return DType::kF16;
  if (dt.is(t.i32)) return DType::kI32;
  if (dt.is(t.i64)) return DType::kI64;
  if (dt.is(t.u16)) return DType::kBF16;  // bf16 bit patterns
  if (dt.is(t.u8) || dt.is(t.i8) || dt.is(t.e4m3)) {
    return byte_type(byte_dtype, what, py_str(dt));
  }
  MOE_THROW(what, ": unsupported element type ", py_str(dt),
            "; expected torch.bfloat16, float16, float32 or int32");
}

// NOTE: most of a forward's cost over the C++ call is here: six PyTorch calls a tensor, about
// 35-100 ns each. They are the fewest that still check everything on every call: is_cuda then
// get_device() (CUDA) or is_cpu, since get_device() alone is also >= 0 on other devices; and
// is_contiguous() (no tuple) instead of stride(), which is read only for a non-contiguous
// tensor so that the library's error shows its strides.
TensorArg torch_arg(nb::handle obj, const TorchApi& t, const char* what,
                    std::optional<DType> byte_dtype) {
  TensorArg arg;
  arg.framework = Framework::kTorch;
  arg.object = nb::borrow(obj);
  nb::object dt = torch_read(obj, t, t.dtype);
  const DType dtype = torch_dtype(dt, t, what, byte_dtype);
  arg.torch_dtype = dt;  // one of TorchApi's dtypes, which keeps it alive
  Device device;
  if (torch_read(obj, t, t.is_cuda).is(Py_True)) {
    device = Device::cuda(static_cast<int>(as_int(torch_read(obj, t, t.get_device).ptr())));
  } else if (!torch_read(obj, t, t.is_cpu).is(Py_True)) {
    MOE_THROW(what, ": tensors on ", py_str(obj.attr("device")),
              " are not supported (cpu or cuda)");
  }
  void* data = PyLong_AsVoidPtr(torch_read(obj, t, t.data_ptr).ptr());
  if (data == nullptr && PyErr_Occurred()) throw nb::python_error();
  int64_t shape[kMaxDims], strides[kMaxDims];  // (ndim)
  const int ndim = int_tuple(torch_read(obj, t, t.shape), shape, what, "shape");
  if (torch_read(obj, t, t.is_contiguous).is(Py_True)) {
    int64_t contiguous = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      strides[i] = contiguous;
      contiguous *= shape[i];
    }
  } else {
    const int n = int_tuple(torch_read(obj, t, t.stride), strides, what, "stride");
    MOE_CHECK(n == ndim, what, ": ", n, " strides for ", ndim, " dimensions");
  }
  set_view(arg, data, dtype, ndim, shape, strides, device, what);
  return arg;
}

// torch.device for `device`, made once per device.
nb::handle torch_device(TorchApi& t, Device device) {
  if (device.is_cpu()) return t.cpu_device;
  const size_t i = static_cast<size_t>(device.index);
  if (i >= t.cuda_devices.size()) t.cuda_devices.resize(i + 1);
  if (!t.cuda_devices[i].is_valid()) t.cuda_devices[i] = t.device_type("cuda", device.index);
  return t.cuda_devices[i];
}

nb::handle torch_dtype_object(const TorchApi& t, DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return t.bf16;
    case DType::kF16:
      return t.f16;
    case DType::kF32:
      return t.f32;
    case DType::kI32:
      return t.i32;
    case DType::kI64:
      return t.i64;
    default:
      MOE_THROW("output: no torch dtype for ", dtype_name(dtype));
  }
}

// A new torch tensor from PyTorch's allocator (the caching allocator on CUDA, so the call can
// be captured in torch.cuda.graph): torch.empty_like(like) when `like` already has the shape
// and dtype asked for (an exact, contiguous torch.Tensor), else torch.empty(*shape, dtype=,
// device=). NOTE: the cheapest calls measured (CPU tensors, torch 2.x): empty_like(x) 0.7 us,
// torch.empty(T, H, dtype=, device=) 1.0 us, torch.empty((T, H), ...) and x.new_empty 1.4 us.
// Only the new tensor's data_ptr() is read back.
TensorArg torch_empty(TorchApi& t, const TensorArg& like, std::initializer_list<int64_t> shape,
                      DType dtype) {
  const Device device = like.view.device();
  nb::handle torch_type = torch_dtype_object(t, dtype);
  const std::span<const int64_t> dims(shape.begin(), shape.size());
  const bool same = Py_TYPE(like.object.ptr()) == t.tensor_type &&
                    like.torch_dtype.is(torch_type) && like.view.is_contiguous() &&
                    std::ranges::equal(like.view.shape(), dims);
  PyObject* out;
  if (same) {
    PyObject* arg = like.object.ptr();
    out = PyObject_Vectorcall(t.empty_like.ptr(), &arg, 1, nullptr);
  } else {
    // args[0] is free for the callee (PY_VECTORCALL_ARGUMENTS_OFFSET); then the sizes and
    // the values of the keywords dtype=, device=.
    PyObject* args[1 + kMaxDims + 2] = {};
    nb::object sizes[kMaxDims];
    const size_t n = dims.size();
    MOE_CHECK(n <= kMaxDims, "output: at most ", kMaxDims, " dimensions, got ", n);
    for (size_t i = 0; i < n; ++i) {
      sizes[i] = nb::steal(PyLong_FromLongLong(dims[i]));
      if (!sizes[i].is_valid()) throw nb::python_error();
      args[1 + i] = sizes[i].ptr();
    }
    args[1 + n] = torch_type.ptr();
    args[2 + n] = torch_device(t, device).ptr();
    out = PyObject_Vectorcall(t.empty.ptr(), args + 1, n | PY_VECTORCALL_ARGUMENTS_OFFSET,
                              t.kw_dtype_device.ptr());
  }
  if (out == nullptr) throw nb::python_error();
  TensorArg arg;
  arg.framework = Framework::kTorch;
  arg.object = nb::steal(out);
  arg.torch_dtype = torch_type;
  void* data = PyLong_AsVoidPtr(torch_read(arg.object, t, t.data_ptr).ptr());
  if (data == nullptr && PyErr_Occurred()) throw nb::python_error();
  arg.view = TensorView(data, dtype, dims, device);
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
  static PyObject* const kName = PyUnicode_InternFromString("torch");
  // Borrowed; null when absent. A lookup error (none is expected) reads as "not imported".
  PyObject* torch = PyDict_GetItemWithError(PyImport_GetModuleDict(), kName);
  if (torch == nullptr) PyErr_Clear();
  return nb::handle(torch);
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
  if (like.framework == Framework::kTorch) return torch_empty(*torch_api(), like, shape, dtype);
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
  nb::object handle;
  if (stream.is_none()) {
    if (!device.is_cuda()) return nullptr;
    const TorchApi* t = torch_api();
    if (t == nullptr) return nullptr;
    nb::object index = nb::steal(PyLong_FromLong(device.index));
    if (!index.is_valid()) throw nb::python_error();
    PyObject* arg = index.ptr();
    if (t->current_raw_stream.is_valid() && !t->current_raw_stream.is_none()) {
      handle = nb::steal(PyObject_Vectorcall(t->current_raw_stream.ptr(), &arg, 1, nullptr));
    } else {
      handle = nb::steal(PyObject_Vectorcall(t->current_stream.ptr(), &arg, 1, nullptr));
      if (handle.is_valid())
        handle = nb::steal(PyObject_GetAttrString(handle.ptr(), "cuda_stream"));
    }
    if (!handle.is_valid()) throw nb::python_error();
  } else if (PyLong_Check(stream.ptr())) {
    handle = nb::borrow(stream);
  } else {
    static PyObject* const kNames[] = {PyUnicode_InternFromString("cuda_stream"),
                                       PyUnicode_InternFromString("ptr")};
    for (PyObject* name : kNames) {
      handle = nb::steal(PyObject_GetAttr(stream.ptr(), name));
      if (handle.is_valid()) break;
      if (!PyErr_ExceptionMatches(PyExc_AttributeError)) throw nb::python_error();
      PyErr_Clear();
    }
    MOE_CHECK(handle.is_valid(),
              "stream: expected None, an int (a cudaStream_t) or a stream object with a "
              "'cuda_stream' or 'ptr' attribute, got ",
              py_type_name(stream));
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
