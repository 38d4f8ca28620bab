// normbench: a perf_analyzer-style load generator for normserve.
//
//   normbench --concurrency=1:64:x2 --shape=1,768 --duration_s=5
//   normbench --request_rate=1000:16000:x2 --arrival=poisson
//
// Closed loop (--concurrency): for each level it warms up, then runs that
// many callers back to back (unary calls, or one stream per caller with
// --mode=stream) for --duration_s or --requests per caller.
//
// Open loop (--request_rate): unary calls are sent on a schedule, at a
// constant interval or with Poisson (exponential) gaps, whether or not
// earlier calls have been answered, and each latency counts from the
// scheduled send time, so a server that falls behind shows its queueing
// instead of slowing the client down (no coordinated omission). At most
// --max_outstanding calls are in flight; a scheduled call beyond that is
// not sent and counts as the error CLIENT_SATURATED.
//
// --protocol=oip sends the same tensors through the Open Inference
// Protocol (ModelInfer, ModelStreamInfer) instead of the native API.
// --connections=N spreads the calls over N connections instead of one.
//
// Each step reports throughput (requests/s, rows/s, tensor bytes/s),
// client-side latency percentiles, errors by status code and the server's
// stage breakdown from /metrics: a table on stdout (progress on stderr), or
// --json / --csv. It always stops by itself, and targets loopback by
// default. Exit status 1 when a step got no answer at all (a wrong model,
// a server that is down): such a step's figures measure nothing.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <sys/prctl.h>
#endif
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/metrics_scrape.h"
#include "client/normserve_client.h"
#include "inference/grpc_service.grpc.pb.h"

ABSL_FLAG(std::string, server, "127.0.0.1:8001", "Server address host:port.");
ABSL_FLAG(std::string, mode, "unary", "unary or stream.");
ABSL_FLAG(std::string, protocol, "native",
          "native (normserve.v1) or oip (the Open Inference Protocol's "
          "ModelInfer / ModelStreamInfer on the same port).");
ABSL_FLAG(std::string, concurrency, "1:16:x2",
          "Callers: N, or a sweep FROM:TO:xFACTOR (e.g. 1:64:x2).");
ABSL_FLAG(std::string, request_rate, "",
          "Open loop instead: requests/s, R or a sweep FROM:TO:xFACTOR "
          "(unary only).");
ABSL_FLAG(std::string, arrival, "poisson",
          "Open loop arrivals: poisson or constant.");
ABSL_FLAG(int, connections, 1,
          "gRPC connections the calls share, each its own TCP connection: "
          "caller i (open loop: call i) uses connection i mod N. One "
          "connection carries every call in order over one stream of bytes, "
          "which can bound large requests before the server does.");
ABSL_FLAG(int, max_outstanding, 1024,
          "Open loop: calls in flight at most (beyond: CLIENT_SATURATED).");
ABSL_FLAG(int, seed, 1, "Seed of the input values and the arrival times.");
ABSL_FLAG(std::string, shape, "1,768", "Input shape.");
ABSL_FLAG(std::string, dtype, "float32", "float32, float16 or bfloat16.");
ABSL_FLAG(std::string, model, "", "Model name; empty: the default model.");
ABSL_FLAG(double, duration_s, 3.0, "Seconds per step (when --requests=0).");
ABSL_FLAG(int64_t, requests, 0,
          "Requests per caller per step; 0: use --duration_s.");
ABSL_FLAG(double, warmup_s, 0.5, "Warm-up seconds before each step.");
ABSL_FLAG(bool, json, false, "Print JSON lines instead of a table.");
ABSL_FLAG(bool, csv, false, "Print CSV instead of a table.");
ABSL_FLAG(std::string, metrics, "127.0.0.1:8002",
          "The server's metrics endpoint (IPv4:port), read before and after "
          "each step for the server-side stage breakdown; empty to skip.");

