// The SIMD row kernel, compiled once per instruction set by Highway and
// chosen at run time (no -march flags: the binary runs on any x86-64).
//
// Per row of LayerNorm, with z = input [+ residual], s = the mean of the
// row's first 16 values (RowShift) and u = z − s:
// (1) Σu and Σu², reading the input from memory. Where s is close to the
//     mean, as it nearly always is, var = Σu²/D − (Σu/D)² is accurate
//     (layer_norm_statistics says how close); otherwise
// (2) Σ(u − m)², m = Σu/D, as a second pass;
// (3) y = (u − m)·rstd [·γ] [+β], converted to the output type.
// RMSNorm makes (1) as Σz² and (3), with nothing subtracted. Passes 2 and 3
// read the row from L1/L2, so DRAM sees one read and one write per element.
// What they read depends on the input: float32 rows in place; 16-bit rows of
// D <= kKeepMaxDim, and every row with a residual, as u, kept in float32 by
// pass 1; longer 16-bit rows in place, converting again. The values are the
// same either way. Sums run over blocks of kBlock elements, each kept as 64
// partial sums whatever the vector width and folded in a fixed order (see
// "The fixed reduction order" below), each block's sum added to a double: the
// order depends only on D, so every target (AVX-512, AVX2, SSE4, ...) gives
// the same bits, up to whether it fuses multiply-adds. Rows of D <=
// kStaggerMaxDim interleave their passes with the next row's, to hide the
// latency between passes.
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/internal/normalize_rows.h"
#include "kernels/normalize.h"

// The fixed reduction order needs a lane count known at compile time, which
// scalable vectors (SVE, RISC-V V) do not have: those targets are left out
// (Arm builds run NEON).
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS \
  (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_RVV)
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/internal/normalize_simd.cc"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace normserve {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// On a lambda: inline it. The row loop below is built from lambdas, and
// GCC otherwise leaves some of them (and the reductions they call) out of
// line, which costs up to 20 % on short rows.
#ifndef NORMSERVE_INLINE_LAMBDA
#define NORMSERVE_INLINE_LAMBDA __attribute__((always_inline))
#endif

// Elements per reduction block; a multiple of every vector width.
constexpr size_t kBlock = 1024;
// Below this variance, float32 squares may underflow: recompute in double.
constexpr double kTinyVariance = 1e-30;

// Native float16 <-> float32 conversions (F16C on x86, NEON on Arm); other
// targets convert lane by lane with the exact scalar routines of dtype.h.
#undef NORMSERVE_NATIVE_F16
#if (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2) || HWY_ARCH_ARM
#define NORMSERVE_NATIVE_F16 1
#else
#define NORMSERVE_NATIVE_F16 0
#endif

using Half = hwy::float16_t;
using BF16 = hwy::bfloat16_t;

// ---- Load: n = Lanes(d) elements of T at p, as float32 ----

template <class DF>
HWY_INLINE hn::Vec<DF> LoadAs(DF df, const float* p) {
  return hn::LoadU(df, p);
}

template <class DF>
HWY_INLINE hn::Vec<DF> LoadAs(DF df, const BF16* p) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  if constexpr (hn::MaxLanes(DF()) == 16) {
    // One shuffle instead of widen-then-shift: word k of the 16 loaded goes
    // to the upper half of lane k, the lower halves are zeroed.
    const __m512i upper_halves =
        _mm512_set_epi16(15, 0, 14, 0, 13, 0, 12, 0, 11, 0, 10, 0, 9, 0, 8, 0,
                         7, 0, 6, 0, 5, 0, 4, 0, 3, 0, 2, 0, 1, 0, 0, 0);
    const __m512i words = _mm512_castsi256_si512(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return hn::Vec<DF>{_mm512_castsi512_ps(
        _mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, upper_halves, words))};
  }
#endif
  const hn::Rebind<uint16_t, DF> du16;
  const hn::RebindToUnsigned<DF> du32;
  const auto bits = hn::LoadU(du16, reinterpret_cast<const uint16_t*>(p));
  return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du32, bits)));
}

template <class DF>
HWY_INLINE hn::Vec<DF> LoadAs(DF df, const Half* p) {
#if NORMSERVE_NATIVE_F16
  const hn::Rebind<Half, DF> df16;
  return hn::PromoteTo(df, hn::LoadU(df16, p));
#else
  HWY_ALIGN float lanes[64];
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(p);
  for (size_t i = 0; i < hn::Lanes(df); ++i) lanes[i] = HalfToFloat(bits[i]);
  return hn::Load(df, lanes);
#endif
}

// ---- Store: float32 lanes to T, rounding to nearest even ----

template <class DF>
HWY_INLINE void StoreAs(DF df, hn::Vec<DF> v, float* p) {
  hn::StoreU(v, df, p);
}

// The upper 16 bits of float32 rounded to nearest even, as uint32 lanes.
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<DF>> BF16Bits(DF df, hn::Vec<DF> v) {
  (void)df;
  const hn::RebindToUnsigned<DF> du32;
  const auto bits = hn::BitCast(du32, v);
  const auto lsb = hn::And(hn::ShiftRight<16>(bits), hn::Set(du32, 1));
  const auto rounded =
      hn::ShiftRight<16>(hn::Add(bits, hn::Add(hn::Set(du32, 0x7fff), lsb)));
  const auto quiet_nan = hn::Or(hn::ShiftRight<16>(bits), hn::Set(du32, 0x40));
  return hn::IfThenElse(hn::RebindMask(du32, hn::IsNaN(v)), quiet_nan, rounded);
}

