// The dynamic batcher: groups requests that can share one kernel launch.
//
// What a batch is
//   Jobs are queued by BatchKey (model, row length D, dtype, kind, device and
//   the identity of epsilon/gamma/beta). A batch is a run of jobs taken from
//   the front of one queue, in arrival order, whose rows sum to at most
//   max_batch_rows (a single job larger than that forms a batch on its own).
//
// When a batch closes
//   A queue is ready when its queued rows reach max_batch_rows, or when its
//   oldest job has waited max_queue_delay. With max_queue_delay = 0 every job
//   is ready at once (no waiting; batches still form from whatever is queued
//   when a worker becomes free). Among ready queues, the one whose oldest job
//   arrived first goes first.
//
// What a full queue does
//   Each queue holds at most max_queue_requests jobs; Submit() on a full
//   queue returns RESOURCE_EXHAUSTED at once, so a client sees overload
//   instead of unbounded latency. After Stop(), Submit() returns UNAVAILABLE.
//
// Dropped jobs
//   When a batch forms, jobs whose deadline has passed finish with
//   DEADLINE_EXCEEDED and jobs whose call was cancelled finish with
//   CANCELLED; neither is computed. A job whose deadline passes while its
//   queue waits out max_queue_delay is answered then, not when the queue
//   becomes ready. (The batcher's clock is the wall clock: if it steps
//   back, queues whose oldest job now lies in the future count as ready.)
//
// Latency bound
//   A job admitted to an idle server waits at most max_queue_delay plus the
//   compute time of the batches ahead of it.
//
// Tuning
//   Online serving: a small max_queue_delay (tens to hundreds of µs) buys
//   larger batches at low load for little latency; 0 minimizes latency.
//   Bulk jobs: larger max_batch_rows and delay favour throughput.
//   max_queue_requests bounds memory and tail latency under overload.
//
// Threading and ownership
//   Thread-safe. Submit() takes ownership of the job and never blocks on
//   compute. `done` is called exactly once per admitted job, on a batcher
//   worker thread, or on the thread of a later Submit() that takes the job
//   out of a full queue because its deadline passed or its call was
//   cancelled: so Submit() must not be called holding a lock that a `done`
//   takes. A job that Submit() refuses (it returns an error) gets no `done`
//   call; the caller reports the returned status itself. Stop() finishes
//   every admitted job, then joins the workers; the destructor calls Stop().
#ifndef NORMSERVE_SERVER_BATCHER_H_
#define NORMSERVE_SERVER_BATCHER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kernels/normalize.h"
#include "server/clock.h"
#include "server/internal/mutex.h"

namespace normserve {

namespace internal {
class BatchQueues;
}  // namespace internal

// Which queue a job joins. Jobs with equal keys may share a batch.
struct BatchKey {
  std::string model;
  int64_t dim = 0;
  int dtype = 0;
  int kind = 0;
  int device = 0;
  uint64_t params_id = 0;

  friend bool operator==(const BatchKey& a, const BatchKey& b) {
    return a.model == b.model && a.dim == b.dim && a.dtype == b.dtype &&
           a.kind == b.kind && a.device == b.device &&
           a.params_id == b.params_id;
  }
  template <typename H>
  friend H AbslHashValue(H h, const BatchKey& k) {
    return H::combine(std::move(h), k.model, k.dim, k.dtype, k.kind, k.device,
                      k.params_id);
  }
};

// Batching knobs of one queue (set per model).
struct QueueOptions {
  // A batch closes when its rows reach this. > 0.
  int64_t max_batch_rows = 256;
  // A queue's oldest job waits at most this long for company. >= 0.
  absl::Duration max_queue_delay = absl::ZeroDuration();
  // Submit() beyond this many queued jobs is RESOURCE_EXHAUSTED. > 0.
  int64_t max_queue_requests = 1024;
};

// How long a job spent in each stage, reported to its done callback.
struct JobTimings {
  absl::Duration queue_wait;
  absl::Duration compute;  // of the whole batch the job ran in
};

// One request's work. The submitter fills every field but enqueue_time.
struct Job {
  BatchKey key;
  QueueOptions queue;
  int64_t rows = 0;
  // Memory the job holds while it waits (its input and output buffers,
  // and its call's own state: kQueuedRequestOverheadBytes), for
  // Batcher::Options::max_queued_bytes.
  int64_t bytes = 0;
  absl::Time deadline = absl::InfiniteFuture();
  // Polled when the batch forms; may be empty (never cancelled).
  std::function<bool()> is_cancelled;
  // The kernel work: input and output buffers and parameters.
  RowSegment segment;
  // Called exactly once with OK, DEADLINE_EXCEEDED, CANCELLED or the
  // backend's error. The job is destroyed right after it returns.
  std::function<void(const absl::Status&, const JobTimings&)> done;

