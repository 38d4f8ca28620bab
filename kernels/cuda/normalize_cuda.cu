// The CUDA row kernels. The row algorithm (NormalizeRow) is written once and
// kept apart from where the row lives: a RegisterRow holds the thread's
// share of the row in registers (warp and block mappings), a StreamingRow
// reads it from global memory on every pass (very large D). Reductions go
// through a WarpGroup or a BlockGroup. Residual, sum output, γ, β and the
// statistics are run-time flags, uniform across a launch; only the dtypes,
// the mapping and the packs per thread are template arguments.
//
// Ownership and order (see launch_plan.h): thread t of T owns packs
// t, t + T, … and tail element t; it accumulates its packs in that order,
// each pack's elements in order, then its tail element. Nothing here reads
// an address to decide an order; 16-byte loads are used per row and per
// buffer when that row's pointer is aligned for them, and fetch the same
// values the element loads would.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels/cuda/internal/kernel_launch.h"
#include "kernels/cuda/launch_plan.h"

namespace normserve::cuda::internal {
namespace {

// ---- Element types: storage bits and exact conversions ----

struct F32 {
  using Bits = float;
  static __device__ __forceinline__ float ToFloat(float b) { return b; }
  static __device__ __forceinline__ float FromFloat(float f) { return f; }
};

struct F16 {
  using Bits = uint16_t;
  static __device__ __forceinline__ float ToFloat(uint16_t b) {
    return __half2float(__ushort_as_half(b));
  }
  static __device__ __forceinline__ uint16_t FromFloat(float f) {
    return __half_as_ushort(__float2half_rn(f));
  }
};

struct BF16 {
  using Bits = uint16_t;
  static __device__ __forceinline__ float ToFloat(uint16_t b) {
    return __uint_as_float(static_cast<uint32_t>(b) << 16);
  }
  // Round to nearest even (the hardware conversion, subnormals kept); NaN
  // keeps its sign and payload and becomes quiet: the same bits as
  // FloatToBFloat16 in kernels/dtype.h.
  static __device__ __forceinline__ uint16_t FromFloat(float f) {
    if (f != f) {
      return static_cast<uint16_t>((__float_as_uint(f) >> 16) | 0x40u);
    }
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
};

// f rounded to T and back: what an unfused add in T stores.
template <typename T>
__device__ __forceinline__ float RoundTo(float f) {
  return T::ToFloat(T::FromFloat(f));
}

// Elements per 16-byte pack of T.
template <typename T>
constexpr int kPackOf = static_cast<int>(16 / sizeof(typename T::Bits));

// V consecutive elements, aligned to their size so that they move as one
// (or, for 32 bytes, two) vector accesses.
template <typename Bits, int V>
struct alignas(sizeof(Bits) * V) Pack {
  Bits v[V];
};

template <typename Bits, int V>
__host__ __device__ __forceinline__ bool CanVectorize(const void* row) {
  return reinterpret_cast<uintptr_t>(row) % sizeof(Pack<Bits, V>) == 0;
}

// Elements [pack·V, pack·V + V) of `row` as floats.
template <typename T, int V>
__device__ __forceinline__ void LoadPack(const typename T::Bits* row,
                                         int64_t pack, bool vector,
                                         float (&out)[V]) {
  using Bits = typename T::Bits;
  const Bits* p = row + pack * V;
  if (vector) {
    const Pack<Bits, V> pk = *reinterpret_cast<const Pack<Bits, V>*>(p);
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] = T::ToFloat(pk.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] = T::ToFloat(p[j]);
  }
}

template <typename T, int V>
__device__ __forceinline__ void StorePack(typename T::Bits* row, int64_t pack,
                                          bool vector, const float (&in)[V]) {
  using Bits = typename T::Bits;
  Bits* p = row + pack * V;
  if (vector) {
    Pack<Bits, V> pk;
#pragma unroll
    for (int j = 0; j < V; ++j) pk.v[j] = T::FromFloat(in[j]);
    *reinterpret_cast<Pack<Bits, V>*>(p) = pk;
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) p[j] = T::FromFloat(in[j]);
  }
}

// ---- Reductions: identical result in every thread of the group ----

// Butterfly: lane i adds lane i^o's value, and lane i^o adds lane i's; as
// float addition is commutative both get the same bits, so after the last
// step every lane holds the same sum.
template <typename A>
__device__ __forceinline__ A WarpSum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp serves the row.
struct WarpGroup {
  template <typename A>
  __device__ __forceinline__ A Sum(A v) const {
    return WarpSum(v);
  }
  __device__ __forceinline__ bool Any(bool b) const {
    return __any_sync(0xffffffffu, b) != 0;
  }
};

// The block serves the row: warp sums, then every warp sums the warps'
// partial sums in warp order (lanes beyond the warp count add zero).
struct BlockGroup {
  float* partial_f;   // shared, 32
  double* partial_d;  // shared, 32

