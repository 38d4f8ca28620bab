// The portable scalar kernel. Statistics are accumulated in double, which is
// both simple and more accurate than the contract requires; the pivot shift
// keeps the first pass exact for near-constant rows with a large mean.
#include "kernels/normalize.h"

#include <cmath>

namespace normserve {
namespace {

void NormalizeRow(const NormParams& p, const float* x, float* y) {
  const int64_t d = p.dim;
  float shift = 0.0f;
  float mean = 0.0f;
  double m2 = 0.0;
  if (p.kind == NormKind::kLayerNorm) {
    // Shifted two-pass: subtracting a value of the row first makes x - shift
    // exact whenever the row's values are within a factor of two of each
    // other, which is the |mean| >> std case where one pass loses all bits.
    shift = x[0];
    double sum = 0.0;
    for (int64_t i = 0; i < d; ++i) sum += static_cast<double>(x[i] - shift);
    const double mean_shifted = sum / static_cast<double>(d);
    for (int64_t i = 0; i < d; ++i) {
      const double c = static_cast<double>(x[i] - shift) - mean_shifted;
      m2 += c * c;
    }
    mean = static_cast<float>(mean_shifted);
  } else {
    for (int64_t i = 0; i < d; ++i) {
      const double v = static_cast<double>(x[i]);
      m2 += v * v;
    }
  }
  const double var = m2 / static_cast<double>(d);
  const float rstd = static_cast<float>(
      1.0 / std::sqrt(var + static_cast<double>(p.epsilon)));
  // x - shift is computed exactly as in the first pass, then centred:
  // (x - mean) * rstd with mean = shift + mean_shifted.
  for (int64_t i = 0; i < d; ++i) {
    float v = ((x[i] - shift) - mean) * rstd;
    if (p.gamma != nullptr) v *= p.gamma[i];
    if (p.beta != nullptr) v += p.beta[i];
    y[i] = v;
  }
}

}  // namespace

void NormalizeRows(const NormParams& params, const float* input, float* output,
                   int64_t rows) {
  const int64_t d = params.dim;
  for (int64_t r = 0; r < rows; ++r) {
    NormalizeRow(params, input + r * d, output + r * d);
  }
}

void NormalizeSegments(absl::Span<const RowSegment> segments) {
  for (const RowSegment& s : segments) {
    NormalizeRows(*s.params, s.input, s.output, s.rows);
  }
}

}  // namespace normserve
