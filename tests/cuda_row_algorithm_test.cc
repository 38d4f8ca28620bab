// The CUDA kernels' row algorithm (kernels/cuda/internal/normalize_row.h)
// run on the CPU, no GPU needed: host threads stand in for the threads of
// a warp or a block, and meet at a barrier where the device would reduce
// through shuffles and shared memory. Each row is mapped as the launch plan
// maps it on the device (a warp or a block with the row in registers, a
// streaming block, or a staged row in shared memory), and the results are
// checked against the float64 reference and the CPU kernel. Also checked:
// the pack conversions against element-by-element ones, and that a staged
// row, an aligned register row and a misaligned register row get the same
// bits. Staged rows go through the kernels' own row loop
// (internal/staged_rows.h), its buffers in a block's shared memory of the
// size the launch asks for, with host copies that land as early or as late
// as cp.async allows.
//
// What this cannot check: the device's own arithmetic (its intrinsics run
// here as CUDA's host versions), warp shuffles, cp.async itself and
// occupancy. tests/cuda_normalize_test.cc runs the kernels on a GPU.
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <iterator>
#include <limits>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/internal/kernel_args.h"
#include "kernels/cuda/internal/kernel_launch.h"
#include "kernels/cuda/internal/normalize_row.h"
#include "kernels/cuda/internal/staged_rows.h"
#include "kernels/cuda/launch_plan.h"
#include "kernels/dtype.h"
#include "tests/kernel_checks.h"
#include "tests/kernel_test_util.h"

namespace normserve::cuda::internal {
namespace {

using testing::Case;
using testing::CheckAgainstReference;
using testing::CheckAgreesWithTheCpuKernel;
using testing::CheckConstantRowsGiveExactlyBeta;
using testing::CheckEveryDtypePair;
using testing::CheckFirstValuesFarFromTheRest;
using testing::CheckHugeAndTinyRows;
using testing::CheckMeanFarLargerThanStd;
using testing::CheckNanOrInfPoisonsOnlyItsRow;
using testing::Describe;
using testing::Encode;
using testing::ExpectUlpBound;
using testing::kTypes;
using testing::MakeCase;
using testing::Name;
using testing::Normal;
using testing::Output;
using testing::RandomCase;
using testing::Runner;
using testing::SweepSeed;
using testing::Tensor;
using testing::UlpStats;
using testing::ValueAt;

// ---- T host threads standing in for the T threads of a row group ----

class Team {
 public:
  explicit Team(int threads) : threads_(threads), slots_(threads) {}

  // Runs f(t) on threads t = 0 … T−1 and waits for all of them.
  template <typename F>
  void Run(F f) {
    std::vector<std::thread> workers;
    workers.reserve(static_cast<size_t>(threads_));
    for (int t = 0; t < threads_; ++t) workers.emplace_back([&f, t] { f(t); });
    for (std::thread& w : workers) w.join();
  }

  // Every thread's v summed in thread order, returned to every thread.
  template <typename A>
  A Sum(int t, A v) {
    slots_[static_cast<size_t>(t)] = static_cast<double>(v);  // exact
    Arrive();
    A s = 0;
    for (double x : slots_) s += static_cast<A>(x);
    Arrive();  // everyone has read the slots before they are written again
    return s;
  }

 private:
  void Arrive() {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t generation = generation_;
    if (++arrived_ == threads_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation; });
  }

  const int threads_;
  std::vector<double> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

// The group interface of the device's WarpGroup and BlockGroup.
struct TeamGroup {
  Team* team;
  int t;
  template <typename A>
  A Sum(A v) const {
    return team->Sum(t, v);
  }
  void Sum2(float* a, float* b) const {
    *a = team->Sum(t, *a);
    *b = team->Sum(t, *b);
  }
  void Sum2Again(float* a, float* b) const { Sum2(a, b); }
  bool Any(bool b) const { return team->Sum(t, b ? 1.0 : 0.0) != 0.0; }
};

// ---- Running a case as the device would ----

enum class Path {
  kPlanned,  // the plan's register (or streaming) mapping
  kStaged,   // the staged mapping: the row's x copied to an aligned buffer
  // The same, with the residual read from its own array rather than copied
  // beside x (KernelArgs::stage_residual false).
  kStagedResidualInMemory,
};

// Rows in registers as the register kernels run them: the RowVariant loops
// for aligned launches, the general loop for any other.
template <typename In, typename Out, int kPacks>
void RunRegisterRows(const KernelArgs& a, int threads) {
  Team team(threads);
  team.Run([&](int t) {
    for (int64_t row = 0; row < a.rows; ++row) {
      NormalizeRegisterRow<In, Out, kPacks>(a, row, t, threads,
                                            TeamGroup{&team, t});
    }
  });
}

template <typename In, typename Out>
void RunStreamingRows(const KernelArgs& a, int threads) {
  Team team(threads);
  team.Run([&](int t) {
    for (int64_t row = 0; row < a.rows; ++row) {
      NormalizeStreamingRow<In, Out>(a, row, t, threads, TeamGroup{&team, t});
    }
  });
}

// ---- Staged rows on host threads ----

// When a host thread's staged copy lands in its buffer: at once, or as late
// as cp.async allows (at the Wait that leaves its group done). A loop that
// reads a buffer before its row's group is done reads the row before (late),
// and one that stages into a buffer still being read overwrites it (early).
enum class Landing { kEarly, kLate };

// StagedRows' copier (internal/staged_rows.h) of one host thread.
class HostCopier {
 public:
  explicit HostCopier(Landing landing) : landing_(landing) {}

