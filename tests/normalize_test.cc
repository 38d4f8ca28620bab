// The CPU kernels against the float64 reference, on every SIMD target
// Highway compiled that this machine runs: every dtype pair × kind × affine
// option × residual option, a seeded random sweep over shapes, ε, γ/β and
// data, adversarial rows, statistics, and batch invariance across batch
// compositions and thread counts.
#include "kernels/normalize.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "kernels/dtype.h"
#include "kernels/internal/normalize_rows.h"
#include "kernels/reference.h"
#include "kernels/thread_pool.h"
#include "tests/kernel_checks.h"
#include "tests/kernel_test_util.h"

namespace normserve {
namespace {

using testing::Case;
using testing::CheckAgainstReference;
using testing::CheckConstantRowsGiveExactlyBeta;
using testing::CheckEveryDtypePair;
using testing::CheckFirstValuesFarFromTheRest;
using testing::CheckHugeAndTinyRows;
using testing::CheckMeanFarLargerThanStd;
using testing::CheckNanOrInfPoisonsOnlyItsRow;
using testing::Describe;
using testing::Encode;
using testing::ExpectUlpBound;
using testing::kTypes;
using testing::MakeCase;
using testing::Name;
using testing::Normal;
using testing::Ordinal;
using testing::Output;
using testing::RandomCase;
using testing::RefBF16;
using testing::ReferenceZ;
using testing::RefHalf;
using testing::RefRound;
using testing::RunOnCpu;
using testing::SweepSeed;
using testing::Tensor;
using testing::UlpStats;
using testing::Widen;

// ---- Every test runs once per SIMD target ----

class KernelTest : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
};

std::string TargetName(const ::testing::TestParamInfo<int64_t>& info) {
  return hwy::TargetName(info.param);
}

INSTANTIATE_TEST_SUITE_P(
    Targets, KernelTest,
    ::testing::ValuesIn(hwy::SupportedAndGeneratedTargets()), TargetName);

TEST_P(KernelTest, UsesTheTargetUnderTest) {
  EXPECT_STREQ(KernelTargetName(), hwy::TargetName(GetParam()));
}

Output OnCpu(const Case& c) { return RunOnCpu(c); }

TEST_P(KernelTest, EveryDtypePairKindAffineAndResidualMatchesReference) {
  UlpStats total;
  CheckEveryDtypePair(OnCpu, {1, 3, 17, 64, 768, 1031}, 5, &total);
  ExpectUlpBound(total, 100000);
}

// Random cases over the whole input space (testing::RandomCase: D from 1 to
// 65536, 1 to 4096 rows, ε from 1e-12 to 0.1, random γ/β, data, kind,
// dtypes and residual), about four million elements, alternately on the
// calling thread and on a pool. The seed is printed with any failure;
// NORMSERVE_TEST_SEED=<seed> replays it.
TEST_P(KernelTest, RandomizedSweepMatchesReference) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int64_t kElements = int64_t{1} << 19;  // sanitizers: ~10x slower
#else
  constexpr int64_t kElements = int64_t{1} << 22;
#endif
  const uint32_t seed = SweepSeed();
  std::mt19937 rng(seed);
  ThreadPool pool(2);
  UlpStats total;
  int64_t elements = 0;
  for (int n = 0; elements < kElements; ++n) {
    std::vector<float> g, b;
    const Case c = RandomCase(int64_t{1} << 17, &rng, &g, &b);
    elements += c.rows * c.params.dim;
    SCOPED_TRACE(::testing::Message()
                 << "seed " << seed << " case " << n << ": " << Describe(c)
                 << " (replay: NORMSERVE_TEST_SEED=" << seed << ")");
    const UlpStats st =
        CheckAgainstReference(c, RunOnCpu(c, n % 2 ? &pool : nullptr));
    EXPECT_LE(st.worst_ulps, 2);
    total.Add(st);
    if (HasFailure()) return;
  }
  // As for the fixed cases: 16-bit outputs within 1 ulp of the correctly
  // rounded reference in at least 99.9% of elements.
  EXPECT_LE(total.over_one_ulp, total.elements / 1000 + 1)
      << "seed " << seed << ": " << total.over_one_ulp << " of "
      << total.elements;
}

