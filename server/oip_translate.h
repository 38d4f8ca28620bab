// The Open Inference Protocol (KServe v2) mapped onto normserve's request.
//
// Each normserve model is an OIP model with one version, "1".
//
// Inputs (by name, any order; each at most once)
//   input     required: the tensor to normalize
//   gamma     optional: scale over the normalized dimensions
//   beta      optional: shift over the normalized dimensions
//   residual  optional: added to `input` before normalizing
// Datatypes "FP32", "FP16", "BF16" and "INT8". Values travel either all in
// raw_input_contents (little-endian, one entry per input, in order) or in
// typed contents: fp32_contents for FP32, int_contents for INT8 (values
// -128..127); FP16/BF16 need raw contents, as the specification says. INT8
// tensors take parameters "scale" (double) and "zero_point" (int64).
//
// Request parameters (all optional)
//   epsilon (double), normalized_ndim (int64), kind ("layer_norm" |
//   "rms_norm"), output_datatype ("FP32" | "FP16" | "BF16" | "INT8"),
//   device ("cpu" | "cuda"), int8_path ("integer" | "float"), output_scale
//   (double), output_zero_point (int64). Triton's "priority" and "timeout"
//   (deadlines come from gRPC) and "triton_enable_empty_final_response"
//   (sent by perf_analyzer; every request here gets exactly one response)
//   are accepted and ignored; anything else is INVALID_ARGUMENT.
//
// Outputs
//   output        the normalized tensor (returned when no output is named)
//   mean, rstd    per-row statistics (FP32, the leading dimensions)
//   residual_sum  input + residual, in the input's datatype
// Requested outputs come back in the order asked. Outputs are raw
// (raw_output_contents) unless every input came typed and every returned
// output is FP32, then fp32_contents: answered in kind. INT8 outputs carry
// "scale" and "zero_point" parameters.
//
// Errors are the native API's (same status codes, messages naming the
// field), plus INVALID_ARGUMENT for OIP-level mistakes (unknown tensor or
// parameter names, wrong parameter types, mixed raw and typed contents),
// each naming the OIP field, e.g. "inputs[1].name = 'scale': expected
// input, gamma, beta or residual".
//
// Copies: raw and FP32 typed values are read in place; INT8 typed values
// (int32 on the wire) are narrowed once.
//
// Threading: pure functions; thread-safe.
#ifndef NORMSERVE_SERVER_OIP_TRANSLATE_H_
#define NORMSERVE_SERVER_OIP_TRANSLATE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_service.pb.h"
#include "normserve/v1/normalization_service.pb.h"
#include "server/request_decoder.h"

namespace normserve {

// An OIP request as normserve's: the native request (shapes, dtypes and
// parameters; no values) plus where the values are. Points into the OIP
// request, which must outlive it. Not copyable: payloads point into it.
struct OipRequest {
  OipRequest() = default;
  OipRequest(const OipRequest&) = delete;
  OipRequest& operator=(const OipRequest&) = delete;

  v1::NormalizeRequest native;
  ExternalPayloads payloads;
  // Output names to return, in order.
  std::vector<std::string> outputs;
  // Whether outputs may be answered as typed contents.
  bool typed = false;
  // INT8 values narrowed from int_contents.
  std::string narrowed[4];
};

// Checks the OIP-level structure of `request` and fills `out`. The values
// themselves are validated by DecodeRequest(out->native, ..., &payloads).
absl::Status TranslateInferRequest(const inference::ModelInferRequest& request,
                                   OipRequest* out);

// The OIP datatype name of a kernel dtype ("FP32", ...).
const char* OipDatatype(DType dtype);

// The metadata and configuration OIP clients read, for one model.
void FillModelMetadata(const Model& model,
                       inference::ModelMetadataResponse* out);
void FillModelConfig(const Model& model, inference::ModelConfig* out);

// The one model version normserve reports.
inline constexpr char kOipModelVersion[] = "1";

// NOT_FOUND, naming `field`, for a version other than kOipModelVersion
// (empty: any).
absl::Status CheckModelVersion(absl::string_view field,
                               const std::string& version);

}  // namespace normserve

#endif  // NORMSERVE_SERVER_OIP_TRANSLATE_H_
