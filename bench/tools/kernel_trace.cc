// A CUPTI injection library that writes every kernel's start and end (graph nodes too) to a
// CSV at exit: the GPU timeline of a decode layer's CUDA-graph replays where no Nsight Systems
// is installed (bench/NOTES.md, thirteenth session).
//   CUDA_INJECTION64_PATH=build/libkernel_trace.so KERNEL_TRACE_OUT=trace.csv moe bench ...
// Columns: start_ns, end_ns, graph_id, graph_node_id, grid, block, name. Summarise with
// scripts/kernel_timeline.py.
#include <cupti.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Record {
  uint64_t start, end, node;
  uint32_t graph;
  int grid, block;
  std::string name;
};

std::mutex g_mutex;
std::vector<Record> g_records;
constexpr size_t kBufferBytes = 8u << 20;

void check(CUptiResult r, const char* what) {
  if (r != CUPTI_SUCCESS) {
    const char* s = nullptr;
    cuptiGetResultString(r, &s);
    std::fprintf(stderr, "kernel_trace: %s failed: %s\n", what, s ? s : "?");
  }
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard<std::mutex> lock(g_mutex);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    g_records.push_back({k->start, k->end, k->graphNodeId, k->graphId,
                         k->gridX * k->gridY * k->gridZ, k->blockX * k->blockY * k->blockZ,
                         k->name ? k->name : "?"});
  }
  std::free(buffer);
}

void write_out() {
  check(cuptiActivityFlushAll(1), "cuptiActivityFlushAll");
  const char* path = std::getenv("KERNEL_TRACE_OUT");
  FILE* f = std::fopen(path ? path : "kernel_trace.csv", "w");
  if (!f) return;
  std::fprintf(f, "start_ns,end_ns,graph_id,graph_node_id,grid,block,name\n");
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const Record& r : g_records) {
    std::fprintf(f, "%llu,%llu,%u,%llu,%d,%d,\"%s\"\n", static_cast<unsigned long long>(r.start),
                 static_cast<unsigned long long>(r.end), r.graph,
                 static_cast<unsigned long long>(r.node), r.grid, r.block, r.name.c_str());
  }
  std::fclose(f);
}

}  // namespace

extern "C" int InitializeInjection(void) {
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable");
  check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed),
        "cuptiActivityRegisterCallbacks");
  std::atexit(write_out);
  return 1;
}
