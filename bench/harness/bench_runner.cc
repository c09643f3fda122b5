// run_bench (bench_runner.h): the `moe bench` sweep.
//
// Per run:   roofline (copy bandwidth, cuBLAS bf16 GEMM rate, and cuBLASLt's e4m3 GEMM rate
//            when the layer's GEMMs are fp8) -> models one at a time.
// Per model: one layer (max_num_tokens = the largest token count of the model, so that one
//            load serves every case: the backend sizes its workspaces from it and picks its
//            kernels from the forward's T) and one peer, never both on the GPU at once:
//   1. inputs of every case on the host: logits f32 [T, E] ~ N(0, 1) per input set, routed
//      with route_cpu (and the correction bias of the random weights when the preset has
//      one) into tokens per expert -> distinct experts (for the floor) and the peer's m_e;
//   2. the peer of the weight format (when enabled, there is one and it fits: cuBLAS's
//      grouped GEMM, or cuBLASLt's e4m3 matmul per expert for fp8): weights filled on the GPU,
//      each case timed, freed;
//   3. the layer: created (the factory's reasons printed if the backend cannot run it),
//      checked against free memory, weights loaded (time printed), then per case: x sets
//      filled on the GPU, logits copied, one forward outside capture, one captured graph
//      per set, timed replays, one poisoned replay checked for non-finite output; destroyed.
// A model that does not fit or that the backend cannot run is skipped with its reason; one
// that fails is reported and the sweep goes on with the next.
//
// Several backends (`--backend dense,grouped`): step 3 runs once per backend, in the order
// listed, on the same weight source (same seed, so byte for byte the same weights), the same
// routed inputs and the same x seeds; one backend's layer is on the GPU at a time. Before
// them, the backend the factory's "auto" picks at each T is asked (create_moe with
// max_num_tokens = T, no weights loaded: constructing allocates only the scheduler's [T, k]
// routing buffers and the router's flag; weights and workspaces come with load_weights).
// A model's rows are printed per case once every backend has run it; the closing summary
// compares the backends over all cases (bench_math.h: compare_backends).
//
// FP8 against BF16 (`--quant fp8_block --vs-bf16`): after each backend's fp8 layer of a model
// is timed and destroyed, the same backend ("auto" resolved to the one that ran) is loaded
// with bf16 weights of the same shapes (a second random source with the same seed: the same
// master weights and correction bias, so the same routing; pooled like the first under
// --weight-pool) and timed on the same cases (same logits, same x seeds); its times go into
// the fp8 rows (attach_bf16). One layer on the GPU at a time, so the bf16 layer has the
// fp8 one's memory to itself; one that does not fit is skipped with its reason and leaves
// the fp8 rows without a speedup. Rows then print once both ran.
#include "bench/harness/bench_runner.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "bench/harness/bench_math.h"
#include "bench/harness/cublas_handle.h"
#include "bench/harness/device_fill.h"
#include "bench/harness/peer_cublas.h"
#include "bench/harness/peer_cublaslt.h"
#include "bench/harness/roofline.h"
#include "bench/harness/timer.h"
#include "bench/harness/weight_pool.h"
#include "core/cuda_check.h"
#include "core/device_info.h"
#include "core/random.h"
#include "moe/moe.h"
#include "routing/routing.h"

