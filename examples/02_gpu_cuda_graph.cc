// Example 02: the layer on a GPU, captured once in a CUDA graph and replayed.
//
// A GPU backend's forward allocates nothing and never waits for the GPU: all its problem
// sizes live in device memory. So a forward can be recorded into a CUDA graph and replayed
// at the cost of one launch, as inference engines do for decode steps. New inputs go into the
// same buffers (the graph holds their addresses).
//
//   build/examples/02_gpu_cuda_graph          (exits with 77, "skipped", without a GPU)
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "example_util.h"
#include "moe/moe.h"

#define CUDA_OK(expr)                                                                \
  do {                                                                               \
    const cudaError_t status_ = (expr);                                              \
    if (status_ != cudaSuccess) MOE_THROW(#expr, ": ", cudaGetErrorString(status_)); \
  } while (0)

int main() try {
  int num_gpus = 0;
  if (cudaGetDeviceCount(&num_gpus) != cudaSuccess || num_gpus == 0) {
    std::printf("02_gpu_cuda_graph: no CUDA GPU here, skipping\n");
    return example::kSkip;
  }
  // 1. Qwen3-30B-A3B's layer shape (H 2048, I 768, top-8 of softmax), with 32 of its 128
  //    experts so that the random weights are made quickly.
  moe::MoeConfig config = moe::preset("qwen3-30b-a3b");
  config.num_experts = 32;
  config.max_num_tokens = 128;
  auto [layer, report] = moe::create_moe(config);  // "auto": the best backend for this GPU
  std::printf("%s", report.str().c_str());
  if (!layer->device().is_cuda()) {
    std::printf("02_gpu_cuda_graph: no GPU backend can run here (see above), skipping\n");
    return example::kSkip;
  }
  layer->load_weights(*moe::make_random_weights(config, /*seed=*/1));  // copied to the GPU

  // 2. Device buffers: x bf16 [T, H], router logits f32 [T, E] (from your router), out [T, H].
  const int64_t t = 64, h = config.hidden_size, e = config.num_experts;
  const std::vector<uint16_t> x_host = example::random_bf16(t * h, 2);
  std::vector<float> logits_host(t * e);
  for (size_t i = 0; i < logits_host.size(); ++i) logits_host[i] = 0.01f * ((i * 37) % 101);
  const moe::Device gpu = layer->device();
  moe::Tensor x = example::to_device(x_host.data(), moe::DType::kBF16, {t, h}, gpu);
  moe::Tensor logits = example::to_device(logits_host.data(), moe::DType::kF32, {t, e}, gpu);
  moe::Tensor out = moe::Tensor::empty({t, h}, moe::DType::kBF16, gpu);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));

  // 3. One eager forward on our stream (forward takes the stream as its last argument).
  layer->forward(x, logits, out, stream);
  CUDA_OK(cudaStreamSynchronize(stream));
  const std::vector<uint16_t> eager = example::to_host_bf16(out);

  // 4. Record the same forward into a graph, instantiate it once.
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaMemsetAsync(out.data(), 0xFF, out.nbytes(), stream));  // poison: NaN everywhere
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  layer->forward(x, logits, out, stream);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));

  // 5. Replay: the whole layer is one launch. Time 100 replays with CUDA events.
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  CUDA_OK(cudaGraphLaunch(exec, stream));  // warm-up
  CUDA_OK(cudaEventRecord(start, stream));
  for (int i = 0; i < 100; ++i) CUDA_OK(cudaGraphLaunch(exec, stream));
  CUDA_OK(cudaEventRecord(stop, stream));
  CUDA_OK(cudaEventSynchronize(stop));
  float ms = 0;
  CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
  const std::vector<uint16_t> replayed = example::to_host_bf16(out);

  // 6. The replay computes what the eager forward did.
  const double err = example::relative_l2(replayed, eager);
  std::printf(
      "backend %s: %.1f us per forward (graph replay, %lld tokens); replay vs eager: "
      "relative L2 %.2e\n",
      std::string(layer->backend_name()).c_str(), ms * 1e3 / 100, static_cast<long long>(t), err);
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
  return err < 1e-3 ? 0 : 1;
} catch (const moe::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
