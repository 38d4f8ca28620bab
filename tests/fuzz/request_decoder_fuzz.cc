// Fuzzes the server's edge: any bytes as a NormalizeRequest, decoded and
// validated (fuzz_common.h says what happens next).
#include <cstdint>

#include "google/protobuf/stubs/logging.h"
#include "normserve/v1/normalization_service.pb.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 warnings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  normserve::v1::NormalizeRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  normserve::fuzz::Run(normserve::DecodeRequest(
      request, normserve::fuzz::Registry(), normserve::fuzz::Limits(), {}));
  return 0;
}
