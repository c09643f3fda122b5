// CublasGroupedPeer (peer_cublas.h).
//
// Row-major products in cuBLAS's column-major terms: out [m, n] = x [m, K] w[n, K]^T is
// out^T (n x m, ld n) = op(w)(n x K) * x^T (K x m), i.e. transa = T on w (ld K), transb = N
// on x (ld K), cuBLAS m = n_out, n = m_e, k = K.
#include "bench/harness/peer_cublas.h"

#include <algorithm>
#include <cmath>

#include "bench/harness/device_fill.h"
#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe::bench {
namespace {

// The host arrays of one cublasGemmGroupedBatchedEx call (one entry per group) and where
// its device pointer arrays (one entry per problem) live.
struct GroupedCall {
  std::vector<cublasOperation_t> transa, transb;
  std::vector<int> m, n, k, lda, ldb, ldc, group_size;
  std::vector<float> alpha, beta;
  std::vector<const void*> a, b;  // host copies, per problem
  std::vector<void*> c;
  const void* const* a_dev = nullptr;
  const void* const* b_dev = nullptr;
  void* const* c_dev = nullptr;

  // Appends a group of problems sharing (m, n, k, ld*): A = w (transposed), B = x.
  void add_group(int rows_out, int cols, int depth, int ld_a, int ld_b, int ld_c) {
    transa.push_back(CUBLAS_OP_T);
    transb.push_back(CUBLAS_OP_N);
    m.push_back(rows_out);
    n.push_back(cols);
    k.push_back(depth);
    lda.push_back(ld_a);
    ldb.push_back(ld_b);
    ldc.push_back(ld_c);
    group_size.push_back(0);
    alpha.push_back(1.0f);
    beta.push_back(0.0f);
  }
  void add_problem(const void* w, const void* x, void* out) {
    a.push_back(w);
    b.push_back(x);
    c.push_back(out);
    ++group_size.back();
  }
  int num_problems() const { return static_cast<int>(a.size()); }

  cublasStatus_t run(cublasHandle_t handle, cudaDataType_t type) const {
    return cublasGemmGroupedBatchedEx(
        handle, transa.data(), transb.data(), m.data(), n.data(), k.data(), alpha.data(), a_dev,
        type, lda.data(), b_dev, type, ldb.data(), beta.data(), c_dev, type, ldc.data(),
        static_cast<int>(group_size.size()), group_size.data(), CUBLAS_COMPUTE_32F);
  }
};

// One input set: its x rows and the two calls over them.
struct PeerSet {
  Tensor x;         // [R + T_shared, H]: expert e's rows, then the shared MLP's
  Tensor pointers;  // the six device pointer arrays of fc1 and fc2
  GroupedCall fc1, fc2;
};

size_t elem_bytes(DType dtype) { return static_cast<size_t>(dtype_bits(dtype)) / 8; }

}  // namespace

bool CublasGroupedPeer::supports(const MoeConfig& c, std::string& why) {
  if (c.quant != QuantMode::kBF16 && c.quant != QuantMode::kFP16) {
    why = "the cuBLAS peer runs bf16 / fp16 weights only, not " +
          std::string(quant_mode_name(c.quant));
    return false;
  }
  if (c.act_dtype != DType::kBF16 && c.act_dtype != DType::kF16) {
    why = "the cuBLAS peer needs bf16 / f16 activations";
    return false;
  }
  return true;
}

double CublasGroupedPeer::weight_bytes(const MoeConfig& c) {
  const double e = c.num_experts, h = c.hidden_size, a = elem_bytes(c.act_dtype);
  double bytes = e * 3.0 * h * c.intermediate_size * a;
  if (c.num_shared_experts > 0) bytes += 3.0 * h * c.shared_intermediate_size * a;
  return bytes;
}

