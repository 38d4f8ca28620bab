// Helpers shared by the CPU and CUDA kernel tests: the dtypes, roundings
// to 16-bit floats computed independently of kernels/dtype.h (so that a
// bug there cannot hide in the expected values), tensors of raw bytes that
// know the exact values they hold, and normal random rows.
#ifndef NORMSERVE_TESTS_KERNEL_TEST_UTIL_H_
#define NORMSERVE_TESTS_KERNEL_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/dtype.h"

namespace normserve::testing {

inline constexpr DType kTypes[] = {DType::kFloat32, DType::kFloat16,
                                   DType::kBFloat16};

inline const char* Name(DType t) {
  return t == DType::kFloat32 ? "f32" : t == DType::kFloat16 ? "f16" : "bf16";
}

// ---- Independent roundings for the reference (not dtype.h's) ----

// Correctly rounded float -> binary16 bits, by the compiler's _Float16.
inline uint16_t RefHalf(double v) {
  const _Float16 h = static_cast<_Float16>(static_cast<float>(v));
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}
// Correctly rounded double -> bfloat16 bits via frexp/nearbyint (ties to
// even), computed from a float so that double rounding matches the kernel's
// float32 arithmetic contract.
inline uint16_t RefBF16(double v) {
  const float f = static_cast<float>(v);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  if (std::isinf(f) || f == 0.0f) return static_cast<uint16_t>(bits >> 16);
  int exp;
  const double m = std::frexp(static_cast<double>(f), &exp);  // |m| in [0.5, 1)
  // bf16 keeps 8 significant bits; below 2^-126 it keeps fewer (subnormal).
  const int keep = exp - 1 >= -126 ? 8 : 8 - (-126 - (exp - 1));
  const double scaled = std::nearbyint(std::ldexp(m, keep));
  const float r = static_cast<float>(std::ldexp(scaled, exp - keep));
  uint32_t rbits;
  std::memcpy(&rbits, &r, 4);
  return static_cast<uint16_t>(rbits >> 16);
}
inline uint16_t RefRound(DType t, double v) {
  return t == DType::kFloat16 ? RefHalf(v) : RefBF16(v);
}
inline float Widen(DType t, uint16_t bits) {
  if (t == DType::kFloat16) {
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    return static_cast<float>(h);
  }
  const uint32_t b = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
// Position on the number line of 16-bit float bits, for ulp distances.
inline int32_t Ordinal(uint16_t bits) {
  return (bits & 0x8000) ? -static_cast<int32_t>(bits & 0x7fff)
                         : static_cast<int32_t>(bits);
}

// A tensor of one dtype, stored as raw bytes; values are the exact float
// values it holds.
struct Tensor {
  DType dtype;
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

inline Tensor Encode(DType t, const std::vector<float>& v) {
  Tensor out{t, std::vector<uint8_t>(v.size() * DTypeSize(t)), {}};
  out.values.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::kFloat32) {
      std::memcpy(&out.bytes[i * 4], &v[i], 4);
      out.values[i] = v[i];
    } else {
      const uint16_t b = RefRound(t, v[i]);
      std::memcpy(&out.bytes[i * 2], &b, 2);
      out.values[i] = Widen(t, b);
    }
  }
  return out;
}

inline std::vector<float> Normal(size_t n, float mean, float std,
                                 std::mt19937* rng) {
  std::normal_distribution<float> dist(mean, std);
  std::vector<float> v(n);
  for (float& f : v) f = dist(*rng);
  return v;
}

}  // namespace normserve::testing

#endif  // NORMSERVE_TESTS_KERNEL_TEST_UTIL_H_