TEST_P(KernelTest, LongRowsAndManyRows) {
  std::mt19937 rng(2);
  for (int64_t d : {4096, 16384, 65536}) {
    for (DType t : {DType::kFloat32, DType::kBFloat16}) {
      std::vector<float> g, b;
      const Case c = MakeCase(NormKind::kLayerNorm, t, t, d, (1 << 18) / d + 1,
                              true, true, false, &rng, &g, &b);
      SCOPED_TRACE(::testing::Message() << "D " << d << " " << Name(t));
      const UlpStats st = CheckAgainstReference(c, RunOnCpu(c));
      EXPECT_LE(st.worst_ulps, 2);
    }
  }
}

TEST_P(KernelTest, AccurateWhenMeanIsFarLargerThanStd) {
  CheckMeanFarLargerThanStd(OnCpu, {8, 768, 65536});
}

TEST_P(KernelTest, AccurateWhenTheFirstValuesAreFarFromTheRest) {
  CheckFirstValuesFarFromTheRest(OnCpu, {8, 768, 4096, 65536});
}

TEST_P(KernelTest, ConstantRowGivesExactlyBeta) {
  CheckConstantRowsGiveExactlyBeta(OnCpu, {100});
}

TEST_P(KernelTest, HugeAndTinyMagnitudesAreRecomputedInDouble) {
  // 1000: 16-bit rows short enough for the first pass to keep them as
  // float32; 3000: rows too long for that.
  CheckHugeAndTinyRows(OnCpu, {1000, 3000},
                       {DType::kFloat32, DType::kBFloat16});
  CheckHugeAndTinyRows(OnCpu, {1000}, {DType::kFloat32, DType::kBFloat16},
                       /*residual=*/true);
}

TEST_P(KernelTest, NanOrInfPoisonsOnlyItsRow) {
  // 16-bit inputs too; 1031 and 3000: rows past the staggered loop's D and
  // the first pass's float32 copy.
  const auto types = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  CheckNanOrInfPoisonsOnlyItsRow(OnCpu, {48, 1031, 3000}, types, types);
}

// Rows of ±1 have mean 0 and variance 1, and with ε = 2^-60 rstd rounds to
// exactly 1 in float32, so y = ±γ exactly: a 16-bit output must then be
// the exact rounding of ±γ (RefBF16, RefHalf), through the denormal ranges
// (which the AVX-512 BF16 conversion would flush to zero), at ties, at
// overflow and for NaN, on every target. Both the cached stores of small
// batches and the streaming stores of batches with over 32 MiB of output
// are checked.
void ExpectExactRoundingOfPlusOrMinusGamma(DType out,
                                           const std::vector<float>& gamma) {
  const auto d = static_cast<int64_t>(gamma.size());
  NormParams p;
  p.dim = d;
  p.epsilon = std::ldexp(1.0f, -60);
  p.gamma = gamma.data();
  for (int64_t rows : {int64_t{3}, int64_t{(32 << 20) / (d * 2)}}) {
    std::vector<float> x(static_cast<size_t>(rows * d));
    for (size_t k = 0; k < x.size(); ++k) x[k] = (k / d + k) % 2 ? 1 : -1;
    std::vector<uint16_t> y(x.size());
    RowSegment s;
    s.params = &p;
    s.input_dtype = DType::kFloat32;
    s.output_dtype = out;
    s.input = x.data();
    s.output = y.data();
    s.rows = rows;
    NormalizeSegments({&s, 1}, nullptr);
    int mismatches = 0;
    for (size_t k = 0; k < x.size() && mismatches < 10; ++k) {
      const float expected = x[k] * gamma[k % d];
      const uint16_t want =
          out == DType::kFloat16 ? RefHalf(expected) : RefBF16(expected);
      const bool same =
          std::isnan(expected) ? std::isnan(Widen(out, y[k])) : y[k] == want;
      if (!same) {
        ++mismatches;
        ADD_FAILURE() << Name(out) << ", rows " << rows << " element " << k
                      << ": y = " << expected << " gave bits " << std::hex
                      << y[k] << ", expected " << want;
      }
    }
  }
}