  template <int kPacks, typename P>
  void Copy(const P* src, P* dst, int packs, int t, int threads) {
    static_assert(sizeof(P) == 16);
    // The packs StageRow copies: t, t + T, …, at most kPacks.
    for (int k = 0; k < kPacks; ++k) {
      const int p = t + k * threads;
      if (p >= packs) break;
      if (landing_ == Landing::kEarly) {
        std::memcpy(dst + p, src + p, sizeof(P));
      } else {
        open_.push_back({dst + p, src + p});
      }
    }
  }
  void Commit() {
    groups_.push_back(std::move(open_));
    open_.clear();
  }
  void Wait(int pending) {
    while (groups_.size() > static_cast<size_t>(pending)) {
      for (const Copy16& c : groups_.front()) std::memcpy(c.dst, c.src, 16);
      groups_.pop_front();
    }
  }

 private:
  struct Copy16 {
    void* dst;
    const void* src;
  };
  const Landing landing_;
  std::vector<Copy16> open_;
  std::deque<std::vector<Copy16>> groups_;
};

// How the emulation runs a staged launch: the buffers per row group that
// `tuning` gives the plan's mapping, as at launch; blocks (each with
// plan.rows_per_block row groups, its own shared memory and rows
// block·groups + group, + blocks·groups, …); when copies land.
struct StagedRun {
  StagedTuning tuning;
  int blocks = 1;
  Landing landing = Landing::kLate;
};

// Staged rows as the staged kernels run them: StagedRows over each row
// group's buffers in a block's shared memory of the launch's size (a vector
// of exactly that size, so that the sanitizer build sees any access past
// it), kPacks packs per thread at most, the row loop compiled for the
// launch's RowVariant; under a block mapping (kHold) γ and β held by each
// thread across the rows, unless the tuning reads them per row
// (StagedTuning::Weights::kLoaded, plain variants only, as the block
// kernels); a long (streaming) row read in a loop (kLong:
// SharedRow<…, kLoopedPacks>). The row groups run one after another.
template <typename In, typename Out, int kPacks, bool kHold, bool kLong = false>
void RunStagedRows(const KernelArgs& launch, const LaunchPlan& plan,
                   const StagedRun& run) {
  using P = Pack<typename In::Bits, kPackOf<In>>;
  constexpr int V = kPackOf<In>;
  KernelArgs a = launch;
  a.stages = RowBuffers(plan, run.tuning, a.residual != nullptr);
  const int groups = plan.rows_per_block;
  const int threads = plan.threads_per_row;
  const auto stride = static_cast<unsigned>(run.blocks * groups);
  for (int block = 0; block < run.blocks; ++block) {
    const size_t smem_bytes = StagedSharedBytes(a, V, groups);
    ASSERT_EQ(smem_bytes % sizeof(P), 0u);
    std::vector<P> smem(smem_bytes / sizeof(P));
    for (int group = 0; group < groups; ++group) {
      P* buffers = StagedGroupBuffers(smem.data(), a, V, group);
      const auto first = static_cast<unsigned>(block * groups + group);
      Team team(threads);
      team.Run([&](int t) {
        HostCopier copier(run.landing);
        auto sync = [&team, t] { team.Sum(t, 0.0f); };
        ForKindAndVariant(a, true, [&](auto layer, auto variant) {
          constexpr RowVariant kV = decltype(variant)::value;
          auto rows = [&](const auto& weights) {
            StagedRows<kPacks, In, kV>(
                a, first, stride, buffers, t, threads, copier, sync,
                [&](int64_t row, const P* buffer) {
                  const RowPointers<In, Out, true> ptr(a, row);
                  const SharedRow<In, Out, kLong ? kLoopedPacks : kPacks> src{
                      ptr, buffer, t, threads};
                  NormalizeRow<decltype(layer)::value>(
                      a, row, ptr, src, TeamGroup{&team, t}, t == 0, weights);
                });
          };
          const bool loaded =
              run.tuning.weights == StagedTuning::Weights::kLoaded &&
              kV != RowVariant::kAny;
          if (kHold && !loaded) {
            rows(HeldWeights<kPacks, V, kV>(a, t, threads));
          } else {
            rows(LoadedWeights<V, kV>{a, true, true});
          }
        });
      });
    }
  }
}

template <typename In, typename Out>
void RunTyped(const KernelArgs& a, const LaunchPlan& plan, Path path,
              const StagedRun& run) {
  constexpr int V = kPackOf<In>;
  const int threads = plan.threads_per_row;
  // As the device's launcher: rows the staged kernels cannot take (a tail,
  // a streaming row too long to stage) go the planned way.
  const bool stageable =
      a.dim % V == 0 &&
      (plan.mapping != RowMapping::kBlockStreaming || plan.staged);
  if (path != Path::kPlanned && stageable) {
    if (plan.mapping == RowMapping::kBlockStreaming) {
      return RunStagedRows<In, Out, kStreamingStagedPacks, false, true>(a, plan,
                                                                        run);
    }
    if (plan.mapping == RowMapping::kBlockPerRow) {
      ASSERT_EQ(plan.packs_per_thread, kMaxFloatsPerThread / V);
      return RunStagedRows<In, Out, kMaxFloatsPerThread / V, true>(a, plan,
                                                                   run);
    }
    ASSERT_TRUE(WithStagedWarpPacks(
        plan.packs_per_thread,
        [&](auto packs) {
          RunStagedRows<In, Out, decltype(packs)::value, false>(a, plan, run);
        }))
        << "packs_per_thread " << plan.packs_per_thread;
    return;
  }
  switch (plan.mapping) {
    case RowMapping::kWarpPerRow:
      // A staged warp mapping's register kernel reads from global memory.
      if (plan.threads_per_row == kSubWarpThreads) {
        return RunStreamingRows<In, Out>(a, threads);
      }
      ASSERT_EQ(plan.threads_per_row, 32);
      ASSERT_TRUE(WithPacksPerThread(
          plan.packs_per_thread,
          [&](auto packs) {
            RunRegisterRows<In, Out, decltype(packs)::value>(a, threads);
          }))
          << "packs_per_thread " << plan.packs_per_thread;
      return;
    case RowMapping::kBlockPerRow:
      ASSERT_EQ(plan.packs_per_thread, kMaxFloatsPerThread / V);
      return RunRegisterRows<In, Out, kMaxFloatsPerThread / V>(a, threads);
    case RowMapping::kBlockStreaming:
      return RunStreamingRows<In, Out>(a, threads);
  }
}

template <typename In>
void RunForInput(const KernelArgs& a, const LaunchPlan& plan, Path path,
                 const StagedRun& run) {
  switch (a.output_dtype) {
    case DType::kFloat32:
      return RunTyped<In, F32>(a, plan, path, run);
    case DType::kFloat16:
      return RunTyped<In, F16>(a, plan, path, run);
    case DType::kBFloat16:
      return RunTyped<In, BF16>(a, plan, path, run);
    case DType::kInt8:
      break;
  }
  FAIL() << "output dtype";
}

// A byte buffer whose data starts `offset` bytes past a 64-byte boundary.
class Buffer {
 public:
  Buffer(size_t bytes, size_t offset) : storage_(bytes + offset + 64) {
    const auto base = reinterpret_cast<uintptr_t>(storage_.data());
    data_ = storage_.data() + ((64 - base % 64) % 64) + offset;
  }
  uint8_t* data() { return data_; }

