#include "client/normserve_client.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kernels/dtype.h"

namespace normserve {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::StatusOr<std::unique_ptr<NormClient>> NormClient::Create(
    const Options& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("target: expected host:port");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (options.own_connection)
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls_ca_pem.empty() &&
      (!options.tls_cert_pem.empty() || !options.tls_key_pem.empty() ||
       !options.tls_server_name.empty())) {
    // Not plaintext with the TLS options dropped, which the caller would
    // take for a TLS connection.
    return absl::InvalidArgumentError(
        "tls_cert, tls_key or tls_server_name without tls_ca: expected "
        "tls_ca too (the CA that signed the server's certificate)");
  }
  if (options.tls_ca_pem.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_ca_pem;
    ssl.pem_cert_chain = options.tls_cert_pem;
    ssl.pem_private_key = options.tls_key_pem;
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  auto channel = grpc::CreateCustomChannel(options.target, credentials, args);
  return std::unique_ptr<NormClient>(
      new NormClient(options, std::move(channel)));
}

NormClient::NormClient(const Options& options,
                       std::shared_ptr<grpc::Channel> channel)
    : options_(options),
      channel_(std::move(channel)),
      stub_(v1::NormalizationService::NewStub(channel_)) {}

void NormClient::SetDeadline(grpc::ClientContext* context) const {
  // An infinite (or centuries-long) timeout sets no deadline: added to the
  // clock it would overflow into the past.
  if (options_.timeout >= absl::Hours(24 * 365)) return;
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMicroseconds(options_.timeout));
}

namespace {

void FillTensor(const std::vector<int64_t>& shape, const std::vector<float>& v,
                v1::DataType dtype, v1::Tensor* t) {
  t->mutable_shape()->Assign(shape.begin(), shape.end());
  t->set_dtype(dtype);
  if (dtype == v1::DATA_TYPE_FLOAT16 || dtype == v1::DATA_TYPE_BFLOAT16) {
    std::string* bytes = t->mutable_data();
    bytes->resize(v.size() * 2);
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = dtype == v1::DATA_TYPE_FLOAT16 ? FloatToHalf(v[i])
                                                        : FloatToBFloat16(v[i]);
      std::memcpy(&(*bytes)[2 * i], &h, 2);
    }
    return;
  }
  t->set_data(reinterpret_cast<const char*>(v.data()),
              v.size() * sizeof(float));
}

}  // namespace

absl::StatusOr<std::vector<float>> TensorValues(const v1::Tensor& t) {
  // The reply is not trusted: a negative dimension or a shape of more
  // elements than any reply holds is refused before it is multiplied out.
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  int64_t count = 1;
  for (int64_t d : t.shape()) {
    if (d < 0 || (d > 0 && count > kMaxElements / d)) {
      return absl::DataLossError(
          absl::StrCat("tensor shape has dimension ", d,
                       ": not a shape of at most 2^40 elements"));
    }
    count *= d;
  }
  if (t.float_data_size() > 0) {
    if (t.float_data_size() != count) {
      return absl::DataLossError("tensor float_data does not match its shape");
    }
    return std::vector<float>(t.float_data().begin(), t.float_data().end());
  }
  const size_t elem = t.dtype() == v1::DATA_TYPE_FLOAT32 ? 4 : 2;
  if ((t.dtype() != v1::DATA_TYPE_FLOAT32 &&
       t.dtype() != v1::DATA_TYPE_FLOAT16 &&
       t.dtype() != v1::DATA_TYPE_BFLOAT16) ||
      t.data().size() != static_cast<size_t>(count) * elem) {
    return absl::DataLossError(
        absl::StrCat("tensor: ", t.data().size(), " bytes of dtype ",
                     v1::DataType_Name(t.dtype()), " do not match its shape"));
  }
  std::vector<float> out(static_cast<size_t>(count));
  for (size_t i = 0; i < out.size(); ++i) {
    if (elem == 4) {
      std::memcpy(&out[i], t.data().data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, t.data().data() + 2 * i, 2);
      out[i] = t.dtype() == v1::DATA_TYPE_FLOAT16 ? HalfToFloat(h)
                                                  : BFloat16ToFloat(h);
    }
  }
  return out;
}

