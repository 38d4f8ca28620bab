#include "server/request_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "kernels/dtype.h"
#include "server/internal/proto_enums.h"
#include "server/internal/status_macros.h"

namespace normserve {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, what));
}

std::string DataTypeName(int dtype) {
  if (v1::DataType_IsValid(dtype)) {
    return v1::DataType_Name(static_cast<v1::DataType>(dtype));
  }
  return absl::StrCat(dtype);
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::optional<DType> KernelDType(int dtype) {
  switch (dtype) {
    case v1::DATA_TYPE_INT8:
      return DType::kInt8;
    case v1::DATA_TYPE_FLOAT32:
      return DType::kFloat32;
    case v1::DATA_TYPE_FLOAT16:
      return DType::kFloat16;
    case v1::DATA_TYPE_BFLOAT16:
      return DType::kBFloat16;
    default:
      return std::nullopt;
  }
}

constexpr char kFloatTypes[] =
    "DATA_TYPE_FLOAT32, DATA_TYPE_FLOAT16, DATA_TYPE_BFLOAT16 or "
    "DATA_TYPE_INT8";
// INT8 rows longer than this could overflow the integer path's bounds.
constexpr int64_t kMaxInt8Dim = 65536;

struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  int64_t elements = 0;
  bool float_data = false;
};

// Validates a tensor's dtype, shape and payload and returns a view of its
// values (in place when aligned to the element size, else copied to
// `storage`). `expected_shape`, when not null, must equal the tensor's shape.
absl::StatusOr<TensorView> DecodeTensor(
    const v1::Tensor& t, absl::string_view field,
    const ValidationLimits& limits, const std::vector<int64_t>* expected_shape,
    const ExternalPayload* external, std::vector<float>* storage) {
  TensorView view;
  const std::optional<DType> dtype = KernelDType(t.dtype());
  if (!dtype.has_value()) {
    return Invalid(field, absl::StrCat(".dtype = ", DataTypeName(t.dtype()),
                                       ": expected ", kFloatTypes));
  }
  view.dtype = *dtype;
  const int rank = t.shape_size();
  if (rank < 1 || rank > limits.max_rank) {
    return Invalid(field,
                   absl::StrCat(".shape has rank ", rank, ": expected 1 to ",
                                limits.max_rank, " dimensions"));
  }
  int64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    const int64_t d = t.shape(i);
    if (d <= 0) {
      return Invalid(field, absl::StrCat(".shape[", i, "] = ", d,
                                         ": dimensions must be positive"));
    }
    if (d > limits.max_elements / count) {
      return Invalid(
          field,
          absl::StrCat(".shape = [", absl::StrJoin(t.shape(), ", "),
                       "]: more than ", limits.max_elements, " elements"));
    }
    count *= d;
    view.shape.push_back(d);
  }
  if (expected_shape != nullptr && view.shape != *expected_shape) {
    return Invalid(
        field, absl::StrCat(".shape = ", ShapeText(view.shape), ": expected ",
                            ShapeText(*expected_shape)));
  }
  view.elements = count;
  // Where the values are: inside the tensor (data or float_data), or
  // beside it (an ExternalPayload); the field names differ for messages.
  const bool is_external = external != nullptr && external->present;
  const std::string data_field =
      is_external ? absl::StrCat(field, " (", external->field, ")")
                  : absl::StrCat(field, ".data");
  const std::string floats_field =
      is_external ? absl::StrCat(field, " (", external->field, ")")
                  : absl::StrCat(field, ".float_data");
  const absl::string_view data =
      is_external ? external->bytes : absl::string_view(t.data());
  const absl::Span<const float> floats =
      is_external
          ? external->floats
          : absl::Span<const float>(t.float_data().data(), t.float_data_size());
  const bool has_floats = is_external ? external->typed : !floats.empty();
  if (!data.empty() && !floats.empty()) {
    return Invalid(field, ": both data and float_data are set: expected one");
  }
  if (has_floats) {
    if (view.dtype != DType::kFloat32) {
      return absl::InvalidArgumentError(absl::StrCat(
          floats_field, " is set with dtype ", DataTypeName(t.dtype()),
          ": float_data is only for DATA_TYPE_FLOAT32; send "
          "other types as raw bytes"));
    }
    if (static_cast<int64_t>(floats.size()) != count) {
      return absl::InvalidArgumentError(
          absl::StrCat(floats_field, " has ", floats.size(), " values: shape ",
                       ShapeText(view.shape), " needs ", count));
    }
    view.data = floats.data();
    view.float_data = true;
    return view;
  }
  const size_t elem = DTypeSize(view.dtype);
  const size_t want = static_cast<size_t>(count) * elem;
  if (data.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat(data_field, " has ", data.size(), " bytes: shape ",
                     ShapeText(view.shape), " of ", DataTypeName(t.dtype()),
                     " needs ", want));
  }
  const char* bytes = data.data();
  if (reinterpret_cast<uintptr_t>(bytes) % elem == 0) {
    view.data = bytes;
  } else {
    storage->resize((want + sizeof(float) - 1) / sizeof(float));
    std::memcpy(storage->data(), bytes, want);
    view.data = storage->data();
  }
  return view;
}