  template <typename A>
  __device__ __forceinline__ A Sum(A v) const {
    A* partial = Partial(static_cast<A*>(nullptr));
    const int lane = threadIdx.x % 32;
    const int warps = static_cast<int>(blockDim.x / 32);
    v = WarpSum(v);
    __syncthreads();  // earlier readers of `partial` are done
    if (lane == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    return WarpSum(lane < warps ? partial[lane] : A(0));
  }
  __device__ __forceinline__ bool Any(bool b) const {
    return __syncthreads_or(b ? 1 : 0) != 0;
  }

 private:
  __device__ __forceinline__ float* Partial(float*) const { return partial_f; }
  __device__ __forceinline__ double* Partial(double*) const {
    return partial_d;
  }
};

// ---- Where a row lives ----

// Row pointers of one row, and how each may be accessed.
template <typename In, typename Out>
struct RowPointers {
  using InBits = typename In::Bits;
  using OutBits = typename Out::Bits;
  static constexpr int V = kPackOf<In>;

  const InBits* x;
  const InBits* residual;  // null without
  OutBits* y;
  InBits* sum;  // null without
  bool x_vec, residual_vec, y_vec, sum_vec;
  int64_t packs;  // full packs
  int tail;       // elements after them

  __device__ RowPointers(const KernelArgs& a, int64_t row) {
    const int64_t offset = row * a.dim;
    x = static_cast<const InBits*>(a.input) + offset;
    residual = a.residual != nullptr
                   ? static_cast<const InBits*>(a.residual) + offset
                   : nullptr;
    y = static_cast<OutBits*>(a.output) + offset;
    sum = a.sum_output != nullptr ? static_cast<InBits*>(a.sum_output) + offset
                                  : nullptr;
    x_vec = CanVectorize<InBits, V>(x);
    residual_vec = residual != nullptr && CanVectorize<InBits, V>(residual);
    y_vec = CanVectorize<OutBits, V>(y);
    sum_vec = sum != nullptr && CanVectorize<InBits, V>(sum);
    packs = a.dim / V;
    tail = static_cast<int>(a.dim - packs * V);
  }

  // z of a pack: x [+ residual rounded to In].
  __device__ __forceinline__ void LoadZ(int64_t pack, float (&z)[V]) const {
    LoadPack<In, V>(x, pack, x_vec, z);
    if (residual != nullptr) {
      float r[V];
      LoadPack<In, V>(residual, pack, residual_vec, r);
#pragma unroll
      for (int j = 0; j < V; ++j) z[j] = RoundTo<In>(z[j] + r[j]);
    }
  }
  __device__ __forceinline__ float LoadZ(int64_t element) const {
    float z = In::ToFloat(x[element]);
    if (residual != nullptr) {
      z = RoundTo<In>(z + In::ToFloat(residual[element]));
    }
    return z;
  }
};

// The thread's packs (at most kPacks) and tail element, held in registers.
template <typename In, typename Out, int kPacks>
struct RegisterRow {
  static constexpr int V = kPackOf<In>;
  const RowPointers<In, Out>& ptr;
  const int t, threads;
  float z[kPacks][V];
  float z_tail = 0.0f;