v1::NormalizeRequest NormClient::BuildRequest(const NormalizeInput& input) {
  v1::NormalizeRequest req;
  req.set_model(input.model);
  FillTensor(input.shape, input.values, input.dtype, req.mutable_input());
  if (input.normalized_ndim != 0) {
    req.set_normalized_ndim(input.normalized_ndim);
  }
  if (input.epsilon.has_value()) req.set_epsilon(*input.epsilon);
  // γ and β are shaped like the normalized dimensions: the input's last
  // normalized_ndim ones, or (unset: the model's rank, which the client
  // does not know) the fewest trailing ones that hold the values sent.
  int ndim = input.normalized_ndim == 0 ? 1 : input.normalized_ndim;
  const size_t values =
      !input.gamma.empty() ? input.gamma.size() : input.beta.size();
  if (input.normalized_ndim == 0 && values > 0) {
    int64_t count = 1;
    for (int k = 1; k <= static_cast<int>(input.shape.size()); ++k) {
      count *= input.shape[input.shape.size() - static_cast<size_t>(k)];
      if (count == static_cast<int64_t>(values)) {
        ndim = k;
        break;
      }
    }
  }
  std::vector<int64_t> param_shape;
  if (ndim <= static_cast<int>(input.shape.size())) {
    param_shape.assign(input.shape.end() - ndim, input.shape.end());
  }
  if (!input.gamma.empty()) {
    FillTensor(param_shape, input.gamma, v1::DATA_TYPE_FLOAT32,
               req.mutable_gamma());
  }
  if (!input.beta.empty()) {
    FillTensor(param_shape, input.beta, v1::DATA_TYPE_FLOAT32,
               req.mutable_beta());
  }
  if (!input.residual.empty()) {
    FillTensor(input.shape, input.residual, input.dtype,
               req.mutable_residual());
  }
  req.set_kind(input.kind);
  req.set_request_id(input.request_id);
  req.set_output_dtype(input.output_dtype);
  req.set_return_residual_sum(input.return_residual_sum);
  req.set_return_statistics(input.return_statistics);
  req.set_device(input.device);
  return req;
}

absl::StatusOr<NormalizeOutput> NormClient::Normalize(
    const NormalizeInput& input) {
  const v1::NormalizeRequest req = BuildRequest(input);
  v1::NormalizeResponse resp;
  grpc::ClientContext context;
  SetDeadline(&context);
  const absl::Time start = absl::Now();
  const grpc::Status status = stub_->Normalize(&context, req, &resp);
  const absl::Duration latency = absl::Now() - start;
  if (!status.ok()) return FromGrpcStatus(status);

  NormalizeOutput out;
  out.latency = latency;
  out.model = resp.model();
  out.request_id = resp.request_id();
  const v1::Tensor& t = resp.output();
  out.shape.assign(t.shape().begin(), t.shape().end());
  out.dtype = t.dtype();
  auto values = TensorValues(t);
  if (!values.ok()) return values.status();
  out.values = *std::move(values);
  if (resp.has_residual_sum()) {
    auto sum = TensorValues(resp.residual_sum());
    if (!sum.ok()) return sum.status();
    out.residual_sum = *std::move(sum);
  }
  if (resp.has_mean() && resp.has_rstd()) {
    auto mean = TensorValues(resp.mean());
    auto rstd = TensorValues(resp.rstd());
    if (!mean.ok()) return mean.status();
    if (!rstd.ok()) return rstd.status();
    out.mean = *std::move(mean);
    out.rstd = *std::move(rstd);
  }
  return out;
}

absl::StatusOr<v1::ListModelsResponse> NormClient::ListModels() {
  v1::ListModelsResponse resp;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status =
      stub_->ListModels(&context, v1::ListModelsRequest(), &resp);
  if (!status.ok()) return FromGrpcStatus(status);
  return resp;
}

absl::StatusOr<bool> NormClient::IsServing() {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext context;
  SetDeadline(&context);
  const grpc::Status status = health->Check(&context, req, &resp);
  if (!status.ok()) return FromGrpcStatus(status);
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

}  // namespace normserve
