// A bidirectional stream of independent requests, shared by the native
// NormalizeStream and OIP's ModelStreamInfer.
//
// Each message read becomes an Item handed to `start`, which answers it
// by filling item->answer and calling `done` exactly once (inline or from
// a batcher worker). Answers are written in completion order, one write in
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
// Threading: gRPC's reactor callbacks and `done` may run on any threads;
// the state they share is guarded by mu_. The reactor deletes itself in
// OnDone().
#ifndef NORMSERVE_SERVER_INTERNAL_STREAM_REACTOR_H_
#define NORMSERVE_SERVER_INTERNAL_STREAM_REACTOR_H_

#include <deque>
#include <functional>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/internal/mutex.h"
#include "server/metrics.h"
#include "server/service.h"

namespace normserve {
namespace internal {

template <typename Request, typename Response>
class StreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  struct Item {
    Request request;
    Response answer;
    grpc::ByteBuffer wire;  // The answer, serialized for its write.
  };
  using StartFn = std::function<void(grpc::CallbackServerContext* context,
                                     const std::shared_ptr<Item>& item,
                                     std::function<void()> done)>;
  // Writes the answer to a message that could not be parsed.
  using ParseErrorFn =
      std::function<void(const absl::Status& status, Response* answer)>;

  // `metrics_service` and `method` label the RPC's metrics.
  StreamReactor(NormalizationServiceImpl* service,
                grpc::CallbackServerContext* context,
                const char* metrics_service, const char* method, StartFn start,
                ParseErrorFn parse_error)
      : service_(service),
        context_(context),
        metrics_service_(metrics_service),
        method_(method),
        start_fn_(std::move(start)),
        parse_error_fn_(std::move(parse_error)),
        start_(absl::Now()) {
    service_->CallStarted();
    service_->metrics()->RpcStarted(metrics_service_, method_, kType);
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
    ++messages_read_;
    const bool parsed = grpc::SerializationTraits<Request>::Deserialize(
                            &incoming_, &item->request)
                            .ok();
    {
      MutexLock lock(&mu_);
      ++pending_;
    }
    if (parsed) {
      start_fn_(context_, item, [this, item] { Answered(item); });
    } else {
      parse_error_fn_(
          absl::InvalidArgumentError(absl::StrCat(
              "message ", messages_read_, " of this stream does not parse as ",
              Request::descriptor()->full_name(),
              " (skipped; the stream goes on)")),
          &item->answer);
      Answered(item);
    }
    incoming_.Clear();
    this->StartRead(&incoming_);
  }

  void OnWriteDone(bool ok) override {
    std::shared_ptr<Item> next;
    bool finish;
    {
      MutexLock lock(&mu_);
      writes_.pop_front();
      --pending_;
      if (!ok) broken_ = true;
      if (broken_) {
        pending_ -= static_cast<int64_t>(writes_.size());
        writes_.clear();
      }
      if (!writes_.empty()) {
        next = writes_.front();
      } else {
        writing_ = false;
      }
      finish = ShouldFinish();
    }
    if (next != nullptr) this->StartWrite(&next->wire);
    if (finish) this->Finish(grpc::Status::OK);
  }

  void OnDone() override {
    service_->metrics()->RpcHandled(
        metrics_service_, method_, kType,
        context_->IsCancelled() ? static_cast<int>(grpc::StatusCode::CANCELLED)
                                : 0,
        absl::Now() - start_);
    service_->CallDone();
    delete this;
  }

 private:
  static constexpr char kType[] = "bidi_stream";

  void Answered(const std::shared_ptr<Item>& item) {
    bool own_buffer;
    // Serializing a message we built cannot fail.
    grpc::SerializationTraits<Response>::Serialize(item->answer, &item->wire,
                                                   &own_buffer)
        .IgnoreError();
    bool start_write = false;
    bool finish = false;
    {
      MutexLock lock(&mu_);
      if (broken_) {
        --pending_;
        finish = ShouldFinish();
      } else {
        writes_.push_back(item);
        if (!writing_) {
          writing_ = true;
          start_write = true;
        }
      }
    }
    if (start_write) this->StartWrite(&item->wire);
    if (finish) this->Finish(grpc::Status::OK);
  }

  // True exactly once: when nothing is left to read, compute or write.
  bool ShouldFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_ || pending_ > 0 || writing_) return false;
    finished_ = true;
    return true;
  }

  NormalizationServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  const char* const metrics_service_;
  const char* const method_;
  const StartFn start_fn_;
  const ParseErrorFn parse_error_fn_;
  const absl::Time start_;
  // Owned by the read in flight (reads are serialized).
  grpc::ByteBuffer incoming_;
  int64_t messages_read_ = 0;

  Mutex mu_;
  // Items started and not yet written (or dropped).
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::shared_ptr<Item>> writes_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace internal
}  // namespace normserve

#endif  // NORMSERVE_SERVER_INTERNAL_STREAM_REACTOR_H_
