// The boundary between the host wrapper (normalize_cuda.cc, compiled by the
// C++ compiler) and the kernels (normalize_cuda.cu, compiled by nvcc): plain
// data and one function, so that nvcc never sees Abseil. Include only from
// kernels/cuda/.
#ifndef NORMSERVE_KERNELS_CUDA_INTERNAL_KERNEL_LAUNCH_H_
#define NORMSERVE_KERNELS_CUDA_INTERNAL_KERNEL_LAUNCH_H_

#include <cstdint>

#include "kernels/cuda/launch_plan.h"
#include "kernels/dtype.h"

struct CUstream_st;

namespace normserve::cuda::internal {

// Validated arguments (see DeviceRows in normalize_cuda.h): rows > 0,
// dim > 0, float dtypes, input and output non-null, the grid within CUDA's
// limits.
struct KernelArgs {
  const void* input;
  const void* residual;  // may be null
  void* output;
  void* sum_output;    // may be null
  float* mean;         // may be null
  float* rstd;         // may be null
  const float* gamma;  // may be null
  const float* beta;   // may be null
  int64_t rows;
  int64_t dim;
  double inv_dim;  // 1 / dim
  float epsilon;
  bool layer_norm;
  DType input_dtype;
  DType output_dtype;
  // The staged mappings copy the residual into shared memory beside x;
  // false (set at launch where the two would not fit) reads it from global
  // memory instead.
  bool stage_residual = true;
  // Row buffers per row group of a staged mapping (set at launch from
  // StagedTuning).
  int stages = 2;
};

// What a launch ran, for the tests and the tuning benchmark: a staged
// launch may be refused (rows not aligned, buffers that do not fit in
// shared memory) and run the register kernels instead, or stage x alone
// where the tuning asked for its residual beside it.
struct LaunchReport {
  bool staged = false;
  int stages = 0;                // buffers per row group (staged)
  bool residual_staged = false;  // the residual beside x (staged)
  // γ and β held in registers across the rows (a staged block mapping).
  bool weights_held = false;
  int64_t blocks = 0;
  size_t shared_bytes = 0;  // dynamic shared memory per block
};

// Enqueues the kernel `plan` selects, a staged one shaped by `tuning`;
// returns the cudaError_t of the launch (cudaErrorInvalidValue for a
// tuning out of range) and, where `report` is given, what it launched.
int LaunchNormalize(const KernelArgs& args, const LaunchPlan& plan,
                    CUstream_st* stream,
                    const StagedTuning& tuning = StagedTuning{},
                    LaunchReport* report = nullptr);

}  // namespace normserve::cuda::internal

#endif  // NORMSERVE_KERNELS_CUDA_INTERNAL_KERNEL_LAUNCH_H_
