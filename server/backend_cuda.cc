// The CUDA backend: carries out a PipelinePlan (server/internal/
// cuda_pipeline.h) with pinned staging buffers and one stream per slot,
// the slots shared by concurrent batches (server/internal/chunk_runner.h).
// Compiled only where CMake found nvcc; backend_cuda_stub.cc otherwise.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/cuda/normalize_cuda.h"
#include "kernels/thread_pool.h"
#include "server/backend.h"
#include "server/internal/chunk_runner.h"
#include "server/internal/cpu_limit.h"
#include "server/internal/cuda_pipeline.h"
#include "server/internal/mutex.h"
#include "server/internal/nvml.h"
#include "server/internal/slot_pool.h"
#include "server/internal/status_macros.h"

namespace normserve {
namespace {

using internal::PipelineChunk;
using internal::PipelineJob;
using internal::PipelineLaunch;
using internal::PipelineOptions;
using internal::PipelinePiece;
using internal::PipelinePlan;

absl::Status Check(cudaError_t e, const char* what) {
  return cuda::CudaStatus(e, what);
}

int64_t AlignUp(int64_t v) {
  return (v + internal::kRegionAlignment - 1) / internal::kRegionAlignment *
         internal::kRegionAlignment;
}

// One host copy of a chunk's packing or unpacking.
struct HostCopy {
  uint8_t* to;
  const uint8_t* from;
  size_t bytes;
};

// Slices of large host copies, spread over the copy threads.
constexpr size_t kCopySlice = size_t{256} << 10;
// Below this many bytes a chunk's copies run on the batch's thread alone.
constexpr size_t kParallelCopyBytes = size_t{1} << 20;

// Runs `copies`: on this thread, or cut into kCopySlice slices run on
// `pool` and this thread when they are large enough to gain from it.
void RunCopies(const std::vector<HostCopy>& copies, ThreadPool* pool) {
  size_t total = 0;
  for (const HostCopy& c : copies) total += c.bytes;
  if (pool == nullptr || pool->num_threads() == 0 ||
      total < kParallelCopyBytes) {
    for (const HostCopy& c : copies) std::memcpy(c.to, c.from, c.bytes);
    return;
  }
  std::vector<HostCopy> slices;
  for (const HostCopy& c : copies) {
    for (size_t at = 0; at < c.bytes; at += kCopySlice) {
      slices.push_back(
          {c.to + at, c.from + at, std::min(kCopySlice, c.bytes - at)});
    }
  }
  pool->ParallelFor(static_cast<int64_t>(slices.size()), [&](int64_t i) {
    const HostCopy& c = slices[static_cast<size_t>(i)];
    std::memcpy(c.to, c.from, c.bytes);
  });
}

// What jobs must agree on to share a launch.
struct GroupKey {
  NormKind kind;
  float epsilon;
  const float* gamma;
  const float* beta;
  bool residual, sum, statistics;

