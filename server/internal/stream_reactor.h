// A bidirectional stream of independent requests, shared by the native
// NormalizeStream and OIP's ModelStreamInfer.
//
// Each message read becomes an Item handed to `start`, which answers it
// by filling item->answer and calling `done` exactly once with the status
// that answer carries (inline or from a batcher worker), and returns the
// bytes it allocated for the answer (0 where it answered at once); the
// reactor counts each answer's status in the metrics, as it counts the
// stream itself. Answers are written in completion order, one write in
// flight at a time, as gRPC requires. The stream finishes with OK once the
// client has half-closed, every started item has answered and the write
// queue is empty; if a write fails, answers still to come are dropped.
//
// The method is registered raw (bytes in, bytes out) and the reactor parses
// each message itself: a message that is not a `Request` is answered by
// `parse_error` (INVALID_ARGUMENT naming the message's position) and the
// stream reads on. With gRPC's own parsing, such a message would end the
// stream's reads, looking exactly like the client's half-close, and the
// stream would finish OK with that message and every later one unanswered.
//
// Backpressure: the reactor reads no further message while the messages it
// has read and not yet written an answer for reach the service's
// StreamWindow (a count, and bytes: each item counts the larger of its
// message and its answer, since an answer may be several times its request;
// at least one message is always read). A client that sends without reading
// its answers is then held back by HTTP/2 flow control instead of filling the
// server's memory with answers it does not take. An answer, once serialized,
// drops its request and its message form: a waiting item holds its wire
// bytes only. Whether to read on is decided once `start` returns, with the
// size of the answer being computed counted.
//
// Threading: gRPC's reactor callbacks and `done` may run on any threads;
// the state they share is guarded by mu_. The reactor deletes itself in
// OnDone().
#ifndef NORMSERVE_SERVER_INTERNAL_STREAM_REACTOR_H_
#define NORMSERVE_SERVER_INTERNAL_STREAM_REACTOR_H_

#include <algorithm>
#include <deque>
#include <functional>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grpcpp/grpcpp.h"
#include "server/internal/mutex.h"
#include "server/internal/response_wire.h"
#include "server/metrics.h"
#include "server/service.h"

namespace normserve {
namespace internal {

// The code a call counts in grpc_server_handled_total once gRPC is done
// with it: `answered` (the status the server sent), or, where the call did
// not end that way, how its client saw it end: past its deadline, or
// cancelled. A client's deadline reaches the server as a timeout, counted
// from the call's arrival (`start`), so the server's deadline falls after
// the client's by the time the call took to arrive (tens of milliseconds on
// a loaded host), and the client's cancellation at its own deadline can
// come first: a cancellation within a tenth of the call's timeout (at most
// a second) of the server's deadline counts as the deadline's.
inline int CallEndCode(grpc::CallbackServerContext& context,
                       grpc::StatusCode answered, absl::Time start) {
  if (!context.IsCancelled()) return static_cast<int>(answered);
  const absl::Time deadline = CallDeadline(&context);
  if (deadline == absl::InfiniteFuture()) {
    return static_cast<int>(grpc::StatusCode::CANCELLED);
  }
  const absl::Duration slack =
      std::min(absl::Seconds(1), (deadline - start) / 10);
  return static_cast<int>(absl::Now() >= deadline - slack
                              ? grpc::StatusCode::DEADLINE_EXCEEDED
                              : grpc::StatusCode::CANCELLED);
}

template <typename Request, typename Response>
class StreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  struct Item {
    Request request;
    Response answer;
    // Where `start` may put the bytes of a bytes field of the answer
    // (field numbers from the answer down: `bytes_path`), to be written
    // apart from the rest of it (SerializeWithBytes,
    // internal/response_wire.h); empty: none.
    grpc::Slice bytes_apart;
    absl::Span<const int> bytes_path;
    grpc::ByteBuffer wire;  // The answer, serialized for its write.
    // What the item counts in the window: the larger of its message and its
    // answer, as far as known. Guarded by the reactor's mu_ once counted.
    int64_t bytes = 0;
    // Written or dropped: out of the window. Guarded by the reactor's mu_.
    bool released = false;
  };
  using StartFn = std::function<int64_t(
      grpc::CallbackServerContext* context, const std::shared_ptr<Item>& item,
      std::function<void(const absl::Status&)> done)>;
  // Writes the answer to a message that could not be parsed.
  using ParseErrorFn =
      std::function<void(const absl::Status& status, Response* answer)>;