 private:
  std::vector<uint8_t> storage_;
  uint8_t* data_;
};

// Runs `c` through the row algorithm on host threads; every buffer starts
// `offset` bytes past a 64-byte boundary; a staged path runs as `run` says.
Output RunEmulated(const Case& c, Path path = Path::kPlanned, size_t offset = 0,
                   const StagedRun& run = StagedRun{}) {
  const int64_t d = c.params.dim;
  const size_t n = static_cast<size_t>(c.rows * d);
  const size_t in_bytes = n * DTypeSize(c.in), out_bytes = n * DTypeSize(c.out);
  const size_t d_bytes = static_cast<size_t>(d) * sizeof(float);
  Buffer x(in_bytes, offset), res(in_bytes, offset), y(out_bytes, offset),
      sum(in_bytes, offset), mean(c.rows * 4, offset), rstd(c.rows * 4, offset),
      gamma(d_bytes, offset), beta(d_bytes, offset);
  std::memcpy(x.data(), c.x.bytes.data(), in_bytes);
  if (c.with_residual)
    std::memcpy(res.data(), c.residual.bytes.data(), in_bytes);
  if (c.params.gamma) std::memcpy(gamma.data(), c.params.gamma, d_bytes);
  if (c.params.beta) std::memcpy(beta.data(), c.params.beta, d_bytes);

  // The rows as a DeviceRows, translated as NormalizeRowsCuda does.
  DeviceRows r;
  r.params = c.params;
  r.params.gamma =
      c.params.gamma ? reinterpret_cast<float*>(gamma.data()) : nullptr;
  r.params.beta =
      c.params.beta ? reinterpret_cast<float*>(beta.data()) : nullptr;
  r.input_dtype = c.in;
  r.output_dtype = c.out;
  r.input = x.data();
  r.output = y.data();
  r.rows = c.rows;
  r.residual = c.with_residual ? res.data() : nullptr;
  r.sum_output = c.with_sum ? sum.data() : nullptr;
  r.mean = reinterpret_cast<float*>(mean.data());
  r.rstd = reinterpret_cast<float*>(rstd.data());
  KernelArgs a = KernelArgsFor(r);
  a.stage_residual = path != Path::kStagedResidualInMemory;
  const LaunchPlan plan = PlanLaunch(d, c.in);
  switch (c.in) {
    case DType::kFloat32:
      RunForInput<F32>(a, plan, path, run);
      break;
    case DType::kFloat16:
      RunForInput<F16>(a, plan, path, run);
      break;
    case DType::kBFloat16:
      RunForInput<BF16>(a, plan, path, run);
      break;
    case DType::kInt8:
      ADD_FAILURE() << "input dtype";
  }
  Output o{std::vector<uint8_t>(y.data(), y.data() + out_bytes),
           std::vector<uint8_t>(sum.data(), sum.data() + in_bytes),
           std::vector<float>(c.rows), std::vector<float>(c.rows)};
  std::memcpy(o.mean.data(), mean.data(), c.rows * 4);
  std::memcpy(o.rstd.data(), rstd.data(), c.rows * 4);
  return o;
}

// ---- Pack conversions ----

// Every 16-bit pattern, eight to a pack, unpacks to the element conversion.
template <typename T>
void ExpectUnpackMatchesElements() {
  for (uint32_t first = 0; first < 65536; first += 8) {
    Pack<uint16_t, 8> p;
    for (int j = 0; j < 8; ++j) p.v[j] = static_cast<uint16_t>(first + j);
    float out[8];
    T::Unpack(p, out);
    for (int j = 0; j < 8; ++j) {
      ASSERT_EQ(BitsOfFloat(out[j]), BitsOfFloat(T::ToFloat(p.v[j])))
          << "bits " << first + j;
    }
  }
}

TEST(PackConversionTest, UnpackGivesTheElementConversions) {
  ExpectUnpackMatchesElements<BF16>();
  ExpectUnpackMatchesElements<F16>();
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    ASSERT_EQ(BitsOfFloat(BF16::ToFloat(bits)),
              BitsOfFloat(BFloat16ToFloat(bits)));
    const float f = F16::ToFloat(bits);
    if (f == f) {
      ASSERT_EQ(BitsOfFloat(f), BitsOfFloat(HalfToFloat(bits)));
    }
  }
}

// Floats that exercise rounding: random bits, halfway cases of both 16-bit
// formats, their subnormals, overflow, ±0, ±Inf and NaNs with payloads.
std::vector<float> RoundingProbes() {
  std::mt19937 rng(5);
  std::vector<float> v;
  for (int i = 0; i < 200000; ++i) v.push_back(FloatFromBits(rng()));
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint32_t bf = h << 16;
    for (uint32_t low : {0x7fffu, 0x8000u, 0x8001u}) {
      v.push_back(FloatFromBits(bf | low));
    }
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    v.push_back(f);
    v.push_back(std::nextafter(f, 0.0f));
    v.push_back(std::nextafter(f, std::numeric_limits<float>::infinity()));
  }
  for (float f : {0.0f, -0.0f, 65504.0f, 65520.0f, 3.4e38f, 1e-45f, 6e-8f,
                  std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity()}) {
    v.push_back(f);
  }
  for (uint32_t nan :
       {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff812345u, 0x7fffffffu}) {
    v.push_back(FloatFromBits(nan));
  }
  while (v.size() % 8 != 0) v.push_back(1.0f);
  return v;
}

