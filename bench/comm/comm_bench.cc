// moe_comm_bench: dispatch and combine of the NCCL strategies on 2+ GPUs, one rank each,
// next to NCCL's own all-to-all and a send/recv round trip measured in the same run.
//
//   mpirun -np 2 -x NCCL_NVLS_ENABLE=0 moe_comm_bench [--tokens 1,128,4096] [--iters N]
//          [--strategies alltoall,allgather_reducescatter,one_sided] [--payloads bf16,fp8]
//          [--partials f32|act]
//          [--no-baselines] [--json FILE] [--trace]
//
// --strategies picks the strategies and their order (default: the host-driven ones first,
// one_sided last, so that a fault in one_sided's device-side loads and stores, which
// leaves the GPU unusable, cannot hide the others' numbers); `none` runs the baselines only.
// Rank 0 prints each row as soon as it is measured, then the table and the JSON.
//
// Shape: DeepSeek-V3's layer (hidden 7168, top-8 of 256 experts, grouped routing with a
// correction bias) on random logits; every rank brings the same number of tokens. Payloads:
// bf16 rows, and fp8 rows (e4m3 [T, H] + f32 scales [T, H/128], what post-quant dispatch
// carries). For each strategy and token count:
//   dispatch   prepare_dispatch + dispatch, repeated
//   total      prepare_dispatch + dispatch + combine, repeated (combine = total - dispatch)
// timed on the host clock over `iters` back-to-back repetitions after a warm-up and an MPI
// barrier, ending with a stream synchronisation; the slowest rank's time is reported.
// one_sided is also timed as CUDA-graph replays (its sizes never leave the GPU): "graph",
// one call per graph launch; "graphx16", 16 calls captured back to back in one graph, as
// the layers of a model's forward are (no graph-launch gap between calls), per call.
// GB/s = bytes this rank sends to other ranks in dispatch (data, scales, ids, weights of
// the rows that leave it) / dispatch time: the bandwidth per direction.
// --trace (a build with the CMake option MOE_COMM_TRACE): each rank prints, for one_sided's
// graph-replayed pairs, the median time of each kernel phase from the dispatch's start.
// Baselines: ncclAlltoAll of T bf16 rows per peer twice (dispatch + combine of tokens sent
// once per destination rank), and a 4-byte ncclSend/ncclRecv ping-pong (one-way = half).
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "comm/communication.h"
#include "comm/ep_plan.h"
#include "comm/nccl/nccl_communication.h"
#include "comm/nccl/one_sided_kernels.h"
#include "core/cuda_check.h"
#include "core/random.h"
#include "moe/errors.h"
#include "routing/routing.h"

namespace moe {
namespace {

constexpr const char* kUsage =
    "--tokens 1,128,4096 --iters N --strategies alltoall,allgather_reducescatter,one_sided "
    "--payloads bf16,fp8 --partials f32|act --no-baselines --json FILE --trace";

struct Options {
  std::vector<int64_t> tokens = {1, 128, 4096};
  int iters = 50;
  std::vector<std::string> strategies = {"alltoall", "allgather_reducescatter", "one_sided"};
  std::vector<std::string> payloads = {"bf16", "fp8"};
  bool baselines = true;
  bool act_partials = false;  // --partials act: MoeConfig::ep_partial_dtype = bf16
  bool trace = false;         // --trace: one_sided's phase times (MOE_COMM_TRACE builds)
  std::string json_path;
};

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      MOE_CHECK(i + 1 < argc, a, " needs a value");
      return argv[++i];
    };
    if (a == "--tokens") {
      o.tokens.clear();
      for (const std::string& t : split(value())) o.tokens.push_back(std::stoll(t));
    } else if (a == "--iters") {
      o.iters = std::stoi(value());
    } else if (a == "--strategies") {
      o.strategies = split(value());
      if (o.strategies.size() == 1 && o.strategies[0] == "none") o.strategies.clear();
      for (const std::string& name : o.strategies) {
        MOE_CHECK(name == "alltoall" || name == "allgather_reducescatter" || name == "one_sided",
                  "--strategies: unknown strategy '", name,
                  "' (alltoall, allgather_reducescatter, one_sided, or none)");
      }
    } else if (a == "--payloads") {
      o.payloads = split(value());
      for (const std::string& p : o.payloads) {
        MOE_CHECK(p == "bf16" || p == "fp8", "--payloads: unknown payload '", p, "' (bf16, fp8)");
      }
    } else if (a == "--partials") {
      const std::string p = value();
      MOE_CHECK(p == "f32" || p == "act", "--partials: '", p, "' is not f32 or act");
      o.act_partials = p == "act";
    } else if (a == "--trace") {
      o.trace = true;
    } else if (a == "--no-baselines") {
      o.baselines = false;
    } else if (a == "--json") {
      o.json_path = value();
    } else {
      MOE_THROW("unknown option ", a, " (", kUsage, ")");
    }
  }
  return o;
}

int rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int ranks() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

double max_over_ranks(double v) {
  double m = 0;
  MPI_Allreduce(&v, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return m;
}

constexpr int kGraphReps = 16;  // calls per graph of the "graphx16" rows

/// Microseconds per call of `step` (slowest rank): warm-up, barrier, `iters` calls, sync.
double time_us(cudaStream_t stream, int iters, const std::function<void()>& step) {
  for (int i = 0; i < 3; ++i) step();
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  MPI_Barrier(MPI_COMM_WORLD);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) step();
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  return max_over_ranks(us / iters);
}

Device gpu() {
  int d = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&d));
  return Device::cuda(d);
}

Tensor device_copy(const Tensor& host) {
  Tensor t = Tensor::empty(host.shape(), host.dtype(), gpu());
  MOE_CUDA_CHECK(cudaMemcpy(t.data(), host.data(), host.nbytes(), cudaMemcpyHostToDevice));
  return t;
}

struct Row {
  std::string strategy, payload, mode;
  int64_t tokens = 0;
  double dispatch_us = 0, combine_us = 0, total_us = 0, dispatch_gbps = 0;
};

void print_header() {
  std::printf("%-26s %-11s %-8s %7s %12s %12s %12s %14s\n", "operation", "payload", "mode",
              "tokens", "dispatch us", "combine us", "total us", "dispatch GB/s");
}

void print_row(const Row& r) {
  std::printf("%-26s %-11s %-8s %7lld %12.1f %12.1f %12.1f %14.1f\n", r.strategy.c_str(),
              r.payload.c_str(), r.mode.c_str(), static_cast<long long>(r.tokens), r.dispatch_us,
              r.combine_us, r.total_us, r.dispatch_gbps);
}

/// Rows measured so far; rank 0 prints each as it comes (a later fault keeps them).
class Results {
 public:
  explicit Results(bool print) : print_(print) {
    if (print_) {
      std::printf("rows as measured:\n");
      print_header();
      std::fflush(stdout);
    }
  }
  void add(const Row& r) {
    rows_.push_back(r);
    if (print_) {
      print_row(r);
      std::fflush(stdout);
    }
  }
  const std::vector<Row>& rows() const { return rows_; }

 private:
  bool print_;
  std::vector<Row> rows_;
};