template <class DF>
HWY_INLINE void StoreAs(DF df, hn::Vec<DF> v, BF16* p) {
  const hn::RebindToSigned<DF> di32;
  const hn::Rebind<uint16_t, DF> du16;
  const auto narrow = hn::DemoteTo(du16, hn::BitCast(di32, BF16Bits(df, v)));
  hn::StoreU(narrow, du16, reinterpret_cast<uint16_t*>(p));
}

template <class DF>
HWY_INLINE void StoreAs(DF df, hn::Vec<DF> v, Half* p) {
#if NORMSERVE_NATIVE_F16
  const hn::Rebind<Half, DF> df16;
  hn::StoreU(hn::DemoteTo(df16, v), df16, p);
#else
  HWY_ALIGN float lanes[64];
  hn::Store(v, df, lanes);
  uint16_t* bits = reinterpret_cast<uint16_t*>(p);
  for (size_t i = 0; i < hn::Lanes(df); ++i) bits[i] = FloatToHalf(lanes[i]);
#endif
}

// v rounded to T and back: what storing v as T and reloading it gives.
template <typename T, class DF>
HWY_INLINE hn::Vec<DF> RoundTo(DF df, hn::Vec<DF> v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, BF16>) {
    return hn::BitCast(df, hn::ShiftLeft<16>(BF16Bits(df, v)));
  } else {
    HWY_ALIGN T lanes[64];
    StoreAs(df, v, lanes);
    return LoadAs(df, static_cast<const T*>(lanes));
  }
}

// What a pass subtracts from the values v it loads before it sums or
// scales them. LayerNorm reading z subtracts the shift, then the mean
// (sums of v, in the first pass, subtract only the shift); LayerNorm
// reading the kept row (z − shift already) only the mean; RMSNorm nothing.
// Compile-time, so that RMSNorm's loops carry no subtraction of zeros.
enum class Centring { kShiftThenMean, kMean, kNone };

// ---- Reductions over a float32 row ----

// The fixed reduction order. Each block's sum is kept as kVirtualLanes
// partial sums whatever the vector width: element j of the block goes to
// partial j mod kVirtualLanes. A target of n lanes holds them in
// kVirtualLanes / n vectors (4 with AVX-512, 8 with AVX2, 16 with SSE4),
// partial k·n + l in lane l of vector k. The partials are then folded in
// halves: partial j plus partial j + W/2, for W = kVirtualLanes, ..., 2,
// first across the vectors, then across the lanes of the last one. A
// block's last elements that fill no whole chunk of kVirtualLanes go through
// a zero-padded chunk; adding the zeros changes no partial (a partial sum
// that starts at +0 is never −0). So the order of every addition depends on
// D alone, and every target computes the same sums; they differ only in
// whether a multiply-add rounds once or twice.
constexpr size_t kVirtualLanes = 64;
// Partial vectors of each sum held in registers at once: a target of more
// than kVirtualLanes / kLive vectors per chunk sweeps each block several
// times, over vectors s, s + kSweeps, ... in sweep s, so that both sums fit
// in the 16 vector registers of AVX2 and SSE4.
constexpr size_t kLive = 4;

// Lane l plus lane l + n/2, down to one lane: the last steps of the fold.
template <class D>
HWY_INLINE float FoldLanes(D tag, hn::Vec<D> v) {
  (void)tag;
#if HWY_TARGET == HWY_SCALAR  // one lane, and no UpperHalf
  return hn::GetLane(v);
#else
  if constexpr (hn::MaxLanes(D()) == 1) {
    return hn::GetLane(v);
  } else {
    const hn::Half<D> half;
    return FoldLanes(half,
                     hn::Add(hn::LowerHalf(half, v), hn::UpperHalf(half, v)));
  }
#endif
}

// Folds `count` (a power of two) vectors into vectors[0]: vector k plus
// vector k + W/2, for W = count, ..., 2.
template <class V>
HWY_INLINE void FoldVectors(V* vectors, size_t count) {
  for (size_t width = count; width > 1; width /= 2) {
    for (size_t k = 0; k < width / 2; ++k) {
      vectors[k] = hn::Add(vectors[k], vectors[k + width / 2]);
    }
  }
}

// Sums of a row in the fixed order above, over blocks of kBlock elements,
// each block's sum rounded to float and added to a double.
// `load(tag, i)` returns the Lanes(tag) values of v at i (and may convert and
// store them as it goes); u = v − shift, less what kCentring leaves out.
//   kLinear: Σu and Σu² (LayerNorm's first pass: the mean is not known yet);
//   otherwise Σ(u − center)² (centre left out under kNone), in `squares`.
// kKeep: stores each u to kept[i], for the later passes.
struct RowSums {
  double linear = 0.0;
  double squares = 0.0;
};

template <bool kLinear, Centring kCentring = Centring::kShiftThenMean,
          bool kKeep = false, class Loader>
