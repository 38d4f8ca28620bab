// End-to-end tests against the real normserve binary on free ports: the C++
// client, streaming, health, validation over the wire, a Prometheus scrape,
// a model config with .npy parameters, and SIGTERM with requests in flight.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "client/normserve_client.h"
#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "kernels/reference.h"
#include "server/npy.h"
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

std::vector<float> Random(size_t n, uint32_t seed, float mean = 0,
                          float std = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, std);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

void ExpectMatchesReference(const NormParams& p, const std::vector<float>& x,
                            const std::vector<float>& y) {
  const int64_t rows = static_cast<int64_t>(x.size()) / p.dim;
  const std::vector<double> ref = ReferenceNormalize(p, x.data(), rows);
  ASSERT_EQ(y.size(), ref.size());
  double scale = 0, worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::abs(ref[i]));
    worst = std::max(worst, std::abs(y[i] - ref[i]));
  }
  EXPECT_LE(worst, 1e-5 * scale);
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(NORMSERVE_BINARY,
                                              std::vector<std::string>{});
    client_ = Connect(server_->grpc_target());
  }
  void TearDown() override {
    // The client stays connected: an idle connection must not hold up a
    // graceful shutdown.
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Stop(SIGTERM, 30), 0) << server_->Output();
    }
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<NormClient> client_;
};

TEST_F(ServerTest, HealthIsServing) {
  auto serving = client_->IsServing();
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_TRUE(*serving);
}

TEST_F(ServerTest, NormalizeMatchesTheFloat64Reference) {
  NormalizeInput in;
  in.shape = {3, 4, 100};
  in.normalized_ndim = 2;
  in.values = Random(1200, 1, 4, 3);
  in.gamma = Random(400, 2, 1, 0.5f);
  in.beta = Random(400, 3);
  in.epsilon = 1e-3f;
  in.request_id = "abc";
  auto out = client_->Normalize(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->shape, in.shape);
  EXPECT_EQ(out->request_id, "abc");
  EXPECT_EQ(out->model, "default");
  NormParams p;
  p.dim = 400;
  p.epsilon = 1e-3f;
  p.gamma = in.gamma.data();
  p.beta = in.beta.data();
  ExpectMatchesReference(p, in.values, out->values);
}

TEST_F(ServerTest, RmsNormAndFloatDataWork) {
  v1::NormalizeRequest req;
  req.mutable_input()->add_shape(2);
  req.mutable_input()->add_shape(3);
  req.mutable_input()->set_dtype(v1::DATA_TYPE_FLOAT32);
  const std::vector<float> x = {1, 2, 3, -4, 5, 6};
  for (float v : x) req.mutable_input()->add_float_data(v);
  req.set_kind(v1::NORM_KIND_RMS_NORM);
  v1::NormalizeResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(client_->stub()->Normalize(&ctx, req, &resp).ok());
  // Sent as float_data, answered as float_data.
  EXPECT_TRUE(resp.output().data().empty());
  const std::vector<float> y(resp.output().float_data().begin(),
                             resp.output().float_data().end());
  ASSERT_EQ(y.size(), 6u);
  NormParams p;
  p.dim = 3;
  p.kind = NormKind::kRmsNorm;
  ExpectMatchesReference(p, x, y);
}

