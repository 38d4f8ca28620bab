// The row algorithm of the CUDA kernels, written once for the device and the
// host: the kernels (normalize_cuda.cu) run it on the GPU, and
// tests/cuda_row_algorithm_test.cc runs the same code on the CPU, with
// threads standing in for the lanes of a warp or a block, against the
// float64 reference. Include only from kernels/cuda/ and its tests.
//
// The algorithm is kept apart from where the row lives: a RegisterRow holds
// the thread's share of the row in registers (warp and block mappings), a
// StreamingRow reads it from global memory on every pass (very large D), a
// SharedRow reads a copy staged in shared memory. Reductions go through a
// group (Sum, Sum2, Any: the same result in every thread of the row),
// which the caller supplies. Residual, sum output, γ, β and the statistics are
// run-time flags, uniform across a launch; the dtypes, LayerNorm or
// RMSNorm, and whether every row is aligned for 16-byte accesses are
// template arguments.
//
// Ownership and order (see launch_plan.h): thread t of T owns packs
// t, t + T, … and tail element t; it accumulates its packs in that order,
// each pack's elements in order, then its tail element. Nothing here reads
// an address to decide an order; 16-byte loads are used per row and per
// buffer when that row's pointer is aligned for them, and fetch the same
// values the element loads would. Conversions of a whole pack give the bits
// of element-by-element conversions.
#ifndef NORMSERVE_KERNELS_CUDA_INTERNAL_NORMALIZE_ROW_H_
#define NORMSERVE_KERNELS_CUDA_INTERNAL_NORMALIZE_ROW_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/internal/kernel_launch.h"

#define NORMSERVE_HD __host__ __device__ __forceinline__
// The device and the host build differ only through these two macros:
// NORMSERVE_ON_DEVICE(d, h) is d in device code and h in host code.
#ifdef __CUDA_ARCH__
#define NORMSERVE_UNROLL _Pragma("unroll")
#define NORMSERVE_ON_DEVICE(device, host) device
#else
#define NORMSERVE_UNROLL
#define NORMSERVE_ON_DEVICE(device, host) host
#endif

namespace normserve::cuda::internal {

// ---- Device and host primitives ----
//
// Bit casts, products and 1/√x, and vector accesses: the device's
// intrinsics, or their host equivalents for the tests.

// A T read from `p` on the host, whatever its alignment (and the host's bit
// cast: std::bit_cast is C++20).
template <typename T>
inline T HostLoad(const void* p) {
  T t;
  std::memcpy(&t, p, sizeof(t));
  return t;
}

NORMSERVE_HD float FloatFromBits(uint32_t b) {
  return NORMSERVE_ON_DEVICE(__uint_as_float(b), HostLoad<float>(&b));
}
NORMSERVE_HD uint32_t BitsOfFloat(float f) {
  return NORMSERVE_ON_DEVICE(__float_as_uint(f), HostLoad<uint32_t>(&f));
}
NORMSERVE_HD bool Finite(float f) {
  return NORMSERVE_ON_DEVICE(isfinite(f), std::isfinite(f));
}

// Products with their rounding spelled out. A product is never contracted
// into a later sum behind the code's back: the compiler might do that in
// one kernel and not in another, and every kernel must give a row the same
// bits (batch invariance). Where a fused multiply-add is wanted, Fma says so.
NORMSERVE_HD float Mul(float a, float b) {
  return NORMSERVE_ON_DEVICE(__fmul_rn(a, b), a * b);
}
NORMSERVE_HD double Mul(double a, double b) {
  return NORMSERVE_ON_DEVICE(__dmul_rn(a, b), a * b);
}
NORMSERVE_HD float Fma(float a, float b, float c) {
  return NORMSERVE_ON_DEVICE(__fmaf_rn(a, b, c), std::fma(a, b, c));
}
NORMSERVE_HD double Fma(double a, double b, double c) {
  return NORMSERVE_ON_DEVICE(__fma_rn(a, b, c), std::fma(a, b, c));
}

// 1/√x in double: the device's rsqrt (within 1 ulp), the host's quotient.
NORMSERVE_HD double Rsqrt(double x) {
  return NORMSERVE_ON_DEVICE(rsqrt(x), 1.0 / std::sqrt(x));
}

// V consecutive elements, aligned to their size so that they move as one
// 16-byte access (or, for 32 bytes, two).
template <typename Bits, int V>
struct alignas(sizeof(Bits) * V) Pack {
  Bits v[V];
};

template <typename Bits, int V>
NORMSERVE_HD bool CanVectorize(const void* row) {
  return reinterpret_cast<uintptr_t>(row) % sizeof(Pack<Bits, V>) == 0;
}

// One vector access at `p`, which is aligned for it. (The host build, for
// the tests, copies instead: GCC may merge a vector path with the element
// path beside it and keep the vector path's alignment, which the element
// path does not have.)
template <typename Bits, int V>
NORMSERVE_HD Pack<Bits, V> LoadVector(const Bits* p) {
  using P = Pack<Bits, V>;
  return NORMSERVE_ON_DEVICE(*reinterpret_cast<const P*>(p), HostLoad<P>(p));
}
template <typename Bits, int V>
NORMSERVE_HD void StoreVector(Bits* p, const Pack<Bits, V>& pk) {
  using P = Pack<Bits, V>;
  NORMSERVE_ON_DEVICE(*reinterpret_cast<P*>(p) = pk,
                      std::memcpy(p, &pk, sizeof(P)));
}

// ---- Packs of 16-bit elements as 32-bit words ----

// Elements 2k and 2k + 1 of a 16-bit pack as the low and high halves of a
// 32-bit word (the halves of one register after a vector load), and back.
template <int V>
NORMSERVE_HD uint32_t WordOf(const Pack<uint16_t, V>& p, int k) {
  uint32_t w;
  std::memcpy(&w, &p.v[2 * k], sizeof(w));
  return w;
}
template <int V>
NORMSERVE_HD void SetWord(Pack<uint16_t, V>& p, int k, uint32_t w) {
  std::memcpy(&p.v[2 * k], &w, sizeof(w));
}

template <typename T>
NORMSERVE_HD uint32_t WordOf(const T& pair) {
  static_assert(sizeof(T) == sizeof(uint32_t));
  uint32_t w;
  std::memcpy(&w, &pair, sizeof(w));
  return w;
}

// True if any of `in` (V even) is NaN. Tested a pair at a time, which the
// device compiles to one unordered comparison of the two.
template <int V>
NORMSERVE_HD bool AnyNan(const float (&in)[V]) {
  bool nan = false;
  NORMSERVE_UNROLL
  for (int j = 0; j < V; j += 2) {
    const bool pair = (in[j] != in[j]) | (in[j + 1] != in[j + 1]);
    nan |= pair;
  }
  return nan;
}

// A 16-bit pack of T from floats: pairs through T::FromFloats (the
// two-way conversion); a pack holding a NaN is redone element by element,
// so that NaN bits are T::FromFloat's. (Converting first and redoing after
// lets nvcc convert straight into the registers of the vector store.)
template <typename T, int V>
NORMSERVE_HD Pack<uint16_t, V> RepackPairs(const float (&in)[V]) {
  Pack<uint16_t, V> p;
  NORMSERVE_UNROLL
  for (int k = 0; k < V / 2; ++k) {
    SetWord(p, k, T::FromFloats(in[2 * k], in[2 * k + 1]));
  }
  if (AnyNan(in)) {
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) p.v[j] = T::FromFloat(in[j]);
  }
  return p;
}