RowSums SumRow(size_t d, float shift, float center, const Loader& load_ref,
               float* kept = nullptr) {
  const Loader load = load_ref;  // as in OutputRow: a loader may store
  const hn::ScalableTag<float> df;
  const hn::CappedTag<float, 1> d1;
  using V = hn::Vec<decltype(df)>;
  constexpr size_t n = hn::MaxLanes(df);
  static_assert(kVirtualLanes % (kLive * n) == 0 && kBlock % kVirtualLanes == 0,
                "at most kVirtualLanes / kLive lanes");
  constexpr size_t kVectors = kVirtualLanes / n;
  constexpr size_t kSweeps = kVectors / kLive;
  // The terms at element i: u, and what is squared (u, or u − center).
  auto terms = [&](auto tag, size_t i, auto& squared) NORMSERVE_INLINE_LAMBDA {
    auto u = load(tag, i);
    if constexpr (kCentring == Centring::kShiftThenMean) {
      u = hn::Sub(u, hn::Set(tag, shift));
    }
    if constexpr (kKeep) hn::StoreU(u, tag, kept + i);
    squared = u;
    if constexpr (!kLinear && kCentring != Centring::kNone) {
      squared = hn::Sub(u, hn::Set(tag, center));
    }
    return u;
  };
  auto add = [](V& linear, V& squares, V u, V squared) NORMSERVE_INLINE_LAMBDA {
    if constexpr (kLinear) linear = hn::Add(linear, u);
    squares = hn::MulAdd(squared, squared, squares);
  };
  RowSums total;
  for (size_t start = 0; start < d; start += kBlock) {
    const size_t len = d - start < kBlock ? d - start : kBlock;
    // The whole chunks of kVirtualLanes elements, then the block's last
    // len − whole elements, whose terms are gathered here into a
    // zero-padded chunk (tail[j] is partial j's term).
    const size_t whole = len - len % kVirtualLanes;
    HWY_ALIGN float u_tail[kVirtualLanes];
    HWY_ALIGN float squared_tail[kVirtualLanes];
    if (whole < len) {
      const V zero = hn::Zero(df);
      for (size_t k = 0; k < kVectors; ++k) {
        hn::Store(zero, df, u_tail + k * n);
        hn::Store(zero, df, squared_tail + k * n);
      }
      size_t i = whole;
      for (; i + n <= len; i += n) {
        V squared;
        hn::Store(terms(df, start + i, squared), df, u_tail + (i - whole));
        hn::Store(squared, df, squared_tail + (i - whole));
      }
      for (; i < len; ++i) {
        hn::Vec<decltype(d1)> squared;
        hn::Store(terms(d1, start + i, squared), d1, u_tail + (i - whole));
        hn::Store(squared, d1, squared_tail + (i - whole));
      }
    }
    // Sweep s adds partial vectors s + m·kSweeps (m < kLive) in registers
    // and folds them to one: the fold's first steps pair vectors within a
    // sweep (m with m + 2, then 1 with 0). A loop, not unrolled code per
    // sweep, so that each loader is inlined once.
    V linear[kSweeps], squares[kSweeps];
    for (size_t sweep = 0; sweep < kSweeps; ++sweep) {
      V l0 = hn::Zero(df), l1 = l0, l2 = l0, l3 = l0;
      V q0 = l0, q1 = l0, q2 = l0, q3 = l0;
      constexpr size_t kStride = kSweeps * n;  // between a sweep's vectors
      for (size_t i = start + sweep * n; i < start + whole;
           i += kVirtualLanes) {
        V s0, s1, s2, s3;
        const V u0 = terms(df, i, s0);
        const V u1 = terms(df, i + kStride, s1);
        const V u2 = terms(df, i + 2 * kStride, s2);
        const V u3 = terms(df, i + 3 * kStride, s3);
        add(l0, q0, u0, s0);
        add(l1, q1, u1, s1);
        add(l2, q2, u2, s2);
        add(l3, q3, u3, s3);
      }
      if (whole < len) {
        const size_t k = sweep * n;
        add(l0, q0, hn::Load(df, u_tail + k), hn::Load(df, squared_tail + k));
        add(l1, q1, hn::Load(df, u_tail + k + kStride),
            hn::Load(df, squared_tail + k + kStride));
        add(l2, q2, hn::Load(df, u_tail + k + 2 * kStride),
            hn::Load(df, squared_tail + k + 2 * kStride));
        add(l3, q3, hn::Load(df, u_tail + k + 3 * kStride),
            hn::Load(df, squared_tail + k + 3 * kStride));
      }
      linear[sweep] = hn::Add(hn::Add(l0, l2), hn::Add(l1, l3));
      squares[sweep] = hn::Add(hn::Add(q0, q2), hn::Add(q1, q3));
    }
    // The fold's last steps: across the sweeps, then across the lanes.
    if constexpr (kLinear) {
      FoldVectors(linear, kSweeps);
      total.linear += FoldLanes(df, linear[0]);
    }
    FoldVectors(squares, kSweeps);
    total.squares += FoldLanes(df, squares[0]);
  }
  return total;
}

// Whether the row's values all equal `value` (and none is NaN).
bool AllEqual(const float* z, size_t d, float value) {
  for (size_t i = 0; i < d; ++i) {
    if (!(z[i] == value)) return false;
  }
  return true;
}

// The shift LayerNorm subtracts before it sums: the mean of the row's first
// kShiftValues values (its first value when shorter), so usually within a
// fraction of a standard deviation of the row's mean, summed in the fold
// order of the partials whatever the vector width. Scaled before the sum,
// which cannot overflow; where it is inexact (a denormal scaled) the
// statistics are still right, only the first pass's check has a little more
// to reject.
constexpr size_t kShiftValues = 16;

