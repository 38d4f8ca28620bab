// Reading a normserve /metrics endpoint from C++: a plain HTTP/1.0 GET and
// a sum over the samples of one metric. For tools (normbench) and tests.
// Thread-safe; blocking; no retries.
#ifndef NORMSERVE_CLIENT_METRICS_SCRAPE_H_
#define NORMSERVE_CLIENT_METRICS_SCRAPE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace normserve {

// GET http://host:port/path (IPv4 host); the response body when the status
// is 200. UNAVAILABLE when the host does not answer within 2 s (connect,
// send and each read), or answers with another status.
absl::StatusOr<std::string> HttpGetBody(const std::string& host, int port,
                                        const std::string& path);

// Sum of the samples of metric `name` in Prometheus text whose line
// contains every one of `labels` (e.g. "grpc_code=\"OK\"").
double SumMetric(const std::string& text, const std::string& name,
                 const std::vector<std::string>& labels = {});

// True if Prometheus text `text` has a sample of metric `name` (SumMetric
// reads 0 for a metric it does not find).
bool HasSample(const std::string& text, const std::string& name);

}  // namespace normserve

#endif  // NORMSERVE_CLIENT_METRICS_SCRAPE_H_
