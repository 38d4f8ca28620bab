#include "server/internal/response_wire.h"

#include <string>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"

namespace normserve::internal {

grpc::Slice UninitializedSlice(size_t bytes, void** data) {
  // Always on the heap: a small grpc_slice_malloc slice holds its bytes
  // inside the slice object, which moves with every copy.
  grpc_slice slice = grpc_slice_malloc_large(bytes);
  *data = GRPC_SLICE_START_PTR(slice);
  return grpc::Slice(slice, grpc::Slice::STEAL_REF);
}

grpc::ByteBuffer SerializeWithBytes(
    const google::protobuf::MessageLite& message, absl::Span<const int> path,
    const grpc::Slice& bytes) {
  using google::protobuf::internal::WireFormatLite;
  using google::protobuf::io::CodedOutputStream;
  std::string head = message.SerializeAsString();
  if (bytes.size() == 0 || path.size() == 0) {
    grpc::Slice whole(head);
    return grpc::ByteBuffer(&whole, 1);
  }
  // Every field on the path is length-delimited: its tag, then the length
  // of what it holds, which is the next field's tag, length and contents,
  // down to the bytes themselves (in their own slice).
  const std::vector<int> fields(path.begin(), path.end());
  std::vector<uint32_t> tags;
  for (int f : fields) {
    tags.push_back(
        WireFormatLite::MakeTag(f, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  }
  std::vector<uint64_t> lengths(fields.size());
  uint64_t inner = bytes.size();
  for (size_t i = fields.size(); i-- > 0;) {
    lengths[i] = inner;
    inner += CodedOutputStream::VarintSize32(tags[i]) +
             CodedOutputStream::VarintSize64(inner);
  }
  {
    google::protobuf::io::StringOutputStream stream(&head);
    CodedOutputStream coded(&stream);
    for (size_t i = 0; i < fields.size(); ++i) {
      coded.WriteVarint32(tags[i]);
      coded.WriteVarint64(lengths[i]);
    }
  }
  grpc::Slice slices[2] = {grpc::Slice(head), bytes};
  return grpc::ByteBuffer(slices, 2);
}

}  // namespace normserve::internal