template <class Loader>
float RowShift(size_t d, const Loader& first) {
  const hn::CappedTag<float, kShiftValues> df;
  constexpr size_t n = hn::MaxLanes(df);
  if (d < kShiftValues) return hn::GetLane(first(hn::CappedTag<float, 1>(), 0));
  const auto scale = hn::Set(df, 1.0f / static_cast<float>(kShiftValues));
  hn::Vec<decltype(df)> scaled[kShiftValues / n];
  for (size_t k = 0; k < kShiftValues / n; ++k) {
    scaled[k] = hn::Mul(first(df, k * n), scale);
  }
  FoldVectors(scaled, kShiftValues / n);
  return FoldLanes(df, scaled[0]);
}

// The double-precision path for rows whose float32 statistics overflow or
// underflow: mean, variance and outputs in double, rounded once to float.
void RowInDouble(const NormParams& p, const float* z, float* y,
                 double* mean_out, double* rstd_out) {
  const size_t d = static_cast<size_t>(p.dim);
  const double shift = p.kind == NormKind::kLayerNorm ? z[0] : 0.0;
  double mean = 0.0;
  if (p.kind == NormKind::kLayerNorm) {
    for (size_t i = 0; i < d; ++i) mean += static_cast<double>(z[i]) - shift;
    mean /= static_cast<double>(d);
  }
  double m2 = 0.0;
  for (size_t i = 0; i < d; ++i) {
    const double c = (static_cast<double>(z[i]) - shift) - mean;
    m2 += c * c;
  }
  const double rstd = 1.0 / std::sqrt(m2 / static_cast<double>(d) +
                                      static_cast<double>(p.epsilon));
  for (size_t i = 0; i < d; ++i) {
    double v = ((static_cast<double>(z[i]) - shift) - mean) * rstd;
    if (p.gamma != nullptr) v *= p.gamma[i];
    if (p.beta != nullptr) v += p.beta[i];
    y[i] = static_cast<float>(v);
  }
  *mean_out = shift + mean;
  *rstd_out = rstd;
}

// Converts a row of T to float32.
template <typename T>
void LoadRow(const T* in, size_t d, float* out) {
  const hn::ScalableTag<float> df;
  const hn::CappedTag<float, 1> d1;
  const size_t n = hn::Lanes(df);
  size_t i = 0;
  for (; i + n <= d; i += n) hn::StoreU(LoadAs(df, in + i), df, out + i);
  for (; i < d; ++i) hn::StoreU(LoadAs(d1, in + i), d1, out + i);
}

// z = input + residual at i, rounded to T (as an unfused add would store
// it), as float32 lanes.
template <typename T, class DF>
HWY_INLINE hn::Vec<DF> SumAs(DF df, const T* in, const T* residual, size_t i) {
  return RoundTo<T>(df, hn::Add(LoadAs(df, in + i), LoadAs(df, residual + i)));
}

// z = input + residual as a float32 row, element for element what the first
// pass of a row with a residual computes.
template <typename T>
void LoadSumRow(const T* in, const T* residual, size_t d, float* out) {
  const hn::ScalableTag<float> df;
  const hn::CappedTag<float, 1> d1;
  const size_t n = hn::Lanes(df);
  size_t i = 0;
  for (; i + n <= d; i += n) {
    hn::StoreU(SumAs(df, in, residual, i), df, out + i);
  }
  for (; i < d; ++i) hn::StoreU(SumAs(d1, in, residual, i), d1, out + i);
}

// Converts a float32 row to T.
template <typename T>
void StoreRow(const float* y, size_t d, T* out) {
  const hn::ScalableTag<float> df;
  const hn::CappedTag<float, 1> d1;
  const size_t n = hn::Lanes(df);
  size_t i = 0;
  for (; i + n <= d; i += n) StoreAs(df, hn::LoadU(df, y + i), out + i);
  for (; i < d; ++i) StoreAs(d1, hn::LoadU(d1, y + i), out + i);
}

// Non-temporal stores are used only where every vector store is a full
// register (x86 AVX2/AVX-512): partial-vector streams write past the end.
#undef NORMSERVE_CAN_STREAM
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
#define NORMSERVE_CAN_STREAM 1
#else
#define NORMSERVE_CAN_STREAM 0
#endif

template <class DF>
HWY_INLINE void StreamAs(DF df, hn::Vec<DF> v, float* p) {
  hn::Stream(v, df, p);
}
template <class DF>
HWY_INLINE void StreamAs(DF df, hn::Vec<DF> v, BF16* p) {
  const hn::RebindToSigned<DF> di32;
  const hn::Rebind<uint16_t, DF> du16;
  hn::Stream(hn::DemoteTo(du16, hn::BitCast(di32, BF16Bits(df, v))), du16,
             reinterpret_cast<uint16_t*>(p));
}
template <class DF>
HWY_INLINE void StreamAs(DF df, hn::Vec<DF> v, Half* p) {
#if NORMSERVE_NATIVE_F16
  const hn::Rebind<Half, DF> df16;
  hn::Stream(hn::DemoteTo(df16, v), df16, p);
#else
  StoreAs(df, v, p);
#endif
}

// AVX-512 with the BF16 extension (Sapphire Rapids, Zen 4) converts 16 floats
// to bfloat16 in one instruction, rounding to nearest even and quieting NaN as
// BF16Bits does. It flushes denormal results to zero, so a vector holding a
// denormal takes BF16Bits instead. Highway 1.0 has no target for the
// extension: functions that use it carry the attribute below (the whole
// target string: Clang's attribute replaces the surrounding pragma's
// features rather than adding to them) and run only where the CPU reports
// it (HasNativeBF16).
#undef NORMSERVE_BF16_NATIVE
#undef NORMSERVE_BF16_ATTR
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL) && \
    (HWY_COMPILER_GCC_ACTUAL >= 1000 || HWY_COMPILER_CLANG >= 900)
