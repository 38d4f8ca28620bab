// The CUDA row kernels: the row algorithm (internal/normalize_row.h) run
// by a warp or a block per row, with the row in registers, in global memory
// or staged through shared memory; the reduction groups; the launch.
// LayerNorm and RMSNorm are separate instantiations inside each kernel (a
// uniform branch on KernelArgs::layer_norm), so that RMSNorm carries no
// LayerNorm arithmetic; the staged kernels, and the register kernels on
// aligned launches, further split off the common launches (RowVariant,
// normalize_row.h), whose loops test no optional pointer.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cuda/internal/kernel_launch.h"
#include "kernels/cuda/internal/normalize_row.h"
#include "kernels/cuda/internal/staged_rows.h"
#include "kernels/cuda/launch_plan.h"

namespace normserve::cuda::internal {
namespace {

// ---- Reductions: identical result in every thread of the group ----

// Butterfly over a group of kLanes lanes (`mask`, aligned to kLanes): lane
// i adds lane i^o's value, and lane i^o adds lane i's; as float addition is
// commutative both get the same bits, so after the last step every lane of
// the group holds the same sum.
template <int kLanes, typename A>
__device__ __forceinline__ A WarpSum(A v, unsigned mask) {
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) v += __shfl_xor_sync(mask, v, o);
  return v;
}

// The lanes of the kLanes-lane group that holds lane `lane`.
template <int kLanes>
__device__ __forceinline__ unsigned GroupMask(int lane) {
  if constexpr (kLanes == 32) {
    return 0xffffffffu;
  } else {
    return ((1u << kLanes) - 1u) << (lane / kLanes * kLanes);
  }
}

// kLanes lanes of a warp serve the row: the whole warp, or half of it (a
// staged warp mapping). Every exchange names the group's lanes only, so
// the two rows of a warp may branch apart (one redone in double) or end
// apart.
template <int kLanes>
struct WarpGroup {
  unsigned mask;  // GroupMask

  template <typename A>
  __device__ __forceinline__ A Sum(A v) const {
    return WarpSum<kLanes>(v, mask);
  }
  // Two sums at once, in place.
  __device__ __forceinline__ void Sum2(float* a, float* b) const {
    *a = WarpSum<kLanes>(*a, mask);
    *b = WarpSum<kLanes>(*b, mask);
  }
  __device__ __forceinline__ void Sum2Again(float* a, float* b) const {
    Sum2(a, b);
  }
  __device__ __forceinline__ bool Any(bool b) const {
    return __any_sync(mask, b) != 0;
  }
};

// Shared memory of a BlockGroup: the warps' partial sums, a separate array
// for each kind of sum a row takes.
struct BlockScratch {
  float sum[32];   // Sum<float>: up to 32 warps
  float sum2[64];  // Sum2: two sums of up to 32 warps
  double d[32];    // Sum<double>
};

// The block serves the row: warp sums, then every warp sums the warps'
// partial sums in warp order (lanes beyond the warp count add zero).
//
// A float Sum and a Sum2 write their partial sums without a barrier first:
// a row takes at most one of each, each into its own array, and rows of
// one block are barriers apart (StagedRows; the register kernels serve one
// row per block), so the readers of the previous row's partial sums are
// done. The rare second Sum2 of a row (Sum2Again, LayerNorm's second pass)
// and the double sums (a row redone in double, twice in a row) wait for
// the earlier readers.
struct BlockGroup {
  BlockScratch* scratch;  // shared

