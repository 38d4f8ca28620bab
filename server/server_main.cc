#include "server/server_main.h"

#include <csignal>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/internal/cpu_limit.h"
#include "server/server.h"

ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address to listen on for gRPC and metrics; 0.0.0.0 for all "
          "interfaces (containers, Kubernetes); IPv6 as :: or [::] (gRPC "
          "only: the metrics endpoint needs an IPv4 --metrics_host).");
ABSL_FLAG(int64_t, grpc_port, 8001, "gRPC port (0 picks a free one).");
ABSL_FLAG(int64_t, metrics_port, 8002,
          "Prometheus /metrics HTTP port (0 picks a free one).");
ABSL_FLAG(std::string, model_config, "",
          "Model config file (protobuf text, normserve.v1.ModelConfigList). "
          "Empty: only the default model, which takes epsilon/gamma/beta "
          "from each request.");
ABSL_FLAG(int64_t, max_batch_rows, 256,
          "A batch closes when its rows reach this (per-model override in "
          "the model config).");
ABSL_FLAG(int64_t, max_queue_delay_us, 0,
          "Longest a request waits for others to batch with. 0: no waiting; "
          "requests that queue while the workers are busy still share "
          "batches.");
ABSL_FLAG(int64_t, max_queue_requests, 1024,
          "Requests a queue holds before answering RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, batch_workers, 0,
          "Threads forming and running batches (each CPU batch is split "
          "across --cpu_threads). 0: one, or one per CUDA stream when the "
          "CUDA backend runs, so that batches overlap on the GPU.");
ABSL_FLAG(int64_t, cpu_threads, 0,
          "Threads computing at most, all batches together; 0 means one per "
          "CPU this process may use (its affinity mask, capped by a cgroup "
          "CPU quota such as a container's CPU limit).");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20,
          "Largest gRPC message accepted or sent.");
ABSL_FLAG(int64_t, max_elements, int64_t{1} << 24,
          "Largest input tensor, in elements.");
ABSL_FLAG(int64_t, max_rank, 8, "Largest input tensor rank.");
ABSL_FLAG(int64_t, max_queued_bytes, int64_t{4} << 30,
          "Bytes of requests (inputs and outputs, plus 16 KiB each for "
          "the call) queued over all queues before answering "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, stream_window_messages, 1024,
          "A stream reads no further message while this many of its messages "
          "are being computed or wait for the client to take their answers.");
ABSL_FLAG(int64_t, stream_window_bytes, int64_t{64} << 20,
          "The same, in bytes: of each message or of its answer, whichever "
          "is larger (one message is always read).");
ABSL_FLAG(std::string, metrics_host, "",
          "Address for the metrics endpoint; empty means --host.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require client certificates signed by it (mTLS).");
ABSL_FLAG(int64_t, max_concurrent_streams, 100,
          "Concurrent calls per client connection.");
ABSL_FLAG(int64_t, keepalive_time_ms, 120000,
          "Ping idle connections after this long; drop them if unanswered.");
ABSL_FLAG(int64_t, keepalive_timeout_ms, 20000,
          "How long a keepalive ping may go unanswered.");
ABSL_FLAG(int64_t, min_client_ping_interval_ms, 10000,
          "Clients pinging more often than this are disconnected.");
ABSL_FLAG(int64_t, max_connection_age_ms, 0,
          "Send GOAWAY to connections older than this (gRPC adds +-10% "
          "jitter): clients reconnect and re-resolve the server's name, so "
          "new replicas get traffic. Running calls and streams finish. 0: "
          "never.");
ABSL_FLAG(std::string, device, "auto",
          "Default device of the default model (and of models that name "
          "none): cpu, cuda (startup fails without a usable GPU) or auto "
          "(CUDA when a usable GPU is found, else CPU). Requests may still "
          "ask for DEVICE_CPU, or DEVICE_CUDA when the GPU is in use.");
ABSL_FLAG(int64_t, shutdown_grace_ms, 30000,
          "On SIGTERM/SIGINT: how long to let admitted requests finish.");

