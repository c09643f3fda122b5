// CublasLtPeer (peer_cublaslt.h).
//
// Buffers of a case, rows padded per expert to a multiple of 4 (kRowAlign), experts in index
// order, then the shared MLP's T rows:
//   x_s      e4m3 [rows, H] per input set s, with its scales: block -- every expert's
//            [H/128][m_pad] group-major run (LtGemm's VEC128 layout), one after another;
//            per-tensor -- one f32 per set
//   h        e4m3 [rows, I] (FC2's input) with its scales laid out alike, shared by the sets
//   fc1_out  bf16 [rows, 2I], fc2_out bf16 [rows, H], shared by the sets
// (I here the larger of the routed and shared intermediate sizes: a GEMM of m rows writes
// its m x n densely from its first row's offset, inside its rows' share of the buffer.)
// Per-tensor weight scales sit 16 bytes apart (cuBLASLt's alignment for every pointer).
#include "bench/harness/peer_cublaslt.h"

#include <algorithm>
#include <cmath>

#include "bench/harness/device_fill.h"
#include "core/cuda_check.h"
#include "moe/errors.h"
#include "quant/fp8_quant_kernels.h"

namespace moe::bench {
namespace {

constexpr int64_t kRowAlign = 4;                      // cuBLASLt block scaling: T a multiple of 4
constexpr int64_t kScalarStride = 4;                  // floats between per-tensor scales: 16 bytes
constexpr int64_t kBlock = 128;                       // the scale block
constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt's recommendation for Hopper
/// NOTE: the random scales' spread: x, w ~ N(0, 1) e4m3 then give products of order
/// sqrt(K) * 1e-4, far inside bf16's range.
constexpr float kScaleStddev = 0.01f;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t pad_rows(int64_t m) { return ceil_div(m, kRowAlign) * kRowAlign; }

// f32 elements of one [n, k] weight's scales: its blocks, or one padded per-tensor scale.
int64_t weight_scale_elems(int64_t n, int64_t k, bool block) {
  return block ? ceil_div(n, kBlock) * quant::fp8_scale_ld(ceil_div(k, kBlock)) : kScalarStride;
}

// f32 elements of the scales of `rows` activation rows of width k.
int64_t act_scale_elems(int64_t rows, int64_t k, bool block) {
  return block ? ceil_div(k, kBlock) * rows : kScalarStride;
}

}  // namespace

bool CublasLtPeer::supports(const MoeConfig& c, std::string& why) {
  if (c.quant != QuantMode::kFP8Block && c.quant != QuantMode::kFP8PerTensor) {
    why = "the cuBLASLt peer runs fp8_block / fp8_per_tensor weights only, not " +
          std::string(quant_mode_name(c.quant));
    return false;
  }
  if (c.act_dtype != DType::kBF16) {
    why = "the cuBLASLt peer writes bf16 outputs for bf16 activations";
    return false;
  }
  // NOTE: e4m3 rows of a multiple of 16 elements keep every pointer and leading dimension
  // 16-byte aligned, as cuBLASLt's e4m3 matmuls want.
  for (const auto& [what, v] : {std::pair<const char*, int64_t>{"hidden_size", c.hidden_size},
                                {"intermediate_size", c.intermediate_size},
                                {"shared_intermediate_size", c.shared_intermediate_size}}) {
    if (v % 16 != 0) {
      why = std::string("the cuBLASLt peer needs ") + what + " (" + std::to_string(v) +
            ") to be a multiple of 16";
      return false;
    }
  }
  return true;
}

double CublasLtPeer::weight_bytes(const MoeConfig& c) {
  const bool block = c.quant == QuantMode::kFP8Block;
  const int64_t h = c.hidden_size;
  auto expert = [&](int64_t inter) {
    return 3.0 * h * inter +
           4.0 * (weight_scale_elems(2 * inter, h, block) + weight_scale_elems(h, inter, block));
  };
  double bytes = c.num_experts * expert(c.intermediate_size) + kWorkspaceBytes;
  if (c.num_shared_experts > 0) bytes += expert(c.shared_intermediate_size);
  return bytes;
}

double CublasLtPeer::case_bytes(const MoeConfig& c, int64_t tokens, int sets) {
  const bool block = c.quant == QuantMode::kFP8Block;
  const int64_t h = c.hidden_size;
  const int64_t inter = std::max<int64_t>(c.intermediate_size, c.shared_intermediate_size);
  // Every expert padded by at most kRowAlign - 1 rows, the shared MLP's T rows likewise.
  const int64_t rows = tokens * c.top_k + c.num_experts * (kRowAlign - 1) +
                       (c.num_shared_experts > 0 ? pad_rows(tokens) : 0);
  const double x = static_cast<double>(rows) * h + 4.0 * act_scale_elems(rows, h, block);
  const double hin = static_cast<double>(rows) * inter + 4.0 * act_scale_elems(rows, inter, block);
  const double outs = 2.0 * rows * (2 * inter + h);
  return sets * x + hin + outs;
}

CublasLtPeer::CublasLtPeer(const MoeConfig& c, cudaStream_t stream, uint64_t seed)
    : config_(c), stream_(stream) {
  std::string why;
  MOE_CHECK(supports(c, why), why);
  MOE_CUDA_CHECK(cudaGetDevice(&device_));
  const Device dev = Device::cuda(device_);
  block_ = c.quant == QuantMode::kFP8Block;
  shared_ = c.num_shared_experts > 0 && c.shared_intermediate_size > 0;
  const int64_t h = c.hidden_size;
  auto make = [&](Weights& w, int64_t experts, int64_t inter, uint64_t salt) {
    w.w13 = Tensor::empty({experts, 2 * inter, h}, DType::kE4M3, dev);
    w.w2 = Tensor::empty({experts, h, inter}, DType::kE4M3, dev);
    w.w13_scales =
        Tensor::empty({experts, weight_scale_elems(2 * inter, h, block_)}, DType::kF32, dev);
    w.w2_scales = Tensor::empty({experts, weight_scale_elems(h, inter, block_)}, DType::kF32, dev);
    fill_random_device(w.w13, seed ^ salt ^ 0x13, 1.0f, stream);
    fill_random_device(w.w2, seed ^ salt ^ 0x2, 1.0f, stream);
    fill_random_device(w.w13_scales, seed ^ salt ^ 0x513, kScaleStddev, stream);
    fill_random_device(w.w2_scales, seed ^ salt ^ 0x52, kScaleStddev, stream);
  };
  make(routed_, c.num_experts, c.intermediate_size, 0);
  if (shared_) make(shared_w_, 1, c.shared_intermediate_size, 0x5000);
  workspace_ = Tensor::empty({static_cast<int64_t>(kWorkspaceBytes)}, DType::kU8, dev);
  lt_ = std::make_unique<dense::LtHandle>();
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream), "cuBLASLt peer: filling the weights");
}

