// The CUDA kernels against the float64 reference and against the CPU
// kernel, under the contract of kernels/cuda/normalize_cuda.h: every dtype
// pair × kind × affine option × residual, a seeded random sweep over shapes,
// ε, γ/β and data, statistics and residual sums, odd D on every row
// mapping, adversarial rows, and batch invariance across batch sizes,
// positions and buffer alignments.
//
// Every test that needs a GPU skips with "no CUDA device" where none is
// present; the argument checks run everywhere.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/internal/kernel_args.h"
#include "kernels/cuda/internal/kernel_launch.h"
#include "kernels/cuda/internal/staged_rows.h"
#include "kernels/cuda/launch_plan.h"
#include "kernels/cuda/normalize_cuda.h"
#include "kernels/dtype.h"
#include "kernels/normalize.h"
#include "kernels/reference.h"
#include "tests/kernel_checks.h"
#include "tests/kernel_test_util.h"

namespace normserve::cuda {
namespace {

using testing::BitsAt;
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
using testing::Ordinal;
using testing::Output;
using testing::RandomCase;
using testing::ReferenceZ;
using testing::RefRound;
using testing::RunOnCpu;
using testing::SweepSeed;
using testing::Tensor;
using testing::UlpStats;
using testing::ValueAt;
using testing::Widen;

// ---- Device memory ----

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    if (bytes > 0) {
      EXPECT_EQ(cudaMalloc(&ptr_, bytes), cudaSuccess);
    }
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  uint8_t* get() const { return static_cast<uint8_t*>(ptr_); }

 private:
  void* ptr_ = nullptr;
};

void ToDevice(void* dst, const void* src, size_t bytes) {
  ASSERT_EQ(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), cudaSuccess);
}
void ToHost(void* dst, const void* src, size_t bytes) {
  ASSERT_EQ(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

// Runs `c` on the GPU; every device buffer starts `offset_bytes` past a
// 256-byte boundary (a multiple of 4 bytes, to move 16-byte
// alignment around). With `tuning`, through the internal launch with that
// StagedTuning instead of NormalizeRowsCuda.
Output RunOnGpu(const Case& c, size_t offset_bytes = 0,
                const StagedTuning* tuning = nullptr,
                internal::LaunchReport* report = nullptr) {
  const size_t n = static_cast<size_t>(c.rows * c.params.dim);
  const size_t in_bytes = n * DTypeSize(c.in), out_bytes = n * DTypeSize(c.out);
  const size_t d_bytes = static_cast<size_t>(c.params.dim) * 4;
  const size_t stat_bytes = static_cast<size_t>(c.rows) * 4;
  const size_t pad = offset_bytes;
  DeviceBuffer x(pad + in_bytes), res(pad + in_bytes), y(pad + out_bytes),
      sum(pad + in_bytes), mean(pad + stat_bytes), rstd(pad + stat_bytes),
      gamma(pad + d_bytes), beta(pad + d_bytes);
  ToDevice(x.get() + pad, c.x.bytes.data(), in_bytes);
  if (c.with_residual)
    ToDevice(res.get() + pad, c.residual.bytes.data(), in_bytes);
  if (c.params.gamma) ToDevice(gamma.get() + pad, c.params.gamma, d_bytes);
  if (c.params.beta) ToDevice(beta.get() + pad, c.params.beta, d_bytes);

  DeviceRows r;
  r.params = c.params;
  r.params.gamma =
      c.params.gamma ? reinterpret_cast<float*>(gamma.get() + pad) : nullptr;
  r.params.beta =
      c.params.beta ? reinterpret_cast<float*>(beta.get() + pad) : nullptr;
  r.input_dtype = c.in;
  r.output_dtype = c.out;
  r.input = x.get() + pad;
  r.output = y.get() + pad;
  r.rows = c.rows;
  r.residual = c.with_residual ? res.get() + pad : nullptr;
  r.sum_output = c.with_sum ? sum.get() + pad : nullptr;
  r.mean = reinterpret_cast<float*>(mean.get() + pad);
  r.rstd = reinterpret_cast<float*>(rstd.get() + pad);
  const absl::Status s =
      tuning == nullptr
          ? NormalizeRowsCuda(r, nullptr)
          : CudaStatus(internal::LaunchNormalize(
                           internal::KernelArgsFor(r),
                           PlanLaunch(r.params.dim, r.input_dtype), nullptr,
                           *tuning, report),
                       "launch");
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  Output o{std::vector<uint8_t>(out_bytes), std::vector<uint8_t>(in_bytes),
           std::vector<float>(c.rows), std::vector<float>(c.rows)};
  ToHost(o.y.data(), y.get() + pad, out_bytes);
  if (c.with_sum) ToHost(o.sum.data(), sum.get() + pad, in_bytes);
  ToHost(o.mean.data(), mean.get() + pad, stat_bytes);
  ToHost(o.rstd.data(), rstd.get() + pad, stat_bytes);
  return o;
}

// ---- Fixture: skip without a device ----

class CudaKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status present = CudaDevicePresent();
    if (!present.ok())
      GTEST_SKIP() << present.message();  // "no CUDA device: …"
  }
};

