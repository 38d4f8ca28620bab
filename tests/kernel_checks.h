// Checks shared by the kernel tests: the CPU kernel (normalize_test.cc),
// the CUDA kernels on a GPU (cuda_normalize_test.cc) and the CUDA row
// algorithm on host threads (cuda_row_algorithm_test.cc) must all meet the
// same contract, so each check takes the way to run a case and reports
// through gtest assertions in the calling test.
#ifndef NORMSERVE_TESTS_KERNEL_CHECKS_H_
#define NORMSERVE_TESTS_KERNEL_CHECKS_H_

#include <cmath>
#include <functional>
#include <initializer_list>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernel_test_util.h"

namespace normserve::testing {

// Runs one case and returns what the kernel wrote.
using Runner = std::function<Output(const Case&)>;

// Every input × output dtype, kind, γ/β presence and residual option at
// each D, `rows` rows each, against the float64 reference; the 16-bit ulp
// statistics are added to *total. Stops at the first failing case.
inline void CheckEveryDtypePair(const Runner& run,
                                std::initializer_list<int64_t> dims,
                                int64_t rows, UlpStats* total) {
  std::mt19937 rng(1);
  for (DType in : kTypes) {
    for (DType out : kTypes) {
      for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
        for (int affine = 0; affine < 4; ++affine) {
          for (bool residual : {false, true}) {
            for (int64_t d : dims) {
              std::vector<float> g, b;
              const Case c = MakeCase(kind, in, out, d, rows, affine & 1,
                                      affine & 2, residual, &rng, &g, &b);
              SCOPED_TRACE(Describe(c));
              total->Add(CheckAgainstReference(c, run(c)));
              if (::testing::Test::HasFailure()) return;
            }
          }
        }
      }
    }
  }
}

// The bound of every kernel: 16-bit outputs within 1 ulp of the correctly
// rounded reference in at least 99.9% of elements, never more than 2.
inline void ExpectUlpBound(const UlpStats& total, int64_t min_elements) {
  EXPECT_GT(total.elements, min_elements);
  EXPECT_LE(total.over_one_ulp, total.elements / 1000);
  EXPECT_LE(total.worst_ulps, 2);
}

// Rows with |mean| ≫ std (1e4 ± 1e-3): the shifted two-pass statistics
// keep them accurate.
inline void CheckMeanFarLargerThanStd(const Runner& run,
                                      std::initializer_list<int64_t> dims) {
  std::mt19937 rng(7);
  for (int64_t d : dims) {
    Case c;
    c.params.dim = d;
    c.rows = 3;
    c.x = Encode(DType::kFloat32,
                 Normal(static_cast<size_t>(3 * d), 1e4f, 1e-3f, &rng));
    SCOPED_TRACE(::testing::Message() << "D " << d);
    CheckAgainstReference(c, run(c));
  }
}

// Rows whose first 16 values sit apart from the rest: 1000 std above a
// N(0, 1) row, and 1 (1000 std) above a 1e4 ± 1e-3 row. A shift taken from
// a row's first values lands far from its mean there (K = 1 + (shift −
// mean)²/var up to about D/16), where the variance as Σu² − (Σu)²/D of
// u = x − shift would lose log2(K) bits. Also 1 std apart, which puts K
// near 2 at large D, the CPU kernel's limit for that formula.
inline void CheckFirstValuesFarFromTheRest(
    const Runner& run, std::initializer_list<int64_t> dims) {
  std::mt19937 rng(11);
  for (int64_t d : dims) {
    for (float center : {0.0f, 1e4f}) {
      for (float apart : {1000.0f, 1.0f}) {
        const float std_dev = center == 0.0f ? 1.0f : 1e-3f;
        Case c;
        c.params.dim = d;
        c.rows = 3;
        std::vector<float> x =
            Normal(static_cast<size_t>(c.rows * d), center, std_dev, &rng);
        for (int64_t r = 0; r < c.rows; ++r) {
          for (int64_t i = 0; i < d && i < 16; ++i) {
            x[static_cast<size_t>(r * d + i)] += apart * std_dev;
          }
        }
        c.x = Encode(DType::kFloat32, x);
        SCOPED_TRACE(::testing::Message()
                     << "D " << d << " rows " << center << " ± " << std_dev
                     << ", first 16 " << apart << " std above");
        CheckAgainstReference(c, run(c));
      }
    }
  }
}