#define NORMSERVE_BF16_NATIVE 1
#define NORMSERVE_BF16_ATTR \
  __attribute__((target(HWY_TARGET_STR ",avx512bf16")))
#else
#define NORMSERVE_BF16_NATIVE 0
#define NORMSERVE_BF16_ATTR
#endif

#if NORMSERVE_BF16_NATIVE
template <bool kStream>
NORMSERVE_BF16_ATTR HWY_INLINE void StoreBF16Native(hn::Vec512<float> v,
                                                    BF16* p) {
  constexpr int kDenormal = 0x20;  // vfpclassps category
  if (HWY_UNLIKELY(_mm512_fpclass_ps_mask(v.raw, kDenormal) != 0)) {
    const hn::Full512<float> df;
    if constexpr (kStream) {
      StreamAs(df, v, p);
    } else {
      StoreAs(df, v, p);
    }
    return;
  }
  const __m256i bits = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v.raw));
  if constexpr (kStream) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), bits);
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), bits);
  }
}
#endif

// y = ((z − shift) − mean)·rstd [·γ] [+β] at element i, as float32 lanes,
// less the subtractions kCentring leaves out.
template <typename Src, bool kGamma, bool kBeta, Centring kCentring>
struct RowValue {
  const Src* z;
  float shift, mean, rstd;
  const float* gamma;
  const float* beta;

  template <class D>
  HWY_INLINE hn::Vec<D> operator()(D tag, size_t i) const {
    auto v = LoadAs(tag, z + i);
    if constexpr (kCentring == Centring::kShiftThenMean) {
      v = hn::Sub(v, hn::Set(tag, shift));
    }
    if constexpr (kCentring != Centring::kNone) {
      v = hn::Sub(v, hn::Set(tag, mean));
    }
    const auto r = hn::Set(tag, rstd);
    if constexpr (kGamma && kBeta) {
      return hn::MulAdd(hn::Mul(v, r), hn::LoadU(tag, gamma + i),
                        hn::LoadU(tag, beta + i));
    } else if constexpr (kGamma) {
      return hn::Mul(hn::Mul(v, r), hn::LoadU(tag, gamma + i));
    } else if constexpr (kBeta) {
      // One fused operation at every vector width (the compiler fuses
      // nothing itself: see kernels/CMakeLists.txt).
      return hn::MulAdd(v, r, hn::LoadU(tag, beta + i));
    } else {
      return hn::Mul(v, r);
    }
  }
};

// Writes the row's outputs as T. With kStream, whole vectors bypass the
// cache (for outputs larger than the caches); the element values are the
// same either way, only the store instruction differs.
template <typename T, bool kStream, class Value>
void OutputRow(const Value& value_ref, size_t d, T* out) {
  // A local copy: its fields stay in registers, where the caller's object
  // would be reloaded after every store (the stores may alias it).
  const Value value = value_ref;
  const hn::ScalableTag<float> df;
  const hn::CappedTag<float, 1> d1;
  const size_t n = hn::Lanes(df);
  size_t i = 0;
  if constexpr (kStream && NORMSERVE_CAN_STREAM) {
    const size_t align = n * sizeof(T);
    while (i < d && reinterpret_cast<uintptr_t>(out + i) % align != 0) {
      StoreAs(d1, value(d1, i), out + i);
      ++i;
    }
    for (; i + n <= d; i += n) StreamAs(df, value(df, i), out + i);
  }
  for (; i + n <= d; i += n) StoreAs(df, value(df, i), out + i);
  for (; i < d; ++i) StoreAs(d1, value(d1, i), out + i);
}

#if NORMSERVE_BF16_NATIVE
// OutputRow for bfloat16 output with the native conversion; bit-identical.
// A copy of its loop rather than a store policy passed to it: the target
// attribute has to sit on the function whose body holds the instruction.
template <bool kStream, class Value>
NORMSERVE_BF16_ATTR void OutputRowNativeBF16(const Value& value_ref, size_t d,
                                             BF16* out) {
  const Value value = value_ref;  // as in OutputRow
  const hn::Full512<float> df;
  const hn::CappedTag<float, 1> d1;
  constexpr size_t kLanes = 16;
  size_t i = 0;
  if constexpr (kStream) {
    while (i < d && reinterpret_cast<uintptr_t>(out + i) % 32 != 0) {
      StoreAs(d1, value(d1, i), out + i);
      ++i;
    }
  }
  for (; i + kLanes <= d; i += kLanes) {
    StoreBF16Native<kStream>(value(df, i), out + i);
  }
  for (; i < d; ++i) StoreAs(d1, value(d1, i), out + i);
}

bool HasNativeBF16() {
  static const bool supported = __builtin_cpu_supports("avx512bf16");
  return supported;
}
#endif

template <typename T, bool kStream, class Value>
void OutputRowFor(const Value& value, size_t d, T* out) {
#if NORMSERVE_BF16_NATIVE
  if constexpr (std::is_same_v<T, BF16>) {
    if (HasNativeBF16()) return OutputRowNativeBF16<kStream>(value, d, out);
  }
#endif
  OutputRow<T, kStream>(value, d, out);
}

