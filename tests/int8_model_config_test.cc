// INT8 through a model config: the γ, β and output quantization that a
// config fixes are folded into integers once, at load, and requests are
// served from that fold, within 1 LSB of the float64 reference and
// bit-identical to the same parameters sent with each request (folded per
// request), on both INT8 paths. Also the INT8 row-length limit's boundary.
#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "kernels/int8_layer_norm.h"
#include "kernels/reference.h"
#include "kernels/thread_pool.h"
#include "server/backend.h"
#include "server/model_registry.h"
#include "server/request_decoder.h"

namespace normserve {
namespace {

constexpr int64_t kDim = 768;
constexpr int64_t kRows = 400;  // 300 KiB: the CPU backend uses its pool
constexpr float kEpsilon = 1e-4f;
constexpr float kOutputScale = 0.045f;
constexpr int32_t kOutputZeroPoint = -7;
constexpr float kInputScale = 0.07f;
constexpr int32_t kInputZeroPoint = 5;

std::vector<float> Normal(size_t n, float mean, float std, std::mt19937* rng) {
  std::normal_distribution<float> d(mean, std);
  std::vector<float> v(n);
  for (float& f : v) f = d(*rng);
  return v;
}

// Exact in protobuf text format: 9 significant digits round-trip a float.
std::string Values(const std::vector<float>& v) {
  return absl::StrCat("[",
                      absl::StrJoin(v, ", ",
                                    [](std::string* out, float f) {
                                      absl::StrAppend(
                                          out, absl::StrFormat("%.9g", f));
                                    }),
                      "]");
}

void SetFloatTensor(v1::Tensor* t, const std::vector<float>& v) {
  t->add_shape(static_cast<int64_t>(v.size()));
  t->set_dtype(v1::DATA_TYPE_FLOAT32);
  t->set_data(reinterpret_cast<const char*>(v.data()),
              v.size() * sizeof(float));
}

class Int8ModelConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937 rng(8);
    gamma_ = Normal(kDim, 1.0f, 0.3f, &rng);
    beta_ = Normal(kDim, 0.0f, 0.5f, &rng);
    auto r = ModelRegistry::CreateFromText(
        absl::StrCat("models { name: \"ln_int8\" normalized_shape: ", kDim,
                     " epsilon: ", absl::StrFormat("%.9g", kEpsilon),
                     " gamma { values: ", Values(gamma_), " }",
                     " beta { values: ", Values(beta_), " }",
                     " output_scale: ", absl::StrFormat("%.9g", kOutputScale),
                     " output_zero_point: ", kOutputZeroPoint, " }"),
        "", {});
    ASSERT_TRUE(r.ok()) << r.status();
    models_ = *std::move(r);
    // Transformer-like rows: N(0, 1)·20 with two outlier channels 15×
    // larger, quantized (and clamped) with the input scale.
    std::vector<float> x = Normal(kRows * kDim, 0.0f, 20.0f, &rng);
    input_.resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      if (i % kDim == 3 || i % kDim == 500) x[i] *= 15.0f;
      input_[i] = static_cast<char>(std::clamp<long>(
          std::lround(x[i] * 0.05f / kInputScale) + kInputZeroPoint, -128,
          127));
    }
  }

  // An INT8 request for `model` with the fixture's input and no parameters.
  v1::NormalizeRequest Request(const std::string& model, v1::Int8Path path) {
    v1::NormalizeRequest r;
    r.set_model(model);
    r.mutable_input()->add_shape(kRows);
    r.mutable_input()->add_shape(kDim);
    r.mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
    r.mutable_input()->set_scale(kInputScale);
    r.mutable_input()->set_zero_point(kInputZeroPoint);
    r.mutable_input()->set_data(input_);
    r.set_int8_path(path);
    return r;
  }

  // The same request for the default model, with the config's parameters
  // sent per request.
  v1::NormalizeRequest PerRequest(v1::Int8Path path) {
    v1::NormalizeRequest r = Request("", path);
    r.set_epsilon(kEpsilon);
    SetFloatTensor(r.mutable_gamma(), gamma_);
    SetFloatTensor(r.mutable_beta(), beta_);
    r.set_output_scale(kOutputScale);
    r.set_output_zero_point(kOutputZeroPoint);
    return r;
  }

  // Runs a decoded request through the CPU backend, as the server's batch
  // worker does, and returns its output bytes.
  std::vector<int8_t> Serve(const DecodedRequest& d) {
    std::vector<int8_t> out(static_cast<size_t>(d.elements));
    Job job;
    job.key = d.key;
    job.rows = d.rows;
    RowSegment& seg = job.segment;
    seg.params = &d.params;
    seg.input_dtype = d.input_dtype;
    seg.output_dtype = d.output_dtype;
    seg.input = d.input;
    seg.output = out.data();
    seg.rows = d.rows;
    seg.int8 = &d.int8;
    seg.int8_float_path = d.int8_float_path;
    Job* batch[] = {&job};
    EXPECT_TRUE(backend_->Run(batch).ok());
    return out;
  }

  // The float64 reference on the dequantized input, quantized with the
  // output scale (round half away from zero) and clamped.
  std::vector<int> Reference() const {
    std::vector<float> x(input_.size());
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = kInputScale * static_cast<float>(static_cast<int8_t>(input_[i]) -
                                              kInputZeroPoint);
    }
    NormParams p;
    p.dim = kDim;
    p.epsilon = kEpsilon;
    p.gamma = gamma_.data();
    p.beta = beta_.data();
    const std::vector<double> y = ReferenceNormalize(p, x.data(), kRows);
    std::vector<int> q(y.size());
    for (size_t i = 0; i < y.size(); ++i) {
      q[i] = static_cast<int>(
          std::clamp(std::round(y[i] / static_cast<double>(kOutputScale)) +
                         kOutputZeroPoint,
                     -128.0, 127.0));
    }
    return q;
  }

  std::vector<float> gamma_, beta_;
  std::string input_;
  std::unique_ptr<ModelRegistry> models_;
  ThreadPool pool_{2};
  std::unique_ptr<Backend> backend_ = MakeCpuBackend(&pool_);
};