// A constant row normalizes to exactly β (γ = 3), in every dtype, for
// constants from 0 to near the float32 limits.
inline void CheckConstantRowsGiveExactlyBeta(
    const Runner& run, std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) {
    std::vector<float> beta(d), gamma(d, 3.0f);
    for (int64_t i = 0; i < d; ++i)
      beta[i] = 0.25f * static_cast<float>(i % 9) - 1.0f;
    for (DType t : kTypes) {
      for (float v : {0.0f, 1.0f, -7.5f, 12288.0f, 3e38f, 1e-38f}) {
        Case c;
        c.params.dim = d;
        c.params.gamma = gamma.data();
        c.params.beta = beta.data();
        c.in = c.out = t;
        c.x = Encode(t, std::vector<float>(d, v));
        if (std::isinf(c.x.values[0])) continue;  // 3e38 overflows float16
        const Output o = run(c);
        for (int64_t i = 0; i < d; ++i) {
          const float want =
              t == DType::kFloat32 ? beta[i] : Widen(t, RefRound(t, beta[i]));
          ASSERT_EQ(ValueAt(t, o.y, i), want)
              << Name(t) << " D " << d << " constant " << v << " col " << i;
        }
      }
    }
  }
}

// Rows whose float32 squares overflow or underflow are redone in double
// and still meet the reference, for each input dtype in `ins` (float32 and
// bfloat16 reach these magnitudes; float16 does not); with `residual`, also
// as input + residual (3/4 and 1/4 of the row), returning the sum for
// LayerNorm.
inline void CheckHugeAndTinyRows(
    const Runner& run, std::initializer_list<int64_t> dims,
    std::initializer_list<DType> ins = {DType::kFloat32},
    bool residual = false) {
  std::mt19937 rng(3);
  for (DType in : ins) {
    for (int64_t d : dims) {
      for (float scale : {1e25f, 1e37f, 1e-20f, 1e-40f}) {
        for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
          Case c;
          c.params.kind = kind;
          c.params.dim = d;
          c.params.epsilon = 1e-38f;  // so tiny rows are not swamped by ε
          c.rows = 2;
          c.in = c.out = in;
          std::vector<float> x = Normal(static_cast<size_t>(2 * d), 0, 1, &rng);
          std::vector<float> r(residual ? x.size() : 0);
          for (size_t i = 0; i < x.size(); ++i) {
            x[i] *= scale;
            if (residual) {
              r[i] = 0.25f * x[i];
              x[i] *= 0.75f;
            }
          }
          c.x = Encode(in, x);
          if (residual) {
            c.with_residual = true;
            c.with_sum = kind == NormKind::kLayerNorm;
            c.residual = Encode(in, r);
          }
          SCOPED_TRACE(::testing::Message()
                       << Name(in) << " D " << d << " scale " << scale
                       << " kind " << static_cast<int>(kind)
                       << (residual ? " with a residual" : ""));
          CheckAgainstReference(c, run(c));
        }
      }
      // A constant row of tiny values under RMSNorm: its float32 squares are
      // denormal (a few significant bits), as any tiny row's are (under
      // LayerNorm a constant row is exactly β, checked elsewhere).
      if (residual) continue;
      for (float value : {3e-22f, -1e-21f}) {
        Case c;
        c.params.kind = NormKind::kRmsNorm;
        c.params.dim = d;
        c.params.epsilon = 1e-45f;  // the least denormal, below the squares
        c.rows = 1;
        c.in = c.out = in;
        c.x = Encode(in, std::vector<float>(static_cast<size_t>(d), value));
        SCOPED_TRACE(::testing::Message()
                     << Name(in) << " D " << d << " RMSNorm of a constant "
                     << value);
        CheckAgainstReference(c, run(c));
      }
    }
  }
}

