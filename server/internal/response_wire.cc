#include "server/internal/response_wire.h"

#include <string>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"

namespace normserve::internal {
namespace {

using google::protobuf::Message;
using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedOutputStream;

// Appends a length-delimited field's tag and length to *out.
void AppendTagAndLength(int field, uint64_t length, std::string* out) {
  google::protobuf::io::StringOutputStream stream(out);
  CodedOutputStream coded(&stream);
  coded.WriteVarint32(WireFormatLite::MakeTag(
      field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  coded.WriteVarint64(length);
}

// Appends to *out `*m` without its field path[0], then that field: for the
// last field of the path, its tag and the length of the `n` bytes that
// follow; else, its tag, its length and its message written the same way
// with the rest of the path. Restores `*m`'s detached field.
void AppendWithFieldLast(Message* m, absl::Span<const int> path, uint64_t n,
                         std::string* out) {
  const google::protobuf::FieldDescriptor* f =
      m->GetDescriptor()->FindFieldByNumber(path[0]);
  if (path.size() == 1) {
    m->AppendToString(out);  // the bytes field is empty: not written
    AppendTagAndLength(path[0], n, out);
    return;
  }
  const google::protobuf::Reflection* r = m->GetReflection();
  r->MutableMessage(m, f);  // set, so that the release returns it
  Message* sub = r->ReleaseMessage(m, f);
  m->AppendToString(out);
  std::string inner;
  AppendWithFieldLast(sub, path.subspan(1), n, &inner);
  AppendTagAndLength(path[0], inner.size() + n, out);
  out->append(inner);
  r->SetAllocatedMessage(m, sub, f);
}

}  // namespace

grpc::Slice UninitializedSlice(size_t bytes, void** data) {
  // Always on the heap: a small grpc_slice_malloc slice holds its bytes
  // inside the slice object, which moves with every copy.
  grpc_slice slice = grpc_slice_malloc_large(bytes);
  *data = GRPC_SLICE_START_PTR(slice);
  return grpc::Slice(slice, grpc::Slice::STEAL_REF);
}

grpc::ByteBuffer SerializeWithBytes(Message* message,
                                    absl::Span<const int> path,
                                    const grpc::Slice& bytes) {
  std::string head;
  if (bytes.size() == 0 || path.empty()) {
    message->SerializeToString(&head);
    grpc::Slice whole(head);
    return grpc::ByteBuffer(&whole, 1);
  }
  AppendWithFieldLast(message, path, bytes.size(), &head);
  grpc::Slice slices[2] = {grpc::Slice(head), bytes};
  return grpc::ByteBuffer(slices, 2);
}

}  // namespace normserve::internal