// ---- Element types: storage bits and exact conversions ----
//
// ToFloat/FromFloat convert one element; Unpack/Repack a whole pack, with
// the same bits, in fewer instructions (a 16-bit pair per 32-bit word).

struct F32 {
  using Bits = float;
  static NORMSERVE_HD float ToFloat(float b) { return b; }
  static NORMSERVE_HD float FromFloat(float f) { return f; }
  template <int V>
  static NORMSERVE_HD void Unpack(const Pack<float, V>& p, float (&out)[V]) {
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) out[j] = p.v[j];
  }
  template <int V>
  static NORMSERVE_HD Pack<float, V> Repack(const float (&in)[V]) {
    Pack<float, V> p;
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) p.v[j] = in[j];
    return p;
  }
};

struct F16 {
  using Bits = uint16_t;
  static NORMSERVE_HD float ToFloat(uint16_t b) {
    return __half2float(__ushort_as_half(b));
  }
  static NORMSERVE_HD uint16_t FromFloat(float f) {
    return __half_as_ushort(__float2half_rn(f));
  }
  template <int V>
  static NORMSERVE_HD void Unpack(const Pack<uint16_t, V>& p, float (&out)[V]) {
    NORMSERVE_UNROLL
    for (int k = 0; k < V / 2; ++k) {
      const uint32_t w = WordOf(p, k);
      out[2 * k] = ToFloat(static_cast<uint16_t>(w));
      out[2 * k + 1] = ToFloat(static_cast<uint16_t>(w >> 16));
    }
  }
  // a and b as the low and high halves of a word, each as FromFloat gives
  // it unless NaN.
  static NORMSERVE_HD uint32_t FromFloats(float a, float b) {
    return WordOf(__floats2half2_rn(a, b));
  }
  template <int V>
  static NORMSERVE_HD Pack<uint16_t, V> Repack(const float (&in)[V]) {
    return RepackPairs<F16>(in);
  }
};

struct BF16 {
  using Bits = uint16_t;
  static NORMSERVE_HD float ToFloat(uint16_t b) {
    return FloatFromBits(static_cast<uint32_t>(b) << 16);
  }
  // Round to nearest even (the hardware conversion, subnormals kept); NaN
  // keeps its sign and payload and becomes quiet: the same bits as
  // FloatToBFloat16 in kernels/dtype.h.
  static NORMSERVE_HD uint16_t FromFloat(float f) {
    if (f != f) return static_cast<uint16_t>((BitsOfFloat(f) >> 16) | 0x40u);
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
  // A bfloat16 is the high half of its float: a shift or a mask per element.
  template <int V>
  static NORMSERVE_HD void Unpack(const Pack<uint16_t, V>& p, float (&out)[V]) {
    NORMSERVE_UNROLL
    for (int k = 0; k < V / 2; ++k) {
      const uint32_t w = WordOf(p, k);
      out[2 * k] = FloatFromBits(w << 16);
      out[2 * k + 1] = FloatFromBits(w & 0xffff0000u);
    }
  }
  static NORMSERVE_HD uint32_t FromFloats(float a, float b) {
    return WordOf(__floats2bfloat162_rn(a, b));
  }
  template <int V>
  static NORMSERVE_HD Pack<uint16_t, V> Repack(const float (&in)[V]) {
    return RepackPairs<BF16>(in);
  }
};

// f rounded to T and back: what an unfused add in T stores.
template <typename T>
NORMSERVE_HD float RoundTo(float f) {
  return T::ToFloat(T::FromFloat(f));
}

// Elements per 16-byte pack of T.
template <typename T>
constexpr int kPackOf = static_cast<int>(16 / sizeof(typename T::Bits));

// Elements [pack·V, pack·V + V) of `row` as floats.
template <typename T, int V>
NORMSERVE_HD void LoadPack(const typename T::Bits* row, int64_t pack,
                           bool vector, float (&out)[V]) {
  using Bits = typename T::Bits;
  const Bits* p = row + pack * V;
  if (vector) {
    T::Unpack(LoadVector<Bits, V>(p), out);
  } else {
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) out[j] = T::ToFloat(p[j]);
  }
}

