// `moe bench`: the whole-layer benchmark sweep (issues 4 and 7). For each model preset and
// token count it times the layer's forward as CUDA-graph replays (L2 flushed, inputs
// rotated), computes the case's floor on the roofline measured in the same run (the FP8 GEMM
// rate too when the layer's GEMMs are fp8), times the peer of the weight format on the same
// routing (cuBLAS's grouped GEMM; cuBLASLt's e4m3 matmul per expert for fp8) and, with --vs-bf16,
// the same backend on bf16 weights, prints an aligned table, and writes JSON (and a plot). The
// options struct is plain so that apps/moe/cmd_bench.cc builds without CUDA; run_bench itself is
// compiled only with CUDA.
#pragma once

#include <cstdint>
#include <string>

namespace moe::bench {

struct BenchOptions {
  std::string models;  ///< comma list of presets; empty: every preset
  std::string tokens;  ///< comma list of token counts; empty: the issue's grid per model
  std::string backend = "grouped";  ///< a backend, or a comma list to compare in one run
  std::string quant = "bf16";
  int reps = 50;     ///< timed replays per case
  int warmup = 5;    ///< untimed replays first
  std::string out;   ///< JSON path; empty: bench/results/<device>-<UTC date>.json
  std::string plot;  ///< PNG path; empty: no plot
  std::string plot_script = "bench/plot_results.py";
  bool peer = true;  ///< time the peer of the weight format (bench_math.h: peer_for_quant)
  /// Also time each backend on bf16 weights of the same shapes, routing and inputs, for the
  /// "fp8 speedup" column; needs a quant whose GEMMs are fp8 (fp8_block, fp8_per_tensor,
  /// w4a8_mxfp4_mxfp8).
  bool vs_bf16 = false;
  /// > 0: routed experts repeat this many distinct random experts (weight_pool.h): faster
  /// loads, same device footprint and traffic. 0: every expert its own random weights.
  int weight_pool = 0;
  uint64_t seed = 1;
  /// How L2 is flushed before each replay: "clean" (a read of 2 x L2) or "dirty" (a
  /// cudaMemset of it: the replay also writes back up to L2's size of dirty lines; timer.h).
  std::string l2_flush = "clean";
};

/// Runs the sweep; returns the exit code (0 when every model ran or was skipped for a
/// stated reason and at least one case ran). Throws moe::Error for bad options and when no
/// CUDA GPU is present.
int run_bench(const BenchOptions& options);

/// Checks that `python3` with matplotlib and the script are there; throws moe::Error saying
/// which is missing.
void check_plot_tools(const std::string& plot_script);
/// python3 <plot_script> <json> <png>; throws moe::Error when it fails.
void run_plot_script(const std::string& plot_script, const std::string& json,
                     const std::string& png);

}  // namespace moe::bench
