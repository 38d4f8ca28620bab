// Validation at the server's edge: every malformed request class gets its
// status and a message naming the field.
#include "server/request_decoder.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "tests/bad_requests.h"

namespace normserve {
namespace {

using testing::BadRequestCase;
using testing::BadRequestCases;
using testing::Registry;
using testing::SetFloats;
using testing::Valid;

TEST(RequestDecoderTest, ValidRequestDecodes) {
  auto models = Registry();
  auto d = DecodeRequest(Valid(), *models, {}, {});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->rows, 3);
  EXPECT_EQ((*d)->params.dim, 4);
  EXPECT_EQ((*d)->params.epsilon, 1e-5f);
  EXPECT_EQ((*d)->params.gamma, nullptr);
}

TEST(RequestDecoderTest, FloatDataIsAcceptedForFloat32) {
  auto models = Registry();
  v1::NormalizeRequest r;
  r.mutable_input()->add_shape(2);
  r.mutable_input()->set_dtype(v1::DATA_TYPE_FLOAT32);
  r.mutable_input()->add_float_data(1);
  r.mutable_input()->add_float_data(2);
  auto d = DecodeRequest(r, *models, {}, {});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(static_cast<const float*>((*d)->input)[1], 2.0f);
}

TEST(RequestDecoderTest, HalfPrecisionInputsAndParametersDecode) {
  auto models = Registry();
  v1::NormalizeRequest r;
  r.mutable_input()->add_shape(2);
  r.mutable_input()->add_shape(2);
  r.mutable_input()->set_dtype(v1::DATA_TYPE_BFLOAT16);
  r.mutable_input()->set_data(std::string(8, '\0'));
  r.mutable_gamma()->add_shape(2);
  r.mutable_gamma()->set_dtype(v1::DATA_TYPE_FLOAT16);
  const uint16_t gamma[2] = {FloatToHalf(0.5f), FloatToHalf(-2.0f)};
  r.mutable_gamma()->set_data(reinterpret_cast<const char*>(gamma), 4);
  r.set_return_statistics(true);
  auto d = DecodeRequest(r, *models, {}, {});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->input_dtype, DType::kBFloat16);
  EXPECT_EQ((*d)->output_dtype, DType::kBFloat16);  // defaults to the input's
  EXPECT_EQ((*d)->params.gamma[0], 0.5f);
  EXPECT_EQ((*d)->params.gamma[1], -2.0f);
  EXPECT_EQ((*d)->stats_shape, (std::vector<int64_t>{2}));
  r.set_output_dtype(v1::DATA_TYPE_FLOAT32);
  auto f = DecodeRequest(r, *models, {}, {});
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->output_dtype, DType::kFloat32);
  EXPECT_FALSE((*f)->key == (*d)->key);  // dtypes are part of the batch key
}

TEST(RequestDecoderTest, ModelShapeAndParametersApply) {
  auto models = Registry();
  v1::NormalizeRequest r;
  r.set_model("fixed");
  SetFloats(r.mutable_input(), {5, 2, 2});
  auto d = DecodeRequest(r, *models, {}, {});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->rows, 5);
  EXPECT_EQ((*d)->params.dim, 4);
  ASSERT_NE((*d)->params.gamma, nullptr);
  EXPECT_EQ((*d)->params.gamma[3], 4.0f);
}

TEST(RequestDecoderTest, SameParametersShareAQueueAndDifferentOnesDoNot) {
  auto models = Registry();
  v1::NormalizeRequest a = Valid(), b = Valid(), c = Valid();
  SetFloats(a.mutable_gamma(), {4});
  SetFloats(b.mutable_gamma(), {4});
  SetFloats(c.mutable_gamma(), {4});
  c.mutable_gamma()->mutable_data()->at(0) ^= 1;
  auto da = DecodeRequest(a, *models, {}, {});
  auto db = DecodeRequest(b, *models, {}, {});
  auto dc = DecodeRequest(c, *models, {}, {});
  ASSERT_TRUE(da.ok() && db.ok() && dc.ok());
  EXPECT_EQ((*da)->key, (*db)->key);
  EXPECT_FALSE((*da)->key == (*dc)->key);
}

