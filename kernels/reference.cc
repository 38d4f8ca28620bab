#include "kernels/reference.h"

#include <cmath>

namespace normserve {

ReferenceResult ReferenceNormalizeFull(const NormParams& params,
                                       const float* input, int64_t rows) {
  const int64_t d = params.dim;
  ReferenceResult res;
  res.output.resize(static_cast<size_t>(rows * d));
  res.mean.resize(static_cast<size_t>(rows));
  res.rstd.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = input + r * d;
    double mean = 0.0;
    if (params.kind == NormKind::kLayerNorm) {
      for (int64_t i = 0; i < d; ++i) mean += x[i];
      mean /= static_cast<double>(d);
    }
    double var = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      const double c = static_cast<double>(x[i]) - mean;
      var += c * c;
    }
    var /= static_cast<double>(d);
    const double rstd =
        1.0 / std::sqrt(var + static_cast<double>(params.epsilon));
    for (int64_t i = 0; i < d; ++i) {
      double v = (static_cast<double>(x[i]) - mean) * rstd;
      if (params.gamma != nullptr) v *= params.gamma[i];
      if (params.beta != nullptr) v += params.beta[i];
      res.output[static_cast<size_t>(r * d + i)] = v;
    }
    res.mean[static_cast<size_t>(r)] = mean;
    res.rstd[static_cast<size_t>(r)] = rstd;
  }
  return res;
}

std::vector<double> ReferenceNormalize(const NormParams& params,
                                       const float* input, int64_t rows) {
  return ReferenceNormalizeFull(params, input, rows).output;
}

}  // namespace normserve
