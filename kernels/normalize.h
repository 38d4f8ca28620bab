// normserve kernels: LayerNorm and RMSNorm over rows of a batch.
//
// What it does
//   For each row r of D = params.dim contiguous elements:
//     LayerNorm: mean_r = (1/D) sum x, var_r = (1/D) sum (x - mean_r)^2,
//                y = (x - mean_r) / sqrt(var_r + eps) * gamma + beta
//     RMSNorm:   y = x / sqrt((1/D) sum x^2 + eps) * gamma + beta
//   exactly as torch.nn.functional.layer_norm / rms_norm define them (biased
//   variance, eps inside the square root). gamma == nullptr means 1 and
//   beta == nullptr means 0.
//
// Numerics
//   Statistics are accumulated in at least fp32 with a shifted two-pass
//   method that stays accurate when |mean| >> std; outputs are formed as
//   (x - mean) * rstd so that a constant row gives exactly beta. A NaN or Inf
//   anywhere in a row makes that row's outputs NaN (as torch does) and
//   touches no other row.
//
// Batch invariance
//   The bits of a row's output depend only on that row's values, D, eps,
//   gamma and beta: never on which segment or batch the row came in, its
//   position, the pointer's alignment or the thread that ran it.
//
// Batches as segments
//   A batch is a list of RowSegments, one per request, each pointing at its
//   own input and output buffers (the request's bytes and the response's
//   buffer), so a batcher never copies requests into one buffer. Each segment
//   carries its own parameters.
//
// Threading and ownership
//   Functions are pure: they read inputs and write outputs through the given
//   pointers and keep no state, so any number of threads may call them at
//   once on disjoint outputs. The caller owns every buffer; inputs and
//   outputs must not overlap. No function allocates, throws or fails: callers
//   validate shapes first (the server does, at its edge).
#ifndef NORMSERVE_KERNELS_NORMALIZE_H_
#define NORMSERVE_KERNELS_NORMALIZE_H_

#include <cstdint>

#include "absl/types/span.h"

namespace normserve {

enum class NormKind { kLayerNorm, kRmsNorm };

// Parameters shared by every row of a segment. Pointers are borrowed.
struct NormParams {
  NormKind kind = NormKind::kLayerNorm;
  int64_t dim = 0;  // D, elements per row; > 0.
  float epsilon = 1e-5f;
  const float* gamma = nullptr;  // D values, or nullptr for 1.
  const float* beta = nullptr;   // D values, or nullptr for 0.
};

// A run of `rows` contiguous rows of one request.
struct RowSegment {
  const NormParams* params = nullptr;
  const float* input = nullptr;  // rows * params->dim floats.
  float* output = nullptr;       // rows * params->dim floats.
  int64_t rows = 0;
};

// Normalizes `rows` rows of `params.dim` floats from `input` into `output`.
void NormalizeRows(const NormParams& params, const float* input, float* output,
                   int64_t rows);

// Normalizes every segment of a batch, in order, on the calling thread.
void NormalizeSegments(absl::Span<const RowSegment> segments);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_NORMALIZE_H_
