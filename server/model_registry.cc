#include "server/model_registry.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "normserve/v1/model_config.pb.h"
#include "server/internal/proto_enums.h"
#include "server/internal/status_macros.h"
#include "server/npy.h"

namespace normserve {
namespace {

constexpr char kDefaultModel[] = "default";
constexpr int64_t kMaxModelElements = int64_t{1} << 26;

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
           c == '-' || c == '.';
  });
}

absl::StatusOr<std::vector<float>> LoadParameter(
    const v1::ParameterSource& src, const std::string& field,
    const std::vector<int64_t>& shape, int64_t count,
    const std::string& base_dir) {
  const bool inline_values = src.values_size() > 0;
  const bool from_file = !src.npy_path().empty();
  if (inline_values == from_file) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": set exactly one of values and npy_path"));
  }
  if (shape.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": a model with gamma/beta needs normalized_shape"));
  }
  std::vector<float> values;
  if (inline_values) {
    values.assign(src.values().begin(), src.values().end());
    if (static_cast<int64_t>(values.size()) != count) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".values has ", values.size(), " values; normalized_shape [",
          absl::StrJoin(shape, ", "), "] needs ", count));
    }
  } else {
    std::string path = src.npy_path();
    if (!path.empty() && path[0] != '/' && !base_dir.empty()) {
      path = absl::StrCat(base_dir, base_dir.back() == '/' ? "" : "/", path);
    }
    absl::StatusOr<NpyArray> read = ReadNpyFile(path);
    if (!read.ok()) {
      return absl::Status(
          read.status().code(),
          absl::StrCat(field, ".npy_path: ", read.status().message()));
    }
    NpyArray array = *std::move(read);
    if (array.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".npy_path ", path, " has shape [",
          absl::StrJoin(array.shape, ", "), "]; expected normalized_shape [",
          absl::StrJoin(shape, ", "), "]"));
    }
    values = std::move(array.values);
  }
  return values;
}

absl::StatusOr<std::unique_ptr<Model>> BuildModel(
    const v1::ModelConfig& c, const std::string& base_dir,
    const ModelRegistry::Options& options) {
  const std::string where = absl::StrCat("model '", c.name(), "'");
  if (!ValidName(c.name())) {
    return absl::InvalidArgumentError(
        absl::StrCat("models.name = '", c.name(),
                     "': expected 1-128 characters of [A-Za-z0-9_.-]"));
  }
  auto m = std::make_unique<Model>();
  m->name = c.name();
  const std::optional<NormKind> kind =
      NormKindFromProto(c.kind(), NormKind::kLayerNorm);
  if (!kind.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": kind = ", c.kind(), " is unknown"));
  }
  m->kind = *kind;
  int64_t count = 1;
  for (int i = 0; i < c.normalized_shape_size(); ++i) {
    const int64_t d = c.normalized_shape(i);
    if (d <= 0 || d > kMaxModelElements || count * d > kMaxModelElements) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": normalized_shape[", i, "] = ", d,
                       ": dimensions must be positive and the row at most ",
                       kMaxModelElements, " elements"));
    }
    count *= d;
    m->normalized_shape.push_back(d);
  }
  if (c.has_epsilon()) {
    if (!std::isfinite(c.epsilon()) || c.epsilon() <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": epsilon = ", c.epsilon(), ": expected finite and > 0"));
    }
    m->epsilon = c.epsilon();
  }
  if (c.has_gamma()) {
    ASSIGN_OR_RETURN(m->gamma,
                     LoadParameter(c.gamma(), where + " gamma",
                                   m->normalized_shape, count, base_dir));
  }
  if (c.has_beta()) {
    ASSIGN_OR_RETURN(
        m->beta, LoadParameter(c.beta(), where + " beta", m->normalized_shape,
                               count, base_dir));
  }
  const std::optional<DeviceKind> device =
      DeviceFromProto(c.device(), options.default_device);
  if (!device.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": device = ", c.device(), " is unknown"));
  }
  m->device = *device;
  m->allow_request_params = c.allow_request_params();
  if (c.has_output_zero_point() &&
      (c.output_zero_point() < -128 || c.output_zero_point() > 127)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": output_zero_point = ", c.output_zero_point(),
                     ": expected -128 to 127"));
  }
  m->int8_output_zero_point = c.output_zero_point();
  if (c.has_output_scale()) {
    if (!std::isfinite(c.output_scale()) || c.output_scale() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": output_scale = ", c.output_scale(),
                       ": expected finite and > 0"));
    }
    m->int8_output_scale = c.output_scale();
  }
  for (const auto& [name, values] :
       {std::pair<const char*, const std::vector<float>*>{"gamma", &m->gamma},
        {"beta", &m->beta}}) {
    for (size_t i = 0; i < values->size(); ++i) {
      if (!std::isfinite((*values)[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ", name, "[", i, "] = ", (*values)[i],
                         ": expected a finite value"));
      }
    }
  }
  if (m->int8_output_scale.has_value() &&
      !Int8OutputScaleFits(m->gamma.empty() ? nullptr : m->gamma.data(),
                           static_cast<int64_t>(m->gamma.size()),
                           *m->int8_output_scale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": output_scale = ", *m->int8_output_scale,
        ": expected a normal float with max|gamma| / output_scale at most "
        "65536"));
  }
  if (m->int8_output_scale.has_value() && !m->normalized_shape.empty()) {
    m->int8_affine = std::make_shared<const Int8Affine>(
        FoldInt8Affine(m->gamma.empty() ? nullptr : m->gamma.data(),
                       m->beta.empty() ? nullptr : m->beta.data(), count,
                       *m->int8_output_scale, m->int8_output_zero_point));
  }
  m->batching = options.default_batching;
  const v1::BatchingConfig& b = c.batching();
  if (b.has_max_batch_rows()) m->batching.max_batch_rows = b.max_batch_rows();
  if (b.has_max_queue_delay_us()) {
    m->batching.max_queue_delay = absl::Microseconds(b.max_queue_delay_us());
  }
  if (b.has_max_queue_requests()) {
    m->batching.max_queue_requests = b.max_queue_requests();
  }
  if (m->batching.max_batch_rows <= 0 || m->batching.max_queue_requests <= 0 ||
      m->batching.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        ": batching: max_batch_rows and max_queue_requests must be > 0 "
        "and max_queue_delay_us >= 0"));
  }
  return m;
}