namespace moe::bench {
namespace {

constexpr double kGB = 1e9;
// Room left for what is not counted (CUDA context, router buffers, cuBLAS, fragmentation).
constexpr double kMemoryMargin = 1.5e9;

// One case's inputs, on the host.
struct CaseInputs {
  int64_t tokens = 0;
  int sets = 0;
  size_t bytes_per_set = 0;                     // x + logits on the GPU
  std::vector<Tensor> logits;                   // per set: f32 [T, E]
  std::vector<std::vector<int>> expert_counts;  // per set: [E] tokens per expert
  double distinct_mean = 0;
};

// What the sweep shares across models.
struct Context {
  const BenchOptions& options;
  std::vector<std::string> backends;  // one, or several to compare
  std::optional<QuantMode> quant;
  std::vector<int64_t> tokens;  // empty: the grid
  Stream& stream;
  const CublasHandle& cublas;
  const L2Flush& flush;
  size_t l2_bytes = 0;
  Roofline roofline;
  BenchRun& run;
};

void print_line(const std::string& s) {
  std::printf("%s\n", s.c_str());
  std::fflush(stdout);
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

double free_device_bytes() {
  size_t free_bytes = 0, total_bytes = 0;
  MOE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<double>(free_bytes);
}

// Multi-line messages (the factory's report) as one indented block.
std::string indent(const std::string& text) {
  std::string out;
  for (char ch : text) {
    out += ch;
    if (ch == '\n') out += "#     ";
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '#' || out.back() == '\n')) {
    out.pop_back();
  }
  return out;
}

MoeConfig model_config(const Context& ctx, const std::string& name,
                       const std::vector<int64_t>& tokens) {
  MoeConfig c = preset(name);
  if (ctx.quant) {
    c.quant = *ctx.quant;
    c.act_dtype = c.quant == QuantMode::kFP16 ? DType::kF16 : DType::kBF16;
  }
  c.max_num_tokens = static_cast<int>(*std::max_element(tokens.begin(), tokens.end()));
  c.validate();
  return c;
}

CaseInputs make_case_inputs(const Context& ctx, const MoeConfig& c, int64_t tokens,
                            const Tensor& correction_bias) {
  CaseInputs in;
  in.tokens = tokens;
  const size_t act = static_cast<size_t>(dtype_bits(c.act_dtype)) / 8;
  in.bytes_per_set = static_cast<size_t>(tokens) *
                     (static_cast<size_t>(c.hidden_size) * act + c.num_experts * sizeof(float));
  // No flush (a warm-L2 diagnostic): one set, the same bytes every replay.
  in.sets =
      ctx.flush.mode() == L2FlushMode::kNone
          ? 1
          : num_input_sets(in.bytes_per_set, ctx.l2_bytes, ctx.options.warmup + ctx.options.reps);
  double distinct_sum = 0;
  for (int s = 0; s < in.sets; ++s) {
    Tensor logits = Tensor::empty({tokens, c.num_experts}, DType::kF32);  // [T, E]
    fill_normal(logits, stream_id(ctx.options.seed, 0x6C /* 'l' */, tokens, s));
    Tensor ids = Tensor::empty({tokens, c.top_k}, DType::kI32);      // [T, k]
    Tensor weights = Tensor::empty({tokens, c.top_k}, DType::kF32);  // [T, k]
    route_cpu(c.routing, c.top_k, logits,
              correction_bias.defined() ? correction_bias.view() : TensorView(), ids, weights);
    std::vector<int> counts = tokens_per_expert(
        {ids.data_as<const int32_t>(), static_cast<size_t>(ids.numel())}, c.num_experts);
    distinct_sum += count_active(counts);
    in.logits.push_back(std::move(logits));
    in.expert_counts.push_back(std::move(counts));
  }
  in.distinct_mean = distinct_sum / in.sets;
  return in;
}

// True when every element of a device bf16 / f16 tensor is finite.
bool all_finite(const Tensor& out) {
  std::vector<uint16_t> host(static_cast<size_t>(out.numel()));
  MOE_CUDA_CHECK(cudaMemcpy(host.data(), out.data(), out.nbytes(), cudaMemcpyDeviceToHost));
  const uint16_t exponent = out.dtype() == DType::kBF16 ? 0x7F80 : 0x7C00;
  return std::none_of(host.begin(), host.end(),
                      [&](uint16_t v) { return (v & exponent) == exponent; });
}

// Times the layer on one case: one captured graph per input set, replayed in rotation.
CaseResult time_layer_case(const Context& ctx, ConfigurableMoE& layer, const MoeConfig& c,
                           const CaseInputs& in) {
  const cudaStream_t stream = ctx.stream.get();
  const Device dev = Device::cuda(0);
  const int64_t t = in.tokens, h = c.hidden_size;
  Tensor out = Tensor::empty({t, h}, c.act_dtype, dev);  // [T, H]
  std::vector<Tensor> x(in.sets), logits(in.sets);
  for (int s = 0; s < in.sets; ++s) {
    x[s] = Tensor::empty({t, h}, c.act_dtype, dev);  // [T, H]
    fill_random_device(x[s], stream_id(ctx.options.seed, 0x78 /* 'x' */, t, s), 1.0f, stream);
    logits[s] = Tensor::empty({t, c.num_experts}, DType::kF32, dev);  // [T, E]
    MOE_CUDA_CHECK(cudaMemcpyAsync(logits[s].data(), in.logits[s].data(), in.logits[s].nbytes(),
                                   cudaMemcpyHostToDevice, stream));
  }
  // Outside capture first (kernel attributes, lazy module loading).
  layer.forward(x[0], logits[0], out, stream);
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream), c.name, ": forward of ", t, " tokens");

