// Google Benchmark suite for the CUDA backend (server/backend.h,
// MakeCudaBackend): whole batches in pageable host memory, as the server
// hands them over. The backend packs them into its pinned staging buffers,
// copies them to the GPU, normalizes, copies back and unpacks into the
// jobs' outputs, pipelined over its streams. Against two references for
// such a path, measured in the same run just before each case:
//   - host copy: one thread's memcpy of the batch's input bytes and of its
//     output bytes, what packing and unpacking cost on the batch's thread
//     alone (a backend with copy threads may beat it: `vs_host_copy` > 1);
//   - PCIe: the input bytes host→device and the output bytes device→host
//     between pinned buffers, both directions at once on two streams (the
//     ceiling of any path through host memory).
//
// BM_CudaBackend/{dtype}/{D}/{input MiB}/{copy threads} runs batches of 8
// jobs with γ and β (output in the input dtype), with 4 copy threads and
// with none (CudaBackendOptions::copy_threads; the default takes 4 on a
// machine of 16 cores or more), and the 64 MiB batches also with 8 and 16
// (where 4 reached 0.40 of PCIe on an H100 host: how many it takes to
// approach it). bytes_per_second counts bytes in + out
// (the mean batch); `vs_host_copy` and `vs_pcie` are each reference's time
// over the backend's, best runs of each (1.0 = as fast as the reference),
// `host_copy_GBps` and `pcie_GBps` the references' bandwidths over the same
// bytes. BM_CpuBackend runs the same batches on the CPU backend with a
// thread per core, for comparison on the same host.
//
// Without a device it prints why and exits 0. Run:
//   build/bench/cuda_backend_bench [--benchmark_format=json]
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_buffers.h"
#include "benchmark/benchmark.h"
#include "kernels/dtype.h"
#include "kernels/normalize.h"
#include "kernels/thread_pool.h"
#include "server/backend.h"

namespace normserve {
namespace {

constexpr int kJobs = 8;

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A batch of kJobs jobs of D = d, `input_bytes` of N(0,1) input in all,
// in the benchmarks' shared buffers (bench/bench_buffers.h).
struct Batch {
  NormParams params;
  std::vector<float> gamma, beta;
  const uint8_t* input = nullptr;
  uint8_t* output = nullptr;
  size_t array_bytes = 0;  // of the input, and of the output
  std::vector<Job> jobs;
  std::vector<Job*> pointers;
  int64_t bytes = 0;  // in + out
};

std::unique_ptr<Batch> MakeBatch(DType dtype, int64_t d, int64_t input_bytes) {
  auto b = std::make_unique<Batch>();
  const int64_t row_bytes = d * static_cast<int64_t>(DTypeSize(dtype));
  const int64_t rows_per_job =
      std::max<int64_t>(1, input_bytes / row_bytes / kJobs);
  const int64_t rows = rows_per_job * kJobs;
  b->gamma.assign(static_cast<size_t>(d), 1.25f);
  b->beta.assign(static_cast<size_t>(d), -0.5f);
  b->params.dim = d;
  b->params.gamma = b->gamma.data();
  b->params.beta = b->beta.data();
  b->array_bytes = static_cast<size_t>(rows * row_bytes);
  b->input = bench::RandomInput(dtype, b->array_bytes);
  b->output = bench::Output(b->array_bytes);
  b->jobs.resize(kJobs);
  for (int j = 0; j < kJobs; ++j) {
    RowSegment& s = b->jobs[j].segment;
    s.params = &b->params;
    s.input_dtype = s.output_dtype = dtype;
    s.input = b->input + j * rows_per_job * row_bytes;
    s.output = b->output + j * rows_per_job * row_bytes;
    s.rows = rows_per_job;
    b->jobs[j].rows = rows_per_job;
    b->jobs[j].key.dim = d;
    b->pointers.push_back(&b->jobs[j]);
  }
  b->bytes = 2 * rows * row_bytes;
  return b;
}

// Seconds to copy the input into a staging buffer and from there into the
// output, one memcpy each on this thread (what the backend's packing and
// unpacking do without copy threads).
double HostCopySeconds(const Batch& b) {
  const bench::Buffer staging = bench::Allocate(b.array_bytes);
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const Clock::time_point start = Clock::now();
    std::memcpy(staging.get(), b.input, b.array_bytes);
    std::memcpy(b.output, staging.get(), b.array_bytes);
    benchmark::ClobberMemory();
    best = std::min(best, SecondsSince(start));
  }
  return best;
}

// Seconds per host→device copy of the input bytes and device→host copy of
// the output bytes, pinned, on two streams at once; 0 if CUDA fails.
double PcieSeconds(const Batch& b) {
  const size_t in = b.array_bytes, out = b.array_bytes;
  void *host_in = nullptr, *host_out = nullptr, *dev_in = nullptr,
       *dev_out = nullptr;
  cudaStream_t up = nullptr, down = nullptr;
  double best = 0;
  if (cudaHostAlloc(&host_in, in, cudaHostAllocDefault) == cudaSuccess &&
      cudaHostAlloc(&host_out, out, cudaHostAllocDefault) == cudaSuccess &&
      cudaMalloc(&dev_in, in) == cudaSuccess &&
      cudaMalloc(&dev_out, out) == cudaSuccess &&
      cudaStreamCreateWithFlags(&up, cudaStreamNonBlocking) == cudaSuccess &&
      cudaStreamCreateWithFlags(&down, cudaStreamNonBlocking) == cudaSuccess) {
    best = 1e30;
    for (int rep = 0; rep < 4; ++rep) {  // the first warms up
      const Clock::time_point start = Clock::now();
      const bool ok =
          cudaMemcpyAsync(dev_in, host_in, in, cudaMemcpyHostToDevice, up) ==
              cudaSuccess &&
          cudaMemcpyAsync(host_out, dev_out, out, cudaMemcpyDeviceToHost,
                          down) == cudaSuccess &&
          cudaStreamSynchronize(up) == cudaSuccess &&
          cudaStreamSynchronize(down) == cudaSuccess;
      if (!ok) {
        best = 0;
        break;
      }
      if (rep > 0) best = std::min(best, SecondsSince(start));
    }
  }
  if (up != nullptr) cudaStreamDestroy(up);
  if (down != nullptr) cudaStreamDestroy(down);
  if (dev_in != nullptr) cudaFree(dev_in);
  if (dev_out != nullptr) cudaFree(dev_out);
  if (host_in != nullptr) cudaFreeHost(host_in);
  if (host_out != nullptr) cudaFreeHost(host_out);
  cudaGetLastError();
  return best;
}

// The CUDA backends the cases share, by copy threads; main starts the one
// with 4 (or finds there is no device).
std::map<int, std::unique_ptr<Backend>>& CudaBackends() {
  static auto* backends = new std::map<int, std::unique_ptr<Backend>>;
  return *backends;
}

Backend* CudaBackendWith(int copy_threads) {
  std::unique_ptr<Backend>& b = CudaBackends()[copy_threads];
  if (b == nullptr) {
    CudaBackendOptions options;
    options.copy_threads = copy_threads;
    absl::StatusOr<std::unique_ptr<Backend>> made = MakeCudaBackend(options);
    if (made.ok()) b = *std::move(made);
  }
  return b.get();
}

// Seconds of the fastest backend.Run of the batch (after one run to warm
// up), or 0 after an error (the case then reports it).
double TimeBackend(benchmark::State& state, Backend& backend, Batch& b) {
  const absl::Status first = backend.Run(b.pointers);
  if (!first.ok()) {
    state.SkipWithError(first.ToString().c_str());
    return 0;
  }
  double best = 1e30;
  for (auto _ : state) {
    const Clock::time_point start = Clock::now();
    const absl::Status s = backend.Run(b.pointers);
    const double seconds = SecondsSince(start);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return 0;
    }
    state.SetIterationTime(seconds);
    best = std::min(best, seconds);
  }
  state.SetBytesProcessed(state.iterations() * b.bytes);
  return best;
}

