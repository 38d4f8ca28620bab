// normctl: send one tensor to a normserve server and print a summary.
//
//   normctl --shape=2,768                       random N(0,1) input
//   normctl --input=x.npy --output=y.npy        from and to .npy files
//   normctl --list_models | --health
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/normserve_client.h"
#include "server/npy.h"

ABSL_FLAG(std::string, server, "127.0.0.1:8001", "Server address host:port.");
ABSL_FLAG(std::string, model, "", "Model name; empty for the default model.");
ABSL_FLAG(std::string, shape, "",
          "Shape of a random N(0,1) input, e.g. 2,768 (instead of --input).");
ABSL_FLAG(std::string, input, "", "Input tensor as a .npy file (float32/64).");
ABSL_FLAG(std::string, output, "", "Write the output tensor to this .npy.");
ABSL_FLAG(std::string, gamma, "", "Gamma as a .npy file (optional).");
ABSL_FLAG(std::string, beta, "", "Beta as a .npy file (optional).");
ABSL_FLAG(int, normalized_ndim, 0, "Trailing dims per row; 0: model's.");
ABSL_FLAG(double, epsilon, 0, "Epsilon; 0 leaves it unset (model's).");
ABSL_FLAG(bool, rms, false, "RMSNorm instead of LayerNorm.");
ABSL_FLAG(std::string, dtype, "float32",
          "Wire type of the input: float32, float16 or bfloat16.");
ABSL_FLAG(std::string, output_dtype, "",
          "Output type: float32, float16 or bfloat16; empty: the input's.");
ABSL_FLAG(bool, stats, false, "Also print per-row mean and rstd.");
ABSL_FLAG(std::string, device, "",
          "Where to compute: cpu or cuda; empty: the model's device.");
ABSL_FLAG(uint32_t, seed, 1, "Seed of the random input.");
ABSL_FLAG(int, timeout_ms, 10000, "Deadline of the call.");
ABSL_FLAG(bool, list_models, false, "List the server's models and exit.");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA bundle: connect over TLS.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM client key (mutual TLS).");
ABSL_FLAG(std::string, tls_server_name, "",
          "Expected server certificate name, if not the --server host.");
ABSL_FLAG(bool, health, false, "Print the server's health and exit.");

namespace {

bool ParseDType(const std::string& name, normserve::v1::DataType* out) {
  if (name == "float32" || name == "f32") {
    *out = normserve::v1::DATA_TYPE_FLOAT32;
  } else if (name == "float16" || name == "f16") {
    *out = normserve::v1::DATA_TYPE_FLOAT16;
  } else if (name == "bfloat16" || name == "bf16") {
    *out = normserve::v1::DATA_TYPE_BFLOAT16;
  } else {
    return false;
  }
  return true;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "normctl: %s: %s\n",
               std::string(absl::StatusCodeToString(s.code())).c_str(),
               std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "send a tensor to normserve and print the result.\n"
      "Usage: normctl --shape=2,768 | --input=x.npy [--output=y.npy]");
  absl::ParseCommandLine(argc, argv);

  normserve::NormClient::Options options;
  options.target = absl::GetFlag(FLAGS_server);
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  for (const auto& [flag, target] :
       {std::make_pair(absl::GetFlag(FLAGS_tls_ca), &options.tls_ca_pem),
        std::make_pair(absl::GetFlag(FLAGS_tls_cert), &options.tls_cert_pem),
        std::make_pair(absl::GetFlag(FLAGS_tls_key), &options.tls_key_pem)}) {
    if (flag.empty()) continue;
    std::ifstream in(flag);
    if (!in) return Fail(absl::NotFoundError(flag + ": cannot open"));
    std::stringstream ss;
    ss << in.rdbuf();
    *target = ss.str();
  }
  options.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  auto client = normserve::NormClient::Create(options);
  if (!client.ok()) return Fail(client.status());

  if (absl::GetFlag(FLAGS_health)) {
    auto serving = (*client)->IsServing();
    if (!serving.ok()) return Fail(serving.status());
    std::printf("%s\n", *serving ? "SERVING" : "NOT_SERVING");
    return *serving ? 0 : 3;
  }
  if (absl::GetFlag(FLAGS_list_models)) {
    auto models = (*client)->ListModels();
    if (!models.ok()) return Fail(models.status());
    for (const auto& m : models->models()) {
      std::printf(
          "%s kind=%s shape=[%s] eps=%g gamma=%d beta=%d request_params=%d\n",
          m.name().c_str(), normserve::v1::NormKind_Name(m.kind()).c_str(),
          absl::StrJoin(m.normalized_shape(), ",").c_str(), m.epsilon(),
          m.has_gamma(), m.has_beta(), m.allows_request_params());
    }
    return 0;
  }

