// The INT8 paths: exact integer square root, the integer-only LayerNorm
// against the float64 reference (within 1 LSB everywhere), the float path,
// the rounding at ties, and determinism (runs, row splits, batch
// compositions and thread counts).
#include "kernels/int8_layer_norm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/normalize.h"
#include "kernels/reference.h"
#include "kernels/thread_pool.h"

namespace normserve {
namespace {

TEST(ISqrt64Test, ExactOnEveryValueBelow2To24) {
  for (uint64_t x = 0; x < (uint64_t{1} << 24); ++x) {
    const uint64_t r = ISqrt64(x);
    ASSERT_TRUE(r * r <= x && (r + 1) * (r + 1) > x) << x;
  }
}

TEST(ISqrt64Test, ExactOnRandomAndEdge64BitValues) {
  std::mt19937_64 rng(5);
  std::vector<uint64_t> xs = {~uint64_t{0},
                              ~uint64_t{0} - 1,
                              uint64_t{1} << 63,
                              (uint64_t{1} << 62) - 1,
                              4294967295ull * 4294967295ull,
                              4294967295ull * 4294967295ull - 1};
  for (int i = 0; i < 200000; ++i) xs.push_back(rng() >> (rng() % 64));
  for (uint64_t r = 1; r < 100000; r += 7) {  // squares and their neighbours
    xs.push_back(r * r);
    xs.push_back(r * r - 1);
  }
  for (uint64_t x : xs) {
    const unsigned __int128 r = ISqrt64(x);
    ASSERT_LE(r * r, x) << x;
    ASSERT_GT((r + 1) * (r + 1), static_cast<unsigned __int128>(x)) << x;
  }
}

struct Quantized {
  std::vector<int8_t> q;
  float scale;
  int32_t zero_point;
};

// Transformer-like activations: mostly N(0, 1) with a few outlier channels
// 20–60× larger, then quantized with a per-tensor scale covering the range.
Quantized RealisticActivations(int64_t rows, int64_t d, std::mt19937* rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * d));
  std::vector<float> channel_scale(static_cast<size_t>(d), 1.0f);
  for (int k = 0; k < 3 && k < d; ++k)
    channel_scale[(*rng)() % d] = 20.0f + 40.0f * k / 2;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < d; ++i)
      x[r * d + i] = normal(*rng) * channel_scale[i] + 0.5f;
  }
  float lo = 0, hi = 0;
  for (float v : x) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  Quantized out;
  out.scale = (hi - lo) / 255.0f;
  out.zero_point = static_cast<int32_t>(std::lround(-128 - lo / out.scale));
  out.q.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    out.q[i] = static_cast<int8_t>(std::max<long>(
        -128,
        std::min<long>(127, std::lround(x[i] / out.scale) + out.zero_point)));
  }
  return out;
}

// The float64 reference on dequantized inputs, quantized to the output
// scale with round-half-away and clamping.
std::vector<int> ReferenceQuantized(const Quantized& in, int64_t rows,
                                    int64_t d, const float* gamma,
                                    const float* beta, float eps,
                                    float out_scale, int32_t out_zp) {
  std::vector<float> x(in.q.size());
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = in.scale * (in.q[i] - in.zero_point);
  NormParams p;
  p.dim = d;
  p.epsilon = eps;
  p.gamma = gamma;
  p.beta = beta;
  const std::vector<double> y = ReferenceNormalize(p, x.data(), rows);
  std::vector<int> q(y.size());
  for (size_t i = 0; i < y.size(); ++i) {
    q[i] = static_cast<int>(std::max<double>(
        -128, std::min<double>(127, std::round(y[i] / out_scale) + out_zp)));
  }
  return q;
}

