// Test data for the kernel benchmarks: large buffers filled once per dtype
// and reused, so that setting up a DRAM-sized case does not dominate a run.
#ifndef NORMSERVE_BENCH_BENCH_BUFFERS_H_
#define NORMSERVE_BENCH_BENCH_BUFFERS_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "kernels/dtype.h"

namespace normserve::bench {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

inline Buffer Allocate(size_t bytes) {
  void* p = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  std::memset(p, 0, bytes);  // fault the pages in now, not while timing
  return Buffer(static_cast<uint8_t*>(p));
}

// `bytes` of N(0,1) values of `dtype`; the same buffer for every caller
// asking for at most the largest size seen so far.
inline const uint8_t* RandomInput(DType dtype, size_t bytes) {
  static std::map<DType, std::pair<size_t, Buffer>> cache;
  auto& entry = cache[dtype];
  if (entry.first < bytes) {
    entry.second = Allocate(bytes);
    entry.first = bytes;
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    const size_t n = bytes / DTypeSize(dtype);
    uint8_t* p = entry.second.get();
    for (size_t i = 0; i < n; ++i) {
      const float v = dist(rng);
      if (dtype == DType::kFloat32) {
        std::memcpy(p + 4 * i, &v, 4);
      } else {
        const uint16_t h =
            dtype == DType::kFloat16 ? FloatToHalf(v) : FloatToBFloat16(v);
        std::memcpy(p + 2 * i, &h, 2);
      }
    }
  }
  return entry.second.get();
}

// A destination buffer of at least `bytes`, shared by all benchmarks.
inline uint8_t* Output(size_t bytes) {
  static size_t size = 0;
  static Buffer buffer;
  if (size < bytes) {
    buffer = Allocate(bytes);
    size = bytes;
  }
  return buffer.get();
}

}  // namespace normserve::bench

#endif  // NORMSERVE_BENCH_BENCH_BUFFERS_H_