template <typename T>
void ExpectRepackMatchesElements(const std::vector<float>& probes) {
  for (size_t i = 0; i < probes.size(); i += 8) {
    float in[8];
    for (int j = 0; j < 8; ++j) in[j] = probes[i + j];
    const Pack<uint16_t, 8> p = T::template Repack<8>(in);
    for (int j = 0; j < 8; ++j) {
      ASSERT_EQ(p.v[j], T::FromFloat(in[j]))
          << "float bits " << std::hex << BitsOfFloat(in[j]);
    }
  }
}

TEST(PackConversionTest, RepackGivesTheElementConversions) {
  const std::vector<float> probes = RoundingProbes();
  ExpectRepackMatchesElements<BF16>(probes);
  ExpectRepackMatchesElements<F16>(probes);
  // And those are kernels/dtype.h's (NaN bits included for bfloat16).
  for (float f : probes) {
    ASSERT_EQ(BF16::FromFloat(f), FloatToBFloat16(f))
        << std::hex << BitsOfFloat(f);
    if (f == f) {
      ASSERT_EQ(F16::FromFloat(f), FloatToHalf(f))
          << std::hex << BitsOfFloat(f);
    }
  }
}

// ---- The row algorithm against the float64 reference ----
//
// The kernel tests' checks (tests/kernel_checks.h), each on the planned
// mapping and on the staged one (which takes the rows it can, as on the
// device), with fewer and shorter rows than on a GPU: every emulated
// thread is a host thread.