// γ or β as float32: in place when sent as aligned FLOAT32, else converted.
absl::StatusOr<const float*> DecodeParameter(const v1::Tensor& t,
                                             absl::string_view field,
                                             const ValidationLimits& limits,
                                             const std::vector<int64_t>& shape,
                                             const ExternalPayload* external,
                                             std::vector<float>* storage) {
  if (t.dtype() == v1::DATA_TYPE_INT8) {
    return Invalid(field,
                   ".dtype = DATA_TYPE_INT8: expected DATA_TYPE_FLOAT32, "
                   "DATA_TYPE_FLOAT16 or DATA_TYPE_BFLOAT16");
  }
  ASSIGN_OR_RETURN(TensorView view,
                   DecodeTensor(t, field, limits, &shape, external, storage));
  if (view.dtype == DType::kFloat32) {
    return static_cast<const float*>(view.data);
  }
  std::vector<uint16_t> bits(static_cast<size_t>(view.elements));
  std::memcpy(bits.data(), view.data, bits.size() * sizeof(uint16_t));
  storage->resize(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    (*storage)[i] = view.dtype == DType::kFloat16 ? HalfToFloat(bits[i])
                                                  : BFloat16ToFloat(bits[i]);
  }
  return storage->data();
}

// INVALID_ARGUMENT naming the first INT8 field set in a request whose input
// is not INT8 (ignoring it would answer something else than was asked: a
// float tensor where INT8 was expected).
absl::Status CheckNoInt8Fields(const v1::NormalizeRequest& request) {
  std::string field;
  if (request.has_output_scale()) {
    field = absl::StrCat("output_scale = ", request.output_scale());
  } else if (request.has_output_zero_point()) {
    field = absl::StrCat("output_zero_point = ", request.output_zero_point());
  } else if (request.int8_path() != v1::INT8_PATH_UNSPECIFIED) {
    field =
        absl::StrCat("int8_path = ", v1::Int8Path_Name(request.int8_path()));
  } else {
    return absl::OkStatus();  // the common case builds no message
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": only for DATA_TYPE_INT8 inputs (input.dtype = ",
      DataTypeName(request.input().dtype()), "); expected it unset"));
}

// INVALID_ARGUMENT where a tensor other than an INT8 input carries a
// quantization (scale, zero_point): only INT8 inputs are quantized.
absl::Status CheckNotQuantized(const v1::Tensor& t, absl::string_view name) {
  if (t.scale() == 0.0f && t.zero_point() == 0) return absl::OkStatus();
  const std::string field =
      t.scale() != 0.0f ? absl::StrCat(name, ".scale = ", t.scale())
                        : absl::StrCat(name, ".zero_point = ", t.zero_point());
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": only DATA_TYPE_INT8 inputs are quantized (", name,
      ".dtype = ", DataTypeName(t.dtype()), "); expected it unset"));
}