  std::vector<GraphExec> graphs;
  for (int s = 0; s < in.sets; ++s) {
    graphs.push_back(capture_graph(stream, [&] { layer.forward(x[s], logits[s], out, stream); }));
  }
  const TimingPlan plan{ctx.options.warmup, ctx.options.reps, &ctx.flush};
  CaseResult r;
  r.model = c.name;
  r.tokens = t;
  r.backend = std::string(layer.backend_name());
  r.ours = summarize_times(
      time_launches(stream, plan, [&](int i) { graphs[i % in.sets].launch(stream); }));
  r.distinct_experts = in.distinct_mean;
  r.bytes = case_bytes(c, t, in.distinct_mean);
  r.flops = case_flops(c, t);
  r.floor_gemm = gemm_format(c.quant);
  r.floor = case_floor(c, t, in.distinct_mean, ctx.roofline);
  r.input_sets = in.sets;
  r.inputs_exceed_2x_l2 = static_cast<double>(in.sets) * in.bytes_per_set > 2.0 * ctx.l2_bytes;

  // One more replay into a poisoned output (0xFF.. is NaN in bf16 and f16).
  MOE_CUDA_CHECK(cudaMemsetAsync(out.data(), 0xFF, out.nbytes(), stream));
  graphs[0].launch(stream);
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  r.output_finite = all_finite(out);
  return r;
}

// Times `Peer` on every case of a model; empty map (with the reason printed) when it is
// disabled, cannot run this layer, or does not fit. `make` constructs the peer.
template <class Peer, class Make>
std::map<int64_t, PeerTiming> time_peer(Context& ctx, const MoeConfig& c,
                                        const std::vector<CaseInputs>& cases, Make make) {
  std::map<int64_t, PeerTiming> results;
  std::string why;
  if (!Peer::supports(c, why)) {
    print_line("# " + c.name + ": peer skipped: " + why);
    return results;
  }
  double case_max = 0;
  for (const CaseInputs& in : cases) {
    case_max = std::max(case_max, Peer::case_bytes(c, in.tokens, in.sets));
  }
  const double needed = Peer::weight_bytes(c) + case_max + kMemoryMargin;
  const double free_bytes = free_device_bytes();
  if (needed > free_bytes) {
    print_line("# " + c.name + ": peer skipped: needs " + fixed(needed / kGB, 1) + " GB, " +
               fixed(free_bytes / kGB, 1) + " GB free");
    return results;
  }
  // NOTE: a peer that fails (a library status) costs only the peer columns of this model.
  try {
    Peer peer = make();
    const TimingPlan plan{ctx.options.warmup, ctx.options.reps, &ctx.flush};
    for (const CaseInputs& in : cases) {
      results[in.tokens] = peer.time_case(in.tokens, in.expert_counts, plan, ctx.options.seed);
    }
  } catch (const Error& e) {
    ctx.run.skipped.push_back({c.name + " (peer)", e.message()});
    print_line("# " + c.name + ": peer FAILED (its columns are left empty): " + e.message());
  }
  return results;
}

