// A fixed pool of threads for data-parallel loops.
//
// ParallelFor(n, fn) runs fn(0) ... fn(n - 1), each exactly once, on the
// pool's threads and the calling thread, and returns when all have run.
// Several threads may call ParallelFor at once: their loops share the same
// workers (first come, first served), so the number of threads computing
// never exceeds the pool size plus the number of callers. That is how the
// server avoids oversubscription when several batches run at once: size the
// pool as cores − (batch workers), or simply cores − 1 with one worker.
//
// A caller waiting for its loop's last indices polls for up to 100 µs before
// it sleeps (waking a thread costs more than a small batch takes).
//
// fn must not call ParallelFor on the same pool. If fn throws, the other
// indices still run (each exactly once), and ParallelFor rethrows the first
// exception once every index has run: the pool stays usable.
// Thread-safe. The destructor joins the workers; no ParallelFor may be
// running or start then (the server destroys its batcher, the pool's only
// caller, first).
#ifndef NORMSERVE_KERNELS_THREAD_POOL_H_
#define NORMSERVE_KERNELS_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace normserve {

class ThreadPool {
 public:
  // `num_threads` workers besides the callers; 0 is allowed (every loop
  // then runs on its caller).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void ParallelFor(int64_t n, const std::function<void(int64_t)>& fn);

  int num_threads() const { return static_cast<int>(threads_.size()); }

  // ---- Implementation details follow; API users need not read. ----
 private:
  struct Loop;
  void WorkerLoop();
  // Runs indices of `loop` until none are left to claim.
  static void Drain(Loop* loop);
  // The oldest loop with indices left to claim, or null. Requires mu_.
  std::shared_ptr<Loop> LoopWithWork();

  // std::mutex rather than absl::Mutex: ThreadSanitizer sees pthreads but
  // not Debian's uninstrumented Abseil.
  std::mutex mu_;
  std::condition_variable work_;
  // Loops that may have indices left to claim, oldest first. Guarded by mu_.
  std::deque<std::shared_ptr<Loop>> loops_;
  bool stopping_ = false;  // Guarded by mu_.
  std::vector<std::thread> threads_;
};

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_THREAD_POOL_H_
