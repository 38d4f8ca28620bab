// The CUDA backend's plan for one batch, as plain data: how the batch's
// rows are cut into chunks, where each chunk's buffers sit in a staging
// slot, and which rows share a kernel launch. No CUDA here, so that all of
// it is tested on the CPU; server/backend_cuda.cc only carries it out.
//
// The pipeline
//   Each staging slot owns a CUDA stream, a pinned host buffer and a device
//   buffer of the same layout. Staging a chunk on a slot means: copy its
//   inputs (and γ/β) into the slot's pinned buffer, then enqueue one
//   host→device copy, its kernels and one device→host copy on the slot's
//   stream. Finishing it means: wait for that stream, then copy its outputs
//   into the jobs' buffers. Which slot each chunk gets, and when, is decided
//   at run time (chunk_runner.h), so that concurrent batches share slots.
//
// Chunk size
//   A batch below min_chunk_bytes is one chunk; a larger one is cut into
//   about target_chunks chunks of at least min_chunk_bytes, never more than
//   a slot holds (but always at least one row: the backend grows a slot to
//   the largest chunk of the plan).
//
// Layout of a chunk in its slot (every region 256-byte aligned):
//   [γ/β of each launch group] [input] [residual]  ← one host→device copy
//   [output] [residual sum] [mean] [rstd]          ← one device→host copy
//   Rows are contiguous in each region, so when D · element size is a
//   multiple of 16 every row is 16-byte aligned.
//
// Thread-safe (pure).
#ifndef NORMSERVE_SERVER_INTERNAL_CUDA_PIPELINE_H_
#define NORMSERVE_SERVER_INTERNAL_CUDA_PIPELINE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace normserve::internal {

// A job as the planner sees it.
struct PipelineJob {
  int64_t rows = 0;
  // Jobs with equal groups may share a kernel launch: same parameters and
  // the same optional buffers. Groups are small integers (0, 1, …).
  int group = 0;
};

struct PipelineOptions {
  // Bytes per row in each region; 0 for a region the batch does not use.
  int64_t input_row_bytes = 0;
  int64_t residual_row_bytes = 0;
  int64_t output_row_bytes = 0;
  int64_t sum_row_bytes = 0;
  bool statistics = false;  // mean and rstd: 4 bytes each per row
  // Bytes of γ/β staged per launch group in a chunk (0 without).
  int64_t group_param_bytes = 0;
  // Bytes a slot holds; a chunk is cut to fit unless one row alone exceeds.
  int64_t slot_bytes = int64_t{16} << 20;
  // See "Chunk size" above.
  int64_t min_chunk_bytes = int64_t{1} << 20;
  int target_chunks = 8;
};

// Rows [row_begin, row_end) of job `job`, at row `chunk_row` of its chunk.
struct PipelinePiece {
  int job = 0;
  int64_t row_begin = 0;
  int64_t row_end = 0;
  int64_t chunk_row = 0;
};

// One kernel launch: `rows` rows from `chunk_row`, with `group`'s
// parameters, whose γ/β sit at `param_offset` of the slot.
struct PipelineLaunch {
  int group = 0;
  int64_t chunk_row = 0;
  int64_t rows = 0;
  int64_t param_offset = 0;
};

struct ChunkLayout {
  int64_t input = 0, residual = 0;                  // offsets
  int64_t output = 0, sum = 0, mean = 0, rstd = 0;  // offsets
  int64_t host_to_device_bytes = 0;                 // [0, this)
  int64_t device_to_host_begin = 0;                 // == output
  int64_t device_to_host_bytes = 0;
  int64_t total_bytes = 0;
};

// Where a launch group's γ/β sit in the slot: one block per group of the
// chunk, shared by all its launches.
struct ParamBlock {
  int group = 0;
  int64_t offset = 0;
};

struct PipelineChunk {
  int64_t rows = 0;
  std::vector<PipelinePiece> pieces;
  std::vector<PipelineLaunch> launches;
  std::vector<ParamBlock> param_blocks;  // in order of first launch
  ChunkLayout layout;
};

struct PipelinePlan {
  std::vector<PipelineChunk> chunks;
  // The largest chunk's total_bytes: what each slot must hold.
  int64_t max_chunk_bytes = 0;
};

// Alignment of every region in a slot.
inline constexpr int64_t kRegionAlignment = 256;

// The plan for `jobs` (rows > 0 each). INVALID_ARGUMENT for bad options or
// jobs; an empty batch gives an empty plan.
absl::StatusOr<PipelinePlan> PlanPipeline(absl::Span<const PipelineJob> jobs,
                                          const PipelineOptions& options);

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_CUDA_PIPELINE_H_
