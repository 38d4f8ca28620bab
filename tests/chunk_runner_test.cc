// How the CUDA backend runs a batch's chunks on shared staging slots
// (server/internal/chunk_runner.h), on the CPU: staging runs ahead of
// finishing by the slots a batch holds, a slot is never staged while a
// chunk is on it, a waiting batch gets a slot after one chunk of a large
// one, a batch takes slots that free up, errors drain and return every slot,
// and concurrent batches all finish. Runs under ThreadSanitizer (label
// "concurrency").
#include "server/internal/chunk_runner.h"

#include <atomic>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/internal/mutex.h"
#include "server/internal/slot_pool.h"

namespace normserve::internal {
namespace {

// Steps that log what they were asked, check that no slot carries two
// chunks at once, and call the test's hooks.
class LoggingSteps final : public ChunkSteps {
 public:
  explicit LoggingSteps(int slots) : on_slot_(static_cast<size_t>(slots)) {
    for (auto& c : on_slot_) c.store(-1);
  }

  absl::Status Stage(int chunk, int slot) override {
    int free = -1;
    if (!on_slot_[static_cast<size_t>(slot)].compare_exchange_strong(free,
                                                                     chunk)) {
      ADD_FAILURE() << "chunk " << chunk << " staged on slot " << slot
                    << ", which still carries chunk " << free;
    }
    in_flight_ += 1;
    max_in_flight_ = std::max(max_in_flight_, in_flight_);
    Log(absl::StrCat("S", chunk));
    slots_.push_back(slot);
    return stage_hook ? stage_hook(chunk) : absl::OkStatus();
  }

  absl::Status Finish(int chunk, int slot) override {
    Log(absl::StrCat("F", chunk));
    const absl::Status s = finish_hook ? finish_hook(chunk) : absl::OkStatus();
    if (!s.ok()) return s;  // still on the slot: to be drained
    int expected = chunk;
    if (!on_slot_[static_cast<size_t>(slot)].compare_exchange_strong(expected,
                                                                     -1)) {
      ADD_FAILURE() << "chunk " << chunk << " finished on slot " << slot
                    << ", which carries chunk " << expected;
    }
    in_flight_ -= 1;
    return s;
  }

  void Drain(int slot) override {
    drained.insert(slot);
    on_slot_[static_cast<size_t>(slot)].store(-1);
  }

  std::function<absl::Status(int chunk)> stage_hook, finish_hook;
  std::string log;
  std::set<int> drained;
  int max_in_flight() const { return max_in_flight_; }
  // The slot of each Stage call, in order.
  const std::vector<int>& slots() const { return slots_; }

 private:
  void Log(const std::string& event) {
    if (!log.empty()) log += ' ';
    log += event;
  }