namespace normserve {
namespace {

// Server-side mean time per stage over a step, from /metrics deltas, and
// the server process's CPU time over the step (process_cpu_seconds_total;
// cpu_valid false where the server does not export it).
struct Stages {
  bool valid = false;
  double queue_ms = 0, compute_ms = 0, end_to_end_ms = 0;
  bool cpu_valid = false;
  double cpu_seconds = 0;
  double cpu_window_seconds = 0;  // between the two reads of it
};

constexpr char kCpuMetric[] = "process_cpu_seconds_total";

std::string Scrape() {
  const std::string target = absl::GetFlag(FLAGS_metrics);
  const size_t colon = target.rfind(':');
  int port = 0;
  if (target.empty() || colon == std::string::npos ||
      !absl::SimpleAtoi(target.substr(colon + 1), &port)) {
    return "";
  }
  auto body = HttpGetBody(target.substr(0, colon), port, "/metrics");
  return body.ok() ? *body : "";
}

// The server's stages between two scrapes of /metrics, the first ending at
// `before_time` and the second starting at `after_time`.
Stages StageDelta(const std::string& before, absl::Time before_time,
                  const std::string& after, absl::Time after_time) {
  Stages s;
  if (before.empty() || after.empty()) return s;
  auto mean_ms = [&](const std::string& family) {
    const double sum =
        SumMetric(after, family + "_sum") - SumMetric(before, family + "_sum");
    const double n = SumMetric(after, family + "_count") -
                     SumMetric(before, family + "_count");
    return n > 0 ? 1e3 * sum / n : 0.0;
  };
  s.valid = true;
  s.queue_ms = mean_ms("normserve_queue_wait_seconds");
  s.compute_ms = mean_ms("normserve_compute_seconds");
  s.end_to_end_ms = mean_ms("normserve_request_latency_seconds");
  s.cpu_valid = HasSample(before, kCpuMetric) && HasSample(after, kCpuMetric);
  if (s.cpu_valid) {
    s.cpu_seconds =
        SumMetric(after, kCpuMetric) - SumMetric(before, kCpuMetric);
    s.cpu_window_seconds = absl::ToDoubleSeconds(after_time - before_time);
  }
  return s;
}

// A server-side column for --json or --csv: `missing` where /metrics could
// not be read (not a 0 that reads as a measurement).
std::string ServerColumn(const Stages& stages, double ms, const char* missing) {
  return stages.valid ? absl::StrFormat("%.4f", ms) : std::string(missing);
}

// The server's CPU cores in use over a step: its CPU time over the wall
// time between the scrapes that read it; `missing` where unknown.
std::string CpuColumn(const Stages& stages, const char* missing) {
  return stages.cpu_valid && stages.cpu_window_seconds > 0
             ? absl::StrFormat("%.3f",
                               stages.cpu_seconds / stages.cpu_window_seconds)
             : std::string(missing);
}

struct Step {
  Stages stages;
  int concurrency = 0;  // closed loop
  double rate = 0;      // open loop: the target requests/s
  double seconds = 0;
  int64_t ok = 0;
  std::map<std::string, int64_t> errors;
  std::vector<double> latencies_ms;
};

// The nearest-rank percentile: the smallest value with at least p of the
// values at or below it (p99 of 100 values is the 99th, not the largest).
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(p * static_cast<double>(sorted.size()));
  const size_t i = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(sorted.size() - 1, i)];
}

// What a caller sends, in the protocol chosen, and its connections.
struct Target {
  std::vector<std::unique_ptr<NormClient>> clients;  // one per connection
  // The Open Inference Protocol's stubs, one per client; empty: native.
  std::vector<std::unique_ptr<inference::GRPCInferenceService::Stub>> oip;
  v1::NormalizeRequest request;
  inference::ModelInferRequest oip_request;

  bool use_oip() const { return !oip.empty(); }
  // The native and OIP stubs of connection i mod the connections.
  v1::NormalizationService::Stub* native(size_t i) const {
    return clients[i % clients.size()]->stub();
  }
  inference::GRPCInferenceService::Stub* oip_stub(size_t i) const {
    return oip[i % oip.size()].get();
  }
};

