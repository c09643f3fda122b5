// The benchmark harness's timing parts (STYLE.md item 14), shared by every benchmark:
//   - L2Flush: a device buffer of 2 x L2 passed through L2 before each timed launch, outside
//     the timed region, so that no launch finds its inputs or weights in L2. Clean (the
//     default): a kernel reads it, leaving L2 full of clean lines. Dirty: cudaMemsetAsync
//     overwrites it (as the grids up to v2.11 and Triton's / DeepGEMM's benchmarks flush),
//     leaving L2 full of dirty lines that the timed launch then writes back to DRAM as its
//     own reads evict them -- up to L2's size of traffic that is not the launch's.
//   - time_launches: warm-up launches, then CUDA events around each timed launch; returns
//     the milliseconds of each (summarize with bench_math's summarize_times).
//   - Stream, GraphExec: owners of a CUDA stream and of an instantiated CUDA graph;
//     capture_graph records what a function enqueues on a stream into a graph.
// Built only with CUDA. Every CUDA status is checked (MOE_CUDA_CHECK).
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <string>
#include <vector>

#include "bench/harness/bench_math.h"
#include "moe/tensor.h"

namespace moe::bench {

/// An owned non-blocking CUDA stream.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  /// cudaStreamSynchronize, checked.
  void sync() const;

 private:
  cudaStream_t stream_ = nullptr;
};

/// An owned instantiated CUDA graph (empty until assigned).
class GraphExec {
 public:
  GraphExec() = default;
  explicit GraphExec(cudaGraphExec_t exec) : exec_(exec) {}
  ~GraphExec();
  GraphExec(GraphExec&& other) noexcept : exec_(other.exec_) { other.exec_ = nullptr; }
  GraphExec& operator=(GraphExec&& other) noexcept;
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  bool valid() const { return exec_ != nullptr; }
  /// cudaGraphLaunch on `stream`, checked.
  void launch(cudaStream_t stream) const;

 private:
  cudaGraphExec_t exec_ = nullptr;
};

/// Captures what `enqueue` puts on `stream` (thread-local capture mode) and instantiates it.
/// Errors thrown by `enqueue` end the capture first and are rethrown.
GraphExec capture_graph(cudaStream_t stream, const std::function<void()>& enqueue);

/// As capture_graph, for work that may refuse to be captured (a library call): returns an
/// empty GraphExec and sets `why` when the capture or the instantiation fails; the stream is
/// left usable and the CUDA error state cleared.
GraphExec try_capture_graph(cudaStream_t stream, const std::function<bool()>& enqueue,
                            std::string& why);

/// L2 size of the current device in bytes (cudaDevAttrL2CacheSize).
size_t l2_cache_bytes();

/// A device buffer of 2 x L2 that is read (clean) or overwritten (dirty) before each timed
/// launch; none: no buffer, nothing enqueued.
class L2Flush {
 public:
  explicit L2Flush(size_t l2_bytes, L2FlushMode mode = L2FlushMode::kClean);
  /// The read kernel or cudaMemsetAsync over the whole buffer on `stream`.
  void enqueue(cudaStream_t stream) const;
  size_t bytes() const { return buffer_.nbytes(); }
  L2FlushMode mode() const { return mode_; }

 private:
  Tensor buffer_;  // u8 [2 * L2] on the GPU
  L2FlushMode mode_;
};

struct TimingPlan {
  int warmup = 5;  ///< untimed launches first
  int reps = 50;   ///< timed launches
  /// Flushed before every launch (warm-up included), outside the events; none when null.
  const L2Flush* flush = nullptr;
};

/// Runs launch(i) for i = 0 .. warmup + reps - 1 on `stream` (the index lets the caller
/// rotate inputs); records a CUDA event just before and just after each timed launch, waits
/// once at the end, and returns the milliseconds between the events of each timed launch.
std::vector<double> time_launches(cudaStream_t stream, const TimingPlan& plan,
                                  const std::function<void(int)>& launch);

}  // namespace moe::bench
