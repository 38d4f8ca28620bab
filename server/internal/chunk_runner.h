// RunChunks: carries out one batch's chunks (server/internal/
// cuda_pipeline.h) on staging slots taken from the SlotPool that concurrent
// batches share, deciding at run time which slot each chunk goes to.
//
// The schedule
//   Chunks are staged in order and finished in order. Staging runs ahead of
//   finishing by up to `max_in_flight` chunks, each on a slot of its own,
//   so the host packs chunk c + 1 while the device copies and computes
//   chunk c. A slot is staged again only after its chunk has finished.
//
// Sharing
//   A batch starts with the free slots it can use (waiting only while none
//   is free), takes more as they free up and nobody waits for them, and
//   hands a slot back as soon as its chunk has finished if another batch
//   waits and no slot is free. So a batch that arrives while a large one holds
//   every slot waits for one chunk, not for the large batch's end; the large
//   one goes on with fewer slots, and queues behind the waiters (first come,
//   first served) only when it holds none.
//
// No deadlock: a batch waits for a slot only while it holds none, and a
// batch holding slots needs nothing from other batches to finish its
// chunks on them.
//
// Device-independent, so that it is tested everywhere (with
// ThreadSanitizer).
#ifndef NORMSERVE_SERVER_INTERNAL_CHUNK_RUNNER_H_
#define NORMSERVE_SERVER_INTERNAL_CHUNK_RUNNER_H_

#include "absl/status/status.h"
#include "server/internal/slot_pool.h"

namespace normserve::internal {

// What a batch does with a chunk on a slot.
class ChunkSteps {
 public:
  virtual ~ChunkSteps() = default;
  // Starts chunk `chunk` on `slot`: packs its inputs and enqueues copy in,
  // kernels and copy out on the slot's stream.
  virtual absl::Status Stage(int chunk, int slot) = 0;
  // Waits for the chunk's work on `slot` and delivers its outputs.
  virtual absl::Status Finish(int chunk, int slot) = 0;
  // After an error: waits for whatever is still queued on `slot` (its own
  // errors ignored), so that no copy of this batch is in flight on a slot
  // another batch gets.
  virtual void Drain(int slot) = 0;
};

// Stages and finishes chunks 0 … chunks − 1 with at most `max_in_flight`
// (clamped to 1 … pool.size()) staged and not finished. Stops at the first
// error, drains the slots it still holds and returns the error. Every slot
// it took is back in the pool when it returns.
absl::Status RunChunks(int chunks, int max_in_flight, SlotPool& pool,
                       ChunkSteps& steps);

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_CHUNK_RUNNER_H_