// The INT8 part of a request: quantization fields, what INT8 does not
// support, the output quantization, and the folded affine.
absl::Status DecodeInt8(const v1::NormalizeRequest& request, const Model& model,
                        int64_t dim, DecodedRequest* out) {
  const v1::Tensor& in = request.input();
  // At most FLT_MAX / 256, so that the float path's dequantized values
  // (up to 255·scale) stay finite.
  constexpr float kMaxInt8Scale = std::numeric_limits<float>::max() / 256;
  if (!std::isfinite(in.scale()) || in.scale() <= 0.0f ||
      in.scale() > kMaxInt8Scale) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input.scale = ", in.scale(),
        ": DATA_TYPE_INT8 tensors need a finite scale > 0 and at most ",
        kMaxInt8Scale));
  }
  if (in.zero_point() < -128 || in.zero_point() > 127) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input.zero_point = ", in.zero_point(), ": expected -128 to 127"));
  }
  if (dim > kMaxInt8Dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("input.shape: INT8 rows have ", dim,
                     " elements: expected at most ", kMaxInt8Dim));
  }
  if (out->params.kind != NormKind::kLayerNorm) {
    return absl::InvalidArgumentError(
        request.kind() == v1::NORM_KIND_RMS_NORM
            ? "kind = NORM_KIND_RMS_NORM: INT8 inputs support "
              "NORM_KIND_LAYER_NORM only"
            : absl::StrCat("input.dtype = DATA_TYPE_INT8: model '", model.name,
                           "' is an RMSNorm, and INT8 inputs support "
                           "NORM_KIND_LAYER_NORM only"));
  }
  if (request.has_residual() || request.return_residual_sum() ||
      request.return_statistics()) {
    return absl::InvalidArgumentError(
        "residual, return_residual_sum and return_statistics are not "
        "supported for INT8 inputs: expected them unset");
  }
  switch (request.int8_path()) {
    case v1::INT8_PATH_UNSPECIFIED:
    case v1::INT8_PATH_INTEGER:
      out->int8_float_path = false;
      break;
    case v1::INT8_PATH_FLOAT:
      out->int8_float_path = true;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("int8_path = ", request.int8_path(),
                       ": expected INT8_PATH_INTEGER or INT8_PATH_FLOAT"));
  }
  const NormParams& p = out->params;
  if (!out->int8_float_path && !Int8EpsilonFits(p.epsilon, in.scale(), dim)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input.scale = ", in.scale(), " with epsilon = ", p.epsilon,
        " and D = ", dim,
        ": the integer path needs D^2 * epsilon / scale^2 <= 2^60 (epsilon "
        "dwarfs the rows' variance); expected a larger scale or int8_path = "
        "INT8_PATH_FLOAT"));
  }
  for (const auto& [name, values] :
       {std::pair{"gamma", p.gamma}, std::pair{"beta", p.beta}}) {
    if (values == nullptr) continue;
    for (int64_t i = 0; i < dim; ++i) {
      if (!std::isfinite(values[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, "[", i, "] = ", values[i],
                         ": INT8 inputs need finite gamma and beta values"));
      }
    }
  }
  const bool request_quant =
      request.has_output_scale() || request.has_output_zero_point();
  if (request_quant && !model.allow_request_params &&
      model.int8_output_scale.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("output_scale/output_zero_point: model '", model.name,
                     "' fixes its output quantization: expected them unset"));
  }
  if (request.has_output_scale() && (!std::isfinite(request.output_scale()) ||
                                     request.output_scale() <= 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("output_scale = ", request.output_scale(),
                     ": expected a finite value > 0"));
  }
  if (request.has_output_zero_point() && (request.output_zero_point() < -128 ||
                                          request.output_zero_point() > 127)) {
    return absl::InvalidArgumentError(
        absl::StrCat("output_zero_point = ", request.output_zero_point(),
                     ": expected -128 to 127"));
  }
  const bool model_params = !request.has_epsilon() && !request.has_gamma() &&
                            !request.has_beta() && !request_quant;
  Int8Params& q = out->int8;
  q.dim = dim;
  q.epsilon = p.epsilon;
  q.input_scale = in.scale();
  q.input_zero_point = in.zero_point();
  q.gamma = p.gamma;
  q.beta = p.beta;
  if (model_params && model.int8_affine != nullptr) {
    q.affine = model.int8_affine.get();  // folded at model load
  } else {
    float scale;
    if (request.has_output_scale()) {
      scale = request.output_scale();
    } else if (model.int8_output_scale.has_value()) {
      scale = *model.int8_output_scale;
    } else {
      scale = DefaultInt8OutputScale(p.gamma, p.beta, dim);
    }
    const int32_t zero_point = request.has_output_zero_point()
                                   ? request.output_zero_point()
                                   : model.int8_output_zero_point;
    if (!Int8OutputScaleFits(p.gamma, dim, scale)) {
      return absl::InvalidArgumentError(
          absl::StrCat("output_scale = ", scale,
                       ": expected a normal float with max|gamma| / "
                       "output_scale at most 65536"));
    }
    out->int8_affine_storage =
        FoldInt8Affine(p.gamma, p.beta, dim, scale, zero_point);
    q.affine = &out->int8_affine_storage;
  }
  return absl::OkStatus();
}