// The Open Inference Protocol twin of a native request (raw contents).
inference::ModelInferRequest ToOip(const v1::NormalizeRequest& r) {
  inference::ModelInferRequest o;
  o.set_model_name(r.model().empty() ? "default" : r.model());
  auto* in = o.add_inputs();
  in->set_name("input");
  in->set_datatype(r.input().dtype() == v1::DATA_TYPE_FLOAT16    ? "FP16"
                   : r.input().dtype() == v1::DATA_TYPE_BFLOAT16 ? "BF16"
                                                                 : "FP32");
  in->mutable_shape()->CopyFrom(r.input().shape());
  o.add_raw_input_contents(r.input().data());
  return o;
}

std::chrono::system_clock::time_point CallDeadline() {
  return std::chrono::system_clock::now() + std::chrono::seconds(30);
}

// One caller: sends until `stop` or `limit` requests, recording latencies
// of answered calls (after `measure` becomes true) and error codes.
void Caller(const Target* target, size_t index, bool stream, int64_t limit,
            const std::atomic<bool>& stop, const std::atomic<bool>& measure,
            std::vector<double>* latencies,
            std::map<std::string, int64_t>* errors, int64_t* ok) {
  const bool oip = target->use_oip();
  // A stream's calls have the same bound as unary ones: a server that stops
  // answering ends the stream (UNAVAILABLE/DEADLINE_EXCEEDED) instead of
  // leaving this caller blocked in Read. With --requests, each request
  // gets 10 ms more.
  const absl::Duration stream_timeout =
      absl::Seconds(30) +
      absl::Seconds(absl::GetFlag(FLAGS_warmup_s) +
                    absl::GetFlag(FLAGS_duration_s)) +
      absl::Milliseconds(10) * limit;
  grpc::ClientContext stream_context;
  std::unique_ptr<grpc::ClientReaderWriter<v1::NormalizeStreamRequest,
                                           v1::NormalizeStreamResponse>>
      rw;
  std::unique_ptr<grpc::ClientReaderWriter<inference::ModelInferRequest,
                                           inference::ModelStreamInferResponse>>
      oip_rw;
  v1::NormalizeStreamRequest msg;
  if (stream && !oip) *msg.mutable_request() = target->request;
  if (stream) {
    stream_context.set_deadline(std::chrono::system_clock::now() +
                                absl::ToChronoMilliseconds(stream_timeout));
    if (oip) {
      oip_rw = target->oip_stub(index)->ModelStreamInfer(&stream_context);
    } else {
      rw = target->native(index)->NormalizeStream(&stream_context);
    }
  }
  // A broken stream (the server gone, or the deadline passed) counts once,
  // with its status, and ends this caller: every later write would fail at
  // once and count again.
  bool broken = false;
  const auto broken_stream = [&] {
    const grpc::Status status = oip ? oip_rw->Finish() : rw->Finish();
    oip_rw.reset();
    rw.reset();
    broken = true;
    return status.ok() ? static_cast<int>(grpc::StatusCode::UNAVAILABLE)
                       : static_cast<int>(status.error_code());
  };
  const int kUnknown = static_cast<int>(grpc::StatusCode::UNKNOWN);
  int64_t sent = 0;
  while (!broken && !stop.load() && (limit == 0 || sent < limit)) {
    const absl::Time start = absl::Now();
    int code;
    if (stream && oip) {
      inference::ModelStreamInferResponse answer;
      if (!oip_rw->Write(target->oip_request) || !oip_rw->Read(&answer)) {
        code = broken_stream();
      } else {
        // The stream carries errors as text only.
        code = answer.error_message().empty() ? 0 : kUnknown;
      }
    } else if (stream) {
      v1::NormalizeStreamResponse answer;
      if (!rw->Write(msg) || !rw->Read(&answer)) {
        code = broken_stream();
      } else {
        code = answer.status_code();
      }
    } else if (oip) {
      inference::ModelInferResponse response;
      grpc::ClientContext call;
      call.set_deadline(CallDeadline());
      code = static_cast<int>(
          target->oip_stub(index)
              ->ModelInfer(&call, target->oip_request, &response)
              .error_code());
    } else {
      v1::NormalizeResponse response;
      grpc::ClientContext call;
      call.set_deadline(CallDeadline());
      code = static_cast<int>(target->native(index)
                                  ->Normalize(&call, target->request, &response)
                                  .error_code());
    }
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    if (!measure.load() && !broken) continue;
    ++sent;
    if (code == 0) {
      ++*ok;
      latencies->push_back(ms);
    } else {
      ++(*errors)[absl::StatusCodeToString(
          static_cast<absl::StatusCode>(code))];
    }
  }
  if (oip_rw != nullptr) {
    oip_rw->WritesDone();
    oip_rw->Finish();
  } else if (rw != nullptr) {
    rw->WritesDone();
    rw->Finish();
  }
}