TEST(Int8LayerNormTest, IntegerPathIsWithinOneLsbOfTheReference) {
  std::mt19937 rng(9);
  int64_t elements = 0, exact = 0;
  for (int64_t d : {1, 2, 3, 16, 768, 4096, 65536}) {
    const int64_t rows = std::max<int64_t>(2, 200000 / d);
    const Quantized in = RealisticActivations(rows, d, &rng);
    std::normal_distribution<float> nd(1.0f, 0.3f);
    std::vector<float> gamma(static_cast<size_t>(d)),
        beta(static_cast<size_t>(d));
    for (auto& g : gamma) g = nd(rng);
    for (auto& b : beta) b = nd(rng) - 1.0f;
    for (bool affine : {false, true}) {
      const float* g = affine ? gamma.data() : nullptr;
      const float* b = affine ? beta.data() : nullptr;
      const float out_scale = DefaultInt8OutputScale(g, b, d);
      const Int8Affine folded = FoldInt8Affine(g, b, d, out_scale, 3);
      Int8Params p;
      p.dim = d;
      p.input_scale = in.scale;
      p.input_zero_point = in.zero_point;
      p.affine = &folded;
      p.gamma = g;
      p.beta = b;
      std::vector<int8_t> y(in.q.size()), yf(in.q.size());
      Int8LayerNormInteger(p, in.q.data(), y.data(), rows);
      Int8LayerNormFloat(p, in.q.data(), yf.data(), rows);
      const std::vector<int> ref =
          ReferenceQuantized(in, rows, d, g, b, p.epsilon, out_scale, 3);
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_LE(std::abs(y[i] - ref[i]), 1) << "D " << d << " element " << i;
        ASSERT_LE(std::abs(yf[i] - ref[i]), 1)
            << "float path, D " << d << " element " << i;
        exact += y[i] == ref[i];
      }
      elements += static_cast<int64_t>(y.size());
    }
  }
  // Off by one LSB only at rounding ties' edges: rare.
  EXPECT_GT(exact, elements * 99 / 100);
}

TEST(Int8LayerNormTest, ConstantRowGivesQuantizedBeta) {
  const int64_t d = 64;
  std::vector<float> beta(d);
  for (int64_t i = 0; i < d; ++i)
    beta[i] = 0.05f * static_cast<float>(i) - 1.0f;
  const Int8Affine folded = FoldInt8Affine(nullptr, beta.data(), d, 0.02f, -5);
  Int8Params p;
  p.dim = d;
  p.input_scale = 0.1f;
  p.affine = &folded;
  std::vector<int8_t> x(d, 17), y(d);
  Int8LayerNormInteger(p, x.data(), y.data(), 1);
  for (int64_t i = 0; i < d; ++i) {
    const double want =
        static_cast<double>(beta[i]) / static_cast<double>(0.02f);
    // Half up, as the header documents (no value here is a tie).
    EXPECT_EQ(y[i],
              std::max(-128.0, std::min(127.0, std::floor(want + 0.5) - 5)))
        << i;
  }
}

// The header's rounding rule, pinned where it shows: β/s_y exactly k + 1/2
// on a constant row (every normalized value 0, so q_y is the rounded β/s_y).
// The integer path rounds half up (−4.5 → −4); the float path, like the
// float64 reference, half away from zero (−4.5 → −5). Positive ties agree.
TEST(Int8LayerNormTest, TiesRoundHalfUpOnTheIntegerPathAwayFromZeroOnFloat) {
  const int64_t d = 10;
  const float out_scale = 0.25f;  // a power of two: β/s_y is exact
  std::vector<float> beta(d);
  for (int64_t i = 0; i < d; ++i)
    beta[i] = (static_cast<float>(i) - 5.0f + 0.5f) * out_scale;  // −4.5..4.5
  const Int8Affine folded =
      FoldInt8Affine(nullptr, beta.data(), d, out_scale, 0);
  Int8Params p;
  p.dim = d;
  p.input_scale = 0.5f;
  p.input_zero_point = 17;
  p.affine = &folded;
  p.beta = beta.data();
  const std::vector<int8_t> x(d, 17);  // all at the zero point: x = 0
  std::vector<int8_t> integer(d), float_path(d);
  Int8LayerNormInteger(p, x.data(), integer.data(), 1);
  Int8LayerNormFloat(p, x.data(), float_path.data(), 1);
  for (int64_t i = 0; i < d; ++i) {
    const double tie = static_cast<double>(i) - 5.0 + 0.5;
    EXPECT_EQ(integer[i], std::floor(tie + 0.5)) << "beta/s_y = " << tie;
    EXPECT_EQ(float_path[i], std::round(tie)) << "beta/s_y = " << tie;
  }
}

