// The CUDA launch plan, on the CPU: which mapping each D gets, that the
// plan holds the whole row, and that thread ownership (as the kernels walk
// it) covers every element exactly once.
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/launch_plan.h"

namespace normserve::cuda {
namespace {

constexpr DType kTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

// Marks the elements thread t owns, as RegisterRow / StreamingRow walk
// them (and the staged kernels copy and read them): packs t, t + T, … (at
// most packs_per_thread of them unless streaming), then tail element t.
std::vector<int> Ownership(const LaunchPlan& plan, int64_t dim) {
  std::vector<int> owners(static_cast<size_t>(dim), 0);
  const int64_t v = plan.pack_elements;
  const int64_t packs = dim / v;
  const int64_t tail = dim - packs * v;
  const int threads = plan.threads_per_row;
  for (int t = 0; t < threads; ++t) {
    for (int64_t k = 0;; ++k) {
      if (plan.packs_per_thread > 0 && k >= plan.packs_per_thread) break;
      const int64_t pack = t + k * threads;
      if (pack >= packs) break;
      for (int64_t j = 0; j < v; ++j) ++owners[pack * v + j];
    }
    if (t < tail) ++owners[packs * v + t];
  }
  return owners;
}

TEST(CudaLaunchPlanTest, PacksAreSixteenBytesOfTheInputType) {
  EXPECT_EQ(PlanLaunch(768, DType::kFloat32).pack_elements, 4);
  EXPECT_EQ(PlanLaunch(768, DType::kFloat16).pack_elements, 8);
  EXPECT_EQ(PlanLaunch(768, DType::kBFloat16).pack_elements, 8);
}

TEST(CudaLaunchPlanTest, SmallRowsGetAWarpEach) {
  for (DType t : kTypes) {
    for (int64_t d : {1, 3, 31, 33, 767, 1025}) {
      const LaunchPlan p = PlanLaunch(d, t);
      EXPECT_EQ(p.mapping, RowMapping::kWarpPerRow) << d;
      EXPECT_FALSE(p.staged);
      EXPECT_EQ(p.threads_per_row, 32);
      EXPECT_EQ(p.rows_per_block, kWarpRowsPerBlock);
    }
  }
  for (int64_t d : {32, 768, 1024}) {
    EXPECT_EQ(PlanLaunch(d, DType::kFloat32).threads_per_row, 32) << d;
  }
  // A tail beyond 1024 packed elements stays on the warp.
  EXPECT_EQ(PlanLaunch(1027, DType::kFloat32).mapping, RowMapping::kWarpPerRow);
  EXPECT_EQ(PlanLaunch(1031, DType::kBFloat16).mapping,
            RowMapping::kWarpPerRow);
  EXPECT_EQ(PlanLaunch(768, DType::kFloat32).packs_per_thread, 8);  // 6 → 8
  EXPECT_EQ(PlanLaunch(1031, DType::kBFloat16).packs_per_thread, 4);
  EXPECT_EQ(PlanLaunch(64, DType::kFloat32).packs_per_thread, 1);
}

TEST(CudaLaunchPlanTest, StagedSixteenBitRowsGetHalfAWarpEach) {
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    for (int64_t d : {8, 64, 768, 1024}) {
      const LaunchPlan p = PlanLaunch(d, t);
      EXPECT_EQ(p.mapping, RowMapping::kWarpPerRow) << d;
      EXPECT_TRUE(p.staged);
      EXPECT_EQ(p.threads_per_row, kSubWarpThreads);
      EXPECT_EQ(p.rows_per_block, kWarpRowsPerBlock);
      EXPECT_EQ(p.threads_per_block(), kWarpRowsPerBlock * kSubWarpThreads);
    }
    EXPECT_EQ(PlanLaunch(8, t).packs_per_thread, 1);
    EXPECT_EQ(PlanLaunch(384, t).packs_per_thread, 4);  // 3 → 4
    EXPECT_EQ(PlanLaunch(640, t).packs_per_thread, 6);  // 5 → 6
    EXPECT_EQ(PlanLaunch(768, t).packs_per_thread, 6);
    EXPECT_EQ(PlanLaunch(1024, t).packs_per_thread, 8);
  }
}

TEST(CudaLaunchPlanTest, MediumRowsGetTheSmallestBlockThatHoldsThem) {
  // 32 floats per thread, as in the warp mapping.
  const LaunchPlan a = PlanLaunch(1028, DType::kFloat32);
  EXPECT_EQ(a.mapping, RowMapping::kBlockPerRow);
  EXPECT_EQ(a.threads_per_row, 64);  // 257 packs / 8 per thread → 33 → 64
  EXPECT_EQ(a.packs_per_thread, 8);
  EXPECT_EQ(a.rows_per_block, 1);
  EXPECT_EQ(PlanLaunch(4096, DType::kFloat32).threads_per_row, 128);
  EXPECT_EQ(PlanLaunch(4097, DType::kFloat32).threads_per_row, 128);  // tail
  EXPECT_EQ(PlanLaunch(4100, DType::kFloat32).threads_per_row, 256);
  EXPECT_EQ(PlanLaunch(16384, DType::kFloat32).threads_per_row,
            kBlockMaxThreads);
  const LaunchPlan h = PlanLaunch(8192, DType::kBFloat16);
  EXPECT_EQ(h.mapping, RowMapping::kBlockPerRow);
  EXPECT_EQ(h.packs_per_thread, 4);
  EXPECT_EQ(h.threads_per_row, 256);
  EXPECT_EQ(PlanLaunch(16384, DType::kBFloat16).threads_per_row,
            kBlockMaxThreads);
}

TEST(CudaLaunchPlanTest, StagesSixteenBitRowsAndLongFloat32Rows) {
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    for (int64_t d : {8, 768, 1024, 4096, 16384}) {
      EXPECT_TRUE(PlanLaunch(d, t).staged) << d;
    }
    EXPECT_FALSE(PlanLaunch(1031, t).staged);  // a tail
  }
  for (int64_t d : {4, 768, 1024, 2048, 4092}) {
    EXPECT_FALSE(PlanLaunch(d, DType::kFloat32).staged) << d;
  }
  for (int64_t d : {4096, 8192, 12288, 16384}) {
    EXPECT_TRUE(PlanLaunch(d, DType::kFloat32).staged) << d;
  }
  EXPECT_FALSE(PlanLaunch(4097, DType::kFloat32).staged);  // a tail
}

