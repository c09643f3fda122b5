// cuBLASLt FP8 probe: which e4m3 matmul configurations this GPU's cuBLASLt accepts, and how
// accurate each one is against float64, in one run. It answers the questions behind the dense
// backend's scaled GEMMs (src/backends/dense/dense_gemm.h); text output only.
//
//   ./build/cublaslt_fp8_probe          (a Hopper GPU; well under a minute)
//
// Sections
//   1  scale pointers at heuristic time: unset (NULL) vs set, per scale-mode pair
//   2  support matrix: operand order x output (f32, bf16) x scale modes of (W, x) x shape x T;
//      each cell is the heuristic's refusal or, when it returns an algorithm, the relative
//      L2 of that algorithm's output against float64
//   3  leading dimensions around the dense backend's configuration
//   4  accuracy against K: per-tensor (fast accumulation off / on), block-scaled (f32 / bf16
//      out), the same values as bf16 operands, and the bf16 output-rounding floor
//   5  the dense backend's LtGemm on its own GEMMs: buckets, both ends of every bucket,
//      strided and offset operands, per-tensor with only the activation scale, accumulation
//   6  scale pointer alignment at run time (last: a fault ends the process)
//
// Conventions. W [N, K] e4m3 row-major (row stride ld_w), x [T, K] e4m3 (ld_x).
//   order A=W (the dense backend's): cuBLAS A = W (op T), B = x (op N), D = out [T, N]
//   order A=x:                       cuBLAS A = x (op T), B = W (op N), D = out^T [N, T]
// Scale tensors, per the cuBLAS docs (3.1.4.5.1; the same whichever operand is A); R = the
// operand's rows (N for W, T for x), L = ceil(K / 128), L4 = L rounded up to 4:
//   SCALAR  f32 [1]
//   VEC128  f32 [L, R]                 s(r, b) at b * R + r
//   BLK128  f32 [ceil(R / 128), L4]    s(r, b) at (r / 128) * L4 + b   (padding -1)
// Cells: a relative L2 such as 1.2e-04; INVALID / NOT_SUPP / ARCH ... = the heuristic's
// status; "none" = success without an algorithm; "run:X" = the matmul call's status; "[mN]"
// = cuBLASLt's error message N, listed at the end. Operand values: e4m3 of 2 N(0, 1); scales
// 2^U(-1, 1), distinct per block so a wrong scale layout shows as an O(0.1 .. 1) error.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "backends/dense/dense_gemm.h"
#include "core/random.h"
#include "moe/errors.h"
#include "quant/formats.h"

namespace {

using moe::DType;

constexpr size_t kWorkspaceBytes = size_t{32} << 20;
constexpr int kMaxAlgos = 8;
constexpr int64_t kGroup = 128;

// ---- Errors and cuBLASLt's log ------------------------------------------------------------

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void lt_ok(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string(what) + ": " + cublasGetStatusString(s));
  }
}

std::string g_last_message;           // cuBLASLt's latest error message
std::vector<std::string> g_messages;  // distinct messages: m1, m2, ...

void lt_logger(int, const char* function, const char* message) {
  g_last_message = std::string(function ? function : "?") + ": " + (message ? message : "");
}

/// "[mN]" for the message logged since the last take, or "".
std::string take_message() {
  if (g_last_message.empty()) return "";
  auto it = std::find(g_messages.begin(), g_messages.end(), g_last_message);
  const size_t id = static_cast<size_t>(it - g_messages.begin());
  if (it == g_messages.end()) g_messages.push_back(g_last_message);
  g_last_message.clear();
  return "[m" + std::to_string(id + 1) + "]";
}

std::string status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "OK";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "INVALID";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "NOT_SUPP";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "ARCH";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "EXEC_FAIL";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "INTERNAL";
    default:
      return "STATUS" + std::to_string(static_cast<int>(s));
  }
}

// ---- Device buffers -----------------------------------------------------------------------

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    cuda_ok(cudaMalloc(&ptr_, bytes), "cudaMalloc");
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }

  template <class T>
  void upload(const std::vector<T>& host, size_t byte_offset = 0) {
    if (byte_offset + host.size() * sizeof(T) > bytes_) throw std::runtime_error("upload overflow");
    cuda_ok(
        cudaMemcpy(at(byte_offset), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
        "upload");
  }
  std::vector<uint8_t> download(size_t bytes) const {
    std::vector<uint8_t> host(bytes);
    cuda_ok(cudaMemcpy(host.data(), ptr_, bytes, cudaMemcpyDeviceToHost), "download");
    return host;
  }
  void poison() { cuda_ok(cudaMemset(ptr_, 0xFF, bytes_), "poison"); }  // NaN in every float
  char* at(size_t byte_offset) const { return static_cast<char*>(ptr_) + byte_offset; }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// A sticky CUDA error: nothing after it can run, so it ends the probe.
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Surfaces a sticky CUDA error (a faulted kernel) at once.
void sync_or_die(const char* what) {
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    throw Fatal(std::string("CUDA error after ") + what + ": " + cudaGetErrorString(e));
  }
}

