#include <vector>

#include "kernels/normalize.h"
#include "server/backend.h"

namespace normserve {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool* pool) : pool_(pool) {}

  absl::Status Run(absl::Span<Job* const> batch) override {
    std::vector<RowSegment> segments;
    segments.reserve(batch.size());
    for (const Job* job : batch) segments.push_back(job->segment);
    NormalizeSegments(segments, pool_);
    return absl::OkStatus();
  }

 private:
  ThreadPool* const pool_;
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(ThreadPool* pool) {
  return std::make_unique<CpuBackend>(pool);
}

}  // namespace normserve