  __device__ RegisterRow(const RowPointers<In, Out>& p, int thread,
                         int num_threads)
      : ptr(p), t(thread), threads(num_threads) {
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int64_t pack = t + static_cast<int64_t>(k) * threads;
      if (pack < ptr.packs) ptr.LoadZ(pack, z[k]);
    }
    if (t < ptr.tail) z_tail = ptr.LoadZ(ptr.packs * V + t);
  }

  // z of element 0 (every thread loads it: one cached line).
  __device__ __forceinline__ float First() const {
    return ptr.LoadZ(int64_t{0});
  }

  // f(pack, z) for each owned pack, in order.
  template <typename F>
  __device__ __forceinline__ void ForEachPack(F&& f) const {
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int64_t pack = t + static_cast<int64_t>(k) * threads;
      if (pack < ptr.packs) f(pack, z[k]);
    }
  }
  // f(element, z) for the owned tail element, if any.
  template <typename F>
  __device__ __forceinline__ void ForTail(F&& f) const {
    if (t < ptr.tail) f(ptr.packs * V + t, z_tail);
  }
};

// The same interface over global memory: every pass reloads (and re-adds
// the residual, which rounds to the same bits each time).
template <typename In, typename Out>
struct StreamingRow {
  static constexpr int V = kPackOf<In>;
  const RowPointers<In, Out>& ptr;
  const int t, threads;

  __device__ StreamingRow(const RowPointers<In, Out>& p, int thread,
                          int num_threads)
      : ptr(p), t(thread), threads(num_threads) {}

  __device__ __forceinline__ float First() const {
    return ptr.LoadZ(int64_t{0});
  }

  template <typename F>
  __device__ __forceinline__ void ForEachPack(F&& f) const {
    for (int64_t pack = t; pack < ptr.packs; pack += threads) {
      float z[V];
      ptr.LoadZ(pack, z);
      f(pack, z);
    }
  }
  template <typename F>
  __device__ __forceinline__ void ForTail(F&& f) const {
    if (t < ptr.tail) {
      const int64_t e = ptr.packs * V + t;
      f(e, ptr.LoadZ(e));
    }
  }
};

// The same interface over a copy of the row in shared memory (x only: no
// residual, no tail), staged there by StageRow. Thread t reads packs
// t, t + T, … in the order RegisterRow holds them, so the row's arithmetic
// and its bits are the same as under the register mapping with T threads.
template <typename In, typename Out>
struct SharedRow {
  static constexpr int V = kPackOf<In>;
  using Bits = typename In::Bits;
  const RowPointers<In, Out>& ptr;
  const Pack<Bits, V>* row;  // shared
  const int t, threads;

  __device__ __forceinline__ float First() const {
    return In::ToFloat(row[0].v[0]);
  }

  template <typename F>
  __device__ __forceinline__ void ForEachPack(F&& f) const {
    for (int64_t pack = t; pack < ptr.packs; pack += threads) {
      const Pack<Bits, V> p = row[pack];
      float z[V];
#pragma unroll
      for (int j = 0; j < V; ++j) z[j] = In::ToFloat(p.v[j]);
      f(pack, z);
    }
  }
  template <typename F>
  __device__ __forceinline__ void ForTail(F&&) const {}
};

// Asynchronous 16-byte copies of row `row`'s packs into `dst` (shared), by
// thread t of T; completes at the matching CpAsyncWait.
template <typename Bits, int V>
__device__ __forceinline__ void StageRow(const KernelArgs& a, int64_t row,
                                         Pack<Bits, V>* dst, int t, int T) {
  const auto* src =
      static_cast<const Pack<Bits, V>*>(a.input) + row * (a.dim / V);
  const int64_t packs = a.dim / V;
  for (int64_t p = t; p < packs; p += T) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const auto shared =
        static_cast<unsigned>(__cvta_generic_to_shared(dst + p));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared),
                 "l"(src + p)
                 : "memory");