template <typename T, int V>
NORMSERVE_HD void StorePack(typename T::Bits* row, int64_t pack, bool vector,
                            const float (&in)[V]) {
  using Bits = typename T::Bits;
  Bits* p = row + pack * V;
  if (vector) {
    StoreVector<Bits, V>(p, T::template Repack<V>(in));
  } else {
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) p[j] = T::FromFloat(in[j]);
  }
}

// LayerNorm's shift (see NormalizeRow): the mean of the row's first
// kShiftValues values, summed by folding in halves and then scaled, so
// that a constant row's shift is its value exactly (each fold doubles).
// Usually within a fraction of a standard deviation of the row's mean,
// where a row's first value alone is a standard deviation away on
// average. `load(p, z)` gives pack p of the row (p < kShiftValues / V).
// Where the sum overflows, so do the row's sums, and the row is redone in
// double with its first value as the shift.
inline constexpr int kShiftValues = 16;

template <int V, class PackLoader>
NORMSERVE_HD float FoldedShift(const PackLoader& load) {
  static_assert(kShiftValues % V == 0, "whole packs");
  float s[kShiftValues];
  NORMSERVE_UNROLL
  for (int p = 0; p < kShiftValues / V; ++p) {
    float z[V];
    load(p, z);
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) s[p * V + j] = z[j];
  }
  // Four folds spelled out: as a loop over the fold width, nvcc kept s in
  // local memory.
  static_assert(kShiftValues == 16, "four folds");
  NORMSERVE_UNROLL
  for (int i = 0; i < 8; ++i) s[i] += s[i + 8];
  NORMSERVE_UNROLL
  for (int i = 0; i < 4; ++i) s[i] += s[i + 4];
  s[0] += s[2];
  s[1] += s[3];
  s[0] += s[1];
  return Mul(s[0], 1.0f / static_cast<float>(kShiftValues));
}

// ---- Where a row lives ----

// True if every row of the launch can be read and written by vector
// accesses: D a multiple of In's pack, and input, residual, output, sum, γ
// and β aligned for them. The staged mappings need it; the register
// mappings then run the RowVariant loops (NormalizeRegisterRow).
template <typename In, typename Out>
NORMSERVE_HD bool AlignedLaunch(const KernelArgs& a) {
  using Bits = typename In::Bits;
  constexpr int V = kPackOf<In>;
  return a.dim % V == 0 && CanVectorize<Bits, V>(a.input) &&
         (a.residual == nullptr || CanVectorize<Bits, V>(a.residual)) &&
         (a.sum_output == nullptr || CanVectorize<Bits, V>(a.sum_output)) &&
         CanVectorize<typename Out::Bits, V>(a.output) &&
         (a.gamma == nullptr || CanVectorize<float, V>(a.gamma)) &&
         (a.beta == nullptr || CanVectorize<float, V>(a.beta));
}

// Row pointers of one row, and how each may be accessed. kAligned: the
// launch guarantees D a multiple of the pack and aligned rows of x, the
// residual, y, the sum, γ and β (AlignedLaunch), so every access is a
// vector access and there is no tail. (The staged mappings read z from
// their buffer, where AddStagedResidual added the residual, and never call
// LoadZ.)
template <typename In, typename Out, bool kAligned>
struct RowPointers {
  using InBits = typename In::Bits;
  using OutBits = typename Out::Bits;
  static constexpr int V = kPackOf<In>;

  const InBits* x;
  const InBits* residual;  // null without
  OutBits* y;
  InBits* sum;  // null without
  bool x_vec, residual_vec, y_vec, sum_vec, gamma_vec, beta_vec;
  int64_t packs;  // full packs
  int tail;       // elements after them

  // with_residual false: the row reads no residual (a RowVariant loop,
  // whose launch has none; passed as a constant, it drops the tests).
  NORMSERVE_HD RowPointers(const KernelArgs& a, int64_t row,
                           bool with_residual = true) {
    const int64_t offset = row * a.dim;
    x = static_cast<const InBits*>(a.input) + offset;
    y = static_cast<OutBits*>(a.output) + offset;
    packs = a.dim / V;
    sum = a.sum_output != nullptr ? static_cast<InBits*>(a.sum_output) + offset
                                  : nullptr;
    residual = with_residual && a.residual != nullptr
                   ? static_cast<const InBits*>(a.residual) + offset
                   : nullptr;
    if constexpr (kAligned) {
      x_vec = residual_vec = y_vec = sum_vec = gamma_vec = beta_vec = true;
      tail = 0;
    } else {
      x_vec = CanVectorize<InBits, V>(x);
      residual_vec = residual != nullptr && CanVectorize<InBits, V>(residual);
      y_vec = CanVectorize<OutBits, V>(y);
      sum_vec = sum != nullptr && CanVectorize<InBits, V>(sum);
      gamma_vec = a.gamma != nullptr && CanVectorize<float, V>(a.gamma);
      beta_vec = a.beta != nullptr && CanVectorize<float, V>(a.beta);
      tail = static_cast<int>(a.dim - packs * V);
    }
  }

