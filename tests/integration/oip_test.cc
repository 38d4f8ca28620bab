// The Open Inference Protocol against the real server binary, with the
// C++ stubs of inference.GRPCInferenceService on the native API's port:
// both protocols give bitwise identical outputs for the same input,
// statuses survive the wire, the stream answers every message (bad ones
// with an error), and the metrics count OIP calls under their service.
#include <signal.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "client/normserve_client.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "kernels/dtype.h"
#include "tests/integration/server_process.h"

#ifndef NORMSERVE_BINARY
#error "NORMSERVE_BINARY must name the server binary"
#endif

namespace normserve {
namespace {

using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using testing::Connect;
using testing::HttpGet;
using testing::MetricValue;
using testing::ScrapeUntil;
using testing::ServerProcess;

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.5f, 2.0f);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

class OipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(NORMSERVE_BINARY,
                                              std::vector<std::string>{});
    native_ = Connect(server_->grpc_target());
    oip_ = GRPCInferenceService::NewStub(native_->channel());
  }
  void TearDown() override {
    EXPECT_EQ(server_->Stop(SIGTERM, 30), 0) << server_->Output();
  }

  // The OIP twin of a native request, values as raw contents.
  static ModelInferRequest Twin(const v1::NormalizeRequest& r) {
    ModelInferRequest o;
    o.set_model_name("default");
    o.set_id(r.request_id());
    const auto add = [&o](const char* name, const v1::Tensor& t) {
      auto* in = o.add_inputs();
      in->set_name(name);
      in->set_datatype(t.dtype() == v1::DATA_TYPE_BFLOAT16  ? "BF16"
                       : t.dtype() == v1::DATA_TYPE_FLOAT16 ? "FP16"
                       : t.dtype() == v1::DATA_TYPE_INT8    ? "INT8"
                                                            : "FP32");
      in->mutable_shape()->CopyFrom(t.shape());
      if (t.dtype() == v1::DATA_TYPE_INT8) {
        (*in->mutable_parameters())["scale"].set_double_param(t.scale());
        (*in->mutable_parameters())["zero_point"].set_int64_param(
            t.zero_point());
      }
      o.add_raw_input_contents(t.data());
    };
    add("input", r.input());
    if (r.has_gamma()) add("gamma", r.gamma());
    if (r.has_beta()) add("beta", r.beta());
    if (r.has_residual()) add("residual", r.residual());
    if (r.has_epsilon()) {
      (*o.mutable_parameters())["epsilon"].set_double_param(r.epsilon());
    }
    if (r.int8_path() == v1::INT8_PATH_FLOAT) {
      (*o.mutable_parameters())["int8_path"].set_string_param("float");
    }
    o.add_outputs()->set_name("output");
    if (r.return_residual_sum()) o.add_outputs()->set_name("residual_sum");
    if (r.return_statistics()) {
      o.add_outputs()->set_name("mean");
      o.add_outputs()->set_name("rstd");
    }
    return o;
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<NormClient> native_;
  std::unique_ptr<GRPCInferenceService::Stub> oip_;
};

TEST_F(OipTest, HealthAndMetadata) {
  grpc::ClientContext c1, c2, c3, c4, c5;
  inference::ServerLiveResponse live;
  ASSERT_TRUE(oip_->ServerLive(&c1, {}, &live).ok());
  EXPECT_TRUE(live.live());
  inference::ServerReadyResponse ready;
  ASSERT_TRUE(oip_->ServerReady(&c2, {}, &ready).ok());
  EXPECT_TRUE(ready.ready());
  inference::ModelReadyRequest mr;
  mr.set_name("nope");
  inference::ModelReadyResponse model_ready;
  ASSERT_TRUE(oip_->ModelReady(&c3, mr, &model_ready).ok());
  EXPECT_FALSE(model_ready.ready());
  inference::ModelMetadataRequest mm;
  mm.set_name("default");
  inference::ModelMetadataResponse meta;
  ASSERT_TRUE(oip_->ModelMetadata(&c4, mm, &meta).ok());
  EXPECT_EQ(meta.inputs(0).name(), "input");
  EXPECT_EQ(meta.inputs(0).shape_size(), 2);
  EXPECT_EQ(meta.inputs(0).shape(1), -1);
  mm.set_name("nope");
  const grpc::Status missing = oip_->ModelMetadata(&c5, mm, &meta);
  EXPECT_EQ(missing.error_code(), grpc::NOT_FOUND);
  EXPECT_NE(missing.error_message().find("name = 'nope'"), std::string::npos);
  // A version other than "1" is not found by the metadata, config and
  // statistics calls, as ModelInfer and ModelReady treat it; "1" is.
  const std::string version_error =
      "version = '2': normserve models have one version, '1'";
  for (const char* version : {"1", "2"}) {
    const grpc::StatusCode want =
        std::string(version) == "1" ? grpc::OK : grpc::NOT_FOUND;
    const auto check = [&](auto request, auto response, auto call) {
      request.set_name("default");
      request.set_version(version);
      grpc::ClientContext ctx;
      const grpc::Status s = call(&ctx, request, &response);
      EXPECT_EQ(s.error_code(), want) << version;
      if (want != grpc::OK) {
        EXPECT_EQ(s.error_message(), version_error);
      }
    };
    check(inference::ModelMetadataRequest(), inference::ModelMetadataResponse(),
          [&](auto... a) { return oip_->ModelMetadata(a...); });
    check(inference::ModelConfigRequest(), inference::ModelConfigResponse(),
          [&](auto... a) { return oip_->ModelConfig(a...); });
    check(inference::ModelStatisticsRequest(),
          inference::ModelStatisticsResponse(),
          [&](auto... a) { return oip_->ModelStatistics(a...); });
  }
}