  absl::Time enqueue_time;  // Set by the batcher.
};

// Runs one batch. Returns the status every job of the batch finishes with.
using BatchRunner = std::function<absl::Status(absl::Span<Job* const> batch)>;

// Told about queue depth, refusals and formed batches, for metrics; must be
// thread-safe. OnQueueDepth is called with the batcher's lock held (so that
// depth updates arrive in order): keep it cheap and never call back into
// the batcher. OnRefused (a job refused because the queues were full) and
// OnBatch are called without locks held.
class BatchObserver {
 public:
  virtual ~BatchObserver() = default;
  virtual void OnQueueDepth(int64_t queued_jobs) = 0;
  virtual void OnRefused() {}
  virtual void OnBatch(const BatchKey& key, int64_t rows, int64_t jobs,
                       absl::Duration compute) = 0;
};

class Batcher {
 public:
  struct Options {
    // Worker threads, each running one batch at a time. > 0.
    int num_workers = 1;
    // Runs batches. Required.
    BatchRunner runner;
    // Optional; not owned; must outlive the batcher.
    BatchObserver* observer = nullptr;
    // Time source; nullptr means the real clock. Tests inject a fake.
    Clock* clock = nullptr;
    // Bytes of jobs (Job::bytes) queued over all queues at most; 0: no
    // bound. Each queue has its own bound in jobs (max_queue_requests), but
    // requests with distinct parameters get distinct queues: this bounds
    // them all. A job is admitted whenever nothing is queued.
    int64_t max_queued_bytes = 0;
  };

  static absl::StatusOr<std::unique_ptr<Batcher>> Create(Options options);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues `job`. On OK the batcher owns it and will call job->done. On
  // error (RESOURCE_EXHAUSTED: its queue, or all queues together, full;
  // UNAVAILABLE: stopped;
  // INVALID_ARGUMENT: bad queue options) the job is destroyed unrun and
  // its done is not called.
  absl::Status Submit(std::unique_ptr<Job> job);

  // What Submit would answer now for a job of `key` and `bytes` (Job::bytes)
  // on the grounds of room alone (RESOURCE_EXHAUSTED, counted as a refusal,
  // or UNAVAILABLE once stopped; OK otherwise), so that a caller can refuse
  // a request before it allocates the job's output buffers. Jobs that died
  // in a full queue are answered to make room, as by Submit. Submit checks
  // again: another caller may take the room in between.
  absl::Status CheckRoom(const BatchKey& key, int64_t bytes);

  // Stops admitting jobs, runs every admitted job without waiting for
  // delays, and joins the workers. Jobs still queued at `deadline` (by the
  // batcher's clock) are answered UNAVAILABLE unrun; a batch that is
  // running then finishes. Idempotent; a later call may bring the deadline
  // forward.
  void Stop(absl::Time deadline = absl::InfiniteFuture());

  // Jobs waiting in queues, all keys together.
  int64_t queued_jobs() const;

  // Wakes the workers so they re-read the clock (tests with a fake clock
  // call it after advancing time).
  void TEST_Wake();

  // ---- Implementation details follow; API users need not read. ----
 private:
  explicit Batcher(Options options);
  void WorkerLoop();
  // Submit (`job`) or CheckRoom (null `job`; `key` and `bytes`).
  absl::Status Admit(std::unique_ptr<Job> job, const BatchKey* key,
                     int64_t bytes);

  const Options options_;
  Clock* const clock_;
  mutable Mutex mu_;
  CondVar wake_;
  std::unique_ptr<internal::BatchQueues> queues_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // After Stop(): when jobs stop being run.
  absl::Time stop_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  std::vector<std::thread> workers_;
  Mutex stop_mu_;
  bool joined_ ABSL_GUARDED_BY(stop_mu_) = false;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVER_BATCHER_H_