  // z of a pack: x [+ residual rounded to In]. The pack is rounded as a
  // whole (paired conversions for 16-bit types), as AddStagedResidual
  // does; the bits are RoundTo's.
  NORMSERVE_HD void LoadZ(int64_t pack, float (&z)[V]) const {
    LoadPack<In, V>(x, pack, x_vec, z);
    if (residual != nullptr) {
      float r[V];
      LoadPack<In, V>(residual, pack, residual_vec, r);
      NORMSERVE_UNROLL
      for (int j = 0; j < V; ++j) z[j] += r[j];
      In::Unpack(In::template Repack<V>(z), z);
    }
  }
  NORMSERVE_HD float LoadZ(int64_t element) const {
    float z = In::ToFloat(x[element]);
    if (residual != nullptr) {
      z = RoundTo<In>(z + In::ToFloat(residual[element]));
    }
    return z;
  }
};

// LayerNorm's shift of the row at `ptr`, read from global memory: z of
// the first packs (with the residual added and rounded as LoadZ does), or
// of the first element in rows shorter than kShiftValues.
template <typename In, typename Out, bool kAligned>
NORMSERVE_HD float ShiftFromMemory(const RowPointers<In, Out, kAligned>& ptr) {
  constexpr int V = kPackOf<In>;
  if (ptr.packs * V < kShiftValues) return ptr.LoadZ(int64_t{0});
  return FoldedShift<V>([&](int p, float(&z)[V]) { ptr.LoadZ(p, z); });
}

// The thread's packs (at most kPacks) and tail element, held in registers.
template <typename In, typename Out, bool kAligned, int kPacks>
struct RegisterRow {
  static constexpr int V = kPackOf<In>;
  const RowPointers<In, Out, kAligned>& ptr;
  const int t, threads;
  float z[kPacks][V];
  float z_tail = 0.0f;

  NORMSERVE_HD RegisterRow(const RowPointers<In, Out, kAligned>& p, int thread,
                           int num_threads)
      : ptr(p), t(thread), threads(num_threads) {
    NORMSERVE_UNROLL
    for (int k = 0; k < kPacks; ++k) {
      const int64_t pack = t + static_cast<int64_t>(k) * threads;
      if (pack < ptr.packs) ptr.LoadZ(pack, z[k]);
    }
    if (t < ptr.tail) z_tail = ptr.LoadZ(ptr.packs * V + t);
  }

  // z of element 0 (every thread loads it: one cached line).
  NORMSERVE_HD float First() const { return ptr.LoadZ(int64_t{0}); }
  // LayerNorm's shift (FoldedShift), loaded again by every thread from the
  // lines its group has just read.
  NORMSERVE_HD float Shift() const { return ShiftFromMemory(ptr); }

  // f(k, pack, z) for each owned pack, in order: the thread's k-th pack
  // (its slot, see HeldWeights).
  template <typename F>
  NORMSERVE_HD void ForEachPack(F&& f) const {
    NORMSERVE_UNROLL
    for (int k = 0; k < kPacks; ++k) {
      const int64_t pack = t + static_cast<int64_t>(k) * threads;
      if (pack < ptr.packs) f(k, pack, z[k]);
    }
  }
  // f(element, z) for the owned tail element, if any.
  template <typename F>
  NORMSERVE_HD void ForTail(F&& f) const {
    if (t < ptr.tail) f(ptr.packs * V + t, z_tail);
  }
};

// The same interface over global memory: every pass reloads (and re-adds
// the residual, which rounds to the same bits each time).
template <typename In, typename Out, bool kAligned>
struct StreamingRow {
  static constexpr int V = kPackOf<In>;
  const RowPointers<In, Out, kAligned>& ptr;
  const int t, threads;

  NORMSERVE_HD float First() const { return ptr.LoadZ(int64_t{0}); }
  NORMSERVE_HD float Shift() const { return ShiftFromMemory(ptr); }

  template <typename F>
  NORMSERVE_HD void ForEachPack(F&& f) const {
    int k = 0;
    for (int64_t pack = t; pack < ptr.packs; pack += threads, ++k) {
      float z[V];
      ptr.LoadZ(pack, z);
      f(k, pack, z);
    }
  }
  template <typename F>
  NORMSERVE_HD void ForTail(F&& f) const {
    if (t < ptr.tail) {
      const int64_t e = ptr.packs * V + t;
      f(e, ptr.LoadZ(e));
    }
  }
};

// The same interface over a copy of the row's z (no tail) in shared
// memory, staged there by the kernel. Thread t reads packs t, t + T, … (at
// most kPacks, in a loop the compiler unrolls; any number for kPacks =
// kLoopedPacks, in a loop, for rows too long to unroll) in the order
// RegisterRow and StreamingRow walk them, so the row's arithmetic and its
// bits are the same as under the register or streaming mapping with T
// threads. Rows here fit in shared memory (at most kStreamingThreads ×
// kStreamingStagedPacks packs): 32-bit pack indices.
inline constexpr int kLoopedPacks = 0;

