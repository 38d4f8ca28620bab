#include "server/oip_service.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/internal/stream_reactor.h"
#include "server/oip_translate.h"

#ifndef NORMSERVE_VERSION
#define NORMSERVE_VERSION "unknown"
#endif

namespace normserve {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

constexpr char kUnary[] = "unary";

// What one inference keeps alive until it is answered.
struct InferCall {
  OipRequest oip;
  // Scratch for what the kernel writes but the client did not ask for:
  // the normalized tensor, or one of mean/rstd.
  std::string unrequested_output;
  std::vector<float> unrequested_stats;
};

absl::Status UnknownModel(const std::string& name) {
  return absl::NotFoundError(
      absl::StrCat("name = '", name, "': no such model (see ModelMetadata)"));
}

// How a stream answer carries an error: as text (the protocol has no
// status per message), the code first.
std::string StreamErrorText(const absl::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                      ClientMessage(status));
}

}  // namespace

InferenceServiceImpl::InferenceServiceImpl(NormalizationServiceImpl* native)
    : native_(native) {}

grpc::ServerUnaryReactor* InferenceServiceImpl::Answer(
    grpc::CallbackServerContext* context, const char* method,
    const absl::Status& status) {
  Metrics* metrics = native_->metrics();
  metrics->RpcStarted(Metrics::kOipService, method, kUnary);
  metrics->RpcHandled(Metrics::kOipService, method, kUnary,
                      static_cast<int>(status.code()), absl::ZeroDuration());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerLive(
    grpc::CallbackServerContext* context, const inference::ServerLiveRequest*,
    inference::ServerLiveResponse* response) {
  response->set_live(true);
  return Answer(context, "ServerLive", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerReady(
    grpc::CallbackServerContext* context, const inference::ServerReadyRequest*,
    inference::ServerReadyResponse* response) {
  response->set_ready(!native_->draining());
  return Answer(context, "ServerReady", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelReady(
    grpc::CallbackServerContext* context,
    const inference::ModelReadyRequest* request,
    inference::ModelReadyResponse* response) {
  const bool version_ok = CheckModelVersion("version", request->version()).ok();
  response->set_ready(!native_->draining() && version_ok &&
                      native_->models().Find(request->name()) != nullptr);
  return Answer(context, "ModelReady", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerMetadata(
    grpc::CallbackServerContext* context,
    const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name("normserve");
  response->set_version(NORMSERVE_VERSION);
  for (const char* extension :
       {"model_configuration", "statistics", "parameters"}) {
    response->add_extensions(extension);
  }
  return Answer(context, "ServerMetadata", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelMetadata(
    grpc::CallbackServerContext* context,
    const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  const Model* model = native_->models().Find(request->name());
  if (model == nullptr) {
    return Answer(context, "ModelMetadata", UnknownModel(request->name()));
  }
  if (absl::Status s = CheckModelVersion("version", request->version());
      !s.ok()) {
    return Answer(context, "ModelMetadata", s);
  }
  FillModelMetadata(*model, response);
  return Answer(context, "ModelMetadata", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelConfig(
    grpc::CallbackServerContext* context,
    const inference::ModelConfigRequest* request,
    inference::ModelConfigResponse* response) {
  const Model* model = native_->models().Find(request->name());
  if (model == nullptr) {
    return Answer(context, "ModelConfig", UnknownModel(request->name()));
  }
  if (absl::Status s = CheckModelVersion("version", request->version());
      !s.ok()) {
    return Answer(context, "ModelConfig", s);
  }
  FillModelConfig(*model, response->mutable_config());
  return Answer(context, "ModelConfig", absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelStatistics(
    grpc::CallbackServerContext* context,
    const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  if (absl::Status s = CheckModelVersion("version", request->version());
      !s.ok()) {
    return Answer(context, "ModelStatistics", s);
  }
  std::vector<const Model*> models;
  if (request->name().empty()) {
    models = native_->models().models();
  } else if (const Model* m = native_->models().Find(request->name())) {
    models.push_back(m);
  } else {
    return Answer(context, "ModelStatistics", UnknownModel(request->name()));
  }
  const auto nanos = [](double seconds) {
    return static_cast<uint64_t>(seconds * 1e9);
  };
  for (const Model* m : models) {
    const Metrics::ModelTotals t = native_->metrics()->Totals(m->name);
    inference::ModelStatistics* s = response->add_model_stats();
    s->set_name(m->name);
    s->set_version(kOipModelVersion);
    s->set_inference_count(t.requests);
    s->set_execution_count(t.batches);
    inference::InferStatistics* i = s->mutable_inference_stats();
    i->mutable_success()->set_count(t.requests);
    i->mutable_success()->set_ns(nanos(t.latency_seconds));
    i->mutable_queue()->set_count(t.requests);
    i->mutable_queue()->set_ns(nanos(t.queue_seconds));
    // Per request, as the protocol counts them: the batch's compute time
    // for each request in it. Inputs are read and outputs written in
    // place, so the input and output stages take no separate time.
    i->mutable_compute_input()->set_count(t.requests);
    i->mutable_compute_infer()->set_count(t.requests);
    i->mutable_compute_infer()->set_ns(nanos(t.request_compute_seconds));
    i->mutable_compute_output()->set_count(t.requests);
  }
  return Answer(context, "ModelStatistics", absl::OkStatus());
}

int64_t InferenceServiceImpl::StartInfer(
    const ModelInferRequest& request, ModelInferResponse* response,
    absl::Time deadline, std::function<bool()> is_cancelled,
    std::function<void(const absl::Status&)> finish) {
  const absl::Time arrival = absl::Now();
  if (native_->draining()) {
    finish(absl::UnavailableError("server is shutting down"));
    return 0;
  }
  auto call = std::make_shared<InferCall>();
  if (absl::Status s = TranslateInferRequest(request, &call->oip); !s.ok()) {
    finish(s);
    return 0;
  }
  auto decoded_or =
      DecodeRequest(call->oip.native, native_->models(), native_->limits(),
                    native_->devices(), &call->oip.payloads);
  if (!decoded_or.ok()) {
    finish(decoded_or.status());
    return 0;
  }
  std::shared_ptr<DecodedRequest> decoded = std::move(decoded_or).value();
  const DecodedRequest& d = *decoded;
  int64_t response_bytes = 0;
  {
    // Only the outputs asked for are sent (the statistics otherwise).
    absl::InlinedVector<ResponsePart, 4> parts;
    for (const std::string& name : call->oip.outputs) {
      if (name == "output") {
        parts.push_back({name.c_str(), d.output_dtype, d.elements});
      } else if (name == "residual_sum") {
        parts.push_back({name.c_str(), d.input_dtype, d.elements});
      } else {
        parts.push_back({name.c_str(), DType::kFloat32, d.rows});
      }
    }
    absl::StatusOr<int64_t> fits = CheckResponseFits(parts, native_->limits());
    if (!fits.ok()) {
      finish(fits.status());
      return 0;
    }
    response_bytes = *fits;
  }
  if (absl::Status room = native_->CheckRoom(d); !room.ok()) {
    finish(room);
    return 0;
  }

  response->set_model_name(d.model->name);
  response->set_model_version(kOipModelVersion);
  response->set_id(request.id());
  // Answer in kind: typed contents only when the request was typed and
  // every output is FP32 (FP16/BF16/INT8 must travel raw, and the
  // specification does not allow mixing).
  bool typed = call->oip.typed;
  for (const std::string& name : call->oip.outputs) {
    if (name == "output" && d.output_dtype != DType::kFloat32) typed = false;
    if (name == "residual_sum" && d.input_dtype != DType::kFloat32) {
      typed = false;
    }
  }
  // Output buffers are sized here, after validation; the kernel writes
  // straight into them.
  NormalizationServiceImpl::OutputBuffers buffers;
  const auto add = [&](const std::string& name, DType dtype,
                       const std::vector<int64_t>& shape,
                       int64_t elements) -> void* {
    ModelInferResponse::InferOutputTensor* t = response->add_outputs();
    t->set_name(name);
    t->set_datatype(OipDatatype(dtype));
    t->mutable_shape()->Assign(shape.begin(), shape.end());
    if (typed) {
      auto* values = t->mutable_contents()->mutable_fp32_contents();
      values->Resize(static_cast<int>(elements), 0.0f);
      return values->mutable_data();
    }
    std::string* raw = response->add_raw_output_contents();
    raw->resize(static_cast<size_t>(elements) * DTypeSize(dtype));
    return raw->data();
  };
  for (const std::string& name : call->oip.outputs) {
    if (name == "output") {
      buffers.output = add(name, d.output_dtype, d.shape, d.elements);
      if (d.output_dtype == DType::kInt8) {
        auto* params = response->mutable_outputs(response->outputs_size() - 1)
                           ->mutable_parameters();
        (*params)["scale"].set_double_param(d.int8.affine->output_scale);
        (*params)["zero_point"].set_int64_param(
            d.int8.affine->output_zero_point);
      }
    } else if (name == "residual_sum") {
      buffers.sum = add(name, d.input_dtype, d.shape, d.elements);
    } else {
      float* stats = static_cast<float*>(
          add(name, DType::kFloat32, d.stats_shape, d.rows));
      (name == "mean" ? buffers.mean : buffers.rstd) = stats;
    }
  }
  if (buffers.output == nullptr) {
    // The kernel always writes the normalized tensor; when it was not
    // asked for it lands in scratch space.
    call->unrequested_output.resize(NormalizationServiceImpl::OutputBytes(d));
    buffers.output = call->unrequested_output.data();
    buffers.unsent_bytes +=
        static_cast<int64_t>(call->unrequested_output.size());
  }
  if (d.return_statistics &&
      (buffers.mean == nullptr || buffers.rstd == nullptr)) {
    call->unrequested_stats.resize(static_cast<size_t>(d.rows));
    (buffers.mean == nullptr ? buffers.mean : buffers.rstd) =
        call->unrequested_stats.data();
    buffers.unsent_bytes += d.rows * static_cast<int64_t>(sizeof(float));
  }
  const absl::Status submitted = native_->Submit(
      std::move(decoded), buffers, arrival, deadline, std::move(is_cancelled),
      [call, finish](const absl::Status& status) { finish(status); });
  if (!submitted.ok()) {
    response->Clear();
    finish(submitted);
    return 0;
  }
  return response_bytes;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelInfer(
    grpc::CallbackServerContext* context, const ModelInferRequest* request,
    ModelInferResponse* response) {
  NormalizationServiceImpl::UnaryInference call = native_->NewUnaryInference(
      context, Metrics::InferenceMethod::kModelInfer);
  StartInfer(
      *request, response, CallDeadline(context),
      [context] { return context->IsCancelled(); }, std::move(call.finish));
  return call.reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
InferenceServiceImpl::ModelStreamInfer(grpc::CallbackServerContext* context) {
  using Reactor =
      internal::StreamReactor<ModelInferRequest, ModelStreamInferResponse>;
  return new Reactor(
      native_, context, Metrics::InferenceMethod::kModelStreamInfer,
      [this](grpc::CallbackServerContext* context,
             const std::shared_ptr<Reactor::Item>& item,
             std::function<void(const absl::Status&)> done) {
        return StartInfer(
            item->request, item->answer.mutable_infer_response(),
            CallDeadline(context), [context] { return context->IsCancelled(); },
            [item, done = std::move(done)](const absl::Status& status) {
              if (!status.ok()) {
                // The stream carries no status per message: the error
                // travels as text, with the request's id for matching.
                ModelStreamInferResponse& a = item->answer;
                a.mutable_infer_response()->Clear();
                a.mutable_infer_response()->set_id(
                    std::string(EchoedId(item->request.id())));
                a.set_error_message(StreamErrorText(status));
              }
              done(status);
            });
      },
      [](const absl::Status& status, ModelStreamInferResponse* answer) {
        answer->set_error_message(StreamErrorText(status));
      });
}

}  // namespace normserve