Output OnGpu(const Case& c) { return RunOnGpu(c); }

TEST_F(CudaKernelTest, EveryDtypePairKindAffineAndResidualMatchesReference) {
  UlpStats total;
  CheckEveryDtypePair(OnGpu, {1, 3, 31, 64, 768, 769, 1031, 4097}, 5, &total);
  ExpectUlpBound(total, 100000);
}

// The CPU test's random sweep (testing::RandomCase), on the GPU: every
// buffer at a random 4-byte offset, so alignment varies too. The seed is
// printed with any failure; NORMSERVE_TEST_SEED=<seed> replays it.
TEST_F(CudaKernelTest, RandomizedSweepMatchesReference) {
  const uint32_t seed = SweepSeed();
  std::mt19937 rng(seed);
  UlpStats total;
  int64_t elements = 0;
  for (int n = 0; elements < (int64_t{1} << 22); ++n) {
    std::vector<float> g, b;
    const Case c = RandomCase(int64_t{1} << 17, &rng, &g, &b);
    elements += c.rows * c.params.dim;
    const size_t offset = 4 * (rng() % 4);
    SCOPED_TRACE(::testing::Message()
                 << "seed " << seed << " case " << n << ": " << Describe(c)
                 << " offset " << offset << " mapping "
                 << RowMappingName(PlanLaunch(c.params.dim, c.in).mapping)
                 << " (replay: NORMSERVE_TEST_SEED=" << seed << ")");
    const UlpStats st = CheckAgainstReference(c, RunOnGpu(c, offset));
    EXPECT_LE(st.worst_ulps, 2);
    total.Add(st);
    if (HasFailure()) return;
  }
  EXPECT_LE(total.over_one_ulp, total.elements / 1000 + 1)
      << "seed " << seed << ": " << total.over_one_ulp << " of "
      << total.elements;
}

TEST_F(CudaKernelTest, LongRowsOnTheBlockAndStreamingMappings) {
  std::mt19937 rng(2);
  for (int64_t d : {8192, 16384, 16387, 32768, 65536, 65537, 262147}) {
    for (DType t : {DType::kFloat32, DType::kBFloat16}) {
      for (bool residual : {false, true}) {
        std::vector<float> g, b;
        const Case c =
            MakeCase(NormKind::kLayerNorm, t, t, d, (1 << 19) / d + 2, true,
                     true, residual, &rng, &g, &b);
        SCOPED_TRACE(::testing::Message()
                     << "D " << d << " " << Name(t) << " residual " << residual
                     << " mapping "
                     << RowMappingName(PlanLaunch(d, t).mapping));
        const UlpStats st = CheckAgainstReference(c, RunOnGpu(c));
        EXPECT_LE(st.worst_ulps, 2);
        if (HasFailure()) return;
      }
    }
  }
}

TEST_F(CudaKernelTest, AgreesWithTheCpuKernel) {
  CheckAgreesWithTheCpuKernel(
      OnGpu, {DType::kFloat32, DType::kFloat16, DType::kBFloat16},
      {5, 768, 1024, 4096, 20000}, 4);
}

TEST_F(CudaKernelTest, AccurateWhenMeanIsFarLargerThanStd) {
  CheckMeanFarLargerThanStd(OnGpu, {8, 768, 4096, 65536});
}

TEST_F(CudaKernelTest, AccurateWhenTheFirstValuesAreFarFromTheRest) {
  CheckFirstValuesFarFromTheRest(OnGpu, {8, 768, 4096, 65536});
}

