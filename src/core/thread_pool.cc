#include "core/thread_pool.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace moe {

int cpu_num_threads() {
  static const int n = [] {
    if (const char* env = std::getenv("MOE_NUM_THREADS")) {
      const int v = std::atoi(env);
      if (v > 0) return v;
    }
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }();
  return n;
}

namespace {

// A pool of (cpu_num_threads() - 1) workers; the calling thread works too.
// NOTE: one parallel_for runs at a time (guarded by run_mutex_); nested calls from a worker
// or from the calling thread inside fn run serially.
class ThreadPool {
 public:
  ThreadPool() {
    const int workers = cpu_num_threads() - 1;
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { worker_loop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
    const int64_t chunks = std::min<int64_t>(max_chunks, static_cast<int64_t>(threads_.size()) + 1);
    if (chunks <= 1 || in_pool_) {
      fn(0, n);
      return;
    }
    std::unique_lock run_lock(run_mutex_, std::try_to_lock);
    if (!run_lock.owns_lock()) {  // another thread's parallel_for is running: go serial
      fn(0, n);
      return;
    }
    {
      std::lock_guard lock(mutex_);
      fn_ = &fn;
      n_ = n;
      num_chunks_ = chunks;
      next_chunk_ = 0;
      pending_ = chunks;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock lock(mutex_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void work() {
    in_pool_ = true;
    for (;;) {
      int64_t chunk;
      {
        std::lock_guard lock(mutex_);
        if (fn_ == nullptr || next_chunk_ >= num_chunks_) break;
        chunk = next_chunk_++;
      }
      const int64_t begin = n_ * chunk / num_chunks_;
      const int64_t end = n_ * (chunk + 1) / num_chunks_;
      try {
        (*fn_)(begin, end);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard lock(mutex_);
      if (--pending_ == 0) done_cv_.notify_all();
    }
    in_pool_ = false;
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::mutex run_mutex_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t num_chunks_ = 0;
  int64_t next_chunk_ = 0;
  int64_t pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  static thread_local bool in_pool_;
};

thread_local bool ThreadPool::in_pool_ = false;

}  // namespace

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  static ThreadPool pool;
  pool.run(n, grain, fn);
}

}  // namespace moe