  // `method` is the RPC, for the metrics.
  StreamReactor(NormalizationServiceImpl* service,
                grpc::CallbackServerContext* context,
                Metrics::InferenceMethod method, StartFn start,
                ParseErrorFn parse_error)
      : service_(service),
        context_(context),
        method_(method),
        start_fn_(std::move(start)),
        parse_error_fn_(std::move(parse_error)),
        window_(service->stream_window()),
        start_(absl::Now()) {
    service_->CallStarted();
    service_->metrics()->RpcStarted(method_);
    if (service_->draining()) {
      // A drain refuses new calls, streams too: on the call, where the
      // client's retry policy sees it, rather than on each message.
      // It counts as one request refused, as a unary call would.
      finish_code_ = grpc::StatusCode::UNAVAILABLE;
      service_->metrics()->RequestAnswered(method_,
                                           grpc::StatusCode::UNAVAILABLE);
      this->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "server is shutting down"));
      return;
    }
    this->StartRead(&incoming_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool finish;
      {
        MutexLock lock(&mu_);
        reads_done_ = true;
        finish = ShouldFinish();
      }
      if (finish) this->Finish(grpc::Status::OK);
      return;
    }
    auto item = std::make_shared<Item>();
    const int64_t message_number = ++messages_read_;
    item->bytes = static_cast<int64_t>(incoming_.Length());
    const bool parsed = grpc::SerializationTraits<Request>::Deserialize(
                            &incoming_, &item->request)
                            .ok();
    incoming_.Clear();
    {
      MutexLock lock(&mu_);
      ++pending_;
      pending_bytes_ += item->bytes;
    }
    int64_t answer_bytes = 0;
    if (parsed) {
      answer_bytes = start_fn_(
          context_, item,
          [this, item](const absl::Status& status) { Answered(item, status); });
    } else {
      const absl::Status status = absl::InvalidArgumentError(absl::StrCat(
          "message ", message_number, " of this stream does not parse as ",
          Request::descriptor()->full_name(),
          " (skipped; the stream goes on)"));
      parse_error_fn_(status, &item->answer);
      Answered(item, status);
    }
    // Whether to read on is decided here, with the item counted at its
    // answer's size: answers only shrink the window from here on (an answer
    // that outgrows its count by its framing grows it a little), and one
    // that empties a paused window resumes the reads (ShouldResumeReading).
    // No read is in flight meanwhile, so none is resumed before this.
    bool read;
    {
      MutexLock lock(&mu_);
      Count(*item, answer_bytes);
      read = !WindowFull();
      read_paused_ = !read;
    }
    if (read) this->StartRead(&incoming_);
  }

  void OnWriteDone(bool ok) override {
    std::shared_ptr<Item> next;
    bool finish;
    bool resume;
    {
      MutexLock lock(&mu_);
      Written(*writes_.front());
      writes_.pop_front();
      if (!ok) broken_ = true;
      if (broken_) {
        for (const auto& dropped : writes_) Written(*dropped);
        writes_.clear();
      }
      if (!writes_.empty()) {
        next = writes_.front();
      } else {
        writing_ = false;
      }
      finish = ShouldFinish();
      resume = ShouldResumeReading();
    }
    if (next != nullptr) this->StartWrite(&next->wire);
    if (resume) this->StartRead(&incoming_);
    if (finish) this->Finish(grpc::Status::OK);
  }

  void OnDone() override {
    service_->metrics()->RpcHandled(
        method_, CallEndCode(*context_, finish_code_, start_),
        absl::Now() - start_);
    service_->CallDone();
    delete this;
  }

 private:
  // The call's status when the reactor ends it with an error.
  grpc::StatusCode finish_code_ = grpc::StatusCode::OK;

  // `item` is answered, with `status`.
  void Answered(const std::shared_ptr<Item>& item, const absl::Status& status) {
    service_->metrics()->RequestAnswered(method_,
                                         static_cast<int>(status.code()));
    if (item->bytes_apart.size() > 0) {
      item->wire = SerializeWithBytes(&item->answer, item->bytes_path,
                                      item->bytes_apart);
      item->bytes_apart = grpc::Slice();  // the wire holds it now
    } else {
      bool own_buffer;
      // Serializing a message we built cannot fail.
      grpc::SerializationTraits<Response>::Serialize(item->answer, &item->wire,
                                                     &own_buffer)
          .IgnoreError();
    }
    // Their memory goes now (Clear would keep the strings' capacity).
    Request().Swap(&item->request);
    Response().Swap(&item->answer);
    bool start_write = false;
    bool finish = false;
    bool resume = false;
    {
      MutexLock lock(&mu_);
      Count(*item, static_cast<int64_t>(item->wire.Length()));
      if (broken_) {
        Written(*item);
        finish = ShouldFinish();
        resume = ShouldResumeReading();
      } else {
        writes_.push_back(item);
        if (!writing_) {
          writing_ = true;
          start_write = true;
        }
      }
    }
    if (start_write) this->StartWrite(&item->wire);
    if (resume) this->StartRead(&incoming_);
    if (finish) this->Finish(grpc::Status::OK);
  }

  // `item` holds `bytes` (its answer's): it counts the larger of that and
  // what it counted, until it is written.
  void Count(Item& item, int64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (item.released || bytes <= item.bytes) return;
    pending_bytes_ += bytes - item.bytes;
    item.bytes = bytes;
  }

  // `item` is written or dropped: it leaves the window.
  void Written(Item& item) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    item.released = true;
    --pending_;
    pending_bytes_ -= item.bytes;
  }

  // Never with nothing pending: one message is always read.
  bool WindowFull() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_ > 0 &&
           (pending_ >= window_.messages || pending_bytes_ >= window_.bytes);
  }

  // True once when a paused stream may read again (the read to start is
  // then the caller's).
  bool ShouldResumeReading() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!read_paused_ || WindowFull()) return false;
    read_paused_ = false;
    return true;
  }

  // True exactly once: when nothing is left to read, compute or write.
  bool ShouldFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_ || pending_ > 0 || writing_) return false;
    finished_ = true;
    return true;
  }

  NormalizationServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  const Metrics::InferenceMethod method_;
  const StartFn start_fn_;
  const ParseErrorFn parse_error_fn_;
  const StreamWindow window_;
  const absl::Time start_;
  // Owned by the read in flight (reads are serialized).
  grpc::ByteBuffer incoming_;
  int64_t messages_read_ = 0;

  Mutex mu_;
  // Items started and not yet written (or dropped), and their messages'
  // bytes.
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // No read is in flight: the window was full after the last one.
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::shared_ptr<Item>> writes_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace internal
}  // namespace normserve

#endif  // NORMSERVE_SERVER_INTERNAL_STREAM_REACTOR_H_
