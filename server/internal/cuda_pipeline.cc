#include "server/internal/cuda_pipeline.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace normserve::internal {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t AlignUp(int64_t v) {
  return CeilDiv(v, kRegionAlignment) * kRegionAlignment;
}

// The bytes a chunk of `rows` rows with `groups` launch groups needs.
int64_t ChunkBytes(const PipelineOptions& o, int64_t rows, int64_t groups) {
  const int64_t stats = o.statistics ? 2 * AlignUp(rows * 4) : 0;
  return groups * AlignUp(o.group_param_bytes) +
         AlignUp(rows * o.input_row_bytes) +
         AlignUp(rows * o.residual_row_bytes) +
         AlignUp(rows * o.output_row_bytes) + AlignUp(rows * o.sum_row_bytes) +
         stats;
}

// The most rows, up to `limit`, that a chunk already holding `rows` rows
// can add and stay within the slot with `groups` launch groups (0 if none).
int64_t RowsThatFit(const PipelineOptions& o, int64_t rows, int64_t groups,
                    int64_t limit) {
  int64_t lo = 0, hi = limit;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (ChunkBytes(o, rows + mid, groups) <= o.slot_bytes) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

void Layout(const PipelineOptions& o, PipelineChunk* c) {
  const int64_t rows = c->rows;
  int64_t at = 0;
  for (PipelineLaunch& l : c->launches) {
    // Launches of one group share its parameters.
    auto block =
        std::find_if(c->param_blocks.begin(), c->param_blocks.end(),
                     [&](const ParamBlock& b) { return b.group == l.group; });
    if (block == c->param_blocks.end()) {
      block = c->param_blocks.insert(c->param_blocks.end(), {l.group, at});
      at += AlignUp(o.group_param_bytes);
    }
    l.param_offset = block->offset;
  }
  ChunkLayout& L = c->layout;
  L.input = at;
  at += AlignUp(rows * o.input_row_bytes);
  L.residual = at;
  at += AlignUp(rows * o.residual_row_bytes);
  L.host_to_device_bytes = at;
  L.output = at;
  L.device_to_host_begin = at;
  at += AlignUp(rows * o.output_row_bytes);
  L.sum = at;
  at += AlignUp(rows * o.sum_row_bytes);
  L.mean = at;
  at += o.statistics ? AlignUp(rows * 4) : 0;
  L.rstd = at;
  at += o.statistics ? AlignUp(rows * 4) : 0;
  L.device_to_host_bytes = at - L.device_to_host_begin;
  L.total_bytes = at;
}

}  // namespace

absl::StatusOr<PipelinePlan> PlanPipeline(absl::Span<const PipelineJob> jobs,
                                          const PipelineOptions& o) {
  if (o.target_chunks <= 0 || o.slot_bytes <= 0 || o.min_chunk_bytes < 0 ||
      o.input_row_bytes <= 0 || o.output_row_bytes <= 0 ||
      o.residual_row_bytes < 0 || o.sum_row_bytes < 0 ||
      o.group_param_bytes < 0) {
    return absl::InvalidArgumentError("PlanPipeline: bad options");
  }
  int64_t total_rows = 0;
  for (const PipelineJob& j : jobs) {
    if (j.rows <= 0 || j.group < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PlanPipeline: job with rows = ", j.rows, ", group = ", j.group,
          ": expected rows > 0 and group >= 0"));
    }
    total_rows += j.rows;
  }
  PipelinePlan plan;
  if (total_rows == 0) return plan;

  const int64_t per_row = o.input_row_bytes + o.residual_row_bytes +
                          o.output_row_bytes + o.sum_row_bytes +
                          (o.statistics ? 8 : 0);
  // Rows per chunk: about total/target_chunks, at least min_chunk_bytes'
  // worth, at most what a slot holds next to one group's parameters.
  const int64_t wanted = std::max(CeilDiv(total_rows, o.target_chunks),
                                  CeilDiv(o.min_chunk_bytes, per_row));
  const int64_t chunk_rows =
      std::max<int64_t>(1, RowsThatFit(o, 0, 1, std::min(wanted, total_rows)));

  PipelineChunk current;
  std::vector<int> groups_in_chunk;
  auto close_chunk = [&] {
    if (current.rows == 0) return;
    Layout(o, &current);
    plan.max_chunk_bytes =
        std::max(plan.max_chunk_bytes, current.layout.total_bytes);
    plan.chunks.push_back(std::move(current));
    current = PipelineChunk();
    groups_in_chunk.clear();
  };
  for (int j = 0; j < static_cast<int>(jobs.size()); ++j) {
    int64_t row = 0;
    while (row < jobs[j].rows) {
      const bool new_group =
          std::find(groups_in_chunk.begin(), groups_in_chunk.end(),
                    jobs[j].group) == groups_in_chunk.end();
      const int64_t groups =
          static_cast<int64_t>(groups_in_chunk.size()) + (new_group ? 1 : 0);
      // As many of this job's rows as the chunk takes (at least one row in
      // an empty chunk).
      int64_t take =
          RowsThatFit(o, current.rows, groups,
                      std::min(jobs[j].rows - row, chunk_rows - current.rows));
      if (take == 0) {
        if (current.rows == 0) {
          take = 1;  // one row alone exceeds a slot: the slot grows
        } else {
          close_chunk();
          continue;
        }
      }
      if (new_group) groups_in_chunk.push_back(jobs[j].group);
      current.pieces.push_back({j, row, row + take, current.rows});
      if (!current.launches.empty() &&
          current.launches.back().group == jobs[j].group) {
        current.launches.back().rows += take;
      } else {
        current.launches.push_back({jobs[j].group, current.rows, take, 0});
      }
      current.rows += take;
      row += take;
      if (current.rows >= chunk_rows) close_chunk();
    }
  }
  close_chunk();
  return plan;
}

}  // namespace normserve::internal