namespace normserve {

namespace {

// Every request and response buffer is allocated and freed per call. With
// glibc's defaults, buffers over 128 KiB (and heap tops over 128 KiB) go
// back to the kernel when freed, so a 1 MiB request costs page faults and
// page clearing on every call: a profile of 64x4096 float32 traffic spent
// more time there than in the kernel and the copies together. Keeping freed
// memory for reuse (up to 256 MiB idle) removes that; the ceiling on what
// is in use still comes from the queue bound and the message size limit.
void KeepFreedMemoryForReuse() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

// The first numeric flag outside the range the server accepts, as
// "--flag=value: expected ...", or nullopt when all are in range. Checked
// before anything starts: a port of 70000 would otherwise be taken modulo
// 65536, and a keepalive over 2^31 ms would wrap in gRPC's int arguments.
std::optional<std::string> FlagOutOfRange() {
  constexpr int64_t kNoMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  struct Range {
    const char* name;
    int64_t value;
    int64_t min;
    int64_t max;
  };
  const Range ranges[] = {
      {"grpc_port", absl::GetFlag(FLAGS_grpc_port), 0, 65535},
      {"metrics_port", absl::GetFlag(FLAGS_metrics_port), 0, 65535},
      {"max_batch_rows", absl::GetFlag(FLAGS_max_batch_rows), 1, kNoMax},
      {"max_queue_delay_us", absl::GetFlag(FLAGS_max_queue_delay_us), 0,
       kNoMax},
      {"max_queue_requests", absl::GetFlag(FLAGS_max_queue_requests), 1,
       kNoMax},
      {"batch_workers", absl::GetFlag(FLAGS_batch_workers), 0, kIntMax},
      {"cpu_threads", absl::GetFlag(FLAGS_cpu_threads), 0, kIntMax},
      // Below 4 KiB not even a small request's response fits beside its
      // framing (kResponseFramingBytes).
      {"max_message_bytes", absl::GetFlag(FLAGS_max_message_bytes), 4096,
       kIntMax},
      // Bytes computed from element counts (× 8 at most) stay far from
      // overflow.
      {"max_elements", absl::GetFlag(FLAGS_max_elements), 1, int64_t{1} << 40},
      {"max_rank", absl::GetFlag(FLAGS_max_rank), 1, kIntMax},
      {"max_queued_bytes", absl::GetFlag(FLAGS_max_queued_bytes), 1, kNoMax},
      {"stream_window_messages", absl::GetFlag(FLAGS_stream_window_messages), 1,
       kNoMax},
      {"stream_window_bytes", absl::GetFlag(FLAGS_stream_window_bytes), 1,
       kNoMax},
      {"max_concurrent_streams", absl::GetFlag(FLAGS_max_concurrent_streams), 1,
       kIntMax},
      {"keepalive_time_ms", absl::GetFlag(FLAGS_keepalive_time_ms), 1, kIntMax},
      {"keepalive_timeout_ms", absl::GetFlag(FLAGS_keepalive_timeout_ms), 1,
       kIntMax},
      {"min_client_ping_interval_ms",
       absl::GetFlag(FLAGS_min_client_ping_interval_ms), 0, kIntMax},
      {"max_connection_age_ms", absl::GetFlag(FLAGS_max_connection_age_ms), 0,
       kIntMax},
      {"shutdown_grace_ms", absl::GetFlag(FLAGS_shutdown_grace_ms), 0, kNoMax},
  };
  for (const Range& r : ranges) {
    if (r.value >= r.min && r.value <= r.max) continue;
    return r.max == kNoMax ? absl::StrCat("--", r.name, "=", r.value,
                                          ": expected >= ", r.min)
                           : absl::StrCat("--", r.name, "=", r.value,
                                          ": expected ", r.min, " to ", r.max);
  }
  return std::nullopt;
}

// "host:port", with an IPv6 literal in brackets ("::1" → "[::1]:8001"), as
// gRPC and civetweb parse addresses.
std::string HostPort(const std::string& host, int64_t port) {
  const bool bare_ipv6 =
      absl::StrContains(host, ':') && !absl::StartsWith(host, "[");
  return bare_ipv6 ? absl::StrCat("[", host, "]:", port)
                   : absl::StrCat(host, ":", port);
}

// The address a client on this machine reaches a server listening on
// `host` at: loopback for a wildcard address.
std::string LocalTarget(const std::string& host, int port) {
  if (host == "0.0.0.0") return HostPort("127.0.0.1", port);
  if (host == "::" || host == "[::]") return HostPort("::1", port);
  return HostPort(host, port);
}

}  // namespace

int ServerMain(int argc, char** argv, const MainOptions& main_options) {
  // Abseil's --help lists the flags of the binary's own main file
  // (normserve_main.cc, echo_server.cc), which define none: it would say
  // "No flags matched". The flags are here.
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/server_main.cc");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(main_options.usage);
  absl::ParseCommandLine(argc, argv);
  if (std::optional<std::string> error = FlagOutOfRange()) {
    std::fprintf(stderr, "normserve: %s\n", error->c_str());
    return 2;
  }
  KeepFreedMemoryForReuse();
  // Debian's Abseil keeps absl::Mutex's deadlock detector on, which gRPC's
  // locks then pay for on every call (its graph bookkeeping was ~3% of the
  // server's CPU under small-request load). Our own locks are checked by
  // the ThreadSanitizer build and the thread-safety annotations instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ServerOptions options;
  options.batch_runner_for_benchmarks = main_options.batch_runner;
  const std::string host = absl::GetFlag(FLAGS_host);
  options.grpc_address = HostPort(host, absl::GetFlag(FLAGS_grpc_port));
  const std::string metrics_host = absl::GetFlag(FLAGS_metrics_host).empty()
                                       ? host
                                       : absl::GetFlag(FLAGS_metrics_host);
  options.metrics_address =
      HostPort(metrics_host, absl::GetFlag(FLAGS_metrics_port));
  options.tls.cert_path = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key_path = absl::GetFlag(FLAGS_tls_key);
  options.tls.client_ca_path = absl::GetFlag(FLAGS_tls_client_ca);
  // The int-sized flags below were range-checked by FlagOutOfRange().
  options.connection.max_concurrent_streams =
      static_cast<int>(absl::GetFlag(FLAGS_max_concurrent_streams));
  options.connection.keepalive_time =
      absl::Milliseconds(absl::GetFlag(FLAGS_keepalive_time_ms));
  options.connection.keepalive_timeout =
      absl::Milliseconds(absl::GetFlag(FLAGS_keepalive_timeout_ms));
  options.connection.min_client_ping_interval =
      absl::Milliseconds(absl::GetFlag(FLAGS_min_client_ping_interval_ms));
  if (const int64_t age = absl::GetFlag(FLAGS_max_connection_age_ms); age > 0) {
    options.connection.max_connection_age = absl::Milliseconds(age);
  }
  options.models.config_path = absl::GetFlag(FLAGS_model_config);
  options.models.default_batching.max_batch_rows =
      absl::GetFlag(FLAGS_max_batch_rows);
  options.models.default_batching.max_queue_delay =
      absl::Microseconds(absl::GetFlag(FLAGS_max_queue_delay_us));
  options.models.default_batching.max_queue_requests =
      absl::GetFlag(FLAGS_max_queue_requests);
  options.batch_workers = static_cast<int>(absl::GetFlag(FLAGS_batch_workers));
  options.cpu_threads = static_cast<int>(absl::GetFlag(FLAGS_cpu_threads));
  if (options.cpu_threads == 0) options.cpu_threads = internal::AvailableCpus();
  options.max_message_bytes =
      static_cast<int>(absl::GetFlag(FLAGS_max_message_bytes));
  options.limits.max_elements = absl::GetFlag(FLAGS_max_elements);
  options.limits.max_rank = static_cast<int>(absl::GetFlag(FLAGS_max_rank));
  options.max_queued_bytes = absl::GetFlag(FLAGS_max_queued_bytes);
  options.stream_window.messages = absl::GetFlag(FLAGS_stream_window_messages);
  options.stream_window.bytes = absl::GetFlag(FLAGS_stream_window_bytes);
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device == "cpu") {
    options.device = DeviceChoice::kCpu;
  } else if (device == "cuda") {
    options.device = DeviceChoice::kCuda;
  } else if (device == "auto") {
    options.device = DeviceChoice::kAuto;
  } else {
    std::fprintf(stderr, "normserve: --device=%s: expected cpu, cuda or auto\n",
                 device.c_str());
    return 2;
  }

