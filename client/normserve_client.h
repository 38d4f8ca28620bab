// A small C++ client for normserve.v1.NormalizationService.
//
// Example:
//   auto client = normserve::NormClient::Create({.target = "127.0.0.1:8001"});
//   normserve::NormalizeInput in;
//   in.shape = {2, 768};
//   in.values = my_floats;           // 2 * 768 values
//   auto out = (*client)->Normalize(in);
//   if (!out.ok()) ... out.status() carries the server's code and message.
//
// Errors: every call returns absl::Status / StatusOr with the gRPC status
// code and message the server sent (UNAVAILABLE when it cannot be reached).
// Threading: a NormClient is thread-safe; share one per process and target.
#ifndef NORMSERVE_CLIENT_NORMSERVE_CLIENT_H_
#define NORMSERVE_CLIENT_NORMSERVE_CLIENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "normserve/v1/normalization_service.grpc.pb.h"

namespace normserve {

struct NormalizeInput {
  std::string model;  // Empty: the default model.
  std::vector<int64_t> shape;
  std::vector<float> values;  // product(shape) values, row-major.
  int normalized_ndim = 0;    // 0: the model's (1 for the default model).
  std::optional<float> epsilon;
  std::vector<float> gamma;  // Empty: not sent.
  std::vector<float> beta;   // Empty: not sent.
  v1::NormKind kind = v1::NORM_KIND_UNSPECIFIED;
  std::string request_id;
  // Wire type of input (and residual); values are rounded to it.
  v1::DataType dtype = v1::DATA_TYPE_FLOAT32;
  // Output type; unspecified: the input's.
  v1::DataType output_dtype = v1::DATA_TYPE_UNSPECIFIED;
  std::vector<float> residual;  // Empty: not sent.
  bool return_residual_sum = false;
  bool return_statistics = false;
  // Where to compute; unspecified: the model's device.
  v1::Device device = v1::DEVICE_UNSPECIFIED;
};

struct NormalizeOutput {
  std::vector<int64_t> shape;
  std::vector<float> values;  // Widened to float from the output dtype.
  v1::DataType dtype = v1::DATA_TYPE_UNSPECIFIED;
  std::vector<float> residual_sum;  // When requested.
  std::vector<float> mean, rstd;    // When requested.
  std::string model;
  std::string request_id;
  absl::Duration latency;  // Client-side round trip.
};

class NormClient {
 public:
  struct Options {
    // gRPC target, e.g. "127.0.0.1:8001" or "dns:///normserve:8001".
    std::string target = "127.0.0.1:8001";
    // Deadline of each call; a year or more (absl::InfiniteDuration()):
    // none.
    absl::Duration timeout = absl::Seconds(10);
    int max_message_bytes = 64 << 20;
    // TLS: PEM contents (not paths). Empty ca_pem: plaintext.
    std::string tls_ca_pem;
    std::string tls_cert_pem;  // client certificate, for mutual TLS
    std::string tls_key_pem;
    // Expected server name when it differs from the target's host.
    std::string tls_server_name;
    // True: the channel opens a connection of its own. False: it shares
    // one with every other such channel of the process to the same target
    // and options (gRPC's global subchannel pool), so that clients created
    // apart still make one connection.
    bool own_connection = false;
  };

  static absl::StatusOr<std::unique_ptr<NormClient>> Create(
      const Options& options);

  // Builds the request for `input` (exposed for tools that send it raw).
  static v1::NormalizeRequest BuildRequest(const NormalizeInput& input);

  absl::StatusOr<NormalizeOutput> Normalize(const NormalizeInput& input);
  absl::StatusOr<v1::ListModelsResponse> ListModels();
  // OK with true when grpc.health.v1 reports SERVING for the server.
  absl::StatusOr<bool> IsServing();

  v1::NormalizationService::Stub* stub() { return stub_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() { return channel_; }

 private:
  NormClient(const Options& options, std::shared_ptr<grpc::Channel> channel);
  void SetDeadline(grpc::ClientContext* context) const;

  const Options options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::NormalizationService::Stub> stub_;
};

// The status of a finished gRPC call, as absl::Status.
absl::Status FromGrpcStatus(const grpc::Status& status);

// A tensor's values widened to float (FLOAT32/FLOAT16/BFLOAT16, from data
// or float_data); DATA_LOSS when its bytes do not match its shape.
absl::StatusOr<std::vector<float>> TensorValues(const v1::Tensor& tensor);

}  // namespace normserve

#endif  // NORMSERVE_CLIENT_NORMSERVE_CLIENT_H_