cublasLtHandle_t g_handle = nullptr;
DeviceBuffer* g_workspace = nullptr;
DeviceBuffer* g_out = nullptr;  // every probe's D, poisoned before each run

size_t type_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }
const char* type_name(cudaDataType_t t) {
  return t == CUDA_R_32F ? "f32" : (t == CUDA_R_16BF ? "bf16" : "f16");
}
double decode(const uint8_t* p, cudaDataType_t t) {
  if (t == CUDA_R_32F) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
  uint16_t b;
  std::memcpy(&b, p, 2);
  return t == CUDA_R_16BF ? moe::fmt::bf16_to_float(b) : moe::fmt::f16_to_float(b);
}

double relative_l2(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

std::string fmt_rel(double r) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1e", r);
  return buf;
}

// ---- Scale modes and operands -------------------------------------------------------------

enum class Mode { kScalar = 0, kVec128 = 1, kBlk = 2 };
constexpr Mode kModes[] = {Mode::kScalar, Mode::kVec128, Mode::kBlk};

const char* mode_name(Mode m) {
  return m == Mode::kScalar ? "SCALAR" : (m == Mode::kVec128 ? "VEC128" : "BLK128");
}
int32_t lt_mode(Mode m) {
  switch (m) {
    case Mode::kScalar:
      return CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
    case Mode::kVec128:
      return CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    case Mode::kBlk:
      break;
  }
  return CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round4(int64_t a) { return (a + 3) / 4 * 4; }

/// A random scale in [0.5, 2).
float scale_value(uint64_t stream, uint64_t index) {
  return std::exp2(2.0f * moe::uniform_at(stream, index) - 1.0f);
}

/// One e4m3 operand [rows, ld] (columns [0, k) used), its scales in all three modes and the
/// same values as bf16 (e4m3 values are exact in bf16).
struct Operand {
  int64_t rows, k, ld, groups;
  std::vector<uint8_t> codes;   // [rows, ld]
  std::vector<float> values;    // decoded codes
  std::vector<float> scale[3];  // per Mode, in the cuBLAS layout (BLK padding -1)
  DeviceBuffer data, bf16;
  DeviceBuffer scale_dev[3];

  Operand(int64_t rows_, int64_t k_, int64_t ld_, uint64_t seed)
      : rows(rows_), k(k_), ld(ld_), groups(ceil_div(k_, kGroup)) {
    codes.resize(rows * ld);
    values.resize(rows * ld);
    std::vector<uint16_t> b16(rows * ld);
    const uint64_t s = moe::stream_id(seed, 1);
    for (int64_t i = 0; i < rows * ld; ++i) {
      codes[i] = moe::fmt::float_to_e4m3(2.0f * moe::normal_at(s, i));
      values[i] = moe::fmt::e4m3_to_float(codes[i]);
      b16[i] = moe::fmt::float_to_bf16(values[i]);
    }
    const uint64_t ss = moe::stream_id(seed, 2);
    uint64_t next = 0;
    scale[0] = {scale_value(ss, next++)};
    scale[1].assign(groups * rows, 0.0f);
    for (int64_t b = 0; b < groups; ++b) {
      for (int64_t r = 0; r < rows; ++r) scale[1][b * rows + r] = scale_value(ss, next++);
    }
    const int64_t l4 = round4(groups), row_blocks = ceil_div(rows, kGroup);
    scale[2].assign(row_blocks * l4, -1.0f);
    for (int64_t p = 0; p < row_blocks; ++p) {
      for (int64_t b = 0; b < groups; ++b) scale[2][p * l4 + b] = scale_value(ss, next++);
    }
    data = DeviceBuffer(codes.size());
    data.upload(codes);
    bf16 = DeviceBuffer(b16.size() * 2);
    bf16.upload(b16);
    for (int m = 0; m < 3; ++m) {
      // Slack filled with -1: a layout read past its end stays in bounds, and wrong.
      std::vector<float> padded = scale[m];
      padded.resize(scale[m].size() + 4096, -1.0f);
      scale_dev[m] = DeviceBuffer(padded.size() * sizeof(float));
      scale_dev[m].upload(padded);
    }
  }

  /// The scale of element (r, k-group b) under `mode`.
  double scale_at(Mode mode, int64_t r, int64_t b) const {
    switch (mode) {
      case Mode::kScalar:
        return scale[0][0];
      case Mode::kVec128:
        return scale[1][b * rows + r];
      case Mode::kBlk:
        break;
    }
    return scale[2][(r / kGroup) * round4(groups) + b];
  }
};

/// out [T, N] = x [T, K] . W [N, K]^T with every scale combination, in float64.
struct Problem {
  int64_t n, k, t;
  std::unique_ptr<Operand> w, x;
  std::vector<double> partial;  // [L, T, N]: the unscaled product restricted to k-group b

  Problem(int64_t n_, int64_t k_, int64_t t_, int64_t ld_w, int64_t ld_x, uint64_t seed)
      : n(n_), k(k_), t(t_) {
    w = std::make_unique<Operand>(n, k, ld_w, moe::stream_id(seed, 10));
    x = std::make_unique<Operand>(t, k, ld_x, moe::stream_id(seed, 20));
    const int64_t groups = w->groups;
    partial.assign(groups * t * n, 0.0);
    for (int64_t r = 0; r < t; ++r) {
      const float* xr = &x->values[r * ld_x];
      for (int64_t c = 0; c < n; ++c) {
        const float* wc = &w->values[c * ld_w];
        for (int64_t b = 0; b < groups; ++b) {
          double s = 0;
          for (int64_t q = b * kGroup; q < std::min(k, (b + 1) * kGroup); ++q) {
            s += static_cast<double>(xr[q]) * wc[q];
          }
          partial[(b * t + r) * n + c] = s;
        }
      }
    }
  }

  /// The reference [T, N] with W's scales in `wm` and x's in `xm` (scaled = false: none).
  std::vector<double> reference(bool scaled, Mode wm, Mode xm) const {
    std::vector<double> ref(t * n, 0.0);
    for (int64_t b = 0; b < w->groups; ++b) {
      for (int64_t r = 0; r < t; ++r) {
        const double sx = scaled ? x->scale_at(xm, r, b) : 1.0;
        for (int64_t c = 0; c < n; ++c) {
          const double sw = scaled ? w->scale_at(wm, c, b) : 1.0;
          ref[r * n + c] += sx * sw * partial[(b * t + r) * n + c];
        }
      }
    }
    return ref;
  }
};

// ---- One raw cuBLASLt configuration ---------------------------------------------------------

struct Config {
  bool w_is_a = true;
  cudaDataType_t out = CUDA_R_32F;
  bool scaled = true;  // false: the same values as bf16 operands, no scales
  Mode w_mode = Mode::kBlk, x_mode = Mode::kVec128;
  bool pointers_at_heuristic = true;
  int8_t fast_accum = 0;
  int64_t ld_out = 0;  // 0: D's rows
};

/// The descriptors and the heuristic's first algorithm for a Config on a Problem.
class Plan {
 public:
  Plan(const Problem& p, const Config& c) : p_(p), c_(c) {
    try {
      plan();
    } catch (const std::exception& e) {  // a descriptor cuBLASLt refused to build
      refusal_ = std::string("setup:") + e.what() + take_message();
    }
  }
  ~Plan() {
    if (pref_) cublasLtMatmulPreferenceDestroy(pref_);
    if (ld_) cublasLtMatrixLayoutDestroy(ld_);
    if (lb_) cublasLtMatrixLayoutDestroy(lb_);
    if (la_) cublasLtMatrixLayoutDestroy(la_);
    if (op_) cublasLtMatmulDescDestroy(op_);
  }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  bool ok() const { return refusal_.empty(); }
  const std::string& refusal() const { return refusal_; }

  /// Runs the planned algorithm (scale pointers: the operands' own, or the given ones) and
  /// returns the cell: the relative L2 against float64 or why it did not run.
  std::string run(const void* a_scale = nullptr, const void* b_scale = nullptr) {
    if (!ok()) return refusal_;
    try {
      return run_checked(a_scale, b_scale);
    } catch (const Fatal&) {
      throw;
    } catch (const std::exception& e) {
      return std::string("error:") + e.what() + take_message();
    }
  }

 private:
  void plan() {
    const Problem& p = p_;
    const Config& c = c_;
    a_ = c.w_is_a ? p.w.get() : p.x.get();
    b_ = c.w_is_a ? p.x.get() : p.w.get();
    a_mode_ = c.w_is_a ? c.w_mode : c.x_mode;
    b_mode_ = c.w_is_a ? c.x_mode : c.w_mode;
    ldd_ = c.ld_out > 0 ? c.ld_out : a_->rows;
    lt_ok(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    set(CUBLASLT_MATMUL_DESC_TRANSA, ta);
    set(CUBLASLT_MATMUL_DESC_TRANSB, tb);
    if (c.scaled) {
      set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, lt_mode(a_mode_));
      set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, lt_mode(b_mode_));
      set(CUBLASLT_MATMUL_DESC_FAST_ACCUM, c.fast_accum);
      if (c.pointers_at_heuristic) set_scale_pointers(nullptr, nullptr);
    }
    const cudaDataType_t in = c.scaled ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    lt_ok(cublasLtMatrixLayoutCreate(&la_, in, p.k, a_->rows, a_->ld), "layout A");
    lt_ok(cublasLtMatrixLayoutCreate(&lb_, in, p.k, b_->rows, b_->ld), "layout B");
    lt_ok(cublasLtMatrixLayoutCreate(&ld_, c.out, a_->rows, b_->rows, ldd_), "layout D");
    lt_ok(cublasLtMatmulPreferenceCreate(&pref_), "pref");
    const uint64_t ws = kWorkspaceBytes;
    lt_ok(cublasLtMatmulPreferenceSetAttribute(pref_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                               sizeof(ws)),
          "pref workspace");
    g_last_message.clear();
    cublasLtMatmulHeuristicResult_t results[kMaxAlgos] = {};
    int returned = 0;
    const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g_handle, op_, la_, lb_, ld_, ld_,
                                                            pref_, kMaxAlgos, results, &returned);
    if (s != CUBLAS_STATUS_SUCCESS) {
      refusal_ = status_name(s) + take_message();
    } else if (returned == 0) {
      refusal_ = "none" + take_message();
    } else {
      algo_ = results[0].algo;
    }
  }

  std::string run_checked(const void* a_scale, const void* b_scale) {
    if (c_.scaled) set_scale_pointers(a_scale, b_scale);
    const size_t ob = type_bytes(c_.out);
    const size_t need = static_cast<size_t>(ldd_) * b_->rows * ob;
    if (need > g_out->bytes()) return "out-too-big";
    g_out->poison();
    const float alpha = 1.0f, beta = 0.0f;
    const void* a_data = c_.scaled ? a_->data.get() : a_->bf16.get();
    const void* b_data = c_.scaled ? b_->data.get() : b_->bf16.get();
    g_last_message.clear();
    const cublasStatus_t s =
        cublasLtMatmul(g_handle, op_, &alpha, a_data, la_, b_data, lb_, &beta, g_out->get(), ld_,
                       g_out->get(), ld_, &algo_, g_workspace->get(), kWorkspaceBytes, nullptr);
    if (s != CUBLAS_STATUS_SUCCESS) return "run:" + status_name(s) + take_message();
    sync_or_die("cublasLtMatmul");
    const std::vector<uint8_t> raw = g_out->download(need);
    std::vector<double> got(p_.t * p_.n);
    for (int64_t r = 0; r < p_.t; ++r) {
      for (int64_t c = 0; c < p_.n; ++c) {
        // D is column-major [rows(A), rows(B)] with leading dimension ldd_.
        const int64_t idx = c_.w_is_a ? r * ldd_ + c : c * ldd_ + r;
        got[r * p_.n + c] = decode(&raw[idx * ob], c_.out);
      }
    }
    return fmt_rel(relative_l2(got, p_.reference(c_.scaled, c_.w_mode, c_.x_mode)));
  }

  template <class T>
  void set(cublasLtMatmulDescAttributes_t attr, const T& v) {
    lt_ok(cublasLtMatmulDescSetAttribute(op_, attr, &v, sizeof(v)), "desc attribute");
  }
  void set_scale_pointers(const void* a_scale, const void* b_scale) {
    set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
        a_scale ? a_scale : static_cast<const void*>(a_->scale_dev[int(a_mode_)].get()));
    set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
        b_scale ? b_scale : static_cast<const void*>(b_->scale_dev[int(b_mode_)].get()));
  }

  const Problem& p_;
  Config c_;
  const Operand* a_ = nullptr;
  const Operand* b_ = nullptr;
  Mode a_mode_ = Mode::kScalar, b_mode_ = Mode::kScalar;
  int64_t ldd_ = 0;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t la_ = nullptr, lb_ = nullptr, ld_ = nullptr;
  cublasLtMatmulPreference_t pref_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
  std::string refusal_;
};