Step RunStep(const Target& target, bool stream, int concurrency) {
  // Without a warm-up every call counts, so that counts match the server's.
  std::atomic<bool> stop{false}, measure{absl::GetFlag(FLAGS_warmup_s) <= 0};
  std::vector<std::vector<double>> latencies(static_cast<size_t>(concurrency));
  std::vector<std::map<std::string, int64_t>> errors(
      static_cast<size_t>(concurrency));
  std::vector<int64_t> ok(static_cast<size_t>(concurrency), 0);
  const int64_t limit = absl::GetFlag(FLAGS_requests);
  std::vector<std::thread> threads;
  for (int i = 0; i < concurrency; ++i) {
    threads.emplace_back(Caller, &target, static_cast<size_t>(i), stream, limit,
                         std::cref(stop), std::cref(measure), &latencies[i],
                         &errors[i], &ok[i]);
  }
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_warmup_s)));
  const std::string before = Scrape();
  const absl::Time start = absl::Now();  // the scrape's end
  measure = true;
  if (limit == 0) {
    const absl::Duration length =
        absl::Seconds(absl::GetFlag(FLAGS_duration_s));
    while (absl::Now() - start < length) {
      absl::SleepFor(absl::Milliseconds(200));
      int64_t done = 0;
      for (int64_t n : ok) done += n;
      std::fprintf(stderr, "\rconcurrency %d: %.1f s, %lld answered   ",
                   concurrency, absl::ToDoubleSeconds(absl::Now() - start),
                   static_cast<long long>(done));
    }
    stop = true;
  }
  for (auto& t : threads) t.join();
  const absl::Time end = absl::Now();
  std::fprintf(stderr, "\r%60s\r", "");
  Step step;
  step.stages = StageDelta(before, start, Scrape(), end);
  step.concurrency = concurrency;
  step.seconds = absl::ToDoubleSeconds(end - start);
  for (int i = 0; i < concurrency; ++i) {
    step.ok += ok[i];
    step.latencies_ms.insert(step.latencies_ms.end(), latencies[i].begin(),
                             latencies[i].end());
    for (const auto& [code, n] : errors[i]) step.errors[code] += n;
  }
  std::sort(step.latencies_ms.begin(), step.latencies_ms.end());
  return step;
}

