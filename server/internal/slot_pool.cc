#include "server/internal/slot_pool.h"

#include <algorithm>

namespace normserve::internal {

SlotPool::SlotPool(int size)
    : size_(std::max(1, size)), taken_(static_cast<size_t>(size_), false) {}

int SlotPool::FreeLocked() const {
  return static_cast<int>(std::count(taken_.begin(), taken_.end(), false));
}

std::vector<int> SlotPool::Acquire(int want) {
  want = std::clamp(want, 1, size_);
  MutexLock lock(&mu_);
  // First come, first served: a batch that arrives later never overtakes
  // one that waits.
  const uint64_t ticket = next_ticket_++;
  while (ticket != serving_ || FreeLocked() == 0) freed_.Wait(&mu_);
  ++serving_;
  std::vector<int> slots = TakeLocked(want);
  // The next ticket may go on if slots are left.
  freed_.SignalAll();
  return slots;
}

std::optional<int> SlotPool::TryAcquire() {
  MutexLock lock(&mu_);
  if (next_ticket_ != serving_) return std::nullopt;  // others wait
  const std::vector<int> slot = TakeLocked(1);
  if (slot.empty()) return std::nullopt;
  return slot[0];
}

std::vector<int> SlotPool::TakeLocked(int want) {
  std::vector<int> slots;
  for (int s = 0; s < size_ && static_cast<int>(slots.size()) < want; ++s) {
    if (taken_[static_cast<size_t>(s)]) continue;
    taken_[static_cast<size_t>(s)] = true;
    slots.push_back(s);
  }
  return slots;
}

void SlotPool::Release(int slot) {
  MutexLock lock(&mu_);
  // A slot that is not taken (released twice) is ignored.
  if (slot < 0 || slot >= size_ || !taken_[static_cast<size_t>(slot)]) return;
  taken_[static_cast<size_t>(slot)] = false;
  freed_.SignalAll();  // the head of the queue, whichever thread it is
}

int SlotPool::free_slots() {
  MutexLock lock(&mu_);
  return FreeLocked();
}

int SlotPool::waiting() {
  MutexLock lock(&mu_);
  return static_cast<int>(next_ticket_ - serving_);
}

bool SlotPool::starved() {
  MutexLock lock(&mu_);
  return next_ticket_ != serving_ && FreeLocked() == 0;
}

}  // namespace normserve::internal
