// Host side of the CUDA kernels: argument checks, the launch plan, and CUDA
// errors as statuses.
#include "kernels/cuda/normalize_cuda.h"

#include <cuda_runtime_api.h>

#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/internal/kernel_args.h"
#include "kernels/cuda/internal/kernel_launch.h"
#include "kernels/cuda/launch_plan.h"

namespace normserve::cuda {
namespace {

bool IsFloatType(DType t) { return t != DType::kInt8; }

}  // namespace

absl::Status CudaStatus(int cuda_error, const char* what) {
  const auto e = static_cast<cudaError_t>(cuda_error);
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", cudaGetErrorName(e),
                                           " (", cudaGetErrorString(e), ")");
  switch (e) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status NormalizeRowsCuda(const DeviceRows& r, CUstream_st* stream) {
  const int64_t d = r.params.dim;
  if (d <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("params.dim = ", d, ": expected > 0"));
  }
  if (r.rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows = ", r.rows, ": expected >= 0"));
  }
  if (!IsFloatType(r.input_dtype) || !IsFloatType(r.output_dtype)) {
    return absl::InvalidArgumentError(
        "DType::kInt8: the CUDA kernels take FLOAT32, FLOAT16 or BFLOAT16");
  }
  if (r.rows == 0) return absl::OkStatus();
  if (r.input == nullptr || r.output == nullptr) {
    return absl::InvalidArgumentError("input and output are required");
  }
  if (r.rows > std::numeric_limits<int64_t>::max() / d) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows = ", r.rows, " × dim = ", d, " overflows"));
  }
  const LaunchPlan plan = PlanLaunch(d, r.input_dtype);
  if (GridBlocks(plan, r.rows) > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows = ", r.rows, ": more than one launch can hold"));
  }
  return CudaStatus(
      internal::LaunchNormalize(internal::KernelArgsFor(r), plan, stream),
      "normalize kernel launch");
}

absl::Status CudaDevicePresent() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it: it is an answer, not a fault
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device: cudaGetDeviceCount: ", cudaGetErrorName(e), " (",
        cudaGetErrorString(e), ")"));
  }
  if (count == 0) {
    return absl::FailedPreconditionError(
        "no CUDA device: cudaGetDeviceCount found none");
  }
  return absl::OkStatus();
}

std::string CudaDeviceName(int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return absl::StrCat(prop.name, " (sm_", prop.major, prop.minor, ")");
}

}  // namespace normserve::cuda

namespace normserve::cuda::internal {

KernelArgs KernelArgsFor(const DeviceRows& r) {
  KernelArgs args;
  args.input = r.input;
  args.residual = r.residual;
  args.output = r.output;
  args.sum_output = r.sum_output;
  args.mean = r.mean;
  args.rstd = r.rstd;
  args.gamma = r.params.gamma;
  args.beta = r.params.beta;
  args.rows = r.rows;
  args.dim = r.params.dim;
  args.inv_dim = 1.0 / static_cast<double>(r.params.dim);
  args.epsilon = r.params.epsilon;
  args.layer_norm = r.params.kind == NormKind::kLayerNorm;
  args.input_dtype = r.input_dtype;
  args.output_dtype = r.output_dtype;
  return args;
}

}  // namespace normserve::cuda::internal