TEST(CudaLaunchPlanTest, StagesStreamingRowsOfWholePacksUpToTheStagedLimit) {
  for (DType t : kTypes) {
    const int64_t v = PlanLaunch(1, t).pack_elements;
    const int64_t limit = int64_t{kStreamingThreads} * kStreamingStagedPacks;
    for (int64_t packs : {int64_t{16392} / 4, limit}) {
      const LaunchPlan p = PlanLaunch(packs * v, t);
      EXPECT_EQ(p.mapping, RowMapping::kBlockStreaming) << packs;
      EXPECT_TRUE(p.staged) << packs;
    }
    EXPECT_FALSE(PlanLaunch((limit + 1) * v, t).staged);  // too long
    EXPECT_FALSE(PlanLaunch(16392 * v + 1, t).staged);    // a tail
  }
}

TEST(CudaLaunchPlanTest, VeryLongRowsStreamThroughAFullBlock) {
  for (DType t : kTypes) {
    for (int64_t d :
         {int64_t{16392}, int64_t{65536}, int64_t{65537}, int64_t{1} << 24}) {
      const LaunchPlan p = PlanLaunch(d, t);
      EXPECT_EQ(p.mapping, RowMapping::kBlockStreaming) << d;
      EXPECT_EQ(p.threads_per_row, kStreamingThreads);
      EXPECT_EQ(p.packs_per_thread, 0);
    }
  }
}

// For every D up to past the streaming threshold: a valid geometry that
// owns each element exactly once, within the register budget, and mappings
// that only move "up" as D grows.
TEST(CudaLaunchPlanTest, EveryDimIsCoveredOnceWithinLimits) {
  for (DType t : kTypes) {
    int last_mapping = 0;
    for (int64_t d = 1; d <= 17000; d += (d < 2100 ? 1 : 7)) {
      const LaunchPlan p = PlanLaunch(d, t);
      SCOPED_TRACE(::testing::Message()
                   << "D " << d << " dtype " << static_cast<int>(t));
      ASSERT_GE(static_cast<int>(p.mapping), last_mapping);
      last_mapping = static_cast<int>(p.mapping);
      ASSERT_EQ(p.threads_per_row % (p.staged ? kSubWarpThreads : 32), 0);
      ASSERT_LE(p.threads_per_block(), 1024);
      if (p.mapping == RowMapping::kBlockPerRow) {
        ASSERT_LE(p.threads_per_row, kBlockMaxThreads);
      }
      ASSERT_LT(d % p.pack_elements, p.threads_per_row);  // tail fits
      if (p.mapping == RowMapping::kWarpPerRow && p.staged) {
        // Read from shared memory, not held: no register budget.
        ASSERT_TRUE(WithStagedWarpPacks(p.packs_per_thread, [](auto) {}));
      } else if (p.mapping != RowMapping::kBlockStreaming) {
        const int ppt = p.packs_per_thread;
        ASSERT_TRUE(ppt == 1 || ppt == 2 || ppt == 4 || ppt == 8);
        ASSERT_LE(ppt * p.pack_elements, kMaxFloatsPerThread);
      }
      const std::vector<int> owners = Ownership(p, d);
      for (int64_t i = 0; i < d; ++i)
        ASSERT_EQ(owners[i], 1) << "element " << i;
    }
  }
}

