// A running normserve server: the gRPC service (with health and
// reflection), the batcher, the CPU backend, the model registry and the
// metrics endpoint, wired together.
//
// Lifecycle
//   Create() binds both ports and starts serving; health reports SERVING.
//   Shutdown() drains: health turns NOT_SERVING, new calls get UNAVAILABLE,
//   every admitted request is computed and answered, then the gRPC server
//   stops (calls still open after `grace` are cancelled). Wait() blocks
//   until Shutdown() has finished.
//
// Errors: Create() fails with the status of the piece that could not start
// (a bad model config, a port in use).
//
// Threading: Shutdown() and Wait() may be called from any thread; a second
// Shutdown() returns once the first has finished.
#ifndef NORMSERVE_SERVER_SERVER_H_
#define NORMSERVE_SERVER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/backend.h"
#include "server/batcher.h"
#include "server/model_registry.h"
#include "server/request_decoder.h"
#include "server/service.h"

namespace normserve {

// Transport security for gRPC. Empty paths: plaintext.
struct TlsOptions {
  std::string cert_path;  // PEM certificate chain of the server
  std::string key_path;   // PEM private key
  // PEM CA bundle: when set, clients must present a certificate signed by
  // it (mutual TLS); others are refused during the handshake.
  std::string client_ca_path;
};

// Connection-level limits, all enforced by gRPC itself.
struct ConnectionLimits {
  // Concurrent calls (streams) per HTTP/2 connection.
  int max_concurrent_streams = 100;
  // Server pings an idle connection after this long and closes it when the
  // ping is not answered within keepalive_timeout.
  absl::Duration keepalive_time = absl::Minutes(2);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  // Shortest interval between client pings the server tolerates (clients
  // pinging faster are disconnected with ENHANCE_YOUR_CALM).
  absl::Duration min_client_ping_interval = absl::Seconds(10);
  // A connection older than this (±10 %, gRPC's jitter) is sent GOAWAY:
  // clients open a new one, re-resolving the server's name, so that pods
  // added behind a headless Service get traffic. Calls already running
  // (streams included) finish on the old connection. Infinite: never.
  absl::Duration max_connection_age = absl::InfiniteDuration();
};

// Where work runs when neither the request nor its model names a device.
enum class DeviceChoice {
  kCpu,   // CPU only; the GPU is never touched
  kCuda,  // CUDA; Create() fails without a usable GPU
  kAuto,  // CUDA when a usable GPU is found, else CPU
};

struct ServerOptions {
  // "host:port" for gRPC; port 0 picks a free port.
  std::string grpc_address = "127.0.0.1:8001";
  // "host:port" for Prometheus /metrics; port 0 picks a free port.
  std::string metrics_address = "127.0.0.1:8002";
  ModelRegistry::Options models;
  ValidationLimits limits;
  StreamWindow stream_window;
  // Largest gRPC message accepted (and sent).
  int max_message_bytes = 64 << 20;
  // Bytes of requests (inputs and output buffers) queued over all queues
  // at most (Batcher::Options::max_queued_bytes).
  int64_t max_queued_bytes = int64_t{4} << 30;
  TlsOptions tls;
  ConnectionLimits connection;
  // Batcher worker threads: batches run concurrently, one per worker.
  // 0: one, or CudaBackendOptions::num_streams when the CUDA backend runs
  // (a batch per stream can be on the GPU at once).
  int batch_workers = 0;
  // Threads computing at most, all batches together (batch workers
  // included): the kernel pool gets cpu_threads − batch_workers threads.
  int cpu_threads = 1;
  // The default device. With kCuda or kAuto and a usable GPU, the CUDA
  // backend runs, the default model (and every model without a device of
  // its own) runs on it, and requests may ask for DEVICE_CPU or
  // DEVICE_CUDA; otherwise DEVICE_CUDA requests get FAILED_PRECONDITION.
  DeviceChoice device = DeviceChoice::kCpu;
  // The CUDA backend's device ordinal, streams and staging buffers.
  CudaBackendOptions cuda;
  // Benchmarks only, never a flag: when set, runs every batch instead of
  // the device backends. bench/echo_server.cc uses it to measure what
  // gRPC, decoding, validation and batching cost without the math.
  BatchRunner batch_runner_for_benchmarks;
};

class NormServer {
 public:
  static absl::StatusOr<std::unique_ptr<NormServer>> Create(
      const ServerOptions& options);
  ~NormServer();

  int grpc_port() const;
  int metrics_port() const;
  // The default device and why, for the startup log: "cpu",
  // "cuda (NVIDIA H100 80GB HBM3 (sm_90))", or "cpu (auto: no CUDA
  // device: …)".
  const std::string& device_summary() const;

  // Drains and stops; idempotent.
  void Shutdown(absl::Duration grace);
  void Wait();

  // ---- Implementation details follow; API users need not read. ----
  struct State;

 private:
  explicit NormServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVER_SERVER_H_