TEST_F(CudaKernelTest, ConstantRowGivesExactlyBeta) {
  CheckConstantRowsGiveExactlyBeta(OnGpu, {100, 3000, 40000});
}

TEST_F(CudaKernelTest, HugeAndTinyMagnitudesAreRecomputedInDouble) {
  CheckHugeAndTinyRows(OnGpu, {1000, 5000, 30000});
}

TEST_F(CudaKernelTest, NanOrInfPoisonsOnlyItsRow) {
  CheckNanOrInfPoisonsOnlyItsRow(OnGpu, {48, 2000, 20000},
                                 {DType::kFloat32, DType::kBFloat16});
  // Staged 16-bit rows, two per warp.
  CheckNanOrInfPoisonsOnlyItsRow(OnGpu, {768}, {DType::kBFloat16},
                                 {DType::kBFloat16, DType::kFloat16});
}

// A row's bits never depend on the batch: each row alone, then inside
// batches of other sizes at other positions, with every buffer shifted off
// 16-byte alignment, on each mapping. Without a residual, aligned rows of
// the staged shapes (launch_plan.h) go through shared memory and shifted
// ones through registers: the two must agree bit for bit, for every output
// dtype and for a row holding a NaN.
TEST_F(CudaKernelTest, RowBitsDoNotDependOnBatchPositionOrAlignment) {
  std::mt19937 rng(11);
  for (DType in : {DType::kFloat32, DType::kBFloat16}) {
    for (DType out : kTypes) {
      for (bool residual : {true, false}) {
        for (int64_t d : {771, 768, 1024, 4100, 4096, 8192, 16384, 20000}) {
          const int kRows = 24;
          std::vector<float> g, b;
          Case all = MakeCase(NormKind::kLayerNorm, in, out, d, kRows, true,
                              true, residual, &rng, &g, &b);
          // Row 5 holds a NaN: its output NaN bits must not move either.
          const Tensor nan =
              Encode(in, {std::numeric_limits<float>::quiet_NaN()});
          std::copy(nan.bytes.begin(), nan.bytes.end(),
                    all.x.bytes.begin() + (5 * d + 3) * DTypeSize(in));
          const size_t in_row = d * DTypeSize(in), out_row = d * DTypeSize(out);
          auto slice = [&](int first, int rows) {
            Case c = all;
            c.rows = rows;
            c.x.bytes.assign(all.x.bytes.begin() + first * in_row,
                             all.x.bytes.begin() + (first + rows) * in_row);
            if (residual) {
              c.residual.bytes.assign(
                  all.residual.bytes.begin() + first * in_row,
                  all.residual.bytes.begin() + (first + rows) * in_row);
            }
            return c;
          };
          std::vector<std::vector<uint8_t>> alone(kRows);
          for (int r = 0; r < kRows; ++r) alone[r] = RunOnGpu(slice(r, 1)).y;
          for (size_t offset : {size_t{0}, size_t{4}, size_t{12}}) {
            for (int first : {0, 3, 7}) {
              const int rows = kRows - first;
              const Output o = RunOnGpu(slice(first, rows), offset);
              for (int j = 0; j < rows; ++j) {
                ASSERT_EQ(0, std::memcmp(o.y.data() + j * out_row,
                                         alone[first + j].data(), out_row))
                    << Name(in) << "->" << Name(out) << " D " << d
                    << " residual " << residual << " offset " << offset
                    << " row " << first + j;
              }
            }
          }
        }
      }
    }
  }
}

// The bytes of `a`'s staged buffers under `plan` with `stages` buffers per
// row group and the residual beside x or not, against the device's shared
// memory per block: 1 where they fit (with room for the kernels' static
// shared memory), -1 where they do not, 0 in between.
int StagedFit(internal::KernelArgs a, const LaunchPlan& plan, int stages,
              bool residual_beside) {
  int optin = 0;
  EXPECT_EQ(cudaDeviceGetAttribute(&optin,
                                   cudaDevAttrMaxSharedMemoryPerBlockOptin, 0),
            cudaSuccess);
  a.stages = stages;
  a.stage_residual = residual_beside;
  const size_t bytes =
      internal::StagedSharedBytes(a, plan.pack_elements, plan.rows_per_block);
  if (bytes + 1024 <= static_cast<size_t>(optin)) return 1;
  return bytes > static_cast<size_t>(optin) ? -1 : 0;
}

