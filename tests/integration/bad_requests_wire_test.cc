// The whole bad-input matrix over the wire, against the real server binary:
// every case of tests/bad_requests.h as a unary Normalize call and as a
// message on a NormalizeStream, and every case of the Open Inference
// Protocol's matrix (tests/oip_requests.h: the native cases written the OIP
// way, and the OIP-only mistakes) as a ModelInfer call and as a message on
// a ModelStreamInfer stream. Each gets its status code and a message naming
// its field, as the in-process tests say; the limits only a server process
// applies (message size, element count) too. Meanwhile another thread keeps
// sending valid requests of both protocols, and every one of them is
// answered bitwise equal to the first answer to the same request, which is
// itself within the float32 bound of the float64 reference.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/normserve_client.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.grpc.pb.h"
#include "kernels/reference.h"
#include "normserve/v1/model_config.pb.h"
#include "tests/bad_requests.h"
#include "tests/integration/server_process.h"
#include "tests/oip_requests.h"

#ifndef NORMSERVE_BINARY
#error "NORMSERVE_BINARY must name the server binary"
#endif

namespace normserve {
namespace {

using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using testing::BadRequestCase;
using testing::BadRequestCases;
using testing::Connect;
using testing::HttpGet;
using testing::MetricValue;
using testing::OipBadRequestCase;
using testing::OipBadRequestCases;
using testing::OipMessages;
using testing::ScrapeUntil;
using testing::ServerProcess;
using testing::ToOip;
using testing::Valid;

// The models of the in-process matrix (testing::Registry()), as a model
// config file for the server, so that both see the same models. The file is
// removed with the object.
class ModelConfigFile {
 public:
  ModelConfigFile() : path_(Write()) {}
  ~ModelConfigFile() { std::remove(path_.c_str()); }
  ModelConfigFile(const ModelConfigFile&) = delete;
  ModelConfigFile& operator=(const ModelConfigFile&) = delete;

  std::string flag() const { return "--model_config=" + path_; }

 private:
  static std::string Write();

  const std::string path_;
};

std::string ModelConfigFile::Write() {
  v1::ModelConfigList list;
  const auto registry = testing::Registry();
  for (const Model* m : registry->models()) {
    if (m->name == "default") continue;
    v1::ModelConfig* c = list.add_models();
    c->set_name(m->name);
    c->set_kind(m->kind == NormKind::kRmsNorm ? v1::NORM_KIND_RMS_NORM
                                              : v1::NORM_KIND_LAYER_NORM);
    c->mutable_normalized_shape()->Assign(m->normalized_shape.begin(),
                                          m->normalized_shape.end());
    c->set_epsilon(m->epsilon);
    if (!m->gamma.empty()) {
      c->mutable_gamma()->mutable_values()->Assign(m->gamma.begin(),
                                                   m->gamma.end());
    }
    if (!m->beta.empty()) {
      c->mutable_beta()->mutable_values()->Assign(m->beta.begin(),
                                                  m->beta.end());
    }
    c->set_allow_request_params(m->allow_request_params);
    if (m->int8_output_scale.has_value()) {
      c->set_output_scale(*m->int8_output_scale);
      c->set_output_zero_point(m->int8_output_zero_point);
    }
  }
  std::string text;
  EXPECT_TRUE(google::protobuf::TextFormat::PrintToString(list, &text));
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/bad_requests_models_",
                   getpid(), ".pbtxt");
  std::ofstream(path) << text;
  return path;
}

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.5f, 2.0f);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

// A valid request like the matrix's (3 rows of 4), with random values and
// its own ε, γ and β; and one for the "fixed" model (its own γ).
v1::NormalizeRequest ValidAffine() {
  NormalizeInput in;
  in.shape = {3, 4};
  in.values = Random(12, 1);
  in.epsilon = 1e-3f;
  in.gamma = Random(4, 2);
  in.beta = Random(4, 3);
  return NormClient::BuildRequest(in);
}
v1::NormalizeRequest ValidFixed() {
  NormalizeInput in;
  in.model = "fixed";
  in.shape = {3, 2, 2};
  in.values = Random(12, 4);
  return NormClient::BuildRequest(in);
}

std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

