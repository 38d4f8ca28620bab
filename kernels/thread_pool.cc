#include "kernels/thread_pool.h"

#include <atomic>

namespace normserve {

struct ThreadPool::Loop {
  const std::function<void(int64_t)>* fn;
  int64_t n;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  absl::Mutex mu;
  absl::CondVar finished;
};

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 0; i < num_threads; ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::Drain(Loop* loop) {
  for (;;) {
    const int64_t i = loop->next.fetch_add(1);
    if (i >= loop->n) return;
    (*loop->fn)(i);
    if (loop->done.fetch_add(1) + 1 == loop->n) {
      absl::MutexLock lock(&loop->mu);
      loop->finished.SignalAll();
    }
  }
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || threads_.empty()) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  auto loop = std::make_shared<Loop>();
  loop->fn = &fn;
  loop->n = n;
  {
    absl::MutexLock lock(&mu_);
    loops_.push_back(loop);
  }
  Drain(loop.get());
  {
    absl::MutexLock lock(&mu_);
    for (auto it = loops_.begin(); it != loops_.end(); ++it) {
      if (it->get() == loop.get()) {
        loops_.erase(it);
        break;
      }
    }
  }
  absl::MutexLock lock(&loop->mu);
  while (loop->done.load() < n) loop->finished.Wait(&loop->mu);
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    std::shared_ptr<Loop> loop;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        if (stopping_) return true;
        for (const auto& l : loops_) {
          if (l->next.load() < l->n) return true;
        }
        return false;
      };
      mu_.Await(absl::Condition(&has_work));
      for (const auto& l : loops_) {
        if (l->next.load() < l->n) {
          loop = l;
          break;
        }
      }
      if (loop == nullptr) return;  // stopping, nothing left
    }
    Drain(loop.get());
  }
}

}  // namespace normserve