CublasLtPeer::~CublasLtPeer() = default;

dense::GemmDesc CublasLtPeer::gemm_desc(const std::string& name, int64_t n, int64_t k,
                                        int64_t m) const {
  dense::GemmDesc d;
  d.name = name;
  d.w_dtype = d.x_dtype = DType::kE4M3;
  d.out_dtype = DType::kBF16;
  d.n = n;
  d.k = k;
  d.ld_w = d.ld_x = k;
  d.ld_out = n;
  d.scaling = block_ ? dense::GemmScaling::kBlock : dense::GemmScaling::kScalar;
  // One bucket at exactly m rows: the heuristic's choice for this expert's count.
  d.max_tokens = d.token_align = static_cast<int>(m);
  d.workspace_bytes = kWorkspaceBytes;
  return d;
}

PeerTiming CublasLtPeer::time_case(int64_t tokens,
                                   const std::vector<std::vector<int>>& tokens_per_expert,
                                   const TimingPlan& plan, uint64_t seed) {
  const MoeConfig& c = config_;
  const int num_sets = static_cast<int>(tokens_per_expert.size());
  MOE_CHECK(num_sets >= 1, "cuBLASLt peer: no input set");
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const int64_t is = shared_ ? c.shared_intermediate_size : 0;
  const int64_t routed_rows = tokens * c.top_k;
  const Device dev = Device::cuda(device_);

  // Padded row offsets of every set; the buffers are sized for the largest.
  std::vector<std::vector<int64_t>> row_begin(num_sets);
  int64_t rows = 0;
  for (int s = 0; s < num_sets; ++s) {
    const std::vector<int>& counts = tokens_per_expert[s];
    check_set_counts(counts, c.num_experts, routed_rows, s, "cuBLASLt peer");
    int64_t r = 0;
    for (int e = 0; e < c.num_experts; ++e) {
      row_begin[s].push_back(r);
      r += pad_rows(counts[e]);
    }
    row_begin[s].push_back(r);  // the shared MLP's rows
    rows = std::max(rows, r + (shared_ ? pad_rows(tokens) : 0));
  }
  const int64_t wide = std::max(inter, is);
  std::vector<Tensor> x(num_sets), x_scales(num_sets);
  for (int s = 0; s < num_sets; ++s) {
    x[s] = Tensor::empty({rows, h}, DType::kE4M3, dev);
    x_scales[s] = Tensor::empty({act_scale_elems(rows, h, block_)}, DType::kF32, dev);
    fill_random_device(x[s], seed ^ (0x9E37ull * (s + 1)), 1.0f, stream_);
    fill_random_device(x_scales[s], seed ^ (0x7F4Aull * (s + 1)), kScaleStddev, stream_);
  }
  Tensor hin = Tensor::empty({rows, wide}, DType::kE4M3, dev);
  Tensor hin_scales = Tensor::empty({act_scale_elems(rows, wide, block_)}, DType::kF32, dev);
  fill_random_device(hin, seed ^ 0x4811ull, 1.0f, stream_);
  fill_random_device(hin_scales, seed ^ 0x4812ull, kScaleStddev, stream_);
  Tensor fc1_out = Tensor::empty({rows, 2 * wide}, DType::kBF16, dev);
  Tensor fc2_out = Tensor::empty({rows, h}, DType::kBF16, dev);

  // One planned GEMM per (shape, padded row count), kept for the later cases.
  auto gemm = [&](int which, int64_t n, int64_t k, int64_t m) -> dense::LtGemm& {
    auto& slot = gemms_[{which, m}];
    if (!slot) {
      static constexpr const char* kNames[] = {"peer fc1", "peer fc2", "peer shared fc1",
                                               "peer shared fc2"};
      slot = std::make_unique<dense::LtGemm>(lt_->get(), gemm_desc(kNames[which], n, k, m));
    }
    return *slot;
  };
  auto* fc1_base = static_cast<char*>(fc1_out.data());
  auto* fc2_base = static_cast<char*>(fc2_out.data());
  const auto* h_base = static_cast<const char*>(hin.data());
  const auto* hs_base = static_cast<const float*>(hin_scales.data());
  // Activation scales of the rows from `r` on (block: the run of groups x rows at offset
  // groups * r; per-tensor: the one scale).
  auto act_scales = [&](const float* base, int64_t r, int64_t k) {
    return block_ ? base + ceil_div(k, kBlock) * r : base;
  };
  void* ws = workspace_.data();

  // Plans every GEMM the sets need before any capture (planning allocates nothing on the
  // stream, but asks cuBLASLt's heuristic).
  for (int s = 0; s < num_sets; ++s) {
    for (int e = 0; e < c.num_experts; ++e) {
      const int64_t m = pad_rows(tokens_per_expert[s][e]);
      if (m == 0) continue;
      gemm(0, 2 * inter, h, m);
      gemm(1, h, inter, m);
    }
  }
  if (shared_) {
    gemm(2, 2 * is, h, pad_rows(tokens));
    gemm(3, h, is, pad_rows(tokens));
  }

  // FC1 and FC2 of expert e of `w` (intermediate size ie; `kind` 0: routed, 2: shared) on its m
  // padded rows from row r of set s's x.
  auto run_expert = [&](const Weights& w, int kind, int64_t e, int64_t ie, int64_t m, int64_t r,
                        int s) {
    dense::GemmArgs a;
    a.tokens = m;
    a.workspace = ws;
    a.w = static_cast<const char*>(w.w13.data()) + e * 2 * ie * h;
    a.w_scale = w.w13_scales.data_as<float>() + e * w.w13_scales.size(1);
    a.x = static_cast<const char*>(x[s].data()) + r * h;
    a.x_scale = act_scales(x_scales[s].data_as<float>(), r, h);
    a.out = fc1_base + r * 2 * wide * 2;
    gemm(kind, 2 * ie, h, m).run(a, stream_);
    a.w = static_cast<const char*>(w.w2.data()) + e * h * ie;
    a.w_scale = w.w2_scales.data_as<float>() + e * w.w2_scales.size(1);
    a.x = h_base + r * wide;
    a.x_scale = act_scales(hs_base, r, ie);
    a.out = fc2_base + r * h * 2;
    gemm(kind + 1, h, ie, m).run(a, stream_);
  };
  auto enqueue = [&](int s) -> std::string {
    try {
      for (int e = 0; e < c.num_experts; ++e) {
        const int64_t m = pad_rows(tokens_per_expert[s][e]);
        if (m > 0) run_expert(routed_, 0, e, inter, m, row_begin[s][e], s);
      }
      if (shared_) {
        run_expert(shared_w_, 2, 0, is, pad_rows(tokens), row_begin[s][c.num_experts], s);
      }
    } catch (const Error& err) {
      return err.message();
    }
    return "";
  };
  return time_peer_sets(stream_, plan, num_sets, enqueue,
                        "cuBLASLt peer, " + std::to_string(tokens) + " tokens");
}

}  // namespace moe::bench
