// The benchmark timer, L2 flush and graph helpers (timer.h).
#include "bench/harness/timer.h"

#include <exception>

#include "bench/harness/device_fill.h"
#include "core/cuda_check.h"

namespace moe::bench {

Stream::Stream() { MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }

Stream::~Stream() {
  if (stream_) cudaStreamDestroy(stream_);
}

void Stream::sync() const { MOE_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

GraphExec::~GraphExec() {
  if (exec_) cudaGraphExecDestroy(exec_);
}

GraphExec& GraphExec::operator=(GraphExec&& other) noexcept {
  if (this != &other) {
    if (exec_) cudaGraphExecDestroy(exec_);
    exec_ = other.exec_;
    other.exec_ = nullptr;
  }
  return *this;
}

void GraphExec::launch(cudaStream_t stream) const {
  MOE_CHECK(exec_ != nullptr, "GraphExec::launch: no graph");
  MOE_CUDA_CHECK(cudaGraphLaunch(exec_, stream));
}

namespace {

// Ends a capture that is still open on `stream` (after an exception), dropping the graph.
void abandon_capture(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) == cudaSuccess &&
      status != cudaStreamCaptureStatusNone) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
  }
  cudaGetLastError();
}

GraphExec instantiate(cudaGraph_t graph) {
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  MOE_CUDA_CHECK(err, "instantiating a captured graph");
  return GraphExec(exec);
}

}  // namespace

GraphExec capture_graph(cudaStream_t stream, const std::function<void()>& enqueue) {
  MOE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    enqueue();
  } catch (...) {
    abandon_capture(stream);
    throw;
  }
  cudaGraph_t graph = nullptr;
  MOE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  return instantiate(graph);
}

GraphExec try_capture_graph(cudaStream_t stream, const std::function<bool()>& enqueue,
                            std::string& why) {
  MOE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  bool enqueued = false;
  try {
    enqueued = enqueue();
  } catch (const std::exception& e) {
    why = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  if (!enqueued || end != cudaSuccess || graph == nullptr) {
    if (graph) cudaGraphDestroy(graph);
    if (why.empty()) {
      why = end != cudaSuccess ? std::string("cudaStreamEndCapture: ") + cudaGetErrorString(end)
                               : "the call refused to run under capture";
    }
    abandon_capture(stream);
    return {};
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    why = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(err);
    cudaGetLastError();
    return {};
  }
  return GraphExec(exec);
}

size_t l2_cache_bytes() {
  int device = 0, bytes = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&device));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, device));
  return static_cast<size_t>(bytes);
}

L2Flush::L2Flush(size_t l2_bytes, L2FlushMode mode) : mode_(mode) {
  if (mode_ == L2FlushMode::kNone) return;
  int device = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&device));
  // A multiple of 16 bytes (the read kernel's word).
  const int64_t n =
      static_cast<int64_t>(2 * (l2_bytes > 0 ? l2_bytes : size_t{1} << 20) + 15) & ~int64_t{15};
  buffer_ = Tensor::empty({n}, DType::kU8, Device::cuda(device));
  // Written once, so that the clean flush reads defined bytes.
  MOE_CUDA_CHECK(cudaMemset(buffer_.data(), 0, buffer_.nbytes()), "L2 flush buffer");
}

void L2Flush::enqueue(cudaStream_t stream) const {
  if (mode_ == L2FlushMode::kNone) return;
  if (mode_ == L2FlushMode::kClean) {
    read_through_l2(buffer_.data(), buffer_.nbytes(), stream);
  } else {
    MOE_CUDA_CHECK(cudaMemsetAsync(buffer_.data(), 0, buffer_.nbytes(), stream), "L2 flush");
  }
}

namespace {

class Event {
 public:
  Event() { MOE_CUDA_CHECK(cudaEventCreate(&event_)); }
  ~Event() {
    if (event_) cudaEventDestroy(event_);
  }
  Event(Event&& other) noexcept : event_(other.event_) { other.event_ = nullptr; }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event& operator=(Event&&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace

std::vector<double> time_launches(cudaStream_t stream, const TimingPlan& plan,
                                  const std::function<void(int)>& launch) {
  MOE_CHECK(plan.warmup >= 0 && plan.reps >= 1, "time_launches: warm-up ", plan.warmup,
            " and reps ", plan.reps, " (need warm-up >= 0, reps >= 1)");
  std::vector<Event> start(plan.reps), stop(plan.reps);
  for (int i = 0; i < plan.warmup + plan.reps; ++i) {
    if (plan.flush) plan.flush->enqueue(stream);
    const int timed = i - plan.warmup;
    if (timed >= 0) MOE_CUDA_CHECK(cudaEventRecord(start[timed].get(), stream));
    launch(i);
    if (timed >= 0) MOE_CUDA_CHECK(cudaEventRecord(stop[timed].get(), stream));
  }
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream), "waiting for the timed launches");
  std::vector<double> ms(plan.reps);
  for (int i = 0; i < plan.reps; ++i) {
    float elapsed = 0;
    MOE_CUDA_CHECK(cudaEventElapsedTime(&elapsed, start[i].get(), stop[i].get()));
    ms[i] = elapsed;
  }
  return ms;
}

}  // namespace moe::bench