// Keeps the first parse error, with its position.
class TextErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) {
      first = absl::StrCat("line ", line + 1, " column ", column + 1, ": ",
                           message);
    }
  }
  std::string first;
};

std::unique_ptr<Model> DefaultModel(const ModelRegistry::Options& options) {
  auto m = std::make_unique<Model>();
  m->name = kDefaultModel;
  m->allow_request_params = true;
  m->batching = options.default_batching;
  m->device = options.default_device;
  return m;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::CreateFromText(
    absl::string_view config_text, const std::string& base_dir,
    const Options& options) {
  v1::ModelConfigList config;
  TextErrors errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(config_text), &config)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config: not a normserve.v1.ModelConfigList in protobuf text "
        "format: ",
        errors.first));
  }
  std::unique_ptr<ModelRegistry> registry(new ModelRegistry);
  registry->models_[kDefaultModel] = DefaultModel(options);
  absl::flat_hash_map<std::string, bool> seen;
  for (const v1::ModelConfig& c : config.models()) {
    if (seen[c.name()]) {
      return absl::InvalidArgumentError(
          absl::StrCat("model config: name '", c.name(), "' appears twice"));
    }
    seen[c.name()] = true;
    ASSIGN_OR_RETURN(std::unique_ptr<Model> m,
                     BuildModel(c, base_dir, options));
    registry->models_[m->name] = std::move(m);
  }
  uint64_t id = 1;
  for (const Model* m : registry->models()) {
    const_cast<Model*>(m)->id = id++;
  }
  return registry;
}

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Create(
    const Options& options) {
  if (options.config_path.empty()) {
    return CreateFromText("", "", options);
  }
  // A directory opens as a stream but reads nothing: refused by name, not
  // taken for an empty model list.
  // (Pipes and /dev/stdin are read as files.)
  std::error_code error;
  if (std::filesystem::is_directory(options.config_path, error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model_config ", options.config_path,
                     ": a directory: expected a model config file"));
  }
  std::ifstream in(options.config_path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("--model_config ", options.config_path, ": cannot open"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    return absl::UnavailableError(
        absl::StrCat("--model_config ", options.config_path, ": read failed"));
  }
  std::string base_dir;
  const size_t slash = options.config_path.rfind('/');
  if (slash == 0) {
    base_dir = "/";  // "/models.pbtxt": relative paths are under the root
  } else if (slash != std::string::npos) {
    base_dir = options.config_path.substr(0, slash);
  }
  auto registry = CreateFromText(ss.str(), base_dir, options);
  if (!registry.ok()) {
    return absl::Status(
        registry.status().code(),
        absl::StrCat(options.config_path, ": ", registry.status().message()));
  }
  return registry;
}

const Model* ModelRegistry::Find(absl::string_view name) const {
  if (name.empty()) name = kDefaultModel;
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second.get();
}

std::vector<const Model*> ModelRegistry::models() const {
  std::vector<const Model*> out;
  out.reserve(models_.size());
  for (const auto& [name, m] : models_) out.push_back(m.get());
  std::sort(out.begin(), out.end(),
            [](const Model* a, const Model* b) { return a->name < b->name; });
  return out;
}

}  // namespace normserve