  template <typename A>
  __device__ __forceinline__ A Sum(A v) const {
    static_assert(std::is_same_v<A, float> || std::is_same_v<A, double>);
    const int lane = threadIdx.x % 32;
    const int warps = static_cast<int>(blockDim.x / 32);
    v = WarpSum<32>(v, 0xffffffffu);
    A* partial;
    if constexpr (std::is_same_v<A, double>) {
      __syncthreads();  // earlier readers of `partial` are done
      partial = scratch->d;
    } else {
      partial = scratch->sum;
    }
    if (lane == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    return WarpSum<32>(lane < warps ? partial[lane] : A(0), 0xffffffffu);
  }
  // Two sums through one barrier, each as Sum would give it.
  __device__ __forceinline__ void Sum2(float* a, float* b) const {
    const int lane = threadIdx.x % 32;
    const int warps = static_cast<int>(blockDim.x / 32);
    float* partial = scratch->sum2;
    const float wa = WarpSum<32>(*a, 0xffffffffu);
    const float wb = WarpSum<32>(*b, 0xffffffffu);
    if (lane == 0) {
      partial[threadIdx.x / 32] = wa;
      partial[32 + threadIdx.x / 32] = wb;
    }
    __syncthreads();
    *a = WarpSum<32>(lane < warps ? partial[lane] : 0.0f, 0xffffffffu);
    *b = WarpSum<32>(lane < warps ? partial[32 + lane] : 0.0f, 0xffffffffu);
  }
  __device__ __forceinline__ void Sum2Again(float* a, float* b) const {
    __syncthreads();  // the readers of Sum2's partial sums are done
    Sum2(a, b);
  }
  __device__ __forceinline__ bool Any(bool b) const {
    return __syncthreads_or(b ? 1 : 0) != 0;
  }
};

// Asynchronous 16-byte copies of the row at `src` (global, `packs` packs)
// into shared memory at address `dst`: thread t of T copies packs t,
// t + T, … (at most kPacks, the plan's packs per thread), in a loop the
// compiler unrolls; complete at the matching CpAsyncWait.
template <int kPacks, typename Bits, int V>
__device__ __forceinline__ void StageRow(const Pack<Bits, V>* src,
                                         Pack<Bits, V>* dst, int packs, int t,
                                         int T) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // The shared address once, not per pack.
  const auto shared = static_cast<unsigned>(__cvta_generic_to_shared(dst));
#endif
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int p = t + k * T;
    if (p < packs) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      asm volatile(
          "cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
              shared + static_cast<unsigned>(p * sizeof(Pack<Bits, V>))),
          "l"(src + p)
          : "memory");
#else
      dst[p] = src[p];
#endif
    }
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

// CpAsyncWait<n> for a runtime n (a row group's buffers − 1; uniform, so
// one branch the whole group takes).
__device__ __forceinline__ void CpAsyncWaitFor(int n) {
  static_assert(kMaxStagedBuffers == 4, "one case per pending count");
  switch (n) {
    case 0:
      CpAsyncWait<0>();
      break;
    case 1:
      CpAsyncWait<1>();
      break;
    case 2:
      CpAsyncWait<2>();
      break;
    default:
      CpAsyncWait<3>();
      break;
  }
}

// The copies of StagedRows (internal/staged_rows.h) on the device.
struct CpAsyncCopier {
  template <int kPacks, typename Bits, int V>
  __device__ __forceinline__ void Copy(const Pack<Bits, V>* src,
                                       Pack<Bits, V>* dst, int packs, int t,
                                       int T) const {
    StageRow<kPacks>(src, dst, packs, t, T);
  }
  __device__ __forceinline__ void Commit() const { CpAsyncCommit(); }
  __device__ __forceinline__ void Wait(int pending) const {
    CpAsyncWaitFor(pending);
  }
};

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
  NormalizeRegisterRow<In, Out, kPacks>(a, row, lane, 32,
                                        WarpGroup<32>{0xffffffffu});
}

// The register kernel of a staged warp mapping (kSubWarpThreads threads per
// row), for launches the staged kernel cannot take (unaligned rows): its
// threads own more packs than registers hold, so they read the row from
// global memory on every pass, as the streaming mapping does.
template <typename In, typename Out>
__global__ void __launch_bounds__(kWarpRowsPerBlock* kSubWarpThreads)
    SubWarpStreamingKernel(const KernelArgs a) {
  const int t = static_cast<int>(threadIdx.x % kSubWarpThreads);
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock +
                      static_cast<int64_t>(threadIdx.x / kSubWarpThreads);
  if (row >= a.rows) return;  // the whole group leaves together
  NormalizeStreamingRow<In, Out>(
      a, row, t, kSubWarpThreads,
      WarpGroup<kSubWarpThreads>{
          GroupMask<kSubWarpThreads>(static_cast<int>(threadIdx.x % 32))});
}

