#include "kernels/int8_layer_norm.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/normalize.h"

namespace normserve {
namespace {

constexpr int kFracBits = 20;  // F
constexpr int kMaxGBits = 31;  // |G_i| < 2^31
constexpr int64_t kMaxB = int64_t{1} << 61;
constexpr int64_t kMaxE = int64_t{1} << 60;

int BitLength(uint64_t x) { return x == 0 ? 0 : 64 - __builtin_clzll(x); }

}  // namespace

uint64_t ISqrt64(uint64_t x) {
  if (x < 2) return x;
  // Start above the root (2^ceil(bits/2) ≥ sqrt(x)); Newton's iteration
  // then decreases monotonically to floor(sqrt(x)).
  uint64_t r = uint64_t{1} << ((BitLength(x) + 1) / 2);
  for (;;) {
    const uint64_t next = (r + x / r) >> 1;
    if (next >= r) return r;
    r = next;
  }
}

Int8Affine FoldInt8Affine(const float* gamma, const float* beta, int64_t dim,
                          float output_scale, int32_t output_zero_point) {
  Int8Affine a;
  a.dim = dim;
  a.output_scale = output_scale;
  a.output_zero_point = output_zero_point;
  double max_g = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    const double g = gamma != nullptr ? gamma[i] : 1.0;
    max_g = std::max(max_g, std::abs(g) / output_scale);
  }
  // The largest g with max|γ/s_y|·2^g ≤ 2^30: G_i's rounding then costs
  // at most √D·2^-(g+1) ≤ 2^(c−23) LSB (c = ⌈log2 max|γ/s_y|⌉ ≤ 16).
  int shift = kMaxGBits - 1;
  if (max_g > 0)
    shift = kMaxGBits - 1 - static_cast<int>(std::ceil(std::log2(max_g)));
  // B_i's range, |β/s_y| up to 2^(61−F−g) = 2^(11 + c) (at least 2^11
  // with g ≤ 30), covers every β that can still leave an output visible
  // (|β/s_y| ≤ 256 + max|γ/s_y|·√D, √D ≤ 256); g ≥ 1 − F keeps the final
  // shift F + g ≥ 1.
  shift = std::max(-kFracBits + 1, std::min(shift, kMaxGBits - 1));
  a.g_shift = shift;
  a.g.resize(static_cast<size_t>(dim));
  a.b.resize(static_cast<size_t>(dim));
  for (int64_t i = 0; i < dim; ++i) {
    const double g = gamma != nullptr ? gamma[i] : 1.0;
    const double b = beta != nullptr ? beta[i] : 0.0;
    // Saturate rather than overflow: callers keep max|γ/s_y| at most
    // kMaxInt8GammaRatio (Int8OutputScaleFits), so this only guards
    // against misuse.
    const double gi = std::ldexp(g / output_scale, shift);
    const double limit = static_cast<double>((int64_t{1} << kMaxGBits) - 1);
    a.g[static_cast<size_t>(i)] = static_cast<int32_t>(
        std::llround(std::min(limit, std::max(-limit, gi))));
    const double bb = std::ldexp(b / output_scale, kFracBits + shift);
    a.b[static_cast<size_t>(i)] = static_cast<int64_t>(
        std::llround(std::min<double>(kMaxB, std::max<double>(-kMaxB, bb))));
  }
  return a;
}

bool Int8OutputScaleFits(const float* gamma, int64_t dim, float output_scale) {
  if (!(output_scale >= std::numeric_limits<float>::min()) ||
      !std::isfinite(output_scale)) {
    return false;
  }
  double max_g = gamma == nullptr ? 1.0 : 0.0;
  for (int64_t i = 0; gamma != nullptr && i < dim; ++i) {
    max_g = std::max(max_g, std::abs(static_cast<double>(gamma[i])));
  }
  return max_g / output_scale <= kMaxInt8GammaRatio;
}

bool Int8EpsilonFits(float epsilon, float input_scale, int64_t dim) {
  const double d = static_cast<double>(dim);
  return d * d * static_cast<double>(epsilon) /
             (static_cast<double>(input_scale) * input_scale) <=
         static_cast<double>(kMaxE);
}

float DefaultInt8OutputScale(const float* gamma, const float* beta,
                             int64_t dim) {
  double max_g = gamma == nullptr ? 1.0 : 0.0, max_b = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    if (gamma != nullptr)
      max_g = std::max(max_g, std::abs(static_cast<double>(gamma[i])));
    if (beta != nullptr)
      max_b = std::max(max_b, std::abs(static_cast<double>(beta[i])));
  }
  const double range = 4.0 * max_g + max_b;
  // Never below the smallest normal float (tiny γ and β would give a
  // denormal scale, which Int8OutputScaleFits refuses).
  return std::max(static_cast<float>(range > 0 ? range / 127.0 : 1.0 / 127.0),
                  std::numeric_limits<float>::min());
}

double Int8EpsilonTerm(float epsilon, float input_scale, int64_t dim) {
  const double d = static_cast<double>(dim);
  const double e = d * d * static_cast<double>(epsilon) /
                   (static_cast<double>(input_scale) * input_scale);
  return e < static_cast<double>(kMaxE) ? e : static_cast<double>(kMaxE);
}