// Parameters at the edges of what the server accepts, each against the
// float64 reference (both paths within 1 LSB): a β that an outlier row's
// normalized values bring back into range (|β/s_y| = 300), and the largest
// γ/s_y (65536) on rows whose normalized values are tiny (ε dominates).
TEST(Int8LayerNormTest, ParametersAtTheAcceptedEdgesStayWithinOneLsb) {
  struct Case {
    const char* name;
    Quantized in;
    int64_t rows, d;
    std::vector<float> gamma, beta;
    float epsilon, out_scale;
    int32_t out_zp;
  };
  std::vector<Case> cases;
  {
    // One large negative value per row, normalized to about -√D = -64:
    // with β/s_y = 300 and zero point -128 it shows (300 - 64 - 128 = 108),
    // the rest of the row saturates at 127.
    const int64_t d = 4096, rows = 8;
    Quantized in;
    in.scale = 0.01f;
    in.zero_point = 0;
    in.q.assign(static_cast<size_t>(rows * d), 0);
    std::mt19937 rng(3);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < d; ++i) in.q[r * d + i] = rng() % 3 - 1;
      in.q[r * d + rng() % d] = -128;
    }
    const float s_y = 0.05f;
    cases.push_back({"beta/s_y = 300", in, rows, d,
                     std::vector<float>(d, 1.0f * s_y),
                     std::vector<float>(d, 300.0f * s_y), 1e-5f, s_y, -128});
  }
  {
    const int64_t d = 4, rows = 2;
    Quantized in;
    in.scale = 1e-7f;
    in.zero_point = 0;
    in.q = {-30, 0, 0, 30, 25, -5, 10, -30};
    cases.push_back({"gamma/s_y = 65536", in, rows, d,
                     std::vector<float>(d, 1.0f), std::vector<float>(d, 0.0f),
                     1e-5f, 1.0f / 65536, 0});
  }
  {
    // γ/s_y at the accepted 65536 in most places but 0.4 at one: the
    // normalized values there (up to √D = 256 in size) magnify the
    // rounding of that G_i, which must stay well under an LSB (with
    // |G_i| < 2^23 it cost 2: 84 against the reference's 86).
    const int64_t d = 65536, rows = 1;
    Quantized in;
    in.scale = 0.01f;
    in.zero_point = 0;
    in.q.assign(static_cast<size_t>(d), 0);
    in.q[5] = 127;
    const float s_y = std::ldexp(1.0f, -16);
    std::vector<float> gamma(d, 1.0f);
    gamma[5] = 0.39828f * s_y;
    cases.push_back({"gamma/s_y from 0.4 to 65536", in, rows, d, gamma,
                     std::vector<float>(d, 0.0f), 1e-5f, s_y, 0});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(Int8OutputScaleFits(c.gamma.data(), c.d, c.out_scale));
    ASSERT_TRUE(Int8EpsilonFits(c.epsilon, c.in.scale, c.d));
    const Int8Affine folded = FoldInt8Affine(c.gamma.data(), c.beta.data(), c.d,
                                             c.out_scale, c.out_zp);
    Int8Params p;
    p.dim = c.d;
    p.epsilon = c.epsilon;
    p.input_scale = c.in.scale;
    p.input_zero_point = c.in.zero_point;
    p.affine = &folded;
    p.gamma = c.gamma.data();
    p.beta = c.beta.data();
    std::vector<int8_t> y(c.in.q.size()), yf(c.in.q.size());
    Int8LayerNormInteger(p, c.in.q.data(), y.data(), c.rows);
    Int8LayerNormFloat(p, c.in.q.data(), yf.data(), c.rows);
    const std::vector<int> ref =
        ReferenceQuantized(c.in, c.rows, c.d, c.gamma.data(), c.beta.data(),
                           c.epsilon, c.out_scale, c.out_zp);
    int64_t visible = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_LE(std::abs(y[i] - ref[i]), 1) << "element " << i;
      ASSERT_LE(std::abs(yf[i] - ref[i]), 1) << "float path, element " << i;
      visible += ref[i] > -128 && ref[i] < 127;
    }
    EXPECT_GE(visible, c.rows);  // not all clamped
  }
  // Just past the edges: refused.
  const float one = 1.0f;
  EXPECT_FALSE(Int8OutputScaleFits(&one, 1, 1.0f / 65537));
  EXPECT_TRUE(Int8EpsilonFits(1.0f, 1.0f, int64_t{1} << 30));  // D² = 2^60
  EXPECT_FALSE(Int8EpsilonFits(1.01f, 1.0f, int64_t{1} << 30));
}

