// An answer on the wire with its output tensor's bytes as a buffer of
// their own, neither copied into the serialized message nor zero-filled
// before the kernel writes them.
//
// Each message on the way to the bytes field (a NormalizeResponse's
// `output`, field 1, then its `data`, field 3; a NormalizeStreamResponse's
// `response` first) is written without the field that leads on, then that
// field, last: its tag and length, and its own contents the same way, down
// to the bytes field's tag and length, after which the bytes follow in
// their own slice. Every field occurs once, so the message is the same to
// every parser (protobuf allows fields in any order); only their order
// differs from a whole serialization.
//
// Thread-safe (no state).
#ifndef NORMSERVE_SERVER_INTERNAL_RESPONSE_WIRE_H_
#define NORMSERVE_SERVER_INTERNAL_RESPONSE_WIRE_H_

#include <cstddef>

#include "absl/types/span.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace normserve::internal {

// A slice of `bytes` uninitialized bytes on the heap, and where to write
// them (which stays where it is when the slice is copied).
grpc::Slice UninitializedSlice(size_t bytes, void** data);

// `*message`, whose bytes field at `path` is empty, with that field set to
// `bytes`: `path` names the field numbers from `message` down, singular
// message fields and last the bytes field (e.g. {1, 3}: output.data of a
// NormalizeResponse). `bytes` empty: `*message` as it is. `*message` is
// left as it was (its fields are detached while it is written).
grpc::ByteBuffer SerializeWithBytes(google::protobuf::Message* message,
                                    absl::Span<const int> path,
                                    const grpc::Slice& bytes);

}  // namespace normserve::internal

#endif  // NORMSERVE_SERVER_INTERNAL_RESPONSE_WIRE_H_
