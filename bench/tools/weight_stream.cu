// The decode GEMMs' weight stream alone, on an sm_90a GPU (bench/NOTES.md, thirteenth
// session): how fast the grouped kernel's TMA boxes of weights -- 128 weight rows x 128 bytes
// of K, one per stage -- come in from DRAM at one token, with nothing computed, so that the
// FC1 / FC2 times of the decode layer can be set against what their bytes alone take.
//
// Each CTA takes work units (an expert's 128-row weight tile, all its K blocks) in the grouped
// kernel's order (unit u: expert slot u / n_tiles, tile u % n_tiles; CTA c takes c, c + grid,
// ...); one thread keeps `stages` 16 KB boxes in flight through an mbarrier ring. The experts
// of each launch are drawn afresh from a 6 GB pool, and L2 is emptied before each launch by
// 120 MB of traffic:
//   L2 dirty  : cudaMemset of the 120 MB (the benchmark's flush up to v2.11): the launch also
//               writes back the dirty lines its reads evict;
//   L2 clean  : a read of them (moe bench --l2-flush clean, the default from v2.12).
// Layouts: row-major W [experts, n, k] (3D map, box {128 B, 128 rows, 1}: each box 128 rows
// at a stride of k bytes, what the fp8 quant methods store) and tiled W [experts, n / 128,
// k / 128, 128, 128 B] (each box 16 KB contiguous, same shared-memory image).
// Output per shape: one launch's per-CTA timeline (start, first box in, end); per variant the
// launches' median in-kernel time (globaltimer, first CTA's start to last CTA's end), the
// TB/s it implies, and the median event time. WEIGHT_STREAM_PAIR=1 adds FC1 then FC2 back to
// back, with and without FC1 prefetching FC2's weights into L2 (cp.async.bulk.prefetch.L2).
// WEIGHT_STREAM_CLUSTER=1 runs instead each decode shape's grid launched as single CTAs and as
// 2-CTA clusters (the kernel the same: each CTA streams its own units), launches alternated,
// L2 clean, with the SMs each launch's CTAs ran on (%smid): whether a cluster launch alone
// slows the stream (bench/NOTES.md, twenty-third session).
// Usage: weight_stream
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "backends/grouped/sm90_ptx.cuh"
#include "tool_check.h"
#include "tool_kernels.cuh"

namespace {

constexpr size_t kEvictBytes = size_t{120} << 20;

constexpr int kMaxStages = 13;
constexpr int kBox = 128 * 128;
constexpr int kMaxActive = 8;

struct Launch {
  int experts[kMaxActive];
  int active;
  int n_tiles;
  int k_blocks;
  int stages;
  unsigned long long* span;  // [2]: min start, max end (ns)
  unsigned long long* cta;   // per CTA: start, first box in, end (ns); null: not recorded
  unsigned* smid;            // per CTA: the SM it ran on; null: not recorded
  // The next GEMM's weights to prefetch into L2 meanwhile (pf_bytes 0: none): each of the
  // active experts' pf_bytes from pf_base + expert * pf_bytes, in pf_chunk pieces spread
  // over the CTAs, issued once the CTA's first `stages` boxes are out.
  const uint8_t* pf_base;
  long long pf_bytes;
  int pf_chunk;
};

__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
}

__device__ void prefetch_share(const Launch& p) {
  if (p.pf_bytes == 0) return;
  const long long chunks_per_expert = p.pf_bytes / p.pf_chunk;
  const long long chunks = chunks_per_expert * p.active;
  for (long long c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int expert = p.experts[c / chunks_per_expert];
    prefetch_l2(p.pf_base + expert * p.pf_bytes + (c % chunks_per_expert) * p.pf_chunk, p.pf_chunk);
  }
}

__device__ __forceinline__ unsigned long long globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

