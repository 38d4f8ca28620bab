#include "server/request_decoder.h"

#include <cmath>
#include <cstring>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
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

// Validates a float32 tensor's dtype, shape and payload and returns a
// pointer to its values (in place when aligned, else copied to `storage`).
// `expected_shape`, when not null, must equal the tensor's shape exactly.
absl::StatusOr<const float*> DecodeFloatTensor(
    const v1::Tensor& t, absl::string_view field,
    const ValidationLimits& limits,
    const std::vector<int64_t>* expected_shape, std::vector<int64_t>* shape,
    int64_t* elements, std::vector<float>* storage) {
  if (t.dtype() != v1::DATA_TYPE_FLOAT32) {
    return Invalid(field, absl::StrCat(".dtype = ", DataTypeName(t.dtype()),
                                       ": expected DATA_TYPE_FLOAT32"));
  }
  const int rank = t.shape_size();
  if (rank < 1 || rank > limits.max_rank) {
    return Invalid(field, absl::StrCat(".shape has rank ", rank, ": expected 1 to ",
                                       limits.max_rank, " dimensions"));
  }
  int64_t count = 1;
  shape->clear();
  for (int i = 0; i < rank; ++i) {
    const int64_t d = t.shape(i);
    if (d <= 0) {
      return Invalid(field, absl::StrCat(".shape[", i, "] = ", d,
                                         ": dimensions must be positive"));
    }
    if (d > limits.max_elements / count) {
      return Invalid(field, absl::StrCat(".shape = [", absl::StrJoin(t.shape(), ", "),
                                         "]: more than ", limits.max_elements,
                                         " elements"));
    }
    count *= d;
    shape->push_back(d);
  }
  if (expected_shape != nullptr && *shape != *expected_shape) {
    return Invalid(field, absl::StrCat(".shape = ", ShapeText(*shape), ": expected ",
                                       ShapeText(*expected_shape),
                                       " (the normalized dimensions)"));
  }
  *elements = count;
  const bool has_data = !t.data().empty();
  const bool has_floats = t.float_data_size() > 0;
  if (has_data && has_floats) {
    return Invalid(field, ": both data and float_data are set: expected one");
  }
  if (has_floats) {
    if (t.float_data_size() != count) {
      return Invalid(field, absl::StrCat(".float_data has ", t.float_data_size(),
                                         " values: shape ", ShapeText(*shape),
                                         " needs ", count));
    }
    return t.float_data().data();
  }
  const size_t want = static_cast<size_t>(count) * sizeof(float);
  if (t.data().size() != want) {
    return Invalid(field, absl::StrCat(".data has ", t.data().size(), " bytes: shape ",
                                       ShapeText(*shape),
                                       " of DATA_TYPE_FLOAT32 needs ", want));
  }
  const char* bytes = t.data().data();
  if (reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
    return reinterpret_cast<const float*>(bytes);
  }
  storage->resize(static_cast<size_t>(count));
  std::memcpy(storage->data(), bytes, want);
  return storage->data();
}

