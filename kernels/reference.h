// A float64 reference implementation of the normalization contract in
// kernels/normalize.h, for tests only: it favours obvious correctness over
// speed (plain two-pass in double, no shift, no tricks).
//
// Thread-safe (pure), allocates its result, never fails.
#ifndef NORMSERVE_KERNELS_REFERENCE_H_
#define NORMSERVE_KERNELS_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "kernels/normalize.h"

namespace normserve {

// Returns rows * params.dim outputs in double for the given float inputs.
std::vector<double> ReferenceNormalize(const NormParams& params,
                                       const float* input, int64_t rows);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_REFERENCE_H_
