// The pure parts of `moe bench`: what a case moves and computes, its floor on the measured
// roofline, timing statistics, the geometric mean, the number of rotating input sets, option
// parsing, the table rows and the JSON document. No CUDA here: this file builds (and is
// unit-tested) without the toolkit.
//
// Floor of a case (T tokens, routing that activates D distinct experts):
//   bytes = D * W(H, I) + W(H, I_shared) + 2*T*H*a   W: bytes of one expert MLP's stored
//                                                    weights and their scales, a: activation
//                                                    bytes (x in, out: bf16 / f16)
//   flops = 2*T*k*3*H*I + 2*T*3*H*I_shared
//   floor = max(bytes / copy bandwidth, flops / GEMM rate)
// where the copy bandwidth counts bytes read + written by a device-to-device copy and the
// GEMM rate is that of the format the expert GEMMs multiply in (gemm_format): cuBLAS's bf16
// rate, or cuBLASLt's e4m3 rate for the modes with fp8 activations, both on 8192^3 products
// measured in the same run.
//
// Several backends in one run (`--backend dense,grouped`): every (model, T) case has one row
// per backend that ran it; compare_backends groups the rows per case, finds the fastest, the
// ratio of each backend's time to the first listed backend's, what the factory's "auto"
// picks there and whether that was the fastest, and summarises per backend.
//
// FP8 against BF16 in one run (`--quant fp8_block --vs-bf16`): each fp8 row also carries the
// same backend's time on bf16 weights of the same shapes, routing and inputs (attach_bf16),
// and the fp8 speedup = bf16 time / fp8 time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/config.h"

