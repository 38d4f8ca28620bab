#include "server/oip_translate.h"

#include <cmath>
#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/internal/status_macros.h"

namespace normserve {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;

constexpr char kDatatypes[] = "FP32, FP16, BF16 or INT8";

std::optional<v1::DataType> ProtoDtype(absl::string_view name) {
  if (name == "FP32") return v1::DATA_TYPE_FLOAT32;
  if (name == "FP16") return v1::DATA_TYPE_FLOAT16;
  if (name == "BF16") return v1::DATA_TYPE_BFLOAT16;
  if (name == "INT8") return v1::DATA_TYPE_INT8;
  return std::nullopt;
}

absl::Status WrongType(absl::string_view key, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("parameters['", key, "']: expected a ", want));
}

absl::Status BadValue(absl::string_view key, absl::string_view value,
                      absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("parameters['", key, "'] = '", value, "': expected ", want));
}

// A double parameter as the float the native request carries; a finite,
// non-zero value that float32 cannot hold (it would become 0 or Inf, and
// the native check would then quote a value the client never sent) is
// refused here, naming the parameter and the value sent.
absl::StatusOr<float> FloatParameter(absl::string_view field, double d) {
  const float v = static_cast<float>(d);
  if (std::isfinite(d) && d != 0 && (v == 0 || !std::isfinite(v))) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " = ", absl::SixDigits(d),
        ": expected a value float32 holds (magnitude 1e-45 to 3.4e38)"));
  }
  return v;
}

absl::Status RequestParameter(const std::string& key, const InferParameter& p,
                              v1::NormalizeRequest* r) {
  const auto want = [&](InferParameter::ParameterChoiceCase c) {
    return p.parameter_choice_case() == c;
  };
  if (key == "epsilon" || key == "output_scale") {
    if (!want(InferParameter::kDoubleParam)) {
      return WrongType(key, "double_param");
    }
    ASSIGN_OR_RETURN(const float v,
                     FloatParameter(absl::StrCat("parameters['", key, "']"),
                                    p.double_param()));
    key == "epsilon" ? r->set_epsilon(v) : r->set_output_scale(v);
  } else if (key == "normalized_ndim" || key == "output_zero_point") {
    if (!want(InferParameter::kInt64Param)) {
      return WrongType(key, "int64_param");
    }
    const int64_t v = p.int64_param();
    if (v < INT32_MIN || v > INT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameters['", key, "'] = ", v, ": out of the int32 range"));
    }
    key == "normalized_ndim"
        ? r->set_normalized_ndim(static_cast<int32_t>(v))
        : r->set_output_zero_point(static_cast<int32_t>(v));
  } else if (key == "kind") {
    if (!want(InferParameter::kStringParam)) {
      return WrongType(key, "string_param");
    }
    if (p.string_param() == "layer_norm") {
      r->set_kind(v1::NORM_KIND_LAYER_NORM);
    } else if (p.string_param() == "rms_norm") {
      r->set_kind(v1::NORM_KIND_RMS_NORM);
    } else {
      return BadValue(key, p.string_param(), "layer_norm or rms_norm");
    }
  } else if (key == "output_datatype") {
    if (!want(InferParameter::kStringParam)) {
      return WrongType(key, "string_param");
    }
    const std::optional<v1::DataType> dtype = ProtoDtype(p.string_param());
    if (!dtype.has_value()) {
      return BadValue(key, p.string_param(), kDatatypes);
    }
    r->set_output_dtype(*dtype);
  } else if (key == "device") {
    if (!want(InferParameter::kStringParam)) {
      return WrongType(key, "string_param");
    }
    if (p.string_param() == "cpu") {
      r->set_device(v1::DEVICE_CPU);
    } else if (p.string_param() == "cuda") {
      r->set_device(v1::DEVICE_CUDA);
    } else {
      return BadValue(key, p.string_param(), "cpu or cuda");
    }
  } else if (key == "int8_path") {
    if (!want(InferParameter::kStringParam)) {
      return WrongType(key, "string_param");
    }
    if (p.string_param() == "integer") {
      r->set_int8_path(v1::INT8_PATH_INTEGER);
    } else if (p.string_param() == "float") {
      r->set_int8_path(v1::INT8_PATH_FLOAT);
    } else {
      return BadValue(key, p.string_param(), "integer or float");
    }
  } else if (key == "priority" || key == "timeout" ||
             key == "triton_enable_empty_final_response") {
    // Triton's scheduling hints, and its request for an empty final
    // response on decoupled streams (each request here gets exactly one
    // response): accepted, not used.
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "parameters['", key,
        "']: unknown parameter: expected epsilon, normalized_ndim, kind, "
        "output_datatype, device, int8_path, output_scale or "
        "output_zero_point"));
  }
  return absl::OkStatus();
}