template <typename In, typename Out, int kPacks>
__global__ void __launch_bounds__(kBlockMaxThreads)
    BlockPerRowKernel(const KernelArgs a) {
  __shared__ BlockScratch scratch;
  const int64_t row = blockIdx.x;
  NormalizeRegisterRow<In, Out, kPacks>(a, row, static_cast<int>(threadIdx.x),
                                        static_cast<int>(blockDim.x),
                                        BlockGroup{&scratch});
}

template <typename In, typename Out>
__global__ void __launch_bounds__(kStreamingThreads)
    StreamingKernel(const KernelArgs a) {
  __shared__ BlockScratch scratch;
  NormalizeStreamingRow<In, Out>(a, blockIdx.x, static_cast<int>(threadIdx.x),
                                 static_cast<int>(blockDim.x),
                                 BlockGroup{&scratch});
}

// The staged mappings (LaunchPlan::staged, launch_plan.h), for launches
// whose rows are all aligned for 16-byte accesses (D a multiple of the
// pack; input, residual, output, sum, γ and β aligned) and whose buffers
// fit in shared memory; any other launch takes the register kernels. Each
// row group (half a warp, or the block) loops over rows row0, row0 +
// stride, … and copies the next row (and its residual) into shared memory
// (cp.async, StagedTuning's buffers) while it normalizes the current one there,
// so a row's loads are in flight during the previous row's reductions and
// stores, and registers hold no row. Each thread reads at most kPacks packs
// of a row (the plan's packs per thread), in a loop the compiler unrolls.
// The warp kernel serves two rows per warp (kSubWarpThreads threads each),
// so that what a thread does once per row is done for two rows at once; it
// is held to 64 registers (8 blocks of 8 rows per multiprocessor, the
// rows and registers of the one-row-per-warp kernel measured in
// bench/results/cuda_2026-11-25/). One kernel per kind and variant, chosen
// on the host, as the block kernel below: compiled as one kernel that
// branched on them, the paths shared one allocation of those 64 registers
// and spilled (ptxas -v, sm_90: up to 132 bytes of spill stores per
// thread, bfloat16 at D = 768 and 1024 100 and 132, rows that ran at
// 0.78-0.82 of copy on an H200). Alone, LayerNorm with γ and β and RMSNorm
// with γ spill nothing
// (bench/results/cuda_staged_warp_spills_2026-11-27.md).
template <typename In, typename Out, int kPacks, bool kLayer, RowVariant kV>
__global__ void __launch_bounds__(kWarpRowsPerBlock* kSubWarpThreads, 8)
    StagedWarpKernel(const KernelArgs a) {
  using Bits = typename In::Bits;
  constexpr int V = kPackOf<In>;
  constexpr int T = kSubWarpThreads;
  extern __shared__ uint4 staged_smem[];
  const int t = static_cast<int>(threadIdx.x % T);
  const int group = static_cast<int>(threadIdx.x / T);  // the block's row
  const unsigned mask = GroupMask<T>(static_cast<int>(threadIdx.x % 32));
  auto* buffers = StagedGroupBuffers(
      reinterpret_cast<Pack<Bits, V>*>(staged_smem), a, V, group);
  CpAsyncCopier copier;
  StagedRows<kPacks, In, kV>(
      a, blockIdx.x * kWarpRowsPerBlock + group, gridDim.x * kWarpRowsPerBlock,
      buffers, t, T, copier, [mask] { __syncwarp(mask); },
      [&](int64_t row, const Pack<Bits, V>* buffer) {
        const RowPointers<In, Out, true> ptr(a, row);
        const SharedRow<In, Out, kPacks> src{ptr, buffer, t, T};
        NormalizeRow<kLayer>(a, row, ptr, src, WarpGroup<T>{mask}, t == 0,
                             LoadedWeights<V, kV>{a, true, true});
      });
}