TEST_F(Int8ModelConfigTest, ServesFromTheAffineFoldedAtLoad) {
  const Model* model = models_->Find("ln_int8");
  ASSERT_NE(model, nullptr);
  ASSERT_NE(model->int8_affine, nullptr);
  const std::vector<int> ref = Reference();
  for (v1::Int8Path path : {v1::INT8_PATH_INTEGER, v1::INT8_PATH_FLOAT}) {
    SCOPED_TRACE(v1::Int8Path_Name(path));
    const v1::NormalizeRequest request = Request("ln_int8", path);
    auto d = DecodeRequest(request, *models_, {}, {});
    ASSERT_TRUE(d.ok()) << d.status();
    // The model's fold, not one made for this request.
    EXPECT_EQ((*d)->int8.affine, model->int8_affine.get());
    EXPECT_EQ((*d)->int8.affine->output_scale, kOutputScale);
    EXPECT_EQ((*d)->int8.affine->output_zero_point, kOutputZeroPoint);
    EXPECT_EQ((*d)->int8.epsilon, kEpsilon);
    const std::vector<int8_t> y = Serve(**d);
    int64_t exact = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_LE(std::abs(y[i] - ref[i]), 1)
          << "element " << i << ": got " << int{y[i]} << ", reference "
          << ref[i];
      exact += y[i] == ref[i];
    }
    EXPECT_GT(exact, static_cast<int64_t>(y.size()) * 99 / 100);
  }
}

TEST_F(Int8ModelConfigTest, FoldAtLoadIsBitIdenticalToPerRequestParameters) {
  for (v1::Int8Path path : {v1::INT8_PATH_INTEGER, v1::INT8_PATH_FLOAT}) {
    SCOPED_TRACE(v1::Int8Path_Name(path));
    const v1::NormalizeRequest fixed = Request("ln_int8", path);
    const v1::NormalizeRequest sent = PerRequest(path);
    auto at_load = DecodeRequest(fixed, *models_, {}, {});
    auto per_request = DecodeRequest(sent, *models_, {}, {});
    ASSERT_TRUE(at_load.ok()) << at_load.status();
    ASSERT_TRUE(per_request.ok()) << per_request.status();
    EXPECT_EQ((*per_request)->int8.affine,
              &(*per_request)->int8_affine_storage);
    EXPECT_EQ(Serve(**at_load), Serve(**per_request));
  }
}

TEST(Int8RowLimitTest, RowsOfExactly65536AreAccepted) {
  auto models = ModelRegistry::CreateFromText("", "", {});
  ASSERT_TRUE(models.ok()) << models.status();
  v1::NormalizeRequest r;
  r.mutable_input()->add_shape(2);
  r.mutable_input()->add_shape(256);
  r.mutable_input()->add_shape(256);
  r.mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
  r.mutable_input()->set_scale(0.1f);
  r.mutable_input()->mutable_data()->resize(2 * 65536);
  r.set_normalized_ndim(2);
  auto d = DecodeRequest(r, **models, {}, {});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->int8.dim, 65536);
  EXPECT_EQ((*d)->rows, 2);
}

}  // namespace
}  // namespace normserve
