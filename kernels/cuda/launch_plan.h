// How the CUDA kernels map rows onto the GPU: a pure function of D and the
// input dtype, kept apart from the kernels so that it compiles and is tested
// without CUDA.
//
// What it decides
//   A row of D elements is cut into packs of `pack_elements` consecutive
//   elements (16 bytes of the input dtype: 4 float32 or 8 FLOAT16/BFLOAT16)
//   plus a tail of D mod pack_elements single elements. Thread t of the
//   threads_per_row threads serving a row owns packs t, t + T, t + 2T, …
//   (T = threads_per_row) and tail element t, and accumulates them in that
//   order; the per-thread sums are then combined by a fixed butterfly within
//   each warp (or half-warp, for a row of 16 threads) and, for a block per
//   row, a fixed sum over the warps. That
//   order is the reduction order of the row, and it depends on D and the
//   input dtype only: not on the batch, the row's position or the
//   alignment of any buffer. (Whether a pack is fetched with one 16-byte
//   load or element by element depends on alignment, but the values and the
//   order of arithmetic are the same either way.)
//
// The three mappings
//   kWarpPerRow    D up to 1024 (+ a tail): one warp per row, several rows
//                  per block, the row held in registers (up to 32 floats
//                  per lane); no shared memory, no block barrier. Staged
//                  rows (below) take half a warp each instead
//                  (kSubWarpThreads), up to 8 packs per thread: the work
//                  done once per row and thread (reductions, statistics,
//                  staging the next row) was a third of a 16-bit row's
//                  instructions at D = 768 with a warp per row, and now
//                  serves two rows per instruction.
//   kBlockPerRow   D up to 16384 (+ a tail): one block of 64–512 threads
//                  per row (the smallest that holds the row at 32 floats per
//                  thread, as the warp mapping), the row in registers, warp
//                  partial sums combined through shared memory.
//   kBlockStreaming larger D: one block of 1024 threads per row and two
//                  passes over the row in global memory (the sums, then
//                  the output; a third for the rare LayerNorm row whose
//                  shift is far from its mean); the re-read is served
//                  mostly by L2. Staged
//                  (below), the block copies the whole row into shared
//                  memory once instead and makes its passes there.
//
// Staging
//   Instead of loading its row into registers, a row group (the warp or
//   half-warp, or the block) may loop over rows and copy the next one into
//   shared memory (cp.async, two or three buffers: StagedTuning) while it
//   normalizes the current one there. The threads, the packs each thread owns
//   and the order of every sum are the same, so are the bits. Under the block
//   mapping each thread also holds the γ and β of its packs in registers across
//   the rows. `staged` says where that pays, as measured on an H200
//   (bench/results/cuda_2026-11-25/ and cuda_2026-11-26/): for 16-bit inputs
//   (the register row takes 2 float registers per input's 2 bytes, so fewer
//   rows fit in flight) and for float32 rows of 4096 elements or more (few rows
//   per multiprocessor, whose loads would otherwise wait for the previous row's
//   reductions, and γ and β that no longer stay in L1); of these, a launch
//   of rows of 4096 without a residual takes the register kernel, which has
//   since measured as fast (StagesLaunch). Under kBlockStreaming
//   every row of whole packs is `staged`: one buffer, the whole row, read once
//   from memory instead of three times (0.52–0.66 of copy on an H100), where it
//   fits in shared memory.
//   Staging also needs D a multiple of the pack; at launch, aligned input,
//   residual, output, sum, γ and β, and room in shared memory for the
//   buffers. The residual is staged beside x where that fits; else the
//   rows read it from global memory. Otherwise the
//   register kernel runs, with the same threads per row; for a staged warp
//   mapping, whose threads own more packs than registers hold, it reads the
//   row from global memory on every pass (as kBlockStreaming).
//
// Thread-safe (pure); never fails for dim > 0.
#ifndef NORMSERVE_KERNELS_CUDA_LAUNCH_PLAN_H_
#define NORMSERVE_KERNELS_CUDA_LAUNCH_PLAN_H_

#include <cstdint>
#include <type_traits>

#include "kernels/dtype.h"

