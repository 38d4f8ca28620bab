// The client library's reading of replies, which it does not trust: values
// widened from every dtype, and shapes that do not match their bytes (or
// could not be multiplied out) refused with DATA_LOSS.
#include <cstring>
#include <string>
#include <vector>

#include "client/normserve_client.h"
#include "gtest/gtest.h"
#include "kernels/dtype.h"

namespace normserve {
namespace {

v1::Tensor Tensor(std::vector<int64_t> shape, v1::DataType dtype,
                  std::string data) {
  v1::Tensor t;
  for (int64_t d : shape) t.add_shape(d);
  t.set_dtype(dtype);
  t.set_data(std::move(data));
  return t;
}

TEST(ClientTest, TensorValuesWidenEveryDtype) {
  const float f[2] = {1.5f, -2.0f};
  std::string bytes(reinterpret_cast<const char*>(f), sizeof(f));
  auto values = TensorValues(Tensor({2}, v1::DATA_TYPE_FLOAT32, bytes));
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, (std::vector<float>{1.5f, -2.0f}));
  const uint16_t h[2] = {FloatToHalf(1.5f), FloatToBFloat16(-2.0f)};
  std::string half(reinterpret_cast<const char*>(&h[0]), 2);
  std::string bf16(reinterpret_cast<const char*>(&h[1]), 2);
  EXPECT_EQ(*TensorValues(Tensor({1}, v1::DATA_TYPE_FLOAT16, half)),
            std::vector<float>{1.5f});
  EXPECT_EQ(*TensorValues(Tensor({1}, v1::DATA_TYPE_BFLOAT16, bf16)),
            std::vector<float>{-2.0f});
  // An empty tensor is a tensor.
  EXPECT_TRUE(TensorValues(Tensor({0, 5}, v1::DATA_TYPE_FLOAT32, "")).ok());
}

TEST(ClientTest, RepliesThatDoNotAddUpAreDataLoss) {
  const std::vector<v1::Tensor> bad = {
      Tensor({3}, v1::DATA_TYPE_FLOAT32, std::string(8, '\0')),  // short
      Tensor({-2}, v1::DATA_TYPE_FLOAT32, ""),                   // negative
      // 2^62 elements: the product would overflow int64 in bytes, and a
      // wrapped count must not be read as "matches".
      Tensor({int64_t{1} << 31, int64_t{1} << 31}, v1::DATA_TYPE_FLOAT32, ""),
      Tensor({int64_t{1} << 62, 4}, v1::DATA_TYPE_FLOAT32, ""),
      Tensor({1}, v1::DATA_TYPE_INT8, std::string(1, '\0')),  // not a float
  };
  for (const v1::Tensor& t : bad) {
    const auto values = TensorValues(t);
    ASSERT_FALSE(values.ok()) << t.ShortDebugString();
    EXPECT_EQ(values.status().code(), absl::StatusCode::kDataLoss)
        << values.status();
  }
}

}  // namespace
}  // namespace normserve
