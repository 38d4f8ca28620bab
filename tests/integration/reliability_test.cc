// Reliability and security against the real server binary: overload,
// cancellation, expired deadlines, draining under load and within the
// grace, garbage on a stream, TLS and mutual TLS.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/normserve_client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.pb.h"
#include "kernels/reference.h"
#include "tests/integration/server_process.h"

#ifndef NORMSERVE_BINARY
#error "NORMSERVE_BINARY must name the server binary"
#endif

namespace normserve {
namespace {

using testing::Connect;
using testing::HttpGet;
using testing::MetricValue;
using testing::ScrapeUntil;
using testing::ServerProcess;

NormalizeInput RandomInput(int64_t rows, int64_t d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(1, 2);
  NormalizeInput in;
  in.shape = {rows, d};
  in.values.resize(static_cast<size_t>(rows * d));
  for (float& v : in.values) v = dist(rng);
  return in;
}

bool MatchesReference(const NormalizeInput& in, const NormalizeOutput& out) {
  NormParams p;
  p.dim = in.shape.back();
  const std::vector<double> ref =
      ReferenceNormalize(p, in.values.data(), in.shape.front());
  if (ref.size() != out.values.size()) return false;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::abs(out.values[i] - ref[i]) > 1e-4) return false;
  }
  return true;
}

// A stream message carrying `in`.
v1::NormalizeStreamRequest StreamMessage(const NormalizeInput& in) {
  v1::NormalizeStreamRequest msg;
  *msg.mutable_request() = NormClient::BuildRequest(in);
  return msg;
}

using NormalizeStream = grpc::ClientReaderWriter<v1::NormalizeStreamRequest,
                                                 v1::NormalizeStreamResponse>;

// Opens a NormalizeStream on `client` and has `msg` answered OK on it, so
// that the server holds the stream open: a drain waits for it. nullptr,
// with a test failure, where that fails.
std::unique_ptr<NormalizeStream> OpenAnsweredStream(
    NormClient& client, grpc::ClientContext* ctx,
    const v1::NormalizeStreamRequest& msg) {
  auto stream = client.stub()->NormalizeStream(ctx);
  v1::NormalizeStreamResponse answer;
  if (!stream->Write(msg) || !stream->Read(&answer) ||
      answer.status_code() != 0) {
    ADD_FAILURE() << "the stream's first message was not answered OK: "
                  << answer.status_message();
    ctx->TryCancel();
    return nullptr;
  }
  return stream;
}

grpc::health::v1::HealthCheckResponse::ServingStatus Health(
    const std::string& target) {
  auto channel =
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  if (!stub->Check(&ctx, req, &resp).ok())
    return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  return resp.status();
}