namespace normserve::cuda {

enum class RowMapping { kWarpPerRow, kBlockPerRow, kBlockStreaming };

struct LaunchPlan {
  RowMapping mapping = RowMapping::kWarpPerRow;
  // Elements per 16-byte pack of the input dtype (4 or 8).
  int pack_elements = 4;
  // Threads that share one row (32 for a warp, else the block size).
  int threads_per_row = 32;
  // Packs each thread keeps in registers (1, 2, 4 or 8; a staged warp
  // mapping's thread reads 1, 2, 4, 6 or 8 from shared memory); 0 for
  // kBlockStreaming, where a thread loops over its packs in memory.
  int packs_per_thread = 1;
  // Rows one block serves (kWarpRowsPerBlock for kWarpPerRow, else 1).
  int rows_per_block = 1;
  // Rows staged through shared memory where the input allows (above).
  bool staged = false;
  int threads_per_block() const { return threads_per_row * rows_per_block; }
};

// Smallest float32 D that may be staged, and the largest whose launches
// without a residual are not (StagesLaunch).
inline constexpr int64_t kStagedMinFloat32Dim = 4096;
inline constexpr int64_t kRegisterMaxFloat32Dim = 4096;
// Largest D (without its tail) kept in registers by a warp, and by a block.
inline constexpr int64_t kWarpMaxPackedDim = 1024;
inline constexpr int64_t kBlockMaxPackedDim = 16384;
// Floats a thread keeps in registers at most.
inline constexpr int kMaxFloatsPerThread = 32;
// Threads of a block-per-row block at most (a row of kBlockMaxPackedDim at
// kMaxFloatsPerThread).
inline constexpr int kBlockMaxThreads =
    static_cast<int>(kBlockMaxPackedDim / kMaxFloatsPerThread);
// Rows per block in the warp-per-row mapping (a warp or half-warp each).
inline constexpr int kWarpRowsPerBlock = 8;
// Threads per row of a staged warp mapping (two rows per warp).
inline constexpr int kSubWarpThreads = 16;
// Block size of the streaming mapping.
inline constexpr int kStreamingThreads = 1024;
// Packs a thread of a staged streaming row reads at most: rows of up to
// 16 × 1024 packs (256 KiB), more than a block's shared memory holds on
// any GPU so far (227 KiB on sm_90), so that shared memory decides.
inline constexpr int kStreamingStagedPacks = 16;

// Calls f(std::integral_constant<int, K>{}) for K = packs (1, 2, 4 or 8,
// the warp mapping's packs per thread), so that a kernel can be chosen by
// its compile-time pack count; false, calling nothing, for any other value.
template <typename F>
bool WithPacksPerThread(int packs, F&& f) {
  switch (packs) {
    case 1:
      f(std::integral_constant<int, 1>{});
      return true;
    case 2:
      f(std::integral_constant<int, 2>{});
      return true;
    case 4:
      f(std::integral_constant<int, 4>{});
      return true;
    case 8:
      f(std::integral_constant<int, 8>{});
      return true;
  }
  return false;
}

// The same for the packs per thread of a staged warp mapping (1, 2, 4, 6
// or 8).
template <typename F>
bool WithStagedWarpPacks(int packs, F&& f) {
  if (packs == 6) {
    f(std::integral_constant<int, 6>{});
    return true;
  }
  return WithPacksPerThread(packs, f);
}

// Whether a plan may stage its rows: kAuto where that pays (above); kOff
// never, so that one binary can measure the register kernels against the
// staged ones on the same GPU (BM_CudaTuning, bench/normalize_cuda_bench.cc).
enum class Staging { kAuto, kOff };

// The plan for rows of `dim` (> 0) elements of `input_dtype` (not kInt8).
LaunchPlan PlanLaunch(int64_t dim, DType input_dtype,
                      Staging staging = Staging::kAuto);

// Blocks to launch for `rows` rows under `plan`.
int64_t GridBlocks(const LaunchPlan& plan, int64_t rows);

// How a staged launch runs where the plan leaves it open. None of it
// changes a row's bits: only how many rows are in flight and which block
// serves which row. The defaults are the measured ones; the tuning
// benchmark (BM_CudaTuning) measures the others against them in one run.
inline constexpr int kMaxStagedBuffers = 4;
struct StagedTuning {
  // Row buffers per row group of the warp and of the block mapping (2 to
  // kMaxStagedBuffers, or kAutoStages): a group normalizes row i from one
  // buffer while rows i + 1 … i + stages − 1 are being copied into the
  // others. kAutoStages: as measured on an H200 (RowBuffers), three
  // for warp rows of 8 packs per thread (16-bit D of 769–1024) without a
  // residual, two elsewhere, where a third or fourth did not pay
  // (bench/results/cuda_2026-11-25/, cuda_2026-11-27_h200/ and
  // cuda_2026-11-28_h200/tuning.md); not yet measured on an H100.
  static constexpr int kAutoStages = 0;
  int warp_stages = kAutoStages;
  int block_stages = kAutoStages;
  // Row buffers of a staged streaming block (1 to kMaxStagedBuffers, or
  // kAutoStages: one). One buffer leaves the block nothing to copy while it
  // normalizes its row (on an H200 its 16-bit rows of 32768 and 65536 run
  // at 0.58–0.80 of copy, two blocks per multiprocessor); where two rows
  // fit (16-bit D up to about 58000), a second buffer lets the block copy
  // its next row meanwhile. Not yet measured.
  int streaming_stages = kAutoStages;
  // Rows per row group: 0 launches as many blocks as the device holds at
  // once, each serving a fixed share of the rows; n > 0 launches enough
  // blocks that each group serves about n rows, when that is more, so that
  // the hardware hands the later blocks to multiprocessors as earlier ones
  // finish (a slow multiprocessor then serves fewer rows, and the last
  // rows do not wait on one). kAutoRowsPerGroup: as measured on an H200
  // (bench/results/cuda_2026-11-27_h200/tuning.md), 8 for float32 rows under
  // the block mapping (LayerNorm at D = 4096 and 16384 and add & norm at
  // 4096: 0.92–0.93 of copy, against 0.88–0.91 with resident blocks), 0
  // for the rest (16-bit rows: 0.81–0.85 resident, 0.72–0.81 at 8 rows).
  static constexpr int kAutoRowsPerGroup = -1;
  int rows_per_group = kAutoRowsPerGroup;
  // Blocks at most (0: no limit), below the above: lets a test run many
  // rows through each row group's buffers with a small batch.
  int max_blocks = 0;
  // Where an add & norm launch's residual goes: kBeside, beside x in the
  // row buffers wherever the two fit; kFromMemory never (x alone is staged,
  // and the rows read the residual from global memory); kAuto as measured,
  // which is kBeside: with 16-bit rows at D = 768 under the warp mapping,
  // x alone holds twice the blocks but ran at 0.79 of copy against 0.87
  // (H200, tuning.md above).
  enum class Residual { kAuto, kBeside, kFromMemory };
  Residual residual = Residual::kAuto;
  // Where a staged block-mapped row's γ and β come from: kHeld, each thread
  // holds its packs' γ and β in registers across its rows (64 floats at 32
  // floats per thread; the staged block kernels take 118–128 registers,
  // four 128-thread blocks per multiprocessor); kLoaded, read again for
  // each row (from L1 where they stay, as the 32 KiB of D = 4096 can),
  // which leaves registers for twice the blocks; kAuto as measured, which
  // is kHeld: on an H200, holding them ran 1.06–1.31× faster than reading
  // them from L2 at D = 8192 and 16384 (bench/results/cuda_2026-11-26/),
  // and 1.04–1.24× faster than kLoaded at D = 4096 and 16384, float32 and
  // bf16, on either grid (cuda_2026-11-28_h200/tuning.md). Launches with a
  // residual, a sum output or neither γ nor β (the general loop) always
  // hold them.
  enum class Weights { kAuto, kHeld, kLoaded };
  Weights weights = Weights::kAuto;
  // Which launches of a plan that may stage its rows (LaunchPlan::staged)
  // are staged: kAuto as measured (StagesLaunch); kAlways every one, so
  // that the tuning benchmark measures the staged choices where kAuto takes
  // the register kernel.
  enum class Stage { kAuto, kAlways };
  Stage stage = Stage::kAuto;
};

// True if every field is within its range (above).
bool ValidStagedTuning(const StagedTuning& tuning);

// True if a launch of rows of `dim` elements under `plan`, with a residual
// or not (`residual`), runs the staged kernel where the rows are aligned
// and its buffers fit (launch_plan.h, "Staging"): plan.staged, except, under
// tuning.stage kAuto, float32 rows of D <= kRegisterMaxFloat32Dim without a
// residual. Their register kernel (a block of 128 threads per row,
// the row in registers, as many blocks as the registers hold) measured as
// fast or faster on an H200 at D = 4096: 0.925 and 0.951 of copy against
// 0.922 and 0.925 for the best staged choice, in two runs
// (bench/results/cuda_2026-11-27_h200/ and cuda_2026-11-28_h200/tuning.md);
// add & norm's register kernel ran at 0.75-0.78 (staged 0.93), and the
// staged kernel is faster from D = 16384 (0.93 against 0.72). RMSNorm
// follows LayerNorm's measurement, not its own (BM_CudaTuning's float32
// RMSNorm row at 4096 measures it).
bool StagesLaunch(const LaunchPlan& plan, const StagedTuning& tuning,
                  int64_t dim, bool residual);

// The row buffers per row group that `tuning` asks of a staged launch under
// `plan` (tuning.warp_stages, block_stages or streaming_stages by its
// mapping, or what kAutoStages stands for there); `residual`: the launch
// adds a residual.
int RowBuffers(const LaunchPlan& plan, const StagedTuning& tuning,
               bool residual);

// The rows per row group that `tuning` asks of a staged launch under `plan`
// (tuning.rows_per_group, or what kAutoRowsPerGroup stands for there).
int RowsPerGroup(const LaunchPlan& plan, const StagedTuning& tuning);

// Blocks of a staged launch of `rows` (> 0) rows under `plan` on a device
// that holds `resident` (> 0) of its blocks at once, per RowsPerGroup and
// tuning.max_blocks; never more than GridBlocks (a row group per row).
int64_t StagedGridBlocks(const LaunchPlan& plan, int64_t rows, int64_t resident,
                         const StagedTuning& tuning);

// "warp", "block" or "streaming", for logs and benchmark labels.
const char* RowMappingName(RowMapping mapping);

}  // namespace normserve::cuda

#endif  // NORMSERVE_KERNELS_CUDA_LAUNCH_PLAN_H_