TEST(CudaLaunchPlanTest, GridCoversEveryRow) {
  const LaunchPlan warp = PlanLaunch(768, DType::kFloat32);
  EXPECT_EQ(GridBlocks(warp, 1), 1);
  EXPECT_EQ(GridBlocks(warp, kWarpRowsPerBlock), 1);
  EXPECT_EQ(GridBlocks(warp, kWarpRowsPerBlock + 1), 2);
  const LaunchPlan block = PlanLaunch(4096, DType::kFloat32);
  EXPECT_EQ(GridBlocks(block, 5), 5);
}

TEST(CudaLaunchPlanTest, StagingOffGivesTheRegisterPlan) {
  for (DType t : kTypes) {
    for (int64_t d : {8, 768, 1024, 4096, 16384, 32768, 65536}) {
      const LaunchPlan off = PlanLaunch(d, t, Staging::kOff);
      EXPECT_FALSE(off.staged) << d;
      // The plan of the same D with a tail, which is never staged: the
      // same mapping, threads and packs.
      const LaunchPlan tail = PlanLaunch(d + 1, t);
      ASSERT_FALSE(tail.staged);
      EXPECT_EQ(off.mapping, tail.mapping) << d;
      EXPECT_EQ(off.threads_per_row, tail.threads_per_row) << d;
      EXPECT_EQ(off.packs_per_thread, tail.packs_per_thread) << d;
    }
  }
  // 16-bit rows then take a whole warp each, in registers.
  EXPECT_EQ(PlanLaunch(768, DType::kBFloat16, Staging::kOff).threads_per_row,
            32);
  EXPECT_EQ(PlanLaunch(768, DType::kBFloat16, Staging::kOff).packs_per_thread,
            4);
}

TEST(CudaLaunchPlanTest, StagedTuningRanges) {
  EXPECT_TRUE(ValidStagedTuning(StagedTuning{}));
  for (int stages : {StagedTuning::kAutoStages, 2, 3, kMaxStagedBuffers}) {
    StagedTuning t;
    t.warp_stages = stages;
    t.block_stages = stages;
    EXPECT_TRUE(ValidStagedTuning(t)) << stages;
  }
  for (int stages : {-1, 1, kMaxStagedBuffers + 1}) {
    StagedTuning warp, block;
    warp.warp_stages = stages;
    block.block_stages = stages;
    EXPECT_FALSE(ValidStagedTuning(warp)) << stages;
    EXPECT_FALSE(ValidStagedTuning(block)) << stages;
  }
  for (int stages : {StagedTuning::kAutoStages, 1, 2, kMaxStagedBuffers}) {
    StagedTuning t;
    t.streaming_stages = stages;
    EXPECT_TRUE(ValidStagedTuning(t)) << stages;
  }
  for (int stages : {-1, kMaxStagedBuffers + 1}) {
    StagedTuning t;
    t.streaming_stages = stages;
    EXPECT_FALSE(ValidStagedTuning(t)) << stages;
  }
  StagedTuning rows, blocks;
  rows.rows_per_group = StagedTuning::kAutoRowsPerGroup - 1;
  blocks.max_blocks = -1;
  EXPECT_FALSE(ValidStagedTuning(rows));
  EXPECT_FALSE(ValidStagedTuning(blocks));
  // An enum field: each of its three values is valid, a fourth is not.
  auto check_enum = [](auto StagedTuning::*field, int values) {
    using E = std::remove_reference_t<decltype(StagedTuning{}.*field)>;
    for (int value = 0; value <= values; ++value) {
      StagedTuning t;
      t.*field = static_cast<E>(value);
      EXPECT_EQ(ValidStagedTuning(t), value < values) << value;
    }
  };
  check_enum(&StagedTuning::residual, 3);
  check_enum(&StagedTuning::weights, 3);
  check_enum(&StagedTuning::stage, 2);
}