Output Planned(const Case& c) { return RunEmulated(c, Path::kPlanned); }
Output Staged(const Case& c) { return RunEmulated(c, Path::kStaged); }

TEST(CudaRowAlgorithmTest, EveryDtypePairKindAffineAndResidualMatches) {
  for (const Runner& run : {Runner(Planned), Runner(Staged)}) {
    UlpStats total;
    // Warp mappings with and without a tail, block mappings.
    CheckEveryDtypePair(run, {1, 37, 768, 1031, 2048}, 3, &total);
    ExpectUlpBound(total, 20000);
    if (HasFailure()) return;
  }
}

// The kernel tests' random sweep, smaller: rows and D log-uniform, any
// dtypes, kind, ε, γ/β, residual; buffers at a random 4-byte offset.
TEST(CudaRowAlgorithmTest, RandomizedSweepMatchesReference) {
  const uint32_t seed = SweepSeed();
  std::mt19937 rng(seed);
  for (int n = 0; n < 40; ++n) {
    std::vector<float> g, b;
    const Case c = RandomCase(int64_t{1} << 14, &rng, &g, &b);
    const size_t offset = 4 * (rng() % 4);
    SCOPED_TRACE(::testing::Message()
                 << "seed " << seed << " case " << n << ": " << Describe(c)
                 << " offset " << offset << " mapping "
                 << RowMappingName(PlanLaunch(c.params.dim, c.in).mapping)
                 << " (replay: NORMSERVE_TEST_SEED=" << seed << ")");
    const UlpStats st =
        CheckAgainstReference(c, RunEmulated(c, Path::kPlanned, offset));
    EXPECT_LE(st.worst_ulps, 2);
    if (HasFailure()) return;
  }
}

TEST(CudaRowAlgorithmTest, LongRowsOnTheBlockAndStreamingMappings) {
  std::mt19937 rng(2);
  for (int64_t d : {8192, 16387, 40000}) {
    for (DType t : {DType::kFloat32, DType::kBFloat16}) {
      std::vector<float> g, b;
      const Case c = MakeCase(NormKind::kLayerNorm, t, t, d, 2, true, true,
                              false, &rng, &g, &b);
      SCOPED_TRACE(::testing::Message()
                   << "D " << d << " " << Name(t) << " mapping "
                   << RowMappingName(PlanLaunch(d, t).mapping));
      EXPECT_LE(CheckAgainstReference(c, Staged(c)).worst_ulps, 2);
    }
  }
}

TEST(CudaRowAlgorithmTest, AccurateWhenMeanIsFarLargerThanStd) {
  CheckMeanFarLargerThanStd(Planned, {8, 768, 4096});
  CheckMeanFarLargerThanStd(Staged, {8, 768, 4096});
}

