// How many CPUs the server may use, for --cpu_threads=0.
//
// std::thread::hardware_concurrency() counts the machine's cores: in a
// container limited with `docker run --cpus` or a Kubernetes CPU limit, or
// under `taskset`, that is more threads than the process gets, and a batch
// split over them waits for the CFS quota to refill. AvailableCpus() counts
// the CPUs in the process's affinity mask, capped by the cgroup's CPU quota
// rounded up.
#ifndef NORMSERVE_SERVER_INTERNAL_CPU_LIMIT_H_
#define NORMSERVE_SERVER_INTERNAL_CPU_LIMIT_H_

#include <string>

namespace normserve::internal {

// The CPU quota of the cgroup at `cgroup_dir` (cgroup v2 `cpu.max`, or v1
// `cpu.cfs_quota_us` over `cpu.cfs_period_us`) as whole CPUs, rounded up;
// 0 when there is no quota or no readable file.
int CgroupCpuQuota(const std::string& cgroup_dir);

// The CPUs this process may run on: its affinity mask, capped by the quota
// of its own cgroup (found through /proc/self/cgroup under /sys/fs/cgroup)
// or, in a container that sees only its own, of /sys/fs/cgroup itself.
// At least 1.
int AvailableCpus();

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_CPU_LIMIT_H_
