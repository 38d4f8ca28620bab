// The batching policy (BatchQueues, driven with explicit times) and the
// threaded Batcher (with a fake clock and the real CPU kernel).
#include "server/batcher.h"

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/normalize.h"
#include "server/backend.h"
#include "server/internal/batch_queues.h"
#include "server/internal/mutex.h"

namespace normserve {
namespace {

using internal::BatchQueues;

const absl::Time kT0 = absl::FromUnixSeconds(1000);

std::unique_ptr<Job> MakeJob(int64_t rows, QueueOptions q,
                             const std::string& model = "m",
                             int* done_code = nullptr) {
  auto job = std::make_unique<Job>();
  job->key.model = model;
  job->key.dim = 4;
  job->queue = q;
  job->rows = rows;
  job->done = [done_code](const absl::Status& s, const JobTimings&) {
    if (done_code != nullptr) *done_code = static_cast<int>(s.code());
  };
  return job;
}

// A job of `q` whose deadline is kT0 + 1 s; its answer's code goes to
// *code, then *answered is notified (whichever thread answers it).
std::unique_ptr<Job> DoomedJob(QueueOptions q, std::atomic<int>* code,
                               Notification* answered) {
  auto job = MakeJob(1, q);
  job->deadline = kT0 + absl::Seconds(1);
  job->done = [code, answered](const absl::Status& s, const JobTimings&) {
    *code = static_cast<int>(s.code());
    answered->Notify();
  };
  return job;
}

QueueOptions Opts(int64_t rows, absl::Duration delay,
                  int64_t max_requests = 100) {
  QueueOptions q;
  q.max_batch_rows = rows;
  q.max_queue_delay = delay;
  q.max_queue_requests = max_requests;
  return q;
}

// A runner that counts its batches in *batches; the first notifies
// `running`, then waits for `release`; later ones return at once.
auto FirstBatchWaits(Notification* running, Notification* release,
                     std::atomic<int>* batches) {
  return [=](absl::Span<Job* const>) {
    if ((*batches)++ == 0) {
      running->Notify();
      release->WaitForNotification();
    }
    return absl::OkStatus();
  };
}

TEST(BatchQueuesTest, BatchClosesWhenRowsReachTheLimit) {
  BatchQueues queues;
  const QueueOptions q = Opts(8, absl::Hours(1));
  ASSERT_TRUE(queues.Add(MakeJob(3, q), kT0).ok());
  ASSERT_TRUE(queues.Add(MakeJob(3, q), kT0).ok());
  EXPECT_FALSE(queues.PopReady(kT0, false).has_value());
  ASSERT_TRUE(queues.Add(MakeJob(3, q), kT0).ok());  // 9 rows queued >= 8
  auto popped = queues.PopReady(kT0, false);
  ASSERT_TRUE(popped.has_value());
  // The third job would push the batch past 8 rows: it waits.
  ASSERT_EQ(popped->batch.size(), 2u);
  EXPECT_EQ(queues.size(), 1);
  EXPECT_FALSE(queues.PopReady(kT0, false).has_value());
}

// The byte bound spans every queue: jobs with distinct keys (as requests
// with distinct parameters get) fill it together; a popped job frees its
// bytes; a job is admitted whenever nothing is queued, however large.
TEST(BatchQueuesTest, ByteBoundSpansEveryQueue) {
  BatchQueues queues(1000);
  const QueueOptions q = Opts(1, absl::Hours(1));
  auto job = [&](const std::string& model, int64_t bytes) {
    auto j = MakeJob(1, q, model);
    j->bytes = bytes;
    return j;
  };
  const absl::Duration s = absl::Seconds(1);
  ASSERT_TRUE(queues.Add(job("a", 400), kT0).ok());
  ASSERT_TRUE(queues.Add(job("b", 400), kT0 + s).ok());
  const absl::Status full = queues.Add(job("c", 300), kT0 + 2 * s);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("2 requests of 800 bytes waiting, and this "
                                "one needs 300 more (max_queued_bytes 1000)"),
            absl::string_view::npos)
      << full;
  ASSERT_TRUE(queues.Add(job("c", 200), kT0 + 2 * s).ok());  // exactly 1000
  EXPECT_EQ(queues.bytes(), 1000);
  ASSERT_TRUE(queues.PopReady(kT0 + 3 * s, false).has_value());  // "a"
  EXPECT_EQ(queues.bytes(), 600);
  ASSERT_TRUE(queues.Add(job("d", 400), kT0 + 3 * s).ok());
  while (queues.PopReady(kT0 + 4 * s, true).has_value()) {
  }
  EXPECT_EQ(queues.bytes(), 0);
  ASSERT_TRUE(queues.Add(job("e", 5000), kT0).ok());  // alone: admitted
}

TEST(BatchQueuesTest, BatchClosesAfterTheDelay) {
  BatchQueues queues;
  const QueueOptions q = Opts(100, absl::Microseconds(100));
  ASSERT_TRUE(queues.Add(MakeJob(1, q), kT0).ok());
  ASSERT_TRUE(queues.Add(MakeJob(1, q), kT0 + absl::Microseconds(50)).ok());
  EXPECT_EQ(queues.NextReadyTime(kT0), kT0 + absl::Microseconds(100));
  EXPECT_FALSE(
      queues.PopReady(kT0 + absl::Microseconds(99), false).has_value());
  auto popped = queues.PopReady(kT0 + absl::Microseconds(100), false);
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->batch.size(), 2u);  // The younger job rides along.
  EXPECT_TRUE(queues.empty());
  EXPECT_EQ(queues.NextReadyTime(kT0), absl::InfiniteFuture());
}

