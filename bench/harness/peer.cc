// time_peer_sets (peer.h).
#include "bench/harness/peer.h"

#include <numeric>
#include <vector>

#include "core/cuda_check.h"
#include "moe/errors.h"

namespace moe::bench {

void check_set_counts(const std::vector<int>& counts, int num_experts, int64_t routed_rows, int set,
                      const std::string& what) {
  MOE_CHECK(static_cast<int>(counts.size()) == num_experts, what, ": set ", set, " has ",
            counts.size(), " expert counts, expected ", num_experts);
  MOE_CHECK(std::accumulate(counts.begin(), counts.end(), int64_t{0}) == routed_rows, what,
            ": the counts of set ", set, " do not sum to T*k = ", routed_rows);
}

PeerTiming time_peer_sets(cudaStream_t stream, const TimingPlan& plan, int num_sets,
                          const std::function<std::string(int)>& enqueue, const std::string& what) {
  MOE_CHECK(num_sets >= 1, what, ": no input set");
  // Outside any capture first: the library picks its kernels and loads them.
  if (const std::string failed = enqueue(0); !failed.empty()) MOE_THROW(what, ": ", failed);
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream), what, ": warm-up");

  PeerTiming timing;
  std::vector<GraphExec> graphs;
  for (int s = 0; s < num_sets; ++s) {
    GraphExec g = try_capture_graph(
        stream,
        [&] {
          const std::string failed = enqueue(s);
          if (!failed.empty()) timing.why_no_graph = failed + " under capture";
          return failed.empty();
        },
        timing.why_no_graph);
    if (!g.valid()) {
      graphs.clear();
      break;
    }
    graphs.push_back(std::move(g));
  }
  timing.mode = graphs.empty() ? "stream" : "graph";
  if (!graphs.empty()) timing.why_no_graph.clear();

  timing.stats = summarize_times(time_launches(stream, plan, [&](int i) {
    const int s = i % num_sets;
    if (!graphs.empty()) {
      graphs[s].launch(stream);
    } else if (const std::string failed = enqueue(s); !failed.empty()) {
      MOE_THROW(what, ": ", failed);
    }
  }));
  return timing;
}

}  // namespace moe::bench