// The peer of the layer's weight format (bench_math.h: peer_for_quant) on every case.
std::map<int64_t, PeerTiming> run_peer(Context& ctx, const MoeConfig& c,
                                       const std::vector<CaseInputs>& cases) {
  std::map<int64_t, PeerTiming> results;
  if (!ctx.options.peer) return results;
  const PeerInfo info = peer_for_quant(c.quant);
  if (info.name == kPeerCublasGrouped) {
    results = time_peer<CublasGroupedPeer>(ctx, c, cases, [&] {
      return CublasGroupedPeer(c, ctx.stream.get(), ctx.cublas, ctx.options.seed);
    });
  } else if (info.name == kPeerCublasLt) {
    results = time_peer<CublasLtPeer>(
        ctx, c, cases, [&] { return CublasLtPeer(c, ctx.stream.get(), ctx.options.seed); });
  } else {
    print_line("# " + c.name + ": peer skipped: " + info.description);
  }
  if (results.empty()) return results;
  const PeerTiming& first = results.begin()->second;
  print_line("# " + c.name + ": peer " + info.description + " timed as " +
             (first.mode == "graph" ? std::string("CUDA-graph replays")
                                    : "plain stream launches (" + first.why_no_graph + ")"));
  return results;
}

// What "auto" picks for a layer built for exactly `tokens` tokens.
struct AutoPick {
  std::string backend;
  std::string reason;
};

AutoPick auto_pick(const MoeConfig& c, int64_t tokens) {
  MoeConfig at = c;
  at.max_num_tokens = static_cast<int>(tokens);
  try {
    // NOTE: constructed, never loaded: no weights or workspaces are allocated.
    const CreateResult created = create_moe(at, Mapping{}, MoeOptions{});
    return {created.report.backend, created.report.auto_policy};
  } catch (const Error& e) {
    const std::string& m = e.message();
    return {"none", m.substr(0, m.find('\n'))};
  }
}

// "dense T=1,2; grouped T=8,64": the token counts grouped by the backend auto picks.
std::string describe_picks(const std::vector<int64_t>& tokens,
                           const std::map<int64_t, AutoPick>& picks) {
  std::vector<CaseKey> keys;
  for (int64_t t : tokens) keys.push_back({picks.at(t).backend, t});
  return format_case_list(keys);
}

// A row of the single-backend table, with its warnings.
std::string row_line(const CaseResult& r, bool fp8_speedup) {
  std::string line = table_row(r, fp8_speedup);
  if (!r.output_finite) line += "  (output not finite!)";
  if (r.bf16 && !r.bf16_output_finite) line += "  (bf16 output not finite!)";
  return line;
}

