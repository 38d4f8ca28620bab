// Prometheus metrics of the server, exported on their own HTTP port.
//
// Families (base units, `_total` counters):
//   grpc_server_started_total{grpc_service,grpc_method,grpc_type}
//   grpc_server_handled_total{grpc_service,grpc_method,grpc_type,grpc_code}
//   grpc_server_handling_seconds{grpc_service,grpc_method,grpc_type}
//   normserve_queue_wait_seconds{model,device}       histogram, per request
//   normserve_compute_seconds{model,device}          histogram, per batch
//   normserve_request_latency_seconds{model,device}  histogram, end to end
//   normserve_batch_rows{model,device}               histogram
//   normserve_batch_requests{model,device}           histogram
//   normserve_queue_depth                            gauge, queued requests
//   normserve_requests_in_flight                     gauge
//   normserve_cuda_memory_used_bytes                 gauge, device memory in
//                                                    use (all processes)
//   normserve_cuda_memory_total_bytes                gauge
//   normserve_cuda_utilization_ratio                 gauge, NVML's GPU
//                                                    utilization (where NVML
//                                                    loads)
//   normserve_cuda_busy_seconds_total                counter, time the CUDA
//                                                    backend had a batch on
//                                                    the GPU; its rate is the
//                                                    busy fraction
//   (the CUDA families exist while the CUDA backend runs, read from it at
//   each scrape)
//   process_cpu_seconds_total, process_resident_memory_bytes,
//   process_virtual_memory_bytes, process_start_time_seconds,
//   process_open_fds, process_max_fds
//                                                    the server process, as
//                                                    Prometheus clients'
//                                                    process collectors name
//                                                    them (Linux /proc, read
//                                                    at each scrape)
//   normserve_request_bytes_total{model}             counter, tensor bytes in
//   normserve_response_bytes_total{model}            counter, tensor bytes out
//   normserve_requests_total{grpc_service,grpc_method,grpc_code}
//                                                    counter, inference
//                                                    requests answered: unary
//                                                    calls and stream messages
//                                                    alike (a stream's
//                                                    handled_total counts the
//                                                    stream, not its messages)
//   normserve_queue_refusals_total                   counter, requests refused
//                                                    because the queues were
//                                                    full (overload, not bad
//                                                    input)
// Latency buckets span 10 µs to 10 s.
//
// The grpc_server_* and normserve_requests_total series of the inference
// methods exist from the start, at 0, for every code: rate() misses the
// first increment of a series that appears later.
//
// The HTTP endpoint runs 8 threads and drops a connection that sends no
// complete request within 3 s, so idle connections cannot hold it.
//
// Threading: every method is thread-safe. Label children are created on
// first use and cached.
#ifndef NORMSERVE_SERVER_METRICS_H_
#define NORMSERVE_SERVER_METRICS_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/backend.h"
#include "server/batcher.h"
#include "server/internal/mutex.h"

namespace normserve {

class Metrics : public BatchObserver {
 public:
  // Serves /metrics on `listen_address` ("host:port"); an empty address
  // keeps the registry without an HTTP endpoint (tests). Fails with
  // UNAVAILABLE when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(
      const std::string& listen_address);
  ~Metrics() override;

  // The bound HTTP port, or 0 without an endpoint.
  int port() const;

  // gRPC server conventions. `service` is the full service name (one of
  // the constants below), `type` is "unary" or "bidi_stream".
  static constexpr char kNativeService[] = "normserve.v1.NormalizationService";
  static constexpr char kOipService[] = "inference.GRPCInferenceService";
  void RpcStarted(const char* service, const std::string& method,
                  const char* type);
  void RpcHandled(const char* service, const std::string& method,
                  const char* type, int code, absl::Duration elapsed);

  // The inference RPCs, whose series are created up front and kept, so
  // that their calls do no label lookups.
  enum class InferenceMethod {
    kNormalize,
    kNormalizeStream,
    kModelInfer,
    kModelStreamInfer
  };
  void RpcStarted(InferenceMethod method);
  void RpcHandled(InferenceMethod method, int code, absl::Duration elapsed);
  // One inference request answered with `code`: a unary call, or one
  // message of a stream.
  void RequestAnswered(InferenceMethod method, int code);

