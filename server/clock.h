// An injectable time source, so batching deadlines are tested without sleeps.
// RealClock is thread-safe; FakeClock is thread-safe and only moves when a
// test advances it.
#ifndef NORMSERVE_SERVER_CLOCK_H_
#define NORMSERVE_SERVER_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/internal/mutex.h"

namespace normserve {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
  // The process-wide real clock.
  static Clock* Real();
};

class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::UnixEpoch()) : now_(start) {}
  absl::Time Now() override {
    MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace normserve

#endif  // NORMSERVE_SERVER_CLOCK_H_