// One backend's layer of a model: created, checked against free memory, loaded, every case
// timed, destroyed. Appends its rows to `rows` (and prints them when `print_rows`); a backend
// that cannot run the model or does not fit is skipped under `label`.
void run_backend(Context& ctx, const MoeConfig& c, const std::string& backend,
                 const std::string& label, WeightSource& source,
                 const std::vector<CaseInputs>& cases, const std::map<int64_t, PeerTiming>& peer,
                 const std::map<int64_t, AutoPick>& picks, bool print_rows,
                 std::vector<CaseResult>& rows) {
  MoeOptions mo;
  mo.backend = backend;
  std::unique_ptr<ConfigurableMoE> layer;
  try {
    layer = create_moe(c, Mapping{}, mo).moe;
  } catch (const Error& e) {
    ctx.run.skipped.push_back({label, e.message()});
    print_line("# " + label + ": skipped: " + indent(e.message()));
    return;
  }
  MOE_CHECK(layer->device().is_cuda(), c.name, ": backend ", layer->backend_name(), " runs on ",
            layer->device().str(), "; moe bench times GPU backends");
  double inputs_max = 0;
  for (const CaseInputs& in : cases) {
    inputs_max = std::max(inputs_max, static_cast<double>(in.sets) * in.bytes_per_set +
                                          static_cast<double>(in.tokens) * c.hidden_size * 2);
  }
  const double weights = model_weight_bytes(c);
  const double needed = weights +
                        static_cast<double>(layer->backend().workspace_bytes(c.max_num_tokens)) +
                        inputs_max + kMemoryMargin;
  const double free_bytes = free_device_bytes();
  if (needed > free_bytes) {
    const std::string why = "needs " + fixed(needed / kGB, 1) + " GB of device memory (weights " +
                            fixed(weights / kGB, 1) + " GB), " + fixed(free_bytes / kGB, 1) +
                            " GB free";
    ctx.run.skipped.push_back({label, why});
    print_line("# " + label + ": skipped: " + why);
    return;
  }
  std::printf("# %s: loading %.1f GB (%s) into %s ...", c.name.c_str(), weights / kGB,
              source.describe().c_str(), std::string(layer->backend_name()).c_str());
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  layer->load_weights(source);
  MOE_CUDA_CHECK(cudaDeviceSynchronize(), c.name, ": loading weights");
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  print_line(" " + fixed(load_s, 1) + " s");
  ctx.run.loads.push_back({c.name, weights, load_s, std::string(layer->backend_name()),
                           std::string(quant_mode_name(c.quant))});

  for (const CaseInputs& in : cases) {
    CaseResult r = time_layer_case(ctx, *layer, c, in);
    if (const auto it = peer.find(in.tokens); it != peer.end()) {
      r.peer = it->second.stats;
      r.peer_mode = it->second.mode;
    }
    if (const auto it = picks.find(in.tokens); it != picks.end()) {
      r.auto_choice = it->second.backend;
      r.auto_reason = it->second.reason;
    }
    if (print_rows) print_line(row_line(r, false));
    rows.push_back(std::move(r));
  }
}

// --vs-bf16: the bf16 layer of the same shapes, routing and token capacity as `c`.
MoeConfig bf16_config(const MoeConfig& c) {
  MoeConfig b = c;
  b.quant = QuantMode::kBF16;
  b.act_dtype = DType::kBF16;
  b.validate();
  return b;
}

// --vs-bf16: times `backend` on bf16 weights (config c16, `source`) on the same cases as its
// fp8 `rows` and attaches the times to them. A bf16 layer that cannot run or does not fit is
// skipped (run_backend records why); one that fails is recorded as failed under `label`.
// Either way the fp8 rows stay.
void run_bf16_companion(Context& ctx, const MoeConfig& c16, const std::string& backend,
                        const std::string& label, WeightSource& source,
                        const std::vector<CaseInputs>& cases, std::span<CaseResult> rows) {
  std::vector<CaseResult> bf16_rows;
  try {
    run_backend(ctx, c16, backend, label, source, cases, {}, {}, false, bf16_rows);
    attach_bf16(rows, bf16_rows);
  } catch (const Error& e) {
    ctx.run.failed.push_back({label, e.message()});
    print_line("# " + label + ": FAILED: " + indent(e.message()));
  }
}

