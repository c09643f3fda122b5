// A fixed pool of worker threads for the CPU backends: parallel_for over an index range.
#pragma once

#include <cstdint>
#include <functional>

namespace moe {

/// Number of threads parallel_for uses: MOE_NUM_THREADS if set, else the hardware count.
int cpu_num_threads();

/// Calls fn(begin, end) on disjoint chunks covering [0, n), on the shared pool, and waits.
/// `grain` is the smallest chunk worth a thread. Exceptions thrown by fn are rethrown
/// (the first one) on the calling thread. Re-entrant calls from a worker run serially.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace moe
