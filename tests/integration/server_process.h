// Starts the real normserve binary on free ports for integration tests and
// stops it with a signal. Test-only; not thread-safe.
#ifndef NORMSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_
#define NORMSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/normserve_client.h"

namespace normserve::testing {

class ServerProcess {
 public:
  // Starts `binary` with `args` plus --grpc_port=0 --metrics_port=0 and waits
  // for its "listening" line. Aborts the test binary if the server does not
  // come up within 30 s.
  ServerProcess(const std::string& binary, std::vector<std::string> args);
  ~ServerProcess();  // SIGKILL if still running.

  std::string grpc_target() const;
  int grpc_port() const { return grpc_port_; }
  int pid() const { return pid_; }
  // Resident set size of the server process, in bytes (0 if unknown).
  int64_t RssBytes() const;
  int metrics_port() const { return metrics_port_; }

  // Sends `signal` and waits for exit; returns the exit status (the exit
  // code, or 128 + signal if it died of one), or -1 after `timeout_s`.
  int Stop(int signal, int timeout_s);

  // Everything the server printed on stdout and stderr so far.
  std::string Output();

 private:
  int pid_ = -1;
  int out_fd_ = -1;
  std::string output_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

// A plaintext client for `target` with the given call deadline.
std::unique_ptr<NormClient> Connect(const std::string& target,
                                    absl::Duration timeout = absl::Seconds(30));

// GET http://127.0.0.1:port/path; returns the body ("" on failure).
std::string HttpGet(int port, const std::string& path);

// Sum of the samples of metric `name` in Prometheus text `text` whose line
// contains every one of `labels` (e.g. "grpc_code=\"OK\"").
double MetricValue(const std::string& text, const std::string& name,
                   const std::vector<std::string>& labels = {});

// Scrapes /metrics on `port` until metric `name` (with `labels`) is at least
// `at_least`, or `timeout` passes; returns the last scrape. The server
// counts a call (grpc_server_handled_total) when it is done with it, which
// can be just after the client has seen it finish: a test reads such counts
// through this rather than one scrape.
std::string ScrapeUntil(int port, const std::string& name,
                        const std::vector<std::string>& labels, double at_least,
                        absl::Duration timeout = absl::Seconds(10));

}  // namespace normserve::testing

#endif  // NORMSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_
