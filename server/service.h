// The gRPC service normserve.v1.NormalizationService (callback API).
//
// Handlers never block: they decode and validate the request, hand a Job to
// the batcher and return; a batcher worker finishes the call. Every call is
// finished exactly once, with the status mapped from absl::Status at this
// edge (ToGrpcStatus). While draining, new calls get UNAVAILABLE.
//
// Threading: all methods are thread-safe. The registry, batcher and metrics
// are borrowed and must outlive the service and every call it started.
#ifndef NORMSERVE_SERVER_SERVICE_H_
#define NORMSERVE_SERVER_SERVICE_H_

#include <atomic>
#include <functional>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "normserve/v1/normalization_service.grpc.pb.h"
#include "server/batcher.h"
#include "server/internal/mutex.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/request_decoder.h"

namespace normserve {

// The one mapping from internal status to gRPC status; its message is
// ClientMessage's.
grpc::Status ToGrpcStatus(const absl::Status& status);

// A status message as a client is sent it: at most kMaxStatusMessageBytes,
// cut at a UTF-8 character boundary and marked. Messages quote what the
// client sent (a model name, a parameter key), and a status message of
// megabytes would exceed the client's metadata limit: it would see a
// transport error instead of the status.
inline constexpr size_t kMaxStatusMessageBytes = 1024;
std::string ClientMessage(const absl::Status& status);

// A request's id as an answer echoes it: empty when it is too long to be
// accepted (the answer then says so).
absl::string_view EchoedId(absl::string_view id);

// A call's deadline (InfiniteFuture when the client set none).
absl::Time CallDeadline(const grpc::CallbackServerContext* context);

namespace internal {
using Native = v1::NormalizationService;
// The callback service, with Normalize and NormalizeStream registered raw:
// Normalize parses its request itself and writes its answer with the
// output tensor's bytes as the kernel wrote them (SerializeWithBytes,
// internal/response_wire.h);
// the stream's reactor parses each message itself (see
// internal/stream_reactor.h).
using NormalizationServiceBase = Native::WithRawCallbackMethod_Normalize<
    Native::WithRawCallbackMethod_NormalizeStream<
        Native::WithCallbackMethod_ListModels<Native::Service>>>;
}  // namespace internal

// How far a stream reads ahead of the answers it has written: it reads no
// further message while this many of its messages, or this many bytes of
// them, are being computed or wait to be written (one message is always
// read, whatever its size). See internal/stream_reactor.h.
struct StreamWindow {
  int64_t messages = 1024;
  int64_t bytes = int64_t{64} << 20;
};

class NormalizationServiceImpl final
    : public internal::NormalizationServiceBase {
 public:
  struct Options {
    ValidationLimits limits;
    DeviceAvailability devices;
    StreamWindow stream_window;
  };

  NormalizationServiceImpl(const Options& options, const ModelRegistry* models,
                           Batcher* batcher, Metrics* metrics);

  // From now on new calls (and new stream messages) get UNAVAILABLE.
  void StartDraining() { draining_.store(true); }

  // Blocks until every call this service started is done (its final status
  // sent to the client or the call cancelled), or until `deadline`.
  // Returns whether all are done.
  bool WaitForCalls(absl::Time deadline);

  grpc::ServerUnaryReactor* Normalize(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NormalizeStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListModels(
      grpc::CallbackServerContext* context,
      const v1::ListModelsRequest* request,
      v1::ListModelsResponse* response) override;

  // Validates `request` and queues it; `finish` is called exactly once,
  // inline on a validation error or later from a batcher worker. `request`
  // and `response` must stay valid until then. Returns the bytes of the
  // response tensors allocated for a queued request, 0 where it was
  // answered at once (a stream's window counts them). With `output_slice`,
  // an output that goes to response->output().data() is written into a
  // new slice there instead, not zero-filled first, and output.data stays
  // empty (SerializeWithBytes puts it on the wire).
  int64_t Start(const v1::NormalizeRequest& request,
                v1::NormalizeResponse* response, absl::Time deadline,
                std::function<bool()> is_cancelled,
                std::function<void(const absl::Status&)> finish,
                grpc::Slice* output_slice = nullptr);

  // Where the kernel writes one request's results: buffers inside the
  // response message, sized by the caller after decoding. Null: not asked.
  struct OutputBuffers {
    void* output = nullptr;
    void* sum = nullptr;
    float* mean = nullptr;
    float* rstd = nullptr;
    // Bytes of the above that the response does not carry (scratch for
    // outputs the client did not ask for): left out of the bytes metric.
    int64_t unsent_bytes = 0;
  };

  // What a queued request holds besides its tensors, counted in
  // --max_queued_bytes: gRPC's state for its call, its messages and ours
  // for the request. Measured: a server holding 5000-20000 queued unary
  // calls of 8 bytes of input took 17-18 KB of RSS for each; counting their
  // tensors alone, 4 GiB of queued bytes would have admitted 270 million.
  // (A stream message holds less, so streams are counted on the safe side.)
  static constexpr int64_t kQueuedRequestOverheadBytes = 16 << 10;

  // Queues a decoded request whose output buffers are ready (the common
  // tail of every protocol's handler). On OK, `finish` is called exactly
  // once from a batcher worker; on error (queue full, stopping) it is not
  // called and the caller reports the returned status.
  absl::Status Submit(std::shared_ptr<DecodedRequest> decoded,
                      const OutputBuffers& buffers, absl::Time arrival,
                      absl::Time deadline, std::function<bool()> is_cancelled,
                      std::function<void(const absl::Status&)> finish);

  // What Submit would answer for `decoded` on the grounds of queue room
  // alone (Batcher::CheckRoom, with the least bytes its job can have: its
  // inputs and output), so that a handler refuses a request under overload
  // before it allocates the output buffers. OK when there is room now.
  absl::Status CheckRoom(const DecodedRequest& decoded);

  // Byte sizes of a decoded request's input and output tensors.
  static size_t InputBytes(const DecodedRequest& decoded);
  static size_t OutputBytes(const DecodedRequest& decoded);

  bool draining() const { return draining_.load(); }
  const ModelRegistry& models() const { return *models_; }
  const ValidationLimits& limits() const { return options_.limits; }
  const StreamWindow& stream_window() const { return options_.stream_window; }
  const DeviceAvailability& devices() const { return options_.devices; }
  Metrics* metrics() { return metrics_; }

  // A unary inference call of `method`, counted as started: its reactor,
  // which counts as an open call until gRPC is done with it (so that a
  // drain waits for its answer to reach the wire), and the `finish` that
  // answers it and counts the request's code. The call's code counts when
  // gRPC is done with it: the answer's, or how the client saw the call end
  // where it did not end so (internal::CallEndCode), as a stream's does.
  struct UnaryInference {
    grpc::ServerUnaryReactor* reactor;
    std::function<void(const absl::Status&)> finish;
  };
  UnaryInference NewUnaryInference(grpc::CallbackServerContext* context,
                                   Metrics::InferenceMethod method);

  // Calls this service has started and gRPC has not yet reported done.
  void CallStarted();
  void CallDone();

 private:
  const Options options_;
  const ModelRegistry* const models_;
  Batcher* const batcher_;
  Metrics* const metrics_;
  std::atomic<bool> draining_{false};
  Mutex calls_mu_;
  CondVar calls_done_;
  int64_t open_calls_ ABSL_GUARDED_BY(calls_mu_) = 0;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVER_SERVICE_H_