// Sets *kernel to the StagedWarpKernel of kPacks and of the kind and
// variant ForKindAndVariant passes it, on the host (a functor, as
// StagedBlockKernelOf below).
template <typename In, typename Out, int kPacks>
struct StagedWarpKernelOf {
  const void** kernel;
  template <typename Layer, typename Variant>
  NORMSERVE_HD void operator()(Layer, Variant) const {
    *kernel = reinterpret_cast<const void*>(
        &StagedWarpKernel<In, Out, kPacks, Layer::value, Variant::value>);
  }
};

// γ and β are held in registers across the block's rows (HeldWeights):
// at these D they would not stay in L1, and reading them again from L2 for
// every row held the kernel below copy speed (holding them measured
// 1.06–1.31× faster on an H200 at D = 8192 and 16384, LayerNorm
// 1.19–1.26×; bench/results/cuda_2026-11-26/).
//
// One kernel per kind and variant, chosen on the host (ForKindAndVariant in
// LaunchStaged): compiled as one kernel that branched on them, the four
// paths shared one register allocation and, beside 64 held weights per
// thread, spilled (ptxas -v, sm_90: 1636-1716 bytes of spill stores per
// thread from float16 to a 16-bit output, 52-176 for the other pairs).
// Alone, LayerNorm with γ and β and RMSNorm with γ spill nothing, and
// RMSNorm with γ takes 64-76 registers
// (bench/results/cuda_staged_block_spills_2026-11-27.md).
//
// kHeld false reads γ and β again for each row instead
// (StagedTuning::Weights::kLoaded), for the two plain variants only, and
// is held to 64 registers (two blocks of 512 threads, or eight of 128, per
// multiprocessor): the point of reading them per row is the blocks that
// the registers then hold.
template <typename In, typename Out, bool kLayer, RowVariant kV,
          bool kHeld = true>
__global__ void __launch_bounds__(kBlockMaxThreads, kHeld ? 1 : 2)
    StagedBlockKernel(const KernelArgs a) {
  using Bits = typename In::Bits;
  constexpr int V = kPackOf<In>;
  constexpr int kPacks = kMaxFloatsPerThread / V;
  extern __shared__ uint4 staged_smem[];
  __shared__ BlockScratch scratch;
  const int t = static_cast<int>(threadIdx.x);
  const int T = static_cast<int>(blockDim.x);
  auto* buffers = StagedGroupBuffers(
      reinterpret_cast<Pack<Bits, V>*>(staged_smem), a, V, 0);
  CpAsyncCopier copier;
  auto rows = [&](const auto& weights) {
    StagedRows<kPacks, In, kV>(
        a, blockIdx.x, gridDim.x, buffers, t, T, copier,
        [] { __syncthreads(); },
        [&](int64_t row, const Pack<Bits, V>* buffer) {
          const RowPointers<In, Out, true> ptr(a, row);
          const SharedRow<In, Out, kPacks> src{ptr, buffer, t, T};
          NormalizeRow<kLayer>(a, row, ptr, src, BlockGroup{&scratch}, t == 0,
                               weights);
        });
  };
  if constexpr (kHeld) {
    rows(HeldWeights<kPacks, V, kV>(a, t, T));
  } else {
    static_assert(kV != RowVariant::kAny, "held only");
    rows(LoadedWeights<V, kV>{a, true, true});
  }
}

// Sets *kernel to the StagedBlockKernel of the kind and variant
// ForKindAndVariant passes it, on the host, with γ and β held unless
// `loaded` and the variant is a plain one; *held says which. A functor
// rather than a lambda: ForKindAndVariant is a host and device function,
// and may not call a host lambda.
template <typename In, typename Out>
struct StagedBlockKernelOf {
  const void** kernel;
  bool loaded;
  bool* held;
  template <typename Layer, typename Variant>
  NORMSERVE_HD void operator()(Layer, Variant) const {
    *held = true;
    if constexpr (Variant::value != RowVariant::kAny) {
      if (loaded) {
        *held = false;
        *kernel = reinterpret_cast<const void*>(
            &StagedBlockKernel<In, Out, Layer::value, Variant::value, false>);
        return;
      }
    }
    *kernel = reinterpret_cast<const void*>(
        &StagedBlockKernel<In, Out, Layer::value, Variant::value>);
  }
};

