// The CUDA backend's batch plan, on the CPU: chunks partition the batch's
// rows in order, fit their slot, launches merge runs of one group, and the
// layout keeps regions aligned and the copies contiguous. (Which slot runs
// a chunk when: chunk_runner_test.)
#include "server/internal/cuda_pipeline.h"

#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace normserve::internal {
namespace {

PipelineOptions F32Options(int64_t d) {
  PipelineOptions o;
  o.input_row_bytes = d * 4;
  o.output_row_bytes = d * 4;
  o.group_param_bytes = 2 * d * 4;
  return o;
}

// Checks every invariant of a plan for `jobs`.
void CheckPlan(const std::vector<PipelineJob>& jobs, const PipelineOptions& o,
               const PipelinePlan& plan) {
  // Rows: each job's rows appear once, in order, pieces contiguous.
  int job = 0;
  int64_t next_row = 0;
  for (const PipelineChunk& c : plan.chunks) {
    int64_t chunk_row = 0;
    for (const PipelinePiece& p : c.pieces) {
      if (next_row == jobs[job].rows) {
        ++job;
        next_row = 0;
      }
      ASSERT_EQ(p.job, job);
      ASSERT_EQ(p.row_begin, next_row);
      ASSERT_GT(p.row_end, p.row_begin);
      ASSERT_EQ(p.chunk_row, chunk_row);
      chunk_row += p.row_end - p.row_begin;
      next_row = p.row_end;
    }
    ASSERT_EQ(chunk_row, c.rows);
    // Launches cover the chunk's rows in order; neighbours differ in group;
    // each launch's rows all belong to jobs of its group.
    int64_t launch_row = 0;
    for (size_t i = 0; i < c.launches.size(); ++i) {
      const PipelineLaunch& l = c.launches[i];
      ASSERT_EQ(l.chunk_row, launch_row);
      if (i > 0) {
        ASSERT_NE(l.group, c.launches[i - 1].group);
      }
      for (const PipelinePiece& p : c.pieces) {
        const bool inside =
            p.chunk_row >= l.chunk_row && p.chunk_row < l.chunk_row + l.rows;
        if (inside) {
          ASSERT_EQ(jobs[p.job].group, l.group);
        }
      }
      launch_row += l.rows;
      // One parameter block per group, before the input.
      ASSERT_EQ(l.param_offset % kRegionAlignment, 0);
      if (o.group_param_bytes > 0) {
        ASSERT_LE(l.param_offset + o.group_param_bytes, c.layout.input);
      }
    }
    ASSERT_EQ(launch_row, c.rows);
    // Fits the slot, unless it is a single row that cannot.
    if (c.rows > 1) {
      ASSERT_LE(c.layout.total_bytes, o.slot_bytes);
    }
    ASSERT_LE(c.layout.total_bytes, plan.max_chunk_bytes);
    // Layout: aligned regions in order; one copy each way.
    const ChunkLayout& L = c.layout;
    for (int64_t off : {L.input, L.residual, L.output, L.sum, L.mean, L.rstd})
      ASSERT_EQ(off % kRegionAlignment, 0);
    ASSERT_GE(L.residual - L.input, c.rows * o.input_row_bytes);
    ASSERT_EQ(L.host_to_device_bytes, L.output);
    ASSERT_GE(L.output - L.residual, c.rows * o.residual_row_bytes);
    ASSERT_EQ(L.device_to_host_begin, L.output);
    ASSERT_GE(L.sum - L.output, c.rows * o.output_row_bytes);
    ASSERT_EQ(L.device_to_host_begin + L.device_to_host_bytes, L.total_bytes);
  }
  if (!jobs.empty()) {
    ASSERT_EQ(job, static_cast<int>(jobs.size()) - 1);
    ASSERT_EQ(next_row, jobs.back().rows);
  }
}

TEST(CudaPipelineTest, SmallBatchIsOneChunkAndOneLaunch) {
  const std::vector<PipelineJob> jobs = {{2, 0}, {1, 0}, {5, 0}};
  const PipelineOptions o = F32Options(768);
  const auto plan = PlanPipeline(jobs, o);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->chunks.size(), 1u);
  EXPECT_EQ(plan->chunks[0].rows, 8);
  ASSERT_EQ(plan->chunks[0].launches.size(), 1u);
  EXPECT_EQ(plan->chunks[0].launches[0].rows, 8);
  CheckPlan(jobs, o, *plan);
}

