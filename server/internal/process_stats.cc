#include "server/internal/process_stats.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace normserve::internal {
namespace {

absl::StatusOr<std::string> ReadFile(const char* path) {
  std::ifstream in(path);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Entries of /proc/self/fd but "." and "..", the descriptor that reads
// the directory included, as Prometheus' Go and Python clients count them;
// -1 where it cannot be read.
int64_t CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int64_t n = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

}  // namespace

absl::StatusOr<ProcessStats> ParseProcPidStat(absl::string_view text,
                                              const ProcClock& clock) {
  // Fields after the command name: state is field 3 of proc(5), so field
  // k is fields[k - 3].
  const size_t close = text.rfind(')');
  if (close == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "/proc/<pid>/stat: expected the command name in parentheses");
  }
  const std::vector<absl::string_view> fields = absl::StrSplit(
      text.substr(close + 1), absl::ByAnyChar(" \n"), absl::SkipEmpty());
  auto field = [&](int k, const char* name) -> absl::StatusOr<int64_t> {
    int64_t v = 0;
    if (static_cast<size_t>(k - 3) >= fields.size() ||
        !absl::SimpleAtoi(fields[static_cast<size_t>(k - 3)], &v) || v < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("/proc/<pid>/stat: field ", k, " (", name,
                       "): expected a non-negative integer"));
    }
    return v;
  };
  const auto utime = field(14, "utime");
  const auto stime = field(15, "stime");
  const auto start = field(22, "starttime");
  const auto vsize = field(23, "vsize");
  const auto rss = field(24, "rss");
  for (const auto* f : {&utime, &stime, &start, &vsize, &rss}) {
    if (!f->ok()) return f->status();
  }
  const double ticks = static_cast<double>(clock.ticks_per_second);
  ProcessStats s;
  s.cpu_seconds = static_cast<double>(*utime + *stime) / ticks;
  s.start_time_seconds = static_cast<double>(clock.boot_time_seconds) +
                         static_cast<double>(*start) / ticks;
  s.virtual_bytes = static_cast<double>(*vsize);
  s.resident_bytes =
      static_cast<double>(*rss) * static_cast<double>(clock.page_bytes);
  return s;
}

absl::StatusOr<int64_t> ParseBootTime(absl::string_view proc_stat) {
  for (absl::string_view line : absl::StrSplit(proc_stat, '\n')) {
    if (!absl::ConsumePrefix(&line, "btime ")) continue;
    int64_t v = 0;
    if (absl::SimpleAtoi(line, &v) && v >= 0) return v;
    break;
  }
  return absl::InvalidArgumentError(
      "/proc/stat: expected a line \"btime <Unix seconds>\"");
}

absl::StatusOr<ProcessStats> ReadProcessStats() {
  // The boot time does not change: read once.
  static const absl::StatusOr<int64_t> boot = []() -> absl::StatusOr<int64_t> {
    absl::StatusOr<std::string> stat = ReadFile("/proc/stat");
    if (!stat.ok()) return stat.status();
    return ParseBootTime(*stat);
  }();
  if (!boot.ok()) return boot.status();
  const absl::StatusOr<std::string> text = ReadFile("/proc/self/stat");
  if (!text.ok()) return text.status();
  ProcClock clock;
  clock.ticks_per_second = sysconf(_SC_CLK_TCK);
  clock.page_bytes = sysconf(_SC_PAGESIZE);
  clock.boot_time_seconds = *boot;
  if (clock.ticks_per_second <= 0 || clock.page_bytes <= 0) {
    return absl::UnavailableError("sysconf: no clock tick or page size");
  }
  absl::StatusOr<ProcessStats> s = ParseProcPidStat(*text, clock);
  if (!s.ok()) return s;
  s->open_fds = CountOpenFds();
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
      limit.rlim_cur != RLIM_INFINITY) {
    s->max_fds = static_cast<int64_t>(limit.rlim_cur);
  }
  return s;
}

}  // namespace normserve::internal