std::string probe(const Problem& p, const Config& c) {
  Plan plan(p, c);
  return plan.run();
}

std::string config_name(const Config& c) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%s %-4s W:%-6s x:%-6s", c.w_is_a ? "A=W" : "A=x",
                type_name(c.out), mode_name(c.w_mode), mode_name(c.x_mode));
  return buf;
}

void line(const std::string& s) {
  std::printf("%s\n", s.c_str());
  std::fflush(stdout);
}
std::string pad(const std::string& s, size_t width) {
  std::string r = s;
  r.resize(std::max(s.size() + 1, width), ' ');
  return r;
}
/// A table cell: a space, then `s` padded to `width`.
std::string col(const std::string& s, size_t width) {
  std::string r(1, ' ');
  r += pad(s, width);
  return r;
}

// ---- Sections -------------------------------------------------------------------------------

void section_pointers() {
  line("\n== 1. Scale pointers at heuristic time (N x K = 384 x 384, order A=W) ==");
  line("   config                           T    pointers unset     pointers set");
  const std::pair<Mode, Mode> pairs[] = {{Mode::kBlk, Mode::kVec128},
                                         {Mode::kVec128, Mode::kVec128},
                                         {Mode::kVec128, Mode::kBlk},
                                         {Mode::kScalar, Mode::kScalar},
                                         {Mode::kScalar, Mode::kVec128}};
  for (int64_t t : {4, 64}) {
    const Problem p(384, 384, t, 384, 384, 100 + t);
    for (cudaDataType_t out : {CUDA_R_32F, CUDA_R_16BF}) {
      for (auto [wm, xm] : pairs) {
        Config c;
        c.out = out;
        c.w_mode = wm;
        c.x_mode = xm;
        c.pointers_at_heuristic = false;
        const std::string unset = probe(p, c);
        c.pointers_at_heuristic = true;
        const std::string set = probe(p, c);
        line("   " + pad(config_name(c), 33) + pad(std::to_string(t), 5) + pad(unset, 19) + set);
      }
    }
  }
}

