#include "server/internal/cpu_limit.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace normserve::internal {
namespace {

// The first line of `path`, or "" when it cannot be read.
std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

int CeilDiv(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return 0;
  return static_cast<int>((quota + period - 1) / period);
}

}  // namespace

int CgroupCpuQuota(const std::string& cgroup_dir) {
  // cgroup v2: "max 100000" (none) or "<quota> <period>".
  if (const std::string v2 = FirstLine(cgroup_dir + "/cpu.max"); !v2.empty()) {
    std::istringstream fields(v2);
    std::string quota;
    long long period = 0;
    fields >> quota >> period;
    if (quota == "max" || !fields) return 0;
    try {
      return CeilDiv(std::stoll(quota), period);
    } catch (...) {
      return 0;
    }
  }
  // cgroup v1: a quota of -1 means none.
  const std::string quota = FirstLine(cgroup_dir + "/cpu.cfs_quota_us");
  const std::string period = FirstLine(cgroup_dir + "/cpu.cfs_period_us");
  if (quota.empty() || period.empty()) return 0;
  try {
    return CeilDiv(std::stoll(quota), std::stoll(period));
  } catch (...) {
    return 0;
  }
}

int ProcessCpuQuota(const std::string& proc_self_cgroup,
                    const std::string& root) {
  int smallest = 0;  // 0: none found yet
  std::istringstream lines(proc_self_cgroup);
  for (std::string line; std::getline(lines, line);) {
    // "hierarchy-id:controllers:path"; v2's controllers are empty.
    const size_t first = line.find(':');
    const size_t second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    std::string base = root;
    if (!controllers.empty()) {
      if (!absl::StrContains(absl::StrCat(",", controllers, ","), ",cpu,")) {
        continue;
      }
      base += "/" + controllers;
    }
    // The cgroup's directory, then each ancestor's up to `base` itself.
    std::string dir = line.substr(second + 1);
    for (;;) {
      const int quota = CgroupCpuQuota(base + dir);
      if (quota > 0 && (smallest == 0 || quota < smallest)) smallest = quota;
      if (dir.empty() || dir == "/") break;
      const size_t slash = dir.rfind('/');
      dir.erase(slash == std::string::npos ? 0 : slash);
    }
  }
  return smallest;
}

int AvailableCpus() {
  int cpus = static_cast<int>(std::thread::hardware_concurrency());
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) {
    cpus = CPU_COUNT(&mask);
  }
  std::ifstream self("/proc/self/cgroup");
  std::stringstream text;
  text << self.rdbuf();
  const int quota = ProcessCpuQuota(text.str(), "/sys/fs/cgroup");
  if (quota > 0) cpus = std::min(cpus, quota);
  return std::max(1, cpus);
}

}  // namespace normserve::internal
