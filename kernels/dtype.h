// Element types the kernels read and write, and exact scalar conversions.
//
// FLOAT16 is IEEE 754 binary16; BFLOAT16 is the upper half of a binary32.
// Conversions to 16 bits round to nearest, ties to even, keep the sign of
// zero, turn overflow into ±Inf and keep NaN a (quiet) NaN; conversions to
// float32 are exact. These are the same roundings the SIMD kernels use, so
// a value converted here matches one converted there bit for bit.
//
// Pure functions; thread-safe.
#ifndef NORMSERVE_KERNELS_DTYPE_H_
#define NORMSERVE_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace normserve {

// kInt8 is served by the INT8 kernels (kernels/int8_layer_norm.h) only.
enum class DType : uint8_t { kFloat32, kFloat16, kBFloat16, kInt8 };

constexpr size_t DTypeSize(DType t) {
  return t == DType::kFloat32 ? 4 : t == DType::kInt8 ? 1 : 2;
}

inline float BFloat16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint16_t FloatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep sign, force quiet.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // Inf or NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // ±0
  } else {
    // Subnormal: normalize.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits =
        sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // Rounds to >= 65520: Inf
  if (abs < 0x38800000u) {
    // Result is subnormal or zero: |f| < 2^-14. Scale the significand to
    // units of 2^-24 and round to nearest even.
    if (abs < 0x33000000u) return sign;  // < 2^-25: rounds to zero
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // 14..24 for exp 102..112
    const uint32_t half = 1u << (shift - 1);
    const uint32_t rest = mant & ((1u << shift) - 1);
    uint32_t q = mant >> shift;
    if (rest > half || (rest == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias the exponent, round the 13 dropped bits to nearest even.
  uint32_t h = abs - 0x38000000u;  // exponent bias 127 -> 15
  h += 0xfffu + ((h >> 13) & 1u);
  return static_cast<uint16_t>(sign | (h >> 13));
}

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_DTYPE_H_