TEST(BatchQueuesTest, ZeroDelayMeansReadyAtOnce) {
  BatchQueues queues;
  ASSERT_TRUE(
      queues.Add(MakeJob(1, Opts(100, absl::ZeroDuration())), kT0).ok());
  EXPECT_TRUE(queues.PopReady(kT0, false).has_value());
}

TEST(BatchQueuesTest, OversizedJobFormsABatchAlone) {
  BatchQueues queues;
  const QueueOptions q = Opts(4, absl::Hours(1));
  ASSERT_TRUE(queues.Add(MakeJob(10, q), kT0).ok());
  ASSERT_TRUE(queues.Add(MakeJob(1, q), kT0).ok());
  auto popped = queues.PopReady(kT0, false);
  ASSERT_TRUE(popped.has_value());
  ASSERT_EQ(popped->batch.size(), 1u);
  EXPECT_EQ(popped->batch[0]->rows, 10);
}

TEST(BatchQueuesTest, FullQueueRejectsWithResourceExhausted) {
  BatchQueues queues;
  const QueueOptions q = Opts(100, absl::Hours(1), 2);
  ASSERT_TRUE(queues.Add(MakeJob(1, q), kT0).ok());
  ASSERT_TRUE(queues.Add(MakeJob(1, q), kT0).ok());
  const absl::Status s = queues.Add(MakeJob(1, q), kT0);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("full"), absl::string_view::npos) << s;
  // Another key has its own bound.
  EXPECT_TRUE(queues.Add(MakeJob(1, q, "other"), kT0).ok());
}

TEST(BatchQueuesTest, ExpiredAndCancelledJobsAreDroppedNotBatched) {
  BatchQueues queues;
  const QueueOptions q = Opts(100, absl::ZeroDuration());
  auto expired = MakeJob(1, q);
  expired->deadline = kT0 + absl::Microseconds(5);
  auto cancelled = MakeJob(1, q);
  cancelled->is_cancelled = [] { return true; };
  auto live = MakeJob(1, q);
  live->deadline = kT0 + absl::Seconds(1);
  ASSERT_TRUE(queues.Add(std::move(expired), kT0).ok());
  ASSERT_TRUE(queues.Add(std::move(cancelled), kT0).ok());
  ASSERT_TRUE(queues.Add(std::move(live), kT0).ok());
  auto popped = queues.PopReady(kT0 + absl::Microseconds(10), false);
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->expired.size(), 1u);
  EXPECT_EQ(popped->cancelled.size(), 1u);
  EXPECT_EQ(popped->batch.size(), 1u);
}