// The staged streaming mapping: rows too long for the block mapping that
// fit in shared memory (16-bit rows up to about 115K elements, float32 up to
// about 57K on sm_90). The block copies its row there once and makes the
// row's passes over that copy, not over global memory: thread t reads packs
// t, t + T, … as StreamingKernel's thread t does, so the bits are
// StreamingKernel's. One buffer (the row is most of the shared memory) and
// one block per multiprocessor (1024 threads at 64 registers fill the
// register file): a block does not prefetch its next row, so its
// multiprocessor reads nothing while it reduces. Expected between
// StreamingKernel's 0.52–0.66 of copy (H100) and the staged block kernel's
// 0.93; not yet measured.
template <typename In, typename Out>
__global__ void __launch_bounds__(kStreamingThreads)
    StagedStreamingKernel(const KernelArgs a) {
  using Bits = typename In::Bits;
  constexpr int V = kPackOf<In>;
  extern __shared__ uint4 staged_smem[];
  __shared__ BlockScratch scratch;
  const int t = static_cast<int>(threadIdx.x);
  const int T = static_cast<int>(blockDim.x);
  auto* buffers = StagedGroupBuffers(
      reinterpret_cast<Pack<Bits, V>*>(staged_smem), a, V, 0);
  CpAsyncCopier copier;
  ForKindAndVariant(a, true, [&](auto layer, auto variant) {
    constexpr RowVariant kV = decltype(variant)::value;
    StagedRows<kStreamingStagedPacks, In, kV>(
        a, blockIdx.x, gridDim.x, buffers, t, T, copier,
        [] { __syncthreads(); },
        [&](int64_t row, const Pack<Bits, V>* buffer) {
          const RowPointers<In, Out, true> ptr(a, row);
          const SharedRow<In, Out, kLoopedPacks> src{ptr, buffer, t, T};
          NormalizeRow<decltype(layer)::value>(
              a, row, ptr, src, BlockGroup{&scratch}, t == 0,
              LoadedWeights<V, kV>{a, true, true});
        });
  });
}

// How a staged kernel launches with `smem` bytes of dynamic shared memory
// and `threads` threads on the current device.
struct StagedLimits {
  int resident = 0;          // blocks held at once over all SMs; 0: none
  int max_dynamic_smem = 0;  // the kernel's dynamic shared memory limit
  size_t static_smem = 0;    // the kernel's static shared memory
};

// Cached per device, kernel and shape (a shape that needs more shared
// memory than the device has included), so that a launch asks once; a
// failing CUDA call is not cached.
StagedLimits StagedLaunchLimits(const void* kernel, int threads, size_t smem) {
  struct Key {
    int device;
    const void* kernel;
    int threads;
    size_t smem;
  };
  static std::mutex mu;
  static std::vector<std::pair<Key, StagedLimits>> cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
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
  StagedLimits limits;
  int sms = 0, per_sm = 0, optin = 0;
  cudaFuncAttributes attributes;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                             device) != cudaSuccess ||
      cudaFuncGetAttributes(&attributes, kernel) != cudaSuccess) {
    cudaGetLastError();  // not cached: the register path serves this launch
    return {};
  }
  limits.static_smem = attributes.sharedSizeBytes;
  if (smem + attributes.sharedSizeBytes <= static_cast<size_t>(optin)) {
    limits.max_dynamic_smem =
        optin - static_cast<int>(attributes.sharedSizeBytes);
    if (cudaFuncSetAttribute(kernel,
                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                             limits.max_dynamic_smem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads,
                                                      smem) != cudaSuccess) {
      cudaGetLastError();
      return {};
    }
    limits.resident = sms * per_sm;
  }
  // Held: the device holds these blocks, or (too much shared memory) none.
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() < 256)
    cache.push_back({{device, kernel, threads, smem}, limits});
  return limits;
}