namespace moe::bench {

// ---- Work of a case ------------------------------------------------------------------------

/// Bytes one stored weight element takes in `quant`'s checkpoint format, block scales
/// included (bf16/fp16 2, fp8 1 (+ 4/128^2 for block scales), nvfp4 0.5 + 1/16, mxfp4 and
/// w4a8 0.5 + 1/32): the average; weight_matrix_bytes is exact.
double weight_bytes_per_element(QuantMode quant);

/// Bytes of one stored weight matrix [rows, cols] (cols: the reduction dimension K) in
/// `quant`'s checkpoint format, with its scales:
///   bf16 / fp16      2 per element
///   fp8_per_tensor   1 per element + one f32 scale
///   fp8_block        1 per element + one f32 scale per 128x128 block (partial blocks count)
///   nvfp4            0.5 per element + one e4m3 scale per 16 along K + one f32 global scale
///   mxfp4, w4a8      0.5 per element + one ue8m0 scale per 32 along K
/// Activation scales (fp8_per_tensor's static input_scale) are not weights: not counted.
/// Throws moe::Error for a non-positive size.
double weight_matrix_bytes(QuantMode quant, int64_t rows, int64_t cols);
/// One expert MLP of intermediate size `intermediate`: gate [I, H], up [I, H], down [H, I].
double expert_weight_bytes(QuantMode quant, int64_t hidden, int64_t intermediate);

/// Tokens routed to each expert: ids i32 [T*k] with values in [0, num_experts). Throws
/// moe::Error naming the position of an id out of range.
std::vector<int> tokens_per_expert(std::span<const int32_t> ids, int num_experts);
/// Experts that receive at least one token.
int count_distinct_experts(std::span<const int32_t> ids, int num_experts);
/// Experts with a nonzero count.
int count_active(std::span<const int> tokens_per_expert);

/// Bytes a case must move at least: the distinct experts' weights with their scales
/// (expert_weight_bytes; fractional when averaged over input sets), the shared MLP's, and
/// x and out in the activation dtype.
double case_bytes(const MoeConfig& config, int64_t tokens, double distinct_experts);
/// Multiply-adds x 2 of the routed experts (T*k rows) and the shared MLP (T rows).
double case_flops(const MoeConfig& config, int64_t tokens);
/// Device memory the layer's weights take (experts, shared MLP, expert biases, router).
double model_weight_bytes(const MoeConfig& config);

/// The ceilings measured on this GPU.
struct Roofline {
  double copy_bytes_per_s = 0;  ///< device-to-device copy, bytes read + written per second
  double gemm_flops_per_s = 0;  ///< cuBLAS bf16 GEMM (8192^3, fp32 accumulation)
  /// cuBLASLt e4m3 x e4m3 -> bf16 GEMM (8192^3, fp32 accumulation); 0: not measured (runs
  /// whose GEMMs are not fp8).
  double fp8_gemm_flops_per_s = 0;
};

/// The tensor-core format a quant mode's expert GEMMs multiply in on Hopper.
enum class GemmFormat {
  kBF16,  ///< 16-bit activations: bf16, fp16 (same rate), nvfp4 and mxfp4 (weights widened)
  kFP8,   ///< e4m3 activations: fp8_per_tensor, fp8_block, w4a8_mxfp4_mxfp8
};
GemmFormat gemm_format(QuantMode quant);
std::string_view gemm_format_name(GemmFormat format);  ///< "bf16", "fp8"
/// The measured rate of `format`; throws moe::Error when it was not measured (0).
double gemm_rate(const Roofline& roofline, GemmFormat format);

/// The in-run peer `moe bench` times beside the layer for a weight format.
inline constexpr std::string_view kPeerCublasGrouped = "cublas_grouped";  ///< bf16 / fp16
inline constexpr std::string_view kPeerCublasLt = "cublaslt_per_expert";  ///< fp8 formats
struct PeerInfo {
  std::string name;         ///< the JSON's settings.peer_name; "" when there is none
  std::string description;  ///< what it runs (the table's header), or why there is none
};
PeerInfo peer_for_quant(QuantMode quant);

struct Floor {
  double memory_s = 0;   ///< bytes / copy bandwidth
  double compute_s = 0;  ///< flops / GEMM rate
  double seconds() const { return memory_s > compute_s ? memory_s : compute_s; }
  bool memory_bound() const { return memory_s >= compute_s; }
};

/// max(bytes / copy bandwidth, flops / the GEMM rate of `format`). Throws for a zero copy
/// bandwidth or a rate that was not measured.
Floor case_floor(double bytes, double flops, const Roofline& roofline, GemmFormat format);
/// A case of `config` (its quant) on T tokens with D distinct experts: case_bytes,
/// case_flops and the floor at gemm_format(config.quant)'s rate.
Floor case_floor(const MoeConfig& config, int64_t tokens, double distinct_experts,
                 const Roofline& roofline);

// ---- Timing statistics ---------------------------------------------------------------------

/// Summary of the times of one case's timed replays (milliseconds).
struct TimingStats {
  int count = 0;
  double median_ms = 0;
  double mean_ms = 0;
  double min_ms = 0;
  double max_ms = 0;
  double p10_ms = 0;  ///< 10th percentile (linear interpolation between ranks)
  double p90_ms = 0;
  /// (p90 - p10) / median: the relative spread of the replays.
  double spread() const { return median_ms > 0 ? (p90_ms - p10_ms) / median_ms : 0; }
};

/// Statistics of `ms` (at least one value, all finite and >= 0; throws otherwise).
TimingStats summarize_times(std::vector<double> ms);

/// exp(mean(log v)); throws for an empty span or a value <= 0.
double geometric_mean(std::span<const double> values);

/// How many distinct input sets a case rotates through: the fewest whose total exceeds
/// 2 x L2 (at least 2), but no more than `max_sets` (the number of replays: more could not
/// be used).
int num_input_sets(size_t bytes_per_set, size_t l2_bytes, int max_sets);

// ---- Options -------------------------------------------------------------------------------

/// The token counts of the grid: 1, 8, 64, 512, 4096, and 16384 for qwen3-30b-a3b.
std::vector<int64_t> default_token_counts(std::string_view model);
/// "a, b,,c" -> {"a", "b", "c"} (spaces trimmed, empty items dropped).
std::vector<std::string> split_list(std::string_view list);
/// "1,8,64" -> {1, 8, 64}; duplicates dropped, order kept. Throws moe::Error naming an item
/// that is not a positive integer, or an empty list.
std::vector<int64_t> parse_token_list(std::string_view list);
/// "dense, grouped" -> {"dense", "grouped"}; duplicates dropped, order kept. Each name must be
/// one of `known` (the backends built in) or "auto", and "auto" only alone: it picks one
/// backend per layer, while a run of several backends shows auto's pick per case anyway.
/// Throws moe::Error naming the bad item and the known names, or for an empty list.
std::vector<std::string> parse_backend_list(std::string_view list,
                                            std::span<const std::string> known);

/// "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3" (lower case, runs of other characters
/// become one '-'); "device" when nothing is left.
std::string sanitize_name(std::string_view name);
/// "YYYY-MM-DD" of a time in UTC.
std::string utc_date(std::time_t t);
/// "YYYY-MM-DDTHH:MM:SSZ" of a time in UTC.
std::string utc_timestamp(std::time_t t);
/// bench/results/<sanitised device name>-<date>.json
std::string default_output_path(std::string_view device_name, std::string_view date);

// ---- Results -------------------------------------------------------------------------------

/// One (model, token count) case, as one backend ran it.
struct CaseResult {
  std::string model;
  int64_t tokens = 0;
  std::string backend;  ///< the backend that ran it ("auto" resolved to the chosen one)
  /// Runs of several backends: the backend the factory's "auto" picks for a layer built for
  /// exactly `tokens` tokens, and the factory's policy line; empty when not asked.
  std::string auto_choice;
  std::string auto_reason;
  TimingStats ours;
  double bytes = 0;
  double flops = 0;
  double distinct_experts = 0;                ///< mean over the input sets
  GemmFormat floor_gemm = GemmFormat::kBF16;  ///< the GEMM rate the compute floor used
  Floor floor;
  int input_sets = 0;
  bool inputs_exceed_2x_l2 = false;
  bool output_finite = true;  ///< the layer's output after a replay held no NaN / Inf
  std::optional<TimingStats> peer;
  std::string peer_mode;  ///< "graph" or "stream" (how the peer was launched)
  /// --vs-bf16: the same backend on bf16 weights of the same shapes, routing and inputs
  /// (attach_bf16); empty when not asked or when the bf16 layer did not run.
  std::optional<TimingStats> bf16;
  Floor bf16_floor;  ///< its floor (bf16 bytes, bf16 GEMM rate)
  bool bf16_output_finite = true;