// INT8 quantization parameters of an input tensor.
absl::Status TensorParameters(const ModelInferRequest::InferInputTensor& in,
                              int index, v1::Tensor* t) {
  for (const auto& [key, p] : in.parameters()) {
    const std::string field =
        absl::StrCat("inputs[", index, "].parameters['", key, "']");
    if ((key == "scale" || key == "zero_point") &&
        (in.name() != "input" || t->dtype() != v1::DATA_TYPE_INT8)) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": only the INT8 tensor 'input' is quantized (this is '",
          in.name(), "', datatype ", in.datatype(), "); expected it unset"));
    }
    if (key == "scale") {
      if (p.parameter_choice_case() != InferParameter::kDoubleParam) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": expected a double_param"));
      }
      ASSIGN_OR_RETURN(const float scale,
                       FloatParameter(field, p.double_param()));
      t->set_scale(scale);
    } else if (key == "zero_point") {
      if (p.parameter_choice_case() != InferParameter::kInt64Param) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": expected an int64_param"));
      }
      const int64_t z = p.int64_param();
      if (z < -128 || z > 127) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, " = ", z, ": expected -128 to 127"));
      }
      t->set_zero_point(static_cast<int32_t>(z));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": unknown parameter: expected scale or zero_point"));
    }
  }
  return absl::OkStatus();
}

// Sets `payload` from an input's typed contents.
absl::Status TypedPayload(const ModelInferRequest::InferInputTensor& in,
                          int index, v1::DataType dtype,
                          ExternalPayload* payload, std::string* narrowed) {
  const inference::InferTensorContents& c = in.contents();
  const std::string field = absl::StrCat("inputs[", index, "].contents");
  const int other = c.bool_contents_size() + c.int64_contents_size() +
                    c.uint_contents_size() + c.uint64_contents_size() +
                    c.fp64_contents_size() + c.bytes_contents_size();
  if (dtype == v1::DATA_TYPE_FLOAT32) {
    if (other > 0 || c.int_contents_size() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": FP32 tensors carry typed values in fp32_contents"));
    }
    payload->field = absl::StrCat(field, ".fp32_contents");
    payload->typed = true;
    payload->floats =
        absl::MakeConstSpan(c.fp32_contents().data(), c.fp32_contents_size());
    return absl::OkStatus();
  }
  if (dtype == v1::DATA_TYPE_INT8) {
    if (other > 0 || c.fp32_contents_size() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": INT8 tensors carry typed values in int_contents"));
    }
    narrowed->resize(static_cast<size_t>(c.int_contents_size()));
    for (int i = 0; i < c.int_contents_size(); ++i) {
      const int32_t v = c.int_contents(i);
      if (v < -128 || v > 127) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".int_contents[", i, "] = ", v, ": expected -128 to 127"));
      }
      (*narrowed)[static_cast<size_t>(i)] = static_cast<char>(v);
    }
    payload->field = absl::StrCat(field, ".int_contents");
    payload->bytes = *narrowed;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "inputs[", index, "]: ", in.datatype(),
      " values must be sent in raw_input_contents (the specification has no "
      "typed contents for them)"));
}

}  // namespace

absl::Status CheckModelVersion(absl::string_view field,
                               const std::string& version) {
  if (version.empty() || version == kOipModelVersion) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat(
      field, " = '", version, "': normserve models have one version, '",
      kOipModelVersion, "'"));
}

absl::Status TranslateInferRequest(const ModelInferRequest& request,
                                   OipRequest* out) {
  v1::NormalizeRequest& r = out->native;
  RETURN_IF_ERROR(CheckModelVersion("model_version", request.model_version()));
  RETURN_IF_ERROR(CheckRequestId("id", request.id()));
  r.set_model(request.model_name());
  r.set_request_id(request.id());
  for (const auto& [key, p] : request.parameters()) {
    if (absl::Status s = RequestParameter(key, p, &r); !s.ok()) return s;
  }

  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_input_contents has ", request.raw_input_contents_size(),
        " entries: expected one per input (", request.inputs_size(), ")"));
  }
  out->typed = !raw;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const ModelInferRequest::InferInputTensor& in = request.inputs(i);
    v1::Tensor* t;
    ExternalPayload* payload;
    int slot;
    if (in.name() == "input") {
      t = r.mutable_input(), payload = &out->payloads.input, slot = 0;
    } else if (in.name() == "gamma") {
      t = r.mutable_gamma(), payload = &out->payloads.gamma, slot = 1;
    } else if (in.name() == "beta") {
      t = r.mutable_beta(), payload = &out->payloads.beta, slot = 2;
    } else if (in.name() == "residual") {
      t = r.mutable_residual(), payload = &out->payloads.residual, slot = 3;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs[", i, "].name = '", in.name(),
                       "': expected input, gamma, beta or residual"));
    }
    if (payload->present) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs[", i, "].name = '", in.name(),
                       "': the request already has an input of that name"));
    }
    payload->present = true;
    const std::optional<v1::DataType> dtype = ProtoDtype(in.datatype());
    if (!dtype.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs[", i, "].datatype = '", in.datatype(),
                       "': expected ", kDatatypes));
    }
    t->set_dtype(*dtype);
    t->mutable_shape()->CopyFrom(in.shape());
    if (absl::Status s = TensorParameters(in, i, t); !s.ok()) return s;
    if (raw) {
      if (in.has_contents()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "inputs[", i,
            "].contents is set alongside raw_input_contents: expected all "
            "values in one or the other"));
      }
      payload->field = absl::StrCat("raw_input_contents[", i, "]");
      payload->bytes = request.raw_input_contents(i);
    } else if (absl::Status s =
                   TypedPayload(in, i, *dtype, payload, &out->narrowed[slot]);
               !s.ok()) {
      return s;
    }
  }
  if (!out->payloads.input.present) {
    return absl::InvalidArgumentError(
        "inputs: no tensor named 'input': expected the tensor to normalize");
  }

  for (int i = 0; i < request.outputs_size(); ++i) {
    const std::string& name = request.outputs(i).name();
    if (name == "mean" || name == "rstd") {
      r.set_return_statistics(true);
    } else if (name == "residual_sum") {
      r.set_return_residual_sum(true);
    } else if (name != "output") {
      return absl::InvalidArgumentError(
          absl::StrCat("outputs[", i, "].name = '", name,
                       "': expected output, mean, rstd or residual_sum"));
    }
    // Output parameters ask for a different answer (Triton's
    // "classification": top-k labels): refused rather than ignored.
    // "binary_data" is HTTP's and changes nothing over gRPC.
    for (const auto& [key, unused] : request.outputs(i).parameters()) {
      if (key != "binary_data") {
        return absl::InvalidArgumentError(
            absl::StrCat("outputs[", i, "].parameters['", key,
                         "']: not supported: expected no output parameters"));
      }
    }
    for (const std::string& seen : out->outputs) {
      if (seen == name) {
        return absl::InvalidArgumentError(absl::StrCat(
            "outputs[", i, "].name = '", name, "': requested twice"));
      }
    }
    out->outputs.push_back(name);
  }
  if (out->outputs.empty()) out->outputs.push_back("output");
  return absl::OkStatus();
}

