// The row loop of the staged mappings (launch_plan.h, "Staging"), written
// once for the device and the host: the staged kernels (normalize_cuda.cu)
// run it with cp.async copies into shared memory, and
// tests/cuda_row_algorithm_test.cc runs the same loop on host threads, with
// copies that land as early or as late as cp.async allows, in buffers sized
// as the launch sizes them. Include only from kernels/cuda/ and its tests.
#ifndef NORMSERVE_KERNELS_CUDA_INTERNAL_STAGED_ROWS_H_
#define NORMSERVE_KERNELS_CUDA_INTERNAL_STAGED_ROWS_H_

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/internal/kernel_launch.h"
#include "kernels/cuda/internal/normalize_row.h"
#include "kernels/cuda/launch_plan.h"

namespace normserve::cuda::internal {

// Rows of a staged launch at most (StagedRows).
inline constexpr int64_t kMaxStagedRows = int64_t{1} << 30;

// Packs of one buffer (`v` elements each): the row's x, and its residual
// after it where the residual is staged too.
NORMSERVE_HD int64_t StagedBufferPacks(const KernelArgs& a, int v) {
  return a.dim / v * (a.residual != nullptr && a.stage_residual ? 2 : 1);
}

// The buffers of row group `group` of a block (a.stages of them), in the
// block's shared memory at `smem`.
template <typename P>
NORMSERVE_HD P* StagedGroupBuffers(P* smem, const KernelArgs& a, int v,
                                   int group) {
  return smem + int64_t{group} * a.stages * StagedBufferPacks(a, v);
}

// Dynamic shared memory of a block of `groups` row groups: every group's
// buffers.
inline size_t StagedSharedBytes(const KernelArgs& a, int v, int groups) {
  return static_cast<size_t>(StagedBufferPacks(a, v)) * 16 *
         static_cast<size_t>(groups) * static_cast<size_t>(a.stages);
}

// The row loop of a row group: rows first, first + stride, … < rows, each
// staged a.stages − 1 rows ahead into `buffers` (a.stages of them, used in
// turn) by thread t of T (kPacks packs each at most); with a residual
// (staged beside x, or read from global memory), z = x + residual then
// replaces x in the buffer; then body(row, z) between sync() barriers of
// the row group.
//
// `copier` makes the copies of this thread, grouped as cp.async groups:
//   copier.template Copy<kPacks>(src, dst, packs, t, T)  packs t, t + T, …
//       of `packs` from src to dst, landing at the latest at a Wait that
//       leaves their group done;
//   copier.Commit()        closes the group of the copies since the last;
//   copier.Wait(pending)   returns once at most the newest `pending` groups
//                          of this thread are in flight.
//
// Staged launches have at most kMaxStagedRows rows, and a stride of at most
// the rows rounded up to a block: row numbers (and a row plus the stride)
// are 32-bit; rows ahead and a row's offset in packs are 64-bit.
template <int kPacks, typename In, RowVariant kV, typename Copier,
          typename Sync, typename Body>
NORMSERVE_HD void StagedRows(const KernelArgs& a, unsigned first,
                             unsigned stride,
                             Pack<typename In::Bits, kPackOf<In>>* buffers,
                             int t, int T, Copier& copier, Sync sync,
                             Body body) {
  using P = Pack<typename In::Bits, kPackOf<In>>;
  constexpr int V = kPackOf<In>;
  const auto rows = static_cast<unsigned>(a.rows);
  const auto packs = static_cast<unsigned>(a.dim / V);  // <= 2^14
  const int stages = a.stages;
  const bool residual = HasResidual<kV>(a);
  const bool staged_residual = residual && a.stage_residual;
  const unsigned buffer_packs = staged_residual ? 2 * packs : packs;
  const auto* x = static_cast<const P*>(a.input);
  const auto* r = static_cast<const P*>(a.residual);
  // Rows ahead are 64-bit: with many blocks (StagedTuning::rows_per_group)
  // the stride may be the row count, and three strides past a row pass
  // 2^32.
  auto stage = [&](uint64_t row, P* buffer) {
    if (row < rows) {
      const uint64_t offset = row * packs;
      copier.template Copy<kPacks>(x + offset, buffer, static_cast<int>(packs),
                                   t, T);
      if (staged_residual) {
        copier.template Copy<kPacks>(r + offset, buffer + packs,
                                     static_cast<int>(packs), t, T);
      }
    }
    copier.Commit();
  };
  for (int s = 0; s < stages - 1; ++s) {
    stage(first + uint64_t{stride} * s, buffers + s * buffer_packs);
  }
  int b = 0;
  for (unsigned row = first; row < rows; row += stride) {
    // Buffer b − 1 was read by the row before, which ended at a barrier.
    const int ahead_b = b == 0 ? stages - 1 : b - 1;
    stage(row + uint64_t{stride} * (stages - 1),
          buffers + ahead_b * buffer_packs);
    // Groups so far: this row's and the stages − 1 after it.
    copier.Wait(stages - 1);
    sync();
    P* buffer = buffers + b * buffer_packs;
    if (residual) {
      // Two calls, not one on a chosen pointer: nvcc then reads the staged
      // residual with shared loads, not generic ones.
      if (staged_residual) {
        AddStagedResidual<In, kPacks>(buffer, buffer + packs, packs, t, T);
      } else {
        AddStagedResidual<In, kPacks>(
            buffer, r + static_cast<uint64_t>(row) * packs, packs, t, T);
      }
      sync();  // every thread reads element 0 (the shift)
    }
    body(row, buffer);
    sync();  // buffer b is read: a later row may be staged into it
    b = b + 1 == stages ? 0 : b + 1;
  }
}

}  // namespace normserve::cuda::internal

#endif  // NORMSERVE_KERNELS_CUDA_INTERNAL_STAGED_ROWS_H_