// Whether float32 `output` bytes are within the float32 bound (1e-5 of the
// row's largest value) of the float64 reference for `request`, whose ε, γ
// and β are those given.
bool MatchesReference(const v1::NormalizeRequest& request,
                      const std::string& output, float epsilon,
                      const std::vector<float>& gamma,
                      const std::vector<float>& beta, int64_t dim) {
  const std::vector<float> x = Floats(request.input().data());
  NormParams p;
  p.dim = dim;
  p.epsilon = epsilon;
  p.gamma = gamma.empty() ? nullptr : gamma.data();
  p.beta = beta.empty() ? nullptr : beta.data();
  const int64_t rows = static_cast<int64_t>(x.size()) / dim;
  const std::vector<double> ref = ReferenceNormalize(p, x.data(), rows);
  const std::vector<float> y = Floats(output);
  if (y.size() != ref.size()) return false;
  for (int64_t r = 0; r < rows; ++r) {
    double scale = 0;
    for (int64_t i = 0; i < dim; ++i)
      scale = std::max(scale, std::abs(ref[r * dim + i]));
    for (int64_t i = 0; i < dim; ++i) {
      if (!(std::abs(y[r * dim + i] - ref[r * dim + i]) <= 1e-5 * scale))
        return false;
    }
  }
  return true;
}

// Valid traffic of three kinds (native with request parameters, native for
// the "fixed" model, OIP), sent round-robin from its own thread on its own
// connection until stopped. The first answer to each kind is the baseline,
// checked against the reference; every later answer must equal it bit for
// bit.
class ValidTraffic {
 public:
  explicit ValidTraffic(const std::string& target)
      : client_(Connect(target)),
        oip_(GRPCInferenceService::NewStub(client_->channel())) {
    affine_ = ValidAffine();
    fixed_ = ValidFixed();
    oip_request_ = ToOip(affine_);
    // Baselines, against the reference.
    const std::vector<float> gamma = Floats(affine_.gamma().data());
    const std::vector<float> beta = Floats(affine_.beta().data());
    EXPECT_TRUE(Native(affine_, &affine_baseline_));
    EXPECT_TRUE(
        MatchesReference(affine_, affine_baseline_, 1e-3f, gamma, beta, 4));
    EXPECT_TRUE(Native(fixed_, &fixed_baseline_));
    const auto registry = testing::Registry();
    const Model* fixed = registry->Find("fixed");
    EXPECT_TRUE(MatchesReference(fixed_, fixed_baseline_, fixed->epsilon,
                                 fixed->gamma, fixed->beta, 4));
    // The OIP twin gives the native answer.
    std::string oip_answer;
    EXPECT_TRUE(Oip(&oip_answer));
    EXPECT_EQ(oip_answer, affine_baseline_);
    thread_ = std::thread([this] {
      for (int i = 0; !stop_.load(); ++i) {
        std::string got;
        bool ok;
        switch (i % 3) {
          case 0:
            ok = Native(affine_, &got) && got == affine_baseline_;
            break;
          case 1:
            ok = Native(fixed_, &got) && got == fixed_baseline_;
            break;
          default:
            ok = Oip(&got) && got == affine_baseline_;
        }
        ok ? ++right_ : ++wrong_;
      }
    });
  }

  // Stops the thread; returns the answers that were right and wrong.
  std::pair<int, int> Stop() {
    stop_ = true;
    thread_.join();
    return {right_.load(), wrong_.load()};
  }
  int answered() const { return right_.load() + wrong_.load(); }

 private:
  bool Native(const v1::NormalizeRequest& request, std::string* output) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    v1::NormalizeResponse response;
    const grpc::Status s = client_->stub()->Normalize(&ctx, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    *output = response.output().data();
    return s.ok();
  }
  bool Oip(std::string* output) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    ModelInferResponse response;
    const grpc::Status s = oip_->ModelInfer(&ctx, oip_request_, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (!s.ok() || response.raw_output_contents_size() != 1) return false;
    *output = response.raw_output_contents(0);
    return true;
  }

  std::unique_ptr<NormClient> client_;
  std::unique_ptr<GRPCInferenceService::Stub> oip_;
  v1::NormalizeRequest affine_, fixed_;
  ModelInferRequest oip_request_;
  std::string affine_baseline_, fixed_baseline_;
  std::atomic<bool> stop_{false};
  std::atomic<int> right_{0}, wrong_{0};
  std::thread thread_;
};