template <bool kTiled>
__global__ void __launch_bounds__(32, 1)
    stream_weights(const __grid_constant__ CUtensorMap map, const Launch p) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem =
      reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  __shared__ uint64_t bar[kMaxStages];
  if (threadIdx.x != 0) return;
  const unsigned long long t0 = globaltimer();
  for (int i = 0; i < p.stages; ++i) moe::sm90::mbar_init(&bar[i], 1);
  moe::sm90::fence_barrier_init();
  const int units = p.active * p.n_tiles;
  int slot = 0;
  uint32_t phase = 0;
  int issued = 0;
  for (int u = blockIdx.x; u < units; u += gridDim.x) {
    const int expert = p.experts[u / p.n_tiles];
    const int tile = u % p.n_tiles;
    for (int kb = 0; kb < p.k_blocks; ++kb) {
      if (issued >= p.stages) {
        moe::sm90::mbar_wait(&bar[slot], phase ^ 1);
        if (issued == p.stages && p.cta) p.cta[blockIdx.x * 3 + 1] = globaltimer();
      }
      moe::sm90::mbar_arrive_expect_tx(&bar[slot], kBox);
      if constexpr (kTiled) {
        moe::sm90::tma_load_3d(smem + slot * kBox, &map, &bar[slot], 0,
                               (tile * p.k_blocks + kb) * 128, expert);
      } else {
        moe::sm90::tma_load_3d(smem + slot * kBox, &map, &bar[slot], kb * 128, tile * 128, expert);
      }
      ++issued;
      if (issued == p.stages) prefetch_share(p);
      if (++slot == p.stages) {
        slot = 0;
        phase ^= 1;
      }
    }
  }
  if (issued < p.stages) prefetch_share(p);
  // Drain: box i sits in slot i % stages, in phase (i / stages) & 1.
  for (int i = issued > p.stages ? issued - p.stages : 0; i < issued; ++i) {
    moe::sm90::mbar_wait(&bar[i % p.stages], (i / p.stages) & 1);
    if (i == 0 && p.cta) p.cta[blockIdx.x * 3 + 1] = globaltimer();
  }
  if (p.smid) {
    unsigned id;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
    p.smid[blockIdx.x] = id;
  }
  if (p.cta) {
    p.cta[blockIdx.x * 3] = t0;
    p.cta[blockIdx.x * 3 + 2] = globaltimer();
  }
  atomicMin(&p.span[0], t0);
  atomicMax(&p.span[1], globaltimer());
}

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

CUtensorMap encode3d(void* base, const cuuint64_t (&dims)[3], const cuuint64_t (&strides)[2],
                     CUtensorMapL2promotion promotion) {
  static EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                           &q));
    if (q != cudaDriverEntryPointSuccess || !f) std::exit(1);
    return reinterpret_cast<EncodeTiled>(f);
  }();
  CUtensorMap map{};
  const cuuint32_t box[3] = {128, 128, 1};
  const cuuint32_t elem[3] = {1, 1, 1};
  const CUresult r = fn(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, base, dims, strides, box, elem,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, promotion,
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "cuTensorMapEncodeTiled: %d\n", static_cast<int>(r));
    std::exit(1);
  }
  return map;
}

__global__ void fill(uint32_t* p, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    p[i] = static_cast<uint32_t>(i * 2654435761u) & 0x77777777u;  // finite e4m3 codes
  }
}

// Evicts L2 before a launch: writing 120 MB (as the bench's flush does: L2 left full of dirty
// lines that the next kernel's reads write back) or reading it (clean lines).
void evict_l2(uint8_t* evict, int rep, bool by_reading) {
  if (by_reading) {  // read_all (tool_kernels.cuh): L2 left holding clean lines
    read_all<<<132 * 4, 512>>>(reinterpret_cast<const uint4*>(evict), kEvictBytes / 16,
                               reinterpret_cast<uint32_t*>(evict));
    CHECK(cudaGetLastError());
  } else {
    CHECK(cudaMemsetAsync(evict, rep & 0x7f, kEvictBytes));
  }
}

struct Geometry {
  const char* name;
  int n, k;  // per expert
  int active;
};

// Bytes one launch streams: every active expert's 128-row tiles, all their K boxes.
double stream_bytes(const Geometry& g) {
  return static_cast<double>(g.active) * (g.n / 128) * (g.k / 128) * kBox;
}

