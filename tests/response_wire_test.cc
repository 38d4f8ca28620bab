// SerializeWithBytes: a response written with the output's bytes in a
// slice of their own parses (protobuf's own parser) as the whole response,
// for outputs whose lengths sit around the varint boundaries, with every
// other field set; every field occurs once at every level (a parser that
// replaced a repeated message field instead of merging it would read the
// same message); the message written is left as it was.
#include "server/internal/response_wire.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"
#include "normserve/v1/normalization_service.pb.h"

namespace normserve::internal {
namespace {

constexpr int kOutputData[] = {v1::NormalizeResponse::kOutputFieldNumber,
                               v1::Tensor::kDataFieldNumber};

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) {
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return out;
}

// That no field number occurs twice in `wire` at the top level, nor in the
// length-delimited field of each number of `path` below it (the last
// number: the bytes field itself, not parsed).
void ExpectEveryFieldOnce(const std::string& wire, absl::Span<const int> path) {
  google::protobuf::UnknownFieldSet fields;
  ASSERT_TRUE(fields.ParseFromString(wire));
  std::vector<int> seen;
  const google::protobuf::UnknownField* next = nullptr;
  for (int i = 0; i < fields.field_count(); ++i) {
    const int number = fields.field(i).number();
    EXPECT_EQ(std::count(seen.begin(), seen.end(), number), 0)
        << "field " << number << " twice";
    seen.push_back(number);
    if (!path.empty() && number == path[0]) next = &fields.field(i);
  }
  if (path.size() > 1) {
    ASSERT_NE(next, nullptr);
    ASSERT_EQ(next->type(),
              google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED);
    ExpectEveryFieldOnce(next->length_delimited(), path.subspan(1));
  }
}

v1::NormalizeResponse Response(bool with_statistics) {
  v1::NormalizeResponse r;
  r.set_request_id("req-7");
  r.set_model("default");
  r.mutable_output()->add_shape(3);
  r.mutable_output()->add_shape(5);
  r.mutable_output()->set_dtype(v1::DATA_TYPE_BFLOAT16);
  if (with_statistics) {
    for (v1::Tensor* t : {r.mutable_mean(), r.mutable_rstd()}) {
      t->add_shape(3);
      t->set_dtype(v1::DATA_TYPE_FLOAT32);
      t->set_data(std::string(12, '\x3f'));
    }
  }
  return r;
}

TEST(ResponseWireTest, ParsesAsTheWholeResponse) {
  std::mt19937 rng(5);
  for (bool stats : {false, true}) {
    // Where the data's length, or the output's (a few bytes more), takes
    // another varint byte.
    for (size_t n : {size_t{1}, size_t{120}, size_t{125}, size_t{126},
                     size_t{127}, size_t{128}, size_t{16380}, size_t{16381},
                     size_t{16383}, size_t{16384}, size_t{1} << 20}) {
      SCOPED_TRACE(::testing::Message() << "bytes " << n << " stats " << stats);
      void* data = nullptr;
      const grpc::Slice slice = UninitializedSlice(n, &data);
      ASSERT_EQ(slice.size(), n);
      std::string want_data(n, '\0');
      for (char& c : want_data) c = static_cast<char>(rng());
      std::memcpy(data, want_data.data(), n);
      v1::NormalizeResponse head = Response(stats);
      const std::string before = head.SerializeAsString();
      v1::NormalizeResponse want = head;
      want.mutable_output()->set_data(want_data);

      const std::string wire =
          Bytes(SerializeWithBytes(&head, kOutputData, slice));
      EXPECT_EQ(head.SerializeAsString(), before);
      ExpectEveryFieldOnce(wire, kOutputData);
      v1::NormalizeResponse got;
      ASSERT_TRUE(got.ParseFromString(wire));
      EXPECT_EQ(got.output().data(), want_data);
      // Equal messages serialize to equal bytes.
      EXPECT_EQ(got.SerializeAsString(), want.SerializeAsString());
      EXPECT_EQ(got.output().shape_size(), 2);
      EXPECT_EQ(got.request_id(), "req-7");
    }
  }
}

// Two levels down: a stream's answer, whose response holds the output.
TEST(ResponseWireTest, NestedInAStreamAnswer) {
  constexpr int kStreamOutputData[] = {
      v1::NormalizeStreamResponse::kResponseFieldNumber,
      v1::NormalizeResponse::kOutputFieldNumber, v1::Tensor::kDataFieldNumber};
  for (size_t n : {size_t{3}, size_t{200}, size_t{70000}}) {
    SCOPED_TRACE(::testing::Message() << "bytes " << n);
    void* data = nullptr;
    const grpc::Slice slice = UninitializedSlice(n, &data);
    std::memset(data, 0x5a, n);
    v1::NormalizeStreamResponse head;
    head.set_request_id("s-1");
    *head.mutable_response() = Response(true);
    v1::NormalizeStreamResponse want = head;
    want.mutable_response()->mutable_output()->set_data(std::string(n, 'Z'));
    const std::string wire =
        Bytes(SerializeWithBytes(&head, kStreamOutputData, slice));
    ExpectEveryFieldOnce(wire, kStreamOutputData);
    v1::NormalizeStreamResponse got;
    ASSERT_TRUE(got.ParseFromString(wire));
    EXPECT_EQ(got.SerializeAsString(), want.SerializeAsString());
  }
}

TEST(ResponseWireTest, WithoutAnOutputItIsTheMessageAsItIs) {
  v1::NormalizeResponse head = Response(true);
  EXPECT_EQ(Bytes(SerializeWithBytes(&head, kOutputData, grpc::Slice())),
            head.SerializeAsString());
}

}  // namespace
}  // namespace normserve::internal