template <typename In, typename Out, int kPacks>
struct SharedRow {
  static constexpr int V = kPackOf<In>;
  using Bits = typename In::Bits;
  const RowPointers<In, Out, true>& ptr;
  const Pack<Bits, V>* row;  // shared
  const int t, threads;

  NORMSERVE_HD float First() const { return In::ToFloat(row[0].v[0]); }
  NORMSERVE_HD float Shift() const {
    if (ptr.packs * V < kShiftValues) return First();
    return FoldedShift<V>([&](int p, float(&z)[V]) { In::Unpack(row[p], z); });
  }

  template <typename F>
  NORMSERVE_HD void ForEachPack(F&& f) const {
    const int packs = static_cast<int>(ptr.packs);
    auto visit = [&](int k, int pack) {
      float z[V];
      In::Unpack(row[pack], z);
      f(k, pack, z);
    };
    if constexpr (kPacks == kLoopedPacks) {
      // k is then unbounded: such rows go with weights read per pack
      // (LoadedWeights), which do not index by it.
      int k = 0;
      for (int pack = t; pack < packs; pack += threads, ++k) visit(k, pack);
    } else {
      NORMSERVE_UNROLL
      for (int k = 0; k < kPacks; ++k) {
        const int pack = t + k * threads;
        if (pack < packs) visit(k, pack);
      }
    }
  }
  template <typename F>
  NORMSERVE_HD void ForTail(F&&) const {}
};

// z = x + residual rounded to In (what RowPointers::LoadZ gives the
// register rows), written over the staged x by thread t of T for the packs
// it reads later (t, t + T, …, at most kPacks); `x` and `residual` hold
// `packs` packs. Repack does the rounding: it rounds to nearest even as
// RoundTo does, and a NaN goes through T::FromFloat either way (whose NaN
// bits do not change when converted again), so the bits are RoundTo's
// without converting twice.
template <typename In, int kPacks>
NORMSERVE_HD void AddStagedResidual(
    Pack<typename In::Bits, kPackOf<In>>* x,
    const Pack<typename In::Bits, kPackOf<In>>* residual, int64_t packs, int t,
    int threads) {
  constexpr int V = kPackOf<In>;
  NORMSERVE_UNROLL
  for (int k = 0; k < kPacks; ++k) {
    const int p = t + k * threads;
    if (p >= packs) break;
    // Whole packs copied first: one 16-byte load each (unpacking through
    // the reference, nvcc read a residual in global memory byte by byte).
    const Pack<typename In::Bits, V> xp = x[p], rp = residual[p];
    float z[V], r[V];
    In::Unpack(xp, z);
    In::Unpack(rp, r);
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) z[j] += r[j];
    x[p] = In::template Repack<V>(z);
  }
}

// ---- The row algorithm ----

// v·rstd, with v = (z − shift) − center (LayerNorm) or z (RMSNorm).
template <bool kLayer, typename A>
NORMSERVE_HD A Scaled(float z, A shift, A center, A rstd) {
  A v = static_cast<A>(z);
  if constexpr (kLayer) v = (v - shift) - center;
  return Mul(v, rstd);
}

// What a row loop is compiled for. kAny reads every optional pointer from
// KernelArgs. The common launches of an inference server are compiled
// apart, so that their loops test no KernelArgs pointer per pack (nvcc
// would predicate the code of the other cases beside theirs and issue
// both) and carry no residual code: kGammaBeta, γ and β; kGammaOnly, γ
// without β; neither with a residual or a sum output.
enum class RowVariant { kAny, kGammaBeta, kGammaOnly };

template <RowVariant kV>
NORMSERVE_HD bool HasGamma(const KernelArgs& a) {
  if constexpr (kV == RowVariant::kAny) return a.gamma != nullptr;
  return true;
}
template <RowVariant kV>
NORMSERVE_HD bool HasBeta(const KernelArgs& a) {
  if constexpr (kV == RowVariant::kAny) return a.beta != nullptr;
  return kV == RowVariant::kGammaBeta;
}
template <RowVariant kV>
NORMSERVE_HD bool HasResidual(const KernelArgs& a) {
  return kV == RowVariant::kAny && a.residual != nullptr;
}
template <RowVariant kV>
NORMSERVE_HD bool HasSumOutput(const KernelArgs& a) {
  return kV == RowVariant::kAny && a.sum_output != nullptr;
}

template <RowVariant kV>
using RowVariantTag = std::integral_constant<RowVariant, kV>;

// Calls f(kind, variant) with kind std::true_type for LayerNorm and
// std::false_type for RMSNorm, and the RowVariantTag that fits the launch
// (kAny unless `variants`): one instantiation of the row algorithm each.
template <typename F>
NORMSERVE_HD void ForKindAndVariant(const KernelArgs& a, bool variants, F&& f) {
  const bool plain =
      variants && a.residual == nullptr && a.sum_output == nullptr;
  if (a.layer_norm) {
    if (plain && a.gamma != nullptr && a.beta != nullptr) {
      f(std::true_type{}, RowVariantTag<RowVariant::kGammaBeta>{});
    } else {
      f(std::true_type{}, RowVariantTag<RowVariant::kAny>{});
    }
  } else if (plain && a.gamma != nullptr && a.beta == nullptr) {
    f(std::false_type{}, RowVariantTag<RowVariant::kGammaOnly>{});
  } else {
    f(std::false_type{}, RowVariantTag<RowVariant::kAny>{});
  }
}

