// Helpers shared by the CPU and CUDA kernel tests: the dtypes, roundings
// to 16-bit floats computed independently of kernels/dtype.h (so that a
// bug there cannot hide in the expected values), tensors of raw bytes that
// know the exact values they hold, normal random rows, and the random cases
// of the seeded sweeps.
#ifndef NORMSERVE_TESTS_KERNEL_TEST_UTIL_H_
#define NORMSERVE_TESTS_KERNEL_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "kernels/normalize.h"
#include "kernels/reference.h"

namespace normserve::testing {

inline constexpr DType kTypes[] = {DType::kFloat32, DType::kFloat16,
                                   DType::kBFloat16};

inline const char* Name(DType t) {
  return t == DType::kFloat32 ? "f32" : t == DType::kFloat16 ? "f16" : "bf16";
}

// ---- Independent roundings for the reference (not dtype.h's) ----

// Correctly rounded float -> binary16 bits, by the compiler's _Float16.
inline uint16_t RefHalf(double v) {
  const _Float16 h = static_cast<_Float16>(static_cast<float>(v));
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}
// Correctly rounded double -> bfloat16 bits via frexp/nearbyint (ties to
// even), computed from a float so that double rounding matches the kernel's
// float32 arithmetic contract.
inline uint16_t RefBF16(double v) {
  const float f = static_cast<float>(v);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  if (std::isinf(f) || f == 0.0f) return static_cast<uint16_t>(bits >> 16);
  int exp;
  const double m = std::frexp(static_cast<double>(f), &exp);  // |m| in [0.5, 1)
  // bf16 keeps 8 significant bits; below 2^-126 it keeps fewer (subnormal).
  const int keep = exp - 1 >= -126 ? 8 : 8 - (-126 - (exp - 1));
  const double scaled = std::nearbyint(std::ldexp(m, keep));
  const float r = static_cast<float>(std::ldexp(scaled, exp - keep));
  uint32_t rbits;
  std::memcpy(&rbits, &r, 4);
  return static_cast<uint16_t>(rbits >> 16);
}
inline uint16_t RefRound(DType t, double v) {
  return t == DType::kFloat16 ? RefHalf(v) : RefBF16(v);
}
inline float Widen(DType t, uint16_t bits) {
  if (t == DType::kFloat16) {
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    return static_cast<float>(h);
  }
  const uint32_t b = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
// Position on the number line of 16-bit float bits, for ulp distances.
inline int32_t Ordinal(uint16_t bits) {
  return (bits & 0x8000) ? -static_cast<int32_t>(bits & 0x7fff)
                         : static_cast<int32_t>(bits);
}

// A tensor of one dtype, stored as raw bytes; values are the exact float
// values it holds.
struct Tensor {
  DType dtype;
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

inline Tensor Encode(DType t, const std::vector<float>& v) {
  Tensor out{t, std::vector<uint8_t>(v.size() * DTypeSize(t)), {}};
  out.values.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::kFloat32) {
      std::memcpy(&out.bytes[i * 4], &v[i], 4);
      out.values[i] = v[i];
    } else {
      const uint16_t b = RefRound(t, v[i]);
      std::memcpy(&out.bytes[i * 2], &b, 2);
      out.values[i] = Widen(t, b);
    }
  }
  return out;
}

inline std::vector<float> Normal(size_t n, float mean, float std,
                                 std::mt19937* rng) {
  std::normal_distribution<float> dist(mean, std);
  std::vector<float> v(n);
  for (float& f : v) f = dist(*rng);
  return v;
}

// The value and the raw 16-bit pattern of element k of a byte buffer.
inline float ValueAt(DType t, const std::vector<uint8_t>& bytes, size_t k) {
  if (t == DType::kFloat32) {
    float f;
    std::memcpy(&f, &bytes[k * 4], 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, &bytes[k * 2], 2);
  return Widen(t, b);
}
inline uint16_t BitsAt(const std::vector<uint8_t>& bytes, size_t k) {
  uint16_t b;
  std::memcpy(&b, &bytes[k * 2], 2);
  return b;
}

// One kernel run: parameters, dtypes, inputs; and what it wrote.
struct Case {
  NormParams params;
  DType in = DType::kFloat32, out = DType::kFloat32;
  int64_t rows = 1;
  Tensor x, residual;
  bool with_residual = false;
  // Whether the run asks for the residual sum z back (what add & norm
  // returns); without it the kernels run their plain row loops.
  bool with_sum = false;
};

struct Output {
  std::vector<uint8_t> y, sum;
  std::vector<float> mean, rstd;
};

inline Output RunOnCpu(const Case& c, ThreadPool* pool = nullptr) {
  const size_t n = static_cast<size_t>(c.rows * c.params.dim);
  Output o{std::vector<uint8_t>(n * DTypeSize(c.out)),
           std::vector<uint8_t>(n * DTypeSize(c.in)),
           std::vector<float>(c.rows), std::vector<float>(c.rows)};
  RowSegment s;
  s.params = &c.params;
  s.input_dtype = c.in;
  s.output_dtype = c.out;
  s.input = c.x.bytes.data();
  s.output = o.y.data();
  s.rows = c.rows;
  s.residual = c.with_residual ? c.residual.bytes.data() : nullptr;
  s.sum_output = c.with_sum ? o.sum.data() : nullptr;
  s.mean = o.mean.data();
  s.rstd = o.rstd.data();
  NormalizeSegments({&s, 1}, pool);
  return o;
}

// z as an unfused `x + residual` in the input dtype computes it.
inline std::vector<float> ReferenceZ(const Case& c) {
  if (!c.with_residual) return c.x.values;
  std::vector<float> z(c.x.values.size());
  for (size_t i = 0; i < z.size(); ++i) {
    const float sum = c.x.values[i] + c.residual.values[i];
    z[i] = c.in == DType::kFloat32 ? sum : Widen(c.in, RefRound(c.in, sum));
  }
  return z;
}

struct UlpStats {
  int64_t elements = 0, over_one_ulp = 0;
  int32_t worst_ulps = 0;
  void Add(const UlpStats& o) {
    elements += o.elements;
    over_one_ulp += o.over_one_ulp;
    worst_ulps = std::max(worst_ulps, o.worst_ulps);
  }
};

// Checks outputs, the residual sum and the statistics of `c` against the
// float64 reference (the kernels' contract: float32 outputs within 1e-5 of
// the row's scale, its largest reference output or β; 16-bit outputs
// counted in ulps of the correctly rounded reference, near zero held to the
// float32 bound; mean and rstd within 1e-5; the residual sum z bit for
// bit); returns ulp statistics for 16-bit outputs.
inline UlpStats CheckAgainstReference(const Case& c, const Output& o) {
  const std::vector<float> z = ReferenceZ(c);
  const ReferenceResult ref =
      ReferenceNormalizeFull(c.params, z.data(), c.rows);
  const int64_t d = c.params.dim;
  UlpStats st;
  for (int64_t r = 0; r < c.rows; ++r) {
    // The row's scale: its largest reference output, or its largest |β|
    // where n·γ + β cancels to less (float32 rounds n·γ and β before they
    // cancel, so the error follows their size, not the sum's; the random
    // sweep found such rows at D = 1).
    double scale = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      scale = std::max(scale, std::abs(ref.output[r * d + i]));
      if (c.params.beta != nullptr)
        scale = std::max(scale, std::abs(double{c.params.beta[i]}));
    }
    for (int64_t i = 0; i < d; ++i) {
      const size_t k = static_cast<size_t>(r * d + i);
      const double want = ref.output[k];
      if (c.out == DType::kFloat32) {
        float got;
        std::memcpy(&got, &o.y[k * 4], 4);
        EXPECT_LE(std::abs(got - want), 1e-5 * scale)
            << "row " << r << " col " << i << " D " << d;
        if (std::abs(got - want) > 1e-5 * scale) return st;
        continue;
      }
      uint16_t got;
      std::memcpy(&got, &o.y[k * 2], 2);
      const int32_t ulps =
          std::abs(Ordinal(got) - Ordinal(RefRound(c.out, want)));
      if (std::abs(want) >= scale / 256) {
        ++st.elements;
        if (ulps > 1) ++st.over_one_ulp;
        st.worst_ulps = std::max(st.worst_ulps, ulps);
      } else {
        // Near zero a 16-bit ulp is finer than float32's absolute error
        // (~1e-7 of the row's scale): hold these to the float32 bound, that
        // is, accept the 16-bit rounding of any value within it (among
        // float16's subnormals, spaced 6e-8, a correctly rounded output
        // can be further than 1e-5 of a small scale from the reference).
        const double tol = 1e-5 * scale;
        const int32_t at = Ordinal(got);
        const bool rounds_a_value_in_bound =
            at >= Ordinal(RefRound(c.out, want - tol)) &&
            at <= Ordinal(RefRound(c.out, want + tol));
        EXPECT_TRUE(rounds_a_value_in_bound ||
                    std::abs(Widen(c.out, got) - want) <=
                        tol + std::abs(want) / 64)
            << "row " << r << " col " << i << ": got " << Widen(c.out, got)
            << ", reference " << want << ", scale " << scale;
      }
    }
    if (c.params.kind == NormKind::kLayerNorm) {
      EXPECT_NEAR(o.mean[r], ref.mean[r],
                  1e-6 * std::abs(ref.mean[r]) + 1e-5 / ref.rstd[r]);
    } else {
      EXPECT_EQ(o.mean[r], 0.0f);
    }
    EXPECT_NEAR(o.rstd[r], ref.rstd[r], 1e-5 * ref.rstd[r]);
  }
  // The returned residual sum is z, bit for bit.
  for (size_t k = 0; c.with_sum && k < z.size(); ++k) {
    if (c.in == DType::kFloat32) {
      float got;
      std::memcpy(&got, &o.sum[k * 4], 4);
      EXPECT_EQ(got, z[k]);
    } else {
      uint16_t got;
      std::memcpy(&got, &o.sum[k * 2], 2);
      EXPECT_EQ(Widen(c.in, got), z[k]);
    }
  }
  return st;
}

// A random case; γ and β are written to *g and *b, which must outlive it.
inline Case MakeCase(NormKind kind, DType in, DType out, int64_t d,
                     int64_t rows, bool gamma, bool beta, bool residual,
                     std::mt19937* rng, std::vector<float>* g,
                     std::vector<float>* b) {
  Case c;
  c.params.kind = kind;
  c.params.dim = d;
  c.params.epsilon = 1e-5f;
  *g = Normal(static_cast<size_t>(d), 1.0f, 0.5f, rng);
  *b = Normal(static_cast<size_t>(d), 0.0f, 0.5f, rng);
  c.params.gamma = gamma ? g->data() : nullptr;
  c.params.beta = beta ? b->data() : nullptr;
  c.in = in;
  c.out = out;
  c.rows = rows;
  c.x = Encode(in, Normal(static_cast<size_t>(rows * d), 2.0f, 3.0f, rng));
  c.with_residual = residual;
  c.with_sum = residual;
  c.residual =
      Encode(in, Normal(static_cast<size_t>(rows * d), 0.0f, 1.0f, rng));
  return c;
}

// ---- Seeded random sweeps ----

// The seed of the random sweeps: NORMSERVE_TEST_SEED when set (to replay a
// run), else a fresh one per process, so that every run explores new cases.
// Printed once; the sweeps also put it in every failure message.
inline uint32_t SweepSeed() {
  static const uint32_t seed = [] {
    const char* env = std::getenv("NORMSERVE_TEST_SEED");
    const uint32_t s =
        env != nullptr ? static_cast<uint32_t>(std::strtoul(env, nullptr, 0))
                       : std::random_device{}();
    std::printf("random sweep seed %u (replay: NORMSERVE_TEST_SEED=%u)\n", s,
                s);
    return s;
  }();
  return seed;
}

// exp of a uniform draw in [log lo, log hi]: every decade equally likely.
inline double LogUniform(double lo, double hi, std::mt19937* rng) {
  return std::exp(
      std::uniform_real_distribution<double>(std::log(lo), std::log(hi))(*rng));
}

// A random case anywhere in the space the kernels serve: D log-uniform in
// [1, 65536]; rows log-uniform in [1, 4096], at most `max_elements` in all;
// ε log-uniform in [1e-12, 1e-1]; either kind; any input and output dtype;
// residual or not; γ and β each present or not, with random spread (γ
// around 1 or around 0); inputs with a random mean and a spread from 1e-3
// to 1e3. γ and β are written to *g and *b, which must outlive the case.
inline Case RandomCase(int64_t max_elements, std::mt19937* rng,
                       std::vector<float>* g, std::vector<float>* b) {
  auto coin = [rng] { return ((*rng)() & 1) != 0; };
  Case c;
  c.params.kind = coin() ? NormKind::kLayerNorm : NormKind::kRmsNorm;
  const int64_t d = std::clamp<int64_t>(
      static_cast<int64_t>(LogUniform(1, 65537, rng)), 1, 65536);
  c.params.dim = d;
  const int64_t max_rows = std::clamp<int64_t>(max_elements / d, 1, 4096);
  c.rows = std::clamp<int64_t>(static_cast<int64_t>(LogUniform(
                                   1, static_cast<double>(max_rows) + 1, rng)),
                               1, max_rows);
  c.params.epsilon = static_cast<float>(LogUniform(1e-12, 1e-1, rng));
  *g = Normal(static_cast<size_t>(d), coin() ? 1.0f : 0.0f,
              static_cast<float>(LogUniform(1e-2, 10, rng)), rng);
  *b = Normal(static_cast<size_t>(d), 0.0f,
              static_cast<float>(LogUniform(1e-2, 100, rng)), rng);
  c.params.gamma = coin() ? g->data() : nullptr;
  c.params.beta = coin() ? b->data() : nullptr;
  c.in = kTypes[(*rng)() % 3];
  c.out = kTypes[(*rng)() % 3];
  const size_t n = static_cast<size_t>(c.rows * d);
  const float spread = static_cast<float>(LogUniform(1e-3, 1e3, rng));
  const float mean = coin()
                         ? 0.0f
                         : std::normal_distribution<float>(0, 1)(*rng) *
                               static_cast<float>(LogUniform(1e-2, 1e3, rng));
  c.x = Encode(c.in, Normal(n, mean, spread, rng));
  c.with_residual = coin();
  c.residual = Encode(c.in, Normal(c.with_residual ? n : 0, 0.0f, spread, rng));
  c.with_sum = coin();
  return c;
}

// One line that says which case failed.
inline std::string Describe(const Case& c) {
  char line[256];
  std::snprintf(
      line, sizeof(line),
      "%s D=%lld rows=%lld eps=%g %s->%s gamma=%d beta=%d "
      "residual=%d sum=%d",
      c.params.kind == NormKind::kLayerNorm ? "layer_norm" : "rms_norm",
      static_cast<long long>(c.params.dim), static_cast<long long>(c.rows),
      c.params.epsilon, Name(c.in), Name(c.out), c.params.gamma != nullptr,
      c.params.beta != nullptr, c.with_residual, c.with_sum);
  return line;
}

}  // namespace normserve::testing

#endif  // NORMSERVE_TESTS_KERNEL_TEST_UTIL_H_
