// The Open Inference Protocol side of the bad-input matrix
// (tests/bad_requests.h): a native request written the way an OIP client
// writes it, independently of the server's translation; the messages of
// the native cases whose field has another name over OIP; and the mistakes
// only an OIP request can make. Shared by the translation's unit test and
// the over-the-wire test.
#ifndef NORMSERVE_TESTS_OIP_REQUESTS_H_
#define NORMSERVE_TESTS_OIP_REQUESTS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "inference/grpc_service.pb.h"
#include "normserve/v1/normalization_service.pb.h"

namespace normserve {
namespace testing {

using inference::ModelInferRequest;

// The OIP name a client would write for a native dtype; values with no OIP
// name get a made-up one the server must refuse.
inline std::string Datatype(int dtype) {
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
inline ModelInferRequest ToOip(const v1::NormalizeRequest& r) {
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

// Where the OIP names a native case's field differently: the case's name
// and the message part expected over OIP instead.
inline std::map<std::string, std::string> OipMessages() {
  return {
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
      {"scale on a float input",
       "inputs[0].parameters['scale']: only the INT8 tensor 'input' is "
       "quantized (this is 'input', datatype FP32); expected it unset"},
      {"zero point on gamma",
       "inputs[1].parameters['zero_point']: only the INT8 tensor 'input' is "
       "quantized (this is 'gamma', datatype FP32)"},
  };
}

struct OipBadRequestCase {
  const char* name;
  std::function<void(ModelInferRequest*)> mutate;
  absl::StatusCode code;
  const char* message_part;
};

// Mistakes only an OIP request can make, as mutations of ToOip(Valid()).
inline std::vector<OipBadRequestCase> OipBadRequestCases() {
  return {
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
      {"epsilon that float32 rounds to 0",
       [](auto* r) {
         (*r->mutable_parameters())["epsilon"].set_double_param(1e-50);
       },
       absl::StatusCode::kInvalidArgument,
       "parameters['epsilon'] = 1e-50: expected a value float32 holds"},
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
      {"classification asked of an output",
       [](auto* r) {
         auto* o = r->add_outputs();
         o->set_name("output");
         (*o->mutable_parameters())["classification"].set_int64_param(3);
       },
       absl::StatusCode::kInvalidArgument,
       "outputs[0].parameters['classification']: not supported: expected no "
       "output parameters"},
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
}

}  // namespace testing
}  // namespace normserve

#endif  // NORMSERVE_TESTS_OIP_REQUESTS_H_