#else
    dst[p] = src[p];
#endif
  }
}

__device__ __forceinline__ void CpAsyncCommit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most the newest `kPending` groups of this thread's copies
// are in flight.
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Row buffers in shared memory per row group (warp or block): row i is
// normalized from buffer i mod kStages while rows i + 1 … i + kStages − 1
// are being copied in.
inline constexpr int kWarpStages = 2;
inline constexpr int kBlockStages = 2;

// The row loop of a staged mapping: rows first, first + stride, … < rows,
// each staged kStages − 1 rows ahead into `buffers` (kStages × packs) by
// thread t of T, then body(row, buffer) between two sync() barriers of the
// row group.
template <int kStages, typename Bits, int V, typename Sync, typename Body>
__device__ __forceinline__ void StagedRows(const KernelArgs& a, int64_t first,
                                           int64_t stride,
                                           Pack<Bits, V>* buffers, int t, int T,
                                           Sync sync, Body body) {
  const int64_t packs = a.dim / V;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    const int64_t r = first + s * stride;
    if (r < a.rows) StageRow<Bits, V>(a, r, buffers + s * packs, t, T);
    CpAsyncCommit();
  }
  int b = 0;
  for (int64_t row = first; row < a.rows; row += stride) {
    const int64_t ahead = row + (kStages - 1) * stride;
    const int ahead_b = b == 0 ? kStages - 1 : b - 1;
    if (ahead < a.rows) {
      StageRow<Bits, V>(a, ahead, buffers + ahead_b * packs, t, T);
    }
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();
    sync();
    body(row, buffers + b * packs);
    sync();  // buffer b is read: a later row may be staged into it
    b = b + 1 == kStages ? 0 : b + 1;
  }
}

// ---- The row algorithm ----

// y = v·rstd [·γ] [+β] for one pack, with v = (z − shift) − center.
template <int V, typename A>
__device__ __forceinline__ void Affine(const KernelArgs& a, int64_t first,
                                       bool gamma_vec, bool beta_vec,
                                       const float (&z)[V], A shift, A center,
                                       A rstd, float (&y)[V]) {
  float g[V], b[V];
  if (a.gamma != nullptr) LoadPack<F32, V>(a.gamma, first / V, gamma_vec, g);
  if (a.beta != nullptr) LoadPack<F32, V>(a.beta, first / V, beta_vec, b);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    A v = ((static_cast<A>(z[j]) - shift) - center) * rstd;
    if (a.gamma != nullptr) v *= static_cast<A>(g[j]);
    if (a.beta != nullptr) v += static_cast<A>(b[j]);
    y[j] = static_cast<float>(v);
  }
}

// Below this variance float32 squares may have underflowed: recompute in
// double (as the CPU kernel does).
constexpr double kTinyVariance = 1e-30;