// γ and β of a row's packs, read from global memory for each pack.
template <int V, RowVariant kV = RowVariant::kAny>
struct LoadedWeights {
  static constexpr RowVariant kVariant = kV;
  const KernelArgs& a;
  bool gamma_vec, beta_vec;

  NORMSERVE_HD void Gamma(int, int64_t pack, float (&g)[V]) const {
    LoadPack<F32, V>(a.gamma, pack, gamma_vec, g);
  }
  NORMSERVE_HD void Beta(int, int64_t pack, float (&b)[V]) const {
    LoadPack<F32, V>(a.beta, pack, beta_vec, b);
  }
};

// γ and β of thread t's packs t, t + T, … (at most kPacks, slot k holding
// pack t + kT), loaded once and held in registers for every row the thread
// normalizes: under a block mapping a thread owns the same packs in every
// row, and a long row's γ and β would otherwise be read again from L2 for
// each row. For aligned launches (16-byte loads, no tail).
template <int kPacks, int V, RowVariant kV = RowVariant::kAny>
struct HeldWeights {
  static constexpr RowVariant kVariant = kV;
  float g[kPacks][V];
  float b[kPacks][V];

  NORMSERVE_HD HeldWeights(const KernelArgs& a, int t, int threads) {
    const int64_t packs = a.dim / V;
    NORMSERVE_UNROLL
    for (int k = 0; k < kPacks; ++k) {
      const int64_t pack = t + static_cast<int64_t>(k) * threads;
      NORMSERVE_UNROLL
      for (int j = 0; j < V; ++j) g[k][j] = b[k][j] = 0.0f;
      if (pack < packs && HasGamma<kV>(a))
        LoadPack<F32, V>(a.gamma, pack, true, g[k]);
      if (pack < packs && HasBeta<kV>(a))
        LoadPack<F32, V>(a.beta, pack, true, b[k]);
    }
  }
  NORMSERVE_HD void Gamma(int k, int64_t, float (&out)[V]) const {
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) out[j] = g[k][j];
  }
  NORMSERVE_HD void Beta(int k, int64_t, float (&out)[V]) const {
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) out[j] = b[k][j];
  }
};

// y = v·rstd [·γ] [+β] for the thread's k-th pack, `pack` (γ·u + β as one
// fused multiply-add), with γ and β from `w`.
template <bool kLayer, int V, typename A, class Weights>
NORMSERVE_HD void Affine(const KernelArgs& a, const Weights& w, int k,
                         int64_t pack, const float (&z)[V], A shift, A center,
                         A rstd, float (&y)[V]) {
  constexpr RowVariant kV = Weights::kVariant;
  A u[V];
  NORMSERVE_UNROLL
  for (int j = 0; j < V; ++j) u[j] = Scaled<kLayer>(z[j], shift, center, rstd);
  if (HasGamma<kV>(a)) {
    float g[V];
    w.Gamma(k, pack, g);
    if (HasBeta<kV>(a)) {
      float b[V];
      w.Beta(k, pack, b);
      NORMSERVE_UNROLL
      for (int j = 0; j < V; ++j) {
        y[j] = static_cast<float>(
            Fma(u[j], static_cast<A>(g[j]), static_cast<A>(b[j])));
      }
    } else {
      NORMSERVE_UNROLL
      for (int j = 0; j < V; ++j) {
        y[j] = static_cast<float>(Mul(u[j], static_cast<A>(g[j])));
      }
    }
  } else if (HasBeta<kV>(a)) {
    float b[V];
    w.Beta(k, pack, b);
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) {
      y[j] = static_cast<float>(u[j] + static_cast<A>(b[j]));
    }
  } else {
    NORMSERVE_UNROLL
    for (int j = 0; j < V; ++j) y[j] = static_cast<float>(u[j]);
  }
}

// The same for tail element e.
template <bool kLayer, typename A>
NORMSERVE_HD float AffineElement(const KernelArgs& a, int64_t e, float z,
                                 A shift, A center, A rstd) {
  const A u = Scaled<kLayer>(z, shift, center, rstd);
  if (a.gamma != nullptr && a.beta != nullptr) {
    return static_cast<float>(
        Fma(u, static_cast<A>(a.gamma[e]), static_cast<A>(a.beta[e])));
  }
  if (a.gamma != nullptr) {
    return static_cast<float>(Mul(u, static_cast<A>(a.gamma[e])));
  }
  if (a.beta != nullptr)
    return static_cast<float>(u + static_cast<A>(a.beta[e]));
  return static_cast<float>(u);
}

// Below this variance float32 squares may have underflowed: recompute in
// double (as the CPU kernel does).
constexpr double kTinyVariance = 1e-30;

// LayerNorm's statistics from one pass (NormalizeRow): the mean of u and
// the variance from Σu and Σu² of a row of 1/inv_d elements; true where
// they are accurate (K <= 2), false where the row needs a second pass.
NORMSERVE_HD bool OnePassStatistics(float sum_u, float sum_u2, double inv_d,
                                    double* mean_u, double* var) {
  *mean_u = Mul(static_cast<double>(sum_u), inv_d);
  const double mean_square = Mul(static_cast<double>(sum_u2), inv_d);
  *var = Fma(-*mean_u, *mean_u, mean_square);
  return *var >= 0.5 * mean_square;
}

