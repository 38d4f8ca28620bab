// The portable scalar kernel: every step in double, the simplest way to be
// more accurate than the contract requires (and immune to overflow of
// x - mean or (x - mean)^2 for any finite float input). The shift by the
// row's first value makes the first pass exact for near-constant rows with
// a large mean, where even a double sum of raw values would lose bits.
#include "kernels/normalize.h"

#include <cmath>

namespace normserve {
namespace {

void NormalizeRow(const NormParams& p, const float* x, float* y) {
  const int64_t d = p.dim;
  const double n = static_cast<double>(d);
  const double shift = p.kind == NormKind::kLayerNorm ? x[0] : 0.0;
  double mean = 0.0;  // Of x - shift; stays 0 for RMSNorm.
  if (p.kind == NormKind::kLayerNorm) {
    double sum = 0.0;
    for (int64_t i = 0; i < d; ++i) sum += static_cast<double>(x[i]) - shift;
    mean = sum / n;
  }
  double m2 = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    const double c = (static_cast<double>(x[i]) - shift) - mean;
    m2 += c * c;
  }
  const double rstd = 1.0 / std::sqrt(m2 / n + static_cast<double>(p.epsilon));
  for (int64_t i = 0; i < d; ++i) {
    // (x - mean) * rstd, never x * rstd - mean * rstd: a constant row gives
    // exactly beta.
    double v = ((static_cast<double>(x[i]) - shift) - mean) * rstd;
    if (p.gamma != nullptr) v *= p.gamma[i];
    if (p.beta != nullptr) v += p.beta[i];
    y[i] = static_cast<float>(v);
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
