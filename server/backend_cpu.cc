#include <new>
#include <vector>

#include "absl/strings/str_cat.h"
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
    try {
      NormalizeSegments(segments, pool_);
    } catch (const std::bad_alloc&) {
      // The kernels' per-thread scratch (a few rows of D floats).
      return absl::ResourceExhaustedError(
          absl::StrCat("out of memory for the CPU kernel's scratch rows (D = ",
                       batch.front()->key.dim, "); retry later"));
    }
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
