// The Open Inference Protocol (KServe v2) gRPC service,
// inference.GRPCInferenceService, served on the same port as the native API
// so that Triton and KServe clients work unchanged.
//
// It is a second front door to the same house: ModelInfer and
// ModelStreamInfer translate each request (oip_translate.h states the
// mapping), validate it with the native decoder and queue it through the
// native service's Submit(), so both protocols share the batcher, the
// backends, the metrics, the drain and the outputs bit for bit.
//
// Health: ServerLive is true while the process serves; ServerReady and
// ModelReady turn false once draining starts (as the gRPC health service
// turns NOT_SERVING). ModelReady of an unknown model is false, not an
// error. ModelStatistics reports computed requests, queue and compute time
// per model from the same counters as /metrics (failures are not counted
// per model: see grpc_server_handled_total).
//
// Threading: thread-safe; the native service is borrowed and must outlive
// this one and every call it started.
#ifndef NORMSERVE_SERVER_OIP_SERVICE_H_
#define NORMSERVE_SERVER_OIP_SERVICE_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/service.h"

namespace normserve {

namespace internal {
using Oip = inference::GRPCInferenceService;
// The callback service, with ModelStreamInfer registered raw: its reactor
// parses each message itself (see internal/stream_reactor.h).
using InferenceServiceBase = Oip::WithCallbackMethod_ServerLive<
    Oip::WithCallbackMethod_ServerReady<Oip::WithCallbackMethod_ModelReady<
        Oip::WithCallbackMethod_ServerMetadata<
            Oip::WithCallbackMethod_ModelMetadata<
                Oip::WithCallbackMethod_ModelInfer<
                    Oip::WithRawCallbackMethod_ModelStreamInfer<
                        Oip::WithCallbackMethod_ModelConfig<
                            Oip::WithCallbackMethod_ModelStatistics<
                                Oip::Service>>>>>>>>>;
}  // namespace internal

class InferenceServiceImpl final : public internal::InferenceServiceBase {
 public:
  explicit InferenceServiceImpl(NormalizationServiceImpl* native);

  grpc::ServerUnaryReactor* ServerLive(
      grpc::CallbackServerContext* context,
      const inference::ServerLiveRequest* request,
      inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(
      grpc::CallbackServerContext* context,
      const inference::ServerReadyRequest* request,
      inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(
      grpc::CallbackServerContext* context,
      const inference::ModelReadyRequest* request,
      inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(
      grpc::CallbackServerContext* context,
      const inference::ServerMetadataRequest* request,
      inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(
      grpc::CallbackServerContext* context,
      const inference::ModelMetadataRequest* request,
      inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelConfig(
      grpc::CallbackServerContext* context,
      const inference::ModelConfigRequest* request,
      inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(
      grpc::CallbackServerContext* context,
      const inference::ModelStatisticsRequest* request,
      inference::ModelStatisticsResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(
      grpc::CallbackServerContext* context,
      const inference::ModelInferRequest* request,
      inference::ModelInferResponse* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ModelStreamInfer(
      grpc::CallbackServerContext* context) override;

 private:
  // Translates, validates and queues one inference; `finish` is called
  // exactly once (inline on error). `request` and `response` must stay
  // valid until then. Returns what NormalizationServiceImpl::Start does.
  int64_t StartInfer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response,
                     absl::Time deadline, std::function<bool()> is_cancelled,
                     std::function<void(const absl::Status&)> finish);

  // Answers a call that needs no batching, counting it in the metrics.
  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context,
                                   const char* method,
                                   const absl::Status& status);

  NormalizationServiceImpl* const native_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVER_OIP_SERVICE_H_
