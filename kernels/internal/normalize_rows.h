// Internal entry points of the row kernel; include only from kernels/.
#ifndef NORMSERVE_KERNELS_INTERNAL_NORMALIZE_ROWS_H_
#define NORMSERVE_KERNELS_INTERNAL_NORMALIZE_ROWS_H_

#include <cstdint>

#include "kernels/normalize.h"

namespace normserve::internal {

// As NormalizeRows, but writes outputs with non-temporal (cache-bypassing)
// stores where the target supports them: for batches whose output would
// only evict useful data from the caches. Same output bits.
void NormalizeRowsStreaming(const RowSegment& segment, int64_t row_begin,
                            int64_t row_end);

}  // namespace normserve::internal

#endif  // NORMSERVE_KERNELS_INTERNAL_NORMALIZE_ROWS_H_
