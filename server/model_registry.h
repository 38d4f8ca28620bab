// The models a server serves: their normalization, parameters, device and
// batching knobs.
//
// Sources
//   Always a default model (named "default", selected by an empty model
//   name) that takes epsilon, gamma and beta from each request and its row
//   shape from normalized_ndim. Optionally more models from a model config
//   file (protobuf text format, message normserve.v1.ModelConfigList; see
//   proto/normserve/v1/model_config.proto), with gamma/beta inline or from
//   .npy files. A config entry named "default" replaces the built-in one.
//
// Errors
//   Create() fails with INVALID_ARGUMENT naming the model and field at fault
//   (or NOT_FOUND for a missing file); a server never starts half-configured.
//
// Threading and ownership
//   Immutable after Create(): safe to read from any thread. Model pointers
//   stay valid for the registry's lifetime.
#ifndef NORMSERVE_SERVER_MODEL_REGISTRY_H_
#define NORMSERVE_SERVER_MODEL_REGISTRY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/int8_layer_norm.h"
#include "kernels/normalize.h"
#include "server/batcher.h"

namespace normserve {

enum class DeviceKind { kCpu, kCuda };

struct Model {
  std::string name;
  NormKind kind = NormKind::kLayerNorm;
  // Empty: the row shape comes from each request.
  std::vector<int64_t> normalized_shape;
  float epsilon = 1e-5f;
  // Empty vector: identity (gamma 1 / beta 0).
  std::vector<float> gamma;
  std::vector<float> beta;
  DeviceKind device = DeviceKind::kCpu;
  // Whether requests may override epsilon, gamma, beta and kind.
  bool allow_request_params = false;
  QueueOptions batching;
  // INT8 requests: output quantization, when the model fixes it; and γ/β
  // folded into integers once, when the model also fixes its shape.
  std::optional<float> int8_output_scale;
  int32_t int8_output_zero_point = 0;
  std::shared_ptr<const Int8Affine> int8_affine;
  // Distinct per model; part of the batch key when the model's own
  // parameters are used.
  uint64_t id = 0;
};

class ModelRegistry {
 public:
  struct Options {
    // Path of a model config file; empty for only the default model.
    std::string config_path;
    // Batching knobs for models that do not set their own.
    QueueOptions default_batching;
    // Device of models that do not set their own (and the default model).
    DeviceKind default_device = DeviceKind::kCpu;
  };

  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Create(
      const Options& options);

  // Parses a config from text, as Create() does from a file; relative .npy
  // paths resolve against `base_dir`.
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> CreateFromText(
      absl::string_view config_text, const std::string& base_dir,
      const Options& options);

  // The model named `name` ("" selects "default"), or nullptr.
  const Model* Find(absl::string_view name) const;

  // All models, sorted by name.
  std::vector<const Model*> models() const;

  // ---- Implementation details follow; API users need not read. ----
 private:
  ModelRegistry() = default;
  absl::flat_hash_map<std::string, std::unique_ptr<Model>> models_;
};

}  // namespace normserve

#endif  // NORMSERVE_SERVER_MODEL_REGISTRY_H_