TEST_F(OipTest, BothProtocolsGiveBitwiseIdenticalOutputs) {
  std::vector<v1::NormalizeRequest> requests;
  {
    NormalizeInput in;  // fp32, the common case
    in.shape = {3, 768};
    in.values = Random(3 * 768, 1);
    requests.push_back(NormClient::BuildRequest(in));
  }
  {
    NormalizeInput in;  // bf16 with γ/β, a residual and statistics
    in.shape = {2, 5, 96};
    in.values = Random(960, 2);
    in.dtype = v1::DATA_TYPE_BFLOAT16;
    in.residual = Random(960, 3);
    in.gamma = Random(96, 4);
    in.beta = Random(96, 5);
    in.epsilon = 1e-3f;
    in.return_residual_sum = true;
    in.return_statistics = true;
    requests.push_back(NormClient::BuildRequest(in));
  }
  for (const v1::Int8Path path : {v1::INT8_PATH_INTEGER, v1::INT8_PATH_FLOAT}) {
    v1::NormalizeRequest r;  // INT8, both paths
    v1::Tensor* t = r.mutable_input();
    t->add_shape(4);
    t->add_shape(64);
    t->set_dtype(v1::DATA_TYPE_INT8);
    t->set_scale(0.05f);
    t->set_zero_point(3);
    std::mt19937 rng(6);
    for (int i = 0; i < 256; ++i) {
      t->mutable_data()->push_back(static_cast<char>(rng() % 256));
    }
    r.set_int8_path(path);
    requests.push_back(r);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const v1::NormalizeRequest& r = requests[i];
    v1::NormalizeResponse native;
    grpc::ClientContext c1;
    ASSERT_TRUE(native_->stub()->Normalize(&c1, r, &native).ok()) << i;
    ModelInferResponse oip;
    grpc::ClientContext c2;
    const grpc::Status s = oip_->ModelInfer(&c2, Twin(r), &oip);
    ASSERT_TRUE(s.ok()) << i << ": " << s.error_message();
    std::vector<const v1::Tensor*> want = {&native.output()};
    if (r.return_residual_sum()) want.push_back(&native.residual_sum());
    if (r.return_statistics()) {
      want.push_back(&native.mean());
      want.push_back(&native.rstd());
    }
    ASSERT_EQ(oip.raw_output_contents_size(), static_cast<int>(want.size()));
    for (size_t k = 0; k < want.size(); ++k) {
      EXPECT_EQ(oip.raw_output_contents(static_cast<int>(k)), want[k]->data())
          << "request " << i << ", output " << oip.outputs(k).name();
      EXPECT_EQ(std::vector<int64_t>(oip.outputs(k).shape().begin(),
                                     oip.outputs(k).shape().end()),
                std::vector<int64_t>(want[k]->shape().begin(),
                                     want[k]->shape().end()));
    }
    if (r.input().dtype() == v1::DATA_TYPE_INT8) {
      const auto& p = oip.outputs(0).parameters();
      EXPECT_EQ(oip.outputs(0).datatype(), "INT8");
      EXPECT_EQ(static_cast<float>(p.at("scale").double_param()),
                native.output().scale());
      EXPECT_EQ(p.at("zero_point").int64_param(), native.output().zero_point());
    }
  }
}

TEST_F(OipTest, TypedContentsAreAnsweredInKind) {
  ModelInferRequest r;
  r.set_model_name("default");
  auto* in = r.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  in->add_shape(2);
  in->add_shape(4);
  for (float v : {1.f, 2.f, 3.f, 4.f, 10.f, 10.f, 10.f, 10.f}) {
    in->mutable_contents()->add_fp32_contents(v);
  }
  ModelInferResponse out;
  grpc::ClientContext ctx;
  ASSERT_TRUE(oip_->ModelInfer(&ctx, r, &out).ok());
  ASSERT_EQ(out.raw_output_contents_size(), 0);
  const auto& y = out.outputs(0).contents().fp32_contents();
  ASSERT_EQ(y.size(), 8);
  // Row [1,2,3,4]: mean 2.5, var 1.25; a constant row gives exactly 0.
  EXPECT_NEAR(y[0], -1.5 / std::sqrt(1.25 + 1e-5), 1e-6);
  EXPECT_EQ(y[4], 0.0f);
}