template <typename In, typename Out, class Row, class Group>
__device__ __forceinline__ void NormalizeRow(const KernelArgs& a, int64_t row,
                                             const RowPointers<In, Out>& ptr,
                                             const Row& src, const Group& group,
                                             bool leader) {
  constexpr int V = kPackOf<In>;
  const double d = static_cast<double>(a.dim);
  const bool layer = a.layer_norm;
  // The shift: z of element 0.
  const float shift = layer ? src.First() : 0.0f;

  // Pass 1 (LayerNorm): Σ (z − shift).
  float center = 0.0f;
  float sum1 = 0.0f;
  if (layer) {
    float acc = 0.0f;
    src.ForEachPack([&](int64_t, const float(&z)[V]) {
#pragma unroll
      for (int j = 0; j < V; ++j) acc += z[j] - shift;
    });
    src.ForTail([&](int64_t, float z) { acc += z - shift; });
    sum1 = group.Sum(acc);
    center = static_cast<float>(static_cast<double>(sum1) / d);
  }

  // Pass 2: Σ (v − c)² and Σ (v − c), v = z − shift, c = center.
  float sq = 0.0f, lin = 0.0f;
  src.ForEachPack([&](int64_t, const float(&z)[V]) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float v = (z[j] - shift) - center;
      sq += v * v;
      lin += v;
    }
  });
  src.ForTail([&](int64_t, float z) {
    const float v = (z - shift) - center;
    sq += v * v;
    lin += v;
  });
  sq = group.Sum(sq);
  lin = layer ? group.Sum(lin) : 0.0f;
  // Σ(v − c)² = Σ(v − m)² + (Σ(v − c))²/D removes the error of c.
  const double lin_d = static_cast<double>(lin);
  double var = (static_cast<double>(sq) - lin_d * lin_d / d) / d;
  if (var < 0.0) var = 0.0;

  bool use_double = !isfinite(sum1) || !isfinite(sq);
  if (!use_double && var < kTinyVariance) {
    // Exactly constant rows are fine in float32 (they give β); anything
    // else this small is not.
    bool varies = false;
    src.ForEachPack([&](int64_t, const float(&z)[V]) {
#pragma unroll
      for (int j = 0; j < V; ++j) varies |= !(z[j] == shift);
    });
    src.ForTail([&](int64_t, float z) { varies |= !(z == shift); });
    use_double = group.Any(varies);
  }

  const bool gamma_vec = a.gamma != nullptr && CanVectorize<float, V>(a.gamma);
  const bool beta_vec = a.beta != nullptr && CanVectorize<float, V>(a.beta);
  float mean_out, rstd_out;
  if (!use_double) {
    const float c = center + static_cast<float>(lin_d / d);
    const float rstd =
        static_cast<float>(1.0 / sqrt(var + static_cast<double>(a.epsilon)));
    src.ForEachPack([&](int64_t pack, const float(&z)[V]) {
      float y[V];
      Affine<V, float>(a, pack * V, gamma_vec, beta_vec, z, shift, c, rstd, y);
      StorePack<Out, V>(ptr.y, pack, ptr.y_vec, y);
      if (ptr.sum != nullptr) StorePack<In, V>(ptr.sum, pack, ptr.sum_vec, z);
    });
    src.ForTail([&](int64_t e, float z) {
      float v = ((z - shift) - c) * rstd;
      if (a.gamma != nullptr) v *= a.gamma[e];
      if (a.beta != nullptr) v += a.beta[e];
      ptr.y[e] = Out::FromFloat(v);
      if (ptr.sum != nullptr) ptr.sum[e] = In::FromFloat(z);
    });
    mean_out = static_cast<float>(static_cast<double>(shift) +
                                  static_cast<double>(center) + lin_d / d);
    rstd_out = rstd;
  } else {
    // Overflowing, underflowing or non-finite rows, in double throughout;
    // NaN and Inf propagate to every output of the row.
    const double s = static_cast<double>(shift);
    double acc = 0.0;
    if (layer) {
      src.ForEachPack([&](int64_t, const float(&z)[V]) {
#pragma unroll
        for (int j = 0; j < V; ++j) acc += static_cast<double>(z[j]) - s;
      });
      src.ForTail([&](int64_t, float z) { acc += static_cast<double>(z) - s; });
    }
    const double mean = layer ? group.Sum(acc) / d : 0.0;
    double m2 = 0.0;
    src.ForEachPack([&](int64_t, const float(&z)[V]) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const double v = (static_cast<double>(z[j]) - s) - mean;
        m2 += v * v;
      }
    });
    src.ForTail([&](int64_t, float z) {
      const double v = (static_cast<double>(z) - s) - mean;
      m2 += v * v;
    });
    m2 = group.Sum(m2);
    const double rstd = 1.0 / sqrt(m2 / d + static_cast<double>(a.epsilon));
    src.ForEachPack([&](int64_t pack, const float(&z)[V]) {
      float y[V];
      Affine<V, double>(a, pack * V, gamma_vec, beta_vec, z, s, mean, rstd, y);
      StorePack<Out, V>(ptr.y, pack, ptr.y_vec, y);
      if (ptr.sum != nullptr) StorePack<In, V>(ptr.sum, pack, ptr.sum_vec, z);
    });
    src.ForTail([&](int64_t e, float z) {
      double v = ((static_cast<double>(z) - s) - mean) * rstd;
      if (a.gamma != nullptr) v *= static_cast<double>(a.gamma[e]);
      if (a.beta != nullptr) v += static_cast<double>(a.beta[e]);
      ptr.y[e] = Out::FromFloat(static_cast<float>(v));
      if (ptr.sum != nullptr) ptr.sum[e] = In::FromFloat(z);
    });
    mean_out = static_cast<float>(s + mean);
    rstd_out = static_cast<float>(rstd);
  }
  if (leader) {
    if (a.mean != nullptr) a.mean[row] = layer ? mean_out : 0.0f;
    if (a.rstd != nullptr) a.rstd[row] = rstd_out;
  }
}