// That a staged launch ran as `t` asked where its buffers fit in shared
// memory, and fell back where they do not: the buffers per row group, the
// residual's place, the blocks.
void ExpectTuningHonoured(const Case& c, const StagedTuning& t,
                          const internal::LaunchReport& report) {
  const LaunchPlan plan = PlanLaunch(c.params.dim, c.in);
  internal::KernelArgs a{};
  a.dim = c.params.dim;
  a.residual = c.with_residual ? &a : nullptr;  // only its presence counts
  if (!StagesLaunch(plan, t, c.params.dim, c.with_residual)) {
    EXPECT_FALSE(report.staged) << "the register kernel, as measured";
    return;
  }
  const int stages = RowBuffers(plan, t, c.with_residual);
  const int x_alone = StagedFit(a, plan, stages, false);
  const int beside = c.with_residual ? StagedFit(a, plan, stages, true) : -1;
  using Residual = StagedTuning::Residual;
  if (x_alone < 0) {
    EXPECT_FALSE(report.staged) << "buffers that do not fit";
    return;
  }
  if (x_alone == 0) return;  // at the limit: either
  ASSERT_TRUE(report.staged);
  EXPECT_EQ(report.stages, stages);
  if (c.with_residual && t.residual == Residual::kFromMemory) {
    EXPECT_FALSE(report.residual_staged);
  } else if (c.with_residual) {
    // kBeside and kAuto: beside x wherever the two fit.
    if (beside != 0) {
      EXPECT_EQ(report.residual_staged, beside > 0);
    }
  }
  // γ and β are read per row only where asked, under the block mapping,
  // in a launch of a plain variant (these cases have γ and β; a residual
  // takes the general loop).
  EXPECT_EQ(
      report.weights_held,
      plan.mapping == RowMapping::kBlockPerRow &&
          !(t.weights == StagedTuning::Weights::kLoaded && !c.with_residual));
  if (t.max_blocks > 0) {
    EXPECT_LE(report.blocks, t.max_blocks);
  }
  if (t.max_blocks == 0 && RowsPerGroup(plan, t) == 1) {
    EXPECT_EQ(report.blocks, GridBlocks(plan, c.rows));
  }
}

