// The device router and the CUDA backend. Routing and the refusal on hosts
// (or builds) without CUDA run everywhere; the backend's results need a GPU
// and skip with "no CUDA device" without one.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "kernels/normalize.h"
#include "server/backend.h"
#include "server/model_registry.h"
#include "tests/backend_test_jobs.h"

namespace normserve {
namespace {

class CountingBackend : public Backend {
 public:
  absl::Status Run(absl::Span<Job* const> batch) override {
    runs += 1;
    rows += batch.size();
    return absl::OkStatus();
  }
  int runs = 0;
  size_t rows = 0;
};

Job JobOn(DeviceKind device) {
  Job job;
  job.key.device = static_cast<int>(device);
  return job;
}

TEST(DeviceRouterTest, RoutesByTheBatchKeysDevice) {
  CountingBackend cpu, cuda;
  auto router = MakeDeviceRouter(&cpu, &cuda);
  Job a = JobOn(DeviceKind::kCpu), b = JobOn(DeviceKind::kCuda);
  Job* cpu_batch[] = {&a};
  Job* cuda_batch[] = {&b};
  EXPECT_TRUE(router->Run(cpu_batch).ok());
  EXPECT_TRUE(router->Run(cuda_batch).ok());
  EXPECT_TRUE(router->Run(cuda_batch).ok());
  EXPECT_EQ(cpu.runs, 1);
  EXPECT_EQ(cuda.runs, 2);
  EXPECT_TRUE(router->Run({}).ok());
}

TEST(DeviceRouterTest, CudaBatchWithoutACudaBackendIsFailedPrecondition) {
  CountingBackend cpu;
  auto router = MakeDeviceRouter(&cpu, nullptr);
  Job b = JobOn(DeviceKind::kCuda);
  Job* batch[] = {&b};
  const absl::Status s = router->Run(batch);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("no usable CUDA device"), absl::string_view::npos);
  EXPECT_EQ(cpu.runs, 0);
}

// Without a device (or without CUDA in the build) the factory says why and
// nothing crashes; with one it succeeds.
TEST(CudaBackendTest, FactoryRefusesHostsWithoutAUsableDevice) {
  auto backend = MakeCudaBackend(CudaBackendOptions());
  if (backend.ok()) GTEST_SKIP() << "a usable CUDA device is present";
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  const absl::string_view m = backend.status().message();
  EXPECT_TRUE(m.find("no CUDA device") != absl::string_view::npos ||
              m.find("no CUDA support") != absl::string_view::npos)
      << m;
}

// ---- With a GPU ----

class CudaBackendGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CudaBackendOptions options;
    options.staging_bytes = 1 << 20;  // small: forces chunking
    auto b = MakeCudaBackend(options);
    if (!b.ok()) GTEST_SKIP() << b.status().message();
    backend_ = std::move(*b);
  }
  std::unique_ptr<Backend> backend_;
};

// A batch mixing rows counts, parameters and optional buffers, larger than
// one staging buffer: every job equals the CPU kernel within the bound and
// equals itself run alone, bit for bit.
TEST_F(CudaBackendGpuTest, MixedBatchMatchesCpuAndIsBatchInvariant) {
  std::mt19937 rng(4);
  for (DType in : {DType::kFloat32, DType::kBFloat16}) {
    for (int64_t d : {768, 1031, 20000}) {
      std::vector<std::unique_ptr<TestJob>> jobs;
      for (int j = 0; j < 12; ++j) {
        const int64_t rows =
            1 + static_cast<int64_t>(rng() % (d > 5000 ? 20 : 400));
        jobs.push_back(MakeJob(d, rows, in, DType::kFloat32, j % 3 != 0,
                               j % 2 == 0, j % 4 == 1, &rng));
      }
      std::vector<Job*> batch;
      for (auto& t : jobs) batch.push_back(&t->job);
      ASSERT_TRUE(backend_->Run(batch).ok());
      for (auto& t : jobs) {
        // CPU reference of the same job.
        std::vector<uint8_t> cpu(t->output.size());
        RowSegment s = t->job.segment;
        s.output = cpu.data();
        std::vector<uint8_t> cpu_sum(t->sum.size());
        std::vector<float> cpu_mean(t->mean.size()), cpu_rstd(t->rstd.size());
        if (s.sum_output != nullptr) {
          s.sum_output = cpu_sum.data();
          s.mean = cpu_mean.data();
          s.rstd = cpu_rstd.data();
        }
        NormalizeSegments({&s, 1});
        for (int64_t r = 0; r < s.rows; ++r) {
          float scale = 0;
          for (int64_t i = 0; i < d; ++i)
            scale =
                std::max(scale, std::abs(At(DType::kFloat32, cpu, r * d + i)));
          for (int64_t i = 0; i < d; ++i) {
            const size_t k = static_cast<size_t>(r * d + i);
            ASSERT_LE(std::abs(At(DType::kFloat32, t->output, k) -
                               At(DType::kFloat32, cpu, k)),
                      2e-5f * scale)
                << "D " << d << " row " << r << " col " << i;
          }
          if (!t->rstd.empty()) {
            EXPECT_NEAR(t->rstd[r], cpu_rstd[r], 2e-5 * cpu_rstd[r]);
          }
        }
        EXPECT_EQ(t->sum, cpu_sum);
        // Alone, the same bits.
        const std::vector<uint8_t> in_batch = t->output;
        Job* alone[] = {&t->job};
        ASSERT_TRUE(backend_->Run(alone).ok());
        EXPECT_EQ(t->output, in_batch) << "D " << d;
      }
    }
  }
}