  std::vector<std::atomic<int>> on_slot_;  // chunk on each slot, or -1
  int in_flight_ = 0, max_in_flight_ = 0;
  std::vector<int> slots_;
};

TEST(ChunkRunnerTest, StagingRunsAheadOfFinishingByTheSlotsHeld) {
  SlotPool pool(3);
  LoggingSteps steps(3);
  ASSERT_TRUE(RunChunks(8, 3, pool, steps).ok());
  EXPECT_EQ(steps.log, "S0 S1 S2 F0 S3 F1 S4 F2 S5 F3 S6 F4 S7 F5 F6 F7");
  // Chunk c + 3 reuses chunk c's slot, the one just finished.
  ASSERT_EQ(steps.slots().size(), 8u);
  for (size_t c = 3; c < 8; ++c) {
    EXPECT_EQ(steps.slots()[c], steps.slots()[c - 3]) << "chunk " << c;
  }
  EXPECT_EQ(pool.free_slots(), 3);
}

TEST(ChunkRunnerTest, TakesNoMoreSlotsThanChunksOrThePoolHas) {
  SlotPool pool(3);
  LoggingSteps one(3);
  one.stage_hook = [&](int) {
    EXPECT_EQ(pool.free_slots(), 2) << "one chunk took more than one slot";
    return absl::OkStatus();
  };
  ASSERT_TRUE(RunChunks(1, 3, pool, one).ok());
  EXPECT_EQ(one.log, "S0 F0");

  LoggingSteps many(3);
  ASSERT_TRUE(RunChunks(20, 100, pool, many).ok());
  EXPECT_EQ(many.max_in_flight(), 3);
  LoggingSteps serial(3);
  ASSERT_TRUE(RunChunks(4, 0, pool, serial).ok());
  EXPECT_EQ(serial.log, "S0 F0 S1 F1 S2 F2 S3 F3");
  EXPECT_EQ(pool.free_slots(), 3);
}

TEST(ChunkRunnerTest, AWaitingBatchGetsASlotAfterOneChunkOfALargeOne) {
  SlotPool pool(3);
  LoggingSteps large(3), small(3);
  Notification small_staged;
  small.stage_hook = [&](int) {
    small_staged.Notify();
    return absl::OkStatus();
  };
  std::thread small_batch;
  large.finish_hook = [&](int chunk) {
    if (chunk == 0) {
      // The large batch holds every slot; the small one arrives and waits.
      EXPECT_EQ(pool.free_slots(), 0);
      small_batch =
          std::thread([&] { EXPECT_TRUE(RunChunks(1, 3, pool, small).ok()); });
      while (pool.waiting() != 1) std::this_thread::yield();
    }
    return absl::OkStatus();
  };
  bool small_first = false;
  large.stage_hook = [&](int chunk) {
    // Before the large batch stages its chunk 4 (of 12) the small one has
    // run: it got the slot of chunk 0 (or 1) once that chunk finished.
    if (chunk == 4) {
      small_first =
          small_staged.WaitForNotificationWithTimeout(absl::Seconds(10));
    }
    return absl::OkStatus();
  };
  ASSERT_TRUE(RunChunks(12, 3, pool, large).ok());
  small_batch.join();
  EXPECT_TRUE(small_first) << "the small batch waited for the large one";
  EXPECT_EQ(small.log, "S0 F0");
  EXPECT_EQ(pool.free_slots(), 3);
  EXPECT_EQ(pool.waiting(), 0);
}

TEST(ChunkRunnerTest, ABatchTakesSlotsThatFreeUp) {
  SlotPool pool(3);
  std::vector<int> others = pool.Acquire(2);
  ASSERT_EQ(others.size(), 2u);
  LoggingSteps steps(3);
  steps.stage_hook = [&](int chunk) {
    // Started with the one free slot; the other two free up meanwhile.
    if (chunk == 0) {
      EXPECT_EQ(pool.free_slots(), 0);
      for (int s : others) pool.Release(s);
    }
    return absl::OkStatus();
  };
  ASSERT_TRUE(RunChunks(6, 3, pool, steps).ok());
  EXPECT_EQ(steps.log, "S0 S1 S2 F0 S3 F1 S4 F2 S5 F3 F4 F5");
  EXPECT_EQ(steps.max_in_flight(), 3);
  EXPECT_EQ(pool.free_slots(), 3);
}

TEST(ChunkRunnerTest, AFailedStageDrainsEverySlotHeldAndReturnsThem) {
  SlotPool pool(3);
  LoggingSteps steps(3);
  steps.stage_hook = [](int chunk) {
    return chunk == 3 ? absl::InternalError("copy failed") : absl::OkStatus();
  };
  const absl::Status s = RunChunks(6, 3, pool, steps);
  EXPECT_EQ(s, absl::InternalError("copy failed"));
  EXPECT_EQ(steps.log, "S0 S1 S2 F0 S3");
  // Chunks 1 and 2 in flight, chunk 3 half staged: their three slots.
  EXPECT_EQ(steps.drained, (std::set<int>{0, 1, 2}));
  EXPECT_EQ(pool.free_slots(), 3);
}

TEST(ChunkRunnerTest, AFailedFinishDrainsEverySlotHeldAndReturnsThem) {
  SlotPool pool(3);
  LoggingSteps steps(3);
  steps.finish_hook = [](int chunk) {
    return chunk == 2 ? absl::InternalError("kernel faulted")
                      : absl::OkStatus();
  };
  const absl::Status s = RunChunks(6, 2, pool, steps);
  EXPECT_EQ(s, absl::InternalError("kernel faulted"));
  EXPECT_EQ(steps.log, "S0 S1 F0 S2 F1 S3 F2");
  // Chunk 2 (whose finish failed) and chunk 3: two slots.
  EXPECT_EQ(steps.drained.size(), 2u);
  EXPECT_EQ(pool.free_slots(), 3);
}

TEST(ChunkRunnerTest, ConcurrentBatchesAllFinishAndNeverShareASlot) {
  constexpr int kSlots = 3, kThreads = 6, kBatches = 300;
  SlotPool pool(kSlots);
  // Chunk on each slot across all batches, or -1.
  std::atomic<int> owner[kSlots];
  for (auto& o : owner) o.store(-1);
  std::atomic<int> conflicts{0}, chunks_run{0};
  int chunks_wanted = 0;
  std::vector<std::vector<int>> plans(kThreads);
  std::mt19937 rng(11);
  for (auto& p : plans) {
    for (int b = 0; b < kBatches; ++b) {
      p.push_back(1 + static_cast<int>(rng() % 6));
      chunks_wanted += p.back();
    }
  }
  // Steps that mark the slot owned from stage to finish, in one global
  // table, and check order within the batch.
  class SharedSteps final : public ChunkSteps {
   public:
    SharedSteps(std::atomic<int>* owner, std::atomic<int>& conflicts,
                std::atomic<int>& run, int id)
        : owner_(owner), conflicts_(conflicts), run_(run), id_(id) {}
    absl::Status Stage(int chunk, int slot) override {
      int free = -1;
      if (chunk != staged_++ ||
          !owner_[slot].compare_exchange_strong(free, id_)) {
        conflicts_.fetch_add(1);
      }
      std::this_thread::yield();
      return absl::OkStatus();
    }
    absl::Status Finish(int chunk, int slot) override {
      int mine = id_;
      if (chunk != finished_++ ||
          !owner_[slot].compare_exchange_strong(mine, -1)) {
        conflicts_.fetch_add(1);
      }
      run_.fetch_add(1);
      return absl::OkStatus();
    }
    void Drain(int) override { conflicts_.fetch_add(1); }  // no errors here

   private:
    std::atomic<int>* owner_;
    std::atomic<int>& conflicts_;
    std::atomic<int>& run_;
    const int id_;
    int staged_ = 0, finished_ = 0;
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        SharedSteps steps(owner, conflicts, chunks_run, t * kBatches + b);
        const int max_in_flight = 1 + (t + b) % kSlots;
        if (!RunChunks(plans[t][b], max_in_flight, pool, steps).ok()) {
          conflicts.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(conflicts.load(), 0);
  EXPECT_EQ(chunks_run.load(), chunks_wanted);
  EXPECT_EQ(pool.free_slots(), kSlots);
  EXPECT_EQ(pool.waiting(), 0);
}

}  // namespace
}  // namespace normserve::internal
