// Internal entry points of the row kernel; include only from kernels/.
#ifndef NORMSERVE_KERNELS_INTERNAL_NORMALIZE_ROWS_H_
#define NORMSERVE_KERNELS_INTERNAL_NORMALIZE_ROWS_H_

#include <cstdint>

#include "kernels/normalize.h"

namespace normserve::internal {

// The SIMD float kernel. With streaming_stores, outputs are written with
// non-temporal (cache-bypassing) stores where the target supports them: for
// batches whose output would only evict useful data from the caches. The
// output bits are the same either way.
void NormalizeRowsSimd(const RowSegment& segment, int64_t row_begin,
                       int64_t row_end, bool streaming_stores);

// Whether the target the SIMD kernel runs on fuses its multiply-adds (x86
// AVX2 and AVX-512, Arm NEON) or rounds the product first (SSSE3,
// SSE4, the emulated fallback). Targets of one class give the same bits.
bool KernelTargetFusesMultiplyAdd();

}  // namespace normserve::internal

#endif  // NORMSERVE_KERNELS_INTERNAL_NORMALIZE_ROWS_H_
