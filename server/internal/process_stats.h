// The server process's own resource use, as Prometheus client libraries
// export it for every process they run in (process_cpu_seconds_total,
// process_resident_memory_bytes, …; the names and units of their "process
// collector"), read from Linux's /proc at each scrape.
//
// Thread-safe (no state).
#ifndef NORMSERVE_SERVER_INTERNAL_PROCESS_STATS_H_
#define NORMSERVE_SERVER_INTERNAL_PROCESS_STATS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace normserve::internal {

struct ProcessStats {
  double cpu_seconds = 0;         // user and system CPU time
  double resident_bytes = 0;      // resident set size
  double virtual_bytes = 0;       // virtual memory size
  double start_time_seconds = 0;  // since the Unix epoch
  // Open file descriptors and their limit (the soft RLIMIT_NOFILE); -1
  // where unknown.
  int64_t open_fds = -1;
  int64_t max_fds = -1;
};

// How /proc/<pid>/stat counts: its clock ticks per second, its page size,
// and when the machine booted (btime of /proc/stat, Unix seconds).
struct ProcClock {
  int64_t ticks_per_second = 100;
  int64_t page_bytes = 4096;
  int64_t boot_time_seconds = 0;
};

// The CPU time, memory and start time of the text of a /proc/<pid>/stat
// line (the command name, in parentheses, may hold spaces and parentheses
// itself). INVALID_ARGUMENT naming the field where the text is not one.
absl::StatusOr<ProcessStats> ParseProcPidStat(absl::string_view text,
                                              const ProcClock& clock);

// btime of the text of /proc/stat; INVALID_ARGUMENT without one.
absl::StatusOr<int64_t> ParseBootTime(absl::string_view proc_stat);

// This process's stats. UNAVAILABLE where /proc cannot be read (not
// Linux).
absl::StatusOr<ProcessStats> ReadProcessStats();

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_PROCESS_STATS_H_
