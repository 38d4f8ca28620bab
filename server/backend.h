// Device backends: run one formed batch on a device.
//
// A backend receives the jobs of one batch (same BatchKey) and computes each
// job's segment, writing straight into the job's output buffer. It returns
// the status every job of the batch finishes with.
//
// Threading: Run() may be called from several batcher workers at once, on
// different batches.
//
// Errors: Run() never crashes on a device error; it returns a status (see
// each factory) and the backend stays usable for later batches where the
// device allows.
#ifndef NORMSERVE_SERVER_BACKEND_H_
#define NORMSERVE_SERVER_BACKEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/thread_pool.h"
#include "server/batcher.h"

namespace normserve {

// What the CUDA backend reports about its device (read at each scrape of
// the metrics).
struct CudaDeviceStats {
  // Device memory in use, by every process (cudaMemGetInfo: total − free);
  // both 0 when it cannot be read (then the metrics leave them out).
  int64_t memory_used_bytes = 0;
  int64_t memory_total_bytes = 0;
  // Seconds, since the backend started, during which it had at least one
  // batch on the GPU (staged and not yet finished): the backend's own
  // occupancy of the device, not NVML's SM utilization. Its rate over a
  // window is the busy fraction.
  double busy_seconds = 0.0;
  // NVML's GPU utilization: the fraction of its last sample period during
  // which a kernel ran, any process's (what nvidia-smi shows); nullopt
  // without NVML (server/internal/nvml.h).
  std::optional<double> utilization;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual absl::Status Run(absl::Span<Job* const> batch) = 0;
  // The device, for logs (e.g. "NVIDIA H100 80GB HBM3 (sm_90)"); may be
  // empty.
  virtual std::string Describe() const { return ""; }
  // The GPU's figures, for a backend that runs on one (the CUDA backend);
  // nullopt otherwise. Thread-safe, and cheap enough for every scrape.
  virtual std::optional<CudaDeviceStats> CudaStats() { return std::nullopt; }
};

// Runs batches with the CPU kernels: on the calling thread and, for large
// batches, on `pool` (borrowed, may be null; must outlive the backend).
std::unique_ptr<Backend> MakeCpuBackend(ThreadPool* pool);

struct CudaBackendOptions {
  // CUDA device ordinal.
  int device = 0;
  // Streams, each with a pinned host and a device staging buffer; copies
  // in, kernels and copies out of different chunks overlap across them.
  // 3 covers the three stages; more rarely helps.
  int num_streams = 3;
  // Bytes of each staging buffer (host and device alike). A batch larger
  // than one buffer is cut into chunks; a single row that does not fit
  // grows the buffers. Memory used: 2 · num_streams · staging_bytes.
  int64_t staging_bytes = int64_t{16} << 20;
  // Threads, besides the batch's own, that pack a chunk into its staging
  // buffer and unpack its results (chunks of 1 MiB or more, cut into
  // 256 KiB slices). One thread's memcpy of a large batch is far slower
  // than a PCIe 4 or 5 link, so large batches are bound by it without
  // them (bench/cuda_backend_bench measures both). 0: the batch's
  // thread alone; kAutoCopyThreads: a quarter of the CPUs the process may
  // use (its affinity mask, capped by its cgroup's CPU quota), at most 4
  // (none below 4 CPUs).
  static constexpr int kAutoCopyThreads = -1;
  int copy_threads = kAutoCopyThreads;
};

// Runs batches on a CUDA GPU: each batch is staged through pinned host
// buffers and pipelined over the streams (server/internal/cuda_pipeline.h).
// Fails with FAILED_PRECONDITION when the build has no CUDA support or the
// host has no usable device (no driver, no GPU, or a GPU the kernels were
// not compiled for), RESOURCE_EXHAUSTED when the buffers cannot be
// allocated. Run() returns FAILED_PRECONDITION for INT8 jobs (CPU only),
// RESOURCE_EXHAUSTED when a row needs more memory than can be had, and
// INTERNAL for a CUDA error; after an error the streams are drained and,
// when the error poisoned the CUDA context, the device is reset and the
// buffers allocated again (UNAVAILABLE from then on if that fails).
// Concurrent Run() calls share the streams: each batch takes the free
// streams it can use (at least one, waiting for it) and hands one back
// after any of its chunks when another batch waits for it, so batches from
// several batcher workers overlap on the device and a small batch never
// waits for a large one's end.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    const CudaBackendOptions& options);

// Routes each batch by its key's device: DeviceKind::kCuda to `cuda`,
// anything else to `cpu` (both borrowed; `cuda` may be null, and then CUDA
// batches fail with FAILED_PRECONDITION).
std::unique_ptr<Backend> MakeDeviceRouter(Backend* cpu, Backend* cuda);

}  // namespace normserve

#endif  // NORMSERVE_SERVER_BACKEND_H_