// The server (CPU only: DEVICE_CUDA requests are refused on every machine,
// as the matrix expects) with the matrix's models, and valid traffic
// running for the whole test.
class BadRequestsWireTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(
        NORMSERVE_BINARY,
        std::vector<std::string>{models_.flag(), "--device=cpu"});
    client_ = Connect(server_->grpc_target());
    oip_ = GRPCInferenceService::NewStub(client_->channel());
    traffic_ = std::make_unique<ValidTraffic>(server_->grpc_target());
    // The valid traffic is under way before the first bad request.
    while (traffic_->answered() < 3) absl::SleepFor(absl::Milliseconds(1));
    answered_before_ = traffic_->answered();
  }
  void TearDown() override {
    // The valid traffic keeps being answered: once more after the bad
    // requests, and once more after that. Bounded waits, not fixed sleeps:
    // a short test on a loaded sanitizer build may finish between two
    // answers.
    EXPECT_TRUE(AnsweredBeyond(answered_before_))
        << "no valid request was answered after the bad ones were sent";
    EXPECT_TRUE(AnsweredBeyond(traffic_->answered()))
        << "the valid traffic stalled";
    const auto [right, wrong] = traffic_->Stop();
    EXPECT_GT(right, 0);
    EXPECT_EQ(wrong, 0) << "valid requests answered wrongly or not at all";
    EXPECT_EQ(server_->Stop(SIGTERM, 30), 0) << server_->Output();
  }

  // Whether the valid traffic answers more than `count` within 10 s.
  bool AnsweredBeyond(int count) {
    const absl::Time limit = absl::Now() + absl::Seconds(10);
    while (traffic_->answered() <= count) {
      if (absl::Now() > limit) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }

  const ModelConfigFile models_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<NormClient> client_;
  std::unique_ptr<GRPCInferenceService::Stub> oip_;
  std::unique_ptr<ValidTraffic> traffic_;
  int answered_before_ = 0;
};

grpc::StatusCode GrpcCode(absl::StatusCode code) {
  return static_cast<grpc::StatusCode>(code);
}

TEST_F(BadRequestsWireTest, TheModelsMatchTheInProcessMatrix) {
  auto listed = client_->ListModels();
  ASSERT_TRUE(listed.ok()) << listed.status();
  const auto registry = testing::Registry();
  std::vector<std::string> names;
  for (const auto& m : listed->models()) {
    names.push_back(m.name());
    const Model* want = registry->Find(m.name());
    ASSERT_NE(want, nullptr) << m.name();
    EXPECT_EQ(std::vector<int64_t>(m.normalized_shape().begin(),
                                   m.normalized_shape().end()),
              want->normalized_shape)
        << m.name();
    EXPECT_EQ(m.has_gamma(), !want->gamma.empty()) << m.name();
    EXPECT_EQ(m.has_beta(), !want->beta.empty()) << m.name();
    EXPECT_EQ(m.allows_request_params(), want->allow_request_params)
        << m.name();
  }
  EXPECT_EQ(names.size(), registry->models().size());
}

TEST_F(BadRequestsWireTest, EveryNativeCaseUnaryGetsItsStatusAndField) {
  std::map<grpc::StatusCode, int> sent;
  for (const BadRequestCase& c : BadRequestCases()) {
    v1::NormalizeRequest request = Valid();
    c.mutate(&request);
    grpc::ClientContext ctx;
    v1::NormalizeResponse response;
    const grpc::Status s = client_->stub()->Normalize(&ctx, request, &response);
    EXPECT_EQ(s.error_code(), GrpcCode(c.code))
        << c.name << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(c.message_part), std::string::npos)
        << c.name << ": got \"" << s.error_message() << "\", want \""
        << c.message_part << "\"";
    ++sent[GrpcCode(c.code)];
  }
  // The server counted each under its code.
  for (const auto& [code, n] : sent) {
    const std::map<grpc::StatusCode, const char*> names = {
        {grpc::INVALID_ARGUMENT, "INVALID_ARGUMENT"},
        {grpc::NOT_FOUND, "NOT_FOUND"},
        {grpc::FAILED_PRECONDITION, "FAILED_PRECONDITION"}};
    ASSERT_EQ(names.count(code), 1u) << "a code the matrix did not have";
    const char* name = names.at(code);
    const std::vector<std::string> labels = {
        "grpc_method=\"Normalize\"", absl::StrCat("grpc_code=\"", name, "\"")};
    const std::string text = ScrapeUntil(
        server_->metrics_port(), "grpc_server_handled_total", labels, n);
    EXPECT_EQ(MetricValue(text, "grpc_server_handled_total", labels), n)
        << name;
  }
}

