// The bad-input matrix: every malformed request class, as a mutation of a
// valid NormalizeRequest, with the status and the part of the message that
// names the field. Shared by the decoder's tests and the Open Inference
// Protocol's, which must give the same answers.
#ifndef NORMSERVE_TESTS_BAD_REQUESTS_H_
#define NORMSERVE_TESTS_BAD_REQUESTS_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "normserve/v1/normalization_service.pb.h"
#include "server/model_registry.h"

namespace normserve {
namespace testing {

// A default model that takes parameters from requests, "fixed" with a
// [2, 2] row shape and its own gamma, and "int8" with a [4] row shape and
// its own INT8 output quantization.
inline std::unique_ptr<ModelRegistry> Registry() {
  auto r = ModelRegistry::CreateFromText(R"pb(
                                           models {
                                             name: "fixed"
                                             normalized_shape: [ 2, 2 ]
                                             gamma { values: [ 1, 2, 3, 4 ] }
                                           }
                                           models {
                                             name: "int8"
                                             normalized_shape: 4
                                             output_scale: 0.05
                                             output_zero_point: -1
                                           }
                                         )pb",
                                         "", {});
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

inline void SetFloats(v1::Tensor* t, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t->mutable_shape()->Assign(shape.begin(), shape.end());
  t->set_dtype(v1::DATA_TYPE_FLOAT32);
  std::vector<float> v(static_cast<size_t>(n), 1.5f);
  t->set_data(reinterpret_cast<const char*>(v.data()),
              v.size() * sizeof(float));
}

// A valid request: 3 rows of 4 float32 values.
inline v1::NormalizeRequest Valid() {
  v1::NormalizeRequest r;
  SetFloats(r.mutable_input(), {3, 4});
  return r;
}

// Turns the valid request's input into INT8 ([3, 4], scale 0.1).
inline void MakeInt8(v1::NormalizeRequest* r) {
  r->mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
  r->mutable_input()->mutable_data()->resize(12);
  r->mutable_input()->set_scale(0.1f);
}

struct BadRequestCase {
  const char* name;
  std::function<void(v1::NormalizeRequest*)> mutate;
  absl::StatusCode code;
  const char* message_part;
};

inline std::vector<BadRequestCase> BadRequestCases() {
  using C = absl::StatusCode;
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  return {
      {"unknown model", [](auto* r) { r->set_model("nope"); }, C::kNotFound,
       "model = 'nope'"},
      {"missing input", [](auto* r) { r->clear_input(); }, C::kInvalidArgument,
       "input: required"},
      {"dtype unset",
       [](auto* r) {
         r->mutable_input()->set_dtype(v1::DATA_TYPE_UNSPECIFIED);
       },
       C::kInvalidArgument,
       "input.dtype = DATA_TYPE_UNSPECIFIED: expected DATA_TYPE_FLOAT32, "
       "DATA_TYPE_FLOAT16, "
       "DATA_TYPE_BFLOAT16 or DATA_TYPE_INT8"},
      {"int8 without scale",
       [](auto* r) {
         r->mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
         r->mutable_input()->mutable_data()->resize(12);
       },
       C::kInvalidArgument,
       "input.scale = 0: DATA_TYPE_INT8 tensors need a finite scale > 0"},
      {"int8 zero point out of range",
       [](auto* r) {
         r->mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
         r->mutable_input()->mutable_data()->resize(12);
         r->mutable_input()->set_scale(0.1f);
         r->mutable_input()->set_zero_point(200);
       },
       C::kInvalidArgument, "input.zero_point = 200: expected -128 to 127"},
      {"int8 scale NaN",
       [kNan](auto* r) {
         MakeInt8(r);
         r->mutable_input()->set_scale(kNan);
       },
       C::kInvalidArgument,
       "input.scale = nan: DATA_TYPE_INT8 tensors need a finite scale > 0"},
      {"int8 scale Inf",
       [](auto* r) {
         MakeInt8(r);
         r->mutable_input()->set_scale(std::numeric_limits<float>::infinity());
       },
       C::kInvalidArgument,
       "input.scale = inf: DATA_TYPE_INT8 tensors need a finite scale > 0"},
      {"int8 scale negative",
       [](auto* r) {
         MakeInt8(r);
         r->mutable_input()->set_scale(-0.1f);
       },
       C::kInvalidArgument,
       "input.scale = -0.1: DATA_TYPE_INT8 tensors need a finite scale > 0"},
      {"int8 scale too large for the float path",
       [](auto* r) {
         MakeInt8(r);
         r->mutable_input()->set_scale(1e37f);
       },
       C::kInvalidArgument,
       "input.scale = 1e+37: DATA_TYPE_INT8 tensors need a finite scale > 0 "
       "and at most 1.32923e+36"},
      {"int8 epsilon dwarfing the variance on the integer path",
       [](auto* r) {
         MakeInt8(r);
         r->mutable_input()->set_scale(1e-9f);
         r->set_epsilon(1e3f);
       },
       C::kInvalidArgument,
       "input.scale = 1e-09 with epsilon = 1000 and D = 4: the integer path "
       "needs D^2 * epsilon / scale^2 <= 2^60"},
      {"int8 row longer than 65536",
       [](auto* r) {
         MakeInt8(r);
         r->mutable_input()->clear_shape();
         r->mutable_input()->add_shape(1);
         r->mutable_input()->add_shape(65537);
         r->mutable_input()->mutable_data()->resize(65537);
       },
       C::kInvalidArgument,
       "input.shape: INT8 rows have 65537 elements: expected at most 65536"},
      {"int8 row over 65536 across normalized dims",
       [](auto* r) {
         MakeInt8(r);
         r->mutable_input()->clear_shape();
         r->mutable_input()->add_shape(2);
         r->mutable_input()->add_shape(257);
         r->mutable_input()->add_shape(256);
         r->mutable_input()->mutable_data()->resize(2 * 257 * 256);
         r->set_normalized_ndim(2);
       },
       C::kInvalidArgument,
       "input.shape: INT8 rows have 65792 elements: expected at most 65536"},
      {"int8 rms norm",
       [](auto* r) {
         r->mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
         r->mutable_input()->mutable_data()->resize(12);
         r->mutable_input()->set_scale(0.1f);
         r->set_kind(v1::NORM_KIND_RMS_NORM);
       },
       C::kInvalidArgument, "INT8 inputs support NORM_KIND_LAYER_NORM only"},
      {"int8 output scale",
       [](auto* r) {
         r->mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
         r->mutable_input()->mutable_data()->resize(12);
         r->mutable_input()->set_scale(0.1f);
         r->set_output_scale(-1);
       },
       C::kInvalidArgument, "output_scale = -1: expected a finite value > 0"},
      // Found by fuzz_request_decoder: a denormal output scale made the float
      // path quantize NaN (undefined conversion) and the folded multipliers
      // overflow int32.
      {"int8 output scale too small",
       [](auto* r) {
         r->mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
         r->mutable_input()->mutable_data()->resize(12);
         r->mutable_input()->set_scale(0.1f);
         r->set_output_scale(1e-42f);
       },
       C::kInvalidArgument,
       ": expected a normal float with max|gamma| / output_scale at most "
       "65536"},
      {"int8 output zero point above 127",
       [](auto* r) {
         MakeInt8(r);
         r->set_output_zero_point(128);
       },
       C::kInvalidArgument, "output_zero_point = 128: expected -128 to 127"},
      {"int8 output zero point below -128",
       [](auto* r) {
         MakeInt8(r);
         r->set_output_zero_point(-300);
       },
       C::kInvalidArgument, "output_zero_point = -300: expected -128 to 127"},
      {"int8 output scale NaN",
       [kNan](auto* r) {
         MakeInt8(r);
         r->set_output_scale(kNan);
       },
       C::kInvalidArgument, "output_scale = nan: expected a finite value > 0"},
      // "int8" fixes its output quantization and takes no request params.
      {"int8 model fixes its output scale",
       [](auto* r) {
         r->set_model("int8");
         MakeInt8(r);
         r->set_output_scale(0.1f);
       },
       C::kInvalidArgument,
       "output_scale/output_zero_point: model 'int8' fixes its output "
       "quantization: expected them unset"},
      {"int8 model fixes its output zero point",
       [](auto* r) {
         r->set_model("int8");
         MakeInt8(r);
         r->set_output_zero_point(0);
       },
       C::kInvalidArgument,
       "output_scale/output_zero_point: model 'int8' fixes its output "
       "quantization: expected them unset"},
      {"int8 gamma not finite",
       [kNan](auto* r) {
         MakeInt8(r);
         SetFloats(r->mutable_gamma(), {4});
         std::vector<float> g = {1, 1, kNan, 1};
         r->mutable_gamma()->set_data(reinterpret_cast<const char*>(g.data()),
                                      g.size() * sizeof(float));
       },
       C::kInvalidArgument,
       "gamma[2] = nan: INT8 inputs need finite gamma and beta values"},
      // INT8 fields on other inputs would be ignored: the client asked for
      // something it would not get.
      {"output scale on a float input",
       [](auto* r) { r->set_output_scale(0.05f); }, C::kInvalidArgument,
       "output_scale = 0.05: only for DATA_TYPE_INT8 inputs (input.dtype = "
       "DATA_TYPE_FLOAT32); expected it unset"},
      {"output zero point on a float input",
       [](auto* r) { r->set_output_zero_point(3); }, C::kInvalidArgument,
       "output_zero_point = 3: only for DATA_TYPE_INT8 inputs"},
      {"int8 path on a float input",
       [](auto* r) { r->set_int8_path(v1::INT8_PATH_FLOAT); },
       C::kInvalidArgument,
       "int8_path = INT8_PATH_FLOAT: only for DATA_TYPE_INT8 inputs"},
      {"scale on a float input",
       [](auto* r) { r->mutable_input()->set_scale(0.1f); },
       C::kInvalidArgument,
       "input.scale = 0.1: only DATA_TYPE_INT8 inputs are quantized "
       "(input.dtype = DATA_TYPE_FLOAT32); expected it unset"},
      {"zero point on gamma",
       [](auto* r) {
         SetFloats(r->mutable_gamma(), {4});
         r->mutable_gamma()->set_zero_point(3);
       },
       C::kInvalidArgument,
       "gamma.zero_point = 3: only DATA_TYPE_INT8 inputs are quantized"},
      {"int8 output to float",
       [](auto* r) {
         r->mutable_input()->set_dtype(v1::DATA_TYPE_INT8);
         r->mutable_input()->mutable_data()->resize(12);
         r->mutable_input()->set_scale(0.1f);
         r->set_output_dtype(v1::DATA_TYPE_FLOAT32);
       },
       C::kInvalidArgument, "INT8 inputs give DATA_TYPE_INT8 outputs"},
      {"float_data with float16",
       [](auto* r) {
         r->mutable_input()->clear_data();
         r->mutable_input()->set_dtype(v1::DATA_TYPE_FLOAT16);
         for (int i = 0; i < 12; ++i) r->mutable_input()->add_float_data(1);
       },
       C::kInvalidArgument, "float_data is only for DATA_TYPE_FLOAT32"},
      {"float16 data length",
       [](auto* r) { r->mutable_input()->set_dtype(v1::DATA_TYPE_FLOAT16); },
       C::kInvalidArgument,
       "input.data has 48 bytes: shape [3, 4] of DATA_TYPE_FLOAT16 needs 24"},
      {"residual wrong shape",
       [](auto* r) {
         SetFloats(r->mutable_residual(), {3, 5});
       },
       C::kInvalidArgument, "residual.shape = [3, 5]: expected [3, 4]"},
      {"residual wrong dtype",
       [](auto* r) {
         r->mutable_residual()->add_shape(3);
         r->mutable_residual()->add_shape(4);
         r->mutable_residual()->set_dtype(v1::DATA_TYPE_BFLOAT16);
         r->mutable_residual()->mutable_data()->resize(24);
       },
       C::kInvalidArgument,
       "residual.dtype = DATA_TYPE_BFLOAT16: expected the input's "
       "DATA_TYPE_FLOAT32"},
      {"dtype unknown",
       [](auto* r) {
         r->mutable_input()->set_dtype(static_cast<v1::DataType>(99));
       },
       C::kInvalidArgument, "input.dtype = 99"},
      {"rank 0", [](auto* r) { r->mutable_input()->clear_shape(); },
       C::kInvalidArgument, "input.shape has rank 0"},
      {"rank 9",
       [](auto* r) {
         r->mutable_input()->clear_shape();
         for (int i = 0; i < 9; ++i) r->mutable_input()->add_shape(1);
       },
       C::kInvalidArgument, "input.shape has rank 9: expected 1 to 8"},
      {"zero dim", [](auto* r) { r->mutable_input()->set_shape(1, 0); },
       C::kInvalidArgument, "input.shape[1] = 0: dimensions must be positive"},
      {"negative dim", [](auto* r) { r->mutable_input()->set_shape(1, -8); },
       C::kInvalidArgument, "input.shape[1] = -8: dimensions must be positive"},
      {"element count overflows int64",
       [](auto* r) {
         r->mutable_input()->set_shape(0, int64_t{1} << 40);
         r->mutable_input()->set_shape(1, int64_t{1} << 40);
       },
       C::kInvalidArgument, "elements"},
      {"data too short",
       [](auto* r) { r->mutable_input()->mutable_data()->resize(47); },
       C::kInvalidArgument,
       "input.data has 47 bytes: shape [3, 4] of DATA_TYPE_FLOAT32 needs 48"},
      {"both data and float_data",
       [](auto* r) { r->mutable_input()->add_float_data(1); },
       C::kInvalidArgument, "input: both data and float_data are set"},
      {"float_data count",
       [](auto* r) {
         r->mutable_input()->clear_data();
         r->mutable_input()->add_float_data(1);
       },
       C::kInvalidArgument,
       "input.float_data has 1 values: shape [3, 4] needs 12"},
      {"normalized_ndim too big", [](auto* r) { r->set_normalized_ndim(3); },
       C::kInvalidArgument,
       "normalized_ndim = 3: expected 1 to the input's rank 2"},
      {"normalized_ndim zero", [](auto* r) { r->set_normalized_ndim(0); },
       C::kInvalidArgument,
       "normalized_ndim = 0: expected 1 to the input's rank 2 (or unset for "
       "the model's)"},
      {"normalized_ndim negative", [](auto* r) { r->set_normalized_ndim(-1); },
       C::kInvalidArgument, "normalized_ndim = -1"},
      {"epsilon zero", [](auto* r) { r->set_epsilon(0); }, C::kInvalidArgument,
       "epsilon = 0: expected a finite value > 0"},
      {"epsilon negative", [](auto* r) { r->set_epsilon(-1e-5f); },
       C::kInvalidArgument, "epsilon = -1e-05"},
      {"epsilon NaN", [kNan](auto* r) { r->set_epsilon(kNan); },
       C::kInvalidArgument, "epsilon = nan"},
      {"epsilon Inf",
       [](auto* r) { r->set_epsilon(std::numeric_limits<float>::infinity()); },
       C::kInvalidArgument, "epsilon = inf"},
      {"gamma wrong shape", [](auto* r) { SetFloats(r->mutable_gamma(), {3}); },
       C::kInvalidArgument, "gamma.shape = [3]: expected [4]"},
      {"beta wrong dtype",
       [](auto* r) {
         SetFloats(r->mutable_beta(), {4});
         r->mutable_beta()->set_dtype(v1::DATA_TYPE_INT8);
       },
       C::kInvalidArgument,
       "beta.dtype = DATA_TYPE_INT8: expected DATA_TYPE_FLOAT32"},
      {"gamma short data",
       [](auto* r) {
         SetFloats(r->mutable_gamma(), {4});
         r->mutable_gamma()->mutable_data()->resize(3);
       },
       C::kInvalidArgument, "gamma.data has 3 bytes"},
      {"kind unknown",
       [](auto* r) { r->set_kind(static_cast<v1::NormKind>(7)); },
       C::kInvalidArgument, "kind = 7"},
      {"device unknown",
       [](auto* r) { r->set_device(static_cast<v1::Device>(5)); },
       C::kInvalidArgument, "device = 5"},
      {"cuda without a GPU", [](auto* r) { r->set_device(v1::DEVICE_CUDA); },
       C::kFailedPrecondition, "device = DEVICE_CUDA"},
      {"output dtype unsupported",
       [](auto* r) { r->set_output_dtype(v1::DATA_TYPE_INT8); },
       C::kInvalidArgument,
       "output_dtype = DATA_TYPE_INT8: only INT8 inputs give INT8 outputs"},
      {"model shape mismatch", [](auto* r) { r->set_model("fixed"); },
       C::kInvalidArgument,
       "input.shape = [3, 4]: model 'fixed' expects trailing dimensions [2, "
       "2]"},
      {"normalized_ndim other than the model's",
       [](auto* r) {
         r->set_model("fixed");
         SetFloats(r->mutable_input(), {3, 2, 2});
         r->set_normalized_ndim(1);
       },
       C::kInvalidArgument,
       "normalized_ndim = 1: model 'fixed' normalizes 2 trailing dimensions "
       "[2, 2]: expected 2 or unset"},
      {"model refuses request params",
       [](auto* r) {
         r->set_model("fixed");
         SetFloats(r->mutable_input(), {1, 2, 2});
         r->set_epsilon(1e-3f);
       },
       C::kInvalidArgument,
       "epsilon: model 'fixed' does not accept per-request epsilon, gamma, "
       "beta or kind"},
      {"model refuses a request kind",
       [](auto* r) {
         r->set_model("fixed");
         SetFloats(r->mutable_input(), {1, 2, 2});
         r->set_kind(v1::NORM_KIND_RMS_NORM);
       },
       C::kInvalidArgument, "kind: model 'fixed' does not accept per-request"},
  };
}

}  // namespace testing
}  // namespace normserve

#endif  // NORMSERVE_TESTS_BAD_REQUESTS_H_
