// A fake CUDA runtime on the host, for testing the CUDA backend
// (server/backend_cuda.cc) and the host side of the kernels
// (kernels/cuda/normalize_cuda.cc) on machines without a GPU.
//
// It defines the runtime API functions those files call, and
// cuda::internal::LaunchNormalize. "Device" and pinned memory are host
// memory; each stream is a thread that runs its copies and kernels in
// order, so work overlaps the calling thread as on a GPU and a caller that
// touches a buffer before synchronizing races (ThreadSanitizer sees it). A
// kernel computes its rows with the CPU kernel (kernels/normalize.h).
// Synchronizations, and cudaFree/cudaFreeHost as on a GPU, wait for the
// work issued before them. There is one device, 0, at PCI bus id
// 0000:00:00.0 (where fake_nvml.cc, a fake libnvidia-ml.so.1, finds it).
//
// Checks a GPU would make: every copy and kernel argument must lie inside
// one live allocation of the right kind (else the copy fails with
// cudaErrorInvalidValue, the kernel faults), and streams must be live.
//
// Faults to inject, as on a GPU: a call that fails once, a kernel that
// faults (the error is sticky: every call fails until cudaDeviceReset,
// which then frees every allocation and stream), a reset that fails.
#ifndef NORMSERVE_TESTS_FAKE_CUDA_FAKE_CUDA_H_
#define NORMSERVE_TESTS_FAKE_CUDA_FAKE_CUDA_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace normserve::fake_cuda {

struct Counters {
  int64_t device_resets = 0;  // successful cudaDeviceReset calls
  // The most host threads that had work queued on the device at once.
  int max_threads_in_flight = 0;
  // Kernels that ran to the end (a faulted one does not count).
  int64_t kernels_run = 0;
  // Successful cudaFree and cudaFreeHost calls (each waits for the device).
  int64_t frees = 0;
};

// A fresh device: no faults pending, counters zero. Allocations and streams
// that are still live stay (a test checks LiveAllocations() itself).
void Restart();

// The next call of `function` (e.g. "cudaMalloc", "cudaMemcpyAsync",
// "kernel"), or the next `times` calls, return `error` and do nothing; a
// plain error, not sticky.
void FailNextCall(const std::string& function, cudaError_t error,
                  int times = 1);

// The next kernel enqueued faults when it runs: cudaErrorIllegalAddress,
// sticky. With threads_in_flight > 1 it first waits (up to 5 s) until that
// many host threads have work on the device, so that the fault hits
// several batches at once.
void FaultNextKernel(int threads_in_flight = 1);

// Whether cudaDeviceReset fails (cudaErrorUnknown, leaving the fault).
void FailDeviceResets(bool fail);

// How long each kernel takes, so that batches overlap in tests.
void SetKernelTime(absl::Duration time);

Counters GetCounters();

// Device and pinned allocations not yet freed.
int LiveAllocations();

}  // namespace normserve::fake_cuda

#endif  // NORMSERVE_TESTS_FAKE_CUDA_FAKE_CUDA_H_