// Far more load than the server can take: a full queue answers
// RESOURCE_EXHAUSTED at once, admitted requests stay correct with bounded
// latency, memory stays bounded, and the server recovers when load drops.
TEST(ReliabilityTest, OverloadIsRefusedFastAndTheServerRecovers) {
  ServerProcess server(NORMSERVE_BINARY,
                       {"--max_queue_requests=4", "--batch_workers=1",
                        "--cpu_threads=1", "--max_batch_rows=64"});
  auto client = Connect(server.grpc_target());
  const NormalizeInput in = RandomInput(64, 4096, 1);  // 1 MiB per request
  constexpr int kThreads = 32, kPerThread = 12;
  std::atomic<int> ok{0}, exhausted{0}, other{0}, wrong{0};
  std::vector<std::vector<double>> latencies(kThreads), refusals(kThreads);
  std::atomic<bool> done{false};
  std::atomic<int64_t> max_rss{0};
  std::thread sampler([&] {
    while (!done.load()) {
      const int64_t rss = server.RssBytes();
      int64_t prev = max_rss.load();
      while (rss > prev && !max_rss.compare_exchange_weak(prev, rss)) {
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const absl::Time sent = absl::Now();
        auto out = client->Normalize(in);
        if (out.ok()) {
          ++ok;
          latencies[t].push_back(absl::ToDoubleSeconds(out->latency));
          if (!MatchesReference(in, *out)) ++wrong;
        } else if (out.status().code() ==
                   absl::StatusCode::kResourceExhausted) {
          ++exhausted;
          refusals[t].push_back(absl::ToDoubleSeconds(absl::Now() - sent));
          EXPECT_EQ(out.status().message(),
                    "queue for model 'default' (D = 4096) is full: 4 requests "
                    "waiting; retry later");
        } else {
          ++other;
          ADD_FAILURE() << out.status();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  done = true;
  sampler.join();

  EXPECT_EQ(ok + exhausted, kThreads * kPerThread);
  EXPECT_GT(exhausted.load(), 0) << "the load never filled the queue";
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  auto sorted = [](const std::vector<std::vector<double>>& per_thread) {
    std::vector<double> all;
    for (auto& l : per_thread) all.insert(all.end(), l.begin(), l.end());
    std::sort(all.begin(), all.end());
    return all;
  };
  const std::vector<double> all = sorted(latencies);
  const std::vector<double> refused = sorted(refusals);
  const double p99 = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  EXPECT_LT(p99, 5.0) << "admitted requests must not queue without bound";
  // Printed, not asserted: seen from the client, a refusal also waits for
  // its 1 MiB to cross a transport 32 clients share.
  const double refused_p50 = refused[refused.size() / 2];
  const double admitted_p50 = all[all.size() / 2];
  // Queue bound × request size plus gRPC buffers, far below unbounded growth.
  EXPECT_LT(max_rss.load(), int64_t{1} << 30) << "RSS " << max_rss.load();
  std::printf(
      "overload: %d ok (p50 %.1f ms, p99 %.1f ms), %d RESOURCE_EXHAUSTED (p50 "
      "%.1f ms), max RSS %.0f MiB\n",
      ok.load(), admitted_p50 * 1e3, p99 * 1e3, exhausted.load(),
      refused_p50 * 1e3, max_rss.load() / 1048576.0);

  // Every refusal is counted as one, for the overload alert.
  const std::string text = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(text, "normserve_queue_refusals_total"),
            exhausted.load());
  EXPECT_EQ(MetricValue(text, "normserve_requests_total",
                        {"grpc_code=\"RESOURCE_EXHAUSTED\""}),
            exhausted.load());

  // Load gone: requests are served again.
  auto after = client->Normalize(RandomInput(4, 256, 2));
  EXPECT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// Calls cancelled while queued are answered CANCELLED, never computed, and
// leave no request or queue entry behind.
TEST(ReliabilityTest, CancelledCallsAreNeverComputedAndNeverLeak) {
  ServerProcess server(NORMSERVE_BINARY, {"--max_queue_delay_us=1500000",
                                          "--max_batch_rows=100000"});
  auto client = Connect(server.grpc_target());
  constexpr int kCalls = 8;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  for (int i = 0; i < kCalls; ++i)
    contexts.push_back(std::make_unique<grpc::ClientContext>());
  std::vector<grpc::StatusCode> codes(kCalls);
  std::vector<std::thread> threads;
  const v1::NormalizeRequest req =
      NormClient::BuildRequest(RandomInput(2, 64, 3));
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      v1::NormalizeResponse resp;
      codes[i] =
          client->stub()->Normalize(contexts[i].get(), req, &resp).error_code();
    });
  }
  // Every call is queued (the 1.5 s delay holds them) before the cancels.
  ASSERT_EQ(MetricValue(ScrapeUntil(server.metrics_port(),
                                    "normserve_queue_depth", {}, kCalls),
                        "normserve_queue_depth"),
            kCalls);
  for (auto& c : contexts) c->TryCancel();
  for (auto& t : threads) t.join();
  for (grpc::StatusCode c : codes) EXPECT_EQ(c, grpc::StatusCode::CANCELLED);
  absl::SleepFor(absl::Milliseconds(2000));  // past the batching delay
  std::string text = HttpGet(server.metrics_port(), "/metrics");
  // A real scrape (no batch has run, so the compute histogram has no
  // series yet: its count reads 0).
  ASSERT_NE(text.find("# TYPE normserve_requests_in_flight gauge"),
            std::string::npos)
      << text;
  EXPECT_EQ(MetricValue(text, "normserve_compute_seconds_count"), 0) << text;
  EXPECT_EQ(MetricValue(text, "normserve_requests_in_flight"), 0);
  EXPECT_EQ(MetricValue(text, "normserve_queue_depth"), 0);
  // The server itself saw them cancelled (not only the client).
  EXPECT_EQ(
      MetricValue(text, "grpc_server_handled_total",
                  {"grpc_method=\"Normalize\"", "grpc_code=\"CANCELLED\""}),
      kCalls)
      << text;
  // Nothing is stuck: the next call is computed, once, and correct.
  const NormalizeInput in = RandomInput(2, 64, 31);
  auto out = client->Normalize(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(MatchesReference(in, *out));
  text = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(text, "normserve_compute_seconds_count"), 1);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// Calls whose deadline passes while they wait for company are answered
// DEADLINE_EXCEEDED, never computed, and leave no request or queue entry
// behind; the server then serves normally.
TEST(ReliabilityTest, ExpiredCallsAreNeverComputedAndNeverLeak) {
  // Requests wait up to 500 ms for company; their 50 ms deadlines pass first.
  ServerProcess server(NORMSERVE_BINARY, {"--max_queue_delay_us=500000",
                                          "--max_batch_rows=100000"});
  auto short_client = Connect(server.grpc_target(), absl::Milliseconds(50));
  constexpr int kCalls = 8;
  std::vector<absl::StatusCode> codes(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      codes[i] =
          short_client->Normalize(RandomInput(2, 64, 20 + i)).status().code();
    });
  }
  for (auto& t : threads) t.join();
  for (absl::StatusCode c : codes)
    EXPECT_EQ(c, absl::StatusCode::kDeadlineExceeded);
  absl::SleepFor(absl::Milliseconds(700));  // past the batching delay
  std::string text = HttpGet(server.metrics_port(), "/metrics");
  // A real scrape (no batch has run, so the compute histogram has no
  // series yet: its count reads 0).
  ASSERT_NE(text.find("# TYPE normserve_requests_in_flight gauge"),
            std::string::npos)
      << text;
  EXPECT_EQ(MetricValue(text, "normserve_compute_seconds_count"), 0) << text;
  EXPECT_EQ(MetricValue(text, "normserve_requests_in_flight"), 0);
  EXPECT_EQ(MetricValue(text, "normserve_queue_depth"), 0);
  EXPECT_EQ(MetricValue(text, "grpc_server_handled_total",
                        {"grpc_method=\"Normalize\"",
                         "grpc_code=\"DEADLINE_EXCEEDED\""}),
            kCalls);
  // Nothing is stuck: a call with time to wait is computed and correct.
  auto client = Connect(server.grpc_target());
  const NormalizeInput in = RandomInput(2, 64, 30);
  auto out = client->Normalize(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(MatchesReference(in, *out));
  text = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(text, "normserve_compute_seconds_count"), 1);
  EXPECT_EQ(MetricValue(text, "normserve_requests_in_flight"), 0);
  EXPECT_EQ(MetricValue(text, "normserve_queue_depth"), 0);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// SIGTERM (or SIGINT) under load: health turns NOT_SERVING, new calls
// (streams too) get UNAVAILABLE, every accepted request completes
// correctly, and the process exits 0 within --shutdown_grace_ms, as soon as
// the last call (an open stream) is done.
void DrainsUnderLoadAndExitsCleanly(int signal) {
  const absl::Duration grace = absl::Seconds(10);
  ServerProcess server(
      NORMSERVE_BINARY,
      {absl::StrCat("--shutdown_grace_ms=", absl::ToInt64Milliseconds(grace))});
  auto client = Connect(server.grpc_target());
  // An open stream keeps the server draining until we close it.
  grpc::ClientContext stream_ctx;
  const v1::NormalizeStreamRequest msg = StreamMessage(RandomInput(2, 32, 4));
  auto stream = OpenAnsweredStream(*client, &stream_ctx, msg);
  ASSERT_NE(stream, nullptr);

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, unavailable{0}, other{0};
  std::vector<std::thread> load;
  for (int t = 0; t < 4; ++t) {
    load.emplace_back([&, t] {
      const NormalizeInput in = RandomInput(16, 512, 10 + t);
      while (!stop.load()) {
        auto out = client->Normalize(in);
        if (out.ok()) {
          MatchesReference(in, *out) ? ++ok : ++other;
        } else if (out.status().code() == absl::StatusCode::kUnavailable) {
          ++unavailable;
        } else {
          ++other;
          ADD_FAILURE() << out.status();
        }
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time signalled = absl::Now();
  kill(server.pid(), signal);
  bool not_serving = false;
  for (int i = 0; i < 100 && !not_serving; ++i) {
    not_serving = Health(server.grpc_target()) ==
                  grpc::health::v1::HealthCheckResponse::NOT_SERVING;
    if (!not_serving) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(not_serving);
  auto refused = client->Normalize(RandomInput(1, 8, 5));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable)
      << refused.status();
  {
    // A new stream is refused on the call, as a unary call is.
    grpc::ClientContext late_ctx;
    auto late = client->stub()->NormalizeStream(&late_ctx);
    late->Write(msg);  // may fail: the call may be over already
    v1::NormalizeStreamResponse none;
    EXPECT_FALSE(late->Read(&none));
    const grpc::Status s = late->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(s.error_message(), "server is shutting down");
    // Counted as one refused request, as a refused unary call is.
    EXPECT_EQ(MetricValue(HttpGet(server.metrics_port(), "/metrics"),
                          "normserve_requests_total",
                          {"grpc_method=\"NormalizeStream\"",
                           "grpc_code=\"UNAVAILABLE\""}),
              1);
  }
  stop = true;
  for (auto& t : load) t.join();
  // A message sent on the open stream while draining is refused in its answer.
  ASSERT_TRUE(stream->Write(msg));
  v1::NormalizeStreamResponse answer;
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.status_code(), grpc::StatusCode::UNAVAILABLE);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  const absl::Time closed = absl::Now();
  EXPECT_EQ(server.Stop(0 /* already signalled; just wait */, 30), 0)
      << server.Output();
  // Within the grace, and without waiting for it once nothing is open.
  EXPECT_LE(absl::Now() - signalled, grace + absl::Seconds(1));
  EXPECT_LE(absl::Now() - closed, absl::Seconds(1));
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(unavailable.load(), 0);
  EXPECT_EQ(other.load(), 0);
}

TEST(ReliabilityTest, SigtermUnderLoadDrainsAndExitsCleanly) {
  DrainsUnderLoadAndExitsCleanly(SIGTERM);
}

TEST(ReliabilityTest, SigintUnderLoadDrainsAndExitsCleanly) {
  DrainsUnderLoadAndExitsCleanly(SIGINT);
}

// Two replicas behind one client channel, as behind the headless Service:
// round_robin over both, with the retry policy the README gives for
// UNAVAILABLE. One replica drains (SIGTERM while a client holds a stream
// open to it, so it stays up, refusing new calls, until the stream closes),
// and every unary call still succeeds: those it refuses are retried on the
// other replica.
TEST(ReliabilityTest, CallsADrainingReplicaRefusesAreRetriedOnAnother) {
  ServerProcess draining(NORMSERVE_BINARY, {"--shutdown_grace_ms=10000"});
  ServerProcess other(NORMSERVE_BINARY, {});
  auto stream_client = Connect(draining.grpc_target());
  grpc::ClientContext stream_ctx;
  auto stream = OpenAnsweredStream(*stream_client, &stream_ctx,
                                   StreamMessage(RandomInput(2, 32, 4)));
  ASSERT_NE(stream, nullptr);

  grpc::ChannelArguments args;
  args.SetLoadBalancingPolicyName("round_robin");
  args.SetServiceConfigJSON(R"({"methodConfig": [{
      "name": [{"service": "normserve.v1.NormalizationService"}],
      "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.01s",
                      "maxBackoff": "0.1s", "backoffMultiplier": 2,
                      "retryableStatusCodes": ["UNAVAILABLE"]}}]})");
  auto channel = grpc::CreateCustomChannel(
      absl::StrCat("ipv4:", draining.grpc_target(), ",", other.grpc_target()),
      grpc::InsecureChannelCredentials(), args);
  auto stub = v1::NormalizationService::NewStub(channel);
  const v1::NormalizeRequest request =
      NormClient::BuildRequest(RandomInput(4, 256, 7));
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> load;
  for (int t = 0; t < 2; ++t) {
    load.emplace_back([&] {
      while (!stop.load()) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
        v1::NormalizeResponse response;
        const grpc::Status s = stub->Normalize(&ctx, request, &response);
        if (s.ok()) {
          ++ok;
        } else {
          ++failed;
          ADD_FAILURE() << s.error_code() << " " << s.error_message();
        }
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(300));
  kill(draining.pid(), SIGTERM);
  // The draining replica refuses calls (and they are retried): wait until
  // its own metrics show refusals, while the stream holds it up.
  const std::string text =
      ScrapeUntil(draining.metrics_port(), "grpc_server_handled_total",
                  {"grpc_code=\"UNAVAILABLE\""}, 5, absl::Seconds(5));
  EXPECT_GE(MetricValue(text, "grpc_server_handled_total",
                        {"grpc_code=\"UNAVAILABLE\""}),
            5);
  const int ok_while_draining = ok.load();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_GT(ok.load(), ok_while_draining);
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(failed.load(), 0);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(draining.Stop(0 /* already signalled; just wait */, 30), 0)
      << draining.Output();
}

// A client that keeps a stream open holds a drain only until
// --shutdown_grace_ms has passed: then the server closes the stream and
// exits 0, within a small margin of the grace.
TEST(ReliabilityTest, AnOpenStreamHoldsTheDrainOnlyForTheGrace) {
  const absl::Duration grace = absl::Milliseconds(1500);
  ServerProcess server(
      NORMSERVE_BINARY,
      {absl::StrCat("--shutdown_grace_ms=", absl::ToInt64Milliseconds(grace))});
  auto client = Connect(server.grpc_target());
  grpc::ClientContext stream_ctx;
  auto stream = OpenAnsweredStream(*client, &stream_ctx,
                                   StreamMessage(RandomInput(2, 32, 9)));
  ASSERT_NE(stream, nullptr);

  const absl::Time signalled = absl::Now();
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0) << server.Output();
  const absl::Duration took = absl::Now() - signalled;
  EXPECT_GE(took, grace - absl::Milliseconds(100)) << "did not wait";
  EXPECT_LE(took, grace + absl::Seconds(1));
  // The stream was cut, not finished: the client learns it.
  v1::NormalizeStreamResponse answer;
  EXPECT_FALSE(stream->Read(&answer));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

// Writes `count` copies of `in` (request ids 0, 1, …) on `stream` from a
// thread of its own, counting them in `written`, then half-closes. Returns
// that thread (to join once the answers are read) when the writes stop
// advancing, the server holding the client back, or all are written.
template <typename Stream>
std::thread WriteWithoutReading(Stream* stream, const NormalizeInput& in,
                                int count, std::atomic<int>* written) {
  std::thread writer([stream, &in, count, written] {
    v1::NormalizeStreamRequest msg;
    *msg.mutable_request() = NormClient::BuildRequest(in);
    for (int i = 0; i < count; ++i) {
      msg.mutable_request()->set_request_id(absl::StrCat(i));
      if (!stream->Write(msg)) break;
      written->fetch_add(1);
    }
    stream->WritesDone();
  });
  int last = -1;
  while (written->load() != last && written->load() < count) {
    last = written->load();
    absl::SleepFor(absl::Seconds(1));
  }
  return writer;
}

// A stream that does not finish counts in grpc_server_handled_total as its
// client saw it end: DEADLINE_EXCEEDED past its deadline (it read
// CANCELLED), CANCELLED when the client cancels. The deadline is long
// enough that the call's arrival (slow under the sanitizers on a loaded
// host) stays within the server's allowance for it, a tenth of the timeout.
TEST(ReliabilityTest, AnUnfinishedStreamCountsAsItsClientSawItEnd) {
  ServerProcess server(NORMSERVE_BINARY, {});
  auto client = Connect(server.grpc_target());
  const v1::NormalizeStreamRequest msg = StreamMessage(RandomInput(2, 32, 7));
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(2000));
    auto stream = OpenAnsweredStream(*client, &ctx, msg);
    ASSERT_NE(stream, nullptr);
    v1::NormalizeStreamResponse answer;
    EXPECT_FALSE(stream->Read(&answer));  // until the deadline
    EXPECT_EQ(stream->Finish().error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  {
    grpc::ClientContext ctx;
    auto stream = OpenAnsweredStream(*client, &ctx, msg);
    ASSERT_NE(stream, nullptr);
    ctx.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  const std::string method = "grpc_method=\"NormalizeStream\"";
  const std::string text = ScrapeUntil(
      server.metrics_port(), "grpc_server_handled_total", {method}, 2);
  EXPECT_EQ(MetricValue(text, "grpc_server_handled_total",
                        {method, "grpc_code=\"DEADLINE_EXCEEDED\""}),
            1)
      << text;
  EXPECT_EQ(MetricValue(text, "grpc_server_handled_total",
                        {method, "grpc_code=\"CANCELLED\""}),
            1);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// A client that writes on a stream without reading its answers is held
// back by flow control once the server's stream window (`window_flag`: two
// messages of 1 MiB, by count or by bytes) is full, instead of the server
// reading every message and keeping every answer in memory; once the client
// reads, every answer arrives and the stream ends OK.
void HeldBackThenAnswered(const std::string& window_flag) {
  SCOPED_TRACE(window_flag);
  ServerProcess server(NORMSERVE_BINARY, {window_flag});
  auto client = Connect(server.grpc_target());
  grpc::ClientContext ctx;
  auto stream = client->stub()->NormalizeStream(&ctx);
  const int kMessages = 160;
  const NormalizeInput in = RandomInput(64, 4096, 21);  // 1 MiB a message
  std::atomic<int> written{0};
  std::thread writer =
      WriteWithoutReading(stream.get(), in, kMessages, &written);
  // The window's two messages, plus what the transports buffer on the way:
  // 7 more of 1 MiB when measured, 19 under AddressSanitizer (gRPC sizes
  // its flow-control windows from the delays it sees). A window of 64
  // would pass 64.
  const int held = written.load();
  EXPECT_LE(held, 40)
      << "the server read more than its window while no answer was taken";
  std::set<std::string> ids;
  v1::NormalizeStreamResponse answer;
  while (stream->Read(&answer)) {
    ASSERT_EQ(answer.status_code(), 0) << answer.status_message();
    const v1::Tensor& out = answer.response().output();
    ASSERT_EQ(out.data().size(), in.values.size() * sizeof(float));
    if (ids.empty()) {
      NormalizeOutput o;
      o.values.resize(in.values.size());
      std::memcpy(o.values.data(), out.data().data(), out.data().size());
      EXPECT_TRUE(MatchesReference(in, o));
    }
    EXPECT_TRUE(ids.insert(answer.request_id()).second) << answer.request_id();
  }
  writer.join();
  EXPECT_EQ(ids.size(), static_cast<size_t>(kMessages)) << "held at " << held;
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0) << server.Output();
}

TEST(ReliabilityTest, AStreamWhoseAnswersAreNotReadIsHeldBackThenAnswered) {
  HeldBackThenAnswered("--stream_window_messages=2");
}

TEST(ReliabilityTest, TheStreamWindowInBytesHoldsBackTheSameWay) {
  // Two messages of 1 MiB and a little (their other fields).
  HeldBackThenAnswered("--stream_window_bytes=2200000");
}

// An answer can be several times its request: a BFLOAT16 input answered in
// FLOAT32 is twice, and statistics add 8 bytes a row (here, rows of one
// element: 2 bytes in, 12 out). The window counts each item at the larger of
// the two, as soon as its answer's buffers exist, so a client that does not
// read makes the server hold about the window's bytes of answers, not the
// window's bytes of requests times that ratio.
TEST(ReliabilityTest, TheStreamWindowCountsAnswersLargerThanTheirRequests) {
  ServerProcess server(NORMSERVE_BINARY, {"--stream_window_bytes=16777216"});
  auto client = Connect(server.grpc_target());
  grpc::ClientContext ctx;
  auto stream = client->stub()->NormalizeStream(&ctx);
  const int kMessages = 240;
  NormalizeInput in = RandomInput(65536, 1, 23);
  in.dtype = v1::DATA_TYPE_BFLOAT16;        // 128 KiB in
  in.output_dtype = v1::DATA_TYPE_FLOAT32;  // 256 KiB out
  in.return_statistics = true;              // and 512 KiB of mean and rstd
  std::atomic<int> written{0};
  std::thread writer =
      WriteWithoutReading(stream.get(), in, kMessages, &written);
  // Every message the server read has been computed and answered by now.
  // 16 MiB holds 22 answers of 768 KiB, and the transports take some more
  // that the client has not read (up to ~25 of this size); counted by their
  // requests, the window alone held 128.
  const double answered = MetricValue(
      HttpGet(server.metrics_port(), "/metrics"), "normserve_requests_total",
      {"grpc_method=\"NormalizeStream\"", "grpc_code=\"OK\""});
  EXPECT_GE(answered, 22);
  EXPECT_LE(answered, 64) << "written " << written.load();
  int answers = 0;
  v1::NormalizeStreamResponse answer;
  while (stream->Read(&answer)) {
    ASSERT_EQ(answer.status_code(), 0) << answer.status_message();
    ASSERT_EQ(answer.response().output().data().size(),
              in.values.size() * sizeof(float));
    ++answers;
  }
  writer.join();
  EXPECT_EQ(answers, kMessages);
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0) << server.Output();
}

// One stream of raw bytes through the generic stub (which sends bytes that
// need not parse), driven one operation at a time on a completion queue.
class RawStream {
 public:
  RawStream(const std::shared_ptr<grpc::Channel>& channel,
            const std::string& method)
      : stub_(channel), call_(stub_.PrepareCall(&ctx_, method, &cq_)) {
    call_->StartCall(Tag());
    EXPECT_TRUE(Wait());
  }
  ~RawStream() {
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  bool Write(const std::string& bytes) {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer buffer(&slice, 1);
    call_->Write(buffer, Tag());
    return Wait();
  }
  bool WritesDone() {
    call_->WritesDone(Tag());
    return Wait();
  }
  // The next message's bytes; false at the end of the stream.
  bool Read(std::string* bytes) {
    grpc::ByteBuffer buffer;
    call_->Read(&buffer, Tag());
    if (!Wait()) return false;
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(buffer.Dump(&slices).ok());
    bytes->clear();
    for (const grpc::Slice& s : slices) {
      bytes->append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    return true;
  }
  grpc::Status Finish() {
    grpc::Status status;
    call_->Finish(&status, Tag());
    EXPECT_TRUE(Wait());
    return status;
  }

 private:
  void* Tag() { return reinterpret_cast<void*>(++tag_); }
  bool Wait() {
    void* tag;
    bool ok = false;
    EXPECT_TRUE(cq_.Next(&tag, &ok));
    EXPECT_EQ(tag, reinterpret_cast<void*>(tag_));
    return ok;
  }

  grpc::GenericStub stub_;
  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  intptr_t tag_ = 0;
};

// Bytes that are not a protobuf message, between two valid requests on one
// stream, of either protocol: the garbage gets an error answer that says
// which message it was, the requests before and after it are answered
// correctly, and the stream finishes OK. Meanwhile valid calls on another
// connection, running from before the garbage until after, are all
// answered correctly, and the server stays healthy.
TEST(ReliabilityTest, GarbageOnAStreamGetsAnErrorAnswerAndTheStreamGoesOn) {
  ServerProcess server(NORMSERVE_BINARY, {});
  auto client = Connect(server.grpc_target());
  std::atomic<bool> stop{false};
  std::atomic<int> good{0}, bad{0};
  std::thread concurrent([&] {
    const NormalizeInput in = RandomInput(4, 200, 7);
    while (!stop.load()) {
      auto out = client->Normalize(in);
      out.ok() && MatchesReference(in, *out) ? ++good : ++bad;
    }
  });
  while (good.load() + bad.load() == 0) absl::SleepFor(absl::Milliseconds(1));
  const int good_before = good.load();

  const std::string garbage = "\xff\xff\xff\xff garbage \x0a\xff";
  const NormalizeInput in = RandomInput(3, 100, 6);
  std::string want;  // The unary answer to `in`.
  {
    v1::NormalizeResponse response;
    grpc::ClientContext ctx;
    ASSERT_TRUE(client->stub()
                    ->Normalize(&ctx, NormClient::BuildRequest(in), &response)
                    .ok());
    NormalizeOutput out;
    out.values = *TensorValues(response.output());
    ASSERT_TRUE(MatchesReference(in, out));
    want = response.output().data();
  }
  {
    RawStream stream(client->channel(),
                     "/normserve.v1.NormalizationService/NormalizeStream");
    v1::NormalizeStreamRequest msg;
    *msg.mutable_request() = NormClient::BuildRequest(in);
    msg.mutable_request()->set_request_id("before");
    ASSERT_TRUE(stream.Write(msg.SerializeAsString()));
    ASSERT_TRUE(stream.Write(garbage));
    msg.mutable_request()->set_request_id("after");
    ASSERT_TRUE(stream.Write(msg.SerializeAsString()));
    ASSERT_TRUE(stream.WritesDone());
    std::map<std::string, v1::NormalizeStreamResponse> answers;
    std::string bytes;
    while (stream.Read(&bytes)) {
      v1::NormalizeStreamResponse answer;
      ASSERT_TRUE(answer.ParseFromString(bytes));
      EXPECT_TRUE(answers.emplace(answer.request_id(), answer).second);
    }
    const grpc::Status status = stream.Finish();
    EXPECT_TRUE(status.ok())
        << status.error_code() << " " << status.error_message();
    ASSERT_EQ(answers.size(), 3u);
    for (const char* id : {"before", "after"}) {
      EXPECT_EQ(answers[id].status_code(), 0) << answers[id].status_message();
      EXPECT_EQ(answers[id].response().output().data(), want) << id;
    }
    const v1::NormalizeStreamResponse& error = answers[""];  // no id to echo
    EXPECT_EQ(error.status_code(), grpc::INVALID_ARGUMENT);
    EXPECT_EQ(error.status_message(),
              "message 2 of this stream does not parse as "
              "normserve.v1.NormalizeStreamRequest (skipped; the stream goes "
              "on)");
    EXPECT_FALSE(error.has_response());
  }
  {
    RawStream stream(client->channel(),
                     "/inference.GRPCInferenceService/ModelStreamInfer");
    inference::ModelInferRequest request;
    request.set_model_name("default");
    auto* input = request.add_inputs();
    input->set_name("input");
    input->set_datatype("FP32");
    input->add_shape(3);
    input->add_shape(100);
    request.add_raw_input_contents(NormClient::BuildRequest(in).input().data());
    ASSERT_TRUE(stream.Write(garbage));
    request.set_id("after");
    ASSERT_TRUE(stream.Write(request.SerializeAsString()));
    ASSERT_TRUE(stream.WritesDone());
    std::map<std::string, inference::ModelStreamInferResponse> answers;
    std::string bytes;
    while (stream.Read(&bytes)) {
      inference::ModelStreamInferResponse answer;
      ASSERT_TRUE(answer.ParseFromString(bytes));
      answers.emplace(answer.infer_response().id(), answer);
    }
    EXPECT_TRUE(stream.Finish().ok());
    ASSERT_EQ(answers.size(), 2u);
    EXPECT_EQ(answers[""].error_message(),
              "INVALID_ARGUMENT: message 1 of this stream does not parse as "
              "inference.ModelInferRequest (skipped; the stream goes on)");
    EXPECT_EQ(answers["after"].error_message(), "");
    ASSERT_EQ(answers["after"].infer_response().raw_output_contents_size(), 1);
    EXPECT_EQ(answers["after"].infer_response().raw_output_contents(0), want);
  }

  absl::SleepFor(absl::Milliseconds(20));
  stop = true;
  concurrent.join();
  EXPECT_GT(good.load(), good_before) << "no concurrent call ran meanwhile";
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(Health(server.grpc_target()),
            grpc::health::v1::HealthCheckResponse::SERVING);
  const std::vector<std::string> stream_ok = {"grpc_method=\"NormalizeStream\"",
                                              "grpc_code=\"OK\""};
  const std::string text = ScrapeUntil(
      server.metrics_port(), "grpc_server_handled_total", stream_ok, 1);
  EXPECT_EQ(MetricValue(text, "grpc_server_handled_total", stream_ok), 1);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// A unary Normalize call whose bytes do not parse is INVALID_ARGUMENT and
// names the message type; a valid one sent as raw bytes is answered with
// bytes that parse (the output's bytes travel apart from the rest of the
// message, internal/response_wire.h) as the typed client's answer.
TEST(ReliabilityTest, UnaryBytesThatDoNotParseAreInvalidArgument) {
  ServerProcess server(NORMSERVE_BINARY, {});
  auto client = Connect(server.grpc_target());
  const std::string method = "/normserve.v1.NormalizationService/Normalize";
  {
    RawStream call(client->channel(), method);
    ASSERT_TRUE(call.Write("\xff\xff\xff\xff garbage \x0a\xff"));
    ASSERT_TRUE(call.WritesDone());
    std::string bytes;
    EXPECT_FALSE(call.Read(&bytes));
    const grpc::Status status = call.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(),
              "request: does not parse as normserve.v1.NormalizeRequest");
  }
  const NormalizeInput in = RandomInput(64, 1000, 9);
  v1::NormalizeRequest request = NormClient::BuildRequest(in);
  request.set_request_id("raw");
  request.set_return_statistics(true);
  v1::NormalizeResponse typed;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(client->stub()->Normalize(&ctx, request, &typed).ok());
  }
  RawStream call(client->channel(), method);
  ASSERT_TRUE(call.Write(request.SerializeAsString()));
  ASSERT_TRUE(call.WritesDone());
  std::string bytes;
  ASSERT_TRUE(call.Read(&bytes));
  EXPECT_TRUE(call.Finish().ok());
  v1::NormalizeResponse raw;
  ASSERT_TRUE(raw.ParseFromString(bytes));
  EXPECT_EQ(raw.SerializeAsString(), typed.SerializeAsString());
  EXPECT_EQ(raw.output().data().size(), 64u * 1000 * sizeof(float));
  NormalizeOutput out;
  out.values = *TensorValues(raw.output());
  EXPECT_TRUE(MatchesReference(in, out));
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// ---- TLS ----

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/tls_", getpid());
    const std::string script = absl::StrCat(
        "set -e; mkdir -p ", dir_, "; cd ", dir_, "\n",
        "key() { openssl genpkey -algorithm EC -pkeyopt "
        "ec_paramgen_curve:P-256 -out $1 2>/dev/null; }\n",
        "key ca.key; openssl req -x509 -new -key ca.key -out ca.crt -days 1 "
        "-subj /CN=test-ca\n",
        "key other.key; openssl req -x509 -new -key other.key -out other.crt "
        "-days 1 -subj /CN=other-ca\n",
        "key server.key; openssl req -new -key server.key -out server.csr "
        "-subj /CN=localhost\n",
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext\n",
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key "
        "-CAcreateserial -out server.crt -days 1 -extfile server.ext "
        "2>/dev/null\n",
        "printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n",
        "key client.key; openssl req -new -key client.key -out client.csr "
        "-subj /CN=client\n",
        "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key "
        "-CAcreateserial -out client.crt -days 1 -extfile client.ext "
        "2>/dev/null\n",
        "key rogue.key; openssl req -new -key rogue.key -out rogue.csr -subj "
        "/CN=rogue\n",
        "openssl x509 -req -in rogue.csr -CA other.crt -CAkey other.key "
        "-CAcreateserial -out rogue.crt -days 1 -extfile client.ext "
        "2>/dev/null\n");
    ASSERT_EQ(std::system(("bash -c '" + Escape(script) + "'").c_str()), 0);
  }
  static std::string Escape(const std::string& s) {
    std::string out;
    for (char c : s)
      out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out;
  }
  static std::string Read(const std::string& name) {
    std::ifstream in(dir_ + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static absl::Status Call(const std::string& target, bool tls,
                           const std::string& cert, const std::string& key) {
    NormClient::Options o;
    o.target = target;
    o.timeout = absl::Seconds(5);
    if (tls) o.tls_ca_pem = Read("ca.crt");
    if (!cert.empty()) {
      o.tls_cert_pem = Read(cert);
      o.tls_key_pem = Read(key);
    }
    auto client = *NormClient::Create(o);
    const NormalizeInput in = RandomInput(2, 16, 8);
    auto out = client->Normalize(in);
    if (out.ok() && !MatchesReference(in, *out))
      return absl::InternalError("wrong result");
    return out.status();
  }
  static std::string dir_;
};
std::string TlsTest::dir_;

TEST_F(TlsTest, TlsServerRefusesPlaintextAndServesTls) {
  ServerProcess server(NORMSERVE_BINARY, {"--tls_cert=" + dir_ + "/server.crt",
                                          "--tls_key=" + dir_ + "/server.key"});
  EXPECT_NE(server.Output().find("tls=on"), std::string::npos);
  EXPECT_EQ(Call(server.grpc_target(), false, "", "").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(Call(server.grpc_target(), true, "", "").ok());
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

TEST_F(TlsTest, MutualTlsAdmitsOnlyClientsWithATrustedCertificate) {
  ServerProcess server(NORMSERVE_BINARY,
                       {"--tls_cert=" + dir_ + "/server.crt",
                        "--tls_key=" + dir_ + "/server.key",
                        "--tls_client_ca=" + dir_ + "/ca.crt"});
  EXPECT_NE(server.Output().find("tls=mutual"), std::string::npos);
  EXPECT_FALSE(Call(server.grpc_target(), false, "", "").ok());  // plaintext
  EXPECT_FALSE(Call(server.grpc_target(), true, "", "").ok());   // no cert
  EXPECT_FALSE(Call(server.grpc_target(), true, "rogue.crt", "rogue.key")
                   .ok());  // untrusted
  const absl::Status good =
      Call(server.grpc_target(), true, "client.crt", "client.key");
  EXPECT_TRUE(good.ok()) << good;
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

TEST_F(TlsTest, BadTlsFlagsStopStartup) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--tls_cert=" + dir_ + "/server.crt"},
        std::vector<std::string>{"--tls_cert=/nonexistent.crt",
                                 "--tls_key=/nonexistent.key"},
        std::vector<std::string>{"--tls_client_ca=" + dir_ + "/ca.crt"}}) {
    const pid_t pid = fork();
    if (pid == 0) {
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      std::vector<std::string> all = {NORMSERVE_BINARY, "--grpc_port=0",
                                      "--metrics_port=0"};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(NORMSERVE_BINARY, argv.data());
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << args[0];
  }
}

}  // namespace
}  // namespace normserve
