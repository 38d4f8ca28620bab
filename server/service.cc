#include "server/service.h"

#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/time/clock.h"

namespace normserve {
namespace {

constexpr char kUnary[] = "unary";
constexpr char kBidi[] = "bidi_stream";

absl::Time ContextDeadline(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  // gRPC reports "no deadline" as a time point far in the future.
  if (deadline >= std::chrono::system_clock::time_point::max() -
                      std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

v1::Device DeviceEnum(DeviceKind d) {
  return d == DeviceKind::kCuda ? v1::DEVICE_CUDA : v1::DEVICE_CPU;
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

NormalizationServiceImpl::NormalizationServiceImpl(const Options& options,
                                                   const ModelRegistry* models,
                                                   Batcher* batcher,
                                                   Metrics* metrics)
    : options_(options),
      models_(models),
      batcher_(batcher),
      metrics_(metrics) {}

void NormalizationServiceImpl::Start(
    const v1::NormalizeRequest& request, v1::NormalizeResponse* response,
    absl::Time deadline, std::function<bool()> is_cancelled,
    std::function<void(const absl::Status&)> finish) {
  const absl::Time arrival = absl::Now();
  if (draining_.load()) {
    finish(absl::UnavailableError("server is shutting down"));
    return;
  }
  auto decoded_or =
      DecodeRequest(request, *models_, options_.limits, options_.devices);
  if (!decoded_or.ok()) {
    finish(decoded_or.status());
    return;
  }
  std::shared_ptr<DecodedRequest> decoded = std::move(decoded_or).value();

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
  }
}

size_t NormalizationServiceImpl::InputBytes(const DecodedRequest& decoded) {
  return static_cast<size_t>(decoded.elements) * DTypeSize(decoded.input_dtype);
}

size_t NormalizationServiceImpl::OutputBytes(const DecodedRequest& decoded) {
  return static_cast<size_t>(decoded.elements) *
         DTypeSize(decoded.output_dtype);
}

absl::Status NormalizationServiceImpl::Submit(
    std::shared_ptr<DecodedRequest> decoded, const OutputBuffers& buffers,
    absl::Time arrival, absl::Time deadline, std::function<bool()> is_cancelled,
    std::function<void(const absl::Status&)> finish) {
  const int64_t bytes_in = static_cast<int64_t>(InputBytes(*decoded));
  const int64_t request_bytes =
      decoded->residual != nullptr ? 2 * bytes_in : bytes_in;
  int64_t bytes_out = static_cast<int64_t>(OutputBytes(*decoded));
  if (buffers.sum != nullptr) bytes_out += bytes_in;
  if (buffers.mean != nullptr) {
    bytes_out += 2 * decoded->rows * static_cast<int64_t>(sizeof(float));
  }

  auto job = std::make_unique<Job>();
  job->key = decoded->key;
  job->queue = decoded->model->batching;
  job->rows = decoded->rows;
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
               request_bytes, bytes_out](const absl::Status& status,
                                         const JobTimings& timings) {
    if (status.ok()) {
      metrics->RequestDone(
          decoded->model->name, DeviceLabel(static_cast<int>(decoded->device)),
          timings.queue_wait, absl::Now() - arrival, request_bytes, bytes_out);
    }
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

// A unary call that tells the service when gRPC is done with it, so that a
// drain can wait for every answer to reach the wire.
class UnaryReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit UnaryReactor(NormalizationServiceImpl* service) : service_(service) {
    service_->CallStarted();
  }
  void OnDone() override {
    service_->CallDone();
    delete this;
  }

 private:
  NormalizationServiceImpl* const service_;
};

}  // namespace

grpc::ServerUnaryReactor* NormalizationServiceImpl::Normalize(
    grpc::CallbackServerContext* context, const v1::NormalizeRequest* request,
    v1::NormalizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = new UnaryReactor(this);
  metrics_->RpcStarted(Metrics::kNativeService, "Normalize", kUnary);
  const absl::Time start = absl::Now();
  Metrics* metrics = metrics_;
  Start(
      *request, response, ContextDeadline(context),
      [context] { return context->IsCancelled(); },
      [reactor, metrics, start](const absl::Status& status) {
        metrics->RpcHandled(Metrics::kNativeService, "Normalize", kUnary,
                            static_cast<int>(status.code()),
                            absl::Now() - start);
        reactor->Finish(ToGrpcStatus(status));
      });
  return reactor;
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

namespace {

// One bidirectional stream. Each request message becomes a Start() call; its
// answer is queued for writing (one write in flight at a time, as gRPC
// requires). The stream finishes once the client has half-closed, every
// started request has answered and the write queue is empty.
class StreamReactor final
    : public grpc::ServerBidiReactor<v1::NormalizeStreamRequest,
                                     v1::NormalizeStreamResponse> {
 public:
  StreamReactor(NormalizationServiceImpl* service,
                grpc::CallbackServerContext* context)
      : service_(service), context_(context), start_(absl::Now()) {
    service_->CallStarted();
    service_->metrics()->RpcStarted(Metrics::kNativeService, "NormalizeStream",
                                    kBidi);
    StartRead(&incoming_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool finish;
      {
        MutexLock lock(&mu_);
        reads_done_ = true;
        finish = ShouldFinish();
      }
      if (finish) Finish(grpc::Status::OK);
      return;
    }
    auto item = std::make_shared<Item>();
    item->request = std::move(incoming_);
    {
      MutexLock lock(&mu_);
      ++pending_;
    }
    grpc::CallbackServerContext* context = context_;
    service_->Start(
        item->request.request(), item->answer.mutable_response(),
        ContextDeadline(context_), [context] { return context->IsCancelled(); },
        [this, item](const absl::Status& status) { Answer(item, status); });
    incoming_.Clear();
    StartRead(&incoming_);
  }

  void OnWriteDone(bool ok) override {
    std::shared_ptr<Item> next;
    bool finish;
    {
      MutexLock lock(&mu_);
      writes_.pop_front();
      --pending_;
      if (!ok) broken_ = true;
      if (broken_) {
        pending_ -= static_cast<int64_t>(writes_.size());
        writes_.clear();
      }
      if (!writes_.empty()) {
        next = writes_.front();
      } else {
        writing_ = false;
      }
      finish = ShouldFinish();
    }
    if (next != nullptr) StartWrite(&next->answer);
    if (finish) Finish(grpc::Status::OK);
  }

  void OnDone() override {
    service_->metrics()->RpcHandled(
        Metrics::kNativeService, "NormalizeStream", kBidi,
        context_->IsCancelled() ? static_cast<int>(grpc::StatusCode::CANCELLED)
                                : 0,
        absl::Now() - start_);
    service_->CallDone();
    delete this;
  }

 private:
  struct Item {
    v1::NormalizeStreamRequest request;
    v1::NormalizeStreamResponse answer;
  };

  void Answer(const std::shared_ptr<Item>& item, const absl::Status& status) {
    v1::NormalizeStreamResponse& a = item->answer;
    a.set_request_id(item->request.request().request_id());
    if (!status.ok()) {
      a.clear_response();
      a.set_status_code(static_cast<int>(status.code()));
      a.set_status_message(std::string(status.message()));
    }
    bool start_write = false;
    bool finish = false;
    {
      MutexLock lock(&mu_);
      if (broken_) {
        --pending_;
        finish = ShouldFinish();
      } else {
        writes_.push_back(item);
        if (!writing_) {
          writing_ = true;
          start_write = true;
        }
      }
    }
    if (start_write) StartWrite(&item->answer);
    if (finish) Finish(grpc::Status::OK);
  }

  // True exactly once: when nothing is left to read, compute or write.
  bool ShouldFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_ || pending_ > 0 || writing_) return false;
    finished_ = true;
    return true;
  }

  NormalizationServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  const absl::Time start_;
  v1::NormalizeStreamRequest incoming_;  // Owned by the read in flight.

  Mutex mu_;
  // Requests started and not yet written (or dropped).
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::shared_ptr<Item>> writes_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerBidiReactor<v1::NormalizeStreamRequest,
                        v1::NormalizeStreamResponse>*
NormalizationServiceImpl::NormalizeStream(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(this, context);
}

}  // namespace normserve
