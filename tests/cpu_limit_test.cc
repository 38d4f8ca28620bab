// The CPU count behind --cpu_threads=0: cgroup quotas (v2 and v1 files in
// a temporary directory) and the process's affinity mask.
#include "server/internal/cpu_limit.h"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace normserve::internal {
namespace {

class CgroupDir {
 public:
  CgroupDir() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    path_ = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") /
            ("cpu_limit_test." + std::to_string(getpid()) + "." +
             std::to_string(next_++));
    std::filesystem::create_directories(path_);
  }
  ~CgroupDir() { std::filesystem::remove_all(path_); }
  void Write(const std::string& name, const std::string& text) {
    std::filesystem::create_directories((path_ / name).parent_path());
    std::ofstream(path_ / name) << text;
  }
  std::string path() const { return path_.string(); }

 private:
  static inline int next_ = 0;
  std::filesystem::path path_;
};

TEST(CpuLimitTest, CgroupV2QuotaRoundsUp) {
  for (const auto& [text, cpus] :
       {std::pair<std::string, int>{"200000 100000\n", 2},
        {"150000 100000\n", 2},
        {"50000 100000\n", 1},
        {"400000 100000", 4},
        {"max 100000\n", 0},
        {"garbage\n", 0}}) {
    CgroupDir dir;
    dir.Write("cpu.max", text);
    EXPECT_EQ(CgroupCpuQuota(dir.path()), cpus) << text;
  }
}

TEST(CpuLimitTest, CgroupV1QuotaRoundsUp) {
  for (const auto& [quota, cpus] :
       {std::pair<std::string, int>{"250000", 3}, {"100000", 1}, {"-1", 0}}) {
    CgroupDir dir;
    dir.Write("cpu.cfs_quota_us", quota + "\n");
    dir.Write("cpu.cfs_period_us", "100000\n");
    EXPECT_EQ(CgroupCpuQuota(dir.path()), cpus) << quota;
  }
}

TEST(CpuLimitTest, NoFilesMeansNoQuota) {
  CgroupDir dir;
  EXPECT_EQ(CgroupCpuQuota(dir.path()), 0);
  EXPECT_EQ(CgroupCpuQuota(dir.path() + "/absent"), 0);
}

// A Kubernetes pod's limit sits on the pod's cgroup, above the container's
// own (which has none): the smallest quota upwards counts.
TEST(CpuLimitTest, AQuotaOnAParentCgroupCounts) {
  CgroupDir root;
  root.Write("kubepods/pod1/c1/cpu.max", "max 100000\n");
  root.Write("kubepods/pod1/cpu.max", "200000 100000\n");
  root.Write("kubepods/cpu.max", "max 100000\n");
  EXPECT_EQ(ProcessCpuQuota("0::/kubepods/pod1/c1\n", root.path()), 2);
  EXPECT_EQ(ProcessCpuQuota("0::/kubepods\n", root.path()), 0);
}

// Docker on cgroup v1: /proc/self/cgroup names the host's path for the
// container's cgroup, whose own directory is mounted at the root.
TEST(CpuLimitTest, ACgroupV1ContainerFindsItsQuotaAtTheRoot) {
  CgroupDir root;
  root.Write("cpu,cpuacct/cpu.cfs_quota_us", "150000\n");
  root.Write("cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  root.Write("memory/memory.limit_in_bytes", "1073741824\n");
  EXPECT_EQ(ProcessCpuQuota("13:memory:/docker/abc\n"
                            "12:cpu,cpuacct:/docker/abc\n"
                            "1:name=systemd:/docker/abc\n",
                            root.path()),
            2);
  // No cpu controller line, or no quota: none.
  EXPECT_EQ(ProcessCpuQuota("13:memory:/docker/abc\n", root.path()), 0);
  CgroupDir empty;
  EXPECT_EQ(ProcessCpuQuota("0::/\n", empty.path()), 0);
}

// Run on one CPU (as under `taskset -c 0`), a thread counts one CPU where
// hardware_concurrency() still counts the machine's.
TEST(CpuLimitTest, AffinityMaskCapsTheCount) {
  int seen = 0;
  std::thread([&seen] {
    cpu_set_t all;
    ASSERT_EQ(sched_getaffinity(0, sizeof(all), &all), 0);
    int first = 0;
    while (!CPU_ISSET(first, &all)) ++first;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
    seen = AvailableCpus();
  }).join();
  EXPECT_EQ(seen, 1);
  EXPECT_GE(AvailableCpus(), 1);
  EXPECT_LE(AvailableCpus(),
            static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace
}  // namespace normserve::internal
