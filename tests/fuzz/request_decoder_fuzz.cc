// Fuzzes the server's edge: any bytes as a NormalizeRequest, decoded and
// validated against a registry with fixed-shape, INT8 and default models;
// whatever validates is then run through the kernels into buffers sized
// exactly as the service sizes them, so a validation gap shows up as an
// ASan report rather than a silent over-read.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "google/protobuf/stubs/logging.h"
#include "kernels/normalize.h"
#include "normserve/v1/normalization_service.pb.h"
#include "server/model_registry.h"
#include "server/request_decoder.h"

namespace {

const normserve::ModelRegistry& Registry() {
  static const normserve::ModelRegistry* registry = [] {
    auto r = normserve::ModelRegistry::CreateFromText(
        R"pb(
          models {
            name: "ln4"
            normalized_shape: 4
            gamma { values: [ 1, 2, 3, 4 ] }
          }
          models {
            name: "q8"
            normalized_shape: 8
            output_scale: 0.05
            output_zero_point: 3
          }
          models {
            name: "open"
            kind: NORM_KIND_RMS_NORM
            allow_request_params: true
          }
        )pb",
        "", {});
    if (!r.ok()) std::abort();
    return r->release();
  }();
  return *registry;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 warnings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  normserve::v1::NormalizeRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  normserve::ValidationLimits limits;
  limits.max_elements = 1 << 16;  // keeps each run fast
  auto decoded = normserve::DecodeRequest(request, Registry(), limits, {});
  if (!decoded.ok()) {
    if (decoded.status().message().empty()) std::abort();  // must say why
    return 0;
  }
  const normserve::DecodedRequest& d = **decoded;
  std::vector<uint8_t> output(static_cast<size_t>(d.elements) *
                              normserve::DTypeSize(d.output_dtype));
  std::vector<uint8_t> sum(static_cast<size_t>(d.elements) *
                           normserve::DTypeSize(d.input_dtype));
  std::vector<float> mean(static_cast<size_t>(d.rows)),
      rstd(static_cast<size_t>(d.rows));
  normserve::RowSegment s;
  s.params = &d.params;
  s.input_dtype = d.input_dtype;
  s.output_dtype = d.output_dtype;
  s.input = d.input;
  s.output = output.data();
  s.rows = d.rows;
  s.residual = d.residual;
  s.sum_output = d.return_residual_sum ? sum.data() : nullptr;
  s.mean = d.return_statistics ? mean.data() : nullptr;
  s.rstd = d.return_statistics ? rstd.data() : nullptr;
  if (d.input_dtype == normserve::DType::kInt8) {
    s.int8 = &d.int8;
    s.int8_float_path = d.int8_float_path;
  }
  normserve::NormalizeSegments({&s, 1});
  return 0;
}
