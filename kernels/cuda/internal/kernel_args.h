// DeviceRows (normalize_cuda.h) as the kernels take them. One translation,
// used by NormalizeRowsCuda and by the host run of the row algorithm in
// tests/cuda_row_algorithm_test.cc. Include only from kernels/cuda/ and its
// tests.
#ifndef NORMSERVE_KERNELS_CUDA_INTERNAL_KERNEL_ARGS_H_
#define NORMSERVE_KERNELS_CUDA_INTERNAL_KERNEL_ARGS_H_

#include "kernels/cuda/internal/kernel_launch.h"
#include "kernels/cuda/normalize_cuda.h"

namespace normserve::cuda::internal {

// The kernels' arguments for `r`, which has passed NormalizeRowsCuda's
// checks (params.dim > 0, float dtypes, rows > 0).
KernelArgs KernelArgsFor(const DeviceRows& r);

}  // namespace normserve::cuda::internal

#endif  // NORMSERVE_KERNELS_CUDA_INTERNAL_KERNEL_ARGS_H_
