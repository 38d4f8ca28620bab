// The CUDA backend (server/backend_cuda.cc) on the fake CUDA runtime of
// tests/fake_cuda: its pipeline, its sharing of streams between concurrent
// batches, and its recovery from device errors, on machines without a GPU.
// The fake runs each "kernel" with the CPU kernel, so every result must
// equal the CPU kernel's bit for bit; what the real kernels compute is
// cuda_normalize_test's business. Runs under ThreadSanitizer (label
// "concurrency"): the fake's streams are threads, so a batch that touched
// a staging buffer while its stream still copied would be reported.
#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/normalize.h"
#include "server/backend.h"
#include "tests/backend_test_jobs.h"
#include "tests/fake_cuda/fake_cuda.h"

namespace normserve {
namespace {

using Batch = std::vector<std::unique_ptr<TestJob>>;

// `jobs` jobs of D = d in one dtype, with every option mixed in.
Batch MakeBatch(int64_t d, DType dtype, int jobs, int64_t max_rows,
                std::mt19937* rng) {
  Batch batch;
  // One output dtype per batch, as the batch key guarantees.
  const DType output = (*rng)() % 2 ? dtype : DType::kFloat32;
  for (int j = 0; j < jobs; ++j) {
    const int64_t rows = 1 + static_cast<int64_t>((*rng)() % max_rows);
    batch.push_back(MakeJob(d, rows, dtype, output, (*rng)() % 2, (*rng)() % 2,
                            (*rng)() % 2, rng));
  }
  return batch;
}

absl::Status RunBatch(Backend& backend, Batch& batch) {
  std::vector<Job*> jobs;
  for (auto& t : batch) jobs.push_back(&t->job);
  return backend.Run(jobs);
}

// Every job's outputs against the CPU kernel run on the same job.
void ExpectCpuResults(const Batch& batch) {
  for (size_t j = 0; j < batch.size(); ++j) {
    const TestJob& t = *batch[j];
    RowSegment s = t.job.segment;
    std::vector<uint8_t> output(t.output.size()), sum(t.sum.size());
    std::vector<float> mean(t.mean.size()), rstd(t.rstd.size());
    s.output = output.data();
    if (s.sum_output != nullptr) {
      s.sum_output = sum.data();
      s.mean = mean.data();
      s.rstd = rstd.data();
    }
    NormalizeSegments({&s, 1});
    EXPECT_EQ(t.output, output) << "job " << j;
    EXPECT_EQ(t.sum, sum) << "job " << j;
    EXPECT_EQ(t.mean, mean) << "job " << j;
    EXPECT_EQ(t.rstd, rstd) << "job " << j;
  }
}

class CudaBackendFakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_cuda::Restart();
    live_before_ = fake_cuda::LiveAllocations();
  }
  void TearDown() override {
    // The backend gave back every buffer it allocated.
    EXPECT_EQ(fake_cuda::LiveAllocations(), live_before_);
    fake_cuda::Restart();
  }

  static std::unique_ptr<Backend> Make(CudaBackendOptions options = {}) {
    options.staging_bytes = 1 << 20;  // small: batches span several chunks
    auto backend = MakeCudaBackend(options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return backend.ok() ? *std::move(backend) : nullptr;
  }

  int live_before_ = 0;
};

TEST_F(CudaBackendFakeTest, BatchesOfEveryShapeMatchTheCpuKernel) {
  auto backend = Make();
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->Describe(), "Fake CUDA device (sm_90)");
  std::mt19937 rng(3);
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (int64_t d : {1, 7, 768, 1031, 70000}) {
      // From one row to several megabytes (several chunks on every slot),
      // and a D whose single row outgrows the staging buffer.
      Batch batch = MakeBatch(d, dtype, 1 + static_cast<int>(rng() % 8),
                              d > 5000 ? 4 : 600, &rng);
      ASSERT_TRUE(RunBatch(*backend, batch).ok()) << "D " << d;
      ExpectCpuResults(batch);
    }
  }
}

