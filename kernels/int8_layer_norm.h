// LayerNorm on INT8 tensors: an integer-only path (I-BERT's i-LayerNorm
// recipe) and a float path (dequantize, float32 LayerNorm, quantize).
//
// Quantization: a real value x is s·(q − z) for an int8 q, a float scale
// s > 0 and an int8 zero point z, per tensor.
//
// The integer path. Per row, with v = q − z_x (|v| ≤ 255), D ≤ 65536:
//   S = Σ v                         int32,  |S| < 2^24
//   c_i = D·v_i − S                 int32,  |c_i| < 2^25   (= D·(v_i − mean))
//   M = D·Σ v² − S²                 int64,  0 ≤ M < 2^49   (= D²·var(v), exact)
//   E = D²·ε/s_x²                   double, E ≤ 2^60 (Int8EpsilonFits; it
//                                   depends on the request's s_x, so it is
//                                   computed once per Int8LayerNormInteger
//                                   call, not at model load)
//   k ≥ 0 is the largest with (M + ⌈E⌉)·4^k < 2^62, and
//   T = M·4^k + round(E·4^k)        uint64 (E's fraction kept: where
//                                   M + E is small, rounding E first
//                                   would move 1/√T by several LSB),
//   den = isqrt(T) (exact floor, Newton's method) ≈ sqrt(M + E)·2^k,
//   2^29 < den < 2^31 when M ≥ 1 (M = 0: every c_i is 0).
//   R = floor(2^62 / den)           int64, 2^31 < R < 2^33
//   n_i = round(c_i·R / 2^(62−F−k)) int64 = (v_i − mean)/sqrt(var + ε') · 2^F,
//                                   |c_i·R| < 2^58,
//                                   F = 20, |n_i| ≤ 2^28 (|normalized| ≤ √D)
//   a_i = n_i·G_i + B_i             int64, |n_i·G_i| < 2^59, |B_i| ≤ 2^61
//   q_y = clamp(round(a_i / 2^(F+g)) + z_y, −128, 127)
// where G_i = round(γ_i/s_y · 2^g) (|G_i| ≤ 2^30, g ∈ [1−F, 30] chosen per
// model, so that √D·|G_i's rounding| stays below 1/128 LSB) and
// B_i = round(β_i/s_y · 2^(F+g)) fold γ, β and the output scale into
// integers (FoldInt8Affine) once, at model load, when the model config sets
// output_scale and normalized_shape and the request sends no ε, γ, β or
// output quantization of its own; else once per request. Every
// intermediate is bounded as shown, so nothing overflows for any input.
//
// Rounding. round() at n_i and at q_y is round half up, floor(x + 1/2):
// (a + 2^(s−1)) >> s with an arithmetic shift, branch-free so that the
// loops vectorize. Ties go toward +∞ (−2.5 → −2, 2.5 → 3), not away from
// zero. Elsewhere: den and R are floors (relative errors below 2^-28); E·4^k,
// G_i and B_i are rounded half away from zero (llround) once, in double.
// The float path quantizes half away from zero, as the float64 reference
// of the tests and of bench/results/int8_*.md does; the two paths can
// therefore differ by 1 at an exact tie, which the bound below allows.
//
// Error bound (tested): the integer path's outputs are within 1 LSB of the
// float64 reference quantized with the same output scale (round half away
// from zero), for every element.
// Both paths are deterministic; outputs do not depend on batch or thread.
//
// Thread-safe: pure functions on caller-owned buffers.
#ifndef NORMSERVE_KERNELS_INT8_LAYER_NORM_H_
#define NORMSERVE_KERNELS_INT8_LAYER_NORM_H_

#include <cstdint>
#include <vector>

namespace normserve {

// floor(sqrt(x)) for every 64-bit x, by Newton's method.
uint64_t ISqrt64(uint64_t x);

// γ, β and the output quantization folded into integers.
struct Int8Affine {
  int64_t dim = 0;
  std::vector<int32_t> g;  // G_i
  std::vector<int64_t> b;  // B_i
  int g_shift = 0;         // g: G_i = round(γ_i / s_y · 2^g)
  float output_scale = 1.0f;
  int32_t output_zero_point = 0;
};

// Folds γ/β (nullptr: 1 / 0) and the output scale/zero point. Requires
// dim ≥ 1, output_scale > 0 and finite, γ/β finite.
Int8Affine FoldInt8Affine(const float* gamma, const float* beta, int64_t dim,
                          float output_scale, int32_t output_zero_point);

// The largest max|γ|/output_scale accepted. The integer path keeps F = 20
// fraction bits of each normalized value, so its rounding there costs at
// most 2^16 · 2^-21 = 1/32 LSB; a larger ratio would only show normalized
// values below 2^-8 (larger ones saturate).
inline constexpr double kMaxInt8GammaRatio = 65536.0;

// Whether `output_scale` is usable with these γ: a normal float, and
// max|γ|/output_scale at most kMaxInt8GammaRatio.
bool Int8OutputScaleFits(const float* gamma, int64_t dim, float output_scale);

// Whether the integer path can take ε with this input scale and row length:
// D²·ε/s_x² ≤ 2^60 (E above). Beyond, ε exceeds the variance of every row
// by a factor of 2^11 or more (the outputs are β, give or take an LSB);
// the float path takes such inputs.
bool Int8EpsilonFits(float epsilon, float input_scale, int64_t dim);

// The output scale the server picks when a request names none: ±4 standard
// deviations of the normalized value, times max|γ|, plus max|β|, span the
// int8 range.
float DefaultInt8OutputScale(const float* gamma, const float* beta,
                             int64_t dim);

// Parameters of one INT8 segment.
struct Int8Params {
  int64_t dim = 0;
  float epsilon = 1e-5f;
  float input_scale = 1.0f;
  int32_t input_zero_point = 0;
  const Int8Affine* affine = nullptr;  // required
  // Float path only: γ and β as floats (nullptr: 1 / 0).
  const float* gamma = nullptr;
  const float* beta = nullptr;
};

// E = D²·ε/s_x² in double, clamped to [0, 2^60]. Int8LayerNormInteger
// calls it once per call.
double Int8EpsilonTerm(float epsilon, float input_scale, int64_t dim);

// Integer-only LayerNorm of `rows` rows of p.dim int8 values.
void Int8LayerNormInteger(const Int8Params& p, const int8_t* input,
                          int8_t* output, int64_t rows);

// Dequantize → float32 LayerNorm (the SIMD kernel) → quantize.
void Int8LayerNormFloat(const Int8Params& p, const int8_t* input,
                        int8_t* output, int64_t rows);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_INT8_LAYER_NORM_H_
