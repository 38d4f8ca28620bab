#include "server/internal/nvml.h"

#include <dlfcn.h>

#include <utility>

namespace normserve::internal {
namespace {

// NVML's C interface, as far as used here (nvml.h: nvmlReturn_t is an enum
// whose success value is 0, nvmlDevice_t an opaque pointer, and
// nvmlUtilization_t two unsigned ints, percent of time busy).
using NvmlReturn = int;
constexpr NvmlReturn kNvmlSuccess = 0;
struct NvmlDeviceSt;
using NvmlDevice = NvmlDeviceSt*;
struct NvmlUtilizationRates {
  unsigned int gpu;
  unsigned int memory;
};

}  // namespace

struct NvmlUtilization::Library {
  void* handle = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilizationRates*) = nullptr;
  NvmlDevice device = nullptr;
  bool initialized = false;

  ~Library() {
    if (initialized) shutdown();
    if (handle != nullptr) dlclose(handle);
  }
};

std::unique_ptr<NvmlUtilization> NvmlUtilization::Open(
    const std::string& pci_bus_id) {
  auto lib = std::make_unique<Library>();
  lib->handle = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib->handle == nullptr) return nullptr;
  auto init =
      reinterpret_cast<NvmlReturn (*)()>(dlsym(lib->handle, "nvmlInit_v2"));
  auto by_bus_id = reinterpret_cast<NvmlReturn (*)(const char*, NvmlDevice*)>(
      dlsym(lib->handle, "nvmlDeviceGetHandleByPciBusId_v2"));
  lib->shutdown =
      reinterpret_cast<NvmlReturn (*)()>(dlsym(lib->handle, "nvmlShutdown"));
  lib->utilization =
      reinterpret_cast<NvmlReturn (*)(NvmlDevice, NvmlUtilizationRates*)>(
          dlsym(lib->handle, "nvmlDeviceGetUtilizationRates"));
  if (init == nullptr || by_bus_id == nullptr || lib->shutdown == nullptr ||
      lib->utilization == nullptr || init() != kNvmlSuccess) {
    return nullptr;
  }
  lib->initialized = true;
  if (by_bus_id(pci_bus_id.c_str(), &lib->device) != kNvmlSuccess) {
    return nullptr;
  }
  return std::unique_ptr<NvmlUtilization>(new NvmlUtilization(std::move(lib)));
}

NvmlUtilization::NvmlUtilization(std::unique_ptr<Library> library)
    : library_(std::move(library)) {}

NvmlUtilization::~NvmlUtilization() = default;

std::optional<double> NvmlUtilization::Read() const {
  NvmlUtilizationRates rates{};
  if (library_->utilization(library_->device, &rates) != kNvmlSuccess ||
      rates.gpu > 100) {
    return std::nullopt;
  }
  return rates.gpu / 100.0;
}

}  // namespace normserve::internal