uint64_t ParamsIdentity(const NormParams& p, int64_t count) {
  const auto bytes = [count](const float* v) {
    return v == nullptr
               ? absl::string_view()
               : absl::string_view(reinterpret_cast<const char*>(v),
                                   static_cast<size_t>(count) * sizeof(float));
  };
  // Only used to group jobs into queues: each job still carries its own
  // parameters, so a collision costs batching efficiency, not correctness.
  return absl::Hash<
      std::tuple<float, bool, absl::string_view, bool, absl::string_view>>{}(
      std::make_tuple(p.epsilon, p.gamma != nullptr, bytes(p.gamma),
                      p.beta != nullptr, bytes(p.beta)));
}

}  // namespace

absl::Status CheckRequestId(absl::string_view field, absl::string_view id) {
  if (id.size() <= kMaxRequestIdBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " has ", id.size(),
                                                 " bytes: expected at most ",
                                                 kMaxRequestIdBytes));
}

absl::StatusOr<std::unique_ptr<DecodedRequest>> DecodeRequest(
    const v1::NormalizeRequest& request, const ModelRegistry& models,
    const ValidationLimits& limits, const DeviceAvailability& devices,
    const ExternalPayloads* payloads) {
  const auto external =
      [payloads](const ExternalPayload ExternalPayloads::*which)
      -> const ExternalPayload* {
    return payloads == nullptr ? nullptr : &(payloads->*which);
  };
  RETURN_IF_ERROR(CheckRequestId("request_id", request.request_id()));
  const Model* model = models.Find(request.model());
  if (model == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "model = '", request.model(), "': no such model (see ListModels)"));
  }
  if (!model->allow_request_params) {
    // The first override sent, by name.
    const char* override = nullptr;
    if (request.has_epsilon()) {
      override = "epsilon";
    } else if (request.has_gamma()) {
      override = "gamma";
    } else if (request.has_beta()) {
      override = "beta";
    } else if (request.kind() != v1::NORM_KIND_UNSPECIFIED &&
               (request.kind() == v1::NORM_KIND_RMS_NORM) !=
                   (model->kind == NormKind::kRmsNorm)) {
      override = "kind";
    }
    if (override != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          override, ": model '", model->name,
          "' does not accept per-request epsilon, gamma, beta or kind: "
          "expected them unset (the model's own are used)"));
    }
  }

  auto out = std::make_unique<DecodedRequest>();
  out->model = model;
  if (!request.has_input()) {
    return absl::InvalidArgumentError("input: required");
  }
  ASSIGN_OR_RETURN(
      TensorView input,
      DecodeTensor(request.input(), "input", limits, nullptr,
                   external(&ExternalPayloads::input), &out->input_copy));
  if (input.dtype != DType::kInt8) {
    RETURN_IF_ERROR(CheckNoInt8Fields(request));
    RETURN_IF_ERROR(CheckNotQuantized(request.input(), "input"));
  }
  RETURN_IF_ERROR(CheckNotQuantized(request.gamma(), "gamma"));
  RETURN_IF_ERROR(CheckNotQuantized(request.beta(), "beta"));
  RETURN_IF_ERROR(CheckNotQuantized(request.residual(), "residual"));
  out->input = input.data;
  out->input_dtype = input.dtype;
  out->float_data = input.float_data;
  out->shape = input.shape;
  out->elements = input.elements;
  const int rank = static_cast<int>(out->shape.size());

  int ndim = model->normalized_shape.empty()
                 ? 1
                 : static_cast<int>(model->normalized_shape.size());
  if (request.has_normalized_ndim()) {
    ndim = request.normalized_ndim();
    if (ndim < 1 || ndim > rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "normalized_ndim = ", ndim, ": expected 1 to the input's rank ", rank,
          " (or unset for the model's)"));
    }
  }
  const int model_ndim = static_cast<int>(model->normalized_shape.size());
  if (request.has_normalized_ndim() && model_ndim > 0 && ndim != model_ndim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "normalized_ndim = ", ndim, ": model '", model->name, "' normalizes ",
        model_ndim, " trailing dimensions ", ShapeText(model->normalized_shape),
        ": expected ", model_ndim, " or unset"));
  }
  // Unset, ndim is the model's rank, which may exceed the input's.
  if (!model->normalized_shape.empty() &&
      (ndim > rank || !std::equal(out->shape.end() - ndim, out->shape.end(),
                                  model->normalized_shape.begin(),
                                  model->normalized_shape.end()))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input.shape = ", ShapeText(out->shape), ": model '", model->name,
        "' expects trailing dimensions ", ShapeText(model->normalized_shape)));
  }
  const std::vector<int64_t> normalized_shape(out->shape.end() - ndim,
                                              out->shape.end());
  int64_t dim = 1;
  for (int64_t d : normalized_shape) dim *= d;
  out->rows = out->elements / dim;
  out->stats_shape.assign(out->shape.begin(), out->shape.end() - ndim);
  if (out->stats_shape.empty()) out->stats_shape.push_back(1);

  NormParams& p = out->params;
  p.dim = dim;
  const std::optional<NormKind> kind =
      NormKindFromProto(request.kind(), model->kind);
  if (!kind.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("kind = ", request.kind(),
                     ": expected NORM_KIND_LAYER_NORM or NORM_KIND_RMS_NORM"));
  }
  p.kind = *kind;
  p.epsilon = model->epsilon;
  if (request.has_epsilon()) {
    const float eps = request.epsilon();
    if (!std::isfinite(eps) || eps <= 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("epsilon = ", eps, ": expected a finite value > 0"));
    }
    p.epsilon = eps;
  }
  if (!model->gamma.empty()) p.gamma = model->gamma.data();
  if (!model->beta.empty()) p.beta = model->beta.data();
  if (request.has_gamma()) {
    ASSIGN_OR_RETURN(
        p.gamma,
        DecodeParameter(request.gamma(), "gamma", limits, normalized_shape,
                        external(&ExternalPayloads::gamma), &out->gamma_copy));
  }
  if (request.has_beta()) {
    ASSIGN_OR_RETURN(
        p.beta,
        DecodeParameter(request.beta(), "beta", limits, normalized_shape,
                        external(&ExternalPayloads::beta), &out->beta_copy));
  }
  if (request.has_residual()) {
    ASSIGN_OR_RETURN(
        TensorView residual,
        DecodeTensor(request.residual(), "residual", limits, &out->shape,
                     external(&ExternalPayloads::residual),
                     &out->residual_copy));
    if (residual.dtype != out->input_dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "residual.dtype = ", DataTypeName(request.residual().dtype()),
          ": expected the input's ", DataTypeName(request.input().dtype())));
    }
    out->residual = residual.data;
  }
  out->return_residual_sum = request.return_residual_sum();
  out->return_statistics = request.return_statistics();

  if (out->input_dtype == DType::kInt8) {
    RETURN_IF_ERROR(DecodeInt8(request, *model, dim, out.get()));
  }

  // INT8 runs on the CPU only: a request that names no device goes there
  // even when its model defaults to CUDA, and one that asks for CUDA is
  // refused.
  const bool int8 = out->input_dtype == DType::kInt8;
  const std::optional<DeviceKind> device = DeviceFromProto(
      request.device(), int8 ? DeviceKind::kCpu : model->device);
  if (!device.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device = ", request.device(), ": expected DEVICE_CPU or DEVICE_CUDA"));
  }
  out->device = *device;
  if (int8 && out->device == DeviceKind::kCuda) {
    return absl::FailedPreconditionError(
        "device = DEVICE_CUDA: DATA_TYPE_INT8 runs on the CPU only; expected "
        "DEVICE_CPU or unset");
  }
  if (out->device == DeviceKind::kCuda && !devices.cuda) {
    return absl::FailedPreconditionError(
        "device = DEVICE_CUDA: this server has no usable CUDA device; use "
        "DEVICE_CPU");
  }
  out->output_dtype = out->input_dtype;
  if (out->input_dtype == DType::kInt8) {
    if (request.output_dtype() != v1::DATA_TYPE_UNSPECIFIED &&
        request.output_dtype() != v1::DATA_TYPE_INT8) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output_dtype = ", DataTypeName(request.output_dtype()),
          ": INT8 inputs give DATA_TYPE_INT8 outputs (or leave it unset)"));
    }
  } else if (request.output_dtype() == v1::DATA_TYPE_INT8) {
    return absl::InvalidArgumentError(
        "output_dtype = DATA_TYPE_INT8: only INT8 inputs give INT8 outputs");
  } else if (request.output_dtype() != v1::DATA_TYPE_UNSPECIFIED) {
    const std::optional<DType> output = KernelDType(request.output_dtype());
    if (!output.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "output_dtype = ", DataTypeName(request.output_dtype()),
          ": expected ", kFloatTypes, " (or unset for the input's)"));
    }
    out->output_dtype = *output;
  }

  const bool model_params =
      !request.has_epsilon() && !request.has_gamma() && !request.has_beta();
  out->key.model = model->name;
  out->key.dim = dim;
  out->key.dtype = static_cast<int>(out->input_dtype) * 16 +
                   static_cast<int>(out->output_dtype);
  out->key.kind = static_cast<int>(p.kind);
  out->key.device = static_cast<int>(out->device);
  out->key.params_id = model_params ? model->id : ParamsIdentity(p, dim);
  if (out->input_dtype == DType::kInt8) {
    // Each job carries its own folded parameters; group by path and
    // output quantization as well.
    out->key.params_id ^= absl::Hash<std::tuple<bool, float, int32_t>>{}(
        std::make_tuple(out->int8_float_path, out->int8.affine->output_scale,
                        out->int8.affine->output_zero_point));
  }
  return out;
}