// Batches from several batcher workers at once share the streams
// (server/internal/chunk_runner.h). Every job's results equal the same
// batch run alone, bit for bit, and the backend reports its busy time (at
// most the time since it started) and the device's memory.
TEST(CudaBackendConcurrencyTest, ConcurrentBatchesEqualTheSameBatchesRunAlone) {
  CudaBackendOptions options;
  options.staging_bytes = 1 << 20;  // small: large batches span every slot
  const absl::Time start = absl::Now();
  auto backend = MakeCudaBackend(options);
  if (!backend.ok()) GTEST_SKIP() << backend.status().message();

  constexpr int kThreads = 4, kBatches = 8;
  struct Batch {
    std::vector<std::unique_ptr<TestJob>> jobs;
    std::vector<std::vector<uint8_t>> output, sum;  // run alone
  };
  std::vector<std::vector<Batch>> work(kThreads);
  std::mt19937 rng(11);
  for (int t = 0; t < kThreads; ++t) {
    for (int b = 0; b < kBatches; ++b) {
      Batch batch;
      const int64_t d = std::vector<int64_t>{768, 1031, 4096}[rng() % 3];
      const DType in = rng() % 2 ? DType::kFloat32 : DType::kBFloat16;
      // From one small job to several megabytes (several chunks).
      const int jobs = 1 + static_cast<int>(rng() % 6);
      for (int j = 0; j < jobs; ++j) {
        const int64_t rows = 1 + static_cast<int64_t>(rng() % 300);
        batch.jobs.push_back(
            MakeJob(d, rows, in, in, rng() % 2, rng() % 2, rng() % 2, &rng));
      }
      work[static_cast<size_t>(t)].push_back(std::move(batch));
    }
  }
  auto run = [&](Batch& batch) {
    std::vector<Job*> jobs;
    for (auto& j : batch.jobs) jobs.push_back(&j->job);
    return (*backend)->Run(jobs);
  };
  for (auto& batches : work) {
    for (Batch& batch : batches) {
      ASSERT_TRUE(run(batch).ok());
      for (auto& j : batch.jobs) {
        batch.output.push_back(j->output);
        batch.sum.push_back(j->sum);
        std::fill(j->output.begin(), j->output.end(), 0);
        std::fill(j->sum.begin(), j->sum.end(), 0);
      }
    }
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (auto& batches : work) {
    threads.emplace_back([&] {
      for (Batch& batch : batches) {
        if (!run(batch).ok()) failures.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    for (int b = 0; b < kBatches; ++b) {
      const Batch& batch = work[static_cast<size_t>(t)][static_cast<size_t>(b)];
      for (size_t j = 0; j < batch.jobs.size(); ++j) {
        EXPECT_EQ(batch.jobs[j]->output, batch.output[j])
            << "thread " << t << " batch " << b << " job " << j;
        EXPECT_EQ(batch.jobs[j]->sum, batch.sum[j])
            << "thread " << t << " batch " << b << " job " << j;
      }
    }
  }
  const std::optional<CudaDeviceStats> stats = (*backend)->CudaStats();
  ASSERT_TRUE(stats.has_value());
  EXPECT_GT(stats->busy_seconds, 0.0);
  EXPECT_LE(stats->busy_seconds, absl::ToDoubleSeconds(absl::Now() - start));
  EXPECT_GT(stats->memory_used_bytes, 0);
  EXPECT_GE(stats->memory_total_bytes, stats->memory_used_bytes);
}

TEST_F(CudaBackendGpuTest, Int8IsRefusedWithFailedPrecondition) {
  TestJob t;
  t.job.segment.input_dtype = t.job.segment.output_dtype = DType::kInt8;
  t.job.segment.rows = 1;
  Job* batch[] = {&t.job};
  const absl::Status s = backend_->Run(batch);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("INT8"), absl::string_view::npos);
}

}  // namespace
}  // namespace normserve