// Launches the staged mapping for `plan` if the rows allow it and the device
// holds at least one block; false to use the register mapping instead.
template <typename In, typename Out>
bool LaunchStaged(const KernelArgs& a, const LaunchPlan& plan,
                  const StagedTuning& tuning, cudaStream_t stream,
                  cudaError_t* error, LaunchReport* report) {
  constexpr int V = kPackOf<In>;
  // The plan's mapping has a staged kernel for these rows, and it pays for
  // this launch (StagesLaunch, launch_plan.h). Row numbers are 32-bit
  // (StagedRows).
  if (!StagesLaunch(plan, tuning, a.dim, a.residual != nullptr) ||
      a.rows > kMaxStagedRows || !AlignedLaunch<In, Out>(a)) {
    return false;
  }
  const bool warp = plan.mapping == RowMapping::kWarpPerRow;
  const bool streaming = plan.mapping == RowMapping::kBlockStreaming;
  const int threads = plan.threads_per_block();
  KernelArgs staged = a;
  staged.stages = RowBuffers(plan, tuning, a.residual != nullptr);
  // Dynamic shared memory of the launch: every row group's buffers.
  auto smem_of = [&](const KernelArgs& k) {
    return StagedSharedBytes(k, V, plan.rows_per_block);
  };
  const void* kernel = nullptr;
  bool weights_held = false;  // a block kernel's HeldWeights
  if (warp) {
    // Float32 rows are staged only under the block mapping
    // (kStagedMinFloat32Dim): no warp kernels for them.
    if constexpr (V != 4) {
      if (plan.threads_per_row == kSubWarpThreads &&
          plan.rows_per_block == kWarpRowsPerBlock) {
        WithStagedWarpPacks(plan.packs_per_thread, [&](auto packs) {
          ForKindAndVariant(
              a, true,
              StagedWarpKernelOf<In, Out, decltype(packs)::value>{&kernel});
        });
      }
    }
  } else if (streaming) {
    // plan.staged bounds the row to what kStreamingStagedPacks covers.
    kernel = reinterpret_cast<const void*>(&StagedStreamingKernel<In, Out>);
  } else {
    ForKindAndVariant(
        a, true,
        StagedBlockKernelOf<In, Out>{
            &kernel, tuning.weights == StagedTuning::Weights::kLoaded,
            &weights_held});
  }
  if (kernel == nullptr) return false;
  size_t smem = smem_of(staged);
  StagedLimits limits = StagedLaunchLimits(kernel, threads, smem);
  using Residual = StagedTuning::Residual;
  if (staged.residual != nullptr &&
      (tuning.residual == Residual::kFromMemory || limits.resident <= 0)) {
    // Where the tuning says so, or where x and its residual do not fit in
    // shared memory twice (float32 add & norm from D ≈ 14500), stage x
    // alone and read the residual from global memory. The register kernel
    // otherwise taken holds one row per multiprocessor and prefetches none:
    // at D = 16384 x alone measured 0.75 of copy against its 0.69 (H100,
    // 2026-11-26). Where the two fit, the residual stays beside x even
    // where x alone would hold more blocks (StagedTuning::Residual).
    staged.stage_residual = false;
    smem = smem_of(staged);
    limits = StagedLaunchLimits(kernel, threads, smem);
  }
  if (limits.resident <= 0) return false;
  // The limit is set again on every launch beyond the default, 48 KiB of
  // static and dynamic shared memory together: a device reset (the CUDA
  // backend's recovery from a sticky error) drops function attributes, and
  // the cache outlives it. Setting it to the device's maximum is
  // idempotent, so concurrent launches never see it lowered.
  if (smem + limits.static_smem > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           limits.max_dynamic_smem) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const int64_t blocks =
      StagedGridBlocks(plan, a.rows, limits.resident, tuning);
  void* args[] = {&staged};
  const cudaError_t launched = cudaLaunchKernel(
      kernel, dim3(static_cast<unsigned>(blocks)),
      dim3(static_cast<unsigned>(threads)), args, smem, stream);
  const cudaError_t last = cudaGetLastError();  // read and cleared
  *error = launched != cudaSuccess ? launched : last;
  report->staged = true;
  report->stages = staged.stages;
  report->residual_staged = staged.residual != nullptr && staged.stage_residual;
  report->weights_held = weights_held;
  report->blocks = blocks;
  report->shared_bytes = smem;
  return true;
}

