// The process_* metrics' source: /proc/<pid>/stat and /proc/stat parsed
// from fixed texts, and this process's own stats against what the kernel
// reports through other calls (getrusage, getrlimit, opening a file).
#include "server/internal/process_stats.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <string>

#include "gtest/gtest.h"

namespace normserve::internal {
namespace {

// A /proc/<pid>/stat line (proc(5)) whose command holds spaces and
// parentheses: utime 250, stime 150 ticks, starttime 1000 ticks, vsize
// 123456789 bytes, rss 300 pages.
constexpr char kStat[] =
    "4242 (norm serve) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 "
    "20 0 12 0 1000 123456789 300 18446744073709551615 1 1 0 0 0 0 0 4096 "
    "17663 0 0 0 17 1 0 0 0 0 0\n";

TEST(ProcessStatsTest, ParsesProcPidStat) {
  ProcClock clock;
  clock.ticks_per_second = 100;
  clock.page_bytes = 4096;
  clock.boot_time_seconds = 1700000000;
  const absl::StatusOr<ProcessStats> s = ParseProcPidStat(kStat, clock);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_DOUBLE_EQ(s->cpu_seconds, 4.0);
  EXPECT_DOUBLE_EQ(s->start_time_seconds, 1700000010.0);
  EXPECT_DOUBLE_EQ(s->virtual_bytes, 123456789.0);
  EXPECT_DOUBLE_EQ(s->resident_bytes, 300.0 * 4096);
  // Left to ReadProcessStats.
  EXPECT_EQ(s->open_fds, -1);
  EXPECT_EQ(s->max_fds, -1);
}

TEST(ProcessStatsTest, MalformedStatNamesTheField) {
  const ProcClock clock;
  const absl::StatusOr<ProcessStats> no_name =
      ParseProcPidStat("4242 norm S 1", clock);
  EXPECT_EQ(no_name.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_name.status().message().find("parentheses"), std::string::npos);
  const absl::StatusOr<ProcessStats> short_line =
      ParseProcPidStat("4242 (norm) S 1 2 3 4 5 6 7 8 9 10", clock);
  EXPECT_EQ(short_line.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(short_line.status().message().find("field 14 (utime)"),
            std::string::npos)
      << short_line.status();
  std::string bad_rss = kStat;
  bad_rss.replace(bad_rss.find(" 300 "), 5, " -3 ");
  EXPECT_NE(ParseProcPidStat(bad_rss, clock)
                .status()
                .message()
                .find("field 24 (rss)"),
            std::string::npos);
}

TEST(ProcessStatsTest, ParsesBootTime) {
  const absl::StatusOr<int64_t> boot =
      ParseBootTime("cpu  1 2 3\nintr 5\nbtime 1764300000\nprocesses 9\n");
  ASSERT_TRUE(boot.ok()) << boot.status();
  EXPECT_EQ(*boot, 1764300000);
  EXPECT_EQ(ParseBootTime("cpu 1 2 3\n").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseBootTime("btime x\n").status().code(),
            absl::StatusCode::kInvalidArgument);
}

#if defined(__linux__)
double RusageCpuSeconds() {
  rusage u{};
  EXPECT_EQ(getrusage(RUSAGE_SELF, &u), 0);
  auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) +
           1e-6 * static_cast<double>(t.tv_usec);
  };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

TEST(ProcessStatsTest, OwnStatsAgreeWithTheKernel) {
  // Some CPU time to count.
  volatile double sink = 0;
  for (int i = 0; i < 50000000; ++i) sink = sink + i * 1e-9;
  const double cpu_before = RusageCpuSeconds();
  const absl::StatusOr<ProcessStats> s = ReadProcessStats();
  const double cpu_after = RusageCpuSeconds();
  ASSERT_TRUE(s.ok()) << s.status();
  // /proc counts whole clock ticks (1/100 s here), rusage microseconds.
  const double tick = 1.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
  EXPECT_GT(s->cpu_seconds, 0);
  EXPECT_GE(s->cpu_seconds, cpu_before - 2 * tick);
  EXPECT_LE(s->cpu_seconds, cpu_after + 2 * tick);
  // Started before now, and not before the test binary could have.
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  EXPECT_LE(s->start_time_seconds, now + 1);
  EXPECT_GE(s->start_time_seconds, now - 600);
  // A running test binary holds more than 1 MiB, within its virtual size.
  EXPECT_GT(s->resident_bytes, 1 << 20);
  EXPECT_GE(s->virtual_bytes, s->resident_bytes);
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur == RLIM_INFINITY) {
    EXPECT_EQ(s->max_fds, -1);
  } else {
    EXPECT_EQ(s->max_fds, static_cast<int64_t>(limit.rlim_cur));
  }
  // Each descriptor opened counts once.
  const int fd = open("/proc/self/stat", O_RDONLY);
  ASSERT_GE(fd, 0);
  const absl::StatusOr<ProcessStats> more = ReadProcessStats();
  close(fd);
  const absl::StatusOr<ProcessStats> after = ReadProcessStats();
  ASSERT_TRUE(more.ok() && after.ok());
  EXPECT_GE(s->open_fds, 3);  // stdin, stdout, stderr at least
  EXPECT_EQ(more->open_fds, after->open_fds + 1);
  EXPECT_EQ(after->open_fds, s->open_fds);
}
#endif

}  // namespace
}  // namespace normserve::internal
