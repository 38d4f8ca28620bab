// Jobs for backend tests: random rows with optional γ/β, residual, sum
// and statistics, in the buffers a Job points at.
#ifndef NORMSERVE_TESTS_BACKEND_TEST_JOBS_H_
#define NORMSERVE_TESTS_BACKEND_TEST_JOBS_H_

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/normalize.h"
#include "server/batcher.h"
#include "server/model_registry.h"

namespace normserve {

// A job and the buffers it points at.
struct TestJob {
  NormParams params;
  std::vector<float> gamma, beta;
  std::vector<uint8_t> input, residual, output, sum;
  std::vector<float> mean, rstd;
  Job job;
};

inline std::unique_ptr<TestJob> MakeJob(int64_t d, int64_t rows, DType in,
                                        DType out, bool affine, bool residual,
                                        bool extras, std::mt19937* rng) {
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

inline float At(DType t, const std::vector<uint8_t>& b, size_t k) {
  if (t == DType::kFloat32) {
    float f;
    std::memcpy(&f, &b[4 * k], 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, &b[2 * k], 2);
  return t == DType::kFloat16 ? HalfToFloat(h) : BFloat16ToFloat(h);
}

}  // namespace normserve

#endif  // NORMSERVE_TESTS_BACKEND_TEST_JOBS_H_
