// Fuzzes the .npy parser: never crashes, never allocates more than the bytes
// present justify, and what it accepts round-trips through SerializeNpy.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto array = normserve::ParseNpy(bytes, "fuzz.npy");
  if (!array.ok()) return 0;
  size_t count = 1;
  for (int64_t d : array->shape) count *= static_cast<size_t>(d);
  if (count != array->values.size()) std::abort();
  auto again = normserve::ParseNpy(
      normserve::SerializeNpy(array->shape, array->values), "rt");
  if (!again.ok() || again->shape != array->shape ||
      again->values.size() != array->values.size()) {
    std::abort();
  }
  return 0;
}