namespace {

// The two loops of the integer path, compiled for AVX-512, AVX2 and
// baseline x86-64 and chosen at load time (GCC function multiversioning),
// so that they vectorize: only adds, multiplies, shifts and compares on
// int32/int64 lanes. Rounding is half up ((a + 2^(s−1)) >> s), which is
// branch-free; the error bound is the same as half away from zero.
// (Not under ThreadSanitizer: the ifunc resolvers would run, instrumented,
// before TSan's runtime is up.)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__)
#define NORMSERVE_INT8_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NORMSERVE_INT8_CLONES
#endif

NORMSERVE_INT8_CLONES
void RowSums(const int8_t* q, int64_t d, int32_t zero_point, int64_t* sum,
             int64_t* sum_squares) {
  int64_t s = 0, sq = 0;
  for (int64_t i = 0; i < d; ++i) {
    const int32_t v = static_cast<int32_t>(q[i]) - zero_point;
    s += v;
    sq += v * v;  // |v| ≤ 255: v² < 2^17 fits int32
  }
  *sum = s;
  *sum_squares = sq;
}

NORMSERVE_INT8_CLONES
void RowOutput(const int8_t* q, int8_t* y, int64_t d, int32_t zero_point,
               int64_t sum, int64_t recip, int n_shift, const int32_t* g,
               const int64_t* b, int out_shift, int32_t out_zero_point) {
  const int64_t half_n = int64_t{1} << (n_shift - 1);
  const int64_t half_out = int64_t{1} << (out_shift - 1);
  for (int64_t i = 0; i < d; ++i) {
    const int64_t v = static_cast<int64_t>(q[i]) - zero_point;
    const int64_t c = d * v - sum;                      // |c| < 2^25
    const int64_t n = (c * recip + half_n) >> n_shift;  // |n| ≤ 2^28
    const int64_t acc = n * g[i] + b[i];                // < 2^62
    int64_t r = ((acc + half_out) >> out_shift) + out_zero_point;
    r = r < -128 ? -128 : r;
    r = r > 127 ? 127 : r;
    y[i] = static_cast<int8_t>(r);
  }
}

}  // namespace

void Int8LayerNormInteger(const Int8Params& p, const int8_t* input,
                          int8_t* output, int64_t rows) {
  const int64_t d = p.dim;
  const Int8Affine& a = *p.affine;
  const double e = Int8EpsilonTerm(p.epsilon, p.input_scale, d);
  const auto e_ceil = static_cast<uint64_t>(std::ceil(e));
  const int out_shift = kFracBits + a.g_shift;
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* q = input + r * d;
    int64_t s, sq;
    RowSums(q, d, p.input_zero_point, &s, &sq);
    const auto m = static_cast<uint64_t>(d * sq - s * s);  // D²·var, exact
    // k from M + ⌈E⌉ (≤ 2^60 + 2^49), then T = (M + E)·4^k with E's
    // fraction scaled up before it is rounded: rounding E first could move
    // 1/√T by far more than an LSB where M + E is small.
    int k = 0;
    for (uint64_t bound = std::max<uint64_t>(m + e_ceil, 1);
         BitLength(bound) + 2 <= 62; bound <<= 2) {
      ++k;
    }
    uint64_t t = (m << (2 * k)) +
                 static_cast<uint64_t>(std::llround(std::ldexp(e, 2 * k)));
    if (t == 0) t = 1;  // constant row with ε → 0: every c_i is 0 anyway
    const uint64_t den = ISqrt64(t);  // ≈ sqrt(M + E)·2^k, > 2^29 if M ≥ 1
    const int64_t recip = static_cast<int64_t>((uint64_t{1} << 62) / den);
    RowOutput(q, output + r * d, d, p.input_zero_point, s, recip,
              62 - kFracBits - k, a.g.data(), a.b.data(), out_shift,
              a.output_zero_point);
  }
}

namespace {

NORMSERVE_INT8_CLONES
void Dequantize(const int8_t* q, float* x, int64_t d, float scale,
                int32_t zero_point) {
  for (int64_t i = 0; i < d; ++i) {
    x[i] = scale * static_cast<float>(static_cast<int32_t>(q[i]) - zero_point);
  }
}

// round(y / s_y) half away from zero, + zero point, clamped. y is finite
// (int8 inputs are, and γ/β were validated finite).
NORMSERVE_INT8_CLONES
void Quantize(const float* y, int8_t* q, int64_t d, float inv_scale,
              int32_t zero_point) {
  for (int64_t i = 0; i < d; ++i) {
    float t = y[i] * inv_scale;
    t = t == t ? t : 0.0f;  // NaN (never expected) maps to the zero point
    t = t < -256.0f ? -256.0f : t;
    t = t > 256.0f ? 256.0f : t;
    // Half away from zero, exactly: t − trunc(t) is exact for |t| ≤ 256
    // (adding 0.5 would round 0.49999997 up to 1).
    const float whole = std::trunc(t);
    const float frac = t - whole;
    int32_t r = static_cast<int32_t>(whole) + (frac >= 0.5f ? 1 : 0) -
                (frac <= -0.5f ? 1 : 0) + zero_point;
    r = r < -128 ? -128 : r;
    r = r > 127 ? 127 : r;
    q[i] = static_cast<int8_t>(r);
  }
}

}  // namespace

void Int8LayerNormFloat(const Int8Params& p, const int8_t* input,
                        int8_t* output, int64_t rows) {
  const int64_t d = p.dim;
  thread_local std::vector<float> x, y;
  x.resize(static_cast<size_t>(d));
  y.resize(static_cast<size_t>(d));
  NormParams np;
  np.dim = d;
  np.epsilon = p.epsilon;
  np.gamma = p.gamma;
  np.beta = p.beta;
  RowSegment seg;
  seg.params = &np;
  seg.input = x.data();
  seg.output = y.data();
  seg.rows = 1;
  const float inv_out = 1.0f / p.affine->output_scale;
  for (int64_t r = 0; r < rows; ++r) {
    Dequantize(input + r * d, x.data(), d, p.input_scale, p.input_zero_point);
    NormalizeRows(seg, 0, 1);
    Quantize(y.data(), output + r * d, d, inv_out, p.affine->output_zero_point);
  }
}

}  // namespace normserve