// ---- Kernels, one per mapping ----

// At least 3 blocks per multiprocessor: more rows in flight outweigh the
// few spilled registers of the 16-bit cases (measured on an H200,
// bench/results/cuda_2026-11-25/).
template <typename In, typename Out, int kPacks>
__global__ void __launch_bounds__(kWarpRowsPerBlock * 32, 3)
    WarpPerRowKernel(const KernelArgs a) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock +
                      static_cast<int64_t>(threadIdx.x / 32);
  if (row >= a.rows) return;  // the whole warp leaves together
  const RowPointers<In, Out> ptr(a, row);
  const RegisterRow<In, Out, kPacks> src(ptr, lane, 32);
  NormalizeRow<In, Out>(a, row, ptr, src, WarpGroup{}, lane == 0);
}

template <typename In, typename Out, int kPacks>
__global__ void __launch_bounds__(1024) BlockPerRowKernel(const KernelArgs a) {
  __shared__ float partial_f[32];
  __shared__ double partial_d[32];
  const int64_t row = blockIdx.x;
  const int t = static_cast<int>(threadIdx.x);
  const RowPointers<In, Out> ptr(a, row);
  const RegisterRow<In, Out, kPacks> src(ptr, t, static_cast<int>(blockDim.x));
  NormalizeRow<In, Out>(a, row, ptr, src, BlockGroup{partial_f, partial_d},
                        t == 0);
}

template <typename In, typename Out>
__global__ void __launch_bounds__(kStreamingThreads)
    StreamingKernel(const KernelArgs a) {
  __shared__ float partial_f[32];
  __shared__ double partial_d[32];
  const int64_t row = blockIdx.x;
  const int t = static_cast<int>(threadIdx.x);
  const RowPointers<In, Out> ptr(a, row);
  const StreamingRow<In, Out> src(ptr, t, static_cast<int>(blockDim.x));
  NormalizeRow<In, Out>(a, row, ptr, src, BlockGroup{partial_f, partial_d},
                        t == 0);
}

// The staged mappings (LaunchPlan::staged, launch_plan.h), for rows whose
// input is 16-byte aligned, D a multiple of the pack and no residual; any
// other launch takes the register kernels. Each row group (a warp, or the
// block) loops over rows row0, row0 + stride, … and copies the next row
// into shared memory (cp.async, two buffers) while it normalizes the
// current one there, so a row's loads are in flight during the previous
// row's reductions and stores, and registers hold no row.
template <typename In, typename Out>
__global__ void __launch_bounds__(kWarpRowsPerBlock * 32)
    StagedWarpKernel(const KernelArgs a) {
  using Bits = typename In::Bits;
  constexpr int V = kPackOf<In>;
  extern __shared__ uint4 staged_smem[];
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int warp = static_cast<int>(threadIdx.x / 32);
  auto* buffers = reinterpret_cast<Pack<Bits, V>*>(staged_smem) +
                  warp * kWarpStages * (a.dim / V);
  StagedRows<kWarpStages, Bits, V>(
      a, static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock + warp,
      static_cast<int64_t>(gridDim.x) * kWarpRowsPerBlock, buffers, lane, 32,
      [] { __syncwarp(); },
      [&](int64_t row, const Pack<Bits, V>* buffer) {
        const RowPointers<In, Out> ptr(a, row);
        const SharedRow<In, Out> src{ptr, buffer, lane, 32};
        NormalizeRow<In, Out>(a, row, ptr, src, WarpGroup{}, lane == 0);
      });
}

