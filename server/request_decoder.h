// Decoding and validation of NormalizeRequest: the server's edge.
//
// Every field is checked before anything sized by the request is allocated:
// dtype, rank and each dimension, the element count (against a limit, with
// overflow checked), the byte length against shape × dtype size, data vs
// float_data, normalized_ndim, epsilon, gamma/beta/residual shape and dtype,
// kind, device and output dtype, and whether the model accepts per-request
// parameters. Failures are INVALID_ARGUMENT (NOT_FOUND for an unknown model,
// FAILED_PRECONDITION for a device this server cannot use) with a message
// that names the field, its value and what was expected, e.g.
//   "input.shape[1] = -8: dimensions must be positive".
//
// Copies
//   Input and residual bytes are read in place when aligned to their element
//   size (the usual case); otherwise, and for float_data, they are copied
//   once. gamma/beta are converted to float32 when sent as FLOAT16/BFLOAT16.
//
// Threading and ownership
//   Pure function; thread-safe. The DecodedRequest points into the request
//   message and the model, which must outlive it.
#ifndef NORMSERVE_SERVER_REQUEST_DECODER_H_
#define NORMSERVE_SERVER_REQUEST_DECODER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/int8_layer_norm.h"
#include "kernels/normalize.h"
#include "normserve/v1/normalization_service.pb.h"
#include "server/batcher.h"
#include "server/model_registry.h"

namespace normserve {

struct ValidationLimits {
  // Maximum tensor rank.
  int max_rank = 8;
  // Maximum elements in one input tensor.
  int64_t max_elements = int64_t{1} << 26;
  // The largest message the server sends (its gRPC send limit); 0: none.
  // A request whose response tensors would not fit in it, less
  // kResponseFramingBytes for the rest of the message, is refused before
  // it is computed (CheckResponseFits).
  int64_t max_response_bytes = 0;
};

// Room left in a response for everything but its tensors' data (shapes,
// names, ids: a few hundred bytes at most ranks).
inline constexpr int64_t kResponseFramingBytes = 1024;
// The longest request_id (OIP: id) accepted. Responses echo it (a stream's
// twice), inside kResponseFramingBytes.
inline constexpr size_t kMaxRequestIdBytes = 256;
// INVALID_ARGUMENT, naming `field`, for an id over kMaxRequestIdBytes.
absl::Status CheckRequestId(absl::string_view field, absl::string_view id);

// Which devices the server can run on.
struct DeviceAvailability {
  bool cuda = false;
};

// A validated request: kernel parameters and pointers, ready to batch.
// Not copyable or movable: params and pointers refer to its own storage.
struct DecodedRequest {
  DecodedRequest() = default;
  DecodedRequest(const DecodedRequest&) = delete;
  DecodedRequest& operator=(const DecodedRequest&) = delete;

  const Model* model = nullptr;
  NormParams params;
  DeviceKind device = DeviceKind::kCpu;
  DType input_dtype = DType::kFloat32;
  DType output_dtype = DType::kFloat32;
  const void* input = nullptr;
  const void* residual = nullptr;  // nullptr when not sent
  bool return_residual_sum = false;
  bool return_statistics = false;
  // Whether the input came as float_data (then so does a FLOAT32 output).
  bool float_data = false;
  int64_t rows = 0;
  int64_t elements = 0;
  std::vector<int64_t> shape;
  // Shape of the statistics tensors: the leading dimensions, or [1].
  std::vector<int64_t> stats_shape;
  BatchKey key;

  // INT8 requests: kernel parameters, the folded affine (pointing at the
  // model's or at int8_affine_storage) and the output quantization.
  Int8Params int8;
  Int8Affine int8_affine_storage;
  bool int8_float_path = false;

  // Storage for values that could not be read in place.
  std::vector<float> input_copy;
  std::vector<float> residual_copy;
  std::vector<float> gamma_copy;
  std::vector<float> beta_copy;
};

// A tensor's values carried beside its v1::Tensor rather than inside it, as
// the Open Inference Protocol carries them (raw_input_contents or typed
// contents). When `present`, the v1::Tensor's data and float_data must be
// empty and these are used instead, in place. `field` names where the
// values came from, for error messages (e.g. "raw_input_contents[0]").
struct ExternalPayload {
  bool present = false;
  std::string field;
  // Raw little-endian bytes, or (when `typed`) float32 values.
  absl::string_view bytes;
  bool typed = false;
  absl::Span<const float> floats;
};
struct ExternalPayloads {
  ExternalPayload input;
  ExternalPayload residual;
  ExternalPayload gamma;
  ExternalPayload beta;
};

// Validates `request` and returns what the batcher needs. `payloads`, when
// not null, supplies tensor values that travel outside the request message.
absl::StatusOr<std::unique_ptr<DecodedRequest>> DecodeRequest(
    const v1::NormalizeRequest& request, const ModelRegistry& models,
    const ValidationLimits& limits, const DeviceAvailability& devices,
    const ExternalPayloads* payloads = nullptr);

// The wire enum of a kernel dtype, and back (nullopt for INT8/unknown).
v1::DataType ToProtoDType(DType dtype);

// One tensor a response carries: its name in the protocol, dtype and
// element count.
struct ResponsePart {
  const char* name;
  DType dtype;
  int64_t elements;
};

// RESOURCE_EXHAUSTED, naming each part's bytes, where the tensors one
// response carries (only those sent: OIP returns the outputs asked for)
// exceed limits.max_response_bytes less kResponseFramingBytes. Checked
// before the output buffers are allocated and the request is queued: such
// a response would otherwise be computed and then fail at the send (on a
// stream, ending the stream). On OK, the bytes of the parts together.
absl::StatusOr<int64_t> CheckResponseFits(absl::Span<const ResponsePart> parts,
                                          const ValidationLimits& limits);

}  // namespace normserve

#endif  // NORMSERVE_SERVER_REQUEST_DECODER_H_
