// Google Benchmark suite for the CUDA kernels, against the device's own
// copy speed measured in the same run.
//
// BM_CudaNormalize/{dtype}/{kind}/{D} normalizes kBytes of input (enough
// rows to fill any current GPU many times over, and far beyond L2) into the
// same dtype, with γ and β; BM_CudaCopy/{dtype}/{D} copies the same input
// bytes device to device (cudaMemcpyAsync). Both are timed with CUDA events
// (manual time) and count bytes read + bytes written, so bytes_per_second
// of the two compare directly; each normalize case also reports
// `vs_copy`, its bandwidth over a device-to-device copy of the same bytes
// measured just before it (1.0 = copy speed).
//
// BM_CudaAddNorm/{dtype}/{D} is the "add & norm" call of a transformer
// layer on the same rows: LayerNorm of x + residual with γ and β, writing
// y and the sum; it moves four arrays, so `vs_copy` compares it with a
// copy moving the same bytes.
//
// BM_CudaTuning/{dtype}/{D}/{norm}/{staged}/{buffers}/{rows_per_group}/
// {residual}/{weights} runs LayerNorm (norm = 0), add & norm (1, as
// BM_CudaAddNorm) or RMSNorm with γ (2) on the same rows through the
// internal launch, either
// with staging off (staged = 0: the register kernels) or staged with the
// given StagedTuning (residual and weights: StagedTuning::Residual's and
// ::Weights' values; buffers 0: kAutoStages; rows_per_group -1:
// kAutoRowsPerGroup, so that with buffers 0, rows_per_group -1, residual 0
// and weights 0 the case is the default launch; every other staged case
// is staged even where the default launch takes the register kernel:
// StagedTuning::Stage::kAlways), so that one run
// measures the launch choices against each other on this GPU; the label
// names the choice, and bench/tuning_report.py tabulates them. It is left
// out of the default run of tests/gpu_checks.sh's benchmark step, which
// runs it as a step of its own.
//
// Without a device it prints why and exits 0. Run:
//   build/bench/normalize_cuda_bench [--benchmark_format=json]
#include <cuda_runtime_api.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cuda/internal/kernel_args.h"
#include "kernels/cuda/internal/kernel_launch.h"
#include "kernels/cuda/internal/staged_rows.h"
#include "kernels/cuda/launch_plan.h"
#include "kernels/cuda/normalize_cuda.h"
#include "kernels/dtype.h"