// One open-loop step: `rate` calls/s for warm-up + duration, latencies
// measured from each call's scheduled time.
Step RunRateStep(const Target& target, double rate, bool poisson,
                 std::mt19937_64* rng) {
  struct Shared {
    std::mutex mu;
    std::condition_variable idle;
    int outstanding = 0;
    int64_t ok = 0;
    std::vector<double> latencies_ms;
    std::map<std::string, int64_t> errors;
  } shared;
  struct Call {
    grpc::ClientContext context;
    v1::NormalizeResponse response;
    inference::ModelInferResponse oip_response;
    absl::Time scheduled;
    bool measured = false;
  };
  const int max_outstanding = absl::GetFlag(FLAGS_max_outstanding);
  const absl::Duration warmup = absl::Seconds(absl::GetFlag(FLAGS_warmup_s));
  const absl::Duration length = absl::Seconds(absl::GetFlag(FLAGS_duration_s));
  std::exponential_distribution<double> gap(rate);
  const absl::Time begin = absl::Now();
  const absl::Time measure_from = begin + warmup;
  const absl::Time end = measure_from + length;
  // The "before" scrape runs on its own thread at the end of the warm-up,
  // so that its HTTP round trip does not delay the calls due then (their
  // latency counts from the schedule).
  std::string before;
  absl::Time before_time;
  std::thread before_scrape([&before, &before_time, measure_from] {
    absl::SleepFor(measure_from - absl::Now());
    before = Scrape();
    before_time = absl::Now();
  });
  absl::Time next = begin;
  absl::Time last_progress = begin;
  size_t calls = 0;  // sent: the next call's connection
  int64_t saturated = 0;
  while (next < end) {
    const absl::Time now = absl::Now();
    if (next > now) absl::SleepFor(next - now);
    const bool measured = next >= measure_from;
    bool send;
    {
      std::lock_guard<std::mutex> lock(shared.mu);
      send = shared.outstanding < max_outstanding;
      if (send) ++shared.outstanding;
    }
    if (!send) {
      if (measured) ++saturated;
    } else {
      auto* call = new Call;
      call->scheduled = next;
      call->measured = measured;
      call->context.set_deadline(CallDeadline());
      auto on_done = [call, &shared](grpc::Status status) {
        const double ms =
            absl::ToDoubleMilliseconds(absl::Now() - call->scheduled);
        std::lock_guard<std::mutex> lock(shared.mu);
        if (call->measured) {
          if (status.ok()) {
            ++shared.ok;
            shared.latencies_ms.push_back(ms);
          } else {
            ++shared.errors[absl::StatusCodeToString(
                static_cast<absl::StatusCode>(status.error_code()))];
          }
        }
        if (--shared.outstanding == 0) shared.idle.notify_all();
        delete call;
      };
      if (target.use_oip()) {
        target.oip_stub(calls)->async()->ModelInfer(
            &call->context, &target.oip_request, &call->oip_response,
            std::move(on_done));
      } else {
        target.native(calls)->async()->Normalize(
            &call->context, &target.request, &call->response,
            std::move(on_done));
      }
      ++calls;
    }
    next += poisson ? absl::Seconds(gap(*rng)) : absl::Seconds(1.0 / rate);
    if (absl::Now() - last_progress > absl::Milliseconds(200)) {
      last_progress = absl::Now();
      std::fprintf(stderr, "\rrate %.0f/s: %.1f s   ", rate,
                   absl::ToDoubleSeconds(last_progress - begin));
    }
  }
  const absl::Time stop = absl::Now();
  before_scrape.join();
  {
    std::unique_lock<std::mutex> lock(shared.mu);
    shared.idle.wait(lock, [&shared] { return shared.outstanding == 0; });
  }
  std::fprintf(stderr, "\r%60s\r", "");
  Step step;
  // After the calls in flight at the schedule's end have drained: the
  // server's CPU counts over the window between the scrapes.
  const absl::Time after_time = absl::Now();
  step.stages = StageDelta(before, before_time, Scrape(), after_time);
  step.rate = rate;
  // Throughput over the schedule's window (answers that came after it
  // still count: they were sent within it).
  step.seconds = absl::ToDoubleSeconds(stop - measure_from);
  step.ok = shared.ok;
  step.errors = std::move(shared.errors);
  if (saturated > 0) step.errors["CLIENT_SATURATED"] += saturated;
  step.latencies_ms = std::move(shared.latencies_ms);
  std::sort(step.latencies_ms.begin(), step.latencies_ms.end());
  return step;
}

bool ParseNumber(absl::string_view text, int* out) {
  return absl::SimpleAtoi(text, out);
}
bool ParseNumber(absl::string_view text, double* out) {
  return absl::SimpleAtod(text, out);
}

