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

// The smallest CPU quota over a process's cgroup and its ancestors, as
// whole CPUs (0: none), given the text of its /proc/self/cgroup and where
// the hierarchy is mounted (/sys/fs/cgroup). cgroup v2 ("0::/path") reads
// ROOT/path/cpu.max upwards; v1 reads ROOT/<cpu controller>/path upwards.
// A container that sees its host's path for its cgroup but has its own
// cgroup mounted at the root (Docker on cgroup v1) finds the quota at the
// root, the last place looked.
int ProcessCpuQuota(const std::string& proc_self_cgroup,
                    const std::string& root);

// The CPUs this process may run on: its affinity mask, capped by
// ProcessCpuQuota. At least 1.
int AvailableCpus();

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_CPU_LIMIT_H_