// A queue delay longer than a job's deadline does not hold the job: once
// the deadline passes, PopReady answers it (an empty batch) although its
// queue is not ready, and NextReadyTime wakes the worker for it.
TEST(BatchQueuesTest, ExpiredJobsLeaveAQueueThatIsNotReady) {
  BatchQueues queues;
  const QueueOptions q = Opts(100, absl::Hours(1));
  auto doomed = MakeJob(1, q);
  doomed->deadline = kT0 + absl::Seconds(1);
  auto live = MakeJob(1, q);
  live->deadline = kT0 + absl::Seconds(30);
  ASSERT_TRUE(queues.Add(std::move(live), kT0).ok());
  ASSERT_TRUE(queues.Add(std::move(doomed), kT0).ok());
  EXPECT_EQ(queues.NextReadyTime(kT0), kT0 + absl::Seconds(1));
  EXPECT_FALSE(queues.PopReady(kT0 + absl::Milliseconds(999), false));
  auto popped = queues.PopReady(kT0 + absl::Seconds(2), false);
  ASSERT_TRUE(popped.has_value());
  EXPECT_TRUE(popped->batch.empty());
  EXPECT_EQ(popped->expired.size(), 1u);
  EXPECT_EQ(queues.size(), 1);
  // The live job's deadline is next; nothing more to do before it.
  EXPECT_EQ(queues.NextReadyTime(kT0 + absl::Seconds(2)),
            kT0 + absl::Seconds(30));
  EXPECT_FALSE(queues.PopReady(kT0 + absl::Seconds(2), false));
}

// The same while another queue keeps being ready: the expired job leaves
// with that queue's batch.
TEST(BatchQueuesTest, ExpiredJobsLeaveWithAnotherQueuesBatch) {
  BatchQueues queues;
  auto doomed = MakeJob(1, Opts(100, absl::Hours(1)), "slow");
  doomed->deadline = kT0 + absl::Seconds(1);
  ASSERT_TRUE(queues.Add(std::move(doomed), kT0).ok());
  ASSERT_TRUE(
      queues.Add(MakeJob(1, Opts(100, absl::ZeroDuration()), "fast"), kT0)
          .ok());
  auto popped = queues.PopReady(kT0 + absl::Seconds(2), false);
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->batch.size(), 1u);
  EXPECT_EQ(popped->expired.size(), 1u);
  EXPECT_TRUE(queues.empty());
}

// A wall clock stepped back (NTP, a resumed VM) makes the oldest job's
// enqueue time lie in the future: its queue counts as ready rather than
// waiting for the clock to catch up.
TEST(BatchQueuesTest, AClockSteppedBackDoesNotHoldTheQueue) {
  BatchQueues queues;
  ASSERT_TRUE(
      queues.Add(MakeJob(1, Opts(100, absl::ZeroDuration())), kT0).ok());
  const absl::Time earlier = kT0 - absl::Minutes(1);
  EXPECT_EQ(queues.NextReadyTime(earlier), earlier);
  auto popped = queues.PopReady(earlier, false);
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->batch.size(), 1u);
}