template <typename T, bool kStream, Centring kCentring, typename Src>
void OutputRowAffine(const Src* z, size_t d, float shift, float mean,
                     float rstd, const float* gamma, const float* beta,
                     T* out) {
  auto write = [&](auto gamma_tag, auto beta_tag) {
    using Value = RowValue<Src, decltype(gamma_tag)::value,
                           decltype(beta_tag)::value, kCentring>;
    OutputRowFor<T, kStream>(Value{z, shift, mean, rstd, gamma, beta}, d, out);
  };
  using Yes = std::true_type;
  using No = std::false_type;
  if (gamma != nullptr && beta != nullptr) return write(Yes(), Yes());
  if (gamma != nullptr) return write(Yes(), No());
  if (beta != nullptr) return write(No(), Yes());
  write(No(), No());
}

// How far ahead of its loads the first pass prefetches.
constexpr size_t kPrefetchBytes = 2048;

// The longest 16-bit row whose first pass keeps z − shift for the others:
// the kept row (4·D bytes), the input row, the output row and γ, β have to
// stay in L1 together (48 KiB on current x86 cores). Past it, keeping costs
// more than it saves: at D = 4096 it is 10-50 % slower (Sapphire Rapids).
constexpr size_t kKeepMaxDim = 2048;

// The longest row that runs staggered with the next (below). Longer rows
// spread the waits over more elements, and two of them no longer share L1
// with their outputs: staggered, D = 2048 runs no faster and D = 4096 up to
// 10 % slower (Sapphire Rapids, rows in L2).
constexpr size_t kStaggerMaxDim = 1024;