  bool operator==(const GroupKey& o) const {
    // Epsilon compared by bits: the same request value, NaN never reaches
    // here (the decoder refuses it).
    return kind == o.kind && std::memcmp(&epsilon, &o.epsilon, 4) == 0 &&
           gamma == o.gamma && beta == o.beta && residual == o.residual &&
           sum == o.sum && statistics == o.statistics;
  }
};

GroupKey KeyOf(const RowSegment& s) {
  return {s.params->kind,
          s.params->epsilon,
          s.params->gamma,
          s.params->beta,
          s.residual != nullptr,
          s.sum_output != nullptr,
          s.mean != nullptr || s.rstd != nullptr};
}

// The batch as the pipeline sees it.
struct BatchShape {
  int64_t dim = 0;
  DType input = DType::kFloat32, output = DType::kFloat32;
  std::vector<GroupKey> groups;
  std::vector<PipelineJob> jobs;
  PipelineOptions options;
  int64_t beta_offset = 0;  // of β within a group's parameter block
};

absl::StatusOr<BatchShape> ShapeOf(absl::Span<Job* const> batch,
                                   const PipelineOptions& defaults) {
  BatchShape b;
  b.options = defaults;
  const RowSegment& first = batch[0]->segment;
  if (first.input_dtype == DType::kInt8 || first.output_dtype == DType::kInt8) {
    return absl::FailedPreconditionError(
        "DATA_TYPE_INT8 is not supported on DEVICE_CUDA; use DEVICE_CPU");
  }
  b.dim = first.params->dim;
  b.input = first.input_dtype;
  b.output = first.output_dtype;
  bool residual = false, sum = false, stats = false, affine = false;
  for (const Job* job : batch) {
    const RowSegment& s = job->segment;
    if (s.input_dtype != b.input || s.output_dtype != b.output ||
        s.params == nullptr || s.params->dim != b.dim) {
      return absl::InternalError(
          "CUDA batch mixes dtypes or row lengths (batch key bug)");
    }
    const GroupKey key = KeyOf(s);
    auto it = std::find(b.groups.begin(), b.groups.end(), key);
    if (it == b.groups.end()) it = b.groups.insert(b.groups.end(), key);
    b.jobs.push_back({s.rows, static_cast<int>(it - b.groups.begin())});
    residual |= key.residual;
    sum |= key.sum;
    stats |= key.statistics;
    affine |= key.gamma != nullptr || key.beta != nullptr;
  }
  const int64_t in_row = b.dim * static_cast<int64_t>(DTypeSize(b.input));
  b.options.input_row_bytes = in_row;
  b.options.output_row_bytes =
      b.dim * static_cast<int64_t>(DTypeSize(b.output));
  b.options.residual_row_bytes = residual ? in_row : 0;
  b.options.sum_row_bytes = sum ? in_row : 0;
  b.options.statistics = stats;
  b.beta_offset = AlignUp(b.dim * 4);
  b.options.group_param_bytes = affine ? 2 * b.beta_offset : 0;
  return b;
}

// Concurrency: batches run side by side, each on the slots it holds in
// pool_ (server/internal/chunk_runner.h); a slot's stream and buffers are
// touched only by the batch holding it. Every batch holds device_mu_
// shared; resetting the device after a fault holds it exclusively, so that
// no batch is on the device meanwhile. A batch may wait for slots while
// holding device_mu_ shared: holders of slots never wait for device_mu_,
// so that cannot deadlock. After a fault every batch fails fast, so the
// readers drain and the reset gets its turn.
class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(
      const CudaBackendOptions& options) {
    if (options.num_streams <= 0 || options.staging_bytes <= 0 ||
        options.copy_threads < CudaBackendOptions::kAutoCopyThreads) {
      return absl::InvalidArgumentError(
          "CUDA backend: num_streams and staging_bytes must be > 0, "
          "copy_threads >= 0 (or kAutoCopyThreads)");
    }
    absl::Status present = cuda::CudaDevicePresent();
    if (!present.ok()) return present;
    auto backend = std::unique_ptr<CudaBackend>(new CudaBackend(options));
    RETURN_IF_ERROR(backend->Start());
    return std::unique_ptr<Backend>(std::move(backend));
  }

  ~CudaBackend() override {
    WriterMutexLock lock(&device_mu_);
    if (cudaSetDevice(options_.device) == cudaSuccess) FreeSlots();
    cudaGetLastError();
  }

  absl::Status Run(absl::Span<Job* const> batch) override {
    if (batch.empty()) return absl::OkStatus();
    BatchShape shape;
    ASSIGN_OR_RETURN(shape, ShapeOf(batch, defaults_));
    PipelinePlan plan;
    ASSIGN_OR_RETURN(plan, internal::PlanPipeline(shape.jobs, shape.options));
    if (plan.chunks.empty()) return absl::OkStatus();

    absl::Status status;
    bool healthy = true;
    uint64_t generation = 0;
    {
      ReaderMutexLock device_lock(&device_mu_);
      if (broken_) {
        return absl::UnavailableError(
            "the CUDA backend is disabled after a device error it could not "
            "recover from; restart the server");
      }
      generation = generation_;
      BeginBusy();
      status = Execute(batch, shape, plan);
      EndBusy();
      if (!status.ok()) healthy = DeviceHealthy();
    }
    if (!healthy) {
      WriterMutexLock lock(&device_mu_);
      // Another batch that saw the same fault may have reset already.
      if (generation_ == generation) ResetDevice();
    }
    return status;
  }

  std::string Describe() const override {
    return cuda::CudaDeviceName(options_.device);
  }