void section_matrix() {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {384, 384}, {4096, 256}, {256, 1024}, {208, 192}};  // N x K
  const std::vector<int64_t> tokens = {1, 4, 6, 16, 64, 128};
  line("\n== 2. Support matrix (pointers set at heuristic time, ld = K, ld_out = rows of D) ==");
  line("   shapes: 384x384 (the GEMM test), 4096x256 (fc1), 256x1024 (fc2), 208x192 (N, K not");
  line("   multiples of 128: partial blocks)");
  std::vector<std::unique_ptr<Problem>> problems;  // [shape][T]
  for (auto [n, k] : shapes) {
    for (int64_t t : tokens) {
      problems.push_back(std::make_unique<Problem>(n, k, t, k, k, 1000 + n + 7 * k + t));
    }
  }
  std::string head = "   " + pad("config", 33) + pad("N x K", 10) + "|";
  for (int64_t t : tokens) head += col("T=" + std::to_string(t), 13);
  for (bool w_is_a : {true, false}) {
    for (cudaDataType_t out : {CUDA_R_32F, CUDA_R_16BF}) {
      line(head);
      for (Mode wm : kModes) {
        for (Mode xm : kModes) {
          Config c;
          c.w_is_a = w_is_a;
          c.out = out;
          c.w_mode = wm;
          c.x_mode = xm;
          for (size_t s = 0; s < shapes.size(); ++s) {
            std::string row =
                "   " + pad(config_name(c), 33) +
                pad(std::to_string(shapes[s].first) + "x" + std::to_string(shapes[s].second), 10) +
                "|";
            for (size_t i = 0; i < tokens.size(); ++i) {
              row += col(probe(*problems[s * tokens.size() + i], c), 13);
            }
            line(row);
          }
        }
      }
    }
  }
}

