// Example 04: expert parallelism. N processes, one per GPU (or CPU rank), each own 1/N of the
// experts; a forward sends every token to the ranks that own its experts and brings the
// results back (the communication strategy: NCCL on GPUs, MPI on the CPU).
//
//   mpirun -np 2 build/examples/04_expert_parallel [BACKEND]      (default: reference, CPU)
//   mpirun -np 2 build/examples/04_expert_parallel grouped        (one Hopper GPU per rank)
//
// MPI starts the processes; the library joins MPI_COMM_WORLD (initialise MPI first). Rank 0
// gathers every rank's tokens and outputs and checks them against one process running the
// whole layer.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "example_util.h"
#include "moe/moe.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int ok = 0;
  try {
#ifdef MOE_HAVE_CUDA
    // One GPU per process: the local rank's GPU, chosen before the library's first CUDA call.
    int gpus = 0;
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (local && cudaGetDeviceCount(&gpus) == cudaSuccess && gpus > 0)
      cudaSetDevice(std::atoi(local) % gpus);
#endif
    // 1. Every rank describes the same layer; the Mapping says which rank this is. Rank r
    //    owns experts [r * E / N, (r + 1) * E / N).
    moe::MoeConfig config = moe::preset("qwen3-30b-a3b");
    config.num_experts = 16;
    config.hidden_size = 256;
    config.intermediate_size = 128;
    config.max_num_tokens = 64;
    const moe::Mapping mapping{size, rank};
    moe::MoeOptions options;
    options.backend = argc > 1 ? argv[1] : "reference";
    options.communication = "auto";  // the best exchange the ranks' device supports
    auto [layer, report] = moe::create_moe(config, mapping, options);  // collective
    if (rank == 0) std::printf("%d ranks\n%s", size, report.str().c_str());

    // 2. Same seed everywhere, so every rank sees the same weights; each loads only its own
    //    experts (and the router).
    auto weights = moe::make_random_weights(config, /*seed=*/1);
    layer->load_weights(*weights);

    // 3. Each rank brings its own tokens (8 here; any count, zero included). The forward is
    //    collective: every rank calls it, also with no tokens.
    const int64_t t = 8, h = config.hidden_size;
    const std::vector<uint16_t> x_host = example::random_bf16(t * h, 100 + rank);
    const moe::Tensor x =
        example::to_device(x_host.data(), moe::DType::kBF16, {t, h}, layer->device());
    const moe::Tensor out = moe::Tensor::empty({t, h}, moe::DType::kBF16, layer->device());
    layer->forward(x, moe::TensorView(), out);
    const std::vector<uint16_t> out_host = example::to_host_bf16(out);

    // 4. The check: rank 0 runs all N * t tokens through one unsplit layer.
    std::vector<uint16_t> all_x(size * t * h), all_out(size * t * h);
    MPI_Gather(x_host.data(), t * h, MPI_UINT16_T, all_x.data(), t * h, MPI_UINT16_T, 0,
               MPI_COMM_WORLD);
    MPI_Gather(out_host.data(), t * h, MPI_UINT16_T, all_out.data(), t * h, MPI_UINT16_T, 0,
               MPI_COMM_WORLD);
    if (rank == 0) {
      moe::MoeOptions single;
      single.backend = "reference";
      auto whole = moe::create_moe(config, moe::Mapping{}, single).moe;
      whole->load_weights(*weights);
      std::vector<uint16_t> expect(all_out.size());
      const int64_t n = size * t;
      whole->forward(moe::TensorView(all_x.data(), moe::DType::kBF16, {n, h}), moe::TensorView(),
                     moe::TensorView(expect.data(), moe::DType::kBF16, {n, h}));
      // Each rank rounds its partial sum to bf16 before the ranks' sums are added.
      const double err = example::relative_l2(all_out, expect);
      std::printf("expert parallel vs one process: relative L2 %.2e\n", err);
      ok = err < 1e-2;
    }
  } catch (const moe::Error& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);  // do not leave the other ranks waiting
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return ok ? 0 : 1;
}