TEST(CudaRowAlgorithmTest, AccurateWhenTheFirstValuesAreFarFromTheRest) {
  CheckFirstValuesFarFromTheRest(Planned, {8, 768, 4096});
  CheckFirstValuesFarFromTheRest(Staged, {8, 768, 4096});
}

TEST(CudaRowAlgorithmTest, ConstantRowGivesExactlyBeta) {
  CheckConstantRowsGiveExactlyBeta(Planned, {96, 3000});  // warp, block
  CheckConstantRowsGiveExactlyBeta(Staged, {96, 3000});
}

// The shift is the mean of the first 16 values, and a constant row's shift
// is its value exactly (what gives such a row exactly β).
TEST(CudaRowAlgorithmTest, ShiftIsTheMeanOfTheFirstValues) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 100; ++trial) {
    const std::vector<float> x = Normal(kShiftValues, 3.0f, 2.0f, &rng);
    double mean = 0.0;
    for (float v : x) mean += v;
    mean /= kShiftValues;
    const float shift = FoldedShift<4>([&](int p, float(&z)[4]) {
      for (int j = 0; j < 4; ++j) z[j] = x[static_cast<size_t>(4 * p + j)];
    });
    EXPECT_NEAR(shift, mean, 1e-5 * (std::abs(mean) + 2.0));
  }
  for (float v :
       {0.0f, 1.0f, -7.5f, 1.0000001f, 12288.0f, 3e36f, 1e-38f, 1e-44f}) {
    const float shift = FoldedShift<8>([&](int, float(&z)[8]) {
      for (float& e : z) e = v;
    });
    EXPECT_EQ(shift, v);
  }
}

// One pass of Σu and Σu² serves nearly every row (the second pass is for
// rows whose first values are far from the rest), and only where its
// variance is accurate: K = 1 + (shift − mean)²/var <= 2.
TEST(CudaRowAlgorithmTest, OnePassServesTypicalRowsOnly) {
  std::mt19937 rng(9);
  auto one_pass = [](const std::vector<float>& x, double* var) {
    const float shift = FoldedShift<4>([&](int p, float(&z)[4]) {
      for (int j = 0; j < 4; ++j) z[j] = x[static_cast<size_t>(4 * p + j)];
    });
    float sum = 0.0f, sq = 0.0f;
    for (float v : x) {
      sum += v - shift;
      sq = std::fma(v - shift, v - shift, sq);
    }
    double mean_u;
    return OnePassStatistics(sum, sq, 1.0 / static_cast<double>(x.size()),
                             &mean_u, var);
  };
  for (const size_t d : {size_t{768}, size_t{4096}}) {
    for (const float center : {0.0f, 1e4f}) {
      const float std_dev = center == 0.0f ? 1.0f : 1e-2f;
      int second_passes = 0;
      constexpr int kRows = 2000;
      for (int r = 0; r < kRows; ++r) {
        const std::vector<float> x = Normal(d, center, std_dev, &rng);
        double var;
        if (!one_pass(x, &var)) {
          ++second_passes;
          continue;
        }
        // Accurate where taken: against the float64 two-pass variance.
        double mean = 0.0, m2 = 0.0;
        for (float v : x) mean += v;
        mean /= static_cast<double>(d);
        for (float v : x) m2 += (v - mean) * (v - mean);
        const double want = m2 / static_cast<double>(d);
        EXPECT_NEAR(var, want, 1e-4 * want) << "D " << d << " row " << r;
      }
      EXPECT_LE(second_passes, kRows / 1000)
          << "D " << d << " rows " << center << " ± " << std_dev;
    }
    std::vector<float> apart = Normal(d, 0.0f, 1.0f, &rng);
    for (size_t i = 0; i < static_cast<size_t>(kShiftValues); ++i) {
      apart[i] += 1000.0f;
    }
    double var;
    EXPECT_FALSE(one_pass(apart, &var)) << "D " << d;
  }
}

TEST(CudaRowAlgorithmTest, HugeAndTinyMagnitudesAreRecomputedInDouble) {
  CheckHugeAndTinyRows(Planned, {1000, 5000});
  CheckHugeAndTinyRows(Staged, {1000, 5000});
}