void section_leading_dims() {
  line("\n== 3. Leading dimensions (N x K = 384 x 384, T = 16, order A=W) ==");
  line(
      "   ld_w  ld_x  ld_out | W:BLK128 x:VEC128 f32 | ... bf16      | W:SCALAR x:SCALAR f32 | ... "
      "bf16");
  struct Lds {
    int64_t w, x, out;
  };
  const Lds cases[] = {{384, 384, 0},   {400, 384, 0},   {512, 384, 0},  {392, 384, 0},
                       {384, 400, 0},   {384, 512, 0},   {384, 392, 0},  {384, 384, 392},
                       {384, 384, 388}, {384, 384, 386}, {384, 384, 512}};
  for (const Lds& l : cases) {
    const Problem p(384, 384, 16, l.w, l.x, 300 + l.w + l.x);
    std::string row = "   " + pad(std::to_string(l.w), 6) + pad(std::to_string(l.x), 6) +
                      pad(l.out ? std::to_string(l.out) : "384", 7) + "|";
    const std::pair<Mode, Mode> pairs[] = {{Mode::kBlk, Mode::kVec128},
                                           {Mode::kScalar, Mode::kScalar}};
    for (auto [wm, xm] : pairs) {
      for (cudaDataType_t out : {CUDA_R_32F, CUDA_R_16BF}) {
        Config c;
        c.out = out;
        c.w_mode = wm;
        c.x_mode = xm;
        c.ld_out = l.out;
        row += col(probe(p, c), 13);
      }
    }
    line(row);
  }
  line("   (ld_w 392 / ld_x 392: rows not 16-byte aligned; ld_out 388 bf16 / 386 f32 likewise)");
}