// Normalizes row `row` (LayerNorm if kLayer, else RMSNorm) as one thread of
// `group`; `leader` (one thread of the group) writes the statistics.
//
// LayerNorm, as the CPU kernel: with the shift s (FoldedShift) and
// u = z − s, one pass sums u and u²; then var = Σu²/D − (Σu/D)², accurate
// where s is close to the mean: with K = (Σu²/D) / var = 1 + (s − mean)²/var,
// float32 sums good to a relative e (of Σ|terms|) give the variance to
// (K + 2·sqrt(K(K − 1)))·e, under 5e within K <= 2, which nearly every row
// is. A row past K = 2 makes a second pass over v = u − c, c = Σu/D as
// float32: Σv² and Σv, and Σ(v − m)² = Σv² − (Σv)²/D removes the error of
// c. RMSNorm: one pass of z². Rows whose float32 sums overflow, or whose
// variance is so small that the squares may have underflowed (and that are
// not exactly constant), are redone in double. γ and β come from `weights`
// (LoadedWeights, HeldWeights), which also name the RowVariant the loop is
// compiled for; taken by value: nvcc then keeps the register kernels'
// allocation as it was without it (by reference, the 16-bit warp kernels
// spilled twice as much).
//
// `group` sums with Sum (one float32 value), Sum2 (two at once) and, for a
// row's second pass only, Sum2Again (as Sum2, after the readers of Sum2's
// result are done), and votes with Any.
template <bool kLayer, typename In, typename Out, bool kAligned, class Row,
          class Group, class Weights>
NORMSERVE_HD void NormalizeRow(const KernelArgs& a, int64_t row,
                               const RowPointers<In, Out, kAligned>& ptr,
                               const Row& src, const Group& group, bool leader,
                               const Weights weights) {
  constexpr int V = kPackOf<In>;
  const double inv_d = a.inv_dim;
  const float shift = kLayer ? src.Shift() : 0.0f;

  float sum1 = 0.0f;  // Σu (LayerNorm)
  float sq = 0.0f;    // Σu² (LayerNorm) or Σz² (RMSNorm)
  if constexpr (kLayer) {
    src.ForEachPack([&](int, int64_t, const float(&z)[V]) {
      NORMSERVE_UNROLL
      for (int j = 0; j < V; ++j) {
        const float u = z[j] - shift;
        sum1 += u;
        sq = Fma(u, u, sq);
      }
    });
    src.ForTail([&](int64_t, float z) {
      const float u = z - shift;
      sum1 += u;
      sq = Fma(u, u, sq);
    });
    group.Sum2(&sum1, &sq);
  } else {
    src.ForEachPack([&](int, int64_t, const float(&z)[V]) {
      NORMSERVE_UNROLL
      for (int j = 0; j < V; ++j) sq = Fma(z[j], z[j], sq);
    });
    src.ForTail([&](int64_t, float z) { sq = Fma(z, z, sq); });
    sq = group.Sum(sq);
  }
  bool use_double = !Finite(sum1) || !Finite(sq);

  // The center c subtracted from u (LayerNorm), and Σ(u − c) where a second
  // pass took it.
  float center = 0.0f;
  double lin_d = 0.0;
  double var;
  if constexpr (!kLayer) {
    var = Mul(static_cast<double>(sq), inv_d);
  } else {
    double mean_u;
    const bool one_pass = OnePassStatistics(sum1, sq, inv_d, &mean_u, &var);
    center = static_cast<float>(mean_u);
    // (Every thread of the group holds the same sums: the branch is the
    // group's.)
    if (!use_double && !one_pass) {
      float sq2 = 0.0f, lin = 0.0f;
      src.ForEachPack([&](int, int64_t, const float(&z)[V]) {
        NORMSERVE_UNROLL
        for (int j = 0; j < V; ++j) {
          const float v = (z[j] - shift) - center;
          sq2 = Fma(v, v, sq2);
          lin += v;
        }
      });
      src.ForTail([&](int64_t, float z) {
        const float v = (z - shift) - center;
        sq2 = Fma(v, v, sq2);
        lin += v;
      });
      group.Sum2Again(&sq2, &lin);
      use_double = !Finite(sq2);
      lin_d = static_cast<double>(lin);
      var =
          Mul(Fma(-Mul(lin_d, lin_d), inv_d, static_cast<double>(sq2)), inv_d);
    }
  }
  if (var < 0.0) var = 0.0;

  if (!use_double && var < kTinyVariance) {
    // Exactly constant rows are fine in float32 (they give β: their shift
    // is their value); anything else this small is not.
    bool varies = false;
    src.ForEachPack([&](int, int64_t, const float(&z)[V]) {
      NORMSERVE_UNROLL
      for (int j = 0; j < V; ++j) varies |= !(z[j] == shift);
    });
    src.ForTail([&](int64_t, float z) { varies |= !(z == shift); });
    use_double = group.Any(varies);
  }

  // The outputs, in the precision A of shift, center and rstd: y and the
  // residual sum z.
  auto write = [&](auto shift_a, auto center_a, auto rstd_a) {
    using A = decltype(rstd_a);
    src.ForEachPack([&](int k, int64_t pack, const float(&z)[V]) {
      float y[V];
      Affine<kLayer, V, A>(a, weights, k, pack, z, shift_a, center_a, rstd_a,
                           y);
      StorePack<Out, V>(ptr.y, pack, ptr.y_vec, y);
      if (HasSumOutput<Weights::kVariant>(a)) {
        StorePack<In, V>(ptr.sum, pack, ptr.sum_vec, z);
      }
    });
    src.ForTail([&](int64_t e, float z) {
      ptr.y[e] = Out::FromFloat(
          AffineElement<kLayer, A>(a, e, z, shift_a, center_a, rstd_a));
      if (HasSumOutput<Weights::kVariant>(a)) ptr.sum[e] = In::FromFloat(z);
    });
  };
  float mean_out, rstd_out;
  if (!use_double) {
    const float c = center + static_cast<float>(Mul(lin_d, inv_d));
    const float rstd =
        static_cast<float>(Rsqrt(var + static_cast<double>(a.epsilon)));
    write(shift, c, rstd);
    mean_out =
        static_cast<float>(static_cast<double>(shift) +
                           static_cast<double>(center) + Mul(lin_d, inv_d));
    rstd_out = rstd;
  } else {
    // Overflowing, underflowing or non-finite rows, in double throughout,
    // shifted by the first value (finite in a finite row, where the mean of
    // the first values may overflow); NaN and Inf propagate to every
    // output of the row.
    const double s = kLayer ? static_cast<double>(src.First()) : 0.0;
    double mean = 0.0;
    if constexpr (kLayer) {
      double acc = 0.0;
      src.ForEachPack([&](int, int64_t, const float(&z)[V]) {
        NORMSERVE_UNROLL
        for (int j = 0; j < V; ++j) acc += static_cast<double>(z[j]) - s;
      });
      src.ForTail([&](int64_t, float z) { acc += static_cast<double>(z) - s; });
      mean = Mul(group.Sum(acc), inv_d);
    }
    double m2 = 0.0;
    src.ForEachPack([&](int, int64_t, const float(&z)[V]) {
      NORMSERVE_UNROLL
      for (int j = 0; j < V; ++j) {
        const double v = (static_cast<double>(z[j]) - s) - mean;
        m2 = Fma(v, v, m2);
      }
    });
    src.ForTail([&](int64_t, float z) {
      const double v = (static_cast<double>(z) - s) - mean;
      m2 = Fma(v, v, m2);
    });
    m2 = group.Sum(m2);
    const double rstd = Rsqrt(Fma(m2, inv_d, static_cast<double>(a.epsilon)));
    write(s, mean, rstd);
    mean_out = static_cast<float>(s + mean);
    rstd_out = static_cast<float>(rstd);
  }
  if (leader) {
    if (a.mean != nullptr) a.mean[row] = kLayer ? mean_out : 0.0f;
    if (a.rstd != nullptr) a.rstd[row] = rstd_out;
  }
}

