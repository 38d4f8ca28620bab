#include "server/metrics.h"

#include <exception>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "civetweb.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/internal/process_stats.h"
#include "server/model_registry.h"

namespace normserve {
namespace {

// A family of one unlabelled counter or gauge.
prometheus::MetricFamily OneValueFamily(const char* name, const char* help,
                                        prometheus::MetricType type,
                                        double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

// The CUDA families, read from the backend when scraped, so that they are
// current also while no batch runs.
class Metrics::CudaCollectable : public prometheus::Collectable {
 public:
  void Set(std::function<std::optional<CudaDeviceStats>()> source) {
    MutexLock lock(&mu_);
    source_ = std::move(source);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    MutexLock lock(&mu_);
    if (!source_) return {};
    const std::optional<CudaDeviceStats> stats = source_();
    if (!stats.has_value()) return {};
    std::vector<prometheus::MetricFamily> families;
    if (stats->memory_total_bytes > 0) {
      families.push_back(
          OneValueFamily("normserve_cuda_memory_used_bytes",
                         "CUDA device memory in use, all processes.",
                         prometheus::MetricType::Gauge,
                         static_cast<double>(stats->memory_used_bytes)));
      families.push_back(
          OneValueFamily("normserve_cuda_memory_total_bytes",
                         "CUDA device memory.", prometheus::MetricType::Gauge,
                         static_cast<double>(stats->memory_total_bytes)));
    }
    if (stats->utilization.has_value()) {
      families.push_back(OneValueFamily(
          "normserve_cuda_utilization_ratio",
          "NVML GPU utilization: fraction of the last sample period in "
          "which a kernel ran, any process.",
          prometheus::MetricType::Gauge, *stats->utilization));
    }
    families.push_back(OneValueFamily(
        "normserve_cuda_busy_seconds_total",
        "Time the CUDA backend had a batch on the GPU (its rate is "
        "the busy fraction; not NVML utilization).",
        prometheus::MetricType::Counter, stats->busy_seconds));
    return families;
  }

 private:
  mutable Mutex mu_;
  std::function<std::optional<CudaDeviceStats>()> source_ ABSL_GUARDED_BY(mu_);
};

namespace {

// The process families (internal/process_stats.h), read when scraped; none
// where /proc cannot be read.
class ProcessCollectable : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    const absl::StatusOr<internal::ProcessStats> s =
        internal::ReadProcessStats();
    if (!s.ok()) return {};
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> families = {
        OneValueFamily("process_cpu_seconds_total",
                       "Total user and system CPU time spent in seconds.",
                       MetricType::Counter, s->cpu_seconds),
        OneValueFamily("process_resident_memory_bytes",
                       "Resident memory size in bytes.", MetricType::Gauge,
                       s->resident_bytes),
        OneValueFamily("process_virtual_memory_bytes",
                       "Virtual memory size in bytes.", MetricType::Gauge,
                       s->virtual_bytes),
        OneValueFamily("process_start_time_seconds",
                       "Start time of the process since unix epoch in "
                       "seconds.",
                       MetricType::Gauge, s->start_time_seconds)};
    if (s->open_fds >= 0) {
      families.push_back(
          OneValueFamily("process_open_fds", "Number of open file descriptors.",
                         MetricType::Gauge, static_cast<double>(s->open_fds)));
    }
    if (s->max_fds >= 0) {
      families.push_back(OneValueFamily(
          "process_max_fds", "Maximum number of open file descriptors.",
          MetricType::Gauge, static_cast<double>(s->max_fds)));
    }
    return families;
  }
};

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {1e-5,   2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
          2.5e-2, 5e-2,   0.1,  0.25, 0.5,    1.0,  2.5,  5.0,    10.0};
}

prometheus::Histogram::BucketBoundaries PowersOfTwo(int max_exponent) {
  prometheus::Histogram::BucketBoundaries b;
  for (int i = 0; i <= max_exponent; ++i)
    b.push_back(static_cast<double>(1 << i));
  return b;
}

// A status code as 0-16 (UNKNOWN, 2, for anything else).
int CodeIndex(int code) { return code < 0 || code > 16 ? 2 : code; }

const char* CodeName(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  return kNames[CodeIndex(code)];
}

}  // namespace