void section_accuracy() {
  const std::vector<int64_t> ks = {128, 512, 2048, 7168};
  line("\n== 4. Accuracy against K (N = 256, T = 64, order A=W): relative L2 vs float64 ==");
  std::string head = "   " + pad("configuration", 44) + "|";
  for (int64_t k : ks) head += col("K=" + std::to_string(k), 11);
  line(head);
  std::vector<std::unique_ptr<Problem>> problems;
  for (int64_t k : ks) problems.push_back(std::make_unique<Problem>(256, k, 64, k, k, 500 + k));
  struct Row {
    const char* name;
    Config c;
  };
  std::vector<Row> rows;
  auto add = [&](const char* name, bool scaled, Mode wm, Mode xm, cudaDataType_t out, int8_t fast) {
    Config c;
    c.scaled = scaled;
    c.w_mode = wm;
    c.x_mode = xm;
    c.out = out;
    c.fast_accum = fast;
    rows.push_back({name, c});
  };
  add("e4m3 SCALAR x SCALAR, f32, fast accum off", true, Mode::kScalar, Mode::kScalar, CUDA_R_32F,
      0);
  add("e4m3 SCALAR x SCALAR, f32, fast accum ON", true, Mode::kScalar, Mode::kScalar, CUDA_R_32F,
      1);
  add("e4m3 BLK128 x VEC128, f32", true, Mode::kBlk, Mode::kVec128, CUDA_R_32F, 0);
  add("e4m3 BLK128 x VEC128, f32, fast accum ON", true, Mode::kBlk, Mode::kVec128, CUDA_R_32F, 1);
  add("e4m3 BLK128 x VEC128, bf16", true, Mode::kBlk, Mode::kVec128, CUDA_R_16BF, 0);
  add("e4m3 VEC128 x VEC128, f32", true, Mode::kVec128, Mode::kVec128, CUDA_R_32F, 0);
  add("same values as bf16 operands, f32 (fp32 acc.)", false, Mode::kScalar, Mode::kScalar,
      CUDA_R_32F, 0);
  for (const Row& r : rows) {
    std::string row = "   " + pad(r.name, 44) + "|";
    for (const auto& p : problems) row += col(probe(*p, r.c), 11);
    line(row);
  }
  std::string floor_row = "   " + pad("bf16 rounding of the exact BLK x VEC result", 44) + "|";
  for (const auto& p : problems) {
    const std::vector<double> ref = p->reference(true, Mode::kBlk, Mode::kVec128);
    std::vector<double> rounded(ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      rounded[i] = moe::fmt::round_bf16(static_cast<float>(ref[i]));
    }
    floor_row += col(fmt_rel(relative_l2(rounded, ref)), 11);
  }
  line(floor_row);
}

// Section 5: the dense backend's own planner.
struct LtCase {
  const char* name;
  int64_t n, k, ld_w, ld_x, ld_out, k0, out_col0;
  moe::dense::GemmScaling scaling;
  DType out;
  int64_t max_tokens;
  bool accumulate;
  bool w_scale_null;
};

