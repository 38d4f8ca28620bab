// Batch-level driver: splits segments into row chunks for the thread pool.
// Chunking never changes results: each row is computed whole by one thread.
#include "kernels/normalize.h"

#include <algorithm>
#include <vector>

#include "kernels/int8_layer_norm.h"
#include "kernels/internal/normalize_rows.h"
#include "kernels/thread_pool.h"

namespace normserve {
namespace {

// Work is counted in elements, not bytes (kParallelMinElements too): once
// a batch is in cache, a 16-bit element costs about what a float32 one does.
//
// Elements per chunk.
constexpr int64_t kChunkElements = 32 << 10;

struct Chunk {
  const RowSegment* segment;
  int64_t row_begin;
  int64_t row_end;
};

void RunRows(const RowSegment& s, int64_t row_begin, int64_t row_end,
             bool streaming_stores) {
  if (s.input_dtype == DType::kInt8) {
    const int64_t d = s.int8->dim;
    const int8_t* in = static_cast<const int8_t*>(s.input) + row_begin * d;
    int8_t* out = static_cast<int8_t*>(s.output) + row_begin * d;
    if (s.int8_float_path) {
      Int8LayerNormFloat(*s.int8, in, out, row_end - row_begin);
    } else {
      Int8LayerNormInteger(*s.int8, in, out, row_end - row_begin);
    }
    return;
  }
  internal::NormalizeRowsSimd(s, row_begin, row_end, streaming_stores);
}

int64_t Dim(const RowSegment& s) {
  return s.input_dtype == DType::kInt8 ? s.int8->dim : s.params->dim;
}

}  // namespace

void NormalizeRows(const RowSegment& segment, int64_t row_begin,
                   int64_t row_end) {
  RunRows(segment, row_begin, row_end, false);
}

void NormalizeSegments(absl::Span<const RowSegment> segments,
                       ThreadPool* pool) {
  int64_t total_elements = 0;
  int64_t output_bytes = 0;
  for (const RowSegment& s : segments) {
    const int64_t elements = s.rows * Dim(s);
    total_elements += elements;
    output_bytes += elements * static_cast<int64_t>(DTypeSize(s.output_dtype));
  }
  const bool stream = output_bytes >= kStreamingMinBytes;
  if (pool == nullptr || pool->num_threads() == 0 ||
      total_elements < kParallelMinElements) {
    for (const RowSegment& s : segments) RunRows(s, 0, s.rows, stream);
    return;
  }
  std::vector<Chunk> chunks;
  for (const RowSegment& s : segments) {
    const int64_t rows_per_chunk =
        std::max<int64_t>(1, kChunkElements / Dim(s));
    for (int64_t r = 0; r < s.rows; r += rows_per_chunk) {
      chunks.push_back({&s, r, std::min(s.rows, r + rows_per_chunk)});
    }
  }
  pool->ParallelFor(static_cast<int64_t>(chunks.size()),
                    [&chunks, stream](int64_t i) {
                      const Chunk& c = chunks[static_cast<size_t>(i)];
                      RunRows(*c.segment, c.row_begin, c.row_end, stream);
                    });
}

}  // namespace normserve