TEST(CudaPipelineTest, LargeBatchIsCutIntoTargetChunks) {
  // 64 MiB of float32 rows: target_chunks chunks, to overlap on streams.
  const std::vector<PipelineJob> jobs = {{4096, 0}, {4096, 0}};
  PipelineOptions o = F32Options(4096);
  o.slot_bytes = int64_t{64} << 20;
  const auto plan = PlanPipeline(jobs, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->chunks.size(), static_cast<size_t>(o.target_chunks));
  CheckPlan(jobs, o, *plan);
}

TEST(CudaPipelineTest, ChunksFitTheSlot) {
  const std::vector<PipelineJob> jobs = {{10000, 0}};
  PipelineOptions o = F32Options(1024);
  o.slot_bytes = 1 << 20;  // 128 rows in and out, minus γ/β
  o.min_chunk_bytes = 0;
  o.target_chunks = 1;
  const auto plan = PlanPipeline(jobs, o);
  ASSERT_TRUE(plan.ok());
  EXPECT_GT(plan->chunks.size(), 10000u / 128);
  EXPECT_LE(plan->max_chunk_bytes, o.slot_bytes);
  CheckPlan(jobs, o, *plan);
}

TEST(CudaPipelineTest, RowLargerThanASlotGetsAChunkOfItsOwn) {
  const std::vector<PipelineJob> jobs = {{3, 0}};
  PipelineOptions o = F32Options(1 << 20);  // 4 MiB rows
  o.slot_bytes = 1 << 20;
  const auto plan = PlanPipeline(jobs, o);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->chunks.size(), 3u);
  EXPECT_GT(plan->max_chunk_bytes, o.slot_bytes);  // the slot must grow
  CheckPlan(jobs, o, *plan);
}

TEST(CudaPipelineTest, GroupsSplitLaunchesAndShareParameters) {
  const std::vector<PipelineJob> jobs = {
      {1, 0}, {2, 0}, {1, 1}, {1, 0}, {3, 2}};
  const PipelineOptions o = F32Options(64);
  const auto plan = PlanPipeline(jobs, o);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->chunks.size(), 1u);
  const PipelineChunk& c = plan->chunks[0];
  ASSERT_EQ(c.launches.size(), 4u);
  EXPECT_EQ(c.launches[0].rows, 3);
  EXPECT_EQ(c.launches[1].group, 1);
  EXPECT_EQ(c.launches[2].group, 0);
  EXPECT_EQ(c.launches[2].param_offset, c.launches[0].param_offset);
  EXPECT_NE(c.launches[3].param_offset, c.launches[0].param_offset);
  CheckPlan(jobs, o, *plan);
}

TEST(CudaPipelineTest, OptionalRegionsAndRandomBatches) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t d = 1 + static_cast<int64_t>(rng() % 5000);
    PipelineOptions o;
    o.input_row_bytes = d * (rng() % 2 ? 4 : 2);
    o.output_row_bytes = d * (rng() % 2 ? 4 : 2);
    o.residual_row_bytes = rng() % 2 ? o.input_row_bytes : 0;
    o.sum_row_bytes = rng() % 2 ? o.input_row_bytes : 0;
    o.statistics = rng() % 2;
    o.group_param_bytes = rng() % 2 ? 2 * d * 4 : 0;
    o.slot_bytes = int64_t{1} << (16 + rng() % 8);
    o.min_chunk_bytes = int64_t{1} << (12 + rng() % 10);
    o.target_chunks = 1 + static_cast<int>(rng() % 10);
    std::vector<PipelineJob> jobs(1 + rng() % 40);
    for (PipelineJob& j : jobs) {
      j.rows = 1 + static_cast<int64_t>(rng() % 300);
      j.group = static_cast<int>(rng() % 3);
    }
    const auto plan = PlanPipeline(jobs, o);
    ASSERT_TRUE(plan.ok()) << plan.status();
    SCOPED_TRACE(::testing::Message() << "trial " << trial << " D " << d);
    CheckPlan(jobs, o, *plan);
    if (HasFatalFailure()) return;
  }
}

TEST(CudaPipelineTest, BadInputsAreInvalidArgument) {
  PipelineOptions o = F32Options(8);
  EXPECT_EQ(PlanPipeline(std::vector<PipelineJob>{{0, 0}}, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.target_chunks = 0;
  EXPECT_EQ(PlanPipeline(std::vector<PipelineJob>{{1, 0}}, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  const auto empty = PlanPipeline({}, F32Options(8));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->chunks.empty());
}

}  // namespace
}  // namespace normserve::internal