/// One run of `gemm` at T tokens on fresh data; returns "rel_l2" or the error, and counts
/// bytes of out written outside [T, out_col0 .. out_col0 + n).
std::string run_lt_case(moe::dense::LtGemm& gemm, const LtCase& lc, int64_t t) {
  using moe::dense::GemmScaling;
  const uint64_t seed = moe::stream_id(700, lc.n, lc.k, t);
  const int64_t groups = ceil_div(lc.k, kGroup), l4 = round4(groups);
  const int64_t g0 = lc.k0 / kGroup;                           // x's scales start at this k-group
  Operand w(lc.n, lc.ld_w, lc.ld_w, moe::stream_id(seed, 1));  // codes only (scales unused)
  Operand x(t, lc.ld_x, lc.ld_x, moe::stream_id(seed, 2));
  // Scales in the dense layout.
  std::vector<float> ws, xs;
  const uint64_t ss = moe::stream_id(seed, 3);
  if (lc.scaling == GemmScaling::kBlock) {
    ws.assign(ceil_div(lc.n, kGroup) * l4, -1.0f);  // [ceil(n/128), L4], padding never read
    for (int64_t p = 0; p < ceil_div(lc.n, kGroup); ++p) {
      for (int64_t b = 0; b < groups; ++b) ws[p * l4 + b] = scale_value(ss, p * groups + b);
    }
    xs.assign((g0 + groups) * t, -1.0f);  // [g0 + L, T]; the GEMM reads from group g0
    for (int64_t b = 0; b < groups; ++b) {
      for (int64_t r = 0; r < t; ++r) xs[(g0 + b) * t + r] = scale_value(ss, 100000 + b * t + r);
    }
  } else {
    ws = {1.25f};
    xs = {0.75f};
  }
  DeviceBuffer wsd(ws.size() * 4 + 256), xsd(xs.size() * 4 + 256);
  wsd.upload(ws);
  xsd.upload(xs);
  const cudaDataType_t out_type = lc.out == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  const size_t ob = type_bytes(out_type);
  DeviceBuffer out(static_cast<size_t>(t) * lc.ld_out * ob);
  std::vector<uint8_t> base(out.bytes(), 0xFF);
  if (lc.accumulate) {
    for (int64_t i = 0; i < t * lc.ld_out; ++i) {
      const float v = moe::normal_at(moe::stream_id(seed, 4), i);
      if (out_type == CUDA_R_32F) {
        std::memcpy(&base[i * 4], &v, 4);
      } else {
        const uint16_t b = moe::fmt::float_to_bf16(v);
        std::memcpy(&base[i * 2], &b, 2);
      }
    }
  }
  out.upload(base);

  moe::dense::GemmArgs a;
  a.w = w.data.at(lc.k0);
  a.x = x.data.at(lc.k0);
  a.w_scale = (lc.scaling == GemmScaling::kScalar && lc.w_scale_null)
                  ? nullptr
                  : static_cast<const float*>(wsd.get());
  a.x_scale = reinterpret_cast<const float*>(
      xsd.at(lc.scaling == GemmScaling::kBlock ? static_cast<size_t>(g0 * t) * 4 : 0));
  a.out = out.at(static_cast<size_t>(lc.out_col0) * ob);
  a.tokens = t;
  a.accumulate = lc.accumulate;
  a.workspace = g_workspace->get();
  try {
    gemm.run(a, nullptr);
  } catch (const std::exception& e) {
    return std::string("threw: ") + e.what();
  }
  sync_or_die("LtGemm::run");
  const std::vector<uint8_t> raw = out.download(out.bytes());
  std::vector<double> got, want;
  int64_t outside = 0;
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t c = 0; c < lc.ld_out; ++c) {
      const size_t off = static_cast<size_t>(r * lc.ld_out + c) * ob;
      const bool inside = c >= lc.out_col0 && c < lc.out_col0 + lc.n;
      if (!inside) {
        outside += std::memcmp(&raw[off], &base[off], ob) != 0;
        continue;
      }
      const int64_t col = c - lc.out_col0;
      const float* xr = &x.values[r * lc.ld_x + lc.k0];
      const float* wc = &w.values[col * lc.ld_w + lc.k0];
      double s = lc.accumulate ? decode(&base[off], out_type) : 0.0;
      for (int64_t b = 0; b < groups; ++b) {
        double part = 0;
        for (int64_t q = b * kGroup; q < std::min(lc.k, (b + 1) * kGroup); ++q) {
          part += static_cast<double>(xr[q]) * wc[q];
        }
        const bool block = lc.scaling == GemmScaling::kBlock;
        const double sx = block ? xs[(g0 + b) * t + r] : xs[0];
        const double sw = block ? ws[(col / kGroup) * l4 + b] : (a.w_scale ? ws[0] : 1.0);
        s += sx * sw * part;
      }
      want.push_back(s);
      got.push_back(decode(&raw[off], out_type));
    }
  }
  std::string cell = fmt_rel(relative_l2(got, want));
  if (outside > 0) cell += "(+" + std::to_string(outside) + " outside!)";
  return cell;
}