// Short rows of small values with input scales that make ε comparable to
// the row's variance (D²·ε/s_x² = E around 0.1–10): E's fraction then
// weighs on 1/√(M + E), so it must not be rounded away before the shift
// (E = 2.49 rounded to 2 gave -29 for -27 at D = 4, and 0.49 rounded to 0
// gave ±32 for ±26 at D = 2).
TEST(Int8LayerNormTest, ShortRowsWithEpsilonNearTheirVarianceStayWithinOneLsb) {
  struct Case {
    std::vector<int8_t> q;
    float s_x, s_y;
  };
  std::vector<Case> cases = {{{0, 0, 0, 1}, 0.008016f, 1.0f / 64},
                             {{0, 1}, 0.009035f, 4.0f / 127},
                             {{0, 1}, 0.009035f, 1.0f / 128}};
  std::mt19937 rng(12);
  for (int i = 0; i < 4000; ++i) {
    const int64_t d = 2 + static_cast<int64_t>(rng() % 7);
    Case c;
    for (int64_t j = 0; j < d; ++j)
      c.q.push_back(static_cast<int8_t>(static_cast<int>(rng() % 5) - 2));
    // ε/s_x² from 0.01 to 10 (ε = 1e-5).
    const double ratio = std::pow(10.0, -2.0 + 3.0 * (rng() % 1000) / 1000.0);
    c.s_x = static_cast<float>(std::sqrt(1e-5 / ratio));
    c.s_y = 1.0f / static_cast<float>(16 << (rng() % 4));
    cases.push_back(c);
  }
  int64_t checked = 0;
  for (const Case& c : cases) {
    const auto d = static_cast<int64_t>(c.q.size());
    ASSERT_TRUE(Int8EpsilonFits(1e-5f, c.s_x, d));
    const Int8Affine folded = FoldInt8Affine(nullptr, nullptr, d, c.s_y, 0);
    Int8Params p;
    p.dim = d;
    p.input_scale = c.s_x;
    p.affine = &folded;
    Quantized in{c.q, c.s_x, 0};
    std::vector<int8_t> y(c.q.size());
    Int8LayerNormInteger(p, c.q.data(), y.data(), 1);
    const std::vector<int> ref =
        ReferenceQuantized(in, 1, d, nullptr, nullptr, 1e-5f, c.s_y, 0);
    for (int64_t j = 0; j < d; ++j) {
      ASSERT_LE(std::abs(y[j] - ref[j]), 1)
          << "D " << d << " s_x " << c.s_x << " s_y " << c.s_y << " element "
          << j << ": " << int{y[j]} << " against " << ref[j];
      ++checked;
    }
  }
  EXPECT_GT(checked, 10000);
}

TEST(Int8LayerNormTest, ExtremeInputsDoNotOverflow) {
  // Every value at ±full range, zero points at the ends, D at its maximum.
  const int64_t d = 65536;
  std::vector<int8_t> x(d);
  for (int64_t i = 0; i < d; ++i) x[i] = (i % 2) ? 127 : -128;
  for (int32_t zp : {-128, 127}) {
    const Int8Affine folded =
        FoldInt8Affine(nullptr, nullptr, d, 4.0f / 127, 0);
    Int8Params p;
    p.dim = d;
    p.input_scale = 1e-3f;
    p.input_zero_point = zp;
    p.epsilon = 1e-12f;
    p.affine = &folded;
    std::vector<int8_t> y(d);
    Int8LayerNormInteger(p, x.data(), y.data(), 1);
    // Alternating ±1 standard deviation: ±1/(4/127) = ±31.75 -> ±32.
    EXPECT_EQ(y[0], -32);
    EXPECT_EQ(y[1], 32);
  }
}

