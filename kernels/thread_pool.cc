#include "kernels/thread_pool.h"

#include <atomic>

namespace normserve {

struct ThreadPool::Loop {
  const std::function<void(int64_t)>* fn = nullptr;
  int64_t n = 0;
  std::atomic<int64_t> next{0};  // next index to claim
  std::mutex mu;
  std::condition_variable finished;
  int64_t done = 0;  // indices run; guarded by mu
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
    (*loop->fn)(i);
    std::lock_guard<std::mutex> lock(loop->mu);
    if (++loop->done == loop->n) loop->finished.notify_all();
  }
}

void ThreadPool::ParallelFor(int64_t n,
                             const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || threads_.empty()) {
    for (int64_t i = 0; i < n; ++i) fn(i);
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
  std::unique_lock<std::mutex> lock(loop->mu);
  loop->finished.wait(lock, [&] { return loop->done == loop->n; });
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    std::shared_ptr<Loop> loop;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [&] {
        if (stopping_) return true;
        for (const auto& l : loops_) {
          if (l->next.load() < l->n) {
            loop = l;
            return true;
          }
        }
        return false;
      });
      if (loop == nullptr) return;  // stopping
    }
    Drain(loop.get());
  }
}

}  // namespace normserve