TEST(CudaRowAlgorithmTest, NanOrInfPoisonsOnlyItsRow) {
  CheckNanOrInfPoisonsOnlyItsRow(
      Planned, {48, 2000},
      {DType::kFloat32, DType::kFloat16, DType::kBFloat16});
  CheckNanOrInfPoisonsOnlyItsRow(Staged, {48, 2000}, {DType::kBFloat16});
  CheckNanOrInfPoisonsOnlyItsRow(Staged, {768}, {DType::kBFloat16},
                                 {DType::kBFloat16, DType::kFloat16});
}

TEST(CudaRowAlgorithmTest, AgreesWithTheCpuKernel) {
  CheckAgreesWithTheCpuKernel(Planned, {DType::kFloat32, DType::kBFloat16},
                              {5, 768, 4096}, 2);
  CheckAgreesWithTheCpuKernel(Staged, {DType::kFloat32, DType::kBFloat16},
                              {768, 4096}, 2);
}

// The staged instantiation (every access a vector access, no tail), the
// register one on aligned buffers (the RowVariant loops where the launch
// has one, vector accesses only) and on misaligned ones (the general loop,
// element accesses) give a row the same bits, with and without a residual
// (staged beside x, or read from its own array), with γ and β, γ alone or
// neither: as on the device, the mapping may change with alignment, the
// bits may not. Rows of `dims`, for every input and output dtype of
// `types`, both kinds.
struct Options {
  bool gamma, beta, residual;
};

void CheckStagedAndPlannedBits(const std::vector<DType>& types,
                               const std::vector<int64_t>& dims,
                               const std::vector<Options>& options) {
  std::mt19937 rng(11);
  for (DType in : types) {
    for (DType out : types) {
      for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
        for (Options opt : options) {
          for (int64_t d : dims) {
            std::vector<float> g, b;
            Case c = MakeCase(kind, in, out, d, 3, opt.gamma, opt.beta,
                              opt.residual, &rng, &g, &b);
            // Row 1 holds a NaN: the pack conversions' NaN path.
            std::vector<float> row1(c.x.values.begin() + d,
                                    c.x.values.begin() + 2 * d);
            row1[3] = std::numeric_limits<float>::quiet_NaN();
            const Tensor nan_row = Encode(in, row1);
            std::copy(nan_row.bytes.begin(), nan_row.bytes.end(),
                      c.x.bytes.begin() + d * DTypeSize(in));
            SCOPED_TRACE(Describe(c));
            const Output staged = RunEmulated(c, Path::kStaged);
            if (opt.residual) {
              const Output o = RunEmulated(c, Path::kStagedResidualInMemory);
              ASSERT_EQ(o.y, staged.y) << "residual in memory";
              ASSERT_EQ(o.sum, staged.sum) << "residual in memory";
            }
            for (size_t offset : {size_t{0}, size_t{4}}) {
              const Output o = RunEmulated(c, Path::kPlanned, offset);
              ASSERT_EQ(o.y, staged.y) << "offset " << offset;
              ASSERT_EQ(o.sum, staged.sum) << "offset " << offset;
              ASSERT_EQ(0, std::memcmp(o.mean.data(), staged.mean.data(),
                                       o.mean.size() * 4));
              ASSERT_EQ(0, std::memcmp(o.rstd.data(), staged.rstd.data(),
                                       o.rstd.size() * 4));
            }
          }
        }
      }
    }
  }
}

TEST(CudaRowAlgorithmTest, StagedAlignedAndMisalignedRowsHaveTheSameBits) {
  CheckStagedAndPlannedBits(
      {std::begin(kTypes), std::end(kTypes)}, {64, 640, 768, 4096},
      {Options{true, true, false}, Options{true, true, true},
       Options{true, false, false}, Options{false, false, false}});
}

// Rows longer than the block mapping's, staged whole in shared memory
// (StagedStreamingKernel) and streamed from global memory (StreamingKernel):
// one float32 and one 16-bit input (each row is 1024 host threads).
TEST(CudaRowAlgorithmTest, StagedAndStreamedLongRowsHaveTheSameBits) {
  CheckStagedAndPlannedBits(
      {DType::kFloat32, DType::kBFloat16}, {16392},
      {Options{true, true, false}, Options{true, true, true},
       Options{false, false, false}});
}

