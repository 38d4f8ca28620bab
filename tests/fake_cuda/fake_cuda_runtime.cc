// The fake CUDA runtime of fake_cuda.h.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/time/clock.h"
#include "kernels/cuda/internal/kernel_launch.h"
#include "kernels/normalize.h"
#include "tests/fake_cuda/fake_cuda.h"

namespace {

struct Op {
  std::function<void()> run;
  bool kernel = false;
  bool fault = false;     // the kernel faults instead of running
  int fault_threads = 1;  // … once this many threads have work in flight
  std::thread::id from;
};

}  // namespace

// The runtime's stream handle: a thread running its queue in order.
struct CUstream_st {
  std::thread worker;
  std::deque<Op> queue;
  bool stop = false;
  std::condition_variable work;
  // Ops enqueued and ops finished, ever: a synchronization waits for the
  // ops issued before it, not for later ones.
  uint64_t issued = 0, finished = 0;
};

namespace normserve::fake_cuda {
namespace {

enum class Memory { kDevice, kPinned };

constexpr size_t kDeviceBytes = size_t{80} << 30;

struct Fake {
  std::mutex mu;
  std::condition_variable op_done;
  cudaError_t sticky = cudaSuccess;
  // Per function: the error its next calls return, and how many.
  std::map<std::string, std::pair<cudaError_t, int>> fail_next;
  bool fault_next_kernel = false;
  int fault_threads = 1;
  bool fail_resets = false;
  absl::Duration kernel_time;
  std::map<uintptr_t, std::pair<size_t, Memory>> allocations;
  std::set<CUstream_st*> streams;
  std::map<std::thread::id, int> in_flight;  // ops queued or running
  Counters counters;
};

Fake& State() {
  static Fake* fake = new Fake;
  return *fake;
}

thread_local cudaError_t last_error = cudaSuccess;

cudaError_t Return(cudaError_t e) {
  if (e != cudaSuccess) last_error = e;
  return e;
}

// The error a call returns before doing anything (mu held).
cudaError_t Enter(Fake& f, const std::string& function) {
  if (f.sticky != cudaSuccess) return f.sticky;
  auto it = f.fail_next.find(function);
  if (it == f.fail_next.end()) return cudaSuccess;
  const cudaError_t e = it->second.first;
  if (--it->second.second == 0) f.fail_next.erase(it);
  return e;
}

// Whether [p, p + n) lies inside one live allocation of `kind` (mu held).
bool Inside(const Fake& f, const void* p, size_t n, Memory kind) {
  const auto at = reinterpret_cast<uintptr_t>(p);
  auto it = f.allocations.upper_bound(at);
  if (p == nullptr || it == f.allocations.begin()) return false;
  --it;
  return it->second.second == kind && at + n <= it->first + it->second.first;
}

// Waits (mu held through `lock`) until every op issued so far on `streams`
// (all streams when null) has finished, or its stream is gone.
void WaitForIssued(Fake& f, std::unique_lock<std::mutex>& lock,
                   CUstream_st* stream = nullptr) {
  std::map<CUstream_st*, uint64_t> issued;
  for (CUstream_st* s : f.streams) {
    if (stream == nullptr || s == stream) issued[s] = s->issued;
  }
  f.op_done.wait(lock, [&] {
    return std::all_of(issued.begin(), issued.end(), [&](const auto& e) {
      return f.streams.count(e.first) == 0 || e.first->finished >= e.second;
    });
  });
}

void RunStream(CUstream_st* s) {
  Fake& f = State();
  std::unique_lock<std::mutex> lock(f.mu);
  for (;;) {
    s->work.wait(lock, [&] { return s->stop || !s->queue.empty(); });
    if (s->queue.empty()) return;  // stopped and drained
    Op op = std::move(s->queue.front());
    s->queue.pop_front();
    if (op.fault) {
      f.op_done.wait_for(lock, std::chrono::seconds(5), [&] {
        return static_cast<int>(f.in_flight.size()) >= op.fault_threads;
      });
    }
    // A faulted context runs nothing more.
    if (op.fault && f.sticky == cudaSuccess) f.sticky = cudaErrorIllegalAddress;
    const bool run = f.sticky == cudaSuccess;
    const absl::Duration time =
        op.kernel ? f.kernel_time : absl::ZeroDuration();
    lock.unlock();
    if (run) {
      if (time > absl::ZeroDuration()) absl::SleepFor(time);
      op.run();
    }
    lock.lock();
    if (run && op.kernel) ++f.counters.kernels_run;
    ++s->finished;
    if (--f.in_flight[op.from] == 0) f.in_flight.erase(op.from);
    f.op_done.notify_all();
  }
}

void Enqueue(Fake& f, CUstream_st* s, Op op) {
  op.from = std::this_thread::get_id();
  ++f.in_flight[op.from];
  f.counters.max_threads_in_flight = std::max(
      f.counters.max_threads_in_flight, static_cast<int>(f.in_flight.size()));
  s->queue.push_back(std::move(op));
  ++s->issued;
  s->work.notify_one();
  f.op_done.notify_all();  // a fault may wait for work in flight
}

cudaError_t Allocate(void** p, size_t bytes, Memory kind, const char* what) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  if (const cudaError_t e = Enter(f, what)) return Return(e);
  if (p == nullptr) return Return(cudaErrorInvalidValue);
  *p =
      std::aligned_alloc(256, std::max<size_t>(256, (bytes + 255) / 256 * 256));
  if (*p == nullptr) return Return(cudaErrorMemoryAllocation);
  f.allocations[reinterpret_cast<uintptr_t>(*p)] = {bytes, kind};
  return cudaSuccess;
}

// As cudaFree does, waits for the work issued before it first.
cudaError_t Free(void* p, Memory kind, const char* what) {
  Fake& f = State();
  std::unique_lock<std::mutex> lock(f.mu);
  if (const cudaError_t e = Enter(f, what)) return Return(e);
  if (p == nullptr) return cudaSuccess;
  WaitForIssued(f, lock);
  auto it = f.allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == f.allocations.end() || it->second.second != kind) {
    return Return(cudaErrorInvalidValue);
  }
  f.allocations.erase(it);
  std::free(p);
  ++f.counters.frees;
  return cudaSuccess;
}

