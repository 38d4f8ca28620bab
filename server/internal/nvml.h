// NvmlUtilization: a GPU's utilization as NVML (the NVIDIA Management
// Library, what nvidia-smi and DCGM read) reports it, for the metrics.
//
// NVML is loaded at run time: libnvidia-ml.so.1 comes with the driver, not
// with the CUDA toolkit, so the server must start where it is missing (then
// there is no utilization figure and nothing else changes). Debian main has
// no NVML header; the few declarations of NVML's documented C interface
// that this needs are in nvml.cc.
//
// Thread-safe (NVML is).
#ifndef NORMSERVE_SERVER_INTERNAL_NVML_H_
#define NORMSERVE_SERVER_INTERNAL_NVML_H_

#include <memory>
#include <optional>
#include <string>

namespace normserve::internal {

class NvmlUtilization {
 public:
  // The device with this PCI bus id (as cudaDeviceGetPCIBusId writes it,
  // e.g. "0000:65:00.0"); nullptr when NVML cannot be loaded or initialized
  // or has no such device.
  static std::unique_ptr<NvmlUtilization> Open(const std::string& pci_bus_id);

  ~NvmlUtilization();
  NvmlUtilization(const NvmlUtilization&) = delete;
  NvmlUtilization& operator=(const NvmlUtilization&) = delete;

  // The fraction of NVML's last sample period (1/6 s to 1 s, by product)
  // during which one or more kernels ran on the GPU, from any process;
  // nullopt when it cannot be read.
  std::optional<double> Read() const;

 private:
  struct Library;
  explicit NvmlUtilization(std::unique_ptr<Library> library);
  std::unique_ptr<Library> library_;
};

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_NVML_H_
