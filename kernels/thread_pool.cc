#include "kernels/thread_pool.h"

#include <atomic>
#include <chrono>
#include <exception>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace normserve {
namespace {

// How long a caller polls for its loop's last indices before it sleeps.
// They take about one index's time (a chunk of a batch: a few µs), while
// waking a sleeping thread costs 10-50 µs on a VM (an interrupt to the
// other vCPU), more than many batches take. Idle workers do not poll: in
// the server they would take CPU from the threads serving requests.
constexpr std::chrono::microseconds kSpin{100};

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls `ready()` until it holds or kSpin has passed; returns its value.
template <class Ready>
bool SpinUntil(const Ready& ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      CpuRelax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

// Runs fn(i); the exception it threw, or null.
std::exception_ptr RunIndex(const std::function<void(int64_t)>& fn, int64_t i) {
  try {
    fn(i);
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

}  // namespace

struct ThreadPool::Loop {
  const std::function<void(int64_t)>* fn = nullptr;
  int64_t n = 0;
  std::atomic<int64_t> next{0};  // next index to claim
  std::atomic<int64_t> done{0};  // indices run
  // The caller sleeps on `finished` once it has polled long enough; the
  // thread that runs the last index takes `mu` before notifying, so the
  // wake-up cannot fall between the caller's check and its wait.
  std::mutex mu;
  std::condition_variable finished;
  std::exception_ptr error;  // the first fn's exception, under mu
};

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 0; i < num_threads; ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::Drain(Loop* loop) {
  for (;;) {
    const int64_t i = loop->next.fetch_add(1);
    if (i >= loop->n) return;
    if (std::exception_ptr e = RunIndex(*loop->fn, i)) {
      // Counted as run: the loop ends, and its caller rethrows.
      std::lock_guard<std::mutex> lock(loop->mu);
      if (loop->error == nullptr) loop->error = e;
    }
    if (loop->done.fetch_add(1, std::memory_order_acq_rel) + 1 == loop->n) {
      std::lock_guard<std::mutex> lock(loop->mu);
      loop->finished.notify_all();
    }
  }
}

void ThreadPool::ParallelFor(int64_t n,
                             const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || threads_.empty()) {
    // On the caller alone, with the same promise: every index runs, then
    // the first exception is rethrown.
    std::exception_ptr error;
    for (int64_t i = 0; i < n; ++i) {
      std::exception_ptr e = RunIndex(fn, i);
      if (error == nullptr) error = e;
    }
    if (error != nullptr) std::rethrow_exception(error);
    return;
  }
  auto loop = std::make_shared<Loop>();
  loop->fn = &fn;
  loop->n = n;
  {
    std::lock_guard<std::mutex> lock(mu_);
    loops_.push_back(loop);
  }
  work_.notify_all();
  Drain(loop.get());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = loops_.begin(); it != loops_.end(); ++it) {
      if (it->get() == loop.get()) {
        loops_.erase(it);
        break;
      }
    }
  }
  auto all_done = [&] {
    return loop->done.load(std::memory_order_acquire) == loop->n;
  };
  if (!SpinUntil(all_done)) {
    std::unique_lock<std::mutex> lock(loop->mu);
    loop->finished.wait(lock, all_done);
  }
  std::lock_guard<std::mutex> lock(loop->mu);
  if (loop->error != nullptr) std::rethrow_exception(loop->error);
}

std::shared_ptr<ThreadPool::Loop> ThreadPool::LoopWithWork() {
  for (const auto& l : loops_) {
    if (l->next.load() < l->n) return l;
  }
  return nullptr;
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    std::shared_ptr<Loop> loop;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [&] {
        if (stopping_) return true;
        loop = LoopWithWork();
        return loop != nullptr;
      });
      if (loop == nullptr) return;  // stopping
    }
    Drain(loop.get());
  }
}

}  // namespace normserve
