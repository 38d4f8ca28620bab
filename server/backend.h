// Device backends: run one formed batch on a device.
//
// A backend receives the jobs of one batch (same BatchKey) and computes each
// job's segment, writing straight into the job's output buffer. It returns
// the status every job of the batch finishes with.
//
// Threading: Run() may be called from several batcher workers at once, on
// different batches.
#ifndef NORMSERVE_SERVER_BACKEND_H_
#define NORMSERVE_SERVER_BACKEND_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/thread_pool.h"
#include "server/batcher.h"

namespace normserve {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual absl::Status Run(absl::Span<Job* const> batch) = 0;
};

// Runs batches with the CPU kernels: on the calling thread and, for large
// batches, on `pool` (borrowed, may be null; must outlive the backend).
std::unique_ptr<Backend> MakeCpuBackend(ThreadPool* pool);

}  // namespace normserve

#endif  // NORMSERVE_SERVER_BACKEND_H_
