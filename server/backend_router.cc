#include "server/backend.h"
#include "server/model_registry.h"

namespace normserve {
namespace {

class DeviceRouter final : public Backend {
 public:
  DeviceRouter(Backend* cpu, Backend* cuda) : cpu_(cpu), cuda_(cuda) {}

  absl::Status Run(absl::Span<Job* const> batch) override {
    if (batch.empty()) return absl::OkStatus();
    if (batch[0]->key.device != static_cast<int>(DeviceKind::kCuda)) {
      return cpu_->Run(batch);
    }
    if (cuda_ == nullptr) {
      return absl::FailedPreconditionError(
          "device = DEVICE_CUDA: this server has no usable CUDA device; use "
          "DEVICE_CPU");
    }
    return cuda_->Run(batch);
  }

 private:
  Backend* const cpu_;
  Backend* const cuda_;
};

}  // namespace

std::unique_ptr<Backend> MakeDeviceRouter(Backend* cpu, Backend* cuda) {
  return std::make_unique<DeviceRouter>(cpu, cuda);
}

}  // namespace normserve
