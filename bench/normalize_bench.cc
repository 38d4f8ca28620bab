// Google Benchmark suite for the CPU kernels.
//
// BM_Normalize/{dtype}/{kind}/{D}/{footprint}/{threads} normalizes
// footprint-sized input of the dtype into the same dtype; BM_Memcpy/
// {footprint}/{threads} copies the same bytes. Footprints: 256 KiB (input
// and output stay in one core's L2: a server batch of a few hundred rows),
// 1 MiB, 64 MiB (L3) and 1 GiB (DRAM). bytes_per_second counts bytes read +
// bytes written for both, so kernel/memcpy is the fraction of copy speed the
// kernel reaches. bench/compare_cpu.py runs a footprint of it beside oneDNN,
// PyTorch and ONNX Runtime.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "bench/bench_buffers.h"
#include "benchmark/benchmark.h"
#include "kernels/normalize.h"
#include "kernels/thread_pool.h"

namespace normserve::bench {
namespace {

constexpr int64_t kHot = int64_t{256} << 10;
constexpr int64_t kL2 = int64_t{1} << 20;
constexpr int64_t kL3 = int64_t{64} << 20;
constexpr int64_t kDram = int64_t{1} << 30;

ThreadPool* Pool(int threads) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[threads];
  if (p == nullptr) p = std::make_unique<ThreadPool>(threads - 1);
  return p.get();
}

// With add_norm: input + residual, normalized, with the sum returned (what
// add & norm requests ask for). The footprint is the input's; bytes/s counts
// every tensor read and written.
void RunNormalize(benchmark::State& state, DType dtype, NormKind kind,
                  int64_t d, int64_t footprint, int threads, bool add_norm) {
  const int64_t elem = static_cast<int64_t>(DTypeSize(dtype));
  const int64_t rows = std::max<int64_t>(1, footprint / (d * elem));
  const int64_t bytes = rows * d * elem;

  std::vector<float> gamma(static_cast<size_t>(d), 1.5f),
      beta(static_cast<size_t>(d), 0.25f);
  NormParams p;
  p.kind = kind;
  p.dim = d;
  p.gamma = gamma.data();
  p.beta = beta.data();
  RowSegment s;
  s.params = &p;
  s.input_dtype = s.output_dtype = dtype;
  s.input = RandomInput(dtype, static_cast<size_t>(bytes));
  s.output = Output(static_cast<size_t>(bytes));
  s.rows = rows;
  if (add_norm) {
    s.residual = RandomInput(dtype, static_cast<size_t>(bytes));
    s.sum_output = Output(static_cast<size_t>(bytes));
  }
  ThreadPool* pool = Pool(threads);
  for (auto _ : state) {
    // One segment per chunk of rows, as a batch of requests would be.
    NormalizeSegments({&s, 1}, pool);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * (add_norm ? 4 : 2) * bytes);
  state.counters["rows"] = static_cast<double>(rows);
}

void BM_Normalize(benchmark::State& state) {
  RunNormalize(state, static_cast<DType>(state.range(0)),
               static_cast<NormKind>(state.range(1)), state.range(2),
               state.range(3), static_cast<int>(state.range(4)), false);
}

// BM_AddNorm/{dtype}/{D}/{footprint}/{threads}: LayerNorm of input +
// residual, returning the sum.
void BM_AddNorm(benchmark::State& state) {
  RunNormalize(state, static_cast<DType>(state.range(0)), NormKind::kLayerNorm,
               state.range(1), state.range(2), static_cast<int>(state.range(3)),
               true);
}

void BM_Memcpy(benchmark::State& state) {
  const int64_t bytes = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  const uint8_t* in = RandomInput(DType::kFloat32, static_cast<size_t>(bytes));
  uint8_t* out = Output(static_cast<size_t>(bytes));
  ThreadPool* pool = Pool(threads);
  const int64_t chunk = std::max<int64_t>(4096, bytes / (threads * 16));
  const int64_t chunks = (bytes + chunk - 1) / chunk;
  for (auto _ : state) {
    pool->ParallelFor(chunks, [&](int64_t i) {
      const int64_t begin = i * chunk;
      std::memcpy(out + begin, in + begin,
                  static_cast<size_t>(std::min(chunk, bytes - begin)));
    });
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 2 * bytes);
}

void NormalizeArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"dtype", "kind", "D", "bytes", "threads"});
  for (int threads : {1, 2}) {
    for (int64_t footprint : {kHot, kL2, kL3, kDram}) {
      for (int dtype : {0, 1, 2}) {
        for (int kind : {0, 1}) {
          for (int64_t d : {64, 768, 1024, 2048, 4096, 8192, 16384}) {
            b->Args({dtype, kind, d, footprint, threads});
          }
        }
      }
    }
  }
}

void AddNormArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"dtype", "D", "bytes", "threads"});
  for (int threads : {1, 2}) {
    for (int64_t footprint : {kHot, kL2, kDram}) {
      for (int dtype : {0, 1, 2}) {
        for (int64_t d : {768, 4096, 16384}) {
          b->Args({dtype, d, footprint, threads});
        }
      }
    }
  }
}

void MemcpyArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"bytes", "threads"});
  for (int threads : {1, 2}) {
    for (int64_t footprint : {kHot, kL2, kL3, kDram}) {
      // The same bytes as each dtype's kernel case moves.
      b->Args({footprint, threads});
      b->Args({footprint / 2 * 2, threads});
    }
  }
}

BENCHMARK(BM_Memcpy)->Apply(MemcpyArgs)->UseRealTime();
BENCHMARK(BM_Normalize)->Apply(NormalizeArgs)->UseRealTime();
BENCHMARK(BM_AddNorm)->Apply(AddNormArgs)->UseRealTime();

}  // namespace
}  // namespace normserve::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // The SIMD target Highway chose on this CPU: results of different targets
  // do not compare.
  benchmark::AddCustomContext("kernel_target", normserve::KernelTargetName());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