// A NaN or ±Inf in the middle row of three makes that row's outputs NaN
// and leaves its neighbours alone, for each input dtype in `ins` and output
// dtype in `outs`. RMSNorm, as PyTorch's rms_norm: a NaN makes the row NaN;
// an Inf makes Σz² infinite and rstd 0, so the Inf's own output is NaN
// (Inf·0) and the row's others 0 (no β here). (On the GPU, rows 0 and 1
// share a warp where a warp serves two rows: one of its halves then takes
// the double-precision branch and the other does not.)
inline void CheckNanOrInfPoisonsOnlyItsRow(const Runner& run,
                                           std::initializer_list<int64_t> dims,
                                           std::initializer_list<DType> outs,
                                           std::initializer_list<DType> ins = {
                                               DType::kFloat32}) {
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  for (int64_t d : dims) {
    for (DType in : ins) {
      for (DType out : outs) {
        for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
          Case c;
          c.params.dim = d;
          c.params.kind = kind;
          c.in = in;
          c.out = out;
          c.rows = 3;
          std::vector<float> clean(static_cast<size_t>(3 * d));
          for (size_t i = 0; i < clean.size(); ++i)
            clean[i] = static_cast<float>(i % 5);
          c.x = Encode(in, clean);
          const Output want = run(c);
          for (float bad : {kNan, kInf, -kInf}) {
            for (int64_t pos : {int64_t{0}, int64_t{5}, d - 1}) {
              std::vector<float> x = clean;
              x[static_cast<size_t>(d + pos)] = bad;
              c.x = Encode(in, x);
              const Output o = run(c);
              const bool whole_row =
                  kind == NormKind::kLayerNorm || std::isnan(bad);
              for (int64_t i = 0; i < d; ++i) {
                const float y = ValueAt(out, o.y, d + i);
                if (whole_row || i == pos) {
                  ASSERT_TRUE(std::isnan(y))
                      << "D " << d << " " << Name(in) << "->" << Name(out)
                      << " kind " << static_cast<int>(kind) << " bad " << bad
                      << " at " << pos << " col " << i;
                } else {
                  ASSERT_EQ(y, 0.0f) << "RMSNorm, D " << d << " " << Name(in)
                                     << "->" << Name(out) << " bad " << bad
                                     << " at " << pos << " col " << i;
                }
                // The rows beside it come out as they do without it.
                ASSERT_EQ(ValueAt(out, o.y, i), ValueAt(out, want.y, i));
                ASSERT_EQ(ValueAt(out, o.y, 2 * d + i),
                          ValueAt(out, want.y, 2 * d + i));
              }
            }
          }
        }
      }
    }
  }
}

// Within twice the reference bound of the CPU kernel (each is within the
// bound of float64), for each input dtype and output in `outs`; the
// residual sum z bit for bit.
inline void CheckAgreesWithTheCpuKernel(const Runner& run,
                                        std::initializer_list<DType> outs,
                                        std::initializer_list<int64_t> dims,
                                        int64_t rows) {
  std::mt19937 rng(3);
  for (DType in : kTypes) {
    for (DType out : outs) {
      for (int64_t d : dims) {
        std::vector<float> g, b;
        const Case c = MakeCase(NormKind::kLayerNorm, in, out, d, rows, true,
                                true, true, &rng, &g, &b);
        const Output got = run(c), cpu = RunOnCpu(c);
        SCOPED_TRACE(::testing::Message()
                     << Name(in) << "->" << Name(out) << " D " << d);
        for (int64_t r = 0; r < c.rows; ++r) {
          double scale = 0.0;
          for (int64_t i = 0; i < d; ++i) {
            scale = std::max<double>(
                scale,
                std::abs(ValueAt(out, cpu.y, static_cast<size_t>(r * d + i))));
          }
          for (int64_t i = 0; i < d; ++i) {
            const size_t k = static_cast<size_t>(r * d + i);
            const float a = ValueAt(out, got.y, k), h = ValueAt(out, cpu.y, k);
            if (out == DType::kFloat32) {
              ASSERT_LE(std::abs(a - h), 2e-5 * scale)
                  << "row " << r << " col " << i;
            } else {
              ASSERT_TRUE(std::abs(Ordinal(BitsAt(got.y, k)) -
                                   Ordinal(BitsAt(cpu.y, k))) <= 2 ||
                          std::abs(a - h) <= 2e-5 * scale)
                  << "row " << r << " col " << i << ": " << a << " vs " << h;
            }
          }
          EXPECT_NEAR(got.rstd[r], cpu.rstd[r], 2e-5 * cpu.rstd[r]);
        }
        EXPECT_EQ(got.sum, cpu.sum);  // z is defined exactly
      }
    }
  }
}

}  // namespace normserve::testing

#endif  // NORMSERVE_TESTS_KERNEL_CHECKS_H_
