// SlotPool: the staging slots (stream and buffers) of the CUDA backend,
// shared by batches that run at the same time. A batch takes the free slots
// it can use, waiting only when none is free, and hands each back as soon as
// its last chunk on it has finished. So batches of a chunk or two (the
// common case) run side by side; a batch that arrives while a large one
// holds every slot waits for the large one's last chunks. Waiting batches
// are served in arrival order.
//
// Device-independent, so that it is tested everywhere (with ThreadSanitizer).
#ifndef NORMSERVE_SERVER_INTERNAL_SLOT_POOL_H_
#define NORMSERVE_SERVER_INTERNAL_SLOT_POOL_H_

#include <cstdint>
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

  // Hands back a slot taken by Acquire. One that is not taken (out of
  // range, or released already) is ignored.
  void Release(int slot) ABSL_LOCKS_EXCLUDED(mu_);

  int free_slots() ABSL_LOCKS_EXCLUDED(mu_);
  // Callers inside Acquire (waiting, or about to return).
  int waiting() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const int size_;
  Mutex mu_;
  CondVar freed_;
  int FreeLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::vector<bool> taken_ ABSL_GUARDED_BY(mu_);
  // Tickets handed out, and the ticket whose turn it is.
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t serving_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_SLOT_POOL_H_
