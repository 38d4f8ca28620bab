// Fuzzes the Open Inference Protocol's edge: any bytes as a
// ModelInferRequest, translated and then decoded and validated with the
// values read where OIP carries them (fuzz_common.h says what happens next).
#include <cstdint>

#include "google/protobuf/stubs/logging.h"
#include "inference/grpc_service.pb.h"
#include "server/oip_translate.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 warnings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  inference::ModelInferRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  normserve::OipRequest oip;
  const absl::Status translated =
      normserve::TranslateInferRequest(request, &oip);
  if (!translated.ok()) {
    if (translated.message().empty()) std::abort();  // must say why
    return 0;
  }
  normserve::fuzz::Run(
      normserve::DecodeRequest(oip.native, normserve::fuzz::Registry(),
                               normserve::fuzz::Limits(), {}, &oip.payloads));
  return 0;
}
