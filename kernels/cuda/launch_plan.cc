#include "kernels/cuda/launch_plan.h"

#include <algorithm>

namespace normserve::cuda {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The smallest of 1, 2, 4, 8, … that is >= n (n >= 1).
int PowerOfTwoAtLeast(int64_t n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

}  // namespace

LaunchPlan PlanLaunch(int64_t dim, DType input_dtype, Staging staging) {
  LaunchPlan plan;
  plan.pack_elements = static_cast<int>(16 / DTypeSize(input_dtype));
  const int64_t packs = dim / plan.pack_elements;
  const int64_t packed_dim = packs * plan.pack_elements;
  const bool may_stage = staging == Staging::kAuto && packed_dim == dim;
  plan.staged = may_stage && packed_dim <= kBlockMaxPackedDim &&
                (input_dtype != DType::kFloat32 || dim >= kStagedMinFloat32Dim);
  if (packed_dim <= kWarpMaxPackedDim) {
    plan.mapping = RowMapping::kWarpPerRow;
    plan.threads_per_row = plan.staged ? kSubWarpThreads : 32;
    plan.rows_per_block = kWarpRowsPerBlock;
    const int64_t per_thread = CeilDiv(packs, plan.threads_per_row);
    // Staged: 6 packs too, for D = 768 (the commonest) and 640.
    plan.packs_per_thread = plan.staged && per_thread > 4 && per_thread <= 6
                                ? 6
                                : PowerOfTwoAtLeast(per_thread);
    return plan;
  }
  plan.rows_per_block = 1;
  if (packed_dim <= kBlockMaxPackedDim) {
    plan.mapping = RowMapping::kBlockPerRow;
    // 32 floats per thread, as in the warp mapping: the work of a row's
    // reductions and statistics is spread over as many elements as the
    // registers allow (blocks of at most 512 threads).
    plan.packs_per_thread = kMaxFloatsPerThread / plan.pack_elements;
    plan.threads_per_row = static_cast<int>(
        PowerOfTwoAtLeast(CeilDiv(packs, plan.packs_per_thread)));
    if (plan.threads_per_row < 64) plan.threads_per_row = 64;
    return plan;
  }
  plan.mapping = RowMapping::kBlockStreaming;
  plan.threads_per_row = kStreamingThreads;
  plan.packs_per_thread = 0;
  plan.staged =
      may_stage && packs <= int64_t{kStreamingThreads} * kStreamingStagedPacks;
  return plan;
}

int64_t GridBlocks(const LaunchPlan& plan, int64_t rows) {
  return CeilDiv(rows, plan.rows_per_block);
}

bool ValidStagedTuning(const StagedTuning& tuning) {
  auto stages_ok = [](int s, int least) {
    return s == StagedTuning::kAutoStages ||
           (s >= least && s <= kMaxStagedBuffers);
  };
  using Residual = StagedTuning::Residual;
  const bool residual_ok = tuning.residual == Residual::kAuto ||
                           tuning.residual == Residual::kBeside ||
                           tuning.residual == Residual::kFromMemory;
  using Weights = StagedTuning::Weights;
  const bool weights_ok = tuning.weights == Weights::kAuto ||
                          tuning.weights == Weights::kHeld ||
                          tuning.weights == Weights::kLoaded;
  const bool stage_ok = tuning.stage == StagedTuning::Stage::kAuto ||
                        tuning.stage == StagedTuning::Stage::kAlways;
  return stage_ok && stages_ok(tuning.warp_stages, 2) &&
         stages_ok(tuning.block_stages, 2) &&
         stages_ok(tuning.streaming_stages, 1) &&
         tuning.rows_per_group >= StagedTuning::kAutoRowsPerGroup &&
         tuning.max_blocks >= 0 && residual_ok && weights_ok;
}

bool StagesLaunch(const LaunchPlan& plan, const StagedTuning& tuning,
                  int64_t dim, bool residual) {
  if (!plan.staged) return false;
  if (tuning.stage == StagedTuning::Stage::kAlways) return true;
  const bool float32_register_row =
      plan.pack_elements == 4 && dim <= kRegisterMaxFloat32Dim;
  return residual || !float32_register_row;
}

int RowBuffers(const LaunchPlan& plan, const StagedTuning& tuning,
               bool residual) {
  if (plan.mapping == RowMapping::kBlockStreaming) {
    // One buffer: the row alone fills most of the shared memory.
    return tuning.streaming_stages == StagedTuning::kAutoStages
               ? 1
               : tuning.streaming_stages;
  }
  const bool warp = plan.mapping == RowMapping::kWarpPerRow;
  const int asked = warp ? tuning.warp_stages : tuning.block_stages;
  if (asked != StagedTuning::kAutoStages) return asked;
  // bf16 LayerNorm at D = 1024 (H200, cuda_2026-11-28_h200/tuning.md): 3
  // buffers 0.836 of copy, 2 buffers 0.741 (the run before: 0.796 against
  // 0.786). With 6 packs (D = 768) 2 buffers (resident) were within 3 % of
  // the best in both runs; with a residual beside x a third buffer holds fewer
  // blocks (add & norm at 768: 0.73 against 0.89).
  return warp && plan.staged && plan.packs_per_thread == 8 && !residual ? 3 : 2;
}

int RowsPerGroup(const LaunchPlan& plan, const StagedTuning& tuning) {
  if (tuning.rows_per_group != StagedTuning::kAutoRowsPerGroup) {
    return tuning.rows_per_group;
  }
  const bool float32_block =
      plan.mapping == RowMapping::kBlockPerRow && plan.pack_elements == 4;
  return float32_block ? 8 : 0;
}

int64_t StagedGridBlocks(const LaunchPlan& plan, int64_t rows, int64_t resident,
                         const StagedTuning& tuning) {
  int64_t blocks = resident;
  if (const int per_group = RowsPerGroup(plan, tuning); per_group > 0) {
    blocks = std::max(blocks,
                      CeilDiv(rows, int64_t{plan.rows_per_block} * per_group));
  }
  blocks = std::min(blocks, GridBlocks(plan, rows));
  if (tuning.max_blocks > 0)
    blocks = std::min<int64_t>(blocks, tuning.max_blocks);
  return blocks;
}

const char* RowMappingName(RowMapping mapping) {
  switch (mapping) {
    case RowMapping::kWarpPerRow:
      return "warp";
    case RowMapping::kBlockPerRow:
      return "block";
    case RowMapping::kBlockStreaming:
      return "streaming";
  }
  return "?";
}

}  // namespace normserve::cuda
