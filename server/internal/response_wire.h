// An answer on the wire with its output tensor's bytes as a buffer of
// their own, neither copied into the serialized message nor zero-filled
// before the kernel writes them.
//
// The message is serialized without the output's bytes, then followed by
// a second occurrence of each message field on the way to the bytes field
// (a NormalizeResponse's `output`, field 1, then its `data`, field 3; a
// NormalizeStreamResponse's `response` first), holding only that field,
// whose bytes are the given slice. Protobuf parsers merge the occurrences
// of a singular message field (the encoding's rule for embedded messages),
// so every reader sees the message with the bytes field set, as if it had
// been serialized whole.
//
// Thread-safe (no state).
#ifndef NORMSERVE_SERVER_INTERNAL_RESPONSE_WIRE_H_
#define NORMSERVE_SERVER_INTERNAL_RESPONSE_WIRE_H_

#include <cstddef>

#include "absl/types/span.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace normserve::internal {

// A slice of `bytes` uninitialized bytes on the heap, and where to write
// them (which stays where it is when the slice is copied).
grpc::Slice UninitializedSlice(size_t bytes, void** data);

// `message`, whose bytes field at `path` is empty, with that field set to
// `bytes`: `path` names the field numbers from `message` down, singular
// message fields and last the bytes field (e.g. {1, 3}: output.data of a
// NormalizeResponse). `bytes` empty: `message` as it is.
grpc::ByteBuffer SerializeWithBytes(
    const google::protobuf::MessageLite& message, absl::Span<const int> path,
    const grpc::Slice& bytes);

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_RESPONSE_WIRE_H_
