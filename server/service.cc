#include "server/service.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/internal/response_wire.h"
#include "server/internal/stream_reactor.h"

namespace normserve {
namespace {

constexpr char kUnary[] = "unary";

}  // namespace

absl::Time CallDeadline(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  // gRPC reports "no deadline" as a time point far in the future.
  if (deadline >= std::chrono::system_clock::time_point::max() -
                      std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

namespace {

v1::Device DeviceEnum(DeviceKind d) {
  return d == DeviceKind::kCuda ? v1::DEVICE_CUDA : v1::DEVICE_CPU;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      ClientMessage(status));
}

std::string ClientMessage(const absl::Status& status) {
  const absl::string_view m = status.message();
  if (m.size() <= kMaxStatusMessageBytes) return std::string(m);
  size_t cut = kMaxStatusMessageBytes - 64;
  while (cut > 0 && (static_cast<unsigned char>(m[cut]) & 0xC0) == 0x80) {
    --cut;  // inside a UTF-8 character: back to its first byte
  }
  return absl::StrCat(m.substr(0, cut), "... (message cut: ", m.size(),
                      " bytes)");
}

absl::string_view EchoedId(absl::string_view id) {
  return id.size() <= kMaxRequestIdBytes ? id : absl::string_view();
}

NormalizationServiceImpl::NormalizationServiceImpl(const Options& options,
                                                   const ModelRegistry* models,
                                                   Batcher* batcher,
                                                   Metrics* metrics)
    : options_(options),
      models_(models),
      batcher_(batcher),
      metrics_(metrics) {}

int64_t NormalizationServiceImpl::Start(
    const v1::NormalizeRequest& request, v1::NormalizeResponse* response,
    absl::Time deadline, std::function<bool()> is_cancelled,
    std::function<void(const absl::Status&)> finish,
    grpc::Slice* output_slice) {
  const absl::Time arrival = absl::Now();
  if (draining_.load()) {
    finish(absl::UnavailableError("server is shutting down"));
    return 0;
  }
  auto decoded_or =
      DecodeRequest(request, *models_, options_.limits, options_.devices);
  if (!decoded_or.ok()) {
    finish(decoded_or.status());
    return 0;
  }
  std::shared_ptr<DecodedRequest> decoded = std::move(decoded_or).value();
  int64_t response_bytes = 0;
  {
    absl::InlinedVector<ResponsePart, 4> parts = {
        {"output", decoded->output_dtype, decoded->elements}};
    if (decoded->return_residual_sum) {
      parts.push_back(
          {"residual_sum", decoded->input_dtype, decoded->elements});
    }
    if (decoded->return_statistics) {
      parts.push_back({"mean", DType::kFloat32, decoded->rows});
      parts.push_back({"rstd", DType::kFloat32, decoded->rows});
    }
    absl::StatusOr<int64_t> fits = CheckResponseFits(parts, options_.limits);
    if (!fits.ok()) {
      finish(fits.status());
      return 0;
    }
    response_bytes = *fits;
  }
  if (absl::Status room = CheckRoom(*decoded); !room.ok()) {
    finish(room);
    return 0;
  }

  response->set_request_id(request.request_id());
  response->set_model(decoded->model->name);
  const auto shape_into = [](const std::vector<int64_t>& shape, v1::Tensor* t) {
    t->mutable_shape()->Assign(shape.begin(), shape.end());
  };
  // Output buffers are sized here, after validation, and the kernel writes
  // straight into them.
  OutputBuffers buffers;
  v1::Tensor* out = response->mutable_output();
  shape_into(decoded->shape, out);
  out->set_dtype(ToProtoDType(decoded->output_dtype));
  if (decoded->input_dtype == DType::kInt8) {
    out->set_scale(decoded->int8.affine->output_scale);
    out->set_zero_point(decoded->int8.affine->output_zero_point);
  }
  // Answer in kind: a request that sent float_data (JSON tools) gets
  // float_data back when the output is FLOAT32; anything else gets bytes.
  if (decoded->float_data && decoded->output_dtype == DType::kFloat32) {
    out->mutable_float_data()->Resize(static_cast<int>(decoded->elements),
                                      0.0f);
    buffers.output = out->mutable_float_data()->mutable_data();
  } else if (output_slice != nullptr) {
    *output_slice =
        internal::UninitializedSlice(OutputBytes(*decoded), &buffers.output);
  } else {
    std::string* data = out->mutable_data();
    data->resize(OutputBytes(*decoded));
    buffers.output = data->data();
  }
  if (decoded->return_residual_sum) {
    v1::Tensor* sum = response->mutable_residual_sum();
    shape_into(decoded->shape, sum);
    sum->set_dtype(ToProtoDType(decoded->input_dtype));
    sum->mutable_data()->resize(InputBytes(*decoded));
    buffers.sum = sum->mutable_data()->data();
  }
  if (decoded->return_statistics) {
    for (v1::Tensor* t : {response->mutable_mean(), response->mutable_rstd()}) {
      shape_into(decoded->stats_shape, t);
      t->set_dtype(v1::DATA_TYPE_FLOAT32);
      t->mutable_data()->resize(static_cast<size_t>(decoded->rows) *
                                sizeof(float));
    }
    buffers.mean = reinterpret_cast<float*>(
        response->mutable_mean()->mutable_data()->data());
    buffers.rstd = reinterpret_cast<float*>(
        response->mutable_rstd()->mutable_data()->data());
  }
  const absl::Status submitted =
      Submit(std::move(decoded), buffers, arrival, deadline,
             std::move(is_cancelled), finish);
  if (!submitted.ok()) {
    response->Clear();
    finish(submitted);
    return 0;
  }
  return response_bytes;
}

size_t NormalizationServiceImpl::InputBytes(const DecodedRequest& decoded) {
  return static_cast<size_t>(decoded.elements) * DTypeSize(decoded.input_dtype);
}

size_t NormalizationServiceImpl::OutputBytes(const DecodedRequest& decoded) {
  return static_cast<size_t>(decoded.elements) *
         DTypeSize(decoded.output_dtype);
}

namespace {

// Bytes a request brought: its input, and its residual where it has one.
int64_t RequestBytes(const DecodedRequest& decoded) {
  const auto bytes_in =
      static_cast<int64_t>(NormalizationServiceImpl::InputBytes(decoded));
  return decoded.residual != nullptr ? 2 * bytes_in : bytes_in;
}

}  // namespace

absl::Status NormalizationServiceImpl::CheckRoom(
    const DecodedRequest& decoded) {
  return batcher_->CheckRoom(decoded.key,
                             RequestBytes(decoded) +
                                 static_cast<int64_t>(OutputBytes(decoded)) +
                                 kQueuedRequestOverheadBytes);
}

absl::Status NormalizationServiceImpl::Submit(
    std::shared_ptr<DecodedRequest> decoded, const OutputBuffers& buffers,
    absl::Time arrival, absl::Time deadline, std::function<bool()> is_cancelled,
    std::function<void(const absl::Status&)> finish) {
  const int64_t bytes_in = static_cast<int64_t>(InputBytes(*decoded));
  const int64_t request_bytes = RequestBytes(*decoded);
  int64_t bytes_out = static_cast<int64_t>(OutputBytes(*decoded));
  if (buffers.sum != nullptr) bytes_out += bytes_in;
  if (buffers.mean != nullptr) {
    bytes_out += 2 * decoded->rows * static_cast<int64_t>(sizeof(float));
  }
  const int64_t bytes_sent = bytes_out - buffers.unsent_bytes;

  auto job = std::make_unique<Job>();
  job->key = decoded->key;
  job->queue = decoded->model->batching;
  job->rows = decoded->rows;
  job->bytes = request_bytes + bytes_out + kQueuedRequestOverheadBytes;
  job->deadline = deadline;
  job->is_cancelled = std::move(is_cancelled);
  RowSegment& seg = job->segment;
  seg.params = &decoded->params;
  seg.input_dtype = decoded->input_dtype;
  seg.output_dtype = decoded->output_dtype;
  seg.input = decoded->input;
  seg.output = buffers.output;
  seg.rows = decoded->rows;
  seg.residual = decoded->residual;
  seg.sum_output = buffers.sum;
  seg.mean = buffers.mean;
  seg.rstd = buffers.rstd;
  if (decoded->input_dtype == DType::kInt8) {
    seg.int8 = &decoded->int8;
    seg.int8_float_path = decoded->int8_float_path;
  }
  Metrics* metrics = metrics_;
  job->done = [metrics, decoded, finish = std::move(finish), arrival,
               request_bytes, bytes_sent](const absl::Status& status,
                                          const JobTimings& timings) {
    metrics->RequestDone(decoded->model->name,
                         DeviceLabel(static_cast<int>(decoded->device)),
                         status.ok(), timings.queue_wait, absl::Now() - arrival,
                         request_bytes, bytes_sent);
    metrics->InFlightAdd(-1);
    finish(status);
  };
  metrics_->InFlightAdd(1);
  const absl::Status submitted = batcher_->Submit(std::move(job));
  if (!submitted.ok()) metrics_->InFlightAdd(-1);
  return submitted;
}

void NormalizationServiceImpl::CallStarted() {
  MutexLock lock(&calls_mu_);
  ++open_calls_;
}

void NormalizationServiceImpl::CallDone() {
  MutexLock lock(&calls_mu_);
  if (--open_calls_ == 0) calls_done_.SignalAll();
}

bool NormalizationServiceImpl::WaitForCalls(absl::Time deadline) {
  MutexLock lock(&calls_mu_);
  while (open_calls_ > 0) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    calls_done_.WaitWithTimeout(&calls_mu_, left);
  }
  return true;
}

namespace {

// A unary inference call (NewUnaryInference): tells the service when gRPC
// is done with it, so that a drain can wait for every answer to reach the
// wire, and counts the call then.
class UnaryInferenceReactor final : public grpc::ServerUnaryReactor {
 public:
  UnaryInferenceReactor(NormalizationServiceImpl* service,
                        grpc::CallbackServerContext* context,
                        Metrics::InferenceMethod method)
      : service_(service),
        context_(context),
        method_(method),
        start_(absl::Now()) {
    service_->CallStarted();
    service_->metrics()->RpcStarted(method_);
  }

  void Answer(const absl::Status& status) {
    code_ = static_cast<grpc::StatusCode>(status.code());
    service_->metrics()->RequestAnswered(method_, static_cast<int>(code_));
    Finish(ToGrpcStatus(status));
  }

  void OnDone() override {
    service_->metrics()->RpcHandled(
        method_, internal::CallEndCode(*context_, code_, start_),
        absl::Now() - start_);
    service_->CallDone();
    delete this;
  }

 private:
  NormalizationServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  const Metrics::InferenceMethod method_;
  const absl::Time start_;
  // Set by Answer, before Finish; read in OnDone, after it.
  grpc::StatusCode code_ = grpc::StatusCode::OK;
};

}  // namespace

NormalizationServiceImpl::UnaryInference
NormalizationServiceImpl::NewUnaryInference(
    grpc::CallbackServerContext* context, Metrics::InferenceMethod method) {
  auto* reactor = new UnaryInferenceReactor(this, context, method);
  return {reactor,
          [reactor](const absl::Status& status) { reactor->Answer(status); }};
}

grpc::ServerUnaryReactor* NormalizationServiceImpl::Normalize(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  UnaryInference call =
      NewUnaryInference(context, Metrics::InferenceMethod::kNormalize);
  // The request and the answer, until the answer is on its way: the
  // decoded request points into the request's bytes.
  struct Exchange {
    v1::NormalizeRequest request;
    v1::NormalizeResponse response;
    grpc::Slice output;
  };
  auto exchange = std::make_shared<Exchange>();
  grpc::ByteBuffer incoming = *request;  // shares the slices
  if (!grpc::SerializationTraits<v1::NormalizeRequest>::Deserialize(
           &incoming, &exchange->request)
           .ok()) {
    call.finish(absl::InvalidArgumentError(
        absl::StrCat("request: does not parse as ",
                     v1::NormalizeRequest::descriptor()->full_name())));
    return call.reactor;
  }
  Start(
      exchange->request, &exchange->response, CallDeadline(context),
      [context] { return context->IsCancelled(); },
      [exchange, response,
       finish = std::move(call.finish)](const absl::Status& status) {
        if (status.ok()) {
          static constexpr int kOutputData[] = {
              v1::NormalizeResponse::kOutputFieldNumber,
              v1::Tensor::kDataFieldNumber};
          *response = internal::SerializeWithBytes(
              &exchange->response, kOutputData, exchange->output);
        }
        finish(status);
      },
      &exchange->output);
  return call.reactor;
}

grpc::ServerUnaryReactor* NormalizationServiceImpl::ListModels(
    grpc::CallbackServerContext* context, const v1::ListModelsRequest*,
    v1::ListModelsResponse* response) {
  metrics_->RpcStarted(Metrics::kNativeService, "ListModels", kUnary);
  const absl::Time start = absl::Now();
  for (const Model* m : models_->models()) {
    v1::ModelInfo* info = response->add_models();
    info->set_name(m->name);
    info->set_kind(m->kind == NormKind::kRmsNorm ? v1::NORM_KIND_RMS_NORM
                                                 : v1::NORM_KIND_LAYER_NORM);
    info->mutable_normalized_shape()->Assign(m->normalized_shape.begin(),
                                             m->normalized_shape.end());
    info->set_epsilon(m->epsilon);
    info->set_has_gamma(!m->gamma.empty());
    info->set_has_beta(!m->beta.empty());
    info->set_device(DeviceEnum(m->device));
    info->set_allows_request_params(m->allow_request_params);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  metrics_->RpcHandled(Metrics::kNativeService, "ListModels", kUnary, 0,
                       absl::Now() - start);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
NormalizationServiceImpl::NormalizeStream(
    grpc::CallbackServerContext* context) {
  using Reactor = internal::StreamReactor<v1::NormalizeStreamRequest,
                                          v1::NormalizeStreamResponse>;
  return new Reactor(
      this, context, Metrics::InferenceMethod::kNormalizeStream,
      [this](grpc::CallbackServerContext* context,
             const std::shared_ptr<Reactor::Item>& item,
             std::function<void(const absl::Status&)> done) {
        static constexpr int kOutputData[] = {
            v1::NormalizeStreamResponse::kResponseFieldNumber,
            v1::NormalizeResponse::kOutputFieldNumber,
            v1::Tensor::kDataFieldNumber};
        item->bytes_path = kOutputData;
        return Start(
            item->request.request(), item->answer.mutable_response(),
            CallDeadline(context), [context] { return context->IsCancelled(); },
            [item, done = std::move(done)](const absl::Status& status) {
              v1::NormalizeStreamResponse& a = item->answer;
              a.set_request_id(
                  std::string(EchoedId(item->request.request().request_id())));
              if (!status.ok()) {
                a.clear_response();
                item->bytes_apart = grpc::Slice();
                a.set_status_code(static_cast<int>(status.code()));
                a.set_status_message(ClientMessage(status));
              }
              done(status);
            },
            &item->bytes_apart);
      },
      [](const absl::Status& status, v1::NormalizeStreamResponse* answer) {
        answer->set_status_code(static_cast<int>(status.code()));
        answer->set_status_message(ClientMessage(status));
      });
}

}  // namespace normserve
