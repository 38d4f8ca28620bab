// SlotPool: the staging slots (stream and buffers) of the CUDA backend,
// shared by batches that run at the same time (how a batch takes and hands
// back slots: chunk_runner.h). Waiting batches are served in arrival order.
//
// Device-independent, so that it is tested everywhere (with ThreadSanitizer).
#ifndef NORMSERVE_SERVER_INTERNAL_SLOT_POOL_H_
#define NORMSERVE_SERVER_INTERNAL_SLOT_POOL_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "server/internal/mutex.h"

namespace normserve::internal {

class SlotPool {
 public:
  // Slots 0 … size − 1, all free. size > 0.
  explicit SlotPool(int size);

  SlotPool(const SlotPool&) = delete;
  SlotPool& operator=(const SlotPool&) = delete;

  int size() const { return size_; }

  // Waits until a slot is free and every earlier caller is served, then
  // takes min(want, free) slots, lowest numbers first. want >= 1 (larger
  // than size() takes at most all).
  std::vector<int> Acquire(int want) ABSL_LOCKS_EXCLUDED(mu_);

  // The lowest free slot, taken, if one is free and nobody waits in
  // Acquire (who would come first); never waits.
  std::optional<int> TryAcquire() ABSL_LOCKS_EXCLUDED(mu_);

  // Hands back a slot taken by Acquire or TryAcquire, once: a second
  // release could free the slot after another batch took it. A slot that
  // is not taken (out of range, or free) is ignored.
  void Release(int slot) ABSL_LOCKS_EXCLUDED(mu_);

  int free_slots() ABSL_LOCKS_EXCLUDED(mu_);
  // Callers inside Acquire (waiting, or about to return).
  int waiting() ABSL_LOCKS_EXCLUDED(mu_);
  // Whether a caller waits in Acquire and no slot is free for it.
  bool starved() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const int size_;
  Mutex mu_;
  CondVar freed_;
  int FreeLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes up to `want` free slots, lowest first.
  std::vector<int> TakeLocked(int want) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::vector<bool> taken_ ABSL_GUARDED_BY(mu_);
  // Tickets handed out, and the ticket whose turn it is.
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t serving_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_SLOT_POOL_H_