TEST_P(KernelTest, BFloat16OutputIsTheExactRoundingOfFloat32) {
  constexpr int64_t kD = 64;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> unit(-4.0f, 4.0f);
  std::vector<float> gamma(kD);
  for (int i = 0; i < 16; ++i) {  // ties between bfloat16 neighbours
    gamma[i] = std::ldexp(1.0f + static_cast<float>(2 * i + 1) / 256, i - 8);
  }
  for (int i = 16; i < 32; ++i) {  // float32 denormals, down to 2^-145
    gamma[i] = std::ldexp(1.0f + static_cast<float>(i - 16) / 16, -114 - i);
  }
  for (int i = 32; i < 48; ++i) gamma[i] = unit(rng);
  gamma[40] = 1e-39f;  // one denormal among normal values
  for (int i = 48; i < 64; ++i) gamma[i] = unit(rng) * 1e30f;
  gamma[48] = std::numeric_limits<float>::max();  // rounds to infinity
  gamma[49] = -0.0f;
  gamma[50] = std::numeric_limits<float>::quiet_NaN();
  gamma[51] = std::numeric_limits<float>::infinity();
  ExpectExactRoundingOfPlusOrMinusGamma(DType::kBFloat16, gamma);
}

// The same for float16 outputs: its ties, its subnormals (2^-24 and
// below, down to values that round to zero), and its overflow (65520 and up
// round to infinity, 65519 to 65504).
TEST_P(KernelTest, Float16OutputIsTheExactRoundingOfFloat32) {
  constexpr int64_t kD = 64;
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> unit(-4.0f, 4.0f);
  std::vector<float> gamma(kD);
  for (int i = 0; i < 16; ++i) {  // ties between float16 neighbours
    gamma[i] = std::ldexp(1.0f + static_cast<float>(2 * i + 1) / 2048, i - 8);
  }
  for (int i = 16; i < 32; ++i) {  // float16 subnormals, 2^-13 to 2^-28
    gamma[i] = std::ldexp(1.0f + static_cast<float>(i - 16) / 16, 3 - i);
  }
  gamma[31] = std::ldexp(1.0f, -25);  // a tie with zero: rounds to +0
  for (int i = 32; i < 48; ++i) gamma[i] = unit(rng);
  for (int i = 48; i < 64; ++i) gamma[i] = unit(rng) * 16384.0f;
  gamma[48] = 65520.0f;  // rounds to infinity
  gamma[49] = -0.0f;
  gamma[50] = std::numeric_limits<float>::quiet_NaN();
  gamma[51] = std::numeric_limits<float>::infinity();
  gamma[52] = 65519.0f;  // rounds to 65504
  gamma[53] = 1e30f;
  ExpectExactRoundingOfPlusOrMinusGamma(DType::kFloat16, gamma);
}

// Batches of kStreamingMinBytes of output or more are written with
// non-temporal stores, whose vectors start at an aligned address: a row
// whose output is not aligned (D = 1000 float32 rows, 4000 bytes apart)
// writes its head one lane at a time. Every element keeps its bits: each
// row equals the same row normalized alone, with β alone (one fused
// multiply-add), γ and β, and neither.
TEST_P(KernelTest, StreamedOutputsKeepEveryRowsBits) {
  std::mt19937 rng(13);
  const int64_t d = 1000;
  std::vector<float> g = Normal(d, 1, 1, &rng), b = Normal(d, 0, 1, &rng);
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    const int64_t rows = kStreamingMinBytes / (d * DTypeSize(dtype)) + 3;
    const Tensor x = Encode(dtype, Normal(rows * d, 1, 2, &rng));
    const size_t row_bytes = d * DTypeSize(dtype);
    for (auto [gamma, beta] : {std::pair{false, true}, std::pair{true, true},
                               std::pair{false, false}}) {
      SCOPED_TRACE(::testing::Message()
                   << Name(dtype) << " gamma " << gamma << " beta " << beta);
      NormParams p;
      p.dim = d;
      p.gamma = gamma ? g.data() : nullptr;
      p.beta = beta ? b.data() : nullptr;
      std::vector<uint8_t> out(rows * row_bytes);
      RowSegment all;
      all.params = &p;
      all.input_dtype = all.output_dtype = dtype;
      all.input = x.bytes.data();
      all.output = out.data();
      all.rows = rows;
      NormalizeSegments({&all, 1});
      std::vector<uint8_t> alone(row_bytes);
      for (int64_t r = 0; r < rows; ++r) {
        RowSegment one = all;
        one.input = x.bytes.data() + r * row_bytes;
        one.output = alone.data();
        one.rows = 1;
        NormalizeSegments({&one, 1});
        ASSERT_EQ(
            0, std::memcmp(out.data() + r * row_bytes, alone.data(), row_bytes))
            << "row " << r;
      }
    }
  }
}

