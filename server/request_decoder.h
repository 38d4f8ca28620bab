// Decoding and validation of NormalizeRequest: the server's edge.
//
// Every field is checked before anything sized by the request is allocated:
// dtype, rank and each dimension, the element count (against a limit, with
// overflow checked), the byte length against shape × dtype size, data vs
// float_data, normalized_ndim, epsilon, gamma/beta shape and dtype, kind,
// device and output dtype, and whether the model accepts per-request
// parameters. Failures are INVALID_ARGUMENT (NOT_FOUND for an unknown model,
// FAILED_PRECONDITION for a device this server cannot use) with a message
// that names the field, its value and what was expected, e.g.
//   "input.shape[1] = -8: dimensions must be positive".
//
// Copies
//   The input bytes are read in place when they are 4-byte aligned (the
//   usual case); otherwise, and for float_data, they are copied once into
//   the DecodedRequest.
//
// Threading and ownership
//   Pure function; thread-safe. The DecodedRequest points into the request
//   message and the model, which must outlive it.
#ifndef NORMSERVE_SERVER_REQUEST_DECODER_H_
#define NORMSERVE_SERVER_REQUEST_DECODER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
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
};

// Which devices the server can run on.
struct DeviceAvailability {
  bool cuda = false;
};

// A validated request: kernel parameters and pointers, ready to batch.
// Not copyable or movable: params points into its own storage.
struct DecodedRequest {
  DecodedRequest() = default;
  DecodedRequest(const DecodedRequest&) = delete;
  DecodedRequest& operator=(const DecodedRequest&) = delete;

  const Model* model = nullptr;
  NormParams params;
  DeviceKind device = DeviceKind::kCpu;
  const float* input = nullptr;
  int64_t rows = 0;
  int64_t elements = 0;
  std::vector<int64_t> shape;
  BatchKey key;

  // Storage for values that could not be read in place.
  std::vector<float> input_copy;
  std::vector<float> gamma_copy;
  std::vector<float> beta_copy;
};

absl::StatusOr<std::unique_ptr<DecodedRequest>> DecodeRequest(
    const v1::NormalizeRequest& request, const ModelRegistry& models,
    const ValidationLimits& limits, const DeviceAvailability& devices);

}  // namespace normserve

#endif  // NORMSERVE_SERVER_REQUEST_DECODER_H_