  double tflops() const;           ///< flops / median time, in TFLOP/s
  double gbps() const;             ///< bytes / median time, in GB/s (1e9)
  double time_over_floor() const;  ///< median time / floor
  /// Peer time / ours (> 1: ours is faster); empty without a peer.
  std::optional<double> peer_over_ours() const;
  /// bf16 time / ours (> 1: the fp8 path is faster); empty without a bf16 timing.
  std::optional<double> fp8_speedup() const;
  /// The bf16 layer's time over its own floor; empty without a bf16 timing.
  std::optional<double> bf16_time_over_floor() const;
};

/// --vs-bf16: copies the timing, floor and output check of each bf16 row into the fp8 row
/// of the same (model, T) (CaseResult::bf16); fp8 rows without one keep none. Throws
/// moe::Error for a bf16 row of another backend than its fp8 row, or two bf16 rows of a case.
void attach_bf16(std::span<CaseResult> fp8_rows, std::span<const CaseResult> bf16_rows);

/// A model that did not run, or failed, and why.
struct ModelNote {
  std::string model;
  std::string reason;
};

/// A model that was loaded: its weights and the time loading took.
struct ModelLoad {
  std::string model;
  double weight_bytes = 0;
  double load_s = 0;
  std::string backend;  ///< the backend loaded
  std::string quant;    ///< its weight format (--vs-bf16 loads bf16 layers too)
};

/// The measured ceilings with how they were measured.
struct RooflineReport {
  Roofline rates;
  size_t copy_buffer_bytes = 0;
  TimingStats copy;
  int gemm_n = 0;
  TimingStats gemm;
  /// The e4m3 GEMM (rates.fp8_gemm_flops_per_s); empty when the run did not measure it.
  std::optional<TimingStats> fp8_gemm;
  int fp8_gemm_n = 0;
  int fp8_gemm_algos = 0;  ///< heuristic algorithms timed (the fastest is reported)
  bool fp8_gemm_fast_accum = false;
};

/// Everything one `moe bench` run measured.
/// How the benchmark empties L2 before each timed launch (timer.h's L2Flush): clean reads a
/// buffer of 2 x L2 (L2 left holding clean lines), dirty overwrites it (L2 left holding dirty
/// lines, which the timed launch writes back to DRAM as its own reads evict them). None (a
/// diagnostic): nothing flushed and one input set, so whatever of the layer's bytes fits stays
/// in L2 from the replay before (warm weights, as vLLM's benchmark_moe replays).
enum class L2FlushMode { kClean, kDirty, kNone };
/// "clean" / "dirty" / "none".
const char* l2_flush_mode_name(L2FlushMode mode);
/// Parses "clean" / "dirty" / "none"; throws moe::Error naming the accepted values otherwise.
L2FlushMode parse_l2_flush_mode(std::string_view name);

struct BenchRun {
  std::string device_name;
  int sm_major = 0, sm_minor = 0, num_sms = 0;
  size_t memory_bytes = 0;
  size_t l2_bytes = 0;
  std::string timestamp_utc;
  int cuda_runtime_version = 0;
  int cublas_version = 0;
  std::string backend;                ///< --backend as given
  std::vector<std::string> backends;  ///< parsed; more than one: a comparison run
  std::string quant;
  int warmup = 0;
  int reps = 0;
  bool peer = true;
  std::string peer_name;  ///< peer_for_quant(quant).name
  bool vs_bf16 = false;
  int weight_pool = 0;
  uint64_t seed = 0;
  std::string l2_flush;  ///< "clean" / "dirty" (timer.h's L2Flush)
  RooflineReport roofline;
  std::vector<ModelLoad> loads;
  std::vector<CaseResult> cases;
  std::vector<ModelNote> skipped;
  std::vector<ModelNote> failed;
};

/// Geometric mean and worst of time/floor over the cases.
struct Summary {
  int num_cases = 0;
  double geomean_time_over_floor = 0;
  double worst_time_over_floor = 0;
  std::string worst_case;  ///< "model T=n"
  int num_peer_cases = 0;
  double geomean_peer_over_ours = 0;  ///< over the cases with a peer
  int num_fp8_speedup_cases = 0;      ///< cases with a bf16 timing (--vs-bf16)
  double geomean_fp8_speedup = 0;
  double min_fp8_speedup = 0;
  std::string min_fp8_speedup_case;  ///< "model T=n"
};
/// Throws for an empty list.
Summary summarize_cases(std::span<const CaseResult> cases);
/// The closing lines of a one-backend run ("# time/floor over ...", "# peer/ours over ...",
/// "# fp8 speedup over ..."), each only when it has cases.
std::vector<std::string> summary_lines(const Summary& summary);

// ---- Several backends in one run -----------------------------------------------------------

/// A (model, token count) pair.
struct CaseKey {
  std::string model;
  int64_t tokens = 0;
  bool operator==(const CaseKey&) const = default;
};

/// One (model, T) case over the listed backends.
struct ComparedCase {
  CaseKey key;
  std::vector<std::optional<size_t>> rows;  ///< per listed backend: its row in the cases
  std::vector<std::optional<double>> ms;    ///< per listed backend: median ms of that row
  std::vector<std::optional<double>> time_over_floor;  ///< per listed backend
  std::vector<std::optional<double>> fp8_speedup;      ///< per listed backend (--vs-bf16)
  int fastest = -1;         ///< listed backend with the lowest median; -1 unless >= 2 backends ran
  std::string auto_choice;  ///< what "auto" picks here ("": not asked)
  int auto_index = -1;      ///< auto_choice's place in the list; -1: not listed or did not run