  // One request left its queue after `queue_wait` and was answered:
  // computed (`computed`), or not (dropped there as expired or cancelled,
  // refused at shutdown, or its batch failed). `device` is "cpu" or "cuda".
  // The queue wait counts either way (the wait of the requests that expired
  // is the overload signal); latency and bytes only for computed requests.
  void RequestDone(const std::string& model, const char* device, bool computed,
                   absl::Duration queue_wait, absl::Duration latency,
                   int64_t bytes_in, int64_t bytes_out);
  void InFlightAdd(int delta);
  // Where the CUDA families are read at each scrape (on the exposer's
  // thread): `source` returns the backend's figures, nullopt for none.
  // Setting an empty function (before the backend goes) waits for a scrape
  // in progress and drops the families.
  void SetCudaSource(std::function<std::optional<CudaDeviceStats>()> source);

  // BatchObserver.
  void OnQueueDepth(int64_t queued_jobs) override;
  void OnRefused() override;
  void OnBatch(const BatchKey& key, int64_t rows, int64_t jobs,
               absl::Duration compute) override;

  // Running totals for one model, all devices together (what OIP's
  // ModelStatistics reports): requests computed and their end-to-end and
  // queue time, batches run and their compute time.
  struct ModelTotals {
    uint64_t requests = 0;
    double latency_seconds = 0;
    double queue_seconds = 0;
    uint64_t batches = 0;
    double compute_seconds = 0;
    // Each request's share: the compute time of the batch it ran in,
    // summed over requests.
    double request_compute_seconds = 0;
  };
  ModelTotals Totals(const std::string& model);

  prometheus::Registry& registry() { return *registry_; }

  // ---- Implementation details follow; API users need not read. ----
 private:
  Metrics();
  struct StageMetrics {
    prometheus::Histogram* queue_wait;
    prometheus::Histogram* compute;
    prometheus::Histogram* latency;
    prometheus::Histogram* batch_rows;
    prometheus::Histogram* batch_requests;
    prometheus::Counter* bytes_in;
    prometheus::Counter* bytes_out;
    // Σ over requests of their batch's compute time, for Totals().
    std::atomic<int64_t> request_compute_ns{0};
    std::string model;
  };
  StageMetrics* Stage(const std::string& model, const char* device);

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* started_;
  prometheus::Family<prometheus::Counter>* handled_;
  prometheus::Family<prometheus::Histogram>* handling_;
  prometheus::Family<prometheus::Histogram>* queue_wait_;
  prometheus::Family<prometheus::Histogram>* compute_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Family<prometheus::Histogram>* batch_rows_;
  prometheus::Family<prometheus::Histogram>* batch_requests_;
  prometheus::Family<prometheus::Counter>* bytes_in_;
  prometheus::Family<prometheus::Counter>* bytes_out_;
  prometheus::Gauge* queue_depth_;
  prometheus::Gauge* in_flight_;
  prometheus::Counter* queue_refusals_;
  // The series of one inference RPC, by status code where they have one.
  struct InferenceSeries {
    prometheus::Counter* started;
    prometheus::Counter* handled[17];
    prometheus::Histogram* handling;
    prometheus::Counter* answered[17];  // normserve_requests_total
  };
  InferenceSeries inference_[4];
  class CudaCollectable;
  std::shared_ptr<CudaCollectable> cuda_;
  // The process_* families, read from /proc when scraped.
  std::shared_ptr<prometheus::Collectable> process_;

  Mutex mu_;
  // Node map: callers keep pointers to values past the lock.
  absl::node_hash_map<std::string, StageMetrics> stages_ ABSL_GUARDED_BY(mu_);
};

// The device label for a DeviceKind value.
const char* DeviceLabel(int device_kind);

}  // namespace normserve

#endif  // NORMSERVE_SERVER_METRICS_H_