TEST_F(OipTest, StatusesSurviveTheWire) {
  NormalizeInput base;
  base.shape = {2, 8};
  base.values = Random(16, 7);
  const ModelInferRequest good = Twin(NormClient::BuildRequest(base));
  const struct {
    std::function<void(ModelInferRequest*)> mutate;
    grpc::StatusCode code;
    const char* message_part;
  } cases[] = {
      {[](auto* r) { r->set_model_name("missing"); }, grpc::NOT_FOUND,
       "model = 'missing'"},
      {[](auto* r) { r->mutable_inputs(0)->set_shape(1, -8); },
       grpc::INVALID_ARGUMENT,
       "input.shape[1] = -8: dimensions must be positive"},
      {[](auto* r) {
         (*r->mutable_parameters())["device"].set_string_param("cuda");
       },
       grpc::FAILED_PRECONDITION, "device = DEVICE_CUDA"},
      {[](auto* r) { r->mutable_raw_input_contents(0)->pop_back(); },
       grpc::INVALID_ARGUMENT, "input (raw_input_contents[0]) has 63 bytes"},
  };
  for (const auto& c : cases) {
    ModelInferRequest r = good;
    c.mutate(&r);
    ModelInferResponse out;
    grpc::ClientContext ctx;
    const grpc::Status s = oip_->ModelInfer(&ctx, r, &out);
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_NE(s.error_message().find(c.message_part), std::string::npos)
        << s.error_message();
  }
}

TEST_F(OipTest, StreamAnswersEveryMessageAndMetricsCountOipCalls) {
  NormalizeInput base;
  base.shape = {1, 768};
  base.values = Random(768, 8);
  const v1::NormalizeRequest native = NormClient::BuildRequest(base);
  v1::NormalizeResponse want;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(native_->stub()->Normalize(&ctx, native, &want).ok());
  }
  constexpr int kMessages = 20, kBad = 7;
  grpc::ClientContext ctx;
  auto stream = oip_->ModelStreamInfer(&ctx);
  for (int i = 0; i < kMessages; ++i) {
    ModelInferRequest r = Twin(native);
    r.set_id(std::to_string(i));
    if (i == kBad) r.mutable_inputs(0)->set_datatype("FP64");
    ASSERT_TRUE(stream->Write(r));
  }
  stream->WritesDone();
  inference::ModelStreamInferResponse answer;
  int answers = 0, errors = 0;
  while (stream->Read(&answer)) {
    ++answers;
    if (!answer.error_message().empty()) {
      ++errors;
      EXPECT_EQ(answer.infer_response().id(), std::to_string(kBad));
      EXPECT_NE(answer.error_message().find("inputs[0].datatype = 'FP64'"),
                std::string::npos)
          << answer.error_message();
    } else {
      EXPECT_EQ(answer.infer_response().raw_output_contents(0),
                want.output().data());
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(answers, kMessages);
  EXPECT_EQ(errors, 1);

  const std::string service = "grpc_service=\"inference.GRPCInferenceService\"";
  const std::vector<std::string> stream_ok = {
      service, "grpc_method=\"ModelStreamInfer\"", "grpc_code=\"OK\""};
  const std::string text = ScrapeUntil(
      server_->metrics_port(), "grpc_server_handled_total", stream_ok, 1);
  EXPECT_EQ(MetricValue(text, "grpc_server_handled_total", stream_ok), 1);
  // The requests computed went through the same stages as native ones.
  EXPECT_EQ(MetricValue(text, "normserve_request_latency_seconds_count",
                        {"model=\"default\""}),
            kMessages - 1 + 1);
  // Each message is counted with its own outcome.
  const std::vector<std::string> messages = {
      service, "grpc_method=\"ModelStreamInfer\""};
  EXPECT_EQ(MetricValue(text, "normserve_requests_total",
                        {messages[0], messages[1], "grpc_code=\"OK\""}),
            kMessages - 1);
  EXPECT_EQ(
      MetricValue(text, "normserve_requests_total",
                  {messages[0], messages[1], "grpc_code=\"INVALID_ARGUMENT\""}),
      1);
}

// The bytes metric counts what the response carries: outputs the client
// did not ask for (computed into scratch) are not sent, so not counted.
TEST_F(OipTest, ResponseBytesCountOnlyTheOutputsRequested) {
  NormalizeInput in;
  in.shape = {128, 1024};
  in.values = Random(128 * 1024, 9);
  v1::NormalizeRequest native = NormClient::BuildRequest(in);
  native.set_return_statistics(true);
  ModelInferRequest r = Twin(native);
  r.clear_outputs();
  r.add_outputs()->set_name("mean");
  grpc::ClientContext ctx;
  inference::ModelInferResponse response;
  ASSERT_TRUE(oip_->ModelInfer(&ctx, r, &response).ok());
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  EXPECT_EQ(response.raw_output_contents(0).size(), 128 * sizeof(float));
  const std::string text =
      ScrapeUntil(server_->metrics_port(), "normserve_response_bytes_total", {},
                  128 * sizeof(float));
  EXPECT_EQ(MetricValue(text, "normserve_response_bytes_total"),
            128 * sizeof(float));
  EXPECT_EQ(MetricValue(text, "normserve_request_bytes_total"),
            128 * 1024 * sizeof(float));
}

}  // namespace
}  // namespace normserve
