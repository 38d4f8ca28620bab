#include "kernels/int8_layer_norm.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/normalize.h"

namespace normserve {
namespace {

constexpr int kFracBits = 20;           // F
constexpr int kMaxGBits = 23;           // |G_i| < 2^23
constexpr int64_t kMaxB = int64_t{1} << 50;
constexpr int64_t kMaxE = int64_t{1} << 60;

int BitLength(uint64_t x) { return x == 0 ? 0 : 64 - __builtin_clzll(x); }

int8_t Clamp8(int64_t v) {
  return static_cast<int8_t>(std::min<int64_t>(127, std::max<int64_t>(-128, v)));
}

// round(a / 2^s) for s ≥ 1, halves away from zero.
int64_t RoundShift(int64_t a, int s) {
  const int64_t half = int64_t{1} << (s - 1);
  return a >= 0 ? (a + half) >> s : -((-a + half) >> s);
}

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
  // The largest g with max|γ/s_y|·2^g < 2^23.
  int shift = kMaxGBits - 1;
  if (max_g > 0) shift = kMaxGBits - 1 - static_cast<int>(std::ceil(std::log2(max_g)));
  // g ≤ 22 keeps B_i's range (|β/s_y| up to 2^(50−F−g) ≥ 256) above what an
  // int8 output can show; g ≥ 1 − F keeps the final shift F + g ≥ 1.
  shift = std::max(-kFracBits + 1, std::min(shift, 22));
  a.g_shift = shift;
  a.g.resize(static_cast<size_t>(dim));
  a.b.resize(static_cast<size_t>(dim));
  for (int64_t i = 0; i < dim; ++i) {
    const double g = gamma != nullptr ? gamma[i] : 1.0;
    const double b = beta != nullptr ? beta[i] : 0.0;
    a.g[static_cast<size_t>(i)] =
        static_cast<int32_t>(std::llround(std::ldexp(g / output_scale, shift)));
    const double bb = std::ldexp(b / output_scale, kFracBits + shift);
    a.b[static_cast<size_t>(i)] = static_cast<int64_t>(
        std::llround(std::min<double>(kMaxB, std::max<double>(-kMaxB, bb))));
  }
  return a;
}

float DefaultInt8OutputScale(const float* gamma, const float* beta, int64_t dim) {
  double max_g = gamma == nullptr ? 1.0 : 0.0, max_b = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    if (gamma != nullptr) max_g = std::max(max_g, std::abs(static_cast<double>(gamma[i])));
    if (beta != nullptr) max_b = std::max(max_b, std::abs(static_cast<double>(beta[i])));
  }
  const double range = 4.0 * max_g + max_b;
  return static_cast<float>(range > 0 ? range / 127.0 : 1.0 / 127.0);
}

int64_t Int8EpsilonTerm(float epsilon, float input_scale, int64_t dim) {
  const double d = static_cast<double>(dim);
  const double e = d * d * static_cast<double>(epsilon) /
                   (static_cast<double>(input_scale) * input_scale);
  if (!(e < static_cast<double>(kMaxE))) return kMaxE;
  return static_cast<int64_t>(std::llround(e));
}

void Int8LayerNormInteger(const Int8Params& p, const int8_t* input,
                          int8_t* output, int64_t rows) {
  const int64_t d = p.dim;
  const Int8Affine& a = *p.affine;
  const int64_t e = Int8EpsilonTerm(p.epsilon, p.input_scale, d);
  const int out_shift = kFracBits + a.g_shift;
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* q = input + r * d;
    int8_t* y = output + r * d;
    int32_t s = 0;
    int64_t sq = 0;
    for (int64_t i = 0; i < d; ++i) {
      const int32_t v = static_cast<int32_t>(q[i]) - p.input_zero_point;
      s += v;
      sq += static_cast<int64_t>(v) * v;
    }
    const int64_t m = d * sq - static_cast<int64_t>(s) * s;  // D²·var, exact
    uint64_t t = static_cast<uint64_t>(m) + static_cast<uint64_t>(e);
    int k = 0;
    if (t == 0) t = 1;  // constant row with ε → 0: c_i = 0 anyway
    while (BitLength(t) + 2 <= 62) {
      t <<= 2;
      ++k;
    }
    const uint64_t den = ISqrt64(t);  // ≈ sqrt(M + E)·2^k, ≥ 2^30
    const int64_t recip = static_cast<int64_t>((uint64_t{1} << 62) / den);
    const int n_shift = 62 - kFracBits - k;
    for (int64_t i = 0; i < d; ++i) {
      const int32_t v = static_cast<int32_t>(q[i]) - p.input_zero_point;
      const int64_t c = d * v - s;
      const int64_t n = RoundShift(c * recip, n_shift);
      const int64_t acc = n * a.g[static_cast<size_t>(i)] + a.b[static_cast<size_t>(i)];
      y[i] = Clamp8(RoundShift(acc, out_shift) + a.output_zero_point);
    }
  }
}

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
    for (int64_t i = 0; i < d; ++i) {
      x[static_cast<size_t>(i)] =
          p.input_scale * static_cast<float>(static_cast<int32_t>(input[r * d + i]) -
                                             p.input_zero_point);
    }
    NormalizeRows(seg, 0, 1);
    for (int64_t i = 0; i < d; ++i) {
      const float q = std::round(y[static_cast<size_t>(i)] * inv_out);
      const float clamped = std::isnan(q) ? 0.0f : std::min(255.0f, std::max(-255.0f, q));
      output[r * d + i] =
          Clamp8(static_cast<int64_t>(clamped) + p.affine->output_zero_point);
    }
  }
}

}  // namespace normserve
