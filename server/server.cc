#include "server/server.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/backend.h"
#include "server/internal/mutex.h"
#include "server/internal/status_macros.h"
#include "server/metrics.h"
#include "server/oip_service.h"
#include "server/service.h"

namespace normserve {

struct NormServer::State {
  std::unique_ptr<ModelRegistry> models;
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Backend> cuda_backend;  // null: no usable GPU, or not asked
  absl::Status cuda_unusable;       // why starting it failed (OK: not tried)
  std::unique_ptr<Backend> router;  // by batch device
  std::string device_summary;
  std::unique_ptr<Batcher> batcher;
  std::unique_ptr<NormalizationServiceImpl> service;
  std::unique_ptr<InferenceServiceImpl> oip_service;
  std::unique_ptr<grpc::Server> server;
  int grpc_port = 0;
  Mutex mu;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
  Notification done;

  // The metrics outlive the CUDA backend they read from.
  ~State() {
    if (metrics != nullptr) metrics->SetCudaSource(nullptr);
  }
};

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(
    const TlsOptions& tls) {
  if (tls.cert_path.empty() && tls.key_path.empty()) {
    if (!tls.client_ca_path.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca needs --tls_cert and --tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.cert_path.empty() || tls.key_path.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadFile(tls.cert_path, "--tls_cert"));
  ASSIGN_OR_RETURN(pair.private_key, ReadFile(tls.key_path, "--tls_key"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca_path.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs,
                     ReadFile(tls.client_ca_path, "--tls_client_ca"));
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// Starts the CUDA backend unless it runs already; a failure is kept and
// returned again rather than the device probed twice.
absl::Status EnsureCuda(const ServerOptions& options, NormServer::State* s) {
  if (s->cuda_backend != nullptr || !s->cuda_unusable.ok()) {
    return s->cuda_unusable;
  }
  absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(options.cuda);
  if (!cuda.ok()) {
    s->cuda_unusable = cuda.status();
    return s->cuda_unusable;
  }
  s->cuda_backend = std::move(*cuda);
  return absl::OkStatus();
}

// Starts the CUDA backend when options.device asks for it and a usable GPU
// is there, and makes CUDA the default device then. Fails only for
// DeviceChoice::kCuda without a usable GPU.
absl::Status StartCuda(const ServerOptions& options, NormServer::State* s,
                       DeviceKind* default_device) {
  if (options.device == DeviceChoice::kCpu) {
    s->device_summary = "cpu";
    return absl::OkStatus();
  }
  if (absl::Status cuda = EnsureCuda(options, s); !cuda.ok()) {
    if (options.device == DeviceChoice::kCuda) {
      return absl::FailedPreconditionError(
          absl::StrCat("--device=cuda: ", cuda.message()));
    }
    s->device_summary = absl::StrCat("cpu (auto: ", cuda.message(), ")");
    return absl::OkStatus();
  }
  *default_device = DeviceKind::kCuda;
  s->device_summary = absl::StrCat("cuda (", s->cuda_backend->Describe(), ")");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<NormServer>> NormServer::Create(
    const ServerOptions& options) {
  // Everything that can fail on bad configuration comes before anything
  // that starts threads or binds ports.
  if (options.stream_window.messages <= 0 || options.stream_window.bytes <= 0 ||
      options.max_queued_bytes <= 0) {
    return absl::InvalidArgumentError(
        "stream_window.messages, stream_window.bytes and max_queued_bytes "
        "must be > 0");
  }
  std::shared_ptr<grpc::ServerCredentials> credentials;
  ASSIGN_OR_RETURN(credentials, MakeCredentials(options.tls));
  auto s = std::make_unique<State>();
  ModelRegistry::Options model_options = options.models;
  RETURN_IF_ERROR(StartCuda(options, s.get(), &model_options.default_device));
  ASSIGN_OR_RETURN(s->models, ModelRegistry::Create(model_options));
  // A configured model that asks for CUDA needs a usable GPU: the backend
  // starts for it (under --device=cpu too), or the server does not start,
  // as with --device=cuda, rather than refuse every request to that model.
  for (const Model* m : s->models->models()) {
    if (m->device != DeviceKind::kCuda || s->cuda_backend != nullptr) continue;
    if (absl::Status cuda = EnsureCuda(options, s.get()); !cuda.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model '", m->name, "' (--model_config): device = DEVICE_CUDA, but ",
          cuda.message()));
    }
    s->device_summary =
        absl::StrCat(s->device_summary, "; cuda for model '", m->name, "' (",
                     s->cuda_backend->Describe(), ")");
  }
  ASSIGN_OR_RETURN(s->metrics, Metrics::Create(options.metrics_address));
  if (s->cuda_backend != nullptr) {
    Backend* cuda = s->cuda_backend.get();
    s->metrics->SetCudaSource([cuda] { return cuda->CudaStats(); });
  }
  if (options.batch_workers < 0 || options.cpu_threads <= 0) {
    return absl::InvalidArgumentError(
        "batch_workers must be >= 0 and cpu_threads > 0");
  }
  int batch_workers = options.batch_workers;
  if (batch_workers == 0) {
    batch_workers =
        s->cuda_backend != nullptr ? std::max(1, options.cuda.num_streams) : 1;
  }
  s->pool = std::make_unique<ThreadPool>(
      std::max(0, options.cpu_threads - batch_workers));
  s->backend = MakeCpuBackend(s->pool.get());
  s->router = MakeDeviceRouter(s->backend.get(), s->cuda_backend.get());

  Batcher::Options batcher_options;
  batcher_options.num_workers = batch_workers;
  Backend* backend = s->router.get();
  batcher_options.runner = options.batch_runner_for_benchmarks;
  if (!batcher_options.runner) {
    batcher_options.runner = [backend](absl::Span<Job* const> batch) {
      return backend->Run(batch);
    };
  }
  batcher_options.observer = s->metrics.get();
  batcher_options.max_queued_bytes = options.max_queued_bytes;
  ASSIGN_OR_RETURN(s->batcher, Batcher::Create(std::move(batcher_options)));

  NormalizationServiceImpl::Options service_options;
  service_options.limits = options.limits;
  service_options.limits.max_response_bytes = options.max_message_bytes;
  service_options.stream_window = options.stream_window;
  service_options.devices.cuda = s->cuda_backend != nullptr;
  s->service = std::make_unique<NormalizationServiceImpl>(
      service_options, s->models.get(), s->batcher.get(), s->metrics.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.grpc_address, credentials, &s->grpc_port);
  const ConnectionLimits& limits = options.connection;
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             limits.max_concurrent_streams);
  builder.AddChannelArgument(
      GRPC_ARG_KEEPALIVE_TIME_MS,
      static_cast<int>(absl::ToInt64Milliseconds(limits.keepalive_time)));
  builder.AddChannelArgument(
      GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
      static_cast<int>(absl::ToInt64Milliseconds(limits.keepalive_timeout)));
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      static_cast<int>(
          absl::ToInt64Milliseconds(limits.min_client_ping_interval)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  if (limits.max_connection_age != absl::InfiniteDuration()) {
    builder.AddChannelArgument(
        GRPC_ARG_MAX_CONNECTION_AGE_MS,
        static_cast<int>(absl::ToInt64Milliseconds(limits.max_connection_age)));
  }
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(s->service.get());
  // The Open Inference Protocol on the same port, through the same path.
  s->oip_service = std::make_unique<InferenceServiceImpl>(s->service.get());
  builder.RegisterService(s->oip_service.get());
  s->server = builder.BuildAndStart();
  if (s->server == nullptr || s->grpc_port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "gRPC address ", options.grpc_address, ": cannot listen (in use?)"));
  }
  s->server->GetHealthCheckService()->SetServingStatus(true);
  return std::unique_ptr<NormServer>(new NormServer(std::move(s)));
}

NormServer::NormServer(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

NormServer::~NormServer() { Shutdown(absl::Seconds(5)); }

int NormServer::grpc_port() const { return state_->grpc_port; }
int NormServer::metrics_port() const { return state_->metrics->port(); }
const std::string& NormServer::device_summary() const {
  return state_->device_summary;
}

void NormServer::Shutdown(absl::Duration grace) {
  bool first;
  {
    MutexLock lock(&state_->mu);
    first = !state_->shut_down;
    state_->shut_down = true;
  }
  if (!first) {
    // Another thread drains: return once it has (the destructor must not
    // free the server under it).
    state_->done.WaitForNotification();
    return;
  }
  const absl::Time deadline = absl::Now() + grace;
  // Order matters: stop advertising, refuse new work, finish admitted work,
  // wait for the answers to reach the wire (open streams may go on until
  // the grace runs out), then close the transport. Closing it at once
  // rather than at the deadline matters: idle client connections would
  // otherwise hold the process until the grace period ends.
  state_->server->GetHealthCheckService()->SetServingStatus(false);
  state_->service->StartDraining();
  state_->batcher->Stop(deadline);
  state_->service->WaitForCalls(deadline);
  state_->server->Shutdown(std::chrono::system_clock::now());
  state_->done.Notify();
}

void NormServer::Wait() { state_->done.WaitForNotification(); }

}  // namespace normserve