const char* OipDatatype(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "FP32";
    case DType::kFloat16:
      return "FP16";
    case DType::kBFloat16:
      return "BF16";
    case DType::kInt8:
      return "INT8";
  }
  return "";
}

namespace {

// Shapes as OIP metadata states them: -1 for dimensions of any size. The
// rank is not fixed either (any leading dimensions); metadata shows the
// common case of rows × normalized shape.
std::vector<int64_t> RowShape(const Model& m) {
  std::vector<int64_t> shape = {-1};
  if (m.normalized_shape.empty()) {
    shape.push_back(-1);
  } else {
    shape.insert(shape.end(), m.normalized_shape.begin(),
                 m.normalized_shape.end());
  }
  return shape;
}

std::vector<int64_t> ParamShape(const Model& m) {
  return m.normalized_shape.empty() ? std::vector<int64_t>{-1}
                                    : m.normalized_shape;
}

struct TensorSpec {
  const char* name;
  std::vector<int64_t> shape;
  bool optional;
};

std::vector<TensorSpec> Inputs(const Model& m) {
  std::vector<TensorSpec> in = {{"input", RowShape(m), false},
                                {"residual", RowShape(m), true}};
  if (m.allow_request_params) {
    in.push_back({"gamma", ParamShape(m), true});
    in.push_back({"beta", ParamShape(m), true});
  }
  return in;
}

std::vector<TensorSpec> Outputs(const Model& m) {
  return {{"output", RowShape(m), false},
          {"mean", {-1}, true},
          {"rstd", {-1}, true},
          {"residual_sum", RowShape(m), true}};
}

}  // namespace

void FillModelMetadata(const Model& model,
                       inference::ModelMetadataResponse* out) {
  out->set_name(model.name);
  out->add_versions(kOipModelVersion);
  out->set_platform("normserve");
  for (const TensorSpec& s : Inputs(model)) {
    auto* t = out->add_inputs();
    t->set_name(s.name);
    t->set_datatype("FP32");
    t->mutable_shape()->Assign(s.shape.begin(), s.shape.end());
  }
  for (const TensorSpec& s : Outputs(model)) {
    auto* t = out->add_outputs();
    t->set_name(s.name);
    t->set_datatype("FP32");
    t->mutable_shape()->Assign(s.shape.begin(), s.shape.end());
  }
}

void FillModelConfig(const Model& model, inference::ModelConfig* out) {
  out->set_name(model.name);
  out->set_platform("normserve");
  out->set_backend("normserve");
  out->set_max_batch_size(0);
  for (const TensorSpec& s : Inputs(model)) {
    auto* t = out->add_input();
    t->set_name(s.name);
    t->set_data_type(inference::TYPE_FP32);
    t->mutable_dims()->Assign(s.shape.begin(), s.shape.end());
    t->set_optional(s.optional);
  }
  for (const TensorSpec& s : Outputs(model)) {
    auto* t = out->add_output();
    t->set_name(s.name);
    t->set_data_type(inference::TYPE_FP32);
    t->mutable_dims()->Assign(s.shape.begin(), s.shape.end());
  }
  out->mutable_dynamic_batching()->set_max_queue_delay_microseconds(
      static_cast<uint64_t>(
          absl::ToInt64Microseconds(model.batching.max_queue_delay)));
}

}  // namespace normserve
