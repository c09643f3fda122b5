// What the in-run peers of `moe bench` share: the result of timing one case, and the capture
// and timing of a case's input sets (peer_cublas.h: cuBLAS's grouped GEMM on bf16 / fp16
// weights; peer_cublaslt.h: cuBLASLt's e4m3 matmul per expert on fp8 weights).
// Built only with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench/harness/bench_math.h"
#include "bench/harness/timer.h"

namespace moe::bench {

struct PeerTiming {
  TimingStats stats;
  std::string mode;          ///< "graph" or "stream"
  std::string why_no_graph;  ///< when mode is "stream": why the capture failed
};

/// Times a peer's forward over `num_sets` input sets: launch i runs set i % num_sets.
/// `enqueue(s)` puts set s's library calls on `stream` and returns "" on success, else what
/// failed. It runs once outside any capture first (the library picks and loads its kernels;
/// a failure there throws moe::Error naming `what`), then each set is captured as a CUDA
/// graph; when any capture fails the sets are timed as plain stream launches and the result
/// says why.
/// Checks one input set's tokens per expert (`set`): `num_experts` counts summing to
/// `routed_rows` (T*k); throws moe::Error naming `what` otherwise.
void check_set_counts(const std::vector<int>& counts, int num_experts, int64_t routed_rows, int set,
                      const std::string& what);

PeerTiming time_peer_sets(cudaStream_t stream, const TimingPlan& plan, int num_sets,
                          const std::function<std::string(int)>& enqueue, const std::string& what);

}  // namespace moe::bench