void run_model(Context& ctx, const std::string& name) {
  const std::vector<int64_t> tokens = ctx.tokens.empty() ? default_token_counts(name) : ctx.tokens;
  const MoeConfig c = model_config(ctx, name, tokens);
  const bool compare = ctx.backends.size() > 1;

  // 1. Inputs and routing of every case (host).
  auto source = make_random_weights(c, ctx.options.seed);
  Tensor correction_bias;
  if (c.routing.has_correction_bias) {
    const TensorView bias = source->correction_bias();
    MOE_CHECK(!bias.empty(), name, ": the random weights have no correction bias");
    correction_bias = Tensor::empty({c.num_experts}, DType::kF32);
    MOE_CHECK(bias.nbytes() == correction_bias.nbytes() && bias.dtype() == DType::kF32, name,
              ": correction bias is ", bias.str(), ", expected f32[", c.num_experts, "]");
    std::copy_n(static_cast<const char*>(bias.data()), bias.nbytes(),
                static_cast<char*>(correction_bias.data()));
  }
  if (ctx.options.weight_pool > 0) {
    source = make_pooled_weights(std::move(source), c.num_experts,
                                 std::min(ctx.options.weight_pool, c.num_experts));
  }
  std::vector<CaseInputs> cases;
  for (int64_t t : tokens) cases.push_back(make_case_inputs(ctx, c, t, correction_bias));
  // --vs-bf16: bf16 weights from the same seed (same master weights and correction bias).
  const bool vs_bf16 = ctx.options.vs_bf16;
  MoeConfig c16;
  std::unique_ptr<WeightSource> source16;
  if (vs_bf16) {
    c16 = bf16_config(c);
    source16 = make_random_weights(c16, ctx.options.seed);
    if (ctx.options.weight_pool > 0) {
      source16 = make_pooled_weights(std::move(source16), c16.num_experts,
                                     std::min(ctx.options.weight_pool, c16.num_experts));
    }
  }

  // 2. The peer.
  const auto peer = run_peer(ctx, c, cases);

  // 3. The layer of each backend, one at a time, on the same source (the pooled source keeps
  //    its host copies, so later backends skip the generation).
  std::map<int64_t, AutoPick> picks;
  if (compare) {
    for (int64_t t : tokens) picks[t] = auto_pick(c, t);
    print_line("# " + name + ": auto picks " + describe_picks(tokens, picks));
  }
  // NOTE: one backend: rows go straight into the run (a later failure keeps them) and
  // failures propagate (the model FAILED); rows print as they come unless they wait for
  // their bf16 times.
  std::vector<CaseResult> compared;
  std::vector<CaseResult>& rows = compare ? compared : ctx.run.cases;
  for (const std::string& backend : ctx.backends) {
    const size_t first = rows.size();
    if (!compare) {
      try {
        run_backend(ctx, c, backend, name, *source, cases, peer, picks, !vs_bf16, rows);
      } catch (const Error&) {
        // Rows that waited for their bf16 times: shown before the failure is.
        if (vs_bf16) {
          for (size_t i = first; i < rows.size(); ++i) print_line(row_line(rows[i], true));
        }
        throw;
      }
    } else {
      const std::string label = name + " (" + backend + ")";
      try {
        run_backend(ctx, c, backend, label, *source, cases, peer, picks, false, rows);
      } catch (const Error& e) {
        ctx.run.failed.push_back({label, e.message()});
        print_line("# " + label + ": FAILED: " + indent(e.message()));
        continue;
      }
    }
    if (!vs_bf16 || rows.size() == first) continue;
    // The backend that ran ("auto" resolved), so that both layers run the same code.
    const std::string ran = rows[first].backend;
    const std::string label = compare ? name + " (" + ran + ", bf16)" : name + " (bf16)";
    const std::span<CaseResult> fp8_rows = std::span(rows).subspan(first);
    run_bf16_companion(ctx, c16, ran, label, *source16, cases, fp8_rows);
    if (!compare) {
      for (const CaseResult& r : fp8_rows) print_line(row_line(r, true));
    }
  }
  source.reset();
  source16.reset();
  if (!compare || compared.empty()) return;
  const Comparison cmp = compare_backends(compared, ctx.backends);
  for (const ComparedCase& k : cmp.cases) {
    for (const std::string& row : comparison_rows(k, compared, ctx.backends, vs_bf16)) {
      print_line(row);
    }
  }
  for (CaseResult& r : compared) ctx.run.cases.push_back(std::move(r));
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

void write_json(const std::string& path, const nlohmann::json& doc) {
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::ofstream f(p);
  MOE_CHECK(f.good(), "cannot open '", path, "' for writing");
  f << doc.dump(2) << "\n";
  MOE_CHECK(f.good(), "writing '", path, "' failed");
}

}  // namespace

void check_plot_tools(const std::string& plot_script) {
  MOE_CHECK(std::filesystem::exists(plot_script), "--plot: plot script '", plot_script,
            "' not found (run from the repository root, or pass --plot-script)");
  MOE_CHECK(std::system("command -v python3 >/dev/null 2>&1") == 0,
            "--plot: python3 not found on PATH");
  MOE_CHECK(std::system("python3 -c 'import matplotlib' >/dev/null 2>&1") == 0,
            "--plot: python3 cannot import matplotlib (install it: pip install matplotlib)");
}