  /// ms[b] / ms[0] (the first listed backend); empty unless both ran.
  std::optional<double> vs_first(size_t b) const;
  /// auto's time / the fastest time (1: auto picked the fastest); empty unless fastest >= 0
  /// and auto's choice ran.
  std::optional<double> auto_over_fastest() const;
};

/// A backend's cases and how it did.
struct BackendSummary {
  std::string backend;
  std::optional<Summary> all;  ///< time/floor (and peer/ours) over the cases it ran
  int num_vs_first = 0;        ///< cases both it and the first listed backend ran
  double geomean_vs_first = 0;
  std::vector<CaseKey> fastest;        ///< cases (>= 2 backends ran) where it was the fastest
  std::optional<Summary> auto_picked;  ///< its time/floor where "auto" picks it
};

/// A case where "auto" did not pick the fastest backend.
struct AutoMiss {
  CaseKey key;
  std::string picked;
  std::string fastest;
  double picked_over_fastest = 0;
};

/// How "auto" did over the cases where >= 2 backends ran and its choice was one of them.
struct AutoSummary {
  int num_cases = 0;
  int num_fastest = 0;
  double geomean_over_fastest = 0;  ///< auto's time / the fastest time
  double worst_over_fastest = 0;
  std::vector<AutoMiss> misses;  ///< in case order
};

struct Comparison {
  std::vector<std::string> backends;  ///< as listed; the first is the ratios' reference
  std::vector<ComparedCase> cases;    ///< in the order the cases first appear
  std::vector<BackendSummary> per_backend;
  AutoSummary autos;
};

/// Groups `cases` (rows of the listed backends, any order) per (model, T) and summarises
/// them. Throws moe::Error for a row of a backend not in the list, or a backend with two rows
/// of one case.
Comparison compare_backends(std::span<const CaseResult> cases,
                            std::span<const std::string> backends);

/// "a T=1,2; b T=8": models in first-seen order, tokens in the order given; "-" when empty.
std::string format_case_list(std::span<const CaseKey> cases);

// ---- Output --------------------------------------------------------------------------------

/// One case as a JSON object (the row format the plot script reads: model, tokens, backend,
/// time_over_floor, ...). Times in ms, rates in TFLOP/s and GB/s, peer fields null when
/// absent, auto_choice null when not asked, the bf16 fields (bf16_ms, fp8_speedup, ...)
/// null without a bf16 timing.
nlohmann::json case_to_json(const CaseResult& c);
/// A comparison: backends, per case (times, ratios, fastest, auto), per backend, auto.
nlohmann::json comparison_to_json(const Comparison& c);
/// The whole run (device, roofline, settings, cases, summary over every row, comparison
/// (null unless several backends), skipped and failed models).
nlohmann::json run_to_json(const BenchRun& run);

/// The table's column titles, and one case as an aligned row under them (one backend).
/// `fp8_speedup` (--vs-bf16): one more column last, "fp8 speedup" (CaseResult::fp8_speedup,
/// "-" when absent).
std::string table_header(bool fp8_speedup = false);
std::string table_row(const CaseResult& c, bool fp8_speedup = false);

/// The comparison table: model, T, backend, the single-backend columns, "vs <first>" (time /
/// the first listed backend's time) before the peer columns, "fp8 speedup" when asked, and a
/// note ("fastest", "auto").
std::string comparison_header(std::span<const std::string> backends, bool fp8_speedup = false);
/// One row per listed backend that ran the case, aligned under comparison_header.
std::vector<std::string> comparison_rows(const ComparedCase& k, std::span<const CaseResult> cases,
                                         std::span<const std::string> backends,
                                         bool fp8_speedup = false);
/// The closing lines ("# ..."): per backend time/floor, ratio to the first and fp8 speedup
/// (when timed), the cases each was fastest in, how auto did, and time/floor where auto
/// picks each backend.
std::vector<std::string> comparison_summary_lines(const Comparison& c);

}  // namespace moe::bench
