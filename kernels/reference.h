// A float64 reference implementation of the normalization contract in
// kernels/normalize.h, for tests and benchmarks only: plain two-pass in
// double, no shift, no SIMD, favouring obvious correctness over speed.
//
// Thread-safe (pure), allocates its result, never fails.
#ifndef NORMSERVE_KERNELS_REFERENCE_H_
#define NORMSERVE_KERNELS_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "kernels/normalize.h"

namespace normserve {

struct ReferenceResult {
  std::vector<double> output;  // rows * dim
  std::vector<double> mean;    // rows (0 for RMSNorm)
  std::vector<double> rstd;    // rows
};

// Normalizes rows * params.dim float inputs (already z = x + residual) in
// double.
ReferenceResult ReferenceNormalizeFull(const NormParams& params,
                                       const float* input, int64_t rows);

// Just the outputs.
std::vector<double> ReferenceNormalize(const NormParams& params,
                                       const float* input, int64_t rows);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_REFERENCE_H_
