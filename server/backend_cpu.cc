#include <vector>

#include "kernels/normalize.h"
#include "server/backend.h"

namespace normserve {
namespace {

class CpuBackend final : public Backend {
 public:
  absl::Status Run(absl::Span<Job* const> batch) override {
    std::vector<RowSegment> segments;
    segments.reserve(batch.size());
    for (const Job* job : batch) segments.push_back(job->segment);
    NormalizeSegments(segments);
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace normserve