// "N" or a geometric sweep "FROM:TO:xFACTOR" (e.g. 1:64:x2) of positive
// numbers; empty on a malformed spec.
template <typename T>
std::vector<T> ParseSweep(const std::string& spec) {
  std::vector<std::string> parts = absl::StrSplit(spec, ':');
  T from = 0, to = 0;
  int factor = 2;
  if (parts.size() == 1 && ParseNumber(parts[0], &from) && from > 0)
    return {from};
  if (parts.size() != 3 || !ParseNumber(parts[0], &from) ||
      !ParseNumber(parts[1], &to) || parts[2].empty() || parts[2][0] != 'x' ||
      !absl::SimpleAtoi(parts[2].substr(1), &factor) || from <= 0 ||
      to < from || factor < 2) {
    return {};
  }
  std::vector<T> steps;
  // In double: v * factor may not fit T.
  for (double v = static_cast<double>(from); v <= to * (1 + 1e-9);
       v *= factor) {
    steps.push_back(static_cast<T>(std::min(v, static_cast<double>(to))));
  }
  return steps;
}

}  // namespace
}  // namespace normserve

int main(int argc, char** argv) {
  using namespace normserve;
  absl::SetProgramUsageMessage(
      "load generator for normserve.\n"
      "Usage: normbench --concurrency=1:64:x2 --shape=1,768 [--mode=stream] "
      "[--json]\n"
      "       normbench --request_rate=1000:8000:x2 [--arrival=constant]");
  absl::ParseCommandLine(argc, argv);
#if defined(__linux__)
  // Open-loop sleeps wake within 1 µs of their time instead of Linux's
  // default 50 µs slack, which at high rates would send most calls late
  // (and charge the lag to the server, as latency counts from the
  // schedule).
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
#if defined(__GLIBC__)
  // As the server does (server_main.cc): reuse freed response buffers
  // instead of faulting in fresh pages for every large answer, so that the
  // load generator is not what limits large-message runs.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
  const std::vector<int> levels =
      ParseSweep<int>(absl::GetFlag(FLAGS_concurrency));
  if (levels.empty()) {
    std::fprintf(stderr,
                 "normbench: --concurrency: expected N or FROM:TO:xFACTOR\n");
    return 2;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "unary" && mode != "stream") {
    std::fprintf(stderr, "normbench: --mode: expected unary or stream\n");
    return 2;
  }
  const bool open_loop = !absl::GetFlag(FLAGS_request_rate).empty();
  const std::vector<double> rates =
      open_loop ? ParseSweep<double>(absl::GetFlag(FLAGS_request_rate))
                : std::vector<double>{};
  if (open_loop && rates.empty()) {
    std::fprintf(
        stderr,
        "normbench: --request_rate: expected R or FROM:TO:xFACTOR (> 0)\n");
    return 2;
  }
  if (open_loop && mode != "unary") {
    std::fprintf(stderr, "normbench: --request_rate needs --mode=unary\n");
    return 2;
  }
  const std::string arrival = absl::GetFlag(FLAGS_arrival);
  if (arrival != "poisson" && arrival != "constant") {
    std::fprintf(stderr,
                 "normbench: --arrival: expected poisson or constant\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_outstanding) <= 0) {
    std::fprintf(stderr, "normbench: --max_outstanding: expected > 0\n");
    return 2;
  }
  if (!(absl::GetFlag(FLAGS_duration_s) > 0) ||
      !(absl::GetFlag(FLAGS_warmup_s) >= 0)) {
    std::fprintf(stderr,
                 "normbench: --duration_s: expected > 0, --warmup_s >= 0\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_json) && absl::GetFlag(FLAGS_csv)) {
    std::fprintf(stderr, "normbench: --json and --csv: expected one\n");
    return 2;
  }
  NormalizeInput in;
  in.model = absl::GetFlag(FLAGS_model);
  int64_t count = 1;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_shape), ',')) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(part, &d) || d <= 0 ||
        d > (int64_t{1} << 28) / count) {
      std::fprintf(
          stderr,
          "normbench: --shape: expected positive integers like 1,768\n");
      return 2;
    }
    in.shape.push_back(d);
    count *= d;
  }
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "float32" || dtype == "f32") {
    in.dtype = v1::DATA_TYPE_FLOAT32;
  } else if (dtype == "float16" || dtype == "f16") {
    in.dtype = v1::DATA_TYPE_FLOAT16;
  } else if (dtype == "bfloat16" || dtype == "bf16") {
    in.dtype = v1::DATA_TYPE_BFLOAT16;
  } else {
    std::fprintf(stderr,
                 "normbench: --dtype=%s: expected float32, float16 or "
                 "bfloat16 (or f32, f16, bf16)\n",
                 dtype.c_str());
    return 2;
  }
  std::mt19937 rng(static_cast<uint32_t>(absl::GetFlag(FLAGS_seed)));
  std::normal_distribution<float> dist(0, 1);
  in.values.resize(static_cast<size_t>(count));
  for (float& v : in.values) v = dist(rng);
  const std::string protocol = absl::GetFlag(FLAGS_protocol);
  if (protocol != "native" && protocol != "oip") {
    std::fprintf(stderr, "normbench: --protocol: expected native or oip\n");
    return 2;
  }
  const v1::NormalizeRequest request = NormClient::BuildRequest(in);
  const int64_t bytes = static_cast<int64_t>(request.input().data().size());

  const int connections = absl::GetFlag(FLAGS_connections);
  if (connections < 1 || connections > 1024) {
    std::fprintf(stderr, "normbench: --connections: expected 1 to 1024\n");
    return 2;
  }
  Target target;
  for (int i = 0; i < connections; ++i) {
    NormClient::Options options;
    options.target = absl::GetFlag(FLAGS_server);
    options.own_connection = connections > 1;
    auto client = NormClient::Create(options);
    if (!client.ok()) {
      std::fprintf(stderr, "normbench: %s\n",
                   std::string(client.status().message()).c_str());
      return 1;
    }
    if (protocol == "oip") {
      target.oip.push_back(
          inference::GRPCInferenceService::NewStub((*client)->channel()));
    }
    target.clients.push_back(*std::move(client));
  }
  // A row is one normalized group: the last dimension, or the model's
  // normalized shape where it names one (rows/s).
  int64_t row_elements = in.shape.back();
  if (auto models = target.clients[0]->ListModels(); models.ok()) {
    const std::string name = in.model.empty() ? "default" : in.model;
    for (const v1::ModelInfo& m : models->models()) {
      if (m.name() != name || m.normalized_shape().empty()) continue;
      row_elements = 1;
      for (int64_t d : m.normalized_shape()) row_elements *= d;
    }
  }
  const int64_t rows = std::max<int64_t>(1, count / row_elements);
  target.request = request;
  if (protocol == "oip") target.oip_request = ToOip(request);

  const bool json = absl::GetFlag(FLAGS_json), csv = absl::GetFlag(FLAGS_csv);
  if (csv)
    std::printf(
        "concurrency,target_rate,requests_per_s,rows_per_s,bytes_per_s,p50_"
        "ms,p90_ms,p95_ms,p99_ms,max_ms,errors,server_queue_ms,server_"
        "compute_ms,server_end_to_end_ms,server_cpu_cores\n");
  if (!json && !csv) {
    std::printf("%-11s %12s %12s %12s %8s %8s %8s %8s %8s  %-28s %10s %s\n",
                open_loop ? "rate/s" : "concurrency", "requests/s", "rows/s",
                "MB/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms",
                "server queue/compute/e2e ms", "server CPU", "errors");
  }
  std::mt19937_64 arrivals(static_cast<uint64_t>(absl::GetFlag(FLAGS_seed)));
  const size_t steps = open_loop ? rates.size() : levels.size();
  int exit_code = 0;
  for (size_t i = 0; i < steps; ++i) {
    const Step s = open_loop ? RunRateStep(target, rates[i],
                                           arrival == "poisson", &arrivals)
                             : RunStep(target, mode == "stream", levels[i]);
    const int c = s.concurrency;
    const double rps = s.ok / s.seconds;
    std::vector<std::string> errs;
    int64_t total_errors = 0;
    for (const auto& [code, n] : s.errors) {
      errs.push_back(absl::StrCat(code, "=", n));
      total_errors += n;
    }
    const auto& l = s.latencies_ms;
    if (json) {
      std::printf(
          "{\"concurrency\": %d, \"target_rate\": %.1f, \"protocol\": "
          "\"%s\", \"mode\": \"%s\", "
          "\"requests\": %lld, "
          "\"seconds\": %.3f, "
          "\"requests_per_s\": %.1f, \"rows_per_s\": %.1f, \"bytes_per_s\": "
          "%.1f, "
          "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p95_ms\": %.4f, \"p99_ms\": "
          "%.4f, "
          "\"max_ms\": %.4f, \"errors\": %lld, \"server_queue_ms\": %s, "
          "\"server_compute_ms\": %s, \"server_end_to_end_ms\": %s, "
          "\"server_cpu_cores\": %s}\n",
          c, s.rate, protocol.c_str(), mode.c_str(),
          static_cast<long long>(s.ok), s.seconds, rps, rps * rows, rps * bytes,
          Percentile(l, 0.5), Percentile(l, 0.9), Percentile(l, 0.95),
          Percentile(l, 0.99), l.empty() ? 0.0 : l.back(),
          static_cast<long long>(total_errors),
          ServerColumn(s.stages, s.stages.queue_ms, "null").c_str(),
          ServerColumn(s.stages, s.stages.compute_ms, "null").c_str(),
          ServerColumn(s.stages, s.stages.end_to_end_ms, "null").c_str(),
          CpuColumn(s.stages, "null").c_str());
    } else if (csv) {
      std::printf(
          "%d,%.1f,%.1f,%.1f,%.1f,%.4f,%.4f,%.4f,%.4f,%.4f,%lld,%s,%s,%s,%s\n",
          c, s.rate, rps, rps * rows, rps * bytes, Percentile(l, 0.5),
          Percentile(l, 0.9), Percentile(l, 0.95), Percentile(l, 0.99),
          l.empty() ? 0.0 : l.back(), static_cast<long long>(total_errors),
          ServerColumn(s.stages, s.stages.queue_ms, "").c_str(),
          ServerColumn(s.stages, s.stages.compute_ms, "").c_str(),
          ServerColumn(s.stages, s.stages.end_to_end_ms, "").c_str(),
          CpuColumn(s.stages, "").c_str());
    } else {
      const std::string stages =
          s.stages.valid
              ? absl::StrFormat("%.3f / %.3f / %.3f", s.stages.queue_ms,
                                s.stages.compute_ms, s.stages.end_to_end_ms)
              : std::string("n/a");
      const std::string load =
          open_loop ? absl::StrFormat("%.0f", s.rate) : absl::StrCat(c);
      const std::string cpu = CpuColumn(s.stages, "n/a");
      std::printf(
          "%-11s %12.0f %12.0f %12.1f %8.3f %8.3f %8.3f %8.3f %8.3f  %-28s "
          "%10s %s\n",
          load.c_str(), rps, rps * rows, rps * bytes / 1e6, Percentile(l, 0.5),
          Percentile(l, 0.9), Percentile(l, 0.95), Percentile(l, 0.99),
          l.empty() ? 0.0 : l.back(), stages.c_str(), cpu.c_str(),
          errs.empty() ? "none" : absl::StrJoin(errs, " ").c_str());
    }
    std::fflush(stdout);
    if (s.ok == 0) {
      std::fprintf(stderr, "normbench: step %zu got no answer (errors: %s)\n",
                   i + 1,
                   errs.empty() ? "none" : absl::StrJoin(errs, " ").c_str());
      exit_code = 1;
    }
  }
  return exit_code;
}
