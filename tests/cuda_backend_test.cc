// The device router and the CUDA backend. Routing and the refusal on hosts
// (or builds) without CUDA run everywhere; the backend's results need a GPU
// and skip with "no CUDA device" without one.
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "kernels/normalize.h"
#include "server/backend.h"
#include "server/model_registry.h"

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

// A job and the buffers it points at.
struct TestJob {
  NormParams params;
  std::vector<float> gamma, beta;
  std::vector<uint8_t> input, residual, output, sum;
  std::vector<float> mean, rstd;
  Job job;
};

std::unique_ptr<TestJob> MakeJob(int64_t d, int64_t rows, DType in, DType out,
                                 bool affine, bool residual, bool extras,
                                 std::mt19937* rng) {
  auto t = std::make_unique<TestJob>();
  std::normal_distribution<float> dist(1.0f, 2.0f);
  t->params.dim = d;
  if (affine) {
    for (int64_t i = 0; i < d; ++i) {
      t->gamma.push_back(dist(*rng));
      t->beta.push_back(dist(*rng));
    }
    t->params.gamma = t->gamma.data();
    t->params.beta = t->beta.data();
  }
  const size_t n = static_cast<size_t>(rows * d);
  auto fill = [&](std::vector<uint8_t>* bytes) {
    bytes->resize(n * DTypeSize(in));
    for (size_t i = 0; i < n; ++i) {
      const float v = dist(*rng);
      if (in == DType::kFloat32) {
        std::memcpy(bytes->data() + 4 * i, &v, 4);
      } else {
        const uint16_t h =
            in == DType::kFloat16 ? FloatToHalf(v) : FloatToBFloat16(v);
        std::memcpy(bytes->data() + 2 * i, &h, 2);
      }
    }
  };
  fill(&t->input);
  if (residual) fill(&t->residual);
  t->output.assign(n * DTypeSize(out), 0);
  RowSegment& s = t->job.segment;
  s.params = &t->params;
  s.input_dtype = in;
  s.output_dtype = out;
  s.input = t->input.data();
  s.output = t->output.data();
  s.rows = rows;
  s.residual = residual ? t->residual.data() : nullptr;
  if (extras) {
    t->sum.assign(n * DTypeSize(in), 0);
    t->mean.assign(static_cast<size_t>(rows), 0);
    t->rstd.assign(static_cast<size_t>(rows), 0);
    s.sum_output = t->sum.data();
    s.mean = t->mean.data();
    s.rstd = t->rstd.data();
  }
  t->job.rows = rows;
  t->job.key.device = static_cast<int>(DeviceKind::kCuda);
  t->job.key.dim = d;
  return t;
}

float At(DType t, const std::vector<uint8_t>& b, size_t k) {
  if (t == DType::kFloat32) {
    float f;
    std::memcpy(&f, &b[4 * k], 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, &b[2 * k], 2);
  return t == DType::kFloat16 ? HalfToFloat(h) : BFloat16ToFloat(h);
}

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
