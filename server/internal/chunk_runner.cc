#include "server/internal/chunk_runner.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <vector>

namespace normserve::internal {

absl::Status RunChunks(int chunks, int max_in_flight, SlotPool& pool,
                       ChunkSteps& steps) {
  if (chunks <= 0) return absl::OkStatus();
  const size_t most = static_cast<size_t>(
      std::clamp(std::min(max_in_flight, chunks), 1, pool.size()));
  struct Staged {
    int chunk, slot;
  };
  // Chunks staged and not yet finished, oldest first; a chunk enters before
  // its Stage call, so that a failed one's slot is drained too.
  std::deque<Staged> staged;
  // Slots held and free for the next chunk.
  std::vector<int> idle = pool.Acquire(static_cast<int>(most));
  int next = 0;
  absl::Status status;
  while (status.ok() && (next < chunks || !staged.empty())) {
    if (next < chunks && staged.size() < most) {
      if (idle.empty()) {
        if (std::optional<int> slot = pool.TryAcquire()) {
          idle.push_back(*slot);
        } else if (staged.empty()) {
          idle = pool.Acquire(1);  // holds none: may wait its turn
        }
      }
      if (!idle.empty()) {
        staged.push_back({next, idle.back()});
        idle.pop_back();
        status = steps.Stage(next, staged.back().slot);
        ++next;
        continue;
      }
    }
    const Staged done = staged.front();
    status = steps.Finish(done.chunk, done.slot);
    if (!status.ok()) break;
    staged.pop_front();
    if (next < chunks && !pool.starved()) {
      idle.push_back(done.slot);
    } else {
      pool.Release(done.slot);
    }
  }
  // Left staged only after an error.
  for (const Staged& s : staged) {
    steps.Drain(s.slot);
    pool.Release(s.slot);
  }
  for (int slot : idle) pool.Release(slot);
  return status;
}

}  // namespace normserve::internal