// A row's output bits never depend on the batch: random compositions of
// segments (rows at every offset inside their buffers), run with 0, 1 and 3
// pool threads, against each row normalized alone.
TEST_P(KernelTest, RowBitsDoNotDependOnBatchCompositionOrThreads) {
  std::mt19937 rng(11);
  struct Config {
    DType in;
    int64_t d;
    NormKind kind;
    bool beta, residual;  // residual: with the sum z and the statistics
  };
  // 1031 and 1536: rows past the staggered loop; add & norm and RMSNorm.
  for (const Config& cfg :
       {Config{DType::kFloat32, 771, NormKind::kLayerNorm, false, false},
        Config{DType::kBFloat16, 771, NormKind::kLayerNorm, false, false},
        Config{DType::kFloat32, 1031, NormKind::kLayerNorm, true, true},
        Config{DType::kFloat16, 1536, NormKind::kRmsNorm, true, true}}) {
    const DType in = cfg.in;
    const int64_t d = cfg.d;
    NormParams p;
    p.dim = d;
    p.kind = cfg.kind;
    std::vector<float> g = Normal(d, 1, 1, &rng), b = Normal(d, 0, 1, &rng);
    p.gamma = g.data();
    p.beta = cfg.beta ? b.data() : nullptr;
    // The rows, each alone: twice the elements at which NormalizeSegments
    // starts handing chunks to the pool's threads.
    const int kRows = static_cast<int>(2 * kParallelMinElements / d);
    const Tensor all = Encode(in, Normal(kRows * d, 1, 2, &rng));
    const Tensor all_residual = Encode(in, Normal(kRows * d, 0, 1, &rng));
    const size_t row_bytes = d * DTypeSize(in);
    std::vector<Output> alone(kRows);
    for (int r = 0; r < kRows; ++r) {
      Case c;
      c.params = p;
      c.in = c.out = in;
      c.x.bytes.assign(all.bytes.begin() + r * row_bytes,
                       all.bytes.begin() + (r + 1) * row_bytes);
      c.with_residual = c.with_sum = cfg.residual;
      c.residual.bytes.assign(all_residual.bytes.begin() + r * row_bytes,
                              all_residual.bytes.begin() + (r + 1) * row_bytes);
      alone[r] = RunOnCpu(c);
    }
    const std::string what =
        absl::StrCat(Name(in), " D ", d, " kind ", static_cast<int>(cfg.kind));
    for (int threads : {0, 1, 3}) {
      ThreadPool pool(threads);
      for (int trial = 0; trial < 5; ++trial) {
        // Cut the rows into random segments; each gets its own buffers,
        // shifted by 0 to 2 elements from their allocation's alignment.
        std::vector<RowSegment> segments;
        std::vector<std::vector<uint8_t>> inputs, residuals, outputs, sums;
        std::vector<std::vector<float>> means, rstds;
        std::vector<int> first_row;
        for (auto* v : {&inputs, &residuals, &outputs, &sums})
          v->reserve(kRows);
        means.reserve(kRows);
        rstds.reserve(kRows);
        for (int r = 0; r < kRows;) {
          const int n =
              std::min<int>(kRows - r, 1 + static_cast<int>(rng() % 9));
          const size_t pad = (rng() % 3) * DTypeSize(in);
          auto padded_copy = [&](const Tensor& t) {
            std::vector<uint8_t> v(pad + n * row_bytes);
            std::memcpy(v.data() + pad, t.bytes.data() + r * row_bytes,
                        n * row_bytes);
            return v;
          };
          inputs.push_back(padded_copy(all));
          residuals.push_back(padded_copy(all_residual));
          outputs.emplace_back(pad + n * row_bytes);
          sums.emplace_back(pad + n * row_bytes);
          means.emplace_back(n);
          rstds.emplace_back(n);
          RowSegment s;
          s.params = &p;
          s.input_dtype = s.output_dtype = in;
          s.input = inputs.back().data() + pad;
          s.output = outputs.back().data() + pad;
          s.rows = n;
          if (cfg.residual) {
            s.residual = residuals.back().data() + pad;
            s.sum_output = sums.back().data() + pad;
          }
          s.mean = means.back().data();
          s.rstd = rstds.back().data();
          segments.push_back(s);
          first_row.push_back(r);
          r += n;
        }
        NormalizeSegments(segments, &pool);
        for (size_t k = 0; k < segments.size(); ++k) {
          for (int64_t j = 0; j < segments[k].rows; ++j) {
            const Output& want = alone[first_row[k] + j];
            const std::string where = absl::StrCat(what, " threads ", threads,
                                                   " row ", first_row[k] + j);
            const auto* y =
                static_cast<const uint8_t*>(segments[k].output) + j * row_bytes;
            ASSERT_EQ(0, std::memcmp(y, want.y.data(), row_bytes)) << where;
            if (cfg.residual) {
              const auto* z =
                  static_cast<const uint8_t*>(segments[k].sum_output) +
                  j * row_bytes;
              ASSERT_EQ(0, std::memcmp(z, want.sum.data(), row_bytes)) << where;
            }
            ASSERT_EQ(0, std::memcmp(&segments[k].mean[j], want.mean.data(),
                                     sizeof(float)))
                << where;
            ASSERT_EQ(0, std::memcmp(&segments[k].rstd[j], want.rstd.data(),
                                     sizeof(float)))
                << where;
          }
        }
      }
    }
  }
}