TEST_F(ServerTest, HalfPrecisionResidualAndStatisticsOverTheWire) {
  NormalizeInput in;
  in.shape = {4, 256};
  in.dtype = v1::DATA_TYPE_BFLOAT16;
  in.values = Random(1024, 31, 1, 2);
  in.residual = Random(1024, 32);
  in.gamma = Random(256, 33, 1, 0.2f);
  in.kind = v1::NORM_KIND_RMS_NORM;
  in.return_residual_sum = true;
  in.return_statistics = true;
  in.output_dtype = v1::DATA_TYPE_FLOAT32;
  auto out = client_->Normalize(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->dtype, v1::DATA_TYPE_FLOAT32);
  // z = bf16(bf16(x) + bf16(r)), as an unfused bf16 add computes it.
  std::vector<float> z(1024);
  for (size_t i = 0; i < z.size(); ++i) {
    const float x = BFloat16ToFloat(FloatToBFloat16(in.values[i]));
    const float r = BFloat16ToFloat(FloatToBFloat16(in.residual[i]));
    z[i] = BFloat16ToFloat(FloatToBFloat16(x + r));
  }
  EXPECT_EQ(out->residual_sum, z);
  NormParams p;
  p.dim = 256;
  p.kind = NormKind::kRmsNorm;
  p.gamma = in.gamma.data();
  ExpectMatchesReference(p, z, out->values);
  const ReferenceResult ref = ReferenceNormalizeFull(p, z.data(), 4);
  ASSERT_EQ(out->rstd.size(), 4u);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(out->mean[r], 0.0f);
    EXPECT_NEAR(out->rstd[r], ref.rstd[r], 1e-5 * ref.rstd[r]);
  }
  // Without output_dtype the answer comes back in the input's bfloat16.
  in.output_dtype = v1::DATA_TYPE_UNSPECIFIED;
  auto same = client_->Normalize(in);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->dtype, v1::DATA_TYPE_BFLOAT16);
  for (size_t i = 0; i < same->values.size(); ++i) {
    ASSERT_EQ(same->values[i], BFloat16ToFloat(FloatToBFloat16(out->values[i])))
        << i;
  }
}

// An INT8 response's output: INT8, the expected scale and zero point, and
// every element within 1 LSB of the float64 reference `ref` quantized with
// that scale and zero point (round half away from zero, clamped).
void ExpectInt8MatchesReference(const v1::Tensor& out,
                                const std::vector<double>& ref, float scale,
                                int32_t zero_point) {
  EXPECT_EQ(out.dtype(), v1::DATA_TYPE_INT8);
  EXPECT_EQ(out.scale(), scale);
  EXPECT_EQ(out.zero_point(), zero_point);
  ASSERT_EQ(out.data().size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    const double want = std::max(
        -128.0,
        std::min(127.0,
                 std::round(ref[i] / static_cast<double>(scale)) + zero_point));
    ASSERT_LE(std::abs(static_cast<int8_t>(out.data()[i]) - want), 1)
        << "element " << i << " (scale " << scale << ", zero point "
        << zero_point << ")";
  }
}

TEST_F(ServerTest, Int8RequestsOnBothPathsComeBackQuantized) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> byte(-128, 127);
  v1::NormalizeRequest req;
  req.mutable_input()->add_shape(3);
  req.mutable_input()->add_shape(64);
  req.mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
  req.mutable_input()->set_scale(0.05f);
  req.mutable_input()->set_zero_point(-3);
  std::string data(192, '\0');
  for (char& c : data) c = static_cast<char>(byte(rng));
  req.mutable_input()->set_data(data);
  req.set_output_scale(4.0f / 127);
  req.set_output_zero_point(2);
  std::vector<float> x(192);
  for (int i = 0; i < 192; ++i)
    x[i] = 0.05f * (static_cast<int8_t>(data[i]) + 3);
  NormParams p;
  p.dim = 64;
  const std::vector<double> ref = ReferenceNormalize(p, x.data(), 3);
  for (v1::Int8Path path : {v1::INT8_PATH_INTEGER, v1::INT8_PATH_FLOAT}) {
    req.set_int8_path(path);
    v1::NormalizeResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = client_->stub()->Normalize(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ExpectInt8MatchesReference(resp.output(), ref, 4.0f / 127, 2);
  }
}

// Without an output scale the server picks one (γ = 1, β = 0: ±4 standard
// deviations span ±127, so 4/127) and says which; the zero point is the
// request's, else the model's (0 for the default model). The data are
// quantized with what the response says.
TEST_F(ServerTest, Int8ServerChosenQuantizationIsReturnedAndUsed) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> byte(-128, 127);
  v1::NormalizeRequest req;
  req.mutable_input()->add_shape(4);
  req.mutable_input()->add_shape(96);
  req.mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
  req.mutable_input()->set_scale(0.02f);
  req.mutable_input()->set_zero_point(10);
  std::string data(384, '\0');
  for (char& c : data) c = static_cast<char>(byte(rng));
  req.mutable_input()->set_data(data);
  std::vector<float> x(384);
  for (int i = 0; i < 384; ++i)
    x[i] = 0.02f * (static_cast<int8_t>(data[i]) - 10);
  NormParams p;
  p.dim = 96;
  const std::vector<double> ref = ReferenceNormalize(p, x.data(), 4);
  for (v1::Int8Path path : {v1::INT8_PATH_INTEGER, v1::INT8_PATH_FLOAT}) {
    req.set_int8_path(path);
    for (bool zero_point : {true, false}) {
      SCOPED_TRACE(::testing::Message()
                   << v1::Int8Path_Name(path)
                   << (zero_point ? ", zero point sent" : ", nothing sent"));
      if (zero_point) {
        req.set_output_zero_point(-20);
      } else {
        req.clear_output_zero_point();
      }
      v1::NormalizeResponse resp;
      grpc::ClientContext ctx;
      const grpc::Status s = client_->stub()->Normalize(&ctx, req, &resp);
      ASSERT_TRUE(s.ok()) << s.error_message();
      EXPECT_FLOAT_EQ(resp.output().scale(), 4.0f / 127);
      ExpectInt8MatchesReference(resp.output(), ref, resp.output().scale(),
                                 zero_point ? -20 : 0);
    }
  }
}