const char* DeviceLabel(int device_kind) {
  return device_kind == static_cast<int>(DeviceKind::kCuda) ? "cuda" : "cpu";
}

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      cuda_(std::make_shared<CudaCollectable>()),
      process_(std::make_shared<ProcessCollectable>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  started_ = &BuildCounter()
                  .Name("grpc_server_started_total")
                  .Help("RPCs started on the server.")
                  .Register(*registry_);
  handled_ = &BuildCounter()
                  .Name("grpc_server_handled_total")
                  .Help("RPCs completed on the server, by status code.")
                  .Register(*registry_);
  handling_ = &BuildHistogram()
                   .Name("grpc_server_handling_seconds")
                   .Help("Time from an RPC's start to its completion.")
                   .Register(*registry_);
  queue_wait_ = &BuildHistogram()
                     .Name("normserve_queue_wait_seconds")
                     .Help("Time a request waited in the batcher's queue.")
                     .Register(*registry_);
  compute_ = &BuildHistogram()
                  .Name("normserve_compute_seconds")
                  .Help("Time to compute one batch.")
                  .Register(*registry_);
  latency_ = &BuildHistogram()
                  .Name("normserve_request_latency_seconds")
                  .Help("Time from a request's arrival to its answer.")
                  .Register(*registry_);
  batch_rows_ = &BuildHistogram()
                     .Name("normserve_batch_rows")
                     .Help("Rows per batch.")
                     .Register(*registry_);
  batch_requests_ = &BuildHistogram()
                         .Name("normserve_batch_requests")
                         .Help("Requests per batch.")
                         .Register(*registry_);
  bytes_in_ = &BuildCounter()
                   .Name("normserve_request_bytes_total")
                   .Help("Tensor bytes received in requests that computed.")
                   .Register(*registry_);
  bytes_out_ = &BuildCounter()
                    .Name("normserve_response_bytes_total")
                    .Help("Tensor bytes sent in responses.")
                    .Register(*registry_);
  queue_depth_ = &BuildGauge()
                      .Name("normserve_queue_depth")
                      .Help("Requests waiting in batcher queues.")
                      .Register(*registry_)
                      .Add({});
  in_flight_ = &BuildGauge()
                    .Name("normserve_requests_in_flight")
                    .Help("Requests accepted and not yet answered.")
                    .Register(*registry_)
                    .Add({});
  queue_refusals_ = &BuildCounter()
                         .Name("normserve_queue_refusals_total")
                         .Help("Requests refused because the queues were full.")
                         .Register(*registry_)
                         .Add({});
  auto& answered =
      BuildCounter()
          .Name("normserve_requests_total")
          .Help(
              "Inference requests answered (unary calls and stream "
              "messages alike), by status code.")
          .Register(*registry_);
  struct Rpc {
    const char* service;
    const char* method;
    const char* type;
  };
  // In InferenceMethod's order.
  const Rpc rpcs[4] = {{kNativeService, "Normalize", "unary"},
                       {kNativeService, "NormalizeStream", "bidi_stream"},
                       {kOipService, "ModelInfer", "unary"},
                       {kOipService, "ModelStreamInfer", "bidi_stream"}};
  for (int m = 0; m < 4; ++m) {
    const std::map<std::string, std::string> labels = {
        {"grpc_service", rpcs[m].service},
        {"grpc_method", rpcs[m].method},
        {"grpc_type", rpcs[m].type}};
    InferenceSeries& series = inference_[m];
    series.started = &started_->Add(labels);
    series.handling = &handling_->Add(labels, LatencyBuckets());
    for (int code = 0; code <= 16; ++code) {
      auto with_code = labels;
      with_code["grpc_code"] = CodeName(code);
      series.handled[code] = &handled_->Add(with_code);
      with_code.erase("grpc_type");
      series.answered[code] = &answered.Add(with_code);
    }
  }
}

Metrics::~Metrics() = default;

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(
    const std::string& listen_address) {
  std::unique_ptr<Metrics> m(new Metrics);
  if (!listen_address.empty()) {
    try {
      // Civetweb's defaults (2 threads, a 30 s read timeout) let two idle
      // connections stall every scrape for 30 s.
      m->exposer_ =
          std::make_unique<prometheus::Exposer>(std::vector<std::string>{
              "listening_ports", listen_address, "num_threads", "8",
              "request_timeout_ms", "3000"});
    } catch (const std::exception& e) {
      // Debian's civetweb, which prometheus-cpp serves with, is built
      // without IPv6 (its feature bit 8).
      const bool no_ipv6 =
          absl::StartsWith(listen_address, "[") && mg_check_feature(8) == 0;
      return absl::UnavailableError(absl::StrCat(
          "metrics address ", listen_address,
          " (--metrics_host, --metrics_port): cannot listen: ",
          no_ipv6 ? "the HTTP library serving /metrics (civetweb) was built "
                    "without IPv6; expected an IPv4 --metrics_host "
                    "(0.0.0.0 for every interface)"
                  : e.what()));
    }
    m->exposer_->RegisterCollectable(m->registry_);
    m->exposer_->RegisterCollectable(m->cuda_);
    m->exposer_->RegisterCollectable(m->process_);
  }
  return m;
}