// A row's bits do not depend on the machine either: every SIMD target sums
// in the same order (kernels/internal/normalize_simd.cc), so targets that
// fuse multiply-adds (AVX2, AVX-512; Arm NEON) give the same bits, and
// so do those that do not (SSSE3, SSE4, the emulated fallback), which round
// the product first. Fixed shapes around the reduction's tails and blocks,
// then random cases (any kind, dtypes, ε, γ/β, residual, data), with rows
// that take the second pass and the double-precision path.
TEST(KernelTargetsTest, RowBitsAreTheSameOnEveryTargetOfAFusingClass) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  std::vector<Case> cases;
  std::vector<std::vector<float>> params;  // γ, β the cases point into
  params.reserve(400);
  std::mt19937 rng(SweepSeed());
  auto add = [&](Case c) { cases.push_back(std::move(c)); };
  for (int64_t d : {1,    2,    3,    7,    8,    15,   16,   17,   31,
                    33,   63,   64,   65,   100,  127,  255,  768,  1000,
                    1023, 1024, 1025, 1031, 2047, 3000, 4099, 70000}) {
    for (DType t : kTypes) {
      for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
        params.emplace_back();
        params.emplace_back();
        const bool residual = d % 2 == 1;
        Case c = MakeCase(kind, t, t == DType::kFloat32 ? DType::kBFloat16 : t,
                          d, d < 4096 ? 3 : 1, true,
                          kind == NormKind::kLayerNorm, residual, &rng,
                          &params[params.size() - 2], &params.back());
        c.with_sum = residual;
        add(std::move(c));
      }
    }
  }
  // Rows far from their first values (the second pass) and near-constant
  // rows (the double-precision path), as float32.
  for (int64_t d : {24, 1000, 5000}) {
    for (float offset : {0.0f, 1e4f}) {
      std::vector<float> x =
          Normal(static_cast<size_t>(2 * d), 0.0f, 1.0f, &rng);
      for (int64_t i = 0; i < d; ++i) x[i] *= 1e-18f;
      for (int64_t i = 0; i < 8; ++i) x[d + i] = offset;
      Case c;
      c.params.dim = d;
      c.params.epsilon = 1e-12f;
      c.rows = 2;
      c.x = Encode(DType::kFloat32, x);
      c.residual = Encode(DType::kFloat32, {});
      add(std::move(c));
    }
  }
  for (int n = 0; n < 60; ++n) {
    params.emplace_back();
    params.emplace_back();
    add(RandomCase(int64_t{1} << 15, &rng, &params[params.size() - 2],
                   &params.back()));
  }
  ASSERT_LE(params.size(), params.capacity()) << "γ/β moved under the cases";

  // The first target of each class is the one the others must match.
  std::vector<Output> fused_want, unfused_want;
  std::string fused_first, unfused_first;
  int fused_count = 0, unfused_count = 0;
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    const bool fuses = internal::KernelTargetFusesMultiplyAdd();
    std::vector<Output>& want = fuses ? fused_want : unfused_want;
    std::string& first = fuses ? fused_first : unfused_first;
    ++(fuses ? fused_count : unfused_count);
    const bool is_first = want.empty();
    if (is_first) first = KernelTargetName();
    for (size_t k = 0; k < cases.size(); ++k) {
      const Case& c = cases[k];
      Output got = RunOnCpu(c);
      if (is_first) {
        want.push_back(std::move(got));
        continue;
      }
      const std::string where =
          absl::StrCat(KernelTargetName(), " against ", first, ": ",
                       Describe(c), " (seed ", SweepSeed(), ")");
      ASSERT_EQ(got.y, want[k].y) << where;
      if (c.with_sum) {
        ASSERT_EQ(got.sum, want[k].sum) << where;
      }
      ASSERT_EQ(0, std::memcmp(got.mean.data(), want[k].mean.data(),
                               got.mean.size() * sizeof(float)))
          << where;
      ASSERT_EQ(0, std::memcmp(got.rstd.data(), want[k].rstd.data(),
                               got.rstd.size() * sizeof(float)))
          << where;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  std::printf("compared %d fusing and %d non-fusing targets over %zu cases\n",
              fused_count, unfused_count, cases.size());
  if (fused_count < 2 && unfused_count < 2) {
    GTEST_SKIP() << "this machine runs fewer than two targets of a class";
  }
}