// Stops and deletes `s` (mu held through `lock`; released while joining).
void DestroyStream(Fake& f, CUstream_st* s,
                   std::unique_lock<std::mutex>& lock) {
  f.streams.erase(s);
  s->stop = true;
  s->work.notify_one();
  lock.unlock();
  s->worker.join();
  delete s;
  lock.lock();
}

}  // namespace

void Restart() {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  f.sticky = cudaSuccess;
  f.fail_next.clear();
  f.fault_next_kernel = false;
  f.fail_resets = false;
  f.kernel_time = absl::ZeroDuration();
  f.counters = Counters();
}

void FailNextCall(const std::string& function, cudaError_t error, int times) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  f.fail_next[function] = {error, times};
}

void FaultNextKernel(int threads_in_flight) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  f.fault_next_kernel = true;
  f.fault_threads = threads_in_flight;
}

void FailDeviceResets(bool fail) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  f.fail_resets = fail;
}

void SetKernelTime(absl::Duration time) {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  f.kernel_time = time;
}

Counters GetCounters() {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  return f.counters;
}

int LiveAllocations() {
  Fake& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  return static_cast<int>(f.allocations.size());
}

}  // namespace normserve::fake_cuda

// ---- The runtime API ----

namespace fake = normserve::fake_cuda;
using fake::Memory;
using fake::State;

cudaError_t cudaGetDeviceCount(int* count) {
  auto& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  if (const cudaError_t e = fake::Enter(f, "cudaGetDeviceCount"))
    return fake::Return(e);
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return fake::Return(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof(*prop));
  std::strcpy(prop->name, "Fake CUDA device");
  prop->major = 9;
  prop->minor = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetPCIBusId(char* bus_id, int length, int device) {
  if (device != 0) return fake::Return(cudaErrorInvalidDevice);
  if (length < 13) return fake::Return(cudaErrorInvalidValue);
  std::strcpy(bus_id, "0000:00:00.0");
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  auto& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  if (device != 0) return fake::Return(cudaErrorInvalidDevice);
  return fake::Return(fake::Enter(f, "cudaSetDevice"));
}

cudaError_t cudaGetLastError() {
  auto& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  const cudaError_t e = fake::last_error;
  fake::last_error = cudaSuccess;
  return f.sticky != cudaSuccess ? f.sticky : e;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    case cudaErrorNoKernelImageForDevice:
      return "cudaErrorNoKernelImageForDevice";
    default:
      return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t) { return "fake CUDA error"; }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  auto& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  if (const cudaError_t e = fake::Enter(f, "cudaStreamCreateWithFlags"))
    return fake::Return(e);
  auto* s = new CUstream_st;
  s->worker = std::thread(fake::RunStream, s);
  f.streams.insert(s);
  *stream = s;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  auto& f = State();
  std::unique_lock<std::mutex> lock(f.mu);
  if (f.streams.count(stream) == 0) {
    return fake::Return(cudaErrorInvalidResourceHandle);
  }
  fake::DestroyStream(f, stream, lock);
  return cudaSuccess;
}

// Waits for the stream's work even after a fault, so that nothing still
// runs on buffers the caller frees next.
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  auto& f = State();
  std::unique_lock<std::mutex> lock(f.mu);
  if (f.streams.count(stream) == 0) {
    return fake::Return(cudaErrorInvalidResourceHandle);
  }
  fake::WaitForIssued(f, lock, stream);
  return fake::Return(f.sticky);
}

cudaError_t cudaDeviceSynchronize() {
  auto& f = State();
  std::unique_lock<std::mutex> lock(f.mu);
  fake::WaitForIssued(f, lock);
  return fake::Return(f.sticky);
}