int Metrics::port() const {
  if (exposer_ == nullptr) return 0;
  const auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void Metrics::RpcStarted(const char* service, const std::string& method,
                         const char* type) {
  started_
      ->Add({{"grpc_service", service},
             {"grpc_method", method},
             {"grpc_type", type}})
      .Increment();
}

void Metrics::RpcHandled(const char* service, const std::string& method,
                         const char* type, int code, absl::Duration elapsed) {
  handled_
      ->Add({{"grpc_service", service},
             {"grpc_method", method},
             {"grpc_type", type},
             {"grpc_code", CodeName(code)}})
      .Increment();
  handling_
      ->Add({{"grpc_service", service},
             {"grpc_method", method},
             {"grpc_type", type}},
            LatencyBuckets())
      .Observe(absl::ToDoubleSeconds(elapsed));
}

Metrics::StageMetrics* Metrics::Stage(const std::string& model,
                                      const char* device) {
  const std::string key = absl::StrCat(model, "\n", device);
  MutexLock lock(&mu_);
  auto it = stages_.find(key);
  if (it != stages_.end()) return &it->second;
  const std::map<std::string, std::string> labels = {{"model", model},
                                                     {"device", device}};
  StageMetrics& s = stages_[key];  // node map: constructed in place
  s.model = model;
  s.queue_wait = &queue_wait_->Add(labels, LatencyBuckets());
  s.compute = &compute_->Add(labels, LatencyBuckets());
  s.latency = &latency_->Add(labels, LatencyBuckets());
  s.batch_rows = &batch_rows_->Add(labels, PowersOfTwo(16));
  s.batch_requests = &batch_requests_->Add(labels, PowersOfTwo(12));
  s.bytes_in = &bytes_in_->Add({{"model", model}});
  s.bytes_out = &bytes_out_->Add({{"model", model}});
  return &s;
}

Metrics::ModelTotals Metrics::Totals(const std::string& model) {
  const auto count_and_sum = [](prometheus::Histogram* h) {
    const prometheus::ClientMetric::Histogram c = h->Collect().histogram;
    return std::make_pair(c.sample_count, c.sample_sum);
  };
  ModelTotals t;
  MutexLock lock(&mu_);
  for (const auto& [key, stage] : stages_) {
    if (stage.model != model) continue;
    const auto [requests, latency] = count_and_sum(stage.latency);
    t.requests += requests;
    t.latency_seconds += latency;
    t.queue_seconds += count_and_sum(stage.queue_wait).second;
    const auto [batches, compute] = count_and_sum(stage.compute);
    t.batches += batches;
    t.compute_seconds += compute;
    t.request_compute_seconds +=
        static_cast<double>(stage.request_compute_ns.load()) * 1e-9;
  }
  return t;
}

void Metrics::RequestDone(const std::string& model, const char* device,
                          bool computed, absl::Duration queue_wait,
                          absl::Duration latency, int64_t bytes_in,
                          int64_t bytes_out) {
  StageMetrics* s = Stage(model, device);
  s->queue_wait->Observe(absl::ToDoubleSeconds(queue_wait));
  if (!computed) return;
  s->latency->Observe(absl::ToDoubleSeconds(latency));
  s->bytes_in->Increment(static_cast<double>(bytes_in));
  s->bytes_out->Increment(static_cast<double>(bytes_out));
}

void Metrics::InFlightAdd(int delta) { in_flight_->Increment(delta); }

void Metrics::RpcStarted(InferenceMethod method) {
  inference_[static_cast<int>(method)].started->Increment();
}

void Metrics::RpcHandled(InferenceMethod method, int code,
                         absl::Duration elapsed) {
  InferenceSeries& series = inference_[static_cast<int>(method)];
  series.handled[CodeIndex(code)]->Increment();
  series.handling->Observe(absl::ToDoubleSeconds(elapsed));
}

void Metrics::RequestAnswered(InferenceMethod method, int code) {
  inference_[static_cast<int>(method)].answered[CodeIndex(code)]->Increment();
}

void Metrics::OnRefused() { queue_refusals_->Increment(); }

void Metrics::SetCudaSource(
    std::function<std::optional<CudaDeviceStats>()> source) {
  cuda_->Set(std::move(source));
}

void Metrics::OnQueueDepth(int64_t queued_jobs) {
  queue_depth_->Set(static_cast<double>(queued_jobs));
}

void Metrics::OnBatch(const BatchKey& key, int64_t rows, int64_t jobs,
                      absl::Duration compute) {
  StageMetrics* s = Stage(key.model, DeviceLabel(key.device));
  s->compute->Observe(absl::ToDoubleSeconds(compute));
  s->batch_rows->Observe(static_cast<double>(rows));
  s->batch_requests->Observe(static_cast<double>(jobs));
  s->request_compute_ns.fetch_add(jobs * absl::ToInt64Nanoseconds(compute));
}

}  // namespace normserve