template <typename In, typename Out>
void RowsTyped(const RowSegment& s, int64_t row_begin, int64_t row_end,
               bool stream) {
  const NormParams& p = *s.params;
  const size_t d = static_cast<size_t>(p.dim);
  const bool layer_norm = p.kind == NormKind::kLayerNorm;
  // Without a residual, z is the input row itself.
  const bool direct = s.residual == nullptr;

  // The first pass keeps z − shift as float32 in scratch, where the later
  // passes read it with no conversion and no subtraction, for rows with a
  // residual (z has to be computed and stored anyway) and for 16-bit rows
  // up to kKeepMaxDim (once the row is in cache these kernels are bound by
  // arithmetic, and a 16-bit row holds twice the elements of a float32 row
  // of the same bytes). The values are those the passes computed from the
  // input, so the bits are the same either way.
  constexpr bool kSixteenBit = !std::is_same_v<In, float>;
  // RMSNorm makes two passes; with float16, whose conversion is a single
  // instruction, the kept row's stores cost what they save there.
  const bool keep = !direct || (kSixteenBit && d <= kKeepMaxDim &&
                                (layer_norm || std::is_same_v<In, BF16>));

  // Rows up to kStaggerMaxDim run two at a time, staggered: the first pass of
  // row r + 1 runs between the second pass of row r and its output pass, and
  // the output pass of row r − 1 between the first and second passes of row r.
  // Each pass ends in a reduction and scalar arithmetic (divisions, a square
  // root) that the next pass of the same row waits for; in cache, where a
  // short row's passes take a few hundred cycles, that wait was a large
  // part of the row's time. Staggered, the core has the other row's
  // independent work to run meanwhile. Each row's arithmetic is unchanged,
  // and so are its bits.
  //
  // Scratch, a slot of 3·d floats per row in flight: [0, d) the row the
  // later passes read, [d, 2d) the outputs of the double-precision path,
  // [2d, 3d) z as float32 for that path.
  const bool staggered = d <= kStaggerMaxDim;
  thread_local std::vector<float> scratch;
  const size_t scratch_size = (staggered ? 2 : 1) * 3 * d;
  if (scratch.size() < scratch_size) scratch.resize(scratch_size);

  // The first pass reads ahead by kPrefetchBytes (into the next row at the
  // end of this one) so DRAM latency overlaps the arithmetic; the hardware
  // prefetcher alone lags when the pass also converts.
  const char* x_end = reinterpret_cast<const char*>(
      static_cast<const In*>(s.input) + static_cast<size_t>(row_end) * d);

  // One row in flight: where it lives and what its passes found so far.
  struct Row {
    int64_t r;
    const In* x;
    const In* res;
    In* sum_out;
    Out* out;
    float* zs;  // its scratch slot
    float shift;
    double mean_shifted;  // the mean of z − shift (LayerNorm)
    double var;           // the variance (mean square under RMSNorm)
    bool second_pass;     // the first pass's sums are not precise enough
  };
  // The mean of z − shift as float32: what passes 2 and 3 subtract.
  auto center = [](const Row& w) { return static_cast<float>(w.mean_shifted); };
  auto start_row = [&](int64_t r, float* zs) NORMSERVE_INLINE_LAMBDA {
    const size_t offset = static_cast<size_t>(r) * d;
    Row w;
    w.r = r;
    w.x = static_cast<const In*>(s.input) + offset;
    w.res = s.residual != nullptr ? static_cast<const In*>(s.residual) + offset
                                  : nullptr;
    w.sum_out = s.sum_output != nullptr
                    ? static_cast<In*>(s.sum_output) + offset
                    : nullptr;
    w.out = static_cast<Out*>(s.output) + offset;
    w.zs = zs;
    w.shift = 0.0f;
    w.mean_shifted = 0.0;
    w.var = 0.0;
    w.second_pass = false;
    return w;
  };

  // LayerNorm's statistics from its first pass: Σu and Σu², u = z − shift.
  // Σu²/D − (Σu/D)² cancels where the shift is far from the mean, with
  // K = (Σu²/D) / var = 1 + (shift − mean)²/var: if the float32 block sums
  // are good to a relative e (in Σ|terms|), the variance is good to
  // (K + 2·sqrt(K(K − 1)))·e. Within K <= 2 that is under 5e, against the
  // second pass's e; and the variance is at least half of Σu²/D, so never
  // negative. The shift, the mean of the row's first 16 values, is within a
  // fraction of a std of the mean in nearly every row. Rows past K = 2 (and
  // rows with NaN, Inf or overflow) get the second pass, which sums
  // (u − mean)² and has no such cancellation.
  auto layer_norm_statistics = [&](Row& w, const RowSums& sums) {
    const double mean = sums.linear / static_cast<double>(d);
    const double mean_square = sums.squares / static_cast<double>(d);
    const double var = mean_square - mean * mean;
    w.mean_shifted = mean;
    if (std::isfinite(mean_square) && var >= 0.5 * mean_square) {
      w.var = var;
    } else {
      w.second_pass = true;  // and NaN, Inf and overflow, as before
    }
  };

  // Pass 1: Σu and Σu² for LayerNorm, Σz² for RMSNorm; keeps u = z − shift
  // in the row's slot when `keep`.
  auto first_pass = [&](Row& w) NORMSERVE_INLINE_LAMBDA {
    const In* x = w.x;
    const In* res = w.res;
    In* sum_out = w.sum_out;
    auto first_from_input = [x, x_end](auto tag, size_t i) {
      const char* ahead = reinterpret_cast<const char*>(x + i) + kPrefetchBytes;
      if (ahead < x_end) hwy::Prefetch(ahead);
      return LoadAs(tag, x + i);
    };
    // Adds the residual, rounds to In and, when asked, stores z to sum_out;
    // kSum is compile-time so that the hot loop carries no dead branch.
    auto convert_with = [x, res, sum_out, x_end](auto sum_tag) {
      constexpr bool kSum = decltype(sum_tag)::value;
      return [=](auto tag, size_t i) {
        const char* ahead =
            reinterpret_cast<const char*>(x + i) + kPrefetchBytes;
        if (ahead < x_end) hwy::Prefetch(ahead);
        hwy::Prefetch(reinterpret_cast<const char*>(res + i) + kPrefetchBytes);
        const auto v = SumAs(tag, x, res, i);
        if constexpr (kSum) StoreAs(tag, v, sum_out + i);
        return v;
      };
    };
    if (direct && sum_out != nullptr) std::memcpy(sum_out, x, d * sizeof(In));
    const double dim = static_cast<double>(d);
    if (!keep) {  // rows not kept have no residual
      if (layer_norm) {
        w.shift = RowShift(d, first_from_input);
        layer_norm_statistics(w,
                              SumRow<true>(d, w.shift, 0.0f, first_from_input));
      } else {
        w.var = SumRow<false, Centring::kNone>(d, 0.0f, 0.0f, first_from_input)
                    .squares /
                dim;
      }
      return;
    }
    auto body = [&](const auto& first) NORMSERVE_INLINE_LAMBDA {
      if (layer_norm) {
        w.shift = RowShift(d, first);
        layer_norm_statistics(w, SumRow<true, Centring::kShiftThenMean, true>(
                                     d, w.shift, 0.0f, first, w.zs));
      } else {
        w.var = SumRow<false, Centring::kNone, true>(d, 0.0f, 0.0f, first, w.zs)
                    .squares /
                dim;
      }
    };
    if (direct) {
      body(first_from_input);
    } else if (sum_out != nullptr) {
      body(convert_with(std::true_type()));
    } else {
      body(convert_with(std::false_type()));
    }
  };

  // Pass 2 (LayerNorm rows whose first pass left K > 2):
  // Σ((z − shift) − center)², from the kept row or from the input, which is
  // in cache after pass 1.
  auto second_pass = [&](Row& w) NORMSERVE_INLINE_LAMBDA {
    if (!w.second_pass) return;
    // Σ(u − c)² = Σ(u − m)² + D(m − c)²: remove the (tiny) centring error.
    auto set_var = [&](double m2) {
      const double delta = w.mean_shifted - static_cast<double>(center(w));
      const double var = m2 / static_cast<double>(d) - delta * delta;
      w.var = var < 0.0 ? 0.0 : var;
    };
    if (keep) {
      const float* zs = w.zs;
      auto from_scratch = [zs](auto tag, size_t i) {
        return hn::LoadU(tag, zs + i);
      };
      set_var(SumRow<false, Centring::kMean>(d, 0.0f, center(w), from_scratch)
                  .squares);
      return;
    }
    // DRAM would idle through this pass: it prefetches the next row into
    // L2 at the offset it reads.
    const In* x = w.x;
    const char* next = reinterpret_cast<const char*>(x + d);
    auto second_from_input = [x, x_end, next](auto tag, size_t i) {
      const char* ahead = next + i * sizeof(In);
      if (ahead < x_end) __builtin_prefetch(ahead, 0, 2);
      return LoadAs(tag, x + i);
    };
    set_var(SumRow<false>(d, w.shift, center(w), second_from_input).squares);
  };

  // Pass 3: the outputs, and the row's statistics.
  auto output_pass = [&](const Row& w) NORMSERVE_INLINE_LAMBDA {
    const float c = center(w);
    const double var = w.var;

    // z as a float32 row, for the rare rows below (computed at most once,
    // beside the kept row, which the output pass may still read).
    const float* z_float = nullptr;
    if constexpr (std::is_same_v<In, float>) {
      if (direct) z_float = w.x;
    }
    auto float_row = [&]() -> const float* {
      if (z_float == nullptr) {
        float* row = w.zs + 2 * d;
        if (direct) {
          LoadRow(w.x, d, row);
        } else {
          LoadSumRow(w.x, w.res, d, row);
        }
        z_float = row;
      }
      return z_float;
    };
    double mean_out = static_cast<double>(w.shift) + w.mean_shifted;
    double rstd = 1.0 / std::sqrt(var + static_cast<double>(p.epsilon));
    const bool finite = std::isfinite(w.mean_shifted) && std::isfinite(var);
    // Rows whose float32 squares lose precision go to double, except those
    // the float32 path gets exactly: a constant row under LayerNorm (u − m
    // is 0: β), an all-zero row under RMSNorm.
    auto exact_in_float = [&] {
      const float* z = float_row();
      return AllEqual(z, d, layer_norm ? z[0] : 0.0f);
    };
    const bool tiny = var < kTinyVariance && !exact_in_float();
    if (finite && !tiny) {
      const float rs = static_cast<float>(rstd);
      auto output = [&](auto centring, const auto* z) NORMSERVE_INLINE_LAMBDA {
        constexpr Centring kCentring = decltype(centring)::value;
        if (stream) {
          OutputRowAffine<Out, true, kCentring>(z, d, w.shift, c, rs, p.gamma,
                                                p.beta, w.out);
        } else {
          OutputRowAffine<Out, false, kCentring>(z, d, w.shift, c, rs, p.gamma,
                                                 p.beta, w.out);
        }
      };
      using ShiftThenMean =
          std::integral_constant<Centring, Centring::kShiftThenMean>;
      using Mean = std::integral_constant<Centring, Centring::kMean>;
      using None = std::integral_constant<Centring, Centring::kNone>;
      const float* kept = w.zs;
      if (!layer_norm) {
        if (keep) {
          output(None(), kept);
        } else {
          output(None(), w.x);
        }
      } else if (keep) {
        output(Mean(), kept);
      } else {
        output(ShiftThenMean(), w.x);
      }
    } else {
      float* y = w.zs + d;
      RowInDouble(p, float_row(), y, &mean_out, &rstd);
      StoreRow(y, d, w.out);
    }
    if (s.mean != nullptr)
      s.mean[w.r] = layer_norm ? static_cast<float>(mean_out) : 0.0f;
    if (s.rstd != nullptr) s.rstd[w.r] = static_cast<float>(rstd);
  };

  if (staggered) {
    Row rows[2];
    for (int64_t r = row_begin; r < row_end; ++r) {
      const size_t slot = static_cast<size_t>(r - row_begin) & 1;
      Row& w = rows[slot];
      w = start_row(r, scratch.data() + slot * 3 * d);
      first_pass(w);
      if (r > row_begin) output_pass(rows[slot ^ 1]);
      second_pass(w);
    }
    if (row_end > row_begin) {
      output_pass(rows[static_cast<size_t>(row_end - 1 - row_begin) & 1]);
    }
  } else {
    for (int64_t r = row_begin; r < row_end; ++r) {
      Row w = start_row(r, scratch.data());
      first_pass(w);
      second_pass(w);
      output_pass(w);
    }
  }
  if (stream) hwy::FlushStream();
}

