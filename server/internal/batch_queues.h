// The batching policy without threads: per-key queues, when a queue is
// ready, and how a batch is cut. Batcher wraps it with workers and a lock;
// tests drive it directly with explicit times.
//
// Not thread-safe: the owner serializes every call.
#ifndef NORMSERVE_SERVER_INTERNAL_BATCH_QUEUES_H_
#define NORMSERVE_SERVER_INTERNAL_BATCH_QUEUES_H_

#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/batcher.h"

namespace normserve::internal {

class BatchQueues {
 public:
  // `max_queued_bytes`: Batcher::Options::max_queued_bytes.
  explicit BatchQueues(int64_t max_queued_bytes = 0)
      : max_queued_bytes_(max_queued_bytes) {}

  struct Popped {
    std::vector<std::unique_ptr<Job>> batch;    // to run, maybe empty
    std::vector<std::unique_ptr<Job>> expired;  // deadline passed
    std::vector<std::unique_ptr<Job>> cancelled;
  };

  // Appends `job` to its key's queue, stamping enqueue_time = now.
  // RESOURCE_EXHAUSTED when the queue holds max_queue_requests jobs, or
  // the job's bytes would take all queues past max_queued_bytes, counting
  // no job whose deadline has passed or whose call is cancelled: before
  // refusing, those are taken out into *dropped (when given; the caller
  // answers them): from the job's own queue always, and when the byte
  // bound is what refuses it, from every queue (at most once per
  // kDeadScanInterval, as that walks every queued job). INVALID_ARGUMENT
  // when the job's queue options are out of range.
  absl::Status Add(std::unique_ptr<Job> job, absl::Time now,
                   Popped* dropped = nullptr);

  // What Add would answer now for a job of `key` and `bytes` (Job::bytes)
  // with valid queue options: RESOURCE_EXHAUSTED, after taking the dead
  // jobs out into *dropped as Add does, or OK. Adds nothing: a caller can
  // refuse a request before it builds the job.
  absl::Status Room(const BatchKey& key, int64_t bytes, absl::Time now,
                    Popped* dropped = nullptr);

  // Cuts the next batch from the ready queue whose oldest job is oldest.
  // With `flush`, every non-empty queue counts as ready (shutdown). A queue
  // is ready when it holds max_batch_rows rows, or its oldest job has
  // waited max_queue_delay, or `now` is before that job's enqueue time
  // (the clock stepped back: waiting for it to catch up would hold the
  // queue for the step). Jobs found expired or cancelled while cutting are
  // moved to the result's lists instead of the batch, and so is every job
  // of any queue whose deadline has passed (with no queue ready, into a
  // result with an empty batch), so that a long queue delay does not hold
  // their calls open. Returns nullopt when there is nothing to do.
  std::optional<Popped> PopReady(absl::Time now, bool flush);

  // The earliest time PopReady can have something to do, by delay or by a
  // queued job's deadline (`now` when that is already past);
  // InfiniteFuture when all queues are empty.
  absl::Time NextReadyTime(absl::Time now) const;

  static constexpr absl::Duration kDeadScanInterval = absl::Milliseconds(1);

  int64_t size() const { return size_; }
  int64_t bytes() const { return bytes_; }
  bool empty() const { return size_ == 0; }

 private:
  // Invariant: a Queue in queues_ is non-empty; rows == sum of jobs' rows.
  struct Queue {
    QueueOptions options;
    std::deque<std::unique_ptr<Job>> jobs;
    int64_t rows = 0;
    // At or before every job's deadline (jobs popped since may have held
    // it: DropDeadJobs makes it exact again).
    absl::Time earliest_deadline = absl::InfiniteFuture();
  };
  // When q's oldest job has waited max_queue_delay; `now` if that job's
  // enqueue time lies after it (the clock stepped back).
  static absl::Time DelayEnds(const Queue& q, absl::Time now);
  bool Ready(const Queue& q, absl::Time now) const;
  // Why a job of `key` and `bytes` cannot be queued now, or OK.
  absl::Status Full(const BatchKey& key, int64_t bytes) const;
  bool OverBytes(int64_t bytes) const;
  // Moves the expired and cancelled jobs of `key`'s queue, or of every
  // queue (key null), into *dropped.
  void DropDead(absl::Time now, const BatchKey* key, Popped* dropped);
  // The same for one queue, which it leaves in queues_; true if it is now
  // empty (the caller erases it).
  bool DropDeadJobs(Queue& q, absl::Time now, Popped* dropped);

  const int64_t max_queued_bytes_;
  absl::flat_hash_map<BatchKey, Queue> queues_;
  int64_t size_ = 0;
  int64_t bytes_ = 0;  // Job::bytes of every queued job
  absl::Time next_dead_scan_ = absl::InfinitePast();
};

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_BATCH_QUEUES_H_