// The staged row loop itself (StagedRows, as the kernels run it): 2 to
// kMaxStagedBuffers buffers per row group (a streaming row 1 or 2),
// several blocks whose row groups serve several rows each (one group a row
// fewer), copies that land at once or as late as cp.async allows, the
// residual beside x or in memory. Every run gives every row the bits the
// planned mapping gives it, where each row group serves one row, loaded
// anew.
TEST(CudaRowAlgorithmTest, StagedRowLoopGivesEveryRowTheBitsOfTheRowAlone) {
  struct Shape {
    DType in;
    int64_t d;
    int blocks;
    int rows_per_group;
  };
  const Shape shapes[] = {
      {DType::kBFloat16, 768, 2, 5},   // half-warp groups, 6 packs a thread
      {DType::kFloat16, 128, 1, 6},    // half-warp groups, 1 pack a thread
      {DType::kBFloat16, 1000, 2, 5},  // 8 packs a thread (3 buffers by
                                       // default), the last 3 of 128 absent
      {DType::kFloat32, 4096, 3, 5},   // block mapping, γ and β held
      {DType::kBFloat16, 8192, 2, 5},
      {DType::kFloat32, 16392, 2, 2},  // streaming: one buffer
  };
  std::mt19937 rng(5);
  for (const Shape& shape : shapes) {
    const LaunchPlan plan = PlanLaunch(shape.d, shape.in);
    const bool streaming = plan.mapping == RowMapping::kBlockStreaming;
    ASSERT_TRUE(plan.staged) << shape.d;
    const int64_t rows =
        int64_t{shape.blocks} * plan.rows_per_block * shape.rows_per_group - 1;
    for (const bool residual : {false, true}) {
      std::vector<float> g, b;
      const Case c = MakeCase(
          residual ? NormKind::kLayerNorm : NormKind::kRmsNorm, shape.in,
          shape.in, shape.d, rows, true, true, residual, &rng, &g, &b);
      SCOPED_TRACE(Describe(c));
      const Output alone = RunEmulated(c, Path::kPlanned);
      const int max_stages = streaming ? 2 : kMaxStagedBuffers;
      for (int stages = streaming ? 1 : 2; stages <= max_stages; ++stages) {
        for (const Landing landing : {Landing::kEarly, Landing::kLate}) {
          for (const Path path :
               {Path::kStaged, Path::kStagedResidualInMemory}) {
            if (path == Path::kStagedResidualInMemory && !residual) continue;
            StagedRun run;
            run.tuning.warp_stages = run.tuning.block_stages = stages;
            run.tuning.streaming_stages = stages;
            run.blocks = shape.blocks;
            run.landing = landing;
            SCOPED_TRACE(
                ::testing::Message()
                << "buffers " << RowBuffers(plan, run.tuning, residual)
                << (landing == Landing::kEarly ? ", early" : ", late")
                << (path == Path::kStaged ? "" : ", residual in memory"));
            const Output o = RunEmulated(c, path, 0, run);
            ASSERT_EQ(o.y, alone.y);
            ASSERT_EQ(o.sum, alone.sum);
            ASSERT_EQ(0, std::memcmp(o.mean.data(), alone.mean.data(),
                                     o.mean.size() * 4));
            ASSERT_EQ(0, std::memcmp(o.rstd.data(), alone.rstd.data(),
                                     o.rstd.size() * 4));
          }
        }
      }
    }
  }
}

// The block kernels' γ and β held in registers or read per row
// (StagedTuning::Weights) give the same bits, in the plain variants that
// read them per row (LayerNorm with γ and β, RMSNorm with γ alone).
TEST(CudaRowAlgorithmTest, WeightsHeldOrReadPerRowGiveTheSameBits) {
  std::mt19937 rng(13);
  for (const auto& [in, d] : {std::pair{DType::kFloat32, int64_t{4096}},
                              std::pair{DType::kBFloat16, int64_t{8192}}}) {
    ASSERT_EQ(PlanLaunch(d, in).mapping, RowMapping::kBlockPerRow);
    for (const NormKind kind : {NormKind::kLayerNorm, NormKind::kRmsNorm}) {
      std::vector<float> g, b;
      const bool layer = kind == NormKind::kLayerNorm;
      const Case c =
          MakeCase(kind, in, in, d, 7, true, layer, false, &rng, &g, &b);
      SCOPED_TRACE(Describe(c));
      StagedRun held, loaded;
      held.blocks = loaded.blocks = 2;
      loaded.tuning.weights = StagedTuning::Weights::kLoaded;
      const Output h = RunEmulated(c, Path::kStaged, 0, held);
      const Output l = RunEmulated(c, Path::kStaged, 0, loaded);
      CheckAgainstReference(c, l);
      ASSERT_EQ(l.y, h.y);
      ASSERT_EQ(0,
                std::memcmp(l.rstd.data(), h.rstd.data(), l.rstd.size() * 4));
    }
  }
}

}  // namespace
}  // namespace normserve::cuda::internal