template <typename In, typename Out>
__global__ void __launch_bounds__(1024) StagedBlockKernel(const KernelArgs a) {
  using Bits = typename In::Bits;
  constexpr int V = kPackOf<In>;
  extern __shared__ uint4 staged_smem[];
  __shared__ float partial_f[32];
  __shared__ double partial_d[32];
  const int t = static_cast<int>(threadIdx.x);
  const int T = static_cast<int>(blockDim.x);
  StagedRows<kBlockStages, Bits, V>(
      a, blockIdx.x, gridDim.x, reinterpret_cast<Pack<Bits, V>*>(staged_smem),
      t, T, [] { __syncthreads(); },
      [&](int64_t row, const Pack<Bits, V>* buffer) {
        const RowPointers<In, Out> ptr(a, row);
        const SharedRow<In, Out> src{ptr, buffer, t, T};
        NormalizeRow<In, Out>(a, row, ptr, src,
                              BlockGroup{partial_f, partial_d}, t == 0);
      });
}

// Blocks of `kernel` (with `smem` bytes of dynamic shared memory and
// `threads` threads) that the current device holds at once, over all its
// multiprocessors; 0 if unknown. Cached per device, kernel and shape.
int ResidentBlocks(const void* kernel, int threads, size_t smem) {
  struct Key {
    int device;
    const void* kernel;
    int threads;
    size_t smem;
  };
  static std::mutex mu;
  static std::vector<std::pair<Key, int>> cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& [k, v] : cache) {
      if (k.device == device && k.kernel == kernel && k.threads == threads &&
          k.smem == smem) {
        return v;
      }
    }
  }
  // The kernel's dynamic shared memory limit goes to the most the device
  // allows beside its static shared memory (never down: another shape may
  // already launch with more).
  int sms = 0, per_sm = 0, optin = 0;
  cudaFuncAttributes attributes;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                             device) != cudaSuccess ||
      cudaFuncGetAttributes(&attributes, kernel) != cudaSuccess ||
      smem + attributes.sharedSizeBytes > static_cast<size_t>(optin) ||
      cudaFuncSetAttribute(
          kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
          optin - static_cast<int>(attributes.sharedSizeBytes)) !=
          cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads,
                                                    smem) != cudaSuccess) {
    cudaGetLastError();  // an answer, not a fault: the register path serves
    return 0;
  }
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() < 256)
    cache.push_back({{device, kernel, threads, smem}, sms * per_sm});
  return sms * per_sm;
}