  std::optional<CudaDeviceStats> CudaStats() override {
    CudaDeviceStats stats;
    {
      MutexLock lock(&stats_mu_);
      absl::Duration busy = busy_;
      if (active_batches_ > 0) busy += absl::Now() - busy_since_;
      stats.busy_seconds = absl::ToDoubleSeconds(busy);
    }
    if (nvml_ != nullptr) stats.utilization = nvml_->Read();
    // During a device reset the memory figures are left out rather than
    // making the scrape wait for it.
    if (!device_mu_.ReaderTryLock()) return stats;
    size_t free_bytes = 0, total_bytes = 0;
    if (!broken_ && cudaSetDevice(options_.device) == cudaSuccess &&
        cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      stats.memory_total_bytes = static_cast<int64_t>(total_bytes);
      stats.memory_used_bytes = static_cast<int64_t>(total_bytes - free_bytes);
    }
    cudaGetLastError();
    device_mu_.ReaderUnlock();
    return stats;
  }

 private:
  // One stream and its staging buffers.
  struct Slot {
    cudaStream_t stream = nullptr;
    uint8_t* host = nullptr;    // pinned
    uint8_t* device = nullptr;  // same layout
    int64_t bytes = 0;
    // Buffers the slot outgrew (host, device), freed with the slots:
    // cudaFree and cudaFreeHost wait for the whole device.
    std::vector<std::pair<uint8_t*, uint8_t*>> retired;
  };

  explicit CudaBackend(const CudaBackendOptions& options)
      : options_(options),
        pool_(options.num_streams),
        slots_(static_cast<size_t>(options.num_streams)) {
    defaults_.slot_bytes = options.staging_bytes;
    int copy_threads = options.copy_threads;
    if (copy_threads == CudaBackendOptions::kAutoCopyThreads) {
      // The CPUs the process may use (affinity, cgroup quota), not the
      // machine's: a pod limited to 4 CPUs on a 64-core node gets 1.
      copy_threads = std::min<int>(4, internal::AvailableCpus() / 4);
    }
    if (copy_threads > 0) {
      copy_pool_ = std::make_unique<ThreadPool>(copy_threads);
    }
  }