double CublasGroupedPeer::case_bytes(const MoeConfig& c, int64_t tokens, int sets) {
  const double t = static_cast<double>(tokens), h = c.hidden_size, a = elem_bytes(c.act_dtype);
  const double routed_rows = t * c.top_k;
  const double shared_rows = c.num_shared_experts > 0 ? t : 0;
  const double x = (routed_rows + shared_rows) * h * a;
  const double fc1 =
      (routed_rows * 2.0 * c.intermediate_size + shared_rows * 2.0 * c.shared_intermediate_size) *
      a;
  return sets * x + fc1 + x /* fc2 output */ + 64.0 * 1024 * sets /* pointer arrays */;
}

CublasGroupedPeer::CublasGroupedPeer(const MoeConfig& c, cudaStream_t stream,
                                     const CublasHandle& cublas, uint64_t seed)
    : config_(c), stream_(stream), cublas_(cublas) {
  std::string why;
  MOE_CHECK(supports(c, why), why);
  MOE_CUDA_CHECK(cudaGetDevice(&device_));
  const Device dev = Device::cuda(device_);
  const int64_t e = c.num_experts, h = c.hidden_size, inter = c.intermediate_size;
  w13_ = Tensor::empty({e, 2 * inter, h}, c.act_dtype, dev);
  w2_ = Tensor::empty({e, h, inter}, c.act_dtype, dev);
  fill_random_device(w13_, seed ^ 0x13, 1.0f / std::sqrt(static_cast<float>(h)), stream);
  fill_random_device(w2_, seed ^ 0x2, 1.0f / std::sqrt(static_cast<float>(inter)), stream);
  shared_ = c.num_shared_experts > 0 && c.shared_intermediate_size > 0;
  if (shared_) {
    const int64_t is = c.shared_intermediate_size;
    shared_w13_ = Tensor::empty({2 * is, h}, c.act_dtype, dev);
    shared_w2_ = Tensor::empty({h, is}, c.act_dtype, dev);
    fill_random_device(shared_w13_, seed ^ 0x513, 1.0f / std::sqrt(static_cast<float>(h)), stream);
    fill_random_device(shared_w2_, seed ^ 0x52, 1.0f / std::sqrt(static_cast<float>(is)), stream);
  }
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
}