TEST_F(BadRequestsWireTest, EveryNativeCaseOnAStreamGetsAnErrorAnswer) {
  const std::vector<BadRequestCase> cases = BadRequestCases();
  const v1::NormalizeRequest good = ValidAffine();
  std::string good_output;
  {
    grpc::ClientContext ctx;
    v1::NormalizeResponse response;
    ASSERT_TRUE(client_->stub()->Normalize(&ctx, good, &response).ok());
    good_output = response.output().data();
  }
  grpc::ClientContext ctx;
  auto stream = client_->stub()->NormalizeStream(&ctx);
  // Each bad message between two good ones.
  for (size_t i = 0; i < cases.size(); ++i) {
    v1::NormalizeStreamRequest msg;
    *msg.mutable_request() = good;
    msg.mutable_request()->set_request_id(absl::StrCat("good ", i));
    ASSERT_TRUE(stream->Write(msg));
    *msg.mutable_request() = Valid();
    cases[i].mutate(msg.mutable_request());
    msg.mutable_request()->set_request_id(absl::StrCat("bad ", i));
    ASSERT_TRUE(stream->Write(msg));
  }
  stream->WritesDone();
  v1::NormalizeStreamResponse answer;
  std::map<std::string, v1::NormalizeStreamResponse> answers;
  while (stream->Read(&answer)) {
    EXPECT_TRUE(answers.emplace(answer.request_id(), answer).second)
        << "two answers for " << answer.request_id();
  }
  const grpc::Status final_status = stream->Finish();
  EXPECT_TRUE(final_status.ok()) << final_status.error_message();
  EXPECT_EQ(answers.size(), 2 * cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto good_answer = answers.find(absl::StrCat("good ", i));
    ASSERT_NE(good_answer, answers.end()) << i;
    EXPECT_EQ(good_answer->second.status_code(), 0)
        << good_answer->second.status_message();
    EXPECT_EQ(good_answer->second.response().output().data(), good_output)
        << "good " << i;
    const auto bad = answers.find(absl::StrCat("bad ", i));
    ASSERT_NE(bad, answers.end()) << cases[i].name;
    EXPECT_EQ(bad->second.status_code(), static_cast<int>(cases[i].code))
        << cases[i].name << ": " << bad->second.status_message();
    EXPECT_NE(bad->second.status_message().find(cases[i].message_part),
              std::string::npos)
        << cases[i].name << ": got \"" << bad->second.status_message() << "\"";
    EXPECT_FALSE(bad->second.has_response()) << cases[i].name;
  }
}

// Every OIP case: the native matrix written the OIP way (with the messages
// that name OIP fields where those differ), then the OIP-only mistakes.
struct OipCase {
  std::string name;
  ModelInferRequest request;
  grpc::StatusCode code;
  std::string message_part;
};
std::vector<OipCase> AllOipCases() {
  std::vector<OipCase> all;
  const std::map<std::string, std::string> renamed = OipMessages();
  for (const BadRequestCase& c : BadRequestCases()) {
    v1::NormalizeRequest native = Valid();
    c.mutate(&native);
    const auto it = renamed.find(c.name);
    all.push_back({c.name, ToOip(native), GrpcCode(c.code),
                   it != renamed.end() ? it->second : c.message_part});
  }
  for (const OipBadRequestCase& c : OipBadRequestCases()) {
    ModelInferRequest request = ToOip(Valid());
    c.mutate(&request);
    all.push_back({c.name, request, GrpcCode(c.code), c.message_part});
  }
  return all;
}

TEST_F(BadRequestsWireTest, EveryOipCaseUnaryGetsItsStatusAndField) {
  const std::vector<OipCase> cases = AllOipCases();
  EXPECT_EQ(cases.size(),
            BadRequestCases().size() + OipBadRequestCases().size());
  for (const OipCase& c : cases) {
    grpc::ClientContext ctx;
    ModelInferResponse response;
    const grpc::Status s = oip_->ModelInfer(&ctx, c.request, &response);
    EXPECT_EQ(s.error_code(), c.code) << c.name << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(c.message_part), std::string::npos)
        << c.name << ": got \"" << s.error_message() << "\", want \""
        << c.message_part << "\"";
  }
}