TEST(Int8LayerNormTest, DeterministicAcrossRunsAndRowSplits) {
  std::mt19937 rng(4);
  const Quantized in = RealisticActivations(64, 768, &rng);
  const Int8Affine folded = FoldInt8Affine(nullptr, nullptr, 768, 0.03f, 0);
  Int8Params p;
  p.dim = 768;
  p.input_scale = in.scale;
  p.input_zero_point = in.zero_point;
  p.affine = &folded;
  std::vector<int8_t> all(in.q.size()), split(in.q.size());
  Int8LayerNormInteger(p, in.q.data(), all.data(), 64);
  for (int64_t r = 0; r < 64; r += 5) {
    const int64_t n = std::min<int64_t>(5, 64 - r);
    Int8LayerNormInteger(p, in.q.data() + r * 768, split.data() + r * 768, n);
  }
  EXPECT_EQ(all, split);
}

// Batch invariance (DESIGN.md) for both INT8 paths, as the CPU backend runs
// them: random compositions of segments (each at an odd offset inside its
// own buffers, in shuffled order, some long enough to be cut into row
// chunks), through NormalizeSegments with 0, 1 and 3 pool threads, against
// each row normalized alone. About 2 MiB per batch, well above the size at
// which NormalizeSegments starts using the pool.
TEST(Int8LayerNormTest, RowBitsDoNotDependOnBatchCompositionOrThreads) {
  std::mt19937 rng(17);
  for (int64_t d : {768, 4099}) {
    const int64_t rows = (int64_t{2} << 20) / d;
    const Quantized in = RealisticActivations(rows, d, &rng);
    std::normal_distribution<float> nd(1.0f, 0.3f);
    std::vector<float> gamma(static_cast<size_t>(d)),
        beta(static_cast<size_t>(d));
    for (auto& g : gamma) g = nd(rng);
    for (auto& b : beta) b = nd(rng) - 1.0f;
    const Int8Affine folded = FoldInt8Affine(
        gamma.data(), beta.data(), d,
        DefaultInt8OutputScale(gamma.data(), beta.data(), d), -2);
    Int8Params p;
    p.dim = d;
    p.input_scale = in.scale;
    p.input_zero_point = in.zero_point;
    p.affine = &folded;
    p.gamma = gamma.data();
    p.beta = beta.data();
    for (bool float_path : {false, true}) {
      const auto run = float_path ? Int8LayerNormFloat : Int8LayerNormInteger;
      std::vector<int8_t> alone(in.q.size());
      for (int64_t r = 0; r < rows; ++r)
        run(p, in.q.data() + r * d, alone.data() + r * d, 1);
      for (int threads : {0, 1, 3}) {
        ThreadPool pool(threads);
        for (int trial = 0; trial < 3; ++trial) {
          struct Piece {
            int64_t first_row, rows;
            std::vector<int8_t> in, out;
            size_t pad;
          };
          std::vector<Piece> pieces;
          for (int64_t r = 0; r < rows;) {
            const int64_t n = std::min<int64_t>(
                rows - r, trial == 0 ? rows : 1 + rng() % 600);
            Piece piece;
            piece.first_row = r;
            piece.rows = n;
            piece.pad = 1 + rng() % 15;
            piece.in.assign(piece.pad + n * d, 0);
            std::memcpy(piece.in.data() + piece.pad, in.q.data() + r * d,
                        static_cast<size_t>(n * d));
            piece.out.assign(piece.pad + n * d, 0);
            pieces.push_back(std::move(piece));
            r += n;
          }
          std::shuffle(pieces.begin(), pieces.end(), rng);
          std::vector<RowSegment> segments;
          for (Piece& piece : pieces) {
            RowSegment s;
            s.input_dtype = s.output_dtype = DType::kInt8;
            s.input = piece.in.data() + piece.pad;
            s.output = piece.out.data() + piece.pad;
            s.rows = piece.rows;
            s.int8 = &p;
            s.int8_float_path = float_path;
            segments.push_back(s);
          }
          NormalizeSegments(segments, &pool);
          for (const Piece& piece : pieces) {
            ASSERT_EQ(0, std::memcmp(piece.out.data() + piece.pad,
                                     alone.data() + piece.first_row * d,
                                     static_cast<size_t>(piece.rows * d)))
                << (float_path ? "float" : "integer") << " path, D " << d
                << ", threads " << threads << ", trial " << trial
                << ", rows from " << piece.first_row;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace normserve