// Row `row` held in registers (kPacks packs per thread at most) by thread
// t of T in `group`. An aligned launch takes vector accesses only, in the
// RowVariant loops where it is one of theirs; any other launch the general
// loop, which picks vector or element accesses per row and buffer (nvcc
// issues both ways). Thread 0 writes the statistics.
template <typename In, typename Out, int kPacks, class Group>
NORMSERVE_HD void NormalizeRegisterRow(const KernelArgs& a, int64_t row, int t,
                                       int threads, const Group& group) {
  const bool aligned = AlignedLaunch<In, Out>(a);
  ForKindAndVariant(a, aligned, [&](auto layer, auto variant) {
    constexpr bool kLayer = decltype(layer)::value;
    constexpr RowVariant kV = decltype(variant)::value;
    auto vectors_only = [&] {
      const RowPointers<In, Out, true> ptr(a, row, kV == RowVariant::kAny);
      const RegisterRow<In, Out, true, kPacks> src(ptr, t, threads);
      NormalizeRow<kLayer>(a, row, ptr, src, group, t == 0,
                           LoadedWeights<kPackOf<In>, kV>{a, true, true});
    };
    if constexpr (kV != RowVariant::kAny) {
      vectors_only();  // chosen for aligned launches only
    } else if (aligned) {
      vectors_only();
    } else {
      const RowPointers<In, Out, false> ptr(a, row);
      const RegisterRow<In, Out, false, kPacks> src(ptr, t, threads);
      NormalizeRow<kLayer>(a, row, ptr, src, group, t == 0);
    }
  });
}

// Row `row` read from global memory on every pass (very large D) by
// thread t of T in `group`: the general loop. Thread 0 writes the
// statistics.
template <typename In, typename Out, class Group>
NORMSERVE_HD void NormalizeStreamingRow(const KernelArgs& a, int64_t row, int t,
                                        int threads, const Group& group) {
  const RowPointers<In, Out, false> ptr(a, row);
  const StreamingRow<In, Out, false> src{ptr, t, threads};
  ForKindAndVariant(a, false, [&](auto layer, auto) {
    NormalizeRow<decltype(layer)::value>(a, row, ptr, src, group, t == 0);
  });
}

// The same with γ and β read from global memory for each pack.
template <bool kLayer, typename In, typename Out, bool kAligned, class Row,
          class Group>
NORMSERVE_HD void NormalizeRow(const KernelArgs& a, int64_t row,
                               const RowPointers<In, Out, kAligned>& ptr,
                               const Row& src, const Group& group,
                               bool leader) {
  NormalizeRow<kLayer>(
      a, row, ptr, src, group, leader,
      LoadedWeights<kPackOf<In>>{a, ptr.gamma_vec, ptr.beta_vec});
}

}  // namespace normserve::cuda::internal

#endif  // NORMSERVE_KERNELS_CUDA_INTERNAL_NORMALIZE_ROW_H_