// Requests share a batch only when everything the batch computes with is
// equal: each field below, changed alone, gives another batch key. (A
// residual, the statistics and the residual sum are per request: each
// request's rows carry their own.)
TEST(RequestDecoderTest, EveryFieldThatChangesTheResultChangesTheBatchKey) {
  auto models = Registry();
  v1::NormalizeRequest base = Valid();
  SetFloats(base.mutable_gamma(), {4});
  SetFloats(base.mutable_beta(), {4});
  base.set_epsilon(1e-5f);
  auto key = [&](const v1::NormalizeRequest& r) {
    auto d = DecodeRequest(r, *models, {}, {});
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? (*d)->key : BatchKey();
  };
  const BatchKey base_key = key(base);
  EXPECT_EQ(key(base), base_key);
  const std::vector<
      std::pair<const char*, std::function<void(v1::NormalizeRequest*)>>>
      changes = {
          {"epsilon", [](auto* r) { r->set_epsilon(2e-5f); }},
          {"gamma's last value",
           [](auto* r) { r->mutable_gamma()->mutable_data()->back() ^= 1; }},
          {"beta's first value",
           [](auto* r) { r->mutable_beta()->mutable_data()->at(0) ^= 1; }},
          {"kind", [](auto* r) { r->set_kind(v1::NORM_KIND_RMS_NORM); }},
          {"output_dtype",
           [](auto* r) { r->set_output_dtype(v1::DATA_TYPE_FLOAT16); }},
          {"input dtype",
           [](auto* r) {
             r->mutable_input()->set_dtype(v1::DATA_TYPE_BFLOAT16);
             r->mutable_input()->mutable_data()->resize(24);
           }},
          {"row length",
           [](auto* r) {
             SetFloats(r->mutable_input(), {2, 6});
             SetFloats(r->mutable_gamma(), {6});
             SetFloats(r->mutable_beta(), {6});
           }},
      };
  for (const auto& [what, change] : changes) {
    v1::NormalizeRequest r = base;
    change(&r);
    EXPECT_FALSE(key(r) == base_key) << what;
  }
}

TEST(RequestDecoderTest, EveryMalformedRequestGetsItsStatusAndField) {
  auto models = Registry();
  for (const BadRequestCase& c : BadRequestCases()) {
    v1::NormalizeRequest r = Valid();
    c.mutate(&r);
    auto d = DecodeRequest(r, *models, {}, {});
    ASSERT_FALSE(d.ok()) << c.name;
    EXPECT_EQ(d.status().code(), c.code) << c.name << ": " << d.status();
    EXPECT_NE(d.status().message().find(c.message_part),
              absl::string_view::npos)
        << c.name << ": got \"" << d.status().message() << "\"";
  }
}

TEST(RequestDecoderTest, Int8StaysOnTheCpuWhenTheModelDefaultsToCuda) {
  ModelRegistry::Options options;
  options.default_device = DeviceKind::kCuda;
  auto models = ModelRegistry::CreateFromText("", "", options);
  ASSERT_TRUE(models.ok()) << models.status();
  DeviceAvailability devices;
  devices.cuda = true;

  auto floats = DecodeRequest(Valid(), **models, {}, devices);
  ASSERT_TRUE(floats.ok()) << floats.status();
  EXPECT_EQ((*floats)->device, DeviceKind::kCuda);

  v1::NormalizeRequest r = Valid();
  testing::MakeInt8(&r);
  auto unset = DecodeRequest(r, **models, {}, devices);
  ASSERT_TRUE(unset.ok()) << unset.status();
  EXPECT_EQ((*unset)->device, DeviceKind::kCpu);

  r.set_device(v1::DEVICE_CUDA);
  auto cuda = DecodeRequest(r, **models, {}, devices);
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(cuda.status().message().find(
                "device = DEVICE_CUDA: DATA_TYPE_INT8 runs on the CPU only"),
            absl::string_view::npos)
      << cuda.status();
}

TEST(RequestDecoderTest, ElementLimitIsEnforcedBeforeAllocation) {
  auto models = Registry();
  ValidationLimits limits;
  limits.max_elements = 10;
  auto d = DecodeRequest(Valid(), *models, limits, {});
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("more than 10 elements"),
            absl::string_view::npos)
      << d.status();
}

// A response larger than the server sends is refused before it is
// computed, naming each tensor it would carry; it fits at exactly the
// limit less the framing allowance, and without a limit.
TEST(RequestDecoderTest, ResponseOverTheMessageLimitIsRefusedUpFront) {
  ValidationLimits limits;
  limits.max_response_bytes = 16000 + kResponseFramingBytes;
  const ResponsePart output{"output", DType::kFloat32, 4000};  // 16000 bytes
  const ResponsePart mean{"mean", DType::kFloat32, 4};
  EXPECT_TRUE(CheckResponseFits({output}, limits).ok());
  const absl::Status over = CheckResponseFits({output, mean}, limits).status();
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find(
                "response: output 16000 bytes (DATA_TYPE_FLOAT32) + mean 16 "
                "bytes (DATA_TYPE_FLOAT32) = 16016 bytes, over the server's "
                "max_message_bytes 17024 less 1024"),
            absl::string_view::npos)
      << over;
  const ResponsePart half{"output", DType::kBFloat16, 4000};  // 8000 bytes
  EXPECT_TRUE(CheckResponseFits({half, mean}, limits).ok());
  limits.max_response_bytes = 0;  // no limit
  EXPECT_TRUE(CheckResponseFits({output, mean}, limits).ok());
}

}  // namespace
}  // namespace normserve
