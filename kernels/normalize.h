// normserve kernels: LayerNorm and RMSNorm over rows of a batch, on the CPU.
//
// What it does
//   For each row r of D = params.dim contiguous elements, with
//   z = x (or z = x + residual, rounded to the input dtype, exactly what an
//   unfused `norm(x + residual)` in that dtype computes):
//     LayerNorm: mean = (1/D) Σ z, var = (1/D) Σ (z − mean)²,
//                y = (z − mean) / sqrt(var + ε) · γ + β
//     RMSNorm:   y = z / sqrt((1/D) Σ z² + ε) · γ + β
//   as torch.nn.functional.layer_norm / rms_norm define them (biased
//   variance, ε inside the square root). γ == nullptr means 1 and
//   β == nullptr means 0. Optionally the kernel also writes z (the
//   residual stream a transformer block carries on) and per-row mean and
//   rstd = 1/sqrt(var + ε) (for RMSNorm, mean is 0 and rstd uses mean(z²)).
//
// Types
//   Input and output are each FLOAT32, FLOAT16 or BFLOAT16 (independently);
//   γ and β are float32. Arithmetic is float32 with statistics accumulated
//   in float32 blocks summed in double; outputs round to nearest even.
//
// Numerics
//   Mean and variance are taken of u = z − s, s the mean of the row's first
//   vector (near the row's mean), so rows with |mean| ≫ std keep their
//   precision. One pass sums u and u²; var = Σu²/D − (Σu/D)² is kept only
//   where that cancels at most one bit (s within one std of the mean: nearly
//   every row), else a second pass sums (u − mean)². Never the unshifted
//   E[x²] − E[x]². Outputs are (z − mean)·rstd, so a constant row gives
//   exactly β. A row whose float32 statistics would overflow or underflow
//   (values beyond ~1e19 or below ~1e-15 in spread) is recomputed in double.
//   A NaN or Inf anywhere in a row touches no other row. As torch does: it
//   makes the row's outputs NaN under LayerNorm; under RMSNorm a NaN does,
//   and an Inf makes rstd 0: its own output is NaN, the others β.
//
// Batch invariance
//   The bits of a row's outputs depend only on that row's values, D, ε, γ, β
//   and the dtypes: never on the batch it came in, its position, pointer
//   alignment (loads are always unaligned-capable; no alignment-dependent
//   path) or the thread that ran it. The reduction order depends only on D
//   and on the SIMD target chosen for the machine at startup.
//
// Batches as segments
//   A batch is a list of RowSegments, one per request, each pointing at its
//   own input and output buffers (the request's bytes and the response's
//   buffer), so a batcher never copies requests into one buffer.
//
// Threading and ownership
//   Pure functions on caller-owned buffers; any number of threads may run
//   them at once on disjoint outputs. Inputs and outputs must not overlap.
//   A thread allocates a scratch row (D floats) the first time it sees a
//   larger D and keeps it. Nothing fails on valid shapes (callers validate
//   them first; the server does, at its edge), and nothing throws but
//   std::bad_alloc, when that scratch cannot be allocated (then outputs may
//   be partly written).
#ifndef NORMSERVE_KERNELS_NORMALIZE_H_
#define NORMSERVE_KERNELS_NORMALIZE_H_

#include <cstdint>

#include "absl/types/span.h"
#include "kernels/dtype.h"

namespace normserve {

class ThreadPool;
struct Int8Params;

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
  DType input_dtype = DType::kFloat32;
  DType output_dtype = DType::kFloat32;
  const void* input = nullptr;  // rows * dim elements of input_dtype.
  void* output = nullptr;       // rows * dim elements of output_dtype.
  int64_t rows = 0;
  // Optional fused residual: rows * dim elements of input_dtype, added to
  // the input before normalizing.
  const void* residual = nullptr;
  // Optional: receives z = input + residual (input_dtype), or a copy of the
  // input when there is no residual.
  void* sum_output = nullptr;
  // Optional per-row statistics, `rows` floats each.
  float* mean = nullptr;
  float* rstd = nullptr;
  // INT8 segments (input_dtype == output_dtype == kInt8): LayerNorm by the
  // kernels of int8_layer_norm.h; params is ignored.
  const Int8Params* int8 = nullptr;
  bool int8_float_path = false;
};

// Normalizes rows [row_begin, row_end) of `segment` on the calling thread.
void NormalizeRows(const RowSegment& segment, int64_t row_begin,
                   int64_t row_end);

// Batches of fewer elements than this run on the calling thread even when
// a pool is given: handing them to other threads costs more than it saves.
// The break-even measured on a 2-core VM (where waking a sleeping thread
// takes tens of µs): 256K float32 elements (1 MiB) run as fast on two
// threads as on one at D = 768 and 15 % faster at D = 4096, and 64K
// elements (256 KiB) up to 1.7 times slower.
inline constexpr int64_t kParallelMinElements = int64_t{256} << 10;

// Batches whose output is at least this many bytes are written with
// non-temporal stores: the output would not stay in cache anyway, and
// streaming it spares the read-for-ownership of every output line (a third
// of the DRAM traffic of a normalization). The bits are the same.
inline constexpr int64_t kStreamingMinBytes = int64_t{32} << 20;

// Normalizes every segment of a batch. With a pool, rows are split into
// chunks of about 32K elements run on the pool's threads and the caller's;
// without one (or for batches under kParallelMinElements) everything runs
// on the calling thread.
// The result is bitwise the same either way.
void NormalizeSegments(absl::Span<const RowSegment> segments,
                       ThreadPool* pool = nullptr);

// The name of the SIMD target the kernels dispatch to on this machine
// (e.g. "AVX3", "AVX2", "SSE4", "EMU128").
const char* KernelTargetName();

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_NORMALIZE_H_
