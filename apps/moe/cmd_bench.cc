// `moe bench`: the whole MoE layer of every model preset at several token counts, timed as
// CUDA-graph replays (L2 flushed, inputs rotated) against the roofline of the GPU measured in
// the same run and against the weight format's peer (cuBLAS / cuBLASLt) on the same routing;
// an aligned table, JSON to bench/results/, and a plot on request; `--backend dense,grouped`
// compares several backends in one run; `--quant fp8_block --vs-bf16` also times each backend on
// bf16 weights of the same shapes (the "fp8 speedup" column). The sweep itself is bench/harness's
// run_bench; in a build without CUDA the command exists and says it needs one.
#include <memory>
#include <string>

#include "bench/harness/bench_runner.h"
#include "moe/commands.h"
#include "moe/moe.h"

namespace moe::cli {

Command add_bench_command(CLI::App& app) {
  auto opts = std::make_shared<bench::BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Benchmark the whole layer (routing, permutation, expert GEMMs, finalize) of the model\n"
      "presets on this GPU: median time of CUDA-graph replays, TFLOP/s, GB/s, time over the\n"
      "floor (activated weights + I/O over the measured copy bandwidth, or FLOPs over the\n"
      "measured cuBLAS GEMM rate, bf16 or fp8 as the layer's GEMMs) and against a peer on the\n"
      "same routing (cuBLAS grouped GEMM; for fp8 weights cuBLASLt's e4m3 matmul per expert).\n"
      "See bench/README.md.");
  std::string presets;
  for (const auto& p : preset_names()) presets += (presets.empty() ? "" : ", ") + p;
  cmd->add_option("--models", opts->models, "Comma list of presets (default: all): " + presets);
  cmd->add_option("--tokens", opts->tokens,
                  "Comma list of token counts (default: 1,8,64,512,4096, and 16384 for "
                  "qwen3-30b-a3b)");
  std::string backends;
  for (const auto& b : backend_names()) backends += (backends.empty() ? "" : ", ") + b;
  cmd->add_option("--backend", opts->backend,
                  "Backend to time, or a comma list to compare in one run (same weights, routing\n"
                  "and inputs; rows per case with the ratio to the first listed, the fastest,\n"
                  "and what auto picks): " +
                      backends + ", or auto")
      ->capture_default_str();
  std::string quants;
  for (QuantMode q : all_quant_modes()) {
    quants += (quants.empty() ? "" : ", ") + std::string(quant_mode_name(q));
  }
  cmd->add_option("--quant", opts->quant, "Weight format: " + quants)->capture_default_str();
  cmd->add_flag("--vs-bf16", opts->vs_bf16,
                "With an fp8 --quant (fp8_block, fp8_per_tensor, w4a8_mxfp4_mxfp8): also time\n"
                "each backend on bf16 weights of the same shapes, routing and inputs, one layer\n"
                "on the GPU at a time (honours --weight-pool); adds the column\n"
                "\"fp8 speedup\" = bf16 time / fp8 time");
  cmd->add_option("--reps", opts->reps, "Timed replays per case (the median is reported)")
      ->capture_default_str();
  cmd->add_option("--warmup", opts->warmup, "Untimed replays before them")->capture_default_str();
  cmd->add_option("--out", opts->out,
                  "JSON results file (default: bench/results/<device>-<UTC date>.json)");
  cmd->add_option("--plot", opts->plot, "Also draw time/floor per case to this PNG (matplotlib)");
  cmd->add_option("--plot-script", opts->plot_script, "The plotting script --plot runs")
      ->capture_default_str();
  auto no_peer = std::make_shared<bool>(false);
  cmd->add_flag("--no-peer", *no_peer,
                "Do not time the peer (cuBLAS grouped GEMM; cuBLASLt per expert for fp8)");
  cmd->add_option("--weight-pool", opts->weight_pool,
                  "Load N distinct random experts repeated over all experts (0: all distinct);\n"
                  "same device footprint and traffic, much faster loads of large models")
      ->capture_default_str();
  cmd->add_option("--seed", opts->seed, "Seed of the random weights and inputs")
      ->capture_default_str();
  cmd->add_option("--l2-flush", opts->l2_flush,
                  "How L2 is emptied before each replay: clean (read a buffer of 2 x L2) or\n"
                  "dirty (cudaMemset it, as the grids up to v2.11 and Triton's / DeepGEMM's\n"
                  "benchmarks do: the replay then also writes back up to L2's size of dirty\n"
                  "lines that are not its own traffic); none: no flush and one input set, so\n"
                  "what fits of the layer stays in L2 between replays (a warm-cache diagnostic)")
      ->check(CLI::IsMember({"clean", "dirty", "none"}))
      ->capture_default_str();
  return [opts, no_peer] {
    opts->peer = !*no_peer;
#ifdef MOE_HAVE_CUDA
    return bench::run_bench(*opts);
#else
    MOE_THROW("moe bench needs a CUDA build and a GPU (this moe was built without CUDA)");
    return 1;
#endif
  };
}

}  // namespace moe::cli