void run_plot_script(const std::string& plot_script, const std::string& json,
                     const std::string& png) {
  const std::string cmd =
      "python3 " + shell_quote(plot_script) + " " + shell_quote(json) + " " + shell_quote(png);
  const int rc = std::system(cmd.c_str());
  MOE_CHECK(rc == 0, "--plot: '", cmd, "' failed (status ", rc, ")");
}

int run_bench(const BenchOptions& o) {
  // Options first: a typo should not cost a GPU run.
  MOE_CHECK(o.reps >= 1, "--reps must be >= 1, got ", o.reps);
  MOE_CHECK(o.warmup >= 0, "--warmup must be >= 0, got ", o.warmup);
  MOE_CHECK(o.weight_pool >= 0, "--weight-pool must be >= 0, got ", o.weight_pool);
  std::vector<std::string> models = o.models.empty() ? preset_names() : split_list(o.models);
  MOE_CHECK(!models.empty(), "--models: no model in '", o.models, "'");
  for (const std::string& m : models) preset(m);  // throws, listing the presets
  const std::vector<int64_t> tokens =
      o.tokens.empty() ? std::vector<int64_t>{} : parse_token_list(o.tokens);
  const std::vector<std::string> backends = parse_backend_list(o.backend, backend_names());
  const bool compare = backends.size() > 1;
  const QuantMode quant = parse_quant_mode(o.quant);
  const GemmFormat gemm = gemm_format(quant);
  MOE_CHECK(!o.vs_bf16 || gemm == GemmFormat::kFP8,
            "--vs-bf16 compares fp8 layers with bf16 ones: it needs a --quant whose GEMMs are "
            "fp8 (fp8_block, fp8_per_tensor, w4a8_mxfp4_mxfp8), got ",
            quant_mode_name(quant));
  if (!o.plot.empty()) check_plot_tools(o.plot_script);

  const DeviceInfo info = DeviceInfo::detect();
  MOE_CHECK(info.has_cuda, "moe bench needs a CUDA GPU: none found on this machine");
  MOE_CUDA_CHECK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  MOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const std::time_t now = std::time(nullptr);
  const std::string out_path =
      o.out.empty() ? default_output_path(prop.name, utc_date(now)) : o.out;

  BenchRun run;
  run.device_name = prop.name;
  run.sm_major = prop.major;
  run.sm_minor = prop.minor;
  run.num_sms = prop.multiProcessorCount;
  run.memory_bytes = prop.totalGlobalMem;
  run.l2_bytes = l2_cache_bytes();
  run.timestamp_utc = utc_timestamp(now);
  MOE_CUDA_CHECK(cudaRuntimeGetVersion(&run.cuda_runtime_version));
  run.backend = o.backend;
  run.backends = backends;
  run.quant = std::string(quant_mode_name(quant));
  run.warmup = o.warmup;
  run.reps = o.reps;
  run.peer = o.peer;
  run.peer_name = o.peer ? peer_for_quant(quant).name : "";
  run.vs_bf16 = o.vs_bf16;
  run.weight_pool = o.weight_pool;
  run.seed = o.seed;
  const L2FlushMode flush_mode = parse_l2_flush_mode(o.l2_flush);
  run.l2_flush = l2_flush_mode_name(flush_mode);

  Stream stream;
  CublasHandle cublas(stream.get());
  run.cublas_version = cublas.version();
  std::printf(
      "# moe bench on %s (sm_%d%d, %d SMs, %.1f GB, L2 %.1f MB), CUDA runtime %d, cuBLAS %d\n",
      prop.name, prop.major, prop.minor, prop.multiProcessorCount,
      static_cast<double>(prop.totalGlobalMem) / kGB, run.l2_bytes / 1e6, run.cuda_runtime_version,
      run.cublas_version);
  if (compare) {
    std::string list;
    for (const std::string& b : backends) list += (list.empty() ? "" : ", ") + b;
    std::printf(
        "# backends %s compared (per model: one layer at a time, in this order, same weights, "
        "routing and inputs), %s, %d warm-up + %d timed CUDA-graph replays per case, L2 "
        "flushed (%s)\n",
        list.c_str(), run.quant.c_str(), o.warmup, o.reps, run.l2_flush.c_str());
  } else {
    std::printf(
        "# backend %s, %s, %d warm-up + %d timed CUDA-graph replays per case, L2 flushed (%s)\n",
        o.backend.c_str(), run.quant.c_str(), o.warmup, o.reps, run.l2_flush.c_str());
  }
  std::fflush(stdout);

  run.roofline = measure_roofline(stream.get(), cublas, o.seed, gemm == GemmFormat::kFP8);
  const Roofline& roof = run.roofline.rates;
  std::printf(
      "# roofline: copy %.0f GB/s (D2D %.0f MiB, read + write), cuBLAS bf16 GEMM %.0f "
      "TFLOP/s (%d^3)",
      roof.copy_bytes_per_s / kGB, run.roofline.copy_buffer_bytes / 1048576.0,
      roof.gemm_flops_per_s / 1e12, run.roofline.gemm_n);
  if (run.roofline.fp8_gemm) {
    std::printf(
        ", cuBLASLt fp8 GEMM %.0f TFLOP/s (%d^3, e4m3 x e4m3 -> bf16, per-tensor scales, fast "
        "accumulation %s, fastest of %d algorithms)",
        roof.fp8_gemm_flops_per_s / 1e12, run.roofline.fp8_gemm_n,
        run.roofline.fp8_gemm_fast_accum ? "on" : "off", run.roofline.fp8_gemm_algos);
  }
  print_line("");
  print_line("# floor = max(bytes / copy bandwidth, flops / " +
             std::string(gemm_format_name(gemm)) +
             " GEMM rate); peer: " + peer_for_quant(quant).description +
             " on the same routing; peer/ours > 1: ours faster");
  if (quant != QuantMode::kBF16 && quant != QuantMode::kFP16) {
    print_line("# " + run.quant + " bytes: the stored weights with their scales; x and out bf16");
  }
  if (o.vs_bf16) {
    print_line(
        "# fp8 speedup: the same backend's time on bf16 weights of the same shapes, routing and "
        "inputs / its time on " +
        run.quant + " (> 1: " + run.quant + " faster)");
  }
  if (compare) {
    print_line("# vs " + backends[0] + ": time / " + backends[0] +
               "'s time on the same case (< 1: faster); note: fastest of the case, and the "
               "backend auto picks for a layer of exactly T tokens");
    print_line(comparison_header(backends, o.vs_bf16));
  } else {
    print_line(table_header(o.vs_bf16));
  }

  L2Flush flush(run.l2_bytes, flush_mode);
  Context ctx{o, backends, quant, tokens, stream, cublas, flush, run.l2_bytes, roof, run};
  for (const std::string& name : models) {
    try {
      run_model(ctx, name);
    } catch (const Error& e) {
      run.failed.push_back({name, e.message()});
      print_line("# " + name + ": FAILED: " + indent(e.message()));
    }
  }

  if (compare && !run.cases.empty()) {
    for (const std::string& line :
         comparison_summary_lines(compare_backends(run.cases, backends))) {
      print_line(line);
    }
  } else if (!run.cases.empty()) {
    for (const std::string& line : summary_lines(summarize_cases(run.cases))) print_line(line);
  }
  write_json(out_path, run_to_json(run));
  print_line("# results: " + out_path);
  if (!o.plot.empty()) {
    run_plot_script(o.plot_script, out_path, o.plot);
    print_line("# plot: " + o.plot);
  }
  if (run.cases.empty()) {
    std::fprintf(stderr, "error: moe bench ran no case\n");
    return 1;
  }
  return run.failed.empty() ? 0 : 1;
}

}  // namespace moe::bench
