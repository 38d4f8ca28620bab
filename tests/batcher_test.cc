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

QueueOptions Opts(int64_t rows, absl::Duration delay,
                  int64_t max_requests = 100) {
  QueueOptions q;
  q.max_batch_rows = rows;
  q.max_queue_delay = delay;
  q.max_queue_requests = max_requests;
  return q;
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
  EXPECT_EQ(queues.NextReadyTime(), kT0 + absl::Microseconds(100));
  EXPECT_FALSE(
      queues.PopReady(kT0 + absl::Microseconds(99), false).has_value());
  auto popped = queues.PopReady(kT0 + absl::Microseconds(100), false);
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->batch.size(), 2u);  // The younger job rides along.
  EXPECT_TRUE(queues.empty());
  EXPECT_EQ(queues.NextReadyTime(), absl::InfiniteFuture());
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
  int code = -1;
  auto doomed = MakeJob(1, q, "m", &code);
  doomed->deadline = kT0 + absl::Seconds(1);
  ASSERT_TRUE((*batcher)->Submit(std::move(doomed)).ok());
  EXPECT_EQ((*batcher)->Submit(MakeJob(1, q)).code(),
            absl::StatusCode::kResourceExhausted);
  clock.Advance(absl::Seconds(2));
  ASSERT_TRUE((*batcher)->Submit(MakeJob(1, q)).ok());
  EXPECT_EQ(code, static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ((*batcher)->queued_jobs(), 1);
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
  o.runner = [&](absl::Span<Job* const>) {
    if (batches++ == 0) {
      running.Notify();
      release.WaitForNotification();
    }
    return absl::OkStatus();
  };
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

}  // namespace
}  // namespace normserve
