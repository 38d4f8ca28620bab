#include "server/internal/slot_pool.h"

#include <algorithm>

namespace normserve::internal {

SlotPool::SlotPool(int size)
    : size_(std::max(1, size)),
      taken_(static_cast<size_t>(size_), false),
      free_(size_) {}

std::vector<int> SlotPool::Acquire(int want) {
  want = std::clamp(want, 1, size_);
  MutexLock lock(&mu_);
  while (free_ == 0) freed_.Wait(&mu_);
  std::vector<int> slots;
  for (int s = 0; s < size_ && static_cast<int>(slots.size()) < want; ++s) {
    if (taken_[static_cast<size_t>(s)]) continue;
    taken_[static_cast<size_t>(s)] = true;
    slots.push_back(s);
  }
  free_ -= static_cast<int>(slots.size());
  // Slots left over may serve another waiter.
  if (free_ > 0) freed_.Signal();
  return slots;
}

void SlotPool::Release(int slot) {
  MutexLock lock(&mu_);
  // A slot that is not taken (released twice) must not count twice.
  if (slot < 0 || slot >= size_ || !taken_[static_cast<size_t>(slot)]) return;
  taken_[static_cast<size_t>(slot)] = false;
  ++free_;
  freed_.Signal();
}

int SlotPool::free_slots() {
  MutexLock lock(&mu_);
  return free_;
}

}  // namespace normserve::internal
