// Shared by the decoding fuzz targets: a registry with fixed-shape, INT8 and
// default models, and a run of whatever validated through the kernels into
// buffers sized exactly as the service sizes them, so that a validation gap
// shows up as an ASan report rather than a silent over-read.
#ifndef NORMSERVE_TESTS_FUZZ_FUZZ_COMMON_H_
#define NORMSERVE_TESTS_FUZZ_FUZZ_COMMON_H_

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "kernels/normalize.h"
#include "server/model_registry.h"
#include "server/request_decoder.h"

namespace normserve::fuzz {

inline const ModelRegistry& Registry() {
  static const ModelRegistry* registry = [] {
    auto r = ModelRegistry::CreateFromText(
        R"pb(
          models {
            name: "ln4"
            normalized_shape: 4
            gamma { values: [ 1, 2, 3, 4 ] }
          }
          models {
            name: "q8"
            normalized_shape: 8
            output_scale: 0.05
            output_zero_point: 3
          }
          models {
            name: "open"
            kind: NORM_KIND_RMS_NORM
            allow_request_params: true
          }
        )pb",
        "", {});
    if (!r.ok()) std::abort();
    return r->release();
  }();
  return *registry;
}

// Small limits keep each run fast.
inline ValidationLimits Limits() {
  ValidationLimits limits;
  limits.max_elements = 1 << 16;
  return limits;
}

// A decoding result: errors must say why; successes are computed.
inline void Run(
    const absl::StatusOr<std::unique_ptr<DecodedRequest>>& decoded) {
  if (!decoded.ok()) {
    if (decoded.status().message().empty()) std::abort();
    return;
  }
  const DecodedRequest& d = **decoded;
  std::vector<uint8_t> output(static_cast<size_t>(d.elements) *
                              DTypeSize(d.output_dtype));
  std::vector<uint8_t> sum(static_cast<size_t>(d.elements) *
                           DTypeSize(d.input_dtype));
  std::vector<float> mean(static_cast<size_t>(d.rows)),
      rstd(static_cast<size_t>(d.rows));
  RowSegment s;
  s.params = &d.params;
  s.input_dtype = d.input_dtype;
  s.output_dtype = d.output_dtype;
  s.input = d.input;
  s.output = output.data();
  s.rows = d.rows;
  s.residual = d.residual;
  s.sum_output = d.return_residual_sum ? sum.data() : nullptr;
  s.mean = d.return_statistics ? mean.data() : nullptr;
  s.rstd = d.return_statistics ? rstd.data() : nullptr;
  if (d.input_dtype == DType::kInt8) {
    s.int8 = &d.int8;
    s.int8_float_path = d.int8_float_path;
  }
  NormalizeSegments({&s, 1});
}

}  // namespace normserve::fuzz

#endif  // NORMSERVE_TESTS_FUZZ_FUZZ_COMMON_H_
