// The CPU kernel against the float64 reference: random shapes and
// parameters, adversarial rows, NaN/Inf propagation and batch invariance.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/normalize.h"
#include "kernels/reference.h"

namespace normserve {
namespace {

// The contract's bound: per row, |y - ref| <= 1e-5 * max|ref| of that row.
constexpr double kRelTol = 1e-5;

void ExpectCloseToReference(const NormParams& p, const std::vector<float>& x,
                            int64_t rows, const std::vector<float>& y) {
  const std::vector<double> ref = ReferenceNormalize(p, x.data(), rows);
  for (int64_t r = 0; r < rows; ++r) {
    double scale = 0.0;
    for (int64_t i = 0; i < p.dim; ++i) {
      scale = std::max(scale, std::abs(ref[r * p.dim + i]));
    }
    double worst = 0.0;
    for (int64_t i = 0; i < p.dim; ++i) {
      worst = std::max(worst, std::abs(y[r * p.dim + i] - ref[r * p.dim + i]));
    }
    ASSERT_LE(worst, kRelTol * scale)
        << "row " << r << " of " << rows << ", D = " << p.dim;
  }
}

std::vector<float> Normal(size_t n, float mean, float std, std::mt19937* rng) {
  std::normal_distribution<float> dist(mean, std);
  std::vector<float> v(n);
  for (float& f : v) f = dist(*rng);
  return v;
}

std::vector<float> NormalizeAll(const NormParams& p, const std::vector<float>& x,
                       int64_t rows) {
  std::vector<float> y(x.size());
  NormalizeRows(p, x.data(), y.data(), rows);
  return y;
}

TEST(NormalizeTest, MatchesReferenceOverRandomShapesAndParameters) {
  std::mt19937 rng(42);
  const int64_t dims[] = {1, 2, 3, 7, 64, 100, 768, 1024, 4095, 4096, 16384, 65536};
  for (int64_t d : dims) {
    for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
      const int64_t rows = std::min<int64_t>(3000, std::max<int64_t>(1, (1 << 21) / d));
      std::uniform_real_distribution<float> eps_dist(1e-6f, 1e-2f);
      const std::vector<float> gamma = Normal(static_cast<size_t>(d), 1, 0.5f, &rng);
      const std::vector<float> beta = Normal(static_cast<size_t>(d), 0, 0.5f, &rng);
      NormParams p;
      p.kind = kind;
      p.dim = d;
      p.epsilon = eps_dist(rng);
      p.gamma = (d % 2 == 0) ? gamma.data() : nullptr;
      p.beta = (d % 3 != 0) ? beta.data() : nullptr;
      const std::vector<float> x =
          Normal(static_cast<size_t>(rows * d), 3.0f, 2.0f, &rng);
      SCOPED_TRACE(testing::Message() << "D = " << d << " kind = "
                                      << static_cast<int>(kind));
      ExpectCloseToReference(p, x, rows, NormalizeAll(p, x, rows));
    }
  }
}

TEST(NormalizeTest, AccurateWhenMeanIsFarLargerThanStd) {
  std::mt19937 rng(7);
  for (int64_t d : {8, 768, 65536}) {
    NormParams p;
    p.dim = d;
    const std::vector<float> x = Normal(static_cast<size_t>(4 * d), 1e4f, 1e-3f, &rng);
    ExpectCloseToReference(p, x, 4, NormalizeAll(p, x, 4));
  }
}

TEST(NormalizeTest, ConstantRowGivesExactlyBeta) {
  const int64_t d = 768;
  NormParams p;
  p.dim = d;
  std::vector<float> beta(d), gamma(d, 3.0f);
  for (int64_t i = 0; i < d; ++i) beta[i] = 0.25f * static_cast<float>(i % 9) - 1.0f;
  p.gamma = gamma.data();
  p.beta = beta.data();
  for (float c : {0.0f, 1.0f, -7.5f, 12345.678f, 3e38f, 1e-38f}) {
    const std::vector<float> x(d, c);
    const std::vector<float> y = NormalizeAll(p, x, 1);
    for (int64_t i = 0; i < d; ++i) ASSERT_EQ(y[i], beta[i]) << "constant " << c;
  }
}

TEST(NormalizeTest, HugeAndTinyMagnitudes) {
  std::mt19937 rng(3);
  for (float scale : {1e30f, 1e37f, 1e-30f, 1e-40f /* subnormal */}) {
    NormParams p;
    p.dim = 1024;
    std::vector<float> x = Normal(2 * 1024, 0, 1, &rng);
    for (float& v : x) v *= scale;
    SCOPED_TRACE(testing::Message() << "scale " << scale);
    ExpectCloseToReference(p, x, 2, NormalizeAll(p, x, 2));
  }
}

TEST(NormalizeTest, NanOrInfPoisonsOnlyItsRow) {
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  for (float bad : {kNan, kInf, -kInf}) {
    for (int64_t pos : {0, 5}) {
      NormParams p;
      p.dim = 16;
      std::vector<float> x(3 * 16);
      for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 5);
      x[16 + pos] = bad;
      const std::vector<float> y = NormalizeAll(p, x, 3);
      for (int64_t i = 0; i < 16; ++i) {
        EXPECT_TRUE(std::isnan(y[16 + i])) << "bad " << bad << " at " << pos;
        EXPECT_FALSE(std::isnan(y[i]));
        EXPECT_FALSE(std::isnan(y[32 + i]));
      }
    }
  }
}

TEST(NormalizeTest, RowBitsDoNotDependOnBatchOrAlignment) {
  std::mt19937 rng(11);
  const int64_t d = 771;  // Odd: rows land at every alignment in a batch.
  NormParams p;
  p.dim = d;
  const std::vector<float> batch = Normal(static_cast<size_t>(9 * d), 1, 2, &rng);
  const std::vector<float> together = NormalizeAll(p, batch, 9);
  for (int64_t r = 0; r < 9; ++r) {
    // The same row alone, at a different offset from an aligned buffer.
    std::vector<float> alone(static_cast<size_t>(d + 3));
    std::memcpy(alone.data() + (r % 4), batch.data() + r * d, d * sizeof(float));
    std::vector<float> out(static_cast<size_t>(d + 3));
    NormalizeRows(p, alone.data() + (r % 4), out.data() + ((r + 1) % 4), 1);
    ASSERT_EQ(0, std::memcmp(out.data() + ((r + 1) % 4), together.data() + r * d,
                             d * sizeof(float)))
        << "row " << r;
  }
}

TEST(NormalizeTest, SegmentsCarryTheirOwnParameters) {
  std::mt19937 rng(5);
  const int64_t d = 64;
  NormParams a, b;
  a.dim = b.dim = d;
  const std::vector<float> gamma = Normal(d, 1, 1, &rng);
  b.gamma = gamma.data();
  b.kind = NormKind::kRmsNorm;
  const std::vector<float> xa = Normal(2 * d, 0, 1, &rng), xb = Normal(3 * d, 0, 1, &rng);
  std::vector<float> ya(xa.size()), yb(xb.size());
  const RowSegment segments[] = {{&a, xa.data(), ya.data(), 2},
                                 {&b, xb.data(), yb.data(), 3}};
  NormalizeSegments(segments);
  EXPECT_EQ(ya, NormalizeAll(a, xa, 2));
  EXPECT_EQ(yb, NormalizeAll(b, xb, 3));
  ExpectCloseToReference(b, xb, 3, yb);
}

}  // namespace
}  // namespace normserve
