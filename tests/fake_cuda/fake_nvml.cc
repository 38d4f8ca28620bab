// A fake libnvidia-ml.so.1 for the fake CUDA device of fake_cuda.h, so that
// the server's NVML path (server/internal/nvml.h) runs without a driver.
// Its one device has the PCI bus id the fake cudaDeviceGetPCIBusId gives
// and reports a GPU utilization of 37 %. Tests put its folder on
// LD_LIBRARY_PATH.
#include <cstring>

extern "C" {

namespace {
int device_handle;
bool initialized = false;
}  // namespace

int nvmlInit_v2() {
  initialized = true;
  return 0;
}

int nvmlShutdown() {
  initialized = false;
  return 0;
}

int nvmlDeviceGetHandleByPciBusId_v2(const char* bus_id, void** device) {
  if (!initialized) return 1;  // NVML_ERROR_UNINITIALIZED
  if (std::strcmp(bus_id, "0000:00:00.0") != 0) return 6;  // NOT_FOUND
  *device = &device_handle;
  return 0;
}

struct Utilization {
  unsigned int gpu;
  unsigned int memory;
};

int nvmlDeviceGetUtilizationRates(void* device, Utilization* rates) {
  if (!initialized) return 1;
  if (device != &device_handle) return 2;  // NVML_ERROR_INVALID_ARGUMENT
  rates->gpu = 37;
  rates->memory = 12;
  return 0;
}

}  // extern "C"