TEST_F(BadRequestsWireTest, EveryOipCaseOnAStreamGetsAnErrorAnswer) {
  const std::vector<OipCase> cases = AllOipCases();
  ModelInferRequest good = ToOip(ValidAffine());
  std::string good_output;
  {
    grpc::ClientContext ctx;
    ModelInferResponse response;
    ASSERT_TRUE(oip_->ModelInfer(&ctx, good, &response).ok());
    good_output = response.raw_output_contents(0);
  }
  grpc::ClientContext ctx;
  auto stream = oip_->ModelStreamInfer(&ctx);
  for (size_t i = 0; i < cases.size(); ++i) {
    good.set_id(absl::StrCat("good ", i));
    ASSERT_TRUE(stream->Write(good));
    ModelInferRequest bad = cases[i].request;
    bad.set_id(absl::StrCat("bad ", i));
    ASSERT_TRUE(stream->Write(bad));
  }
  stream->WritesDone();
  inference::ModelStreamInferResponse answer;
  std::map<std::string, inference::ModelStreamInferResponse> answers;
  while (stream->Read(&answer)) {
    EXPECT_TRUE(answers.emplace(answer.infer_response().id(), answer).second)
        << "two answers for " << answer.infer_response().id();
  }
  const grpc::Status final_status = stream->Finish();
  EXPECT_TRUE(final_status.ok()) << final_status.error_message();
  EXPECT_EQ(answers.size(), 2 * cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto good_answer = answers.find(absl::StrCat("good ", i));
    ASSERT_NE(good_answer, answers.end()) << i;
    EXPECT_EQ(good_answer->second.error_message(), "");
    ASSERT_EQ(good_answer->second.infer_response().raw_output_contents_size(),
              1);
    EXPECT_EQ(good_answer->second.infer_response().raw_output_contents(0),
              good_output);
    // OIP stream answers carry a message, not a code.
    const auto bad = answers.find(absl::StrCat("bad ", i));
    ASSERT_NE(bad, answers.end()) << cases[i].name;
    EXPECT_NE(bad->second.error_message().find(cases[i].message_part),
              std::string::npos)
        << cases[i].name << ": got \"" << bad->second.error_message() << "\"";
  }
}

// The limits a server process applies from its flags: the message size
// (gRPC's own check, before any decoding) and the element count.
TEST(BadRequestsWireLimitsTest, OversizedMessagesAndTensorsAreRefused) {
  const ModelConfigFile models;
  ServerProcess server(
      NORMSERVE_BINARY,
      {models.flag(), "--max_message_bytes=1048576", "--max_elements=300000"});
  ValidTraffic traffic(server.grpc_target());
  auto client = Connect(server.grpc_target());
  auto oip = GRPCInferenceService::NewStub(client->channel());
  NormalizeInput big;
  big.shape = {2, 200000};  // 1.6 MB
  big.values.assign(400000, 1.0f);
  NormalizeInput many;
  many.shape = {1, 300001};  // 600 KB, one element too many
  many.values.assign(300001, 1.0f);
  many.dtype = v1::DATA_TYPE_BFLOAT16;
  // 200000 bfloat16 elements and their residual in (800 KB); float32 out,
  // the bfloat16 sum and the statistics back: 1.2 MB.
  NormalizeInput wide;
  wide.shape = {2, 100000};
  wide.values.assign(200000, 1.0f);
  wide.residual.assign(200000, 0.5f);
  wide.dtype = v1::DATA_TYPE_BFLOAT16;
  wide.output_dtype = v1::DATA_TYPE_FLOAT32;
  wide.return_residual_sum = true;
  wide.return_statistics = true;
  const struct {
    const char* name;
    v1::NormalizeRequest request;
    grpc::StatusCode code;
    const char* message_part;
  } cases[] = {
      {"message over --max_message_bytes", NormClient::BuildRequest(big),
       grpc::RESOURCE_EXHAUSTED, "larger than max"},
      {"tensor over --max_elements", NormClient::BuildRequest(many),
       grpc::INVALID_ARGUMENT, "more than 300000 elements"},
      {"response over --max_message_bytes", NormClient::BuildRequest(wide),
       grpc::RESOURCE_EXHAUSTED,
       "= 1200016 bytes, over the server's max_message_bytes 1048576 less "
       "1024"},
  };
  for (const auto& c : cases) {
    grpc::ClientContext ctx;
    v1::NormalizeResponse response;
    const grpc::Status s =
        client->stub()->Normalize(&ctx, c.request, &response);
    EXPECT_EQ(s.error_code(), c.code) << c.name << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(c.message_part), std::string::npos)
        << c.name << ": " << s.error_message();
    grpc::ClientContext oip_ctx;
    ModelInferResponse oip_response;
    const grpc::Status o =
        oip->ModelInfer(&oip_ctx, ToOip(c.request), &oip_response);
    EXPECT_EQ(o.error_code(), c.code) << c.name << ": " << o.error_message();
    EXPECT_NE(o.error_message().find(c.message_part), std::string::npos)
        << c.name << ": " << o.error_message();
  }
  // Over OIP only the outputs asked for are sent: the same request asking
  // for the mean alone fits.
  {
    ModelInferRequest mean_only = ToOip(NormClient::BuildRequest(wide));
    mean_only.clear_outputs();
    mean_only.add_outputs()->set_name("mean");
    grpc::ClientContext ctx;
    ModelInferResponse response;
    const grpc::Status o = oip->ModelInfer(&ctx, mean_only, &response);
    EXPECT_TRUE(o.ok()) << o.error_message();
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).name(), "mean");
  }
  const auto [right, wrong] = traffic.Stop();
  EXPECT_GT(right, 0);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0) << server.Output();
}

