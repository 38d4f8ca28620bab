// The CUDA backend's slot pool, on the CPU: a batch gets the free slots it
// asks for (at least one, waiting for it), no slot is ever held by two
// batches, and a released slot wakes a waiting batch. Runs under
// ThreadSanitizer (label "concurrency").
#include "server/internal/slot_pool.h"

#include <atomic>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/internal/mutex.h"

namespace normserve::internal {
namespace {

TEST(SlotPoolTest, TakesTheFreeSlotsItAsksForLowestFirst) {
  SlotPool pool(3);
  EXPECT_EQ(pool.Acquire(2), (std::vector<int>{0, 1}));
  EXPECT_EQ(pool.free_slots(), 1);
  // More than is free: what is free, without waiting.
  EXPECT_EQ(pool.Acquire(3), (std::vector<int>{2}));
  EXPECT_EQ(pool.free_slots(), 0);
  pool.Release(1);
  EXPECT_EQ(pool.Acquire(1), (std::vector<int>{1}));
  for (int s : {0, 1, 2}) pool.Release(s);
  // More than the pool has, or less than one: clamped.
  EXPECT_EQ(pool.Acquire(10), (std::vector<int>{0, 1, 2}));
  for (int s : {0, 1, 2}) pool.Release(s);
  EXPECT_EQ(pool.Acquire(0), (std::vector<int>{0}));
}

TEST(SlotPoolTest, ReleasingASlotTwiceOrOneNeverTakenCountsOnce) {
  SlotPool pool(2);
  const std::vector<int> taken = pool.Acquire(1);
  ASSERT_EQ(taken, (std::vector<int>{0}));
  pool.Release(0);
  pool.Release(0);
  pool.Release(1);
  pool.Release(-1);
  pool.Release(7);
  EXPECT_EQ(pool.free_slots(), 2);
}

TEST(SlotPoolTest, AcquireWaitsForARelease) {
  SlotPool pool(1);
  ASSERT_EQ(pool.Acquire(1), (std::vector<int>{0}));
  Notification got;
  std::vector<int> waiter_slots;
  std::thread waiter([&] {
    waiter_slots = pool.Acquire(1);
    got.Notify();
  });
  // Not before the release (a bounded look: it must still be waiting).
  EXPECT_FALSE(got.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  pool.Release(0);
  EXPECT_TRUE(got.WaitForNotificationWithTimeout(absl::Seconds(10)));
  waiter.join();
  EXPECT_EQ(waiter_slots, (std::vector<int>{0}));
}

TEST(SlotPoolTest, WaitingBatchesAreServedInArrivalOrder) {
  SlotPool pool(1);
  ASSERT_EQ(pool.Acquire(1), (std::vector<int>{0}));
  Mutex mu;
  std::vector<int> order;
  std::vector<std::thread> waiters;
  for (int w = 0; w < 3; ++w) {
    waiters.emplace_back([&, w] {
      pool.Acquire(1);
      {
        MutexLock lock(&mu);
        order.push_back(w);
      }
      pool.Release(0);
    });
    // The next waiter arrives only once this one waits.
    while (pool.waiting() != w + 1) std::this_thread::yield();
  }
  pool.Release(0);
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(pool.waiting(), 0);
}

TEST(SlotPoolTest, TryAcquireTakesAFreeSlotUnlessSomebodyWaits) {
  SlotPool pool(2);
  EXPECT_EQ(pool.TryAcquire(), 0);
  EXPECT_EQ(pool.TryAcquire(), 1);
  EXPECT_EQ(pool.TryAcquire(), std::nullopt);
  EXPECT_FALSE(pool.starved());
  // A waiter, with no slot free: starved.
  Notification done;
  std::thread waiter([&] {
    const std::vector<int> got = pool.Acquire(2);
    done.WaitForNotification();
    for (int s : got) pool.Release(s);
  });
  while (pool.waiting() != 1) std::this_thread::yield();
  EXPECT_TRUE(pool.starved());
  // A slot frees up: it is the waiter's, whether or not it has woken yet.
  pool.Release(1);
  EXPECT_FALSE(pool.starved());
  const std::optional<int> jumped = pool.TryAcquire();
  EXPECT_EQ(jumped, std::nullopt) << "TryAcquire overtook a waiter";
  if (jumped.has_value()) pool.Release(*jumped);
  done.Notify();
  waiter.join();
  EXPECT_EQ(pool.waiting(), 0);
  EXPECT_FALSE(pool.starved());
  EXPECT_EQ(pool.TryAcquire(), 1);
  pool.Release(0);
  pool.Release(1);
  EXPECT_EQ(pool.free_slots(), 2);
}

TEST(SlotPoolTest, ConcurrentBatchesNeverShareASlot) {
  constexpr int kSlots = 3, kThreads = 6, kRounds = 2000;
  SlotPool pool(kSlots);
  std::atomic<int> owner[kSlots];
  for (auto& o : owner) o.store(-1);
  std::atomic<int> conflicts{0}, acquired{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int r = 0; r < kRounds; ++r) {
        const int want = 1 + static_cast<int>(rng() % kSlots);
        std::vector<int> slots = pool.Acquire(want);
        if (slots.empty() || static_cast<int>(slots.size()) > want) {
          conflicts.fetch_add(1);
        }
        for (int s : slots) {
          int expected = -1;
          if (!owner[s].compare_exchange_strong(expected, t)) {
            conflicts.fetch_add(1);
          }
        }
        acquired.fetch_add(static_cast<int>(slots.size()));
        std::this_thread::yield();
        // Hand back one at a time, as a batch does after each slot's last
        // chunk.
        for (int s : slots) {
          int expected = t;
          if (!owner[s].compare_exchange_strong(expected, -1)) {
            conflicts.fetch_add(1);
          }
          pool.Release(s);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(conflicts.load(), 0);
  EXPECT_GE(acquired.load(), kThreads * kRounds);
  EXPECT_EQ(pool.free_slots(), kSlots);
}

}  // namespace
}  // namespace normserve::internal