// The staged launches' tuning (row buffers, blocks, rows per group, where
// the residual goes) moves rows between blocks and buffers, never their
// bits: each row of a batch run with each tuning matches the row run
// alone. One or two blocks make every row group wrap around its buffers
// many times with few rows. Each launch is checked to have run as tuned
// where its buffers fit in shared memory (ExpectTuningHonoured). Every
// tuning but the default asks for staging wherever the plan allows
// (StagedTuning::Stage::kAlways); the rows run alone take the default
// launch, which runs float32 rows of 4096 without a residual in registers,
// so those rows also compare the staged kernel with the register kernel.
TEST_F(CudaKernelTest, StagedTuningDoesNotChangeBits) {
  std::mt19937 rng(23);
  for (DType in : {DType::kFloat32, DType::kBFloat16}) {
    for (bool residual : {false, true}) {
      for (int64_t d : {768, 1024, 4096, 16384, 32768}) {
        if (!PlanLaunch(d, in).staged) continue;  // float32 D < 4096
        const int kRows = 37;
        std::vector<float> g, b;
        const Case all = MakeCase(NormKind::kLayerNorm, in, in, d, kRows, true,
                                  true, residual, &rng, &g, &b);
        const size_t in_row = d * DTypeSize(in);
        std::vector<Output> alone;
        for (int r = 0; r < kRows; ++r) {
          Case c = all;
          c.rows = 1;
          c.x.bytes.assign(all.x.bytes.begin() + r * in_row,
                           all.x.bytes.begin() + (r + 1) * in_row);
          if (residual) {
            c.residual.bytes.assign(
                all.residual.bytes.begin() + r * in_row,
                all.residual.bytes.begin() + (r + 1) * in_row);
          }
          alone.push_back(RunOnGpu(c));
        }
        std::vector<StagedTuning> tunings = {StagedTuning{}};
        for (int stages = 2; stages <= kMaxStagedBuffers; ++stages) {
          // One block (every row group wraps its buffers), two blocks
          // (about 18 rows a group, or 2 under the warp mapping), and a
          // block per row group of one row each.
          for (auto [max_blocks, rows_per_group] :
               {std::pair{1, 0}, std::pair{2, 5}, std::pair{0, 1}}) {
            StagedTuning t;
            t.warp_stages = t.block_stages = t.streaming_stages = stages;
            t.max_blocks = max_blocks;
            t.rows_per_group = rows_per_group;
            tunings.push_back(t);
          }
        }
        for (int max_blocks : {1, 0}) {
          StagedTuning t;
          t.weights = StagedTuning::Weights::kLoaded;
          t.max_blocks = max_blocks;
          tunings.push_back(t);
        }
        if (residual) {
          for (auto where : {StagedTuning::Residual::kBeside,
                             StagedTuning::Residual::kFromMemory}) {
            StagedTuning t;
            t.warp_stages = t.block_stages = 3;
            t.max_blocks = 1;
            t.residual = where;
            tunings.push_back(t);
          }
        }
        for (size_t i = 1; i < tunings.size(); ++i) {
          tunings[i].stage = StagedTuning::Stage::kAlways;
        }
        for (const StagedTuning& t : tunings) {
          SCOPED_TRACE(::testing::Message()
                       << Name(in) << " D " << d << " residual " << residual
                       << " stages " << t.block_stages << " max_blocks "
                       << t.max_blocks << " rows_per_group " << t.rows_per_group
                       << " residual placement " << static_cast<int>(t.residual)
                       << " weights " << static_cast<int>(t.weights)
                       << " stage " << static_cast<int>(t.stage));
          internal::LaunchReport report;
          const Output o = RunOnGpu(all, 0, &t, &report);
          ExpectTuningHonoured(all, t, report);
          for (int r = 0; r < kRows; ++r) {
            SCOPED_TRACE(::testing::Message() << "row " << r);
            ASSERT_EQ(0, std::memcmp(o.y.data() + r * in_row, alone[r].y.data(),
                                     in_row));
            ASSERT_EQ(0, std::memcmp(o.sum.data() + r * in_row,
                                     alone[r].sum.data(), in_row));
            ASSERT_EQ(0, std::memcmp(&o.mean[r], alone[r].mean.data(), 4));
            ASSERT_EQ(0, std::memcmp(&o.rstd[r], alone[r].rstd.data(), 4));
          }
        }
      }
    }
  }
}

// A device reset (the CUDA backend's recovery from a sticky error) drops
// the kernels' raised shared-memory limits, while the launcher's cache of
// limits outlives it. Staged launches whose dynamic shared memory is just
// under 48 KiB (16-bit D = 12288, float32 D = 6144, two buffers) need the
// limit raised all the same, their static shared memory taking them past
// 48 KiB: they launch after a reset, with the same bits.
TEST_F(CudaKernelTest, StagedLaunchesJustUnder48KiBWorkAfterADeviceReset) {
  std::mt19937 rng(31);
  for (auto [in, d] : {std::pair{DType::kBFloat16, int64_t{12288}},
                       std::pair{DType::kFloat32, int64_t{6144}}}) {
    SCOPED_TRACE(::testing::Message() << Name(in) << " D " << d);
    std::vector<float> g, b;
    const Case c = MakeCase(NormKind::kLayerNorm, in, in, d, 64, true, true,
                            false, &rng, &g, &b);
    const StagedTuning defaults;
    internal::LaunchReport before_report, after_report;
    const Output before = RunOnGpu(c, 0, &defaults, &before_report);
    ASSERT_TRUE(before_report.staged);
    EXPECT_LE(before_report.shared_bytes, size_t{48} << 10);
    EXPECT_GT(before_report.shared_bytes, (size_t{48} << 10) - 1024);
    CheckAgainstReference(c, before);
    ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
    const Output after = RunOnGpu(c, 0, &defaults, &after_report);
    EXPECT_TRUE(after_report.staged);
    EXPECT_EQ(after.y, before.y);
  }
}