  normserve::NormalizeInput in;
  in.model = absl::GetFlag(FLAGS_model);
  in.normalized_ndim = absl::GetFlag(FLAGS_normalized_ndim);
  if (absl::GetFlag(FLAGS_epsilon) != 0) {
    in.epsilon = static_cast<float>(absl::GetFlag(FLAGS_epsilon));
  }
  if (absl::GetFlag(FLAGS_rms)) in.kind = normserve::v1::NORM_KIND_RMS_NORM;
  if (!ParseDType(absl::GetFlag(FLAGS_dtype), &in.dtype) ||
      (!absl::GetFlag(FLAGS_output_dtype).empty() &&
       !ParseDType(absl::GetFlag(FLAGS_output_dtype), &in.output_dtype))) {
    return Fail(absl::InvalidArgumentError(
        "--dtype/--output_dtype: expected float32, float16 or bfloat16"));
  }
  in.return_statistics = absl::GetFlag(FLAGS_stats);
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device == "cpu") {
    in.device = normserve::v1::DEVICE_CPU;
  } else if (device == "cuda") {
    in.device = normserve::v1::DEVICE_CUDA;
  } else if (!device.empty()) {
    return Fail(absl::InvalidArgumentError("--device: expected cpu or cuda"));
  }
  in.request_id = "normctl";
  if (!absl::GetFlag(FLAGS_input).empty()) {
    auto x = normserve::ReadNpyFile(absl::GetFlag(FLAGS_input));
    if (!x.ok()) return Fail(x.status());
    in.shape = x->shape;
    in.values = std::move(x->values);
  } else if (!absl::GetFlag(FLAGS_shape).empty()) {
    int64_t count = 1;
    for (absl::string_view part :
         absl::StrSplit(absl::GetFlag(FLAGS_shape), ',')) {
      int64_t d = 0;
      if (!absl::SimpleAtoi(part, &d) || d <= 0 || d > (int64_t{1} << 30) ||
          count > (int64_t{1} << 30) / d) {
        return Fail(absl::InvalidArgumentError(
            "--shape: expected positive integers like 2,768"));
      }
      in.shape.push_back(d);
      count *= d;
    }
    std::mt19937 rng(absl::GetFlag(FLAGS_seed));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    in.values.resize(static_cast<size_t>(count));
    for (float& v : in.values) v = normal(rng);
  } else {
    return Fail(absl::InvalidArgumentError("give --shape or --input"));
  }
  for (const auto& [flag, target] :
       {std::make_pair(absl::GetFlag(FLAGS_gamma), &in.gamma),
        std::make_pair(absl::GetFlag(FLAGS_beta), &in.beta)}) {
    if (flag.empty()) continue;
    auto p = normserve::ReadNpyFile(flag);
    if (!p.ok()) return Fail(p.status());
    *target = std::move(p->values);
  }

  auto out = (*client)->Normalize(in);
  if (!out.ok()) return Fail(out.status());
  std::printf("model=%s shape=[%s] dtype=%s latency=%.3f ms\n",
              out->model.c_str(), absl::StrJoin(out->shape, ",").c_str(),
              normserve::v1::DataType_Name(out->dtype).c_str(),
              absl::ToDoubleMilliseconds(out->latency));
  for (size_t r = 0; r < out->mean.size() && r < 4; ++r) {
    std::printf("row %zu: mean=%.6g rstd=%.6g\n", r, out->mean[r],
                out->rstd[r]);
  }
  std::printf("first values:");
  for (size_t i = 0; i < out->values.size() && i < 8; ++i) {
    std::printf(" %.6f", out->values[i]);
  }
  std::printf("\n");
  if (!absl::GetFlag(FLAGS_output).empty()) {
    const absl::Status s = normserve::WriteNpyFile(absl::GetFlag(FLAGS_output),
                                                   out->shape, out->values);
    if (!s.ok()) return Fail(s);
    std::printf("wrote %s\n", absl::GetFlag(FLAGS_output).c_str());
  }
  return 0;
}
