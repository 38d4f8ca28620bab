#include "server/internal/batch_queues.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace normserve::internal {

absl::Status BatchQueues::Add(std::unique_ptr<Job> job, absl::Time now,
                              Popped* dropped) {
  const QueueOptions& o = job->queue;
  if (o.max_batch_rows <= 0 || o.max_queue_requests <= 0 ||
      o.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "queue options: max_batch_rows = ", o.max_batch_rows,
        ", max_queue_requests = ", o.max_queue_requests,
        ", max_queue_delay = ", absl::FormatDuration(o.max_queue_delay),
        ": expected positive sizes and a non-negative delay"));
  }
  if (absl::Status full = Room(job->key, job->bytes, now, dropped);
      !full.ok()) {
    return full;
  }
  auto it = queues_.find(job->key);
  if (it == queues_.end()) {
    it = queues_.emplace(job->key, Queue{}).first;
    it->second.options = o;
  }
  Queue& q = it->second;
  job->enqueue_time = now;
  q.earliest_deadline = std::min(q.earliest_deadline, job->deadline);
  q.rows += job->rows;
  bytes_ += job->bytes;
  q.jobs.push_back(std::move(job));
  ++size_;
  return absl::OkStatus();
}

absl::Status BatchQueues::Room(const BatchKey& key, int64_t bytes,
                               absl::Time now, Popped* dropped) {
  absl::Status full = Full(key, bytes);
  if (!full.ok() && dropped != nullptr) {
    if (OverBytes(bytes) && now >= next_dead_scan_) {
      DropDead(now, nullptr, dropped);
      next_dead_scan_ = now + kDeadScanInterval;
    } else {
      DropDead(now, &key, dropped);
    }
    full = Full(key, bytes);
  }
  return full;
}

bool BatchQueues::OverBytes(int64_t bytes) const {
  return max_queued_bytes_ > 0 && size_ > 0 &&
         bytes_ + bytes > max_queued_bytes_;
}

absl::Status BatchQueues::Full(const BatchKey& key, int64_t bytes) const {
  if (OverBytes(bytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server's queues are full: ", size_, " requests of ", bytes_,
        " bytes waiting, and this one needs ", bytes,
        " more (max_queued_bytes ", max_queued_bytes_, "); retry later"));
  }
  const auto it = queues_.find(key);
  if (it != queues_.end() && static_cast<int64_t>(it->second.jobs.size()) >=
                                 it->second.options.max_queue_requests) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue for model '", key.model, "' (D = ", key.dim,
                     ") is full: ", it->second.options.max_queue_requests,
                     " requests waiting; retry later"));
  }
  return absl::OkStatus();
}

void BatchQueues::DropDead(absl::Time now, const BatchKey* key,
                           Popped* dropped) {
  auto it = key != nullptr ? queues_.find(*key) : queues_.begin();
  while (it != queues_.end()) {
    if (DropDeadJobs(it->second, now, dropped)) {
      queues_.erase(it++);
    } else {
      ++it;
    }
    if (key != nullptr) break;
  }
}

bool BatchQueues::DropDeadJobs(Queue& q, absl::Time now, Popped* dropped) {
  std::deque<std::unique_ptr<Job>> live;
  q.earliest_deadline = absl::InfiniteFuture();
  for (std::unique_ptr<Job>& job : q.jobs) {
    const bool expired = now >= job->deadline;
    const bool cancelled = !expired && job->is_cancelled && job->is_cancelled();
    if (!expired && !cancelled) {
      q.earliest_deadline = std::min(q.earliest_deadline, job->deadline);
      live.push_back(std::move(job));
      continue;
    }
    q.rows -= job->rows;
    --size_;
    bytes_ -= job->bytes;
    (expired ? dropped->expired : dropped->cancelled).push_back(std::move(job));
  }
  q.jobs = std::move(live);
  return q.jobs.empty();
}

absl::Time BatchQueues::DelayEnds(const Queue& q, absl::Time now) {
  const absl::Time enqueued = q.jobs.front()->enqueue_time;
  return now < enqueued ? now : enqueued + q.options.max_queue_delay;
}

bool BatchQueues::Ready(const Queue& q, absl::Time now) const {
  return q.rows >= q.options.max_batch_rows || now >= DelayEnds(q, now);
}

std::optional<BatchQueues::Popped> BatchQueues::PopReady(absl::Time now,
                                                         bool flush) {
  // One pass: the jobs whose deadline has passed leave every queue (a
  // queue that is not ready, or never wins while others keep being ready,
  // would otherwise hold them until its own batch forms), and the ready
  // queue whose oldest job is oldest is found among the rest. Erasing a
  // queue leaves the other iterators, `best` among them, valid.
  Popped out;
  auto best = queues_.end();
  for (auto it = queues_.begin(); it != queues_.end();) {
    Queue& q = it->second;
    if (now >= q.earliest_deadline && DropDeadJobs(q, now, &out)) {
      queues_.erase(it++);
      continue;
    }
    if ((flush || Ready(q, now)) &&
        (best == queues_.end() ||
         q.jobs.front()->enqueue_time <
             best->second.jobs.front()->enqueue_time)) {
      best = it;
    }
    ++it;
  }
  if (best == queues_.end()) {
    if (out.expired.empty() && out.cancelled.empty()) return std::nullopt;
    return out;  // nothing to batch yet: only the dead to answer
  }

  Queue& q = best->second;
  int64_t rows = 0;
  while (!q.jobs.empty()) {
    Job& front = *q.jobs.front();
    const bool expired = now >= front.deadline;
    const bool cancelled =
        !expired && front.is_cancelled && front.is_cancelled();
    if (!expired && !cancelled && !out.batch.empty() &&
        rows + front.rows > q.options.max_batch_rows) {
      break;
    }
    std::unique_ptr<Job> job = std::move(q.jobs.front());
    q.jobs.pop_front();
    q.rows -= job->rows;
    --size_;
    bytes_ -= job->bytes;
    if (expired) {
      out.expired.push_back(std::move(job));
    } else if (cancelled) {
      out.cancelled.push_back(std::move(job));
    } else {
      rows += job->rows;
      out.batch.push_back(std::move(job));
    }
  }
  if (q.jobs.empty()) queues_.erase(best);
  return out;
}

absl::Time BatchQueues::NextReadyTime(absl::Time now) const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [key, q] : queues_) {
    next =
        std::min({next, DelayEnds(q, now), std::max(now, q.earliest_deadline)});
  }
  return next;
}

}  // namespace normserve::internal