CUtensorMap weight_map(uint8_t* pool, const Geometry& g, int pool_experts, bool tiled) {
  const size_t expert_bytes = size_t{1} * g.n * g.k;
  if (tiled) {
    const cuuint64_t dims[3] = {128, static_cast<cuuint64_t>(g.n) * (g.k / 128),
                                static_cast<cuuint64_t>(pool_experts)};
    const cuuint64_t strides[2] = {128, expert_bytes};
    return encode3d(pool, dims, strides, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
  }
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(g.k), static_cast<cuuint64_t>(g.n),
                              static_cast<cuuint64_t>(pool_experts)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(g.k), expert_bytes};
  return encode3d(pool, dims, strides, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

Launch make_launch(const Geometry& g, const std::vector<int>& experts, int stages,
                   unsigned long long* span) {
  Launch p{};
  for (int i = 0; i < g.active; ++i) p.experts[i] = experts[i];
  p.active = g.active;
  p.n_tiles = g.n / 128;
  p.k_blocks = g.k / 128;
  p.stages = stages;
  p.span = span;
  return p;
}

// One CTA a unit up to 132 (cluster 2: the same grid, rounded up to even, as 2-CTA clusters).
int grid_for(const Launch& p, int cluster) {
  const int grid = std::min(p.active * p.n_tiles, 132);
  return (grid + cluster - 1) / cluster * cluster;
}

void launch(const CUtensorMap& map, const Launch& p, bool tiled, int cluster = 1) {
  auto kernel = tiled ? stream_weights<true> : stream_weights<false>;
  const int smem = 1024 + p.stages * kBox;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  if (cluster == 1) {
    kernel<<<grid_for(p, 1), 32, smem>>>(map, p);
  } else {
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(grid_for(p, cluster));
    config.blockDim = dim3(32);
    config.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cluster;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    config.attrs = attr;
    config.numAttrs = 1;
    CHECK(cudaLaunchKernelEx(&config, kernel, map, p));
  }
  CHECK(cudaGetLastError());
}

void reset_spans(unsigned long long* span, int n) {
  std::vector<unsigned long long> init(2 * n);
  for (int i = 0; i < n; ++i) init[2 * i] = ~0ull, init[2 * i + 1] = 0;
  CHECK(cudaMemcpy(span, init.data(), init.size() * 8, cudaMemcpyHostToDevice));
}

std::vector<unsigned long long> read_spans(const unsigned long long* span, int n) {
  std::vector<unsigned long long> got(2 * n);
  CHECK(cudaMemcpy(got.data(), span, got.size() * 8, cudaMemcpyDeviceToHost));
  return got;
}

/// Events around what `enqueue` puts on the stream; time() waits for it and returns its
/// milliseconds and the n [start, end] spans the kernels wrote (reset first).
struct Timer {
  cudaEvent_t a, b;
  Timer() {
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  template <class Enqueue>
  std::pair<float, std::vector<unsigned long long>> time(unsigned long long* span, int n,
                                                         Enqueue&& enqueue) {
    CHECK(cudaEventRecord(a));
    enqueue();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    return {ms, read_spans(span, n)};
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Per-CTA start / first box in / end of one launch, relative to the first CTA's start: where
// the time goes (the launch's spread, the first box's latency, the tail).
void timeline(const Geometry& g, const unsigned long long* cta_times, int grid) {
  std::vector<unsigned long long> t(3 * grid);
  CHECK(cudaMemcpy(t.data(), cta_times, t.size() * 8, cudaMemcpyDeviceToHost));
  unsigned long long t0 = ~0ull;
  for (int c = 0; c < grid; ++c) t0 = std::min(t0, t[3 * c]);
  std::vector<double> start, first, end;
  for (int c = 0; c < grid; ++c) {
    start.push_back((t[3 * c] - t0) / 1e3);
    first.push_back((t[3 * c + 1] - t0) / 1e3);
    end.push_back((t[3 * c + 2] - t0) / 1e3);
  }
  auto pct = [](std::vector<double> v, double q) {
    std::sort(v.begin(), v.end());
    return v[static_cast<size_t>(q * (v.size() - 1))];
  };
  std::printf(
      "%-18s timeline (us from the first CTA's start; min / median / max over %d CTAs): start "
      "%.2f / %.2f / %.2f  first box in %.2f / %.2f / %.2f  end %.2f / %.2f / %.2f\n",
      g.name, grid, pct(start, 0), pct(start, 0.5), pct(start, 1), pct(first, 0), pct(first, 0.5),
      pct(first, 1), pct(end, 0), pct(end, 0.5), pct(end, 1));
}

void run(const Geometry& g, uint8_t* pool, size_t pool_bytes, uint8_t* evict,
         unsigned long long* span, unsigned long long* cta_times) {
  const size_t expert_bytes = size_t{1} * g.n * g.k;
  const int pool_experts = static_cast<int>(pool_bytes / expert_bytes);
  const int units = g.active * (g.n / 128);
  const int reps = 40;
  std::mt19937 rng(1234);
  std::vector<int> all(pool_experts);
  std::iota(all.begin(), all.end(), 0);
  for (int variant = 0; variant < 4; ++variant) {
    const bool tiled = variant == 1;
    const bool read_evict = variant >= 2;
    const int stages = variant == 3 ? 4 : 8;
    const CUtensorMap map = weight_map(pool, g, pool_experts, tiled);
    std::vector<double> ns, ev;
    Timer t;
    for (int rep = 0; rep < reps + 2; ++rep) {
      std::shuffle(all.begin(), all.end(), rng);
      reset_spans(span, 1);
      evict_l2(evict, rep, read_evict);
      Launch p = make_launch(g, all, stages, span);
      if (variant == 0 && rep == reps + 1) p.cta = cta_times;
      const auto [ms, got] = t.time(span, 1, [&] { launch(map, p, tiled); });
      if (rep >= 2) {
        ns.push_back(static_cast<double>(got[1] - got[0]));
        ev.push_back(ms * 1e6);
      }
    }
    if (variant == 0) timeline(g, cta_times, std::min(units, 132));
    const double med = median(ns);
    const double bytes = stream_bytes(g);
    std::printf(
        "%-18s %-9s %-8s stages %2d grid %3d %6.1f MB  in-kernel %7.2f us  %5.2f TB/s  event "
        "%7.2f us\n",
        g.name, tiled ? "tiled" : "row-major", read_evict ? "L2 clean" : "L2 dirty", stages,
        std::min(units, 132), bytes / 1e6, med / 1e3, bytes / med / 1e3, median(ev) / 1e3);
  }
}

// The shape's grid as single CTAs and as 2-CTA clusters, launches alternated (L2 clean,
// row-major, 8 stages): the in-kernel times, and for one launch of each the per-CTA timeline
// and where the CTAs ran (distinct SMs, and TPCs -- SM pairs 2i, 2i + 1 -- holding two).
void run_cluster(const Geometry& g, uint8_t* pool, size_t pool_bytes, uint8_t* evict,
                 unsigned long long* span, unsigned long long* cta_times, unsigned* smid) {
  const size_t expert_bytes = size_t{1} * g.n * g.k;
  const int pool_experts = static_cast<int>(pool_bytes / expert_bytes);
  const CUtensorMap map = weight_map(pool, g, pool_experts, false);
  std::mt19937 rng(4321);
  std::vector<int> all(pool_experts);
  std::iota(all.begin(), all.end(), 0);
  const int reps = 40;
  std::vector<double> ns[2];
  Timer t;
  for (int rep = 0; rep < 2 * reps + 4; ++rep) {
    const int mode = rep & 1;  // 0: single CTAs, 1: 2-CTA clusters
    std::shuffle(all.begin(), all.end(), rng);
    reset_spans(span, 1);
    evict_l2(evict, rep, /*by_reading=*/true);
    Launch p = make_launch(g, all, 8, span);
    const bool record = rep >= 2 * reps + 2;
    if (record) {
      p.cta = cta_times;
      p.smid = smid;
    }
    const auto [ms, got] = t.time(span, 1, [&] { launch(map, p, false, mode ? 2 : 1); });
    if (rep >= 2 && !record) ns[mode].push_back(static_cast<double>(got[1] - got[0]));
    if (record) {
      const int grid = grid_for(p, mode ? 2 : 1);
      std::vector<unsigned> id(grid);
      CHECK(cudaMemcpy(id.data(), smid, grid * 4, cudaMemcpyDeviceToHost));
      std::vector<int> per_sm(1024, 0);
      for (unsigned i : id) ++per_sm[std::min(i, 1023u)];
      int sms = 0, tpc_pairs = 0;
      for (int i = 0; i < 1024; ++i) sms += per_sm[i] > 0;
      for (int i = 0; i + 1 < 1024; i += 2) tpc_pairs += per_sm[i] > 0 && per_sm[i + 1] > 0;
      std::printf("%-18s %-8s grid %3d: %3d distinct SMs, %2d TPCs (SMs 2i, 2i+1) holding two; ",
                  g.name, mode ? "clusters" : "CTAs", grid, sms, tpc_pairs);
      timeline(g, cta_times, grid);
    }
  }
  const double bytes = stream_bytes(g);
  for (int mode = 0; mode < 2; ++mode) {
    std::printf("%-18s %-8s %6.1f MB  in-kernel %7.2f us  %5.2f TB/s\n", g.name,
                mode ? "clusters" : "CTAs", bytes / 1e6, median(ns[mode]) / 1e3,
                bytes / median(ns[mode]) / 1e3);
  }
}

// FC1 then FC2 back to back (the same experts), with and without FC1 prefetching FC2's
// weights into L2 (alternated launch by launch): whether FC2's stream can ride on FC1's.
void run_pair(const Geometry& g1, const Geometry& g2, uint8_t* pool, size_t pool_bytes,
              uint8_t* evict, unsigned long long* span, int pf_chunk) {
  const size_t b1 = size_t{1} * g1.n * g1.k, b2 = size_t{1} * g2.n * g2.k;
  const int pool_experts = static_cast<int>(pool_bytes / (b1 + b2));
  uint8_t* pool2 = pool + pool_experts * b1;
  const CUtensorMap m1 = weight_map(pool, g1, pool_experts, false);
  const CUtensorMap m2 = weight_map(pool2, g2, pool_experts, false);
  std::mt19937 rng(99);
  std::vector<int> all(pool_experts);
  std::iota(all.begin(), all.end(), 0);
  const int reps = 40;
  std::vector<double> fc1[2], fc2[2], total[2], ev[2];
  Timer t;
  for (int rep = 0; rep < 2 * reps + 2; ++rep) {
    const int pf = rep & 1;
    std::shuffle(all.begin(), all.end(), rng);
    reset_spans(span, 2);
    evict_l2(evict, rep, /*by_reading=*/false);
    Launch p1 = make_launch(g1, all, 8, span);
    if (pf) {
      p1.pf_base = pool2;
      p1.pf_bytes = static_cast<long long>(b2);
      p1.pf_chunk = pf_chunk;
    }
    const auto [ms, got] = t.time(span, 2, [&] {
      launch(m1, p1, false);
      launch(m2, make_launch(g2, all, 8, span + 2), false);
    });
    if (rep >= 2) {
      fc1[pf].push_back(static_cast<double>(got[1] - got[0]));
      fc2[pf].push_back(static_cast<double>(got[3] - got[2]));
      total[pf].push_back(static_cast<double>(got[3] - got[0]));
      ev[pf].push_back(ms * 1e6);
    }
  }
  for (int pf = 0; pf < 2; ++pf) {
    std::printf(
        "%-18s + fc2 %s (chunk %3d KB): fc1 %7.2f us  fc2 %7.2f us  fc1 start to fc2 end "
        "%7.2f us  event %7.2f us\n",
        g1.name, pf ? "prefetched by fc1" : "on its own       ", pf_chunk >> 10,
        median(fc1[pf]) / 1e3, median(fc2[pf]) / 1e3, median(total[pf]) / 1e3,
        median(ev[pf]) / 1e3);
  }
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  if (prop.major != 9) {
    std::printf("weight_stream: skipped, needs an sm_90 GPU (found sm_%d%d)\n", prop.major,
                prop.minor);
    return 0;
  }
  const int sms = prop.multiProcessorCount;
  const size_t pool_bytes = size_t{6} << 30;
  uint8_t* pool = nullptr;
  uint8_t* evict = nullptr;
  CHECK(cudaMalloc(&pool, pool_bytes));
  CHECK(cudaMalloc(&evict, kEvictBytes));
  fill<<<sms * 8, 256>>>(reinterpret_cast<uint32_t*>(pool), pool_bytes / 4);
  CHECK(cudaGetLastError());
  unsigned long long* span = nullptr;
  CHECK(cudaMalloc(&span, 64));
  unsigned long long* cta_times = nullptr;
  CHECK(cudaMalloc(&cta_times, 3 * 8 * 1024));
  std::printf("weight_stream on %s (%d SMs)\n", prop.name, sms);
  const Geometry q1{"qwen3 fc1 T=1", 1536, 2048, 8}, q2{"qwen3 fc2 T=1", 2048, 768, 8};
  const Geometry d1{"deepseek fc1 T=1", 4096, 7168, 8}, d2{"deepseek fc2 T=1", 7168, 2048, 8};
  if (std::getenv("WEIGHT_STREAM_CLUSTER")) {
    unsigned* smid = nullptr;
    CHECK(cudaMalloc(&smid, 4 * 1024));
    for (const Geometry& g : {q1, q2, d1}) {
      run_cluster(g, pool, pool_bytes, evict, span, cta_times, smid);
    }
    CHECK(cudaFree(smid));
  } else {
    for (const Geometry& g : {q1, q2, d1, d2}) run(g, pool, pool_bytes, evict, span, cta_times);
  }
  if (std::getenv("WEIGHT_STREAM_PAIR")) {
    for (int chunk : {16 << 10, 96 << 10}) {
      run_pair(q1, q2, pool, pool_bytes, evict, span, chunk);
    }
  }
  CHECK(cudaFree(span));
  CHECK(cudaFree(cta_times));
  CHECK(cudaFree(evict));
  CHECK(cudaFree(pool));
  return 0;
}
