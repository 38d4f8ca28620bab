// normserve kernels on CUDA: LayerNorm and RMSNorm over rows in device
// memory. Plain C++: no CUDA header is needed to include this one.
//
// What it does
//   The contract of kernels/normalize.h, on the GPU: for each row of
//   D = params.dim elements, z = x (or x + residual rounded to the input
//   dtype), then
//     LayerNorm: y = (z − mean) / sqrt(var + ε) · γ + β  (biased variance)
//     RMSNorm:   y = z / sqrt(mean(z²) + ε) · γ + β
//   with γ == nullptr meaning 1 and β == nullptr meaning 0, and optionally
//   z itself (sum_output) and per-row mean and rstd (mean is 0 for RMSNorm).
//
// Types
//   Input and output are each FLOAT32, FLOAT16 or BFLOAT16 (not INT8); γ and
//   β are float32. Arithmetic and accumulation are float32; outputs round to
//   nearest even.
//
// Numerics
//   As the CPU kernel: shifted by s, the mean of the row's first 16 values,
//   one pass sums u = z − s and u² (a single reduction); var = Σu²/D −
//   (Σu/D)² is kept where s is within a std of the mean (nearly every row:
//   the difference then loses at most one bit), else a second pass sums
//   (u − c)² and (u − c), c = Σu/D, the second sum correcting c's rounding
//   error. So rows with |mean| ≫ std keep their precision (never the
//   unshifted E[z²] − E[z]²), and outputs are (u − mean)·rstd, so a
//   constant row gives exactly β. Rows whose float32
//   statistics overflow or underflow (spreads beyond ~1e19 or below ~1e-15)
//   are recomputed in double, as on the CPU. A NaN or Inf in a row makes
//   that row's outputs NaN and touches no other row. Outputs are within the
//   CPU kernel's documented bound of the float64 reference (1e-5 of the
//   row's largest output for float32; 16-bit outputs within 1–2 ulp), but
//   not bitwise equal to the CPU's: the reduction orders differ.
//
// Batch invariance
//   A row's output bits depend only on its values, D, ε, γ, β, the dtypes
//   and the GPU architecture: never on the number of rows, the row's
//   position or the alignment of the buffers. The reduction order is fixed
//   by the launch plan (kernels/cuda/launch_plan.h), a function of D and the
//   input dtype; 16-byte loads are used for each row whose pointer allows
//   them, and they fetch the same values in the same order as the scalar
//   loads they replace.
//
// Threading, ownership, errors
//   NormalizeRowsCuda() only enqueues work on `stream` and returns; the
//   caller keeps every buffer alive and unmodified until the stream has
//   finished. Any number of host threads may call it at once. Errors are
//   statuses, never exceptions or aborts: INVALID_ARGUMENT for bad
//   arguments, and the CUDA error (FAILED_PRECONDITION when there is no
//   usable device, RESOURCE_EXHAUSTED for out of memory, INTERNAL for the
//   rest) when the launch fails. A kernel fault surfaces at the next
//   synchronization of the stream, not here.
#ifndef NORMSERVE_KERNELS_CUDA_NORMALIZE_CUDA_H_
#define NORMSERVE_KERNELS_CUDA_NORMALIZE_CUDA_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "kernels/normalize.h"

// cudaStream_t is `CUstream_st*`; declaring the struct keeps CUDA headers
// out of this one. nullptr is the default stream.
struct CUstream_st;

namespace normserve::cuda {

// `rows` contiguous rows in device memory (or memory the device can
// access). Every pointer is a device pointer, including params.gamma and
// params.beta; params.dim > 0.
struct DeviceRows {
  NormParams params;
  DType input_dtype = DType::kFloat32;
  DType output_dtype = DType::kFloat32;
  const void* input = nullptr;  // rows * dim elements of input_dtype
  void* output = nullptr;       // rows * dim elements of output_dtype
  int64_t rows = 0;
  const void* residual = nullptr;  // optional: rows * dim of input_dtype
  void* sum_output = nullptr;      // optional: z, rows * dim of input_dtype
  float* mean = nullptr;           // optional: rows floats
  float* rstd = nullptr;           // optional: rows floats
};

// Enqueues the normalization of `rows` on `stream`. rows == 0 is a no-op.
absl::Status NormalizeRowsCuda(const DeviceRows& rows, CUstream_st* stream);

// OK when at least one CUDA device can be used; otherwise
// FAILED_PRECONDITION with the reason ("no CUDA device: …"), which never
// aborts, also on hosts without a driver.
absl::Status CudaDevicePresent();

// The device's name and compute capability, e.g. "NVIDIA H100 80GB HBM3
// (sm_90)"; empty when it cannot be read.
std::string CudaDeviceName(int device);

// The status for a CUDA runtime error code (a cudaError_t value) returned
// by `what` (the call, for the message).
absl::Status CudaStatus(int cuda_error, const char* what);

}  // namespace normserve::cuda

#endif  // NORMSERVE_KERNELS_CUDA_NORMALIZE_CUDA_H_