TEST(ThreadPoolTest, RunsEveryIndexOnceWithConcurrentCallers) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(4 * 1000);
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&, c] {
      pool.ParallelFor(1000, [&](int64_t i) { hits[c * 1000 + i]++; });
    });
  }
  for (auto& t : callers) t.join();
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

// An index that throws (std::bad_alloc from a kernel's scratch) neither
// stops the others nor kills a worker: the caller gets the exception once
// every index has run, and the pool serves the next loop.
TEST(ThreadPoolTest, AThrowingIndexReachesTheCallerAfterTheOthersRun) {
  // No workers: the loop runs on its caller, with the same promise.
  ThreadPool serial(0);
  std::atomic<int64_t> serial_ran{0};
  EXPECT_THROW(serial.ParallelFor(10,
                                  [&](int64_t i) {
                                    if (i == 3) throw std::bad_alloc();
                                    ++serial_ran;
                                  }),
               std::bad_alloc);
  EXPECT_EQ(serial_ran.load(), 9);
  ThreadPool pool(3);
  for (int64_t bad : {int64_t{0}, int64_t{37}, int64_t{99}}) {
    std::atomic<int64_t> ran{0};
    EXPECT_THROW(pool.ParallelFor(100,
                                  [&](int64_t i) {
                                    if (i == bad || i == 64) {
                                      throw std::bad_alloc();
                                    }
                                    ++ran;
                                  }),
                 std::bad_alloc)
        << "index " << bad;
    EXPECT_EQ(ran.load(), 98);
  }
  std::atomic<int64_t> ran{0};
  pool.ParallelFor(100, [&](int64_t) { ++ran; });
  EXPECT_EQ(ran.load(), 100);
}

// The caller polls for its loop's last indices for 100 µs, then sleeps:
// indices that outlast the polling must still wake it, and every index's
// effects must be visible when ParallelFor returns, on either path.
TEST(ThreadPoolTest, CallerWaitsForSlowIndicesPastItsPolling) {
  ThreadPool pool(2);
  for (int round = 0; round < 20; ++round) {
    std::vector<int> values(3, 0);  // plain ints: ParallelFor must publish
    const auto slow = std::chrono::microseconds(round % 2 == 0 ? 2000 : 20);
    pool.ParallelFor(3, [&](int64_t i) {
      if (i > 0) std::this_thread::sleep_for(slow);
      values[static_cast<size_t>(i)] = round + 1;
    });
    for (int v : values) ASSERT_EQ(v, round + 1) << "round " << round;
  }
}

TEST(DTypeTest,
     ConversionsMatchTheCompilersFloat16AndRoundBFloat16ToNearestEven) {
  for (uint64_t b = 0; b <= 0xffffffffull; b += 9973) {
    const uint32_t bits = static_cast<uint32_t>(b);
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f))));
      EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(f))));
      continue;
    }
    ASSERT_EQ(FloatToHalf(f), RefHalf(f)) << f;
    ASSERT_EQ(FloatToBFloat16(f), RefBF16(f)) << f;
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    const float want = Widen(DType::kFloat16, static_cast<uint16_t>(h));
    const float got = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got));
    } else {
      ASSERT_EQ(want, got) << h;
    }
  }
}

}  // namespace
}  // namespace normserve