absl::StatusOr<int64_t> CheckResponseFits(absl::Span<const ResponsePart> parts,
                                          const ValidationLimits& limits) {
  // Each part is at most max_elements × 4 bytes: no overflow.
  const auto bytes = [](const ResponsePart& p) {
    return p.elements * static_cast<int64_t>(DTypeSize(p.dtype));
  };
  int64_t total = 0;
  for (const ResponsePart& p : parts) total += bytes(p);
  const int64_t room = limits.max_response_bytes - kResponseFramingBytes;
  if (limits.max_response_bytes <= 0 || total <= room) return total;
  std::string listed;
  for (const ResponsePart& p : parts) {
    absl::StrAppend(&listed, listed.empty() ? "" : " + ", p.name, " ", bytes(p),
                    " bytes (", DataTypeName(ToProtoDType(p.dtype)), ")");
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "response: ", listed, " = ", total,
      " bytes, over the server's max_message_bytes ", limits.max_response_bytes,
      " less ", kResponseFramingBytes,
      " for the rest of the message; expected at most ", room,
      " bytes: a smaller input, a narrower output_dtype, or fewer outputs"));
}

v1::DataType ToProtoDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return v1::DATA_TYPE_FLOAT32;
    case DType::kFloat16:
      return v1::DATA_TYPE_FLOAT16;
    case DType::kBFloat16:
      return v1::DATA_TYPE_BFLOAT16;
    case DType::kInt8:
      return v1::DATA_TYPE_INT8;
  }
  return v1::DATA_TYPE_UNSPECIFIED;
}

}  // namespace normserve