cudaError_t cudaDeviceReset() {
  auto& f = State();
  std::unique_lock<std::mutex> lock(f.mu);
  if (f.fail_resets) return fake::Return(cudaErrorUnknown);
  while (!f.streams.empty()) {
    fake::DestroyStream(f, *f.streams.begin(), lock);
  }
  for (const auto& a : f.allocations) {
    std::free(reinterpret_cast<void*>(a.first));
  }
  f.allocations.clear();
  f.sticky = cudaSuccess;
  ++f.counters.device_resets;
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned int) {
  return fake::Allocate(p, bytes, Memory::kPinned, "cudaHostAlloc");
}

cudaError_t cudaFreeHost(void* p) {
  return fake::Free(p, Memory::kPinned, "cudaFreeHost");
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  return fake::Allocate(p, bytes, Memory::kDevice, "cudaMalloc");
}

cudaError_t cudaFree(void* p) {
  return fake::Free(p, Memory::kDevice, "cudaFree");
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  auto& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  if (const cudaError_t e = fake::Enter(f, "cudaMemGetInfo"))
    return fake::Return(e);
  size_t used = 0;
  for (const auto& a : f.allocations) {
    if (a.second.second == Memory::kDevice) used += a.second.first;
  }
  *total_bytes = fake::kDeviceBytes;
  *free_bytes = fake::kDeviceBytes - used;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes,
                            cudaMemcpyKind kind, cudaStream_t stream) {
  auto& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  if (const cudaError_t e = fake::Enter(f, "cudaMemcpyAsync"))
    return fake::Return(e);
  if (f.streams.count(stream) == 0) {
    return fake::Return(cudaErrorInvalidResourceHandle);
  }
  const bool to_device = kind == cudaMemcpyHostToDevice;
  const bool ok = (to_device || kind == cudaMemcpyDeviceToHost) &&
                  fake::Inside(f, src, bytes,
                               to_device ? Memory::kPinned : Memory::kDevice) &&
                  fake::Inside(f, dst, bytes,
                               to_device ? Memory::kDevice : Memory::kPinned);
  if (!ok) return fake::Return(cudaErrorInvalidValue);
  Op op;
  op.run = [dst, src, bytes] { std::memcpy(dst, src, bytes); };
  fake::Enqueue(f, stream, std::move(op));
  return cudaSuccess;
}

// ---- The kernels' launcher ----

namespace normserve::cuda::internal {

int LaunchNormalize(const KernelArgs& a, const LaunchPlan&, CUstream_st* stream,
                    const StagedTuning&, LaunchReport*) {
  auto& f = State();
  std::lock_guard<std::mutex> lock(f.mu);
  if (const cudaError_t e = fake_cuda::Enter(f, "kernel"))
    return fake_cuda::Return(e);
  // The real launcher ends with cudaGetLastError(): an earlier call's
  // error that this thread left uncleared fails the launch.
  if (const cudaError_t e = fake_cuda::last_error) {
    fake_cuda::last_error = cudaSuccess;
    return e;
  }
  if (f.streams.count(stream) == 0) {
    return fake_cuda::Return(cudaErrorInvalidResourceHandle);
  }
  // What the kernel would read and write: outside its buffers it faults.
  const size_t n = static_cast<size_t>(a.rows * a.dim);
  const size_t in = n * DTypeSize(a.input_dtype);
  const size_t row_stats = static_cast<size_t>(a.rows) * 4;
  const size_t weights = static_cast<size_t>(a.dim) * 4;
  auto fits = [&](const void* p, size_t bytes) {
    return p == nullptr || fake_cuda::Inside(f, p, bytes, Memory::kDevice);
  };
  Op op;
  op.kernel = true;
  op.fault = f.fault_next_kernel || a.input == nullptr || a.output == nullptr ||
             !fits(a.input, in) ||
             !fits(a.output, n * DTypeSize(a.output_dtype)) ||
             !fits(a.residual, in) || !fits(a.sum_output, in) ||
             !fits(a.mean, row_stats) || !fits(a.rstd, row_stats) ||
             !fits(a.gamma, weights) || !fits(a.beta, weights);
  op.fault_threads = f.fault_threads;
  f.fault_next_kernel = false;
  op.run = [a] {
    NormParams params;
    params.kind = a.layer_norm ? NormKind::kLayerNorm : NormKind::kRmsNorm;
    params.dim = a.dim;
    params.epsilon = a.epsilon;
    params.gamma = a.gamma;
    params.beta = a.beta;
    RowSegment s;
    s.params = &params;
    s.input_dtype = a.input_dtype;
    s.output_dtype = a.output_dtype;
    s.input = a.input;
    s.output = a.output;
    s.rows = a.rows;
    s.residual = a.residual;
    s.sum_output = a.sum_output;
    s.mean = a.mean;
    s.rstd = a.rstd;
    NormalizeRows(s, 0, a.rows);
  };
  fake_cuda::Enqueue(f, stream, std::move(op));
  return cudaSuccess;
}

}  // namespace normserve::cuda::internal