// A full queue whose jobs are dead (deadline passed, call cancelled) makes
// room for a live one: the dead go to *dropped, for their answers. Without
// `dropped` (or with live jobs only) the queue stays full.
TEST(BatchQueuesTest, DeadJobsDoNotHoldAFullQueue) {
  BatchQueues queues;
  const QueueOptions q = Opts(100, absl::Hours(1), /*max_requests=*/2);
  auto expired = MakeJob(1, q);
  expired->deadline = kT0 + absl::Seconds(1);
  auto cancelled = MakeJob(1, q);
  bool cancel = false;
  cancelled->is_cancelled = [&cancel] { return cancel; };
  ASSERT_TRUE(queues.Add(std::move(expired), kT0).ok());
  ASSERT_TRUE(queues.Add(std::move(cancelled), kT0).ok());
  BatchQueues::Popped dropped;
  // Both alive: full.
  EXPECT_EQ(queues.Add(MakeJob(1, q), kT0, &dropped).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(dropped.expired.empty() && dropped.cancelled.empty());
  cancel = true;
  const absl::Time later = kT0 + absl::Seconds(2);
  EXPECT_EQ(queues.Add(MakeJob(1, q), later).code(),
            absl::StatusCode::kResourceExhausted);  // nowhere to drop them
  ASSERT_TRUE(queues.Add(MakeJob(1, q), later, &dropped).ok());
  EXPECT_EQ(dropped.expired.size(), 1u);
  EXPECT_EQ(dropped.cancelled.size(), 1u);
  EXPECT_EQ(queues.size(), 1);
}

// Over the byte bound, dead jobs of every queue make room, but the queued
// jobs are walked at most once per kDeadScanInterval; the new job's own
// queue is cleared every time.
TEST(BatchQueuesTest, DeadJobsMakeRoomUnderTheByteBound) {
  BatchQueues queues(1000);
  const QueueOptions q = Opts(100, absl::Hours(1));
  auto job = [&](const std::string& model) {
    auto j = MakeJob(1, q, model);
    j->bytes = 600;
    return j;
  };
  auto a = job("a");
  a->deadline = kT0 + absl::Seconds(1);
  ASSERT_TRUE(queues.Add(std::move(a), kT0).ok());
  const absl::Time t = kT0 + absl::Seconds(2);
  BatchQueues::Popped dropped;
  bool cancel_b = false;
  auto b = job("b");
  b->is_cancelled = [&cancel_b] { return cancel_b; };
  ASSERT_TRUE(queues.Add(std::move(b), t, &dropped).ok());
  EXPECT_EQ(dropped.expired.size(), 1u);  // "a", from another queue
  cancel_b = true;
  const absl::Duration within = BatchQueues::kDeadScanInterval / 2;
  EXPECT_EQ(queues.Add(job("c"), t + within, &dropped).code(),
            absl::StatusCode::kResourceExhausted);  // no scan yet
  EXPECT_TRUE(dropped.cancelled.empty());
  bool cancel_c = false;
  auto c = job("c");
  c->is_cancelled = [&cancel_c] { return cancel_c; };
  const absl::Time later = t + BatchQueues::kDeadScanInterval + within;
  ASSERT_TRUE(queues.Add(std::move(c), later, &dropped).ok());
  EXPECT_EQ(dropped.cancelled.size(), 1u);  // "b"
  EXPECT_EQ(queues.size(), 1);
  EXPECT_EQ(queues.bytes(), 600);
  // Within the next interval, the job's own queue is still cleared: a
  // second "c" takes the cancelled one's place.
  cancel_c = true;
  dropped.cancelled.clear();
  ASSERT_TRUE(queues.Add(job("c"), later, &dropped).ok());
  EXPECT_EQ(dropped.cancelled.size(), 1u);  // the first "c"
  EXPECT_EQ(queues.size(), 1);
  EXPECT_EQ(queues.bytes(), 600);
}

// Room answers what Add would, for either bound, and adds nothing; it
// takes dead jobs out as Add does.
TEST(BatchQueuesTest, RoomAnswersAsAddWouldWithoutAdding) {
  BatchQueues queues(1000);
  const QueueOptions q = Opts(100, absl::Hours(1), /*max_requests=*/2);
  auto job = [&](int64_t bytes) {
    auto j = MakeJob(1, q);
    j->bytes = bytes;
    return j;
  };
  BatchKey key;
  key.model = "m";
  key.dim = 4;
  BatchKey other = key;
  other.model = "other";
  EXPECT_TRUE(queues.Room(key, 5000, kT0).ok());  // nothing queued
  auto doomed = job(300);
  doomed->deadline = kT0 + absl::Seconds(1);
  ASSERT_TRUE(queues.Add(std::move(doomed), kT0).ok());
  ASSERT_TRUE(queues.Add(job(300), kT0).ok());
  EXPECT_EQ(queues.size(), 2);
  // The queue's bound (2 jobs), and the byte bound for another key.
  const absl::Status full = queues.Room(key, 1, kT0);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(full, queues.Add(job(1), kT0));
  EXPECT_EQ(queues.Room(other, 401, kT0).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(queues.Room(other, 400, kT0).ok());
  EXPECT_EQ(queues.size(), 2);
  EXPECT_EQ(queues.bytes(), 600);
  // Past the first job's deadline it is taken out to make room.
  BatchQueues::Popped dropped;
  const absl::Time later = kT0 + absl::Seconds(2);
  EXPECT_TRUE(queues.Room(key, 1, later, &dropped).ok());
  EXPECT_EQ(dropped.expired.size(), 1u);
  EXPECT_EQ(queues.size(), 1);
  EXPECT_EQ(queues.bytes(), 300);
}

TEST(BatchQueuesTest, KeysNeverShareABatchAndOldestGoesFirst) {
  BatchQueues queues;
  const QueueOptions q = Opts(100, absl::ZeroDuration());
  ASSERT_TRUE(queues.Add(MakeJob(1, q, "b"), kT0).ok());
  ASSERT_TRUE(queues.Add(MakeJob(1, q, "a"), kT0 + absl::Microseconds(1)).ok());
  ASSERT_TRUE(queues.Add(MakeJob(1, q, "b"), kT0 + absl::Microseconds(2)).ok());
  auto first = queues.PopReady(kT0 + absl::Microseconds(3), false);
  ASSERT_TRUE(first.has_value());
  ASSERT_EQ(first->batch.size(), 2u);
  EXPECT_EQ(first->batch[0]->key.model, "b");
  EXPECT_EQ(first->batch[1]->key.model, "b");
  auto second = queues.PopReady(kT0 + absl::Microseconds(3), false);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->batch[0]->key.model, "a");
}

TEST(BatchQueuesTest, FlushIgnoresTheDelay) {
  BatchQueues queues;
  ASSERT_TRUE(queues.Add(MakeJob(1, Opts(100, absl::Hours(1))), kT0).ok());
  EXPECT_FALSE(queues.PopReady(kT0, false).has_value());
  EXPECT_TRUE(queues.PopReady(kT0, true).has_value());
}

// ---- The threaded batcher ----

TEST(BatcherTest, FakeClockDrivesTheDelay) {
  FakeClock clock(kT0);
  std::atomic<int> batches{0};
  Batcher::Options o;
  o.clock = &clock;
  o.runner = [&](absl::Span<Job* const>) {
    ++batches;
    return absl::OkStatus();
  };
  auto batcher = Batcher::Create(std::move(o));
  ASSERT_TRUE(batcher.ok());
  Notification done;
  auto job = MakeJob(1, Opts(100, absl::Hours(1)));
  job->done = [&](const absl::Status& s, const JobTimings& t) {
    EXPECT_TRUE(s.ok());
    EXPECT_EQ(t.queue_wait, absl::Hours(1));
    done.Notify();
  };
  ASSERT_TRUE((*batcher)->Submit(std::move(job)).ok());
  (*batcher)->TEST_Wake();
  EXPECT_FALSE(done.WaitForNotificationWithTimeout(absl::Milliseconds(20)));
  EXPECT_EQ((*batcher)->queued_jobs(), 1);
  clock.Advance(absl::Hours(1));
  (*batcher)->TEST_Wake();
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(batches.load(), 1);
}

// Submit answers the dead jobs it takes out of a full queue
// (DEADLINE_EXCEEDED), and admits the new one.
TEST(BatcherTest, SubmitToAFullQueueAnswersItsExpiredJobsAndAdmits) {
  FakeClock clock(kT0);
  Batcher::Options o;
  o.clock = &clock;
  o.runner = [](absl::Span<Job* const>) { return absl::OkStatus(); };
  auto batcher = Batcher::Create(std::move(o));
  ASSERT_TRUE(batcher.ok());
  const QueueOptions q = Opts(100, absl::Hours(1), /*max_requests=*/1);
  std::atomic<int> code{-1};
  Notification answered;
  auto doomed = DoomedJob(q, &code, &answered);
  ASSERT_TRUE((*batcher)->Submit(std::move(doomed)).ok());
  EXPECT_EQ((*batcher)->Submit(MakeJob(1, q)).code(),
            absl::StatusCode::kResourceExhausted);
  clock.Advance(absl::Seconds(2));
  ASSERT_TRUE((*batcher)->Submit(MakeJob(1, q)).ok());
  // Answered by that Submit, or by a worker that saw its deadline first.
  ASSERT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(code.load(), static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ((*batcher)->queued_jobs(), 1);
  (*batcher)->Stop();
}

// CheckRoom refuses as Submit would, counts the refusal with the observer,
// finds room once the job that filled the queue has died (taken out and
// answered by CheckRoom, or by a worker that saw its deadline first), and
// queues nothing; after Stop it answers UNAVAILABLE.
TEST(BatcherTest, CheckRoomAnswersAsSubmitWouldAndQueuesNothing) {
  struct Counts : BatchObserver {
    std::atomic<int> refused{0};
    void OnQueueDepth(int64_t) override {}
    void OnBatch(const BatchKey&, int64_t, int64_t, absl::Duration) override {}
    void OnRefused() override { ++refused; }
  } counts;
  FakeClock clock(kT0);
  Batcher::Options o;
  o.clock = &clock;
  o.observer = &counts;
  o.runner = [](absl::Span<Job* const>) { return absl::OkStatus(); };
  auto batcher = Batcher::Create(std::move(o));
  ASSERT_TRUE(batcher.ok());
  const QueueOptions q = Opts(100, absl::Hours(1), /*max_requests=*/1);
  BatchKey key;
  key.model = "m";
  key.dim = 4;
  EXPECT_TRUE((*batcher)->CheckRoom(key, 100).ok());
  EXPECT_EQ((*batcher)->queued_jobs(), 0);
  std::atomic<int> code{-1};
  Notification answered;
  auto doomed = DoomedJob(q, &code, &answered);
  ASSERT_TRUE((*batcher)->Submit(std::move(doomed)).ok());
  const absl::Status full = (*batcher)->CheckRoom(key, 100);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("queue for model 'm' (D = 4) is full"),
            absl::string_view::npos)
      << full;
  EXPECT_EQ(counts.refused.load(), 1);
  clock.Advance(absl::Seconds(2));
  EXPECT_TRUE((*batcher)->CheckRoom(key, 100).ok());
  ASSERT_TRUE(answered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(code.load(), static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ((*batcher)->queued_jobs(), 0);
  EXPECT_EQ(counts.refused.load(), 1);
  (*batcher)->Stop();
  EXPECT_EQ((*batcher)->CheckRoom(key, 100).code(),
            absl::StatusCode::kUnavailable);
}

// A job whose deadline passes while its queue waits out a long delay is
// answered DEADLINE_EXCEEDED then, not when the delay ends.
TEST(BatcherTest, AQueuedJobIsAnsweredWhenItsDeadlinePasses) {
  FakeClock clock(kT0);
  Batcher::Options o;
  o.clock = &clock;
  o.runner = [](absl::Span<Job* const>) { return absl::OkStatus(); };
  auto batcher = Batcher::Create(std::move(o));
  ASSERT_TRUE(batcher.ok());
  Notification done;
  auto job = MakeJob(1, Opts(100, absl::Hours(1)));
  job->deadline = kT0 + absl::Seconds(1);
  job->done = [&](const absl::Status& s, const JobTimings&) {
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
    done.Notify();
  };
  ASSERT_TRUE((*batcher)->Submit(std::move(job)).ok());
  clock.Advance(absl::Seconds(2));
  (*batcher)->TEST_Wake();
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ((*batcher)->queued_jobs(), 0);
}

// The wall clock steps back while a batch runs: the job queued behind it
// (no delay) runs as soon as the worker is free, not a minute later.
TEST(BatcherTest, AClockSteppedBackDoesNotStallTheQueue) {
  FakeClock clock(kT0);
  Notification first_running, release;
  std::atomic<int> batches{0};
  Batcher::Options o;
  o.clock = &clock;
  o.runner = FirstBatchWaits(&first_running, &release, &batches);
  auto batcher = Batcher::Create(std::move(o));
  ASSERT_TRUE(batcher.ok());
  const QueueOptions q = Opts(100, absl::ZeroDuration());
  ASSERT_TRUE((*batcher)->Submit(MakeJob(1, q)).ok());
  ASSERT_TRUE(first_running.WaitForNotificationWithTimeout(absl::Seconds(10)));
  Notification second_done;
  auto second = MakeJob(1, q);
  second->done = [&](const absl::Status& s, const JobTimings&) {
    EXPECT_TRUE(s.ok());
    second_done.Notify();
  };
  ASSERT_TRUE((*batcher)->Submit(std::move(second)).ok());
  clock.Advance(-absl::Minutes(1));
  release.Notify();
  EXPECT_TRUE(second_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  (*batcher)->Stop();
}

TEST(BatcherTest, StopRunsAdmittedJobsThenRefusesNewOnes) {
  std::atomic<int> ran{0};
  Batcher::Options o;
  o.runner = [&](absl::Span<Job* const> b) {
    ran += static_cast<int>(b.size());
    return absl::OkStatus();
  };
  auto batcher = Batcher::Create(std::move(o));
  ASSERT_TRUE(batcher.ok());
  std::atomic<int> ok{0};
  for (int i = 0; i < 10; ++i) {
    auto job = MakeJob(1, Opts(1000, absl::Hours(1)));
    job->done = [&](const absl::Status& s, const JobTimings&) {
      if (s.ok()) ++ok;
    };
    ASSERT_TRUE((*batcher)->Submit(std::move(job)).ok());
  }
  (*batcher)->Stop();
  EXPECT_EQ(ok.load(), 10);
  EXPECT_EQ(ran.load(), 10);
  EXPECT_EQ(
      (*batcher)->Submit(MakeJob(1, Opts(1, absl::ZeroDuration()))).code(),
      absl::StatusCode::kUnavailable);
}

// Stop with a deadline: the batch running finishes; jobs still queued once
// the deadline has passed are answered UNAVAILABLE, unrun.
TEST(BatcherTest, StopAnswersJobsStillQueuedAtItsDeadlineUnavailable) {
  FakeClock clock(kT0);
  Notification running, release;
  std::atomic<int> batches{0};
  Batcher::Options o;
  o.clock = &clock;
  o.runner = FirstBatchWaits(&running, &release, &batches);
  auto batcher = Batcher::Create(std::move(o));
  ASSERT_TRUE(batcher.ok());
  int first = -1, second = -1, third = -1;
  ASSERT_TRUE(
      (*batcher)
          ->Submit(MakeJob(1, Opts(1, absl::ZeroDuration()), "a", &first))
          .ok());
  running.WaitForNotification();
  // Queued while the only worker is busy, under two keys.
  ASSERT_TRUE((*batcher)
                  ->Submit(MakeJob(1, Opts(100, absl::Hours(1)), "b", &second))
                  .ok());
  ASSERT_TRUE((*batcher)
                  ->Submit(MakeJob(1, Opts(100, absl::Hours(1)), "c", &third))
                  .ok());
  clock.Advance(absl::Seconds(2));
  std::thread stopper([&] { (*batcher)->Stop(kT0 + absl::Seconds(1)); });
  release.Notify();
  stopper.join();
  EXPECT_EQ(first, static_cast<int>(absl::StatusCode::kOk));
  EXPECT_EQ(second, static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(third, static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(batches.load(), 1);
  EXPECT_EQ((*batcher)->queued_jobs(), 0);
}

// Many threads submit real normalization jobs that share batches; every
// output must equal, bit for bit, the same rows normalized alone.
TEST(BatcherTest, BatchedOutputsAreBitwiseIdenticalToUnbatched) {
  ThreadPool pool(1);
  std::unique_ptr<Backend> cpu = MakeCpuBackend(&pool);
  std::atomic<int64_t> max_batch{0};
  Batcher::Options o;
  o.num_workers = 2;
  o.runner = [&](absl::Span<Job* const> b) {
    int64_t n = static_cast<int64_t>(b.size());
    int64_t prev = max_batch.load();
    while (n > prev && !max_batch.compare_exchange_weak(prev, n)) {
    }
    return cpu->Run(b);
  };
  auto batcher = Batcher::Create(std::move(o));
  ASSERT_TRUE(batcher.ok());

  const int64_t d = 333;
  NormParams params;
  params.dim = d;
  constexpr int kThreads = 4, kJobsPerThread = 50;
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0}, finished{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::normal_distribution<float> dist(5, 3);
      for (int j = 0; j < kJobsPerThread; ++j) {
        const int64_t rows = 1 + (j % 7);
        std::vector<float> x(static_cast<size_t>(rows * d));
        for (float& v : x) v = dist(rng);
        std::vector<float> alone(x.size()), batched(x.size());
        RowSegment alone_segment;
        alone_segment.params = &params;
        alone_segment.input = x.data();
        alone_segment.output = alone.data();
        alone_segment.rows = rows;
        NormalizeRows(alone_segment, 0, rows);
        Notification done;
        auto job = std::make_unique<Job>();
        job->key.model = "m";
        job->key.dim = d;
        job->queue = Opts(64, absl::Microseconds(500));
        job->rows = rows;
        job->segment = alone_segment;
        job->segment.output = batched.data();
        job->done = [&](const absl::Status& s, const JobTimings&) {
          EXPECT_TRUE(s.ok()) << s;
          done.Notify();
        };
        ASSERT_TRUE((*batcher)->Submit(std::move(job)).ok());
        done.WaitForNotification();
        if (std::memcmp(alone.data(), batched.data(),
                        x.size() * sizeof(float)) != 0) {
          ++mismatches;
        }
        ++finished;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(finished.load(), kThreads * kJobsPerThread);
  EXPECT_EQ(mismatches.load(), 0);
  // With four submitters and a 500 µs delay, jobs must have shared batches.
  EXPECT_GT(max_batch.load(), 1);
}

// One batch large enough for the CPU backend to split across threads
// (kParallelMinElements), cut from jobs of uneven rows whose inputs sit one
// float past a 16-byte boundary: every row's bits equal those of the row
// normalized alone, single-threaded, from an aligned copy.
TEST(BatcherTest, ALargeThreadedBatchOfMisalignedJobsMatchesRowsAlone) {
  ThreadPool pool(3);
  std::unique_ptr<Backend> cpu = MakeCpuBackend(&pool);
  std::atomic<int64_t> batches{0}, batch_rows{0};
  Batcher::Options o;
  o.runner = [&](absl::Span<Job* const> b) {
    ++batches;
    for (const Job* j : b) batch_rows += j->rows;
    return cpu->Run(b);
  };
  auto batcher = Batcher::Create(std::move(o));
  ASSERT_TRUE(batcher.ok());

  const int64_t d = 1031;
  const std::vector<int64_t> job_rows = {1, 37, 5, 120, 2, 64, 9, 80, 13, 72};
  int64_t total_rows = 0;
  for (int64_t r : job_rows) total_rows += r;
  ASSERT_GE(total_rows * d, kParallelMinElements);
  std::mt19937 rng(21);
  std::normal_distribution<float> dist(3, 2);
  std::vector<float> gamma(d), beta(d);
  for (float& g : gamma) g = dist(rng);
  for (float& b : beta) b = dist(rng);
  NormParams params;
  params.dim = d;
  params.gamma = gamma.data();
  params.beta = beta.data();

  struct PerJob {
    std::vector<float> padded, alone, batched;
    Notification done;
  };
  std::vector<PerJob> jobs(job_rows.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    const size_t n = static_cast<size_t>(job_rows[i] * d);
    std::vector<float> x(n);
    for (float& v : x) v = dist(rng);
    jobs[i].padded.assign(n + 1, 0.0f);
    std::memcpy(jobs[i].padded.data() + 1, x.data(), n * sizeof(float));
    jobs[i].alone.resize(n);
    jobs[i].batched.resize(n);
    RowSegment alone;
    alone.params = &params;
    alone.input = x.data();
    alone.output = jobs[i].alone.data();
    alone.rows = job_rows[i];
    NormalizeRows(alone, 0, alone.rows);  // this thread only
  }
  // The batch closes when its rows reach the total: one batch of all jobs.
  for (size_t i = 0; i < jobs.size(); ++i) {
    auto job = std::make_unique<Job>();
    job->key.model = "m";
    job->key.dim = d;
    job->queue = Opts(total_rows, absl::Hours(1));
    job->rows = job_rows[i];
    job->segment.params = &params;
    job->segment.input = jobs[i].padded.data() + 1;
    job->segment.output = jobs[i].batched.data();
    job->segment.rows = job_rows[i];
    PerJob* pj = &jobs[i];
    job->done = [pj](const absl::Status& s, const JobTimings&) {
      EXPECT_TRUE(s.ok()) << s;
      pj->done.Notify();
    };
    ASSERT_TRUE((*batcher)->Submit(std::move(job)).ok());
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    ASSERT_TRUE(jobs[i].done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    EXPECT_EQ(std::memcmp(jobs[i].alone.data(), jobs[i].batched.data(),
                          jobs[i].alone.size() * sizeof(float)),
              0)
        << "job " << i << " (" << job_rows[i] << " rows)";
  }
  EXPECT_EQ(batches.load(), 1);
  EXPECT_EQ(batch_rows.load(), total_rows);
}

}  // namespace
}  // namespace normserve
