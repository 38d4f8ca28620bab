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

namespace normserve {
namespace {

using inference::ModelInferRequest;
using testing::BadRequestCase;
using testing::BadRequestCases;
using testing::Registry;
using testing::Valid;

// The OIP name a client would write for a native dtype; values with no OIP
// name get a made-up one the server must refuse.
std::string Datatype(int dtype) {
  switch (dtype) {
    case v1::DATA_TYPE_FLOAT32:
      return "FP32";
    case v1::DATA_TYPE_FLOAT16:
      return "FP16";
    case v1::DATA_TYPE_BFLOAT16:
      return "BF16";
    case v1::DATA_TYPE_INT8:
      return "INT8";
    case v1::DATA_TYPE_UNSPECIFIED:
      return "";
    default:
      return absl::StrCat("DT_", dtype);
  }
}

// Writes a native request as a client of the Open Inference Protocol would
// (independently of the server's translation): tensors by name, values in
// raw_input_contents, or typed fp32_contents when any tensor used
// float_data, parameters by their documented names.
ModelInferRequest ToOip(const v1::NormalizeRequest& r) {
  ModelInferRequest o;
  o.set_model_name(r.model());
  o.set_id(r.request_id());
  auto& params = *o.mutable_parameters();
  if (r.has_epsilon()) params["epsilon"].set_double_param(r.epsilon());
  if (r.has_normalized_ndim()) {
    params["normalized_ndim"].set_int64_param(r.normalized_ndim());
  }
  switch (r.kind()) {
    case v1::NORM_KIND_UNSPECIFIED:
      break;
    case v1::NORM_KIND_LAYER_NORM:
      params["kind"].set_string_param("layer_norm");
      break;
    case v1::NORM_KIND_RMS_NORM:
      params["kind"].set_string_param("rms_norm");
      break;
    default:
      params["kind"].set_string_param(absl::StrCat("kind_", r.kind()));
  }
  if (r.output_dtype() != v1::DATA_TYPE_UNSPECIFIED) {
    params["output_datatype"].set_string_param(Datatype(r.output_dtype()));
  }
  switch (r.device()) {
    case v1::DEVICE_UNSPECIFIED:
      break;
    case v1::DEVICE_CPU:
      params["device"].set_string_param("cpu");
      break;
    case v1::DEVICE_CUDA:
      params["device"].set_string_param("cuda");
      break;
    default:
      params["device"].set_string_param(absl::StrCat("device_", r.device()));
  }
  if (r.int8_path() == v1::INT8_PATH_FLOAT) {
    params["int8_path"].set_string_param("float");
  }
  if (r.has_output_scale()) {
    params["output_scale"].set_double_param(r.output_scale());
  }
  if (r.has_output_zero_point()) {
    params["output_zero_point"].set_int64_param(r.output_zero_point());
  }
  const std::pair<const char*, const v1::Tensor*> tensors[] = {
      {"input", r.has_input() ? &r.input() : nullptr},
      {"gamma", r.has_gamma() ? &r.gamma() : nullptr},
      {"beta", r.has_beta() ? &r.beta() : nullptr},
      {"residual", r.has_residual() ? &r.residual() : nullptr}};
  bool typed = false;
  for (const auto& [name, t] : tensors) {
    if (t != nullptr && t->float_data_size() > 0) typed = true;
  }
  for (const auto& [name, t] : tensors) {
    if (t == nullptr) continue;
    ModelInferRequest::InferInputTensor* in = o.add_inputs();
    in->set_name(name);
    in->set_datatype(Datatype(t->dtype()));
    in->mutable_shape()->CopyFrom(t->shape());
    if (t->scale() != 0) {
      (*in->mutable_parameters())["scale"].set_double_param(t->scale());
    }
    if (t->zero_point() != 0) {
      (*in->mutable_parameters())["zero_point"].set_int64_param(
          t->zero_point());
    }
    if (typed) {
      in->mutable_contents()->mutable_fp32_contents()->CopyFrom(
          t->float_data());
    }
    if (!typed || !t->data().empty()) o.add_raw_input_contents(t->data());
  }
  if (r.return_statistics()) {
    o.add_outputs()->set_name("output");
    o.add_outputs()->set_name("mean");
    o.add_outputs()->set_name("rstd");
  }
  if (r.return_residual_sum()) o.add_outputs()->set_name("residual_sum");
  return o;
}

absl::StatusOr<std::unique_ptr<DecodedRequest>> Decode(
    const ModelInferRequest& request, const ModelRegistry& models,
    OipRequest* oip) {
  if (absl::Status s = TranslateInferRequest(request, oip); !s.ok()) return s;
  return DecodeRequest(oip->native, models, {}, {}, &oip->payloads);
}

TEST(OipTranslateTest, EveryNativeBadRequestFailsTheSameWayOverOip) {
  // Where the OIP names the field differently, the message says so.
  const std::map<std::string, std::string> oip_message = {
      {"missing input", "inputs: no tensor named 'input'"},
      {"dtype unset",
       "inputs[0].datatype = '': expected FP32, FP16, BF16 or INT8"},
      {"dtype unknown", "inputs[0].datatype = 'DT_99'"},
      {"int8 zero point out of range",
       "inputs[0].parameters['zero_point'] = 200: expected -128 to 127"},
      {"float_data with float16",
       "inputs[0]: FP16 values must be sent in raw_input_contents"},
      {"float16 data length",
       "input (raw_input_contents[0]) has 48 bytes: shape [3, 4] of "
       "DATA_TYPE_FLOAT16 needs 24"},
      {"data too short", "input (raw_input_contents[0]) has 47 bytes"},
      {"both data and float_data",
       "inputs[0].contents is set alongside raw_input_contents"},
      {"float_data count",
       "input (inputs[0].contents.fp32_contents) has 1 values: shape [3, 4] "
       "needs 12"},
      {"gamma short data", "gamma (raw_input_contents[1]) has 3 bytes"},
      {"kind unknown",
       "parameters['kind'] = 'kind_7': expected layer_norm or rms_norm"},
      {"device unknown",
       "parameters['device'] = 'device_5': expected cpu or cuda"},
  };
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
  const struct {
    const char* name;
    std::function<void(ModelInferRequest*)> mutate;
    absl::StatusCode code;
    const char* message_part;
  } cases[] = {
      {"unknown input name",
       [](auto* r) { r->mutable_inputs(0)->set_name("x"); },
       absl::StatusCode::kInvalidArgument,
       "inputs[0].name = 'x': expected input, gamma, beta or residual"},
      {"input twice",
       [](auto* r) {
         *r->add_inputs() = r->inputs(0);
         r->add_raw_input_contents(r->raw_input_contents(0));
       },
       absl::StatusCode::kInvalidArgument,
       "inputs[1].name = 'input': the request already has an input"},
      {"raw contents count", [](auto* r) { r->add_raw_input_contents("x"); },
       absl::StatusCode::kInvalidArgument,
       "raw_input_contents has 2 entries: expected one per input (1)"},
      {"unknown parameter",
       [](auto* r) { (*r->mutable_parameters())["eps"].set_double_param(1); },
       absl::StatusCode::kInvalidArgument, "parameters['eps']: unknown"},
      {"parameter type",
       [](auto* r) {
         (*r->mutable_parameters())["epsilon"].set_string_param("1e-5");
       },
       absl::StatusCode::kInvalidArgument,
       "parameters['epsilon']: expected a double_param"},
      {"normalized_ndim beyond int32",
       [](auto* r) {
         (*r->mutable_parameters())["normalized_ndim"].set_int64_param(
             int64_t{1} << 40);
       },
       absl::StatusCode::kInvalidArgument, "out of the int32 range"},
      {"unknown output",
       [](auto* r) { r->add_outputs()->set_name("variance"); },
       absl::StatusCode::kInvalidArgument,
       "outputs[0].name = 'variance': expected output, mean, rstd or "
       "residual_sum"},
      {"output twice",
       [](auto* r) {
         r->add_outputs()->set_name("mean");
         r->add_outputs()->set_name("mean");
       },
       absl::StatusCode::kInvalidArgument,
       "outputs[1].name = 'mean': requested twice"},
      {"unknown version", [](auto* r) { r->set_model_version("2"); },
       absl::StatusCode::kNotFound, "model_version = '2'"},
      {"unknown tensor parameter",
       [](auto* r) {
         (*r->mutable_inputs(0)->mutable_parameters())["shift"].set_int64_param(
             1);
       },
       absl::StatusCode::kInvalidArgument,
       "inputs[0].parameters['shift']: unknown parameter"},
      {"int8 typed value out of range",
       [](auto* r) {
         r->clear_raw_input_contents();
         auto* in = r->mutable_inputs(0);
         in->set_datatype("INT8");
         (*in->mutable_parameters())["scale"].set_double_param(0.1);
         for (int i = 0; i < 12; ++i) {
           in->mutable_contents()->add_int_contents(i == 5 ? 300 : 1);
         }
       },
       absl::StatusCode::kInvalidArgument,
       "inputs[0].contents.int_contents[5] = 300: expected -128 to 127"},
      {"fp32 typed in the wrong field",
       [](auto* r) {
         r->clear_raw_input_contents();
         r->mutable_inputs(0)->mutable_contents()->add_fp64_contents(1.0);
       },
       absl::StatusCode::kInvalidArgument,
       "inputs[0].contents: FP32 tensors carry typed values in "
       "fp32_contents"},
  };
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