// A staged grid of more blocks than the device holds at once (one row per
// row group: the hardware hands blocks out as others finish) gives the bits
// of the default grid, which holds its blocks resident and loops them over
// the rows.
TEST_F(CudaKernelTest, StagedGridBeyondTheResidentBlocksDoesNotChangeBits) {
  std::mt19937 rng(29);
  for (auto [in, d] : {std::pair{DType::kFloat32, int64_t{16384}},
                       std::pair{DType::kBFloat16, int64_t{4096}}}) {
    SCOPED_TRACE(::testing::Message() << Name(in) << " D " << d);
    // Rows beyond what the device could hold at once: blocks per
    // multiprocessor at most as its shared memory and threads allow.
    const LaunchPlan plan = PlanLaunch(d, in);
    internal::KernelArgs a{};
    a.dim = d;
    const size_t bytes = internal::StagedSharedBytes(a, plan.pack_elements, 1);
    int sms = 0, smem_per_sm = 0;
    ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceGetAttribute(
                  &smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0),
              cudaSuccess);
    const int64_t per_sm =
        std::min<int64_t>(smem_per_sm / static_cast<int64_t>(bytes),
                          2048 / plan.threads_per_block());
    const int64_t rows = 2 * sms * per_sm;
    std::vector<float> g, b;
    const Case c = MakeCase(NormKind::kLayerNorm, in, in, d, rows, true, true,
                            false, &rng, &g, &b);
    StagedTuning resident_grid;
    resident_grid.rows_per_group = 0;
    internal::LaunchReport resident;
    const Output o_resident = RunOnGpu(c, 0, &resident_grid, &resident);
    ASSERT_TRUE(resident.staged);
    ASSERT_LT(resident.blocks, rows);  // rows looped over resident blocks
    StagedTuning one_row;
    one_row.rows_per_group = 1;
    internal::LaunchReport beyond;
    const Output o = RunOnGpu(c, 0, &one_row, &beyond);
    ASSERT_TRUE(beyond.staged);
    EXPECT_EQ(beyond.blocks, rows);
    EXPECT_EQ(o.y, o_resident.y);
    EXPECT_EQ(0, std::memcmp(o.mean.data(), o_resident.mean.data(),
                             static_cast<size_t>(rows) * 4));
    EXPECT_EQ(0, std::memcmp(o.rstd.data(), o_resident.rstd.data(),
                             static_cast<size_t>(rows) * 4));
  }
}

TEST(CudaKernelArgumentsTest, TuningOutOfRangeIsRefused) {
  internal::KernelArgs a{};
  a.rows = 1;
  a.dim = 768;
  StagedTuning t;
  t.block_stages = kMaxStagedBuffers + 1;
  // Refused before any CUDA call, so also without a device.
  EXPECT_NE(internal::LaunchNormalize(a, PlanLaunch(768, DType::kFloat32),
                                      nullptr, t),
            0);
}

TEST_F(CudaKernelTest, ZeroRowsIsANoOp) {
  DeviceRows r;
  r.params.dim = 768;
  r.rows = 0;
  EXPECT_TRUE(NormalizeRowsCuda(r, nullptr).ok());
}

// ---- No device needed ----

TEST(CudaKernelArgumentsTest, BadArgumentsAreRefusedBeforeAnyCudaCall) {
  DeviceRows r;
  r.params.dim = 0;
  r.rows = 1;
  EXPECT_EQ(NormalizeRowsCuda(r, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  r.params.dim = 8;
  r.input_dtype = r.output_dtype = DType::kInt8;
  EXPECT_EQ(NormalizeRowsCuda(r, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  r.input_dtype = r.output_dtype = DType::kFloat32;
  EXPECT_EQ(NormalizeRowsCuda(r, nullptr).code(),  // null input/output
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaDeviceTest, AbsentDeviceIsAFailedPreconditionNotACrash) {
  const absl::Status s = CudaDevicePresent();
  if (s.ok()) GTEST_SKIP() << "a CUDA device is present: " << CudaDeviceName(0);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("no CUDA device"), absl::string_view::npos) << s;
}

TEST(CudaStatusTest, ErrorsMapToStatusCodes) {
  EXPECT_TRUE(CudaStatus(cudaSuccess, "x").ok());
  EXPECT_EQ(CudaStatus(cudaErrorMemoryAllocation, "cudaMalloc").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(CudaStatus(cudaErrorNoDevice, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  const absl::Status s = CudaStatus(cudaErrorIllegalAddress, "sync");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("sync: cudaErrorIllegalAddress"),
            absl::string_view::npos)
      << s;
}

}  // namespace
}  // namespace normserve::cuda