PeerTiming CublasGroupedPeer::time_case(int64_t tokens,
                                        const std::vector<std::vector<int>>& tokens_per_expert,
                                        const TimingPlan& plan, uint64_t seed) {
  const MoeConfig& c = config_;
  const int num_sets = static_cast<int>(tokens_per_expert.size());
  MOE_CHECK(num_sets >= 1, "peer: no input set");
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const int64_t is = shared_ ? c.shared_intermediate_size : 0;
  const int64_t routed_rows = tokens * c.top_k;
  const int64_t shared_rows = shared_ ? tokens : 0;
  const size_t es = elem_bytes(c.act_dtype);
  const Device dev = Device::cuda(device_);
  const cudaDataType_t type = c.act_dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;

  // Shared by every set: FC1's output [R, 2I] then [T, 2 I_shared], and FC2's [R + T, H].
  Tensor fc1_out =
      Tensor::empty({routed_rows * 2 * inter + shared_rows * 2 * is}, c.act_dtype, dev);
  Tensor fc2_out = Tensor::empty({routed_rows + shared_rows, h}, c.act_dtype, dev);
  auto* fc1_base = static_cast<char*>(fc1_out.data());
  auto* fc2_base = static_cast<char*>(fc2_out.data());
  const auto* w13 = static_cast<const char*>(w13_.data());
  const auto* w2 = static_cast<const char*>(w2_.data());

  std::vector<PeerSet> sets(num_sets);
  for (int s = 0; s < num_sets; ++s) {
    const std::vector<int>& counts = tokens_per_expert[s];
    check_set_counts(counts, c.num_experts, routed_rows, s, "peer");
    PeerSet& set = sets[s];
    set.x = Tensor::empty({routed_rows + shared_rows, h}, c.act_dtype, dev);
    fill_random_device(set.x, seed ^ (0x9E37ull * (s + 1)), 1.0f, stream_);
    const auto* x_base = static_cast<const char*>(set.x.data());

    // Rows of expert e start at row_begin[e] (experts in index order, as a permutation).
    std::vector<int64_t> row_begin(c.num_experts, 0);
    for (int e = 1; e < c.num_experts; ++e) row_begin[e] = row_begin[e - 1] + counts[e - 1];
    // Active experts sorted by their token count: equal counts form one cuBLAS group.
    std::vector<int> order;
    for (int e = 0; e < c.num_experts; ++e) {
      if (counts[e] > 0) order.push_back(e);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return counts[a] < counts[b]; });
    for (size_t i = 0; i < order.size(); ++i) {
      const int e = order[i];
      const int m = counts[e];
      if (i == 0 || counts[order[i - 1]] != m) {
        set.fc1.add_group(static_cast<int>(2 * inter), m, static_cast<int>(h), static_cast<int>(h),
                          static_cast<int>(h), static_cast<int>(2 * inter));
        set.fc2.add_group(static_cast<int>(h), m, static_cast<int>(inter), static_cast<int>(inter),
                          static_cast<int>(2 * inter), static_cast<int>(h));
      }
      const int64_t r = row_begin[e];
      char* fc1_rows = fc1_base + r * 2 * inter * es;
      set.fc1.add_problem(w13 + e * 2 * inter * h * es, x_base + r * h * es, fc1_rows);
      set.fc2.add_problem(w2 + e * h * inter * es, fc1_rows, fc2_base + r * h * es);
    }
    if (shared_) {
      char* fc1_rows = fc1_base + routed_rows * 2 * inter * es;
      set.fc1.add_group(static_cast<int>(2 * is), static_cast<int>(tokens), static_cast<int>(h),
                        static_cast<int>(h), static_cast<int>(h), static_cast<int>(2 * is));
      set.fc1.add_problem(shared_w13_.data(), x_base + routed_rows * h * es, fc1_rows);
      set.fc2.add_group(static_cast<int>(h), static_cast<int>(tokens), static_cast<int>(is),
                        static_cast<int>(is), static_cast<int>(2 * is), static_cast<int>(h));
      set.fc2.add_problem(shared_w2_.data(), fc1_rows, fc2_base + routed_rows * h * es);
    }

    // Device pointer arrays: fc1 a, b, c, then fc2 a, b, c.
    const int p1 = set.fc1.num_problems(), p2 = set.fc2.num_problems();
    std::vector<const void*> host;
    for (const GroupedCall* call : {&set.fc1, &set.fc2}) {
      host.insert(host.end(), call->a.begin(), call->a.end());
      host.insert(host.end(), call->b.begin(), call->b.end());
      host.insert(host.end(), call->c.begin(), call->c.end());
    }
    set.pointers = Tensor::empty({static_cast<int64_t>(host.size())}, DType::kI64, dev);
    MOE_CUDA_CHECK(cudaMemcpy(set.pointers.data(), host.data(), host.size() * sizeof(void*),
                              cudaMemcpyHostToDevice));
    auto* p = static_cast<void**>(set.pointers.data());
    set.fc1.a_dev = p;
    set.fc1.b_dev = p + p1;
    set.fc1.c_dev = p + 2 * p1;
    set.fc2.a_dev = p + 3 * p1;
    set.fc2.b_dev = p + 3 * p1 + p2;
    set.fc2.c_dev = p + 3 * p1 + 2 * p2;
  }

  cublasHandle_t handle = cublas_.get();
  return time_peer_sets(
      stream_, plan, num_sets,
      [&](int s) -> std::string {
        for (const GroupedCall* call : {&sets[s].fc1, &sets[s].fc2}) {
          const cublasStatus_t st = call->run(handle, type);
          if (st != CUBLAS_STATUS_SUCCESS) {
            return std::string("cublasGemmGroupedBatchedEx (") +
                   (call == &sets[s].fc1 ? "FC1" : "FC2") + "): " + cublasGetStatusString(st);
          }
        }
        return "";
      },
      "peer, " + std::to_string(tokens) + " tokens");
}

}  // namespace moe::bench