// Which launches of a plan that may stage are staged: all but float32 rows
// of D = 4096 without a residual (their register kernel measured as fast),
// and those too when a tuning asks for every one (kAlways); never a launch
// whose plan may not stage.
TEST(CudaLaunchPlanTest, StagesLaunchAsMeasured) {
  const StagedTuning automatic;
  StagedTuning always;
  always.stage = StagedTuning::Stage::kAlways;
  const LaunchPlan f32_4096 = PlanLaunch(4096, DType::kFloat32);
  ASSERT_TRUE(f32_4096.staged);
  EXPECT_FALSE(StagesLaunch(f32_4096, automatic, 4096, false));
  EXPECT_TRUE(StagesLaunch(f32_4096, automatic, 4096, true));  // add & norm
  EXPECT_TRUE(StagesLaunch(f32_4096, always, 4096, false));
  for (int64_t d : {4100, 8192, 16384, 32768}) {
    const LaunchPlan plan = PlanLaunch(d, DType::kFloat32);
    ASSERT_TRUE(plan.staged) << d;
    for (bool residual : {false, true}) {
      EXPECT_TRUE(StagesLaunch(plan, automatic, d, residual)) << d;
    }
  }
  for (DType t : {DType::kBFloat16, DType::kFloat16}) {
    for (int64_t d : {64, 768, 1024, 4096, 16384, 32768}) {
      const LaunchPlan plan = PlanLaunch(d, t);
      ASSERT_TRUE(plan.staged) << d;
      for (bool residual : {false, true}) {
        EXPECT_TRUE(StagesLaunch(plan, automatic, d, residual)) << d;
      }
    }
  }
  for (DType t : kTypes) {
    for (int64_t d : {768, 4096, 4097, 16384}) {
      const LaunchPlan off = PlanLaunch(d, t, Staging::kOff);
      const LaunchPlan plan = PlanLaunch(d, t);
      for (bool residual : {false, true}) {
        EXPECT_FALSE(StagesLaunch(off, always, d, residual)) << d;
        EXPECT_EQ(StagesLaunch(plan, always, d, residual), plan.staged) << d;
      }
    }
  }
}

// The default buffers, as measured (StagedTuning::kAutoStages): three for
// staged warp rows of 8 packs per thread without a residual, one for a
// streaming row, two for the rest; a tuning's own count wins everywhere.
TEST(CudaLaunchPlanTest, RowBuffersAsMeasured) {
  const StagedTuning automatic;
  for (DType dt : {DType::kBFloat16, DType::kFloat16}) {
    for (int64_t d : {776, 832, 1000, 1024}) {
      const LaunchPlan plan = PlanLaunch(d, dt);
      ASSERT_EQ(plan.mapping, RowMapping::kWarpPerRow) << d;
      ASSERT_EQ(plan.packs_per_thread, 8) << d;
      EXPECT_EQ(RowBuffers(plan, automatic, false), 3) << d;
      EXPECT_EQ(RowBuffers(plan, automatic, true), 2) << d;
    }
    for (int64_t d : {64, 512, 640, 768, 2048, 4096, 16384}) {
      const LaunchPlan plan = PlanLaunch(d, dt);
      EXPECT_EQ(RowBuffers(plan, automatic, false), 2) << d;
      EXPECT_EQ(RowBuffers(plan, automatic, true), 2) << d;
    }
  }
  for (int64_t d : {1024, 4096, 16384}) {
    EXPECT_EQ(RowBuffers(PlanLaunch(d, DType::kFloat32), automatic, false), 2)
        << d;
  }
  const LaunchPlan warp = PlanLaunch(1024, DType::kBFloat16);
  const LaunchPlan block = PlanLaunch(4096, DType::kBFloat16);
  ASSERT_EQ(block.mapping, RowMapping::kBlockPerRow);
  for (int stages = 2; stages <= kMaxStagedBuffers; ++stages) {
    StagedTuning t;
    t.warp_stages = stages;
    t.block_stages = kMaxStagedBuffers + 2 - stages;
    EXPECT_EQ(RowBuffers(warp, t, false), stages);
    EXPECT_EQ(RowBuffers(warp, t, true), stages);
    EXPECT_EQ(RowBuffers(block, t, false), kMaxStagedBuffers + 2 - stages);
  }
  // A staged streaming row: one buffer unless a tuning asks for more.
  const LaunchPlan streaming = PlanLaunch(32768, DType::kBFloat16);
  ASSERT_EQ(streaming.mapping, RowMapping::kBlockStreaming);
  ASSERT_TRUE(streaming.staged);
  EXPECT_EQ(RowBuffers(streaming, automatic, false), 1);
  EXPECT_EQ(RowBuffers(streaming, automatic, true), 1);
  for (int stages = 1; stages <= kMaxStagedBuffers; ++stages) {
    StagedTuning t;
    t.warp_stages = t.block_stages = 3;
    t.streaming_stages = stages;
    EXPECT_EQ(RowBuffers(streaming, t, false), stages);
  }
}