// Strings the client chose come back in messages (a model name) and answers
// (a request id). A megabyte model name gets its NOT_FOUND, with the message
// cut short (whole it would overflow the client's metadata limit: a
// transport error instead of the status); a request id over 256 bytes is
// refused, and the stream answer does not echo it.
TEST(BadRequestsWireLimitsTest, LongClientStringsGetTheirStatus) {
  ServerProcess server(NORMSERVE_BINARY, {});
  auto client = Connect(server.grpc_target());
  auto oip = GRPCInferenceService::NewStub(client->channel());
  const std::string long_name(1 << 20, 'm');
  v1::NormalizeRequest unknown = Valid();
  unknown.set_model(long_name);
  {
    grpc::ClientContext ctx;
    v1::NormalizeResponse response;
    const grpc::Status s = client->stub()->Normalize(&ctx, unknown, &response);
    EXPECT_EQ(s.error_code(), grpc::NOT_FOUND) << s.error_message().size();
    EXPECT_EQ(s.error_message().rfind("model = 'mmmm", 0), 0u);
    EXPECT_NE(s.error_message().find("... (message cut: 1048618 bytes)"),
              std::string::npos)
        << s.error_message().substr(s.error_message().size() - 80);
    EXPECT_LE(s.error_message().size(), 1024u);
  }
  {
    grpc::ClientContext ctx;
    ModelInferResponse response;
    const grpc::Status o = oip->ModelInfer(&ctx, ToOip(unknown), &response);
    EXPECT_EQ(o.error_code(), grpc::NOT_FOUND) << o.error_message().size();
    EXPECT_NE(o.error_message().find("message cut"), std::string::npos);
    EXPECT_LE(o.error_message().size(), 1024u);
  }
  v1::NormalizeRequest long_id = Valid();
  long_id.set_request_id(std::string(257, 'i'));
  {
    grpc::ClientContext ctx;
    v1::NormalizeResponse response;
    const grpc::Status s = client->stub()->Normalize(&ctx, long_id, &response);
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(),
              "request_id has 257 bytes: expected at most 256");
    grpc::ClientContext oip_ctx;
    ModelInferResponse oip_response;
    const grpc::Status o =
        oip->ModelInfer(&oip_ctx, ToOip(long_id), &oip_response);
    EXPECT_EQ(o.error_code(), grpc::INVALID_ARGUMENT);
    EXPECT_EQ(o.error_message(), "id has 257 bytes: expected at most 256");
  }
  // On a stream: the error answer, without the id, and the stream goes on;
  // an id of 256 bytes is echoed.
  grpc::ClientContext ctx;
  auto stream = client->stub()->NormalizeStream(&ctx);
  v1::NormalizeStreamRequest msg;
  *msg.mutable_request() = long_id;
  ASSERT_TRUE(stream->Write(msg));
  v1::NormalizeStreamResponse answer;
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.status_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(answer.status_message(),
            "request_id has 257 bytes: expected at most 256");
  EXPECT_EQ(answer.request_id(), "");
  msg.mutable_request()->set_request_id(std::string(256, 'i'));
  ASSERT_TRUE(stream->Write(msg));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.status_code(), 0) << answer.status_message();
  EXPECT_EQ(answer.request_id(), std::string(256, 'i'));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(server.Stop(SIGTERM, 30), 0) << server.Output();
}

}  // namespace
}  // namespace normserve