void BM_CudaBackend(benchmark::State& state) {
  const auto dtype = static_cast<DType>(state.range(0));
  const std::unique_ptr<Batch> b =
      MakeBatch(dtype, state.range(1), state.range(2) << 20);
  Backend* backend = CudaBackendWith(static_cast<int>(state.range(3)));
  if (backend == nullptr) {
    state.SkipWithError("the CUDA backend did not start");
    return;
  }
  const double host_copy = HostCopySeconds(*b);
  const double pcie = PcieSeconds(*b);
  const double per_batch = TimeBackend(state, *backend, *b);  // best
  if (per_batch <= 0) return;
  const double bytes = static_cast<double>(b->bytes);
  state.counters["vs_host_copy"] = host_copy / per_batch;
  state.counters["host_copy_GBps"] = bytes / host_copy / 1e9;
  if (pcie > 0) {
    state.counters["vs_pcie"] = pcie / per_batch;
    state.counters["pcie_GBps"] = bytes / pcie / 1e9;
  }
}

void BM_CpuBackend(benchmark::State& state) {
  const auto dtype = static_cast<DType>(state.range(0));
  const std::unique_ptr<Batch> b =
      MakeBatch(dtype, state.range(1), state.range(2) << 20);
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  static ThreadPool* pool = new ThreadPool(std::max(0, cores - 1));
  static Backend* backend = MakeCpuBackend(pool).release();
  TimeBackend(state, *backend, *b);
}

// {dtype, D, MiB of input} and, for the CUDA backend, its copy threads:
// 4 and none, so that their gain is measured in one run (64 MiB: also 8
// and 16).
void Cases(benchmark::internal::Benchmark* b, bool cuda) {
  for (DType t : {DType::kFloat32, DType::kBFloat16}) {
    for (int64_t d : {768, 4096}) {
      for (int64_t mib : {1, 8, 64}) {
        if (!cuda) {
          b->Args({static_cast<int64_t>(t), d, mib});
          continue;
        }
        for (int64_t threads : {4, 0, 8, 16}) {
          if (threads > 4 && mib < 64) continue;
          b->Args({static_cast<int64_t>(t), d, mib, threads});
        }
      }
    }
  }
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_CudaBackend)->Apply([](auto* b) { Cases(b, true); });
BENCHMARK(BM_CpuBackend)->Apply([](auto* b) { Cases(b, false); });

}  // namespace
}  // namespace normserve

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  // The first backend of the cases, or why there is none.
  normserve::CudaBackendOptions options;
  options.copy_threads = 4;
  absl::StatusOr<std::unique_ptr<normserve::Backend>> cuda =
      normserve::MakeCudaBackend(options);
  if (!cuda.ok()) {
    std::fprintf(stderr, "cuda_backend_bench: skipped: %s\n",
                 std::string(cuda.status().message()).c_str());
    return 0;
  }
  std::fprintf(stderr, "cuda_backend_bench: %s\n", (*cuda)->Describe().c_str());
  benchmark::AddCustomContext("cuda_device", (*cuda)->Describe());
  normserve::CudaBackends()[options.copy_threads] = *std::move(cuda);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