  auto server = NormServer::Create(options);
  if (!server.ok()) {
    std::fprintf(stderr, "normserve: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  // Tests and scripts parse this line for the bound ports.
  std::printf("%s listening grpc=%s metrics=%s tls=%s\n", main_options.name,
              HostPort(host, (*server)->grpc_port()).c_str(),
              HostPort(metrics_host, (*server)->metrics_port()).c_str(),
              options.tls.cert_path.empty()
                  ? "off"
                  : (options.tls.client_ca_path.empty() ? "on" : "mutual"));
  // After the listening line, which scripts read first.
  std::printf("normserve device=%s\n", (*server)->device_summary().c_str());
  std::printf("First request: build/client/normctl --server=%s --shape=2,768\n",
              LocalTarget(host, (*server)->grpc_port()).c_str());
  std::fflush(stdout);

  int signal = 0;
  sigwait(&stop_signals, &signal);
  std::printf("normserve: signal %d, draining\n", signal);
  std::fflush(stdout);
  (*server)->Shutdown(
      absl::Milliseconds(absl::GetFlag(FLAGS_shutdown_grace_ms)));
  std::printf("normserve: stopped\n");
  std::fflush(stdout);
#if defined(__SANITIZE_ADDRESS__)
  // _Exit skips LeakSanitizer's exit-time check: run it here. Live objects
  // (the server, reachable from this frame) are not leaks.
  __lsan_do_leak_check();
#endif
  // Every call is answered and the transport is closed. Tearing down the
  // metrics HTTP server (civetweb) would block for its poll interval (about
  // 2 s) with nothing left to flush, so exit without destructors.
  std::_Exit(0);
}

}  // namespace normserve