TEST_F(ServerTest, ListModelsShowsTheDefaultModel) {
  auto models = client_->ListModels();
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->models_size(), 1);
  EXPECT_EQ(models->models(0).name(), "default");
  EXPECT_TRUE(models->models(0).allows_request_params());
}

TEST_F(ServerTest, BadRequestsGetPreciseStatusesAndGoodOnesStillSucceed) {
  // A stream of valid requests runs while bad ones arrive.
  std::atomic<bool> stop{false};
  std::atomic<int> good_ok{0}, good_bad{0};
  std::thread good([&] {
    NormalizeInput in;
    in.shape = {8, 64};
    in.values = Random(512, 9);
    NormParams p;
    p.dim = 64;
    const std::vector<double> ref = ReferenceNormalize(p, in.values.data(), 8);
    while (!stop.load()) {
      auto out = client_->Normalize(in);
      bool ok = out.ok();
      for (size_t i = 0; ok && i < ref.size(); ++i) {
        ok = std::abs(out->values[i] - ref[i]) <= 1e-5 * 4;
      }
      ok ? ++good_ok : ++good_bad;
    }
  });
  const struct {
    std::function<void(v1::NormalizeRequest*)> mutate;
    grpc::StatusCode code;
    const char* message_part;
  } cases[] = {
      {[](auto* r) { r->mutable_input()->set_shape(1, -8); },
       grpc::INVALID_ARGUMENT,
       "input.shape[1] = -8: dimensions must be positive"},
      {[](auto* r) { r->mutable_input()->mutable_data()->pop_back(); },
       grpc::INVALID_ARGUMENT, "input.data has 31 bytes"},
      {[](auto* r) { r->set_epsilon(-1); }, grpc::INVALID_ARGUMENT,
       "epsilon = -1"},
      {[](auto* r) { r->set_model("missing"); }, grpc::NOT_FOUND,
       "model = 'missing'"},
      {[](auto* r) { r->set_device(v1::DEVICE_CUDA); },
       grpc::FAILED_PRECONDITION, "device = DEVICE_CUDA"},
      {[](auto* r) { r->set_normalized_ndim(5); }, grpc::INVALID_ARGUMENT,
       "normalized_ndim = 5"},
  };
  NormalizeInput base;
  base.shape = {2, 4};
  base.values = Random(8, 4);
  for (const auto& c : cases) {
    v1::NormalizeRequest req = NormClient::BuildRequest(base);
    c.mutate(&req);
    v1::NormalizeResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = client_->stub()->Normalize(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_NE(s.error_message().find(c.message_part), std::string::npos)
        << s.error_message();
  }
  stop = true;
  good.join();
  EXPECT_GT(good_ok.load(), 0);
  EXPECT_EQ(good_bad.load(), 0);
}

TEST_F(ServerTest, StreamAnswersEveryMessageIncludingBadOnes) {
  grpc::ClientContext ctx;
  auto stream = client_->stub()->NormalizeStream(&ctx);
  constexpr int kMessages = 20;
  std::vector<std::vector<float>> inputs;
  for (int i = 0; i < kMessages; ++i) {
    NormalizeInput in;
    in.shape = {2, 16};
    in.values = Random(32, 100 + i);
    in.request_id = std::to_string(i);
    inputs.push_back(in.values);
    v1::NormalizeStreamRequest msg;
    *msg.mutable_request() = NormClient::BuildRequest(in);
    if (i % 5 == 4)
      msg.mutable_request()->mutable_input()->set_shape(0, 0);  // bad
    ASSERT_TRUE(stream->Write(msg));
  }
  stream->WritesDone();
  v1::NormalizeStreamResponse resp;
  std::vector<bool> seen(kMessages, false);
  int ok = 0, bad = 0;
  NormParams p;
  p.dim = 16;
  while (stream->Read(&resp)) {
    const int i = std::stoi(resp.request_id());
    ASSERT_FALSE(seen[i]) << "two answers for " << i;
    seen[i] = true;
    if (i % 5 == 4) {
      EXPECT_EQ(resp.status_code(), grpc::INVALID_ARGUMENT);
      EXPECT_NE(resp.status_message().find("input.shape[0] = 0"),
                std::string::npos);
      ++bad;
    } else {
      ASSERT_EQ(resp.status_code(), 0) << resp.status_message();
      std::vector<float> y(32);
      std::memcpy(y.data(), resp.response().output().data().data(), 128);
      ExpectMatchesReference(p, inputs[i], y);
      ++ok;
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ok, 16);
  EXPECT_EQ(bad, 4);
  // The stream is one OK call to gRPC's counters; its messages are counted
  // one by one, each with its own code.
  const std::string method = "grpc_method=\"NormalizeStream\"";
  const std::string text = ScrapeUntil(
      server_->metrics_port(), "grpc_server_handled_total", {method}, 1);
  EXPECT_EQ(MetricValue(text, "grpc_server_handled_total",
                        {method, "grpc_code=\"OK\""}),
            1);
  EXPECT_EQ(MetricValue(text, "normserve_requests_total",
                        {method, "grpc_code=\"OK\""}),
            16);
  EXPECT_EQ(MetricValue(text, "normserve_requests_total",
                        {method, "grpc_code=\"INVALID_ARGUMENT\""}),
            4);
}

TEST_F(ServerTest, MetricsScrapeCountsTheRequestsSent) {
  constexpr int kOk = 7, kBad = 3;
  NormalizeInput in;
  in.shape = {4, 32};
  in.values = Random(128, 5);
  for (int i = 0; i < kOk; ++i) ASSERT_TRUE(client_->Normalize(in).ok());
  in.epsilon = -1.0f;
  for (int i = 0; i < kBad; ++i) ASSERT_FALSE(client_->Normalize(in).ok());

  const std::string method = "grpc_method=\"Normalize\"";
  const std::string text =
      ScrapeUntil(server_->metrics_port(), "grpc_server_handled_total",
                  {method}, kOk + kBad);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(MetricValue(text, "grpc_server_started_total", {method}),
            kOk + kBad);
  EXPECT_EQ(MetricValue(text, "grpc_server_handled_total",
                        {method, "grpc_code=\"OK\""}),
            kOk);
  EXPECT_EQ(MetricValue(text, "grpc_server_handled_total",
                        {method, "grpc_code=\"INVALID_ARGUMENT\""}),
            kBad);
  EXPECT_EQ(MetricValue(text, "grpc_server_handling_seconds_count", {method}),
            kOk + kBad);
  EXPECT_EQ(MetricValue(text, "normserve_requests_total",
                        {method, "grpc_code=\"OK\""}),
            kOk);
  EXPECT_EQ(MetricValue(text, "normserve_requests_total",
                        {method, "grpc_code=\"INVALID_ARGUMENT\""}),
            kBad);
  // Series of codes never answered exist from the start, at 0, so that
  // rate() sees their first increment.
  EXPECT_NE(text.find("grpc_server_handled_total{grpc_code=\"UNAVAILABLE\","
                      "grpc_method=\"ModelInfer\""),
            std::string::npos);
  EXPECT_NE(
      text.find("normserve_requests_total{grpc_code=\"DEADLINE_EXCEEDED\","
                "grpc_method=\"NormalizeStream\""),
      std::string::npos);
  EXPECT_EQ(MetricValue(text, "normserve_queue_refusals_total"), 0);
  const std::vector<std::string> stage = {"model=\"default\"",
                                          "device=\"cpu\""};
  EXPECT_EQ(MetricValue(text, "normserve_request_latency_seconds_count", stage),
            kOk);
  EXPECT_EQ(MetricValue(text, "normserve_queue_wait_seconds_count", stage),
            kOk);
  EXPECT_EQ(MetricValue(text, "normserve_batch_rows_sum", stage), 4 * kOk);
  EXPECT_EQ(MetricValue(text, "normserve_batch_requests_sum", stage), kOk);
  EXPECT_GE(MetricValue(text, "normserve_compute_seconds_count", stage), 1);
  EXPECT_EQ(MetricValue(text, "normserve_request_bytes_total"), kOk * 512);
  EXPECT_EQ(MetricValue(text, "normserve_response_bytes_total"), kOk * 512);
  EXPECT_NE(text.find("normserve_queue_depth 0"), std::string::npos);
  EXPECT_NE(text.find("normserve_requests_in_flight 0"), std::string::npos);
  EXPECT_NE(text.find("normserve_request_latency_seconds_bucket{device=\"cpu\","
                      "model=\"default\",le=\"1e-05\"}"),
            std::string::npos);
}

TEST(ServerProcessTest, ModelConfigWithNpyParameters) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = tmp != nullptr ? tmp : "/tmp";
  const std::vector<float> gamma = Random(8, 21, 1, 0.3f);
  ASSERT_TRUE(WriteNpyFile(dir + "/it_gamma.npy", {8}, gamma).ok());
  const std::string config = dir + "/it_models.pbtxt";
  std::ofstream(config)
      << "models { name: \"ln8\" normalized_shape: 8 epsilon: 1e-4 "
         "gamma { npy_path: \"it_gamma.npy\" } beta { values: "
         "[1,1,1,1,1,1,1,1] } }";
  ServerProcess server(NORMSERVE_BINARY, {"--model_config=" + config});
  auto client = Connect(server.grpc_target());
  NormalizeInput in;
  in.model = "ln8";
  in.shape = {5, 8};
  in.values = Random(40, 22);
  auto out = client->Normalize(in);
  ASSERT_TRUE(out.ok()) << out.status();
  const std::vector<float> beta(8, 1.0f);
  NormParams p;
  p.dim = 8;
  p.epsilon = 1e-4f;
  p.gamma = gamma.data();
  p.beta = beta.data();
  ExpectMatchesReference(p, in.values, out->values);
  // The model does not take request parameters.
  in.epsilon = 1e-3f;
  auto refused = client->Normalize(in);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// Batching over the wire: concurrent requests with the same parameters share
// batches, which close when their rows reach --max_batch_rows (6 requests
// of 4 rows, at most 12 rows: two batches of three, whatever the order they
// arrive in; the 1 s delay is not reached). A model's own batching settings
// apply to its queue: with max_queue_requests 2 a third concurrent request
// is refused, and the two queued ones are computed together.
TEST(ServerProcessTest, ConcurrentRequestsShareBatchesWithinTheirLimits) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string config =
      std::string(tmp != nullptr ? tmp : "/tmp") + "/it_batching.pbtxt";
  std::ofstream(config)
      << "models { name: \"pair\" normalized_shape: 4 batching { "
         "max_queue_requests: 2 max_queue_delay_us: 1000000 } }";
  ServerProcess server(NORMSERVE_BINARY,
                       {"--model_config=" + config, "--max_batch_rows=12",
                        "--max_queue_delay_us=1000000", "--batch_workers=1"});
  auto client = Connect(server.grpc_target());
  NormParams p;
  p.dim = 32;
  constexpr int kRequests = 6;
  std::vector<NormalizeInput> inputs(kRequests);
  std::vector<absl::StatusOr<NormalizeOutput>> outputs(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    inputs[i].shape = {4, 32};
    inputs[i].values = Random(128, 40 + i);
    threads.emplace_back([&, i] { outputs[i] = client->Normalize(inputs[i]); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(outputs[i].ok()) << outputs[i].status();
    ExpectMatchesReference(p, inputs[i].values, outputs[i]->values);
  }
  const std::vector<std::string> stage = {"model=\"default\""};
  std::string text = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(text, "normserve_batch_requests_count", stage), 2)
      << text;
  EXPECT_EQ(MetricValue(text, "normserve_batch_requests_sum", stage), 6);
  EXPECT_EQ(MetricValue(text, "normserve_batch_rows_sum", stage), 24);

  // The "pair" model: two requests queue, the third is refused at once.
  std::vector<absl::StatusOr<NormalizeOutput>> pair(3);
  threads.clear();
  for (int i = 0; i < 2; ++i) {
    NormalizeInput in;
    in.model = "pair";
    in.shape = {1, 4};
    in.values = Random(4, 50 + i);
    threads.emplace_back([&, i, in] { pair[i] = client->Normalize(in); });
  }
  ASSERT_EQ(MetricValue(ScrapeUntil(server.metrics_port(),
                                    "normserve_queue_depth", {}, 2),
                        "normserve_queue_depth"),
            2);
  NormalizeInput third;
  third.model = "pair";
  third.shape = {1, 4};
  third.values = Random(4, 52);
  pair[2] = client->Normalize(third);
  for (auto& t : threads) t.join();
  EXPECT_TRUE(pair[0].ok()) << pair[0].status();
  EXPECT_TRUE(pair[1].ok()) << pair[1].status();
  EXPECT_EQ(pair[2].status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pair[2].status().message(),
            "queue for model 'pair' (D = 4) is full: 2 requests waiting; "
            "retry later");
  text = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_EQ(
      MetricValue(text, "normserve_batch_requests_count", {"model=\"pair\""}),
      1);
  EXPECT_EQ(
      MetricValue(text, "normserve_batch_requests_sum", {"model=\"pair\""}), 2);
  std::remove(config.c_str());
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// --max_queued_bytes bounds the bytes queued over all queues: with one
// request waiting (a 1 s batching delay holds it), another that would pass
// the bound is refused at once, naming the bound; the waiting one is then
// computed.
TEST(ServerProcessTest, QueuedBytesOverTheBoundAreRefused) {
  ServerProcess server(NORMSERVE_BINARY, {"--max_queue_delay_us=1000000",
                                          "--max_queued_bytes=1500"});
  auto client = Connect(server.grpc_target());
  NormalizeInput first;
  first.shape = {4, 32};
  first.values = Random(128, 60);
  absl::StatusOr<NormalizeOutput> first_out;
  std::thread waiting([&] { first_out = client->Normalize(first); });
  ASSERT_EQ(MetricValue(ScrapeUntil(server.metrics_port(),
                                    "normserve_queue_depth", {}, 1),
                        "normserve_queue_depth"),
            1);
  NormalizeInput second = first;
  second.shape = {4, 16};  // another queue: the bound spans them all
  second.values.resize(64);
  const auto refused = client->Normalize(second);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  const std::string message(refused.status().message());
  EXPECT_EQ(message.rfind("the server's queues are full: 1 requests of ", 0),
            0u)
      << message;
  EXPECT_NE(message.find("(max_queued_bytes 1500); retry later"),
            std::string::npos)
      << message;
  waiting.join();
  ASSERT_TRUE(first_out.ok()) << first_out.status();
  NormParams p;
  p.dim = 32;
  ExpectMatchesReference(p, first.values, first_out->values);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// Each queued request counts 16 KiB besides its tensors (its call's own
// state, measured at 17-18 KB), so that --max_queued_bytes bounds memory
// for tiny requests too: with 100000 bytes, six requests of 8 bytes wait
// and the rest are refused (counting tensors alone, all would wait).
TEST(ServerProcessTest, TinyQueuedRequestsCountTheirCalls) {
  ServerProcess server(NORMSERVE_BINARY,
                       {"--max_queue_delay_us=2000000", "--max_batch_rows=1000",
                        "--max_queued_bytes=100000"});
  auto client = Connect(server.grpc_target());
  constexpr int kRequests = 12;
  std::atomic<int> ok{0}, refused{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      NormalizeInput in;
      in.shape = {1, 2};
      in.values = {1.0f, 2.0f + static_cast<float>(i)};
      const auto out = client->Normalize(in);
      if (out.ok()) {
        ++ok;
      } else {
        EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted)
            << out.status();
        ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
  EXPECT_EQ(refused.load(), kRequests - 6);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// A model config that fixes γ, β, ε and the INT8 output quantization: its
// INT8 requests come back with the model's scale and zero point, within
// 1 LSB of the float64 reference, and bit-identical to the same parameters
// sent per request to the default model; a request that names its own
// output quantization is refused.
TEST(ServerProcessTest, Int8ModelConfigServesItsOutputQuantization) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = tmp != nullptr ? tmp : "/tmp";
  const int64_t d = 48, rows = 6;
  const std::vector<float> gamma = Random(d, 41, 1, 0.3f);
  const std::vector<float> beta = Random(d, 42, 0, 0.5f);
  ASSERT_TRUE(WriteNpyFile(dir + "/it_int8_gamma.npy", {d}, gamma).ok());
  ASSERT_TRUE(WriteNpyFile(dir + "/it_int8_beta.npy", {d}, beta).ok());
  const std::string config = dir + "/it_int8_models.pbtxt";
  std::ofstream(config)
      << "models { name: \"ln_int8\" normalized_shape: 48 epsilon: 1e-3 "
         "gamma { npy_path: \"it_int8_gamma.npy\" } "
         "beta { npy_path: \"it_int8_beta.npy\" } "
         "output_scale: 0.03 output_zero_point: 9 }";
  ServerProcess server(NORMSERVE_BINARY, {"--model_config=" + config});
  auto client = Connect(server.grpc_target());
  std::mt19937 rng(43);
  std::uniform_int_distribution<int> byte(-128, 127);
  std::string data(static_cast<size_t>(rows * d), '\0');
  for (char& c : data) c = static_cast<char>(byte(rng));
  std::vector<float> x(data.size());
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = 0.1f * (static_cast<int8_t>(data[i]) + 4);
  NormParams p;
  p.dim = d;
  p.epsilon = 1e-3f;
  p.gamma = gamma.data();
  p.beta = beta.data();
  const std::vector<double> ref = ReferenceNormalize(p, x.data(), rows);
  const auto send = [&](const v1::NormalizeRequest& req,
                        v1::NormalizeResponse* resp) {
    grpc::ClientContext ctx;
    return client->stub()->Normalize(&ctx, req, resp);
  };
  const auto tensor = [](v1::Tensor* t, const std::vector<float>& v) {
    t->add_shape(static_cast<int64_t>(v.size()));
    t->set_dtype(v1::DATA_TYPE_FLOAT32);
    t->set_data(reinterpret_cast<const char*>(v.data()),
                v.size() * sizeof(float));
  };
  for (v1::Int8Path path : {v1::INT8_PATH_INTEGER, v1::INT8_PATH_FLOAT}) {
    SCOPED_TRACE(v1::Int8Path_Name(path));
    v1::NormalizeRequest req;
    req.set_model("ln_int8");
    req.mutable_input()->add_shape(rows);
    req.mutable_input()->add_shape(d);
    req.mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
    req.mutable_input()->set_scale(0.1f);
    req.mutable_input()->set_zero_point(-4);
    req.mutable_input()->set_data(data);
    req.set_int8_path(path);
    v1::NormalizeResponse from_model;
    const grpc::Status s = send(req, &from_model);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ExpectInt8MatchesReference(from_model.output(), ref, 0.03f, 9);

    v1::NormalizeRequest sent = req;
    sent.clear_model();
    sent.set_epsilon(1e-3f);
    tensor(sent.mutable_gamma(), gamma);
    tensor(sent.mutable_beta(), beta);
    sent.set_output_scale(0.03f);
    sent.set_output_zero_point(9);
    v1::NormalizeResponse per_request;
    ASSERT_TRUE(send(sent, &per_request).ok());
    EXPECT_EQ(per_request.output().scale(), 0.03f);
    EXPECT_EQ(per_request.output().zero_point(), 9);
    EXPECT_EQ(per_request.output().data(), from_model.output().data());

    req.set_output_scale(0.03f);
    v1::NormalizeResponse refused;
    const grpc::Status r = send(req, &refused);
    EXPECT_EQ(r.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(r.error_message().find("model 'ln_int8' fixes its output "
                                     "quantization: expected them unset"),
              std::string::npos)
        << r.error_message();
  }
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

TEST(ServerProcessTest, BadModelConfigStopsStartupWithAMessage) {
  const std::string config = "/nonexistent/models.pbtxt";
  const pid_t pid = fork();
  if (pid == 0) {
    const int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    execl(NORMSERVE_BINARY, NORMSERVE_BINARY,
          ("--model_config=" + config).c_str(), "--grpc_port=0",
          "--metrics_port=0", nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
}

TEST(ServerProcessTest, OversizedMessageIsResourceExhausted) {
  ServerProcess server(NORMSERVE_BINARY, {"--max_message_bytes=4096"});
  auto client = Connect(server.grpc_target());
  NormalizeInput in;
  in.shape = {4, 1024};
  in.values = Random(4096, 1);
  auto out = client->Normalize(in);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted)
      << out.status();
  in.shape = {4, 16};
  in.values.resize(64);
  EXPECT_TRUE(client->Normalize(in).ok());
  // The client's mistake, not overload: no queue refusal is counted.
  EXPECT_EQ(MetricValue(HttpGet(server.metrics_port(), "/metrics"),
                        "normserve_queue_refusals_total"),
            0);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

// Idle connections to the metrics port (more than civetweb's default two
// worker threads) do not hold up a scrape.
TEST(ServerProcessTest, IdleMetricsConnectionsDoNotStallAScrape) {
  ServerProcess server(NORMSERVE_BINARY, {});
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server.metrics_port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const char partial[] = "GET /metrics HTTP/1.1\r\n";  // and nothing more
    ASSERT_GT(write(fd, partial, sizeof(partial) - 1), 0);
    idle.push_back(fd);
  }
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Time start = absl::Now();
  const std::string text = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_NE(text.find("normserve_queue_depth"), std::string::npos);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  for (int fd : idle) close(fd);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

TEST(ServerProcessTest, ExpiredRequestsAreNotComputed) {
  // Requests wait up to 300 ms for company; a 50 ms deadline expires first.
  ServerProcess server(NORMSERVE_BINARY, {"--max_queue_delay_us=300000"});
  NormClient::Options o;
  o.target = server.grpc_target();
  o.timeout = absl::Milliseconds(50);
  auto client = NormClient::Create(o);
  NormalizeInput in;
  in.shape = {1, 16};
  in.values = Random(16, 1);
  auto out = (*client)->Normalize(in);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kDeadlineExceeded);
  absl::SleepFor(absl::Milliseconds(400));
  const std::string text = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(text, "normserve_compute_seconds_count"), 0) << text;
  EXPECT_EQ(MetricValue(text, "grpc_server_handled_total",
                        {"grpc_code=\"DEADLINE_EXCEEDED\""}),
            1);
  // Its wait in the queue counts (the overload signal), its latency and
  // bytes do not (it was not answered with a result).
  // It waited until its deadline (50 ms from the client, less as the
  // server sees it: the first call also connects), not for the end of the
  // 300 ms delay.
  EXPECT_EQ(MetricValue(text, "normserve_queue_wait_seconds_count"), 1);
  EXPECT_GT(MetricValue(text, "normserve_queue_wait_seconds_sum"), 0.0);
  EXPECT_LT(MetricValue(text, "normserve_queue_wait_seconds_sum"), 0.25);
  EXPECT_EQ(MetricValue(text, "normserve_request_latency_seconds_count"), 0);
  EXPECT_EQ(MetricValue(text, "normserve_request_bytes_total"), 0);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0);
}

TEST(ServerProcessTest, SigtermWithRequestsInFlightLosesNone) {
  // A long batching delay keeps requests queued when SIGTERM arrives.
  ServerProcess server(NORMSERVE_BINARY, {"--max_queue_delay_us=500000",
                                          "--max_batch_rows=100000"});
  auto client = Connect(server.grpc_target());
  constexpr int kRequests = 16;
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      NormalizeInput in;
      in.shape = {2, 64};
      in.values = Random(128, 50 + i);
      auto out = client->Normalize(in);
      NormParams p;
      p.dim = 64;
      if (out.ok()) {
        ExpectMatchesReference(p, in.values, out->values);
        ++ok;
      } else {
        ADD_FAILURE() << out.status();
        ++failed;
      }
    });
  }
  // Wait until every request is queued, as the server reports it.
  for (int i = 0; i < 200; ++i) {
    const std::string text = HttpGet(server.metrics_port(), "/metrics");
    if (MetricValue(text, "normserve_requests_in_flight") == kRequests) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0) << server.Output();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kRequests);
  EXPECT_EQ(failed.load(), 0);
  // Once it has exited, nobody answers.
  NormalizeInput in;
  in.shape = {1, 4};
  in.values = Random(4, 1);
  EXPECT_EQ(client->Normalize(in).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace normserve