void section_lt_gemm() {
  using moe::dense::GemmScaling;
  line("\n== 5. The dense backend's LtGemm (plans with stand-in scale pointers, runs with real");
  line("   ones at 16-byte-aligned offsets); T = both ends of every bucket: relative L2 ==");
  const LtCase cases[] = {
      {"fp8 block test 384x384", 384, 384, 384, 384, 384, 0, 0, GemmScaling::kBlock, DType::kF32,
       64, false, false},
      {"fc1 routed 4096x256, ld_out 4608", 4096, 256, 256, 256, 4608, 0, 0, GemmScaling::kBlock,
       DType::kF32, 256, false, false},
      {"fc1 shared 512x256 at out col 4096", 512, 256, 256, 256, 4608, 0, 4096, GemmScaling::kBlock,
       DType::kF32, 256, false, false},
      {"fc2 routed 256x1024, ld 1280", 256, 1024, 1280, 1280, 256, 0, 0, GemmScaling::kBlock,
       DType::kF32, 256, false, false},
      {"fc2 shared 256x256 at k0 1024, ld 1280", 256, 256, 1280, 1280, 256, 1024, 0,
       GemmScaling::kBlock, DType::kF32, 256, false, false},
      {"fc1 per-tensor 4096x256, x scale only", 4096, 256, 256, 256, 4096, 0, 0,
       GemmScaling::kScalar, DType::kF32, 256, false, true},
      {"fp8 block 384x384, bf16 out", 384, 384, 384, 384, 384, 0, 0, GemmScaling::kBlock,
       DType::kBF16, 64, false, false},
      {"fp8 block 384x384, f32 out, accumulate", 384, 384, 384, 384, 384, 0, 0, GemmScaling::kBlock,
       DType::kF32, 64, true, false},
      {"fp8 block 384x384, bf16 out, accumulate", 384, 384, 384, 384, 384, 0, 0,
       GemmScaling::kBlock, DType::kBF16, 64, true, false},
  };
  moe::dense::LtHandle lt;
  for (const LtCase& lc : cases) {
    moe::dense::GemmDesc d;
    d.name = lc.name;
    d.w_dtype = d.x_dtype = DType::kE4M3;
    d.out_dtype = lc.out;
    d.n = lc.n;
    d.k = lc.k;
    d.ld_w = lc.ld_w;
    d.ld_x = lc.ld_x;
    d.ld_out = lc.ld_out;
    d.scaling = lc.scaling;
    d.max_tokens = lc.max_tokens;
    d.token_align = 4;
    d.workspace_bytes = kWorkspaceBytes;
    std::unique_ptr<moe::dense::LtGemm> gemm;
    try {
      gemm = std::make_unique<moe::dense::LtGemm>(lt.get(), d);
    } catch (const std::exception& e) {
      line(std::string("   ") + lc.name + ": PLAN FAILED: " + e.what() + " " + take_message());
      continue;
    }
    std::string ends;
    std::vector<int64_t> ts;
    int64_t lo = 0;
    for (int64_t hi : gemm->bucket_ends()) {
      ends += " " + std::to_string(hi);
      if (lo + 4 < hi) ts.push_back(lo + 4);
      ts.push_back(hi);
      lo = hi;
    }
    line(std::string("   ") + lc.name + ": buckets" + ends);
    std::string row = "     ";
    for (size_t i = 0; i < ts.size(); ++i) {
      row += pad("T=" + std::to_string(ts[i]) + " " + run_lt_case(*gemm, lc, ts[i]), 17);
      if (i % 6 == 5 || i + 1 == ts.size()) {
        line(row);
        row = "     ";
      }
    }
  }
}

void section_alignment() {
  line("\n== 6. Scale pointer alignment at run time (384 x 384, T = 16, A=W, W:BLK128 x:VEC128,");
  line("   f32; planned with 256-byte-aligned scales; scales copied to base + offset) ==");
  const Problem p(384, 384, 16, 384, 384, 900);
  Config c;
  Plan plan(p, c);
  if (!plan.ok()) {
    line("   heuristic refused: " + plan.refusal());
    return;
  }
  for (size_t offset : {size_t{0}, size_t{16}, size_t{32}, size_t{64}, size_t{4}}) {
    DeviceBuffer ws(p.w->scale[2].size() * 4 + 256), xs(p.x->scale[1].size() * 4 + 256);
    ws.upload(p.w->scale[2], offset);
    xs.upload(p.x->scale[1], offset);
    line("   offset " + pad(std::to_string(offset), 4) + ": " +
         plan.run(ws.at(offset), xs.at(offset)));
  }
}

}  // namespace

int main() {
  try {
    int device = 0;
    cuda_ok(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp prop{};
    cuda_ok(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    std::printf(
        "cuBLASLt FP8 probe: %s (sm_%d%d, %d SMs), driver %d, runtime %d, cuBLASLt %zu "
        "(built against %d, its cudart %zu)\n",
        prop.name, prop.major, prop.minor, prop.multiProcessorCount, driver, runtime,
        cublasLtGetVersion(), CUBLAS_VERSION, cublasLtGetCudartVersion());
    lt_ok(cublasLtLoggerSetCallback(lt_logger), "logger callback");
    lt_ok(cublasLtLoggerSetMask(1), "logger mask");  // errors only
    lt_ok(cublasLtCreate(&g_handle), "cublasLtCreate");
    DeviceBuffer workspace(kWorkspaceBytes), out(size_t{4} * (4096 + 512) * 4096);
    g_workspace = &workspace;
    g_out = &out;

    section_pointers();
    section_matrix();
    section_leading_dims();
    section_accuracy();
    section_lt_gemm();
    section_alignment();

    line("\n== cuBLASLt error messages ==");
    for (size_t i = 0; i < g_messages.size(); ++i) {
      line("   m" + std::to_string(i + 1) + ": " + g_messages[i]);
    }
    cublasLtDestroy(g_handle);
  } catch (const std::exception& e) {
    std::printf("\nFATAL, probe stopped: %s\n", e.what());
    for (size_t i = 0; i < g_messages.size(); ++i) {
      std::printf("   m%zu: %s\n", i + 1, g_messages[i].c_str());
    }
    return 1;
  }
  return 0;
}
