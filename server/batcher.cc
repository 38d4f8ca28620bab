#include "server/batcher.h"

#include <algorithm>
#include <utility>

#include "server/internal/batch_queues.h"

namespace normserve {

Clock* Clock::Real() {
  class RealClock : public Clock {
   public:
    absl::Time Now() override { return absl::Now(); }
  };
  static RealClock* const clock = new RealClock;
  return clock;
}

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(Options options) {
  if (options.num_workers <= 0) {
    return absl::InvalidArgumentError("batcher num_workers must be > 0");
  }
  if (!options.runner) {
    return absl::InvalidArgumentError("batcher runner is required");
  }
  return std::unique_ptr<Batcher>(new Batcher(std::move(options)));
}

Batcher::Batcher(Options options)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : Clock::Real()),
      queues_(
          std::make_unique<internal::BatchQueues>(options_.max_queued_bytes)) {
  workers_.reserve(static_cast<size_t>(options_.num_workers));
  for (int i = 0; i < options_.num_workers; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

Batcher::~Batcher() { Stop(); }

namespace {

// Answers the jobs found expired or cancelled in the queues at `now`.
void AnswerDropped(internal::BatchQueues::Popped& popped, absl::Time now) {
  for (auto& job : popped.expired) {
    job->done(absl::DeadlineExceededError(
                  "deadline passed while the request was queued"),
              JobTimings{now - job->enqueue_time, absl::ZeroDuration()});
  }
  for (auto& job : popped.cancelled) {
    job->done(absl::CancelledError("call cancelled while queued"),
              JobTimings{now - job->enqueue_time, absl::ZeroDuration()});
  }
}

}  // namespace

absl::Status Batcher::Submit(std::unique_ptr<Job> job) {
  return Admit(std::move(job), nullptr, 0);
}

absl::Status Batcher::CheckRoom(const BatchKey& key, int64_t bytes) {
  return Admit(nullptr, &key, bytes);
}

absl::Status Batcher::Admit(std::unique_ptr<Job> job, const BatchKey* key,
                            int64_t bytes) {
  // Jobs that died in a full queue, taken out to make room: answered
  // after the lock is released.
  internal::BatchQueues::Popped dropped;
  absl::Status s;
  absl::Time now;
  {
    MutexLock lock(&mu_);
    if (stopping_) {
      return absl::UnavailableError("server is shutting down");
    }
    now = clock_->Now();
    if (job != nullptr) {
      s = queues_->Add(std::move(job), now, &dropped);
      if (s.ok()) wake_.Signal();
    } else {
      s = queues_->Room(*key, bytes, now, &dropped);
    }
    // Reported under the lock so that depth updates cannot be reordered.
    if (options_.observer != nullptr)
      options_.observer->OnQueueDepth(queues_->size());
  }
  AnswerDropped(dropped, now);
  if (absl::IsResourceExhausted(s) && options_.observer != nullptr) {
    options_.observer->OnRefused();
  }
  return s;
}

void Batcher::Stop(absl::Time deadline) {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    stop_deadline_ = std::min(stop_deadline_, deadline);
    wake_.SignalAll();
  }
  MutexLock lock(&stop_mu_);
  if (joined_) return;
  for (std::thread& t : workers_) t.join();
  joined_ = true;
}

int64_t Batcher::queued_jobs() const {
  MutexLock lock(&mu_);
  return queues_->size();
}

void Batcher::TEST_Wake() {
  MutexLock lock(&mu_);
  wake_.SignalAll();
}

void Batcher::WorkerLoop() {
  for (;;) {
    internal::BatchQueues::Popped popped;
    bool too_late = false;  // stopping, and past the deadline
    {
      MutexLock lock(&mu_);
      for (;;) {
        const absl::Time now = clock_->Now();
        auto ready = queues_->PopReady(now, stopping_);
        if (ready.has_value()) {
          popped = *std::move(ready);
          too_late = stopping_ && now >= stop_deadline_;
          break;
        }
        if (stopping_ && queues_->empty()) return;
        const absl::Time next = queues_->NextReadyTime(now);
        if (next == absl::InfiniteFuture()) {
          wake_.Wait(&mu_);
        } else {
          // Sleep until a queue's delay or a job's deadline runs out, or a
          // Submit.
          wake_.WaitWithTimeout(&mu_, next - now);
        }
      }
      if (options_.observer != nullptr) {
        options_.observer->OnQueueDepth(queues_->size());
      }
      // Another worker may have a batch waiting behind this one.
      if (!queues_->empty()) wake_.Signal();
    }

    const absl::Time start = clock_->Now();
    AnswerDropped(popped, start);
    if (popped.batch.empty()) continue;
    if (too_late) {
      for (auto& job : popped.batch) {
        job->done(absl::UnavailableError(
                      "server is shutting down: the request was still "
                      "queued when the shutdown grace ran out"),
                  JobTimings{start - job->enqueue_time, absl::ZeroDuration()});
      }
      continue;
    }

    std::vector<Job*> batch;
    batch.reserve(popped.batch.size());
    int64_t rows = 0;
    for (auto& job : popped.batch) {
      batch.push_back(job.get());
      rows += job->rows;
    }
    const absl::Status status = options_.runner(batch);
    const absl::Time end = clock_->Now();
    if (options_.observer != nullptr) {
      options_.observer->OnBatch(batch.front()->key, rows,
                                 static_cast<int64_t>(batch.size()),
                                 end - start);
    }
    for (auto& job : popped.batch) {
      job->done(status, JobTimings{start - job->enqueue_time, end - start});
    }
  }
}

}  // namespace normserve