TEST_F(CudaBackendFakeTest, ConcurrentBatchesOverlapOnTheDevice) {
  const absl::Time start = absl::Now();
  auto backend = Make();
  ASSERT_NE(backend, nullptr);
  fake_cuda::SetKernelTime(absl::Milliseconds(2));
  constexpr int kThreads = 4, kBatches = 6;
  std::vector<std::vector<Batch>> work(kThreads);
  std::mt19937 rng(9);
  for (auto& batches : work) {
    for (int b = 0; b < kBatches; ++b) {
      const DType dtype = rng() % 2 ? DType::kFloat32 : DType::kBFloat16;
      batches.push_back(MakeBatch(rng() % 2 ? 768 : 4096, dtype,
                                  1 + static_cast<int>(rng() % 4), 200, &rng));
    }
  }
  // One batch whose rows outgrow the 1 MiB slots: a slot grows while other
  // batches have work on the device, without freeing the buffers it
  // outgrew (cudaFree would wait for the other batches' work).
  work[0][1] = MakeBatch(200000, DType::kFloat32, 2, 2, &rng);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (auto& batches : work) {
    threads.emplace_back([&] {
      for (Batch& batch : batches) {
        if (!RunBatch(*backend, batch).ok()) failures.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  for (const auto& batches : work) {
    for (const Batch& batch : batches) ExpectCpuResults(batch);
  }
  EXPECT_EQ(fake_cuda::GetCounters().frees, 0);
  // Batches from different threads had work on the device at once.
  EXPECT_GE(fake_cuda::GetCounters().max_threads_in_flight, 2);

  // The busy time counts overlapping batches once: at least one kernel's
  // time per batch on the longest thread, at most the time since the start;
  // it stands still while nothing runs.
  const std::optional<CudaDeviceStats> stats = backend->CudaStats();
  const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
  ASSERT_TRUE(stats.has_value());
  EXPECT_GE(stats->busy_seconds, kBatches * 0.002);
  EXPECT_LE(stats->busy_seconds, elapsed);
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(backend->CudaStats()->busy_seconds, stats->busy_seconds);
  // Three slots of at least 1 MiB each, on an 80 GiB device; NVML (the
  // fake libnvidia-ml.so.1 on the test's run path) found the device by its
  // PCI bus id.
  EXPECT_GE(stats->memory_used_bytes, 3 << 20);
  EXPECT_EQ(stats->memory_total_bytes, int64_t{80} << 30);
  EXPECT_EQ(stats->utilization, 0.37);
}

TEST_F(CudaBackendFakeTest, CopyThreadsPackAndUnpackLargeChunksExactly) {
  // Chunks of several MiB, so that packing and unpacking are cut into
  // slices run on the copy threads; two batches at once share them.
  CudaBackendOptions options;
  options.copy_threads = 2;
  options.staging_bytes = 8 << 20;
  auto made = MakeCudaBackend(options);
  ASSERT_TRUE(made.ok()) << made.status();
  Backend& backend = **made;
  std::mt19937 rng(14);
  std::vector<Batch> batches;
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    // 6 jobs of 256 rows of 8 or 16 KiB: chunks of 1 MiB or more. With
    // and without γ and β, residual, sum and statistics: every kind of
    // copy.
    Batch batch;
    for (int j = 0; j < 6; ++j) {
      batch.push_back(MakeJob(4096, 256, dtype, dtype, j % 2 == 0, j % 3 == 0,
                              j >= 3, &rng));
    }
    batches.push_back(std::move(batch));
  }
  {
    // One-row jobs of 256 KiB taking turns between two models' γ and β:
    // chunks of 4 rows launch as groups A, B, A, B, whose parameters are
    // packed once per group.
    Batch batch;
    for (int j = 0; j < 32; ++j) {
      batch.push_back(MakeJob(65536, 1, DType::kFloat32, DType::kFloat32, true,
                              false, false, &rng));
      if (j >= 2) batch[j]->job.segment.params = &batch[j % 2]->params;
    }
    batches.push_back(std::move(batch));
  }
  std::vector<std::thread> threads;
  for (Batch& batch : batches) {
    threads.emplace_back([&] { EXPECT_TRUE(RunBatch(backend, batch).ok()); });
  }
  for (std::thread& t : threads) t.join();
  for (const Batch& batch : batches) ExpectCpuResults(batch);
}

TEST_F(CudaBackendFakeTest, ASmallBatchWaitsForOneChunkOfALargeOne) {
  auto backend = Make();
  ASSERT_NE(backend, nullptr);
  // 20 ms kernels: a correct run returns the small batch some 8 kernels in,
  // the bound is half of about 33, and the slack between (some 150 ms)
  // absorbs a loaded machine's scheduling delays.
  fake_cuda::SetKernelTime(absl::Milliseconds(20));
  std::mt19937 rng(12);
  // 16 MiB of float32 in and 16 out: over 30 chunks of the 1 MiB slots
  // (about 10 on each of the three streams), one kernel each.
  Batch large;
  large.push_back(MakeJob(4096, 1024, DType::kFloat32, DType::kFloat32, true,
                          false, false, &rng));
  Batch small = MakeBatch(768, DType::kFloat32, 1, 4, &rng);
  const int64_t self_test = fake_cuda::GetCounters().kernels_run;
  std::thread large_thread(
      [&] { EXPECT_TRUE(RunBatch(*backend, large).ok()); });
  // Once the large batch holds every slot and has a kernel done.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (fake_cuda::GetCounters().kernels_run == self_test &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_LT(absl::Now(), give_up) << "the large batch ran no kernel";
  EXPECT_TRUE(RunBatch(*backend, small).ok());
  const int64_t kernels_before_small_returned =
      fake_cuda::GetCounters().kernels_run - self_test;
  large_thread.join();
  const int64_t kernels = fake_cuda::GetCounters().kernels_run - self_test;
  ASSERT_GE(kernels, 30);
  // The small batch took the slot of one finished large chunk, rather than
  // waiting for the large batch's last chunks.
  EXPECT_LT(kernels_before_small_returned, kernels / 2)
      << "of " << kernels << " kernels";
  ExpectCpuResults(large);
  ExpectCpuResults(small);
}

TEST_F(CudaBackendFakeTest,
       OutOfMemoryIsResourceExhaustedAndTheNextBatchWorks) {
  auto backend = Make();
  ASSERT_NE(backend, nullptr);
  std::mt19937 rng(5);
  // A row larger than the 1 MiB staging buffers (1.6 MB with its output):
  // the slot must grow, and cannot (neither to twice its size nor to the
  // row's). Each failure leaves the slot's buffers as they were and
  // nothing else allocated.
  const int live = fake_cuda::LiveAllocations();
  Batch big = MakeBatch(100000, DType::kFloat32, 1, 1, &rng);
  for (int attempt = 0; attempt < 3; ++attempt) {
    fake_cuda::FailNextCall("cudaMalloc", cudaErrorMemoryAllocation, 2);
    const absl::Status s = RunBatch(*backend, big);
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
    EXPECT_NE(s.message().find("cudaMalloc"), absl::string_view::npos) << s;
    EXPECT_EQ(fake_cuda::LiveAllocations(), live) << "attempt " << attempt;
  }
  EXPECT_EQ(fake_cuda::GetCounters().device_resets, 0);
  // Twice the slot cannot be had, the row's size can: the batch runs (and
  // the failed attempt's error does not fail its kernel).
  fake_cuda::FailNextCall("cudaMalloc", cudaErrorMemoryAllocation, 1);
  const absl::Status retried = RunBatch(*backend, big);
  ASSERT_TRUE(retried.ok()) << retried;
  ExpectCpuResults(big);
  big = MakeBatch(100000, DType::kFloat32, 1, 1, &rng);
  ASSERT_TRUE(RunBatch(*backend, big).ok());
  ExpectCpuResults(big);
}

TEST_F(CudaBackendFakeTest, AFailedCopyIsInternalAndTheNextBatchWorks) {
  auto backend = Make();
  ASSERT_NE(backend, nullptr);
  std::mt19937 rng(6);
  Batch batch = MakeBatch(1024, DType::kBFloat16, 6, 300, &rng);
  fake_cuda::FailNextCall("cudaMemcpyAsync", cudaErrorInvalidValue);
  const absl::Status s = RunBatch(*backend, batch);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_EQ(fake_cuda::GetCounters().device_resets, 0);
  ASSERT_TRUE(RunBatch(*backend, batch).ok());
  ExpectCpuResults(batch);
}

TEST_F(CudaBackendFakeTest,
       AKernelFaultResetsTheDeviceOnceAndLaterBatchesWork) {
  auto backend = Make();
  ASSERT_NE(backend, nullptr);
  std::mt19937 rng(7);
  Batch batch = MakeBatch(768, DType::kFloat32, 4, 500, &rng);
  fake_cuda::FaultNextKernel();
  const absl::Status s = RunBatch(*backend, batch);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_EQ(fake_cuda::GetCounters().device_resets, 1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(RunBatch(*backend, batch).ok());
    ExpectCpuResults(batch);
  }
  EXPECT_EQ(fake_cuda::GetCounters().device_resets, 1);
}

TEST_F(CudaBackendFakeTest,
       AFaultAmongConcurrentBatchesResetsOnceAndAllRecover) {
  auto backend = Make();
  ASSERT_NE(backend, nullptr);
  fake_cuda::SetKernelTime(absl::Milliseconds(1));
  constexpr int kThreads = 4;
  std::vector<Batch> batches;
  std::mt19937 rng(8);
  for (int t = 0; t < kThreads; ++t) {
    // One chunk each (one slot): batches run side by side.
    batches.push_back(MakeBatch(1024, DType::kBFloat16, 2, 30, &rng));
  }
  // The fault comes once two batches have work on the device, so both
  // fail; each sees the fault, and the first to get the device resets it.
  fake_cuda::FaultNextKernel(/*threads_in_flight=*/2);
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (Batch& batch : batches) {
    threads.emplace_back([&] {
      const absl::Status s = RunBatch(*backend, batch);
      if (!s.ok()) {
        failed.fetch_add(1);
        EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_GE(failed.load(), 2);
  EXPECT_EQ(fake_cuda::GetCounters().device_resets, 1);
  for (Batch& batch : batches) {
    ASSERT_TRUE(RunBatch(*backend, batch).ok());
    ExpectCpuResults(batch);
  }
}

TEST_F(CudaBackendFakeTest, AFailedResetMakesTheBackendUnavailable) {
  auto backend = Make();
  ASSERT_NE(backend, nullptr);
  std::mt19937 rng(10);
  Batch batch = MakeBatch(768, DType::kFloat32, 2, 10, &rng);
  fake_cuda::FaultNextKernel();
  fake_cuda::FailDeviceResets(true);
  EXPECT_EQ(RunBatch(*backend, batch).code(), absl::StatusCode::kInternal);
  const absl::Status later = RunBatch(*backend, batch);
  EXPECT_EQ(later.code(), absl::StatusCode::kUnavailable) << later;
  EXPECT_NE(later.message().find("restart the server"),
            absl::string_view::npos);
  // What the broken device still holds goes with a reset that works.
  fake_cuda::FailDeviceResets(false);
  backend.reset();
  ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
}

TEST_F(CudaBackendFakeTest, Int8IsFailedPrecondition) {
  auto backend = Make();
  ASSERT_NE(backend, nullptr);
  TestJob t;
  t.job.segment.input_dtype = t.job.segment.output_dtype = DType::kInt8;
  t.job.segment.rows = 1;
  Job* batch[] = {&t.job};
  EXPECT_EQ(backend->Run(batch).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CudaBackendFakeTest, AStartupFailureLeavesNothingAllocated) {
  fake_cuda::FailNextCall("kernel", cudaErrorNoKernelImageForDevice);
  CudaBackendOptions options;
  auto backend = MakeCudaBackend(options);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition)
      << backend.status();
}

}  // namespace
}  // namespace normserve
