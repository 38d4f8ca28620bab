// MakeCudaBackend for builds without CUDA (no nvcc at configure time, or
// NORMSERVE_CUDA=OFF): CMake compiles this file instead of backend_cuda.cc.
#include "server/backend.h"

namespace normserve {

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    const CudaBackendOptions&) {
  return absl::FailedPreconditionError(
      "this build has no CUDA support (nvcc was not found when it was "
      "configured, or NORMSERVE_CUDA=OFF)");
}

}  // namespace normserve