// ---- Dispatch ----

template <typename In, typename Out>
cudaError_t LaunchTyped(const KernelArgs& a, const LaunchPlan& plan,
                        const StagedTuning& tuning, cudaStream_t stream,
                        LaunchReport* report) {
  constexpr int V = kPackOf<In>;
  if (plan.pack_elements != V) return cudaErrorInvalidValue;
  cudaError_t staged_error = cudaSuccess;
  if (LaunchStaged<In, Out>(a, plan, tuning, stream, &staged_error, report)) {
    return staged_error;
  }
  const dim3 grid(static_cast<unsigned>(GridBlocks(plan, a.rows)));
  *report = LaunchReport{};
  report->blocks = grid.x;
  const dim3 block(static_cast<unsigned>(plan.threads_per_block()));
  switch (plan.mapping) {
    case RowMapping::kWarpPerRow:
      if (plan.rows_per_block != kWarpRowsPerBlock)
        return cudaErrorInvalidValue;
      if (plan.threads_per_row == kSubWarpThreads) {
        // A staged warp mapping's rows that could not be staged (16-bit
        // inputs only: float32 rows are never staged on a warp).
        if constexpr (V == 4) {
          return cudaErrorInvalidValue;
        } else {
          SubWarpStreamingKernel<In, Out><<<grid, block, 0, stream>>>(a);
          break;
        }
      }
      if (plan.threads_per_row != 32) return cudaErrorInvalidValue;
      // At most kMaxFloatsPerThread floats: 8 packs for float32 only.
      if (plan.packs_per_thread * V > kMaxFloatsPerThread ||
          !WithPacksPerThread(plan.packs_per_thread, [&](auto packs) {
            if constexpr (decltype(packs)::value * V <= kMaxFloatsPerThread) {
              WarpPerRowKernel<In, Out, decltype(packs)::value>
                  <<<grid, block, 0, stream>>>(a);
            }
          })) {
        return cudaErrorInvalidValue;
      }
      break;
    case RowMapping::kBlockPerRow:
      if (plan.packs_per_thread != kMaxFloatsPerThread / V ||
          plan.threads_per_row > kBlockMaxThreads) {
        return cudaErrorInvalidValue;
      }
      BlockPerRowKernel<In, Out, kMaxFloatsPerThread / V>
          <<<grid, block, 0, stream>>>(a);
      break;
    case RowMapping::kBlockStreaming:
      StreamingKernel<In, Out><<<grid, block, 0, stream>>>(a);
      break;
  }
  return cudaGetLastError();
}

template <typename In>
cudaError_t LaunchForInput(const KernelArgs& a, const LaunchPlan& plan,
                           const StagedTuning& tuning, cudaStream_t stream,
                           LaunchReport* report) {
  switch (a.output_dtype) {
    case DType::kFloat32:
      return LaunchTyped<In, F32>(a, plan, tuning, stream, report);
    case DType::kFloat16:
      return LaunchTyped<In, F16>(a, plan, tuning, stream, report);
    case DType::kBFloat16:
      return LaunchTyped<In, BF16>(a, plan, tuning, stream, report);
    case DType::kInt8:
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace

int LaunchNormalize(const KernelArgs& args, const LaunchPlan& plan,
                    CUstream_st* stream, const StagedTuning& tuning,
                    LaunchReport* report) {
  if (!ValidStagedTuning(tuning)) return cudaErrorInvalidValue;
  LaunchReport ignored;
  if (report == nullptr) report = &ignored;
  switch (args.input_dtype) {
    case DType::kFloat32:
      return LaunchForInput<F32>(args, plan, tuning, stream, report);
    case DType::kFloat16:
      return LaunchForInput<F16>(args, plan, tuning, stream, report);
    case DType::kBFloat16:
      return LaunchForInput<BF16>(args, plan, tuning, stream, report);
    case DType::kInt8:
      break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace normserve::cuda::internal
