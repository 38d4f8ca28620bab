// Fuzzes the model config parser (protobuf text format plus our checks):
// any text either builds a registry whose models are internally consistent
// or fails with a message.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "server/model_registry.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // text-format parse warnings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto registry =
      normserve::ModelRegistry::CreateFromText(text, "/nonexistent", {});
  if (!registry.ok()) {
    if (registry.status().message().empty()) std::abort();
    return 0;
  }
  for (const normserve::Model* m : (*registry)->models()) {
    int64_t count = 1;
    for (int64_t d : m->normalized_shape) count *= d;
    if (!m->gamma.empty() && static_cast<int64_t>(m->gamma.size()) != count)
      std::abort();
    if (!m->beta.empty() && static_cast<int64_t>(m->beta.size()) != count)
      std::abort();
    if (m->batching.max_batch_rows <= 0 || m->batching.max_queue_requests <= 0)
      std::abort();
  }
  return 0;
}