template <typename In>
void RowsForInput(const RowSegment& s, int64_t row_begin, int64_t row_end,
                  bool stream) {
  switch (s.output_dtype) {
    case DType::kInt8:
      return;  // INT8 segments never reach the float kernel.
    case DType::kFloat32:
      return RowsTyped<In, float>(s, row_begin, row_end, stream);
    case DType::kFloat16:
      return RowsTyped<In, Half>(s, row_begin, row_end, stream);
    case DType::kBFloat16:
      return RowsTyped<In, BF16>(s, row_begin, row_end, stream);
  }
}

void NormalizeRowsTarget(const RowSegment& s, int64_t row_begin,
                         int64_t row_end, bool stream) {
  switch (s.input_dtype) {
    case DType::kInt8:
      return;  // INT8 segments never reach the float kernel.
    case DType::kFloat32:
      return RowsForInput<float>(s, row_begin, row_end, stream);
    case DType::kFloat16:
      return RowsForInput<Half>(s, row_begin, row_end, stream);
    case DType::kBFloat16:
      return RowsForInput<BF16>(s, row_begin, row_end, stream);
  }
}

const char* TargetNameTarget() { return hwy::TargetName(HWY_TARGET); }

bool FusesMultiplyAddTarget() { return HWY_NATIVE_FMA != 0; }

}  // namespace HWY_NAMESPACE
}  // namespace normserve
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace normserve {

HWY_EXPORT(NormalizeRowsTarget);
HWY_EXPORT(TargetNameTarget);
HWY_EXPORT(FusesMultiplyAddTarget);

namespace internal {
void NormalizeRowsSimd(const RowSegment& segment, int64_t row_begin,
                       int64_t row_end, bool streaming_stores) {
  HWY_DYNAMIC_DISPATCH(NormalizeRowsTarget)
  (segment, row_begin, row_end, streaming_stores);
}

bool KernelTargetFusesMultiplyAdd() {
  return HWY_DYNAMIC_DISPATCH(FusesMultiplyAddTarget)();
}
}  // namespace internal

const char* KernelTargetName() {
  return HWY_DYNAMIC_DISPATCH(TargetNameTarget)();
}

}  // namespace normserve
#endif  // HWY_ONCE