/// --trace: the median of each phase of one_sided's recorded chunks, in us from the
/// dispatch's start (the count kernel's when there is one); every rank prints its line,
/// in rank order.
void print_trace(const std::string& label) {
  using ep::TraceRecord;
  const std::vector<TraceRecord> records = ep::one_sided_trace_read();
  struct Phase {
    const char* name;
    int field;  // -1: the next chunk's start after this gather's end
  };
  const Phase phases[] = {{"entered", ep::kTraceDispatchEntry},
                          {"waited", ep::kTraceDispatchWaited},
                          {"masked", ep::kTraceMasked},
                          {"count kernel done", ep::kTracePrepareEnd},
                          {"planned", ep::kTracePlanned},
                          {"rows", ep::kTraceRowsDone},
                          {"counted", ep::kTraceCounted},
                          {"dispatched", ep::kTraceDispatchEnd},
                          {"gather entered", ep::kTraceGatherEntry},
                          {"gather start", ep::kTraceGatherStart},
                          {"barrier", ep::kTraceGatherBarrier},
                          {"gathered", ep::kTraceGatherEnd},
                          {"next start (gap)", -1}};
  auto start_of = [](const TraceRecord& r) {
    return r.t[ep::kTracePrepareStart] != 0 ? r.t[ep::kTracePrepareStart]
                                            : r.t[ep::kTraceDispatchStart];
  };
  std::ostringstream line;
  line << "trace rank " << rank() << " " << label << ":";
  for (const Phase& phase : phases) {
    std::vector<double> us;
    for (size_t i = 0; i < records.size(); ++i) {
      const TraceRecord& r = records[i];
      const uint64_t start = start_of(r);
      if (start == 0 || r.t[ep::kTraceGatherEnd] == 0) continue;
      if (phase.field >= 0) {
        if (r.t[phase.field] != 0) us.push_back((double(r.t[phase.field]) - double(start)) / 1e3);
      } else {
        const TraceRecord& next = records[(i + 1) % records.size()];
        if (start_of(next) > r.t[ep::kTraceGatherEnd]) {
          us.push_back((double(start_of(next)) - double(r.t[ep::kTraceGatherEnd])) / 1e3);
        }
      }
    }
    if (us.empty()) continue;
    std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
    char buf[64];
    std::snprintf(buf, sizeof(buf), " %s %.2f", phase.name, us[us.size() / 2]);
    line << buf;
  }
  for (int r = 0; r < ranks(); ++r) {
    if (r == rank()) std::printf("%s\n", line.str().c_str());
    std::fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

/// Routing of `tokens` tokens of this rank: DeepSeek-V3 on random logits.
void route(const MoeConfig& config, int64_t tokens, Tensor& ids, Tensor& weights) {
  Tensor logits = Tensor::empty({tokens, config.num_experts}, DType::kF32);
  fill_normal(logits, stream_id(17, rank(), tokens));
  Tensor bias = Tensor::empty({config.num_experts}, DType::kF32);
  fill_normal(bias, stream_id(17, 99), 0.1f);
  ids = Tensor::empty({tokens, config.top_k}, DType::kI32);
  weights = Tensor::empty({tokens, config.top_k}, DType::kF32);
  route_cpu(config.routing, config.top_k, logits,
            config.routing.has_correction_bias ? bias.view() : TensorView(), ids, weights);
}

int run(const Options& o) {
  MOE_CHECK(!o.trace || ep::one_sided_trace_compiled(),
            "--trace needs a build with the CMake option MOE_COMM_TRACE=ON");
  const int me = rank(), n = ranks();
  MOE_CHECK(n >= 2, "run under mpirun with 2 or more ranks (one GPU each)");
  MOE_CUDA_CHECK(cudaSetDevice(0));
  cudaStream_t stream = nullptr;
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  MoeConfig base = preset("deepseek-v3");
  if (o.act_partials) base.ep_partial_dtype = base.act_dtype;
  const int64_t hidden = base.hidden_size;

  Results results(me == 0);
  // NCCL's own operations, on a communicator of their own.
  ncclUniqueId id{};
  if (me == 0) ncclGetUniqueId(&id);
  MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
  ncclComm_t nccl = nullptr;
  MOE_NCCL_CHECK(ncclCommInitRank(&nccl, n, id, me));
  if (o.baselines) {
    Tensor ping = Tensor::empty({1}, DType::kI32, gpu());
    const int peer = me ^ 1;
    const double rtt = time_us(stream, 200, [&] {
      if (me >= 2) return;
      if (me == 0) {
        MOE_NCCL_CHECK(ncclSend(ping.data(), 1, ncclInt32, peer, nccl, stream));
        MOE_NCCL_CHECK(ncclRecv(ping.data(), 1, ncclInt32, peer, nccl, stream));
      } else {
        MOE_NCCL_CHECK(ncclRecv(ping.data(), 1, ncclInt32, peer, nccl, stream));
        MOE_NCCL_CHECK(ncclSend(ping.data(), 1, ncclInt32, peer, nccl, stream));
      }
    });
    results.add({"nccl send/recv ping-pong", "4 B", "one-way", 0, rtt / 2, 0, rtt / 2, 0});
  }

  for (int64_t tokens : o.tokens) {
    MoeConfig config = base;
    config.max_num_tokens = static_cast<int>(tokens * n);
    Tensor ids_h, weights_h;
    route(config, tokens, ids_h, weights_h);
    const SendPlan plan = plan_send(ids_h, {config.num_experts, n});
    const int64_t rows_out = plan.num_rows() - plan.counts[me];  // rows leaving this rank
    const Tensor ids = device_copy(ids_h), weights = device_copy(weights_h);

    // NCCL all-to-all of T bf16 rows per peer, twice (dispatch + combine).
    if (o.baselines) {
      const size_t count = static_cast<size_t>(tokens * hidden);
      Tensor send = Tensor::empty({static_cast<int64_t>(count) * n}, DType::kBF16, gpu());
      Tensor recv = Tensor::empty({static_cast<int64_t>(count) * n}, DType::kBF16, gpu());
      const double one = time_us(stream, o.iters, [&] {
        MOE_NCCL_CHECK(ncclAlltoAll(send.data(), recv.data(), count, ncclBfloat16, nccl, stream));
      });
      const double gbps = count * 2.0 * (n - 1) / (one * 1e-6) / 1e9;
      results.add({"nccl ncclAlltoAll", "bf16", "x2", tokens, one, one, 2 * one, gbps});
    }

    for (const std::string& strategy : o.strategies) {
      for (const std::string& payload : o.payloads) {
        const bool fp8 = payload == "fp8";
        auto comm = make_nccl_communication(strategy, config, Mapping{n, me});
        const Capability cap = comm->is_platform_supported();
        if (!cap) {
          if (me == 0) std::printf("skipping %s: %s\n", strategy.c_str(), cap.reason.c_str());
          break;
        }
        // Names the strategy, payload and size in the error of any step below.
        try {
          comm->initialize();
          Tensor data_h = Tensor::empty({tokens, hidden}, fp8 ? DType::kE4M3 : DType::kBF16);
          std::fill_n(static_cast<uint8_t*>(data_h.data()), data_h.nbytes(), uint8_t{0x3c});
          Tensor scales_h = Tensor::empty({tokens, (hidden + 127) / 128}, DType::kF32);
          std::fill_n(scales_h.data_as<float>(), scales_h.numel(), 1.0f);
          const Tensor data = device_copy(data_h), scales = device_copy(scales_h);
          Tensor out = Tensor::empty({tokens, hidden}, DType::kBF16, gpu());
          const QuantizedInput x{data, fp8 ? scales.view() : TensorView()};
          const RoutingView routing{ids, weights};
          DispatchResult d;
          auto dispatch = [&] {
            comm->prepare_dispatch(routing, stream);
            d = comm->dispatch(x, routing, out, stream);
          };
          auto pair = [&] {
            dispatch();
            comm->combine(d.expert_out, out, stream);
          };
          const size_t row_bytes = data_h.nbytes() / std::max<int64_t>(tokens, 1) +
                                   (fp8 ? scales_h.nbytes() / std::max<int64_t>(tokens, 1) : 0) +
                                   config.top_k * 8;
          const bool all_tokens = strategy == "allgather_reducescatter";
          const double bytes = static_cast<double>(all_tokens ? tokens * (n - 1) : rows_out) *
                               static_cast<double>(row_bytes);
          auto record = [&](const char* mode, double t_dispatch, double t_total) {
            results.add({strategy, fp8 ? "fp8+scales" : "bf16", mode, tokens, t_dispatch,
                         t_total - t_dispatch, t_total, bytes / (t_dispatch * 1e-6) / 1e9});
          };
          record("eager", time_us(stream, o.iters, dispatch), time_us(stream, o.iters, pair));
          if (strategy == "one_sided") {
            // `reps` calls of `body` captured in one graph: us per call.
            auto replay = [&](const std::function<void()>& body, int reps) {
              cudaGraph_t graph = nullptr;
              cudaGraphExec_t exec = nullptr;
              MOE_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
              for (int r = 0; r < reps; ++r) body();
              MOE_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
              MOE_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
              const int launches = std::max(o.iters / reps, 3);
              const double us =
                  time_us(stream, launches, [&] { MOE_CUDA_CHECK(cudaGraphLaunch(exec, stream)); });
              cudaGraphExecDestroy(exec);
              cudaGraphDestroy(graph);
              return us / reps;
            };
            const double graph_dispatch = replay(dispatch, 1);
            if (o.trace) ep::one_sided_trace_reset();
            const double graph_pair = replay(pair, 1);
            record("graph", graph_dispatch, graph_pair);
            if (o.trace) {
              print_trace(std::string(fp8 ? "fp8" : "bf16") + " " + std::to_string(tokens) +
                          " tokens (graph, us from the dispatch's start)");
            }
            // As inside a model's forward graph: kGraphReps calls back to back in one graph
            // (no graph launch between them).
            record("graphx16", replay(dispatch, kGraphReps), replay(pair, kGraphReps));
          }
        } catch (const Error& e) {
          MOE_THROW(strategy, " with ", payload, " payloads at ", tokens,
                    " tokens per rank: ", e.message());
        }
      }
    }
  }
  ncclCommDestroy(nccl);
  MOE_CUDA_CHECK(cudaStreamDestroy(stream));

  if (me != 0) return 0;
  std::printf("\n");
  print_header();
  nlohmann::json doc = {{"ranks", n},
                        {"hidden", hidden},
                        {"top_k", base.top_k},
                        {"experts", base.num_experts},
                        {"partials", dtype_name(base.ep_partial_dtype)},
                        {"rows", nlohmann::json::array()}};
  for (const Row& r : results.rows()) {
    print_row(r);
    doc["rows"].push_back({{"operation", r.strategy},
                           {"payload", r.payload},
                           {"mode", r.mode},
                           {"tokens_per_rank", r.tokens},
                           {"dispatch_us", r.dispatch_us},
                           {"combine_us", r.combine_us},
                           {"total_us", r.total_us},
                           {"dispatch_gb_per_s", r.dispatch_gbps}});
  }
  std::printf("\n%s\n", doc.dump(2).c_str());
  if (!o.json_path.empty()) std::ofstream(o.json_path) << doc.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  // One GPU per rank: each rank sees only GPU local_rank (its device 0). Before MPI_Init.
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  if (local != nullptr && std::getenv("CUDA_VISIBLE_DEVICES") == nullptr) {
    setenv("CUDA_VISIBLE_DEVICES", local, 1);
  }
  MPI_Init(&argc, &argv);
  int code = 1;
  try {
    code = moe::run(moe::parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return code;
}
