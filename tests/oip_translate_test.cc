// The Open Inference Protocol mapping: every case of the native bad-input
// matrix, sent the OIP way, gets the same status and names the same field;
// OIP-level mistakes get their own precise messages; and a valid OIP
// request decodes to exactly what the native one does.
#include "server/oip_translate.h"

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/bad_requests.h"
#include "tests/oip_requests.h"

namespace normserve {
namespace {

using inference::ModelInferRequest;
using testing::BadRequestCase;
using testing::BadRequestCases;
using testing::OipBadRequestCase;
using testing::OipBadRequestCases;
using testing::OipMessages;
using testing::Registry;
using testing::ToOip;
using testing::Valid;

absl::StatusOr<std::unique_ptr<DecodedRequest>> Decode(
    const ModelInferRequest& request, const ModelRegistry& models,
    OipRequest* oip) {
  if (absl::Status s = TranslateInferRequest(request, oip); !s.ok()) return s;
  return DecodeRequest(oip->native, models, {}, {}, &oip->payloads);
}

TEST(OipTranslateTest, EveryNativeBadRequestFailsTheSameWayOverOip) {
  const std::map<std::string, std::string> oip_message = OipMessages();
  auto models = Registry();
  for (const BadRequestCase& c : BadRequestCases()) {
    v1::NormalizeRequest native = Valid();
    c.mutate(&native);
    const ModelInferRequest request = ToOip(native);
    OipRequest oip;
    auto d = Decode(request, *models, &oip);
    ASSERT_FALSE(d.ok()) << c.name;
    EXPECT_EQ(d.status().code(), c.code) << c.name << ": " << d.status();
    const auto it = oip_message.find(c.name);
    const std::string want =
        it != oip_message.end() ? it->second : c.message_part;
    EXPECT_NE(d.status().message().find(want), absl::string_view::npos)
        << c.name << ": got \"" << d.status().message() << "\", want \"" << want
        << "\"";
  }
}

TEST(OipTranslateTest, OipLevelMistakesNameTheirField) {
  const std::vector<OipBadRequestCase> cases = OipBadRequestCases();
  auto models = Registry();
  for (const auto& c : cases) {
    ModelInferRequest request = ToOip(Valid());
    c.mutate(&request);
    OipRequest oip;
    auto d = Decode(request, *models, &oip);
    ASSERT_FALSE(d.ok()) << c.name;
    EXPECT_EQ(d.status().code(), c.code) << c.name << ": " << d.status();
    EXPECT_NE(d.status().message().find(c.message_part),
              absl::string_view::npos)
        << c.name << ": got \"" << d.status().message() << "\"";
  }
}

TEST(OipTranslateTest, ValidRequestsDecodeLikeTheirNativeTwins) {
  auto models = Registry();
  v1::NormalizeRequest native = Valid();
  native.set_epsilon(1e-3f);
  native.set_kind(v1::NORM_KIND_RMS_NORM);
  native.set_return_statistics(true);
  testing::SetFloats(native.mutable_gamma(), {4});
  testing::SetFloats(native.mutable_residual(), {3, 4});
  auto want = DecodeRequest(native, *models, {}, {});
  ASSERT_TRUE(want.ok()) << want.status();

  const ModelInferRequest request = ToOip(native);
  OipRequest oip;
  auto got = Decode(request, *models, &oip);
  ASSERT_TRUE(got.ok()) << got.status();
  const DecodedRequest& a = **want;
  const DecodedRequest& b = **got;
  EXPECT_EQ(a.key, b.key);
  EXPECT_EQ(a.shape, b.shape);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.params.epsilon, b.params.epsilon);
  EXPECT_EQ(a.params.kind, b.params.kind);
  EXPECT_EQ(b.params.gamma[3], 1.5f);
  EXPECT_TRUE(b.return_statistics);
  EXPECT_NE(b.residual, nullptr);
  EXPECT_EQ(oip.outputs, (std::vector<std::string>{"output", "mean", "rstd"}));
  // Raw values are read in place, not copied.
  EXPECT_EQ(b.input, request.raw_input_contents(0).data());
}

TEST(OipTranslateTest, TypedInt8ValuesAreNarrowedOnce) {
  auto models = Registry();
  ModelInferRequest r;
  auto* in = r.add_inputs();
  in->set_name("input");
  in->set_datatype("INT8");
  in->add_shape(2);
  in->add_shape(3);
  (*in->mutable_parameters())["scale"].set_double_param(0.5);
  (*in->mutable_parameters())["zero_point"].set_int64_param(-3);
  for (int v : {-128, -1, 0, 1, 2, 127})
    in->mutable_contents()->add_int_contents(v);
  OipRequest oip;
  auto d = Decode(r, *models, &oip);
  ASSERT_TRUE(d.ok()) << d.status();
  const auto* values = static_cast<const int8_t*>((*d)->input);
  EXPECT_EQ(values[0], -128);
  EXPECT_EQ(values[5], 127);
  EXPECT_EQ((*d)->int8.input_scale, 0.5f);
  EXPECT_EQ((*d)->int8.input_zero_point, -3);
  EXPECT_TRUE(oip.typed);
}

}  // namespace
}  // namespace normserve