TEST(CudaLaunchPlanTest, StagedGridFillsTheDeviceOrGivesEachGroupItsRows) {
  const LaunchPlan warp = PlanLaunch(768, DType::kBFloat16);  // 8 rows/block
  const LaunchPlan block = PlanLaunch(4096, DType::kFloat32);
  StagedTuning resident;
  resident.rows_per_group = 0;
  // As many blocks as the device holds, never more than the rows need.
  EXPECT_EQ(StagedGridBlocks(block, 100000, 528, resident), 528);
  EXPECT_EQ(StagedGridBlocks(block, 300, 528, resident), 300);
  EXPECT_EQ(StagedGridBlocks(warp, 100000, 1056, resident), 1056);
  EXPECT_EQ(StagedGridBlocks(warp, 81, 1056, resident), 11);
  // About rows_per_group rows per row group, where that takes more blocks.
  StagedTuning eight;
  eight.rows_per_group = 8;
  EXPECT_EQ(StagedGridBlocks(block, 100000, 528, eight), 12500);
  EXPECT_EQ(StagedGridBlocks(block, 100001, 528, eight), 12501);
  EXPECT_EQ(StagedGridBlocks(block, 4000, 528, eight), 528);
  EXPECT_EQ(StagedGridBlocks(warp, 100000, 1056, eight), 1563);  // 64 rows
  EXPECT_EQ(StagedGridBlocks(warp, 100, 1056, eight), 13);
  // Capped by max_blocks.
  StagedTuning one = eight;
  one.max_blocks = 1;
  EXPECT_EQ(StagedGridBlocks(block, 100000, 528, one), 1);
  EXPECT_EQ(StagedGridBlocks(warp, 100000, 1056, one), 1);
}

// The default grid, as measured (StagedTuning::kAutoRowsPerGroup): about 8
// rows per row group for float32 rows under the block mapping, the
// resident blocks for 16-bit rows and for the other mappings.
TEST(CudaLaunchPlanTest, DefaultGridIsEightRowsPerGroupForFloat32BlockRows) {
  const StagedTuning defaults;
  const LaunchPlan f32_block = PlanLaunch(4096, DType::kFloat32);
  const LaunchPlan f32_long = PlanLaunch(16384, DType::kFloat32);
  const LaunchPlan bf16_block = PlanLaunch(4096, DType::kBFloat16);
  const LaunchPlan bf16_warp = PlanLaunch(768, DType::kBFloat16);
  const LaunchPlan f32_streaming = PlanLaunch(32768, DType::kFloat32);
  ASSERT_EQ(f32_block.mapping, RowMapping::kBlockPerRow);
  ASSERT_EQ(f32_long.mapping, RowMapping::kBlockPerRow);
  ASSERT_EQ(f32_streaming.mapping, RowMapping::kBlockStreaming);
  EXPECT_EQ(RowsPerGroup(f32_block, defaults), 8);
  EXPECT_EQ(RowsPerGroup(f32_long, defaults), 8);
  EXPECT_EQ(RowsPerGroup(bf16_block, defaults), 0);
  EXPECT_EQ(RowsPerGroup(bf16_warp, defaults), 0);
  EXPECT_EQ(RowsPerGroup(f32_streaming, defaults), 0);
  EXPECT_EQ(StagedGridBlocks(f32_block, 32768, 528, defaults), 4096);
  EXPECT_EQ(StagedGridBlocks(f32_long, 8192, 132, defaults), 1024);
  EXPECT_EQ(StagedGridBlocks(f32_block, 1000, 528, defaults), 528);
  EXPECT_EQ(StagedGridBlocks(bf16_block, 65536, 528, defaults), 528);
  EXPECT_EQ(StagedGridBlocks(bf16_warp, 349525, 1056, defaults), 1056);
  // An explicit choice is kept.
  StagedTuning resident;
  resident.rows_per_group = 0;
  EXPECT_EQ(RowsPerGroup(f32_block, resident), 0);
  EXPECT_EQ(StagedGridBlocks(f32_block, 32768, 528, resident), 528);
}

TEST(CudaLaunchPlanTest, MappingNames) {
  EXPECT_STREQ(RowMappingName(RowMapping::kWarpPerRow), "warp");
  EXPECT_STREQ(RowMappingName(RowMapping::kBlockPerRow), "block");
  EXPECT_STREQ(RowMappingName(RowMapping::kBlockStreaming), "streaming");
}

}  // namespace
}  // namespace normserve::cuda