namespace normserve::cuda {
namespace {

constexpr int64_t kBytes = int64_t{512} << 20;  // input bytes per case

// Device buffers shared by every case (allocated once, the largest size).
struct Buffers {
  void* input = nullptr;
  void* output = nullptr;
  void* residual = nullptr;  // BM_CudaAddNorm only (allocated on first use)
  void* sum = nullptr;
  float* gamma = nullptr;
  float* beta = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  int filled = -1;  // the DType the input holds N(0,1) values of
};

Buffers& Shared() {
  static Buffers b = [] {
    Buffers b;
    const size_t in_bytes = static_cast<size_t>(kBytes);
    const size_t out_bytes = static_cast<size_t>(kBytes);
    cudaMalloc(&b.input, in_bytes);
    cudaMalloc(&b.output, out_bytes);
    cudaMalloc(reinterpret_cast<void**>(&b.gamma), 1 << 24);
    cudaMalloc(reinterpret_cast<void**>(&b.beta), 1 << 24);
    std::vector<float> ones(1 << 22, 1.25f);
    cudaMemcpy(b.gamma, ones.data(), 1 << 24, cudaMemcpyHostToDevice);
    cudaMemcpy(b.beta, ones.data(), 1 << 24, cudaMemcpyHostToDevice);
    cudaEventCreate(&b.start);
    cudaEventCreate(&b.stop);
    return b;
  }();
  return b;
}

// Fills the input with N(0,1) values of `dtype` (once per dtype change).
void FillInput(DType dtype) {
  Buffers& b = Shared();
  if (b.filled == static_cast<int>(dtype)) return;
  const size_t n = static_cast<size_t>(kBytes) / DTypeSize(dtype);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  if (dtype == DType::kFloat32) {
    std::vector<float> host(n);
    for (float& f : host) f = dist(rng);
    cudaMemcpy(b.input, host.data(), n * 4, cudaMemcpyHostToDevice);
  } else {
    std::vector<uint16_t> host(n);
    for (uint16_t& h : host) {
      const float f = dist(rng);
      h = dtype == DType::kFloat16 ? FloatToHalf(f) : FloatToBFloat16(f);
    }
    cudaMemcpy(b.input, host.data(), n * 2, cudaMemcpyHostToDevice);
  }
  b.filled = static_cast<int>(dtype);
}

// Seconds of `reps` runs of `body` on the default stream.
template <typename F>
double TimeOnDevice(int reps, F&& body) {
  Buffers& b = Shared();
  cudaEventRecord(b.start);
  for (int i = 0; i < reps; ++i) body();
  cudaEventRecord(b.stop);
  cudaEventSynchronize(b.stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, b.start, b.stop);
  return ms / 1e3 / reps;
}

double CopySeconds(int64_t bytes) {
  Buffers& b = Shared();
  auto copy = [&] {
    cudaMemcpyAsync(b.output, b.input, static_cast<size_t>(bytes),
                    cudaMemcpyDeviceToDevice);
  };
  copy();
  return TimeOnDevice(5, copy);
}

void BM_CudaCopy(benchmark::State& state) {
  const auto dtype = static_cast<DType>(state.range(0));
  const int64_t d = state.range(1);
  const int64_t row_bytes = d * static_cast<int64_t>(DTypeSize(dtype));
  const int64_t bytes = kBytes / row_bytes * row_bytes;
  for (auto _ : state) state.SetIterationTime(CopySeconds(bytes));
  state.SetBytesProcessed(state.iterations() * 2 * bytes);
}

// `rows` rows of D = `d` of the shared input (N(0,1) values of `dtype`)
// into the shared output, in the same dtype, with γ and β for LayerNorm and
// γ alone for RMSNorm (as torch.nn.functional.rms_norm takes it, and as
// the RMSNorm of Llama-style models has it).
DeviceRows SharedRows(DType dtype, NormKind kind, int64_t d, int64_t rows) {
  FillInput(dtype);
  Buffers& b = Shared();
  DeviceRows r;
  r.params.kind = kind;
  r.params.dim = d;
  r.params.gamma = b.gamma;
  r.params.beta = kind == NormKind::kLayerNorm ? b.beta : nullptr;
  r.input_dtype = r.output_dtype = dtype;
  r.input = b.input;
  r.output = b.output;
  r.rows = rows;
  return r;
}

// Times launch() (which enqueues the normalization of r on the default
// stream) per benchmark iteration, counting `arrays` arrays of r's rows
// read or written, and its bandwidth over a device-to-device copy of the
// same bytes as `vs_copy`.
template <typename Launch>
void TimeLaunches(benchmark::State& state, const DeviceRows& r, int arrays,
                  Launch launch) {
  const absl::Status first = launch();
  if (!first.ok() || cudaDeviceSynchronize() != cudaSuccess) {
    state.SkipWithError(first.ok() ? "kernel failed"
                                   : first.ToString().c_str());
    return;
  }
  const int64_t bytes =
      r.rows * r.params.dim * static_cast<int64_t>(DTypeSize(r.input_dtype));
  const double copy = CopySeconds(bytes);  // moves 2 arrays
  double total = 0;
  for (auto _ : state) {
    const double s = TimeOnDevice(3, [&] { (void)launch(); });
    state.SetIterationTime(s);
    total += s;
  }
  state.SetBytesProcessed(state.iterations() * arrays * bytes);
  state.counters["vs_copy"] =
      arrays / 2.0 * copy / (total / static_cast<double>(state.iterations()));
}

// TimeLaunches through the public entry point, NormalizeRowsCuda.
void TimeRows(benchmark::State& state, const DeviceRows& r, int arrays) {
  TimeLaunches(state, r, arrays, [&] { return NormalizeRowsCuda(r, nullptr); });
  state.SetLabel(
      RowMappingName(PlanLaunch(r.params.dim, r.input_dtype).mapping));
}

void BM_CudaNormalize(benchmark::State& state) {
  const auto dtype = static_cast<DType>(state.range(0));
  const auto kind = static_cast<NormKind>(state.range(1));
  const int64_t d = state.range(2);
  const int64_t rows = kBytes / (d * static_cast<int64_t>(DTypeSize(dtype)));
  TimeRows(state, SharedRows(dtype, kind, d, rows), 2);
}

void Cases(benchmark::internal::Benchmark* b, bool with_kind) {
  for (DType t : {DType::kFloat32, DType::kBFloat16, DType::kFloat16}) {
    for (int64_t d : {768, 1024, 4096, 8192, 16384, 32768, 65536}) {
      if (with_kind) {
        for (NormKind k : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
          b->Args({static_cast<int64_t>(t), static_cast<int64_t>(k), d});
        }
      } else {
        b->Args({static_cast<int64_t>(t), d});
      }
    }
  }
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// Gives r a residual (the input's values, so that z = 2x) and a sum
// output; false, with the benchmark skipped, without the device memory.
bool AddResidual(benchmark::State& state, DeviceRows& r) {
  Buffers& b = Shared();
  if (b.residual == nullptr &&
      (cudaMalloc(&b.residual, static_cast<size_t>(kBytes)) != cudaSuccess ||
       cudaMalloc(&b.sum, static_cast<size_t>(kBytes)) != cudaSuccess)) {
    state.SkipWithError("no device memory for the residual and the sum");
    return false;
  }
  cudaMemcpy(b.residual, b.input, static_cast<size_t>(kBytes),
             cudaMemcpyDeviceToDevice);
  r.residual = b.residual;
  r.sum_output = b.sum;
  return true;
}

void BM_CudaAddNorm(benchmark::State& state) {
  const auto dtype = static_cast<DType>(state.range(0));
  const int64_t d = state.range(1);
  const int64_t rows = kBytes / (d * static_cast<int64_t>(DTypeSize(dtype)));
  DeviceRows r = SharedRows(dtype, NormKind::kLayerNorm, d, rows);
  if (!AddResidual(state, r)) return;
  TimeRows(state, r, 4);  // x, residual, y, sum
}

void BM_CudaTuning(benchmark::State& state) {
  const auto dtype = static_cast<DType>(state.range(0));
  const int64_t d = state.range(1);
  const bool add = state.range(2) == 1;
  const NormKind kind =
      state.range(2) == 2 ? NormKind::kRmsNorm : NormKind::kLayerNorm;
  const bool staged = state.range(3) != 0;
  StagedTuning tuning;
  tuning.warp_stages = tuning.block_stages = tuning.streaming_stages =
      static_cast<int>(state.range(4));
  tuning.rows_per_group = static_cast<int>(state.range(5));
  tuning.residual = static_cast<StagedTuning::Residual>(state.range(6));
  tuning.weights = static_cast<StagedTuning::Weights>(state.range(7));
  // Any case but the default launch measures a staged choice, also where
  // the default takes the register kernel (StagesLaunch).
  const bool default_launch =
      staged && tuning.warp_stages == StagedTuning::kAutoStages &&
      tuning.rows_per_group == StagedTuning::kAutoRowsPerGroup &&
      state.range(6) == 0 && state.range(7) == 0;
  tuning.stage = default_launch ? StagedTuning::Stage::kAuto
                                : StagedTuning::Stage::kAlways;
  const int64_t rows = kBytes / (d * static_cast<int64_t>(DTypeSize(dtype)));
  DeviceRows r = SharedRows(dtype, kind, d, rows);
  if (add && !AddResidual(state, r)) return;
  const LaunchPlan plan =
      PlanLaunch(d, dtype, staged ? Staging::kAuto : Staging::kOff);
  const internal::KernelArgs args = internal::KernelArgsFor(r);
  // What the launch runs: a tuning whose buffers do not fit in shared
  // memory runs the register kernels, or stages x alone, instead; such a
  // case is skipped (n/a in bench/tuning_report.py), not timed under the
  // wrong name.
  internal::LaunchReport report;
  const int error =
      internal::LaunchNormalize(args, plan, nullptr, tuning, &report);
  if (error != 0 || cudaDeviceSynchronize() != cudaSuccess) {
    state.SkipWithError("kernel launch failed");
    return;
  }
  using Residual = StagedTuning::Residual;
  const bool honoured =
      !StagesLaunch(plan, tuning, d, add) ||
      (report.staged && report.stages == RowBuffers(plan, tuning, add) &&
       (!add || tuning.residual != Residual::kBeside ||
        report.residual_staged) &&
       (!add || tuning.residual != Residual::kFromMemory ||
        !report.residual_staged) &&
       (tuning.weights != StagedTuning::Weights::kLoaded ||
        (plan.mapping == RowMapping::kBlockPerRow && !report.weights_held)));
  if (!honoured) {
    const std::string why =
        tuning.weights == StagedTuning::Weights::kLoaded && report.staged &&
                report.weights_held
            ? std::string(
                  "γ and β are held: the launch has no kernel that "
                  "reads them per row")
            : std::string(
                  "the tuning's buffers do not fit in shared memory: the "
                  "launch runs ") +
                  (report.staged ? "x alone staged" : "the register kernel");
    state.SkipWithError(why.c_str());
    return;
  }
  TimeLaunches(state, r, add ? 4 : 2, [&] {
    return CudaStatus(internal::LaunchNormalize(args, plan, nullptr, tuning),
                      "normalize kernel launch");
  });
  std::string label = RowMappingName(plan.mapping);
  if (!report.staged) {
    label += ", registers";
  } else {
    label += ", staged, " + std::to_string(report.stages) + " buffers, ";
    const int per_group = RowsPerGroup(plan, tuning);
    label += per_group == 0 ? std::string("resident blocks")
                            : std::to_string(per_group) + " rows per group";
    if (tuning.rows_per_group == StagedTuning::kAutoRowsPerGroup) {
      label += " (default)";
    }
    label += ", " + std::to_string(report.blocks) + " blocks";
    if (add) {
      label += report.residual_staged ? ", residual beside x"
                                      : ", residual from memory";
    }
    if (plan.mapping == RowMapping::kBlockPerRow) {
      const char* weights = kind == NormKind::kRmsNorm ? "γ" : "γβ";
      label += std::string(", ") + weights +
               (report.weights_held ? " held" : " per row");
    }
  }
  state.SetLabel(label);
}

// The shapes where the plan stages rows (float32 from D = 4096, 16-bit at
// every D), LayerNorm, add & norm and RMSNorm, each with staging off, the
// default launch, and 2–4 buffers with three grids; add & norm also with
// its residual beside x and from memory (2 buffers, resident blocks);
// LayerNorm under the block mapping also with γ and β read per row (2
// buffers; the default grid, and resident blocks or 8 rows per group,
// whichever is not the default). RMSNorm where its default is not
// LayerNorm's measured one: 16-bit D = 1024 (three buffers, from
// LayerNorm's table alone) and float32 D = 4096 (the register kernel by
// default, from LayerNorm's measurement alone). Float32 LayerNorm at D = 8192,
// where the register kernel has not been measured since the staged kernels
// became faster at 4096 and 16384. And a 16-bit streaming row that two buffers
// hold (D = 32768: one by default).
void TuningCases(benchmark::internal::Benchmark* b) {
  const auto f32 = static_cast<int64_t>(DType::kFloat32);
  const auto bf16 = static_cast<int64_t>(DType::kBFloat16);
  constexpr int64_t kRms = 2;
  const int64_t shapes[][3] = {
      {f32, 4096, 0}, {f32, 8192, 0},     {f32, 16384, 0},   {f32, 4096, 1},
      {bf16, 768, 0}, {bf16, 1024, 0},    {bf16, 4096, 0},   {bf16, 16384, 0},
      {bf16, 768, 1}, {bf16, 1024, kRms}, {f32, 4096, kRms}, {bf16, 32768, 0}};
  for (const auto& s : shapes) {
    constexpr int64_t kAutoRows = StagedTuning::kAutoRowsPerGroup;
    b->Args({s[0], s[1], s[2], 0, 2, 0, 0, 0});
    b->Args({s[0], s[1], s[2], 1, StagedTuning::kAutoStages, kAutoRows, 0, 0});
    for (int64_t buffers = 2; buffers <= kMaxStagedBuffers; ++buffers) {
      for (int64_t rows_per_group : {0, 8, 32}) {
        b->Args({s[0], s[1], s[2], 1, buffers, rows_per_group, 0, 0});
      }
    }
    if (s[2] == 1) {
      for (auto residual : {StagedTuning::Residual::kBeside,
                            StagedTuning::Residual::kFromMemory}) {
        b->Args({s[0], s[1], s[2], 1, 2, 0, static_cast<int64_t>(residual), 0});
      }
    }
    const LaunchPlan plan = PlanLaunch(s[1], static_cast<DType>(s[0]));
    if (s[2] == 0 && plan.mapping == RowMapping::kBlockPerRow) {
      const auto loaded = static_cast<int64_t>(StagedTuning::Weights::kLoaded);
      // The default grid, and the other of resident blocks and 8 rows per
      // group (reading γ and β per row, a block no longer loads them
      // first: short-lived blocks may pay where held weights did not).
      const bool resident = RowsPerGroup(plan, StagedTuning{}) == 0;
      b->Args({s[0], s[1], s[2], 1, 2, kAutoRows, 0, loaded});
      b->Args({s[0], s[1], s[2], 1, 2, resident ? 8 : 0, 0, loaded});
    }
  }
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_CudaCopy)->Apply([](auto* b) { Cases(b, false); });
BENCHMARK(BM_CudaNormalize)->Apply([](auto* b) { Cases(b, true); });
BENCHMARK(BM_CudaAddNorm)->Apply([](auto* b) { Cases(b, false); });
BENCHMARK(BM_CudaTuning)->Apply(TuningCases);

}  // namespace
}  // namespace normserve::cuda

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  const absl::Status present = normserve::cuda::CudaDevicePresent();
  if (!present.ok()) {
    std::fprintf(stderr, "normalize_cuda_bench: skipped: %s\n",
                 std::string(present.message()).c_str());
    return 0;
  }
  const std::string device = normserve::cuda::CudaDeviceName(0);
  std::fprintf(stderr, "normalize_cuda_bench: %s\n", device.c_str());
  benchmark::AddCustomContext("cuda_device", device);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