uint64_t ParamsIdentity(const NormParams& p, int64_t count) {
  const auto bytes = [count](const float* v) {
    return v == nullptr ? absl::string_view()
                        : absl::string_view(reinterpret_cast<const char*>(v),
                                            static_cast<size_t>(count) * sizeof(float));
  };
  // Only used to group jobs into queues: each job still carries its own
  // parameters, so a collision costs batching efficiency, not correctness.
  return absl::Hash<std::tuple<float, bool, absl::string_view, bool,
                               absl::string_view>>{}(
      std::make_tuple(p.epsilon, p.gamma != nullptr, bytes(p.gamma),
                      p.beta != nullptr, bytes(p.beta)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<DecodedRequest>> DecodeRequest(
    const v1::NormalizeRequest& request, const ModelRegistry& models,
    const ValidationLimits& limits, const DeviceAvailability& devices) {
  const Model* model = models.Find(request.model());
  if (model == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "model = '", request.model(), "': no such model (see ListModels)"));
  }
  const bool overrides = request.has_epsilon() || request.has_gamma() ||
                         request.has_beta() ||
                         (request.kind() != v1::NORM_KIND_UNSPECIFIED &&
                          (request.kind() == v1::NORM_KIND_RMS_NORM) !=
                              (model->kind == NormKind::kRmsNorm));
  if (overrides && !model->allow_request_params) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model->name,
        "' does not accept per-request epsilon, gamma, beta or kind: expected "
        "them unset (the model's own are used)"));
  }

  auto out = std::make_unique<DecodedRequest>();
  out->model = model;
  if (!request.has_input()) {
    return absl::InvalidArgumentError("input: required");
  }
  ASSIGN_OR_RETURN(out->input,
                   DecodeFloatTensor(request.input(), "input", limits, nullptr,
                                     &out->shape, &out->elements,
                                     &out->input_copy));
  const int rank = static_cast<int>(out->shape.size());

  int ndim = request.normalized_ndim();
  if (ndim == 0) {
    ndim = model->normalized_shape.empty()
               ? 1
               : static_cast<int>(model->normalized_shape.size());
  }
  if (ndim < 1 || ndim > rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("normalized_ndim = ", request.normalized_ndim(),
                     ": expected 1 to the input's rank ", rank));
  }
  const std::vector<int64_t> normalized_shape(out->shape.end() - ndim,
                                              out->shape.end());
  if (!model->normalized_shape.empty() &&
      normalized_shape != model->normalized_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input.shape = ", ShapeText(out->shape), ": model '", model->name,
        "' expects trailing dimensions ", ShapeText(model->normalized_shape)));
  }
  int64_t dim = 1;
  for (int64_t d : normalized_shape) dim *= d;
  out->rows = out->elements / dim;

  NormParams& p = out->params;
  p.dim = dim;
  p.kind = model->kind;
  switch (request.kind()) {
    case v1::NORM_KIND_UNSPECIFIED:
      break;
    case v1::NORM_KIND_LAYER_NORM:
      p.kind = NormKind::kLayerNorm;
      break;
    case v1::NORM_KIND_RMS_NORM:
      p.kind = NormKind::kRmsNorm;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "kind = ", request.kind(),
          ": expected NORM_KIND_LAYER_NORM or NORM_KIND_RMS_NORM"));
  }
  p.epsilon = model->epsilon;
  if (request.has_epsilon()) {
    const float eps = request.epsilon();
    if (!std::isfinite(eps) || eps <= 0.0f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "epsilon = ", eps, ": expected a finite value > 0"));
    }
    p.epsilon = eps;
  }
  if (!model->gamma.empty()) p.gamma = model->gamma.data();
  if (!model->beta.empty()) p.beta = model->beta.data();
  std::vector<int64_t> param_shape;
  int64_t param_count = 0;
  if (request.has_gamma()) {
    ASSIGN_OR_RETURN(p.gamma, DecodeFloatTensor(request.gamma(), "gamma", limits,
                                                &normalized_shape, &param_shape,
                                                &param_count, &out->gamma_copy));
  }
  if (request.has_beta()) {
    ASSIGN_OR_RETURN(p.beta, DecodeFloatTensor(request.beta(), "beta", limits,
                                               &normalized_shape, &param_shape,
                                               &param_count, &out->beta_copy));
  }

  out->device = model->device;
  switch (request.device()) {
    case v1::DEVICE_UNSPECIFIED:
      break;
    case v1::DEVICE_CPU:
      out->device = DeviceKind::kCpu;
      break;
    case v1::DEVICE_CUDA:
      out->device = DeviceKind::kCuda;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "device = ", request.device(), ": expected DEVICE_CPU or DEVICE_CUDA"));
  }
  if (out->device == DeviceKind::kCuda && !devices.cuda) {
    return absl::FailedPreconditionError(
        "device = DEVICE_CUDA: this server has no usable CUDA device; use "
        "DEVICE_CPU");
  }
  if (request.output_dtype() != v1::DATA_TYPE_UNSPECIFIED &&
      request.output_dtype() != v1::DATA_TYPE_FLOAT32) {
    return absl::InvalidArgumentError(
        absl::StrCat("output_dtype = ", DataTypeName(request.output_dtype()),
                     ": expected DATA_TYPE_FLOAT32 (or unset)"));
  }

  const bool model_params = !request.has_epsilon() && !request.has_gamma() &&
                            !request.has_beta();
  out->key.model = model->name;
  out->key.dim = dim;
  out->key.dtype = v1::DATA_TYPE_FLOAT32;
  out->key.kind = static_cast<int>(p.kind);
  out->key.device = static_cast<int>(out->device);
  out->key.params_id = model_params ? model->id : ParamsIdentity(p, dim);
  return out;
}

}  // namespace normserve