// Launches the staged mapping for `plan` if the rows allow it and the device
// holds at least one block; false to use the register mapping instead.
template <typename In, typename Out>
bool LaunchStaged(const KernelArgs& a, const LaunchPlan& plan,
                  cudaStream_t stream, cudaError_t* error) {
  using Bits = typename In::Bits;
  constexpr int V = kPackOf<In>;
  // plan.staged already holds D to a multiple of the pack and the mapping
  // to a warp or a block with the row in hand.
  if (!plan.staged || a.residual != nullptr ||
      !CanVectorize<Bits, V>(a.input)) {
    return false;
  }
  const size_t row_bytes = static_cast<size_t>(a.dim) * sizeof(Bits);
  const bool warp = plan.mapping == RowMapping::kWarpPerRow;
  const int threads = plan.threads_per_block();
  const size_t smem = row_bytes * static_cast<size_t>(plan.rows_per_block) *
                      static_cast<size_t>(warp ? kWarpStages : kBlockStages);
  const void* kernel =
      warp ? reinterpret_cast<const void*>(&StagedWarpKernel<In, Out>)
           : reinterpret_cast<const void*>(&StagedBlockKernel<In, Out>);
  const int resident = ResidentBlocks(kernel, threads, smem);
  if (resident <= 0) return false;
  const int64_t blocks = std::min<int64_t>(GridBlocks(plan, a.rows), resident);
  const dim3 grid(static_cast<unsigned>(blocks));
  const dim3 block(static_cast<unsigned>(threads));
  if (warp) {
    StagedWarpKernel<In, Out><<<grid, block, smem, stream>>>(a);
  } else {
    StagedBlockKernel<In, Out><<<grid, block, smem, stream>>>(a);
  }
  *error = cudaGetLastError();
  return true;
}

// ---- Dispatch ----

template <typename In, typename Out>
cudaError_t LaunchTyped(const KernelArgs& a, const LaunchPlan& plan,
                        cudaStream_t stream) {
  constexpr int V = kPackOf<In>;
  if (plan.pack_elements != V) return cudaErrorInvalidValue;
  cudaError_t staged_error = cudaSuccess;
  if (LaunchStaged<In, Out>(a, plan, stream, &staged_error)) {
    return staged_error;
  }
  const dim3 grid(static_cast<unsigned>(GridBlocks(plan, a.rows)));
  const dim3 block(static_cast<unsigned>(plan.threads_per_block()));
  switch (plan.mapping) {
    case RowMapping::kWarpPerRow:
      if (plan.rows_per_block != kWarpRowsPerBlock)
        return cudaErrorInvalidValue;
      switch (plan.packs_per_thread) {
        case 1:
          WarpPerRowKernel<In, Out, 1><<<grid, block, 0, stream>>>(a);
          break;
        case 2:
          WarpPerRowKernel<In, Out, 2><<<grid, block, 0, stream>>>(a);
          break;
        case 4:
          WarpPerRowKernel<In, Out, 4><<<grid, block, 0, stream>>>(a);
          break;
        case 8:
          if constexpr (V == 4) {
            WarpPerRowKernel<In, Out, 8><<<grid, block, 0, stream>>>(a);
            break;
          }
          return cudaErrorInvalidValue;
        default:
          return cudaErrorInvalidValue;
      }
      break;
    case RowMapping::kBlockPerRow:
      if (plan.packs_per_thread != 16 / V) return cudaErrorInvalidValue;
      BlockPerRowKernel<In, Out, 16 / V><<<grid, block, 0, stream>>>(a);
      break;
    case RowMapping::kBlockStreaming:
      StreamingKernel<In, Out><<<grid, block, 0, stream>>>(a);
      break;
  }
  return cudaGetLastError();
}

template <typename In>
cudaError_t LaunchForInput(const KernelArgs& a, const LaunchPlan& plan,
                           cudaStream_t stream) {
  switch (a.output_dtype) {
    case DType::kFloat32:
      return LaunchTyped<In, F32>(a, plan, stream);
    case DType::kFloat16:
      return LaunchTyped<In, F16>(a, plan, stream);
    case DType::kBFloat16:
      return LaunchTyped<In, BF16>(a, plan, stream);
    case DType::kInt8:
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace

int LaunchNormalize(const KernelArgs& args, const LaunchPlan& plan,
                    CUstream_st* stream) {
  switch (args.input_dtype) {
    case DType::kFloat32:
      return LaunchForInput<F32>(args, plan, stream);
    case DType::kFloat16:
      return LaunchForInput<F16>(args, plan, stream);
    case DType::kBFloat16:
      return LaunchForInput<BF16>(args, plan, stream);
    case DType::kInt8:
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace normserve::cuda::internal