  // Streams and buffers, then one tiny normalization end to end: a device
  // the kernels were not compiled for fails here, at startup, not on the
  // first request.
  absl::Status Start() {
    WriterMutexLock lock(&device_mu_);
    RETURN_IF_ERROR(Check(cudaSetDevice(options_.device), "cudaSetDevice"));
    absl::Status s = AllocateSlots(options_.staging_bytes);
    if (s.ok()) s = SelfTest();
    if (!s.ok()) {
      FreeSlots();
      cudaGetLastError();
      return s;
    }
    char bus_id[32];
    if (cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), options_.device) ==
        cudaSuccess) {
      nvml_ = internal::NvmlUtilization::Open(bus_id);
    }
    cudaGetLastError();
    return s;
  }

  absl::Status SelfTest() ABSL_EXCLUSIVE_LOCKS_REQUIRED(device_mu_) {
    Slot& slot = slots_[0];
    const float x[4] = {1, 2, 3, 4};
    std::memcpy(slot.host, x, sizeof(x));
    RETURN_IF_ERROR(Check(cudaMemcpyAsync(slot.device, slot.host, sizeof(x),
                                          cudaMemcpyHostToDevice, slot.stream),
                          "cudaMemcpyAsync"));
    cuda::DeviceRows r;
    r.params.dim = 4;
    r.input = slot.device;
    r.output = slot.device + 256;
    r.rows = 1;
    RETURN_IF_ERROR(cuda::NormalizeRowsCuda(r, slot.stream));
    RETURN_IF_ERROR(
        Check(cudaMemcpyAsync(slot.host + 256, slot.device + 256, sizeof(x),
                              cudaMemcpyDeviceToHost, slot.stream),
              "cudaMemcpyAsync"));
    RETURN_IF_ERROR(
        Check(cudaStreamSynchronize(slot.stream), "self-test kernel"));
    float y[4];
    std::memcpy(y, slot.host + 256, sizeof(y));
    if (!(y[0] < -1.3f && y[0] > -1.4f && y[3] > 1.3f && y[3] < 1.4f)) {
      return absl::InternalError(
          absl::StrCat("CUDA self-test: normalizing [1, 2, 3, 4] gave [", y[0],
                       ", …, ", y[3], "]"));
    }
    return absl::OkStatus();
  }

  // Gives `slot` a stream and buffers of at least `bytes`. The caller holds
  // the slot, or device_mu_ exclusively. A slot grows (for a row larger
  // than it holds) to twice its size, or to exactly `bytes` where twice
  // cannot be had, and keeps the buffers it outgrew until the slots are
  // freed (FreeSlots): cudaFree and cudaFreeHost would wait for every
  // stream's work, not only this batch's. (The allocations themselves
  // still serialize with the other streams, once per doubling.) Growing by
  // doubling keeps the outgrown buffers below the slot's own size. When
  // growth fails the slot keeps its buffers and nothing stays allocated.
  static absl::Status PrepareSlot(Slot& s, int64_t bytes) {
    if (s.stream == nullptr) {
      RETURN_IF_ERROR(
          Check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking),
                "cudaStreamCreate"));
    }
    if (s.bytes >= bytes) return absl::OkStatus();
    const int64_t doubled = s.bytes > 0 ? std::max(bytes, 2 * s.bytes) : bytes;
    uint8_t* host = nullptr;
    uint8_t* device = nullptr;
    absl::Status status = AllocatePair(doubled, &host, &device);
    if (!status.ok() && doubled > bytes) {
      status = AllocatePair(bytes, &host, &device);
    } else {
      bytes = doubled;
    }
    RETURN_IF_ERROR(status);
    if (s.host != nullptr || s.device != nullptr) {
      s.retired.emplace_back(s.host, s.device);
    }
    s.host = host;
    s.device = device;
    s.bytes = bytes;
    return absl::OkStatus();
  }

  // A pinned host buffer and a device buffer of `bytes` each, or an error
  // with neither allocated. A failure is also cleared from the thread's
  // last error, which a later launch on this thread reads: a retry that
  // succeeds must not fail the kernel after it.
  static absl::Status AllocatePair(int64_t bytes, uint8_t** host,
                                   uint8_t** device) {
    void* h = nullptr;
    void* d = nullptr;
    if (absl::Status s = Check(
            cudaHostAlloc(&h, static_cast<size_t>(bytes), cudaHostAllocDefault),
            "cudaHostAlloc");
        !s.ok()) {
      cudaGetLastError();
      return s;
    }
    if (absl::Status s =
            Check(cudaMalloc(&d, static_cast<size_t>(bytes)), "cudaMalloc");
        !s.ok()) {
      cudaGetLastError();
      cudaFreeHost(h);  // never used: no stream's work refers to it
      return s;
    }
    *host = static_cast<uint8_t*>(h);
    *device = static_cast<uint8_t*>(d);
    return absl::OkStatus();
  }

  absl::Status AllocateSlots(int64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(device_mu_) {
    for (Slot& s : slots_) RETURN_IF_ERROR(PrepareSlot(s, bytes));
    return absl::OkStatus();
  }

  // Releases everything; errors are ignored (this runs after failures).
  void FreeSlots() ABSL_EXCLUSIVE_LOCKS_REQUIRED(device_mu_) {
    for (Slot& s : slots_) {
      if (s.stream != nullptr) {
        cudaStreamSynchronize(s.stream);
        cudaStreamDestroy(s.stream);
      }
      if (s.host != nullptr) cudaFreeHost(s.host);
      if (s.device != nullptr) cudaFree(s.device);
      for (const auto& [host, device] : s.retired) {
        if (host != nullptr) cudaFreeHost(host);
        if (device != nullptr) cudaFree(device);
      }
      s = Slot();
    }
  }

  // Carries out `plan` on slots it takes from pool_ and hands back.
  absl::Status Execute(absl::Span<Job* const> batch, const BatchShape& shape,
                       const PipelinePlan& plan)
      ABSL_SHARED_LOCKS_REQUIRED(device_mu_) {
    if (absl::Status s = Check(cudaSetDevice(options_.device), "cudaSetDevice");
        !s.ok()) {
      cudaGetLastError();
      return s;
    }
    // What one batch does on a slot it holds.
    class Steps final : public internal::ChunkSteps {
     public:
      Steps(CudaBackend& backend, absl::Span<Job* const> batch,
            const BatchShape& shape, const PipelinePlan& plan)
          : backend_(backend),
            batch_(batch),
            shape_(shape),
            plan_(plan),
            slot_bytes_(std::max<int64_t>(backend.options_.staging_bytes,
                                          plan.max_chunk_bytes)) {}
      absl::Status Stage(int chunk, int slot) override {
        Slot& s = backend_.slots_[static_cast<size_t>(slot)];
        RETURN_IF_ERROR(PrepareSlot(s, slot_bytes_));
        return backend_.Stage(batch_, shape_, plan_.chunks[chunk], s);
      }
      absl::Status Finish(int chunk, int slot) override {
        return backend_.Finish(batch_, shape_, plan_.chunks[chunk],
                               backend_.slots_[static_cast<size_t>(slot)]);
      }
      void Drain(int slot) override {
        const Slot& s = backend_.slots_[static_cast<size_t>(slot)];
        if (s.stream != nullptr) cudaStreamSynchronize(s.stream);
      }

     private:
      CudaBackend& backend_;
      const absl::Span<Job* const> batch_;
      const BatchShape& shape_;
      const PipelinePlan& plan_;
      const int64_t slot_bytes_;
    };
    Steps steps(*this, batch, shape, plan);
    const absl::Status status =
        internal::RunChunks(static_cast<int>(plan.chunks.size()),
                            options_.num_streams, pool_, steps);
    if (!status.ok()) cudaGetLastError();
    return status;
  }

  // Packs the chunk's inputs into the slot's pinned buffer and enqueues
  // copy in, kernels, copy out.
  absl::Status Stage(absl::Span<Job* const> batch, const BatchShape& shape,
                     const PipelineChunk& chunk, Slot& slot) const {
    const internal::ChunkLayout& L = chunk.layout;
    const PipelineOptions& o = shape.options;
    const size_t d_bytes = static_cast<size_t>(shape.dim) * sizeof(float);
    std::vector<HostCopy> copies;
    for (const internal::ParamBlock& block : chunk.param_blocks) {
      if (o.group_param_bytes == 0) break;
      const GroupKey& g = shape.groups[block.group];
      uint8_t* p = slot.host + block.offset;
      if (g.gamma != nullptr) {
        copies.push_back(
            {p, reinterpret_cast<const uint8_t*>(g.gamma), d_bytes});
      }
      if (g.beta != nullptr) {
        copies.push_back({p + shape.beta_offset,
                          reinterpret_cast<const uint8_t*>(g.beta), d_bytes});
      }
    }
    for (const PipelinePiece& p : chunk.pieces) {
      const RowSegment& s = batch[p.job]->segment;
      const size_t bytes =
          static_cast<size_t>((p.row_end - p.row_begin) * o.input_row_bytes);
      const int64_t from = p.row_begin * o.input_row_bytes;
      const int64_t to = p.chunk_row * o.input_row_bytes;
      copies.push_back({slot.host + L.input + to,
                        static_cast<const uint8_t*>(s.input) + from, bytes});
      if (s.residual != nullptr) {
        copies.push_back({slot.host + L.residual + to,
                          static_cast<const uint8_t*>(s.residual) + from,
                          bytes});
      }
    }
    RunCopies(copies, copy_pool_.get());
    RETURN_IF_ERROR(
        Check(cudaMemcpyAsync(slot.device, slot.host,
                              static_cast<size_t>(L.host_to_device_bytes),
                              cudaMemcpyHostToDevice, slot.stream),
              "cudaMemcpyAsync (host to device)"));
    for (const PipelineLaunch& l : chunk.launches) {
      const GroupKey& g = shape.groups[l.group];
      cuda::DeviceRows r;
      r.params.kind = g.kind;
      r.params.dim = shape.dim;
      r.params.epsilon = g.epsilon;
      uint8_t* params = slot.device + l.param_offset;
      r.params.gamma =
          g.gamma != nullptr ? reinterpret_cast<const float*>(params) : nullptr;
      r.params.beta =
          g.beta != nullptr
              ? reinterpret_cast<const float*>(params + shape.beta_offset)
              : nullptr;
      r.input_dtype = shape.input;
      r.output_dtype = shape.output;
      r.rows = l.rows;
      r.input = slot.device + L.input + l.chunk_row * o.input_row_bytes;
      r.output = slot.device + L.output + l.chunk_row * o.output_row_bytes;
      if (g.residual) {
        r.residual = slot.device + L.residual + l.chunk_row * o.input_row_bytes;
      }
      if (g.sum) {
        r.sum_output = slot.device + L.sum + l.chunk_row * o.input_row_bytes;
      }
      if (g.statistics) {
        r.mean = reinterpret_cast<float*>(slot.device + L.mean) + l.chunk_row;
        r.rstd = reinterpret_cast<float*>(slot.device + L.rstd) + l.chunk_row;
      }
      RETURN_IF_ERROR(cuda::NormalizeRowsCuda(r, slot.stream));
    }
    return Check(cudaMemcpyAsync(slot.host + L.device_to_host_begin,
                                 slot.device + L.device_to_host_begin,
                                 static_cast<size_t>(L.device_to_host_bytes),
                                 cudaMemcpyDeviceToHost, slot.stream),
                 "cudaMemcpyAsync (device to host)");
  }

  // Waits for the chunk's stream and copies its outputs to the jobs.
  absl::Status Finish(absl::Span<Job* const> batch, const BatchShape& shape,
                      const PipelineChunk& chunk, Slot& slot) const {
    RETURN_IF_ERROR(Check(cudaStreamSynchronize(slot.stream),
                          "cudaStreamSynchronize (copy in, kernel, copy out)"));
    const internal::ChunkLayout& L = chunk.layout;
    const PipelineOptions& o = shape.options;
    std::vector<HostCopy> copies;
    for (const PipelinePiece& p : chunk.pieces) {
      const RowSegment& s = batch[p.job]->segment;
      const int64_t rows = p.row_end - p.row_begin;
      copies.push_back(
          {static_cast<uint8_t*>(s.output) + p.row_begin * o.output_row_bytes,
           slot.host + L.output + p.chunk_row * o.output_row_bytes,
           static_cast<size_t>(rows * o.output_row_bytes)});
      if (s.sum_output != nullptr) {
        copies.push_back({static_cast<uint8_t*>(s.sum_output) +
                              p.row_begin * o.input_row_bytes,
                          slot.host + L.sum + p.chunk_row * o.input_row_bytes,
                          static_cast<size_t>(rows * o.input_row_bytes)});
      }
      const size_t stat_bytes = static_cast<size_t>(rows) * sizeof(float);
      const int64_t stat_at = p.chunk_row * 4;
      if (s.mean != nullptr) {
        copies.push_back({reinterpret_cast<uint8_t*>(s.mean + p.row_begin),
                          slot.host + L.mean + stat_at, stat_bytes});
      }
      if (s.rstd != nullptr) {
        copies.push_back({reinterpret_cast<uint8_t*>(s.rstd + p.row_begin),
                          slot.host + L.rstd + stat_at, stat_bytes});
      }
    }
    RunCopies(copies, copy_pool_.get());
    return absl::OkStatus();
  }

  // Whether the device still works after a failed batch: false when the
  // error poisoned the CUDA context (a kernel fault), which only a reset
  // mends.
  bool DeviceHealthy() ABSL_SHARED_LOCKS_REQUIRED(device_mu_) {
    const bool healthy = cudaDeviceSynchronize() == cudaSuccess &&
                         cudaGetLastError() == cudaSuccess;
    cudaGetLastError();
    return healthy;
  }

  // Resets the device and allocates every slot again; if that fails, the
  // backend refuses every later batch (UNAVAILABLE).
  void ResetDevice() ABSL_EXCLUSIVE_LOCKS_REQUIRED(device_mu_) {
    ++generation_;
    cudaSetDevice(options_.device);
    FreeSlots();
    cudaGetLastError();
    const absl::Status reset = Check(cudaDeviceReset(), "cudaDeviceReset");
    const absl::Status again =
        reset.ok() ? AllocateSlots(options_.staging_bytes) : reset;
    if (!again.ok()) {
      FreeSlots();
      cudaGetLastError();
      broken_ = true;
    }
  }

  // The busy time is the union of the batches' times on the device: a
  // spell runs from the first batch's start to the last one's end.
  void BeginBusy() {
    MutexLock lock(&stats_mu_);
    if (active_batches_++ == 0) busy_since_ = absl::Now();
  }
  void EndBusy() {
    MutexLock lock(&stats_mu_);
    if (--active_batches_ == 0) busy_ += absl::Now() - busy_since_;
  }

  const CudaBackendOptions options_;
  PipelineOptions defaults_;
  // Packs and unpacks large chunks beside the batch's thread (null without
  // copy threads).
  std::unique_ptr<ThreadPool> copy_pool_;
  internal::SlotPool pool_;
  std::unique_ptr<internal::NvmlUtilization> nvml_;  // set by Start()
  SharedMutex device_mu_;
  // Fixed size. Slot i belongs to the batch holding i in pool_, or to
  // whoever holds device_mu_ exclusively.
  std::vector<Slot> slots_;
  bool broken_ ABSL_GUARDED_BY(device_mu_) = false;
  // Counts device resets.
  uint64_t generation_ ABSL_GUARDED_BY(device_mu_) = 0;
  Mutex stats_mu_;
  int active_batches_ ABSL_GUARDED_BY(stats_mu_) = 0;
  absl::Time busy_since_ ABSL_GUARDED_BY(stats_mu_);
  absl::Duration busy_ ABSL_GUARDED_BY(stats_mu_);  // of finished spells
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    const CudaBackendOptions& options) {
  return CudaBackend::Create(options);
}

}  // namespace normserve
