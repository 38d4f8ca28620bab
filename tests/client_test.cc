// The client library's reading of replies, which it does not trust: values
// widened from every dtype, and shapes that do not match their bytes (or
// could not be multiplied out) refused with DATA_LOSS. And the /metrics
// reader against a local socket: a body on 200, an error on another status
// or on a listener that never answers.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/metrics_scrape.h"
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

// γ and β travel shaped like the normalized dimensions: with
// normalized_ndim unset (the model's rank), the fewest trailing input
// dimensions that hold the values sent.
TEST(ClientTest, ParametersTakeTheShapeOfTheNormalizedDimensions) {
  NormalizeInput in;
  in.shape = {2, 16, 64};
  in.values.assign(2 * 16 * 64, 1.0f);
  in.gamma.assign(16 * 64, 1.0f);
  in.beta.assign(16 * 64, 0.0f);
  v1::NormalizeRequest r = NormClient::BuildRequest(in);
  EXPECT_EQ(
      std::vector<int64_t>(r.gamma().shape().begin(), r.gamma().shape().end()),
      (std::vector<int64_t>{16, 64}));
  EXPECT_EQ(
      std::vector<int64_t>(r.beta().shape().begin(), r.beta().shape().end()),
      (std::vector<int64_t>{16, 64}));
  EXPECT_FALSE(r.has_normalized_ndim());
  in.gamma.assign(64, 1.0f);
  in.beta.clear();
  r = NormClient::BuildRequest(in);
  EXPECT_EQ(
      std::vector<int64_t>(r.gamma().shape().begin(), r.gamma().shape().end()),
      (std::vector<int64_t>{64}));
  in.normalized_ndim = 2;  // named: its dimensions, whatever was sent
  r = NormClient::BuildRequest(in);
  EXPECT_EQ(r.normalized_ndim(), 2);
  EXPECT_EQ(
      std::vector<int64_t>(r.gamma().shape().begin(), r.gamma().shape().end()),
      (std::vector<int64_t>{16, 64}));
}

// A listener on a free loopback port that answers each of `answers`
// connections with the given bytes and closes it; an answer ending in
// kHold is sent without it and the connection then held for 3 s (an empty
// one: never answers).
constexpr char kHold[] = "<hold>";
class CannedHttp {
 public:
  explicit CannedHttp(std::vector<std::string> answers) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    EXPECT_EQ(listen(fd_, 4), 0);
    thread_ = std::thread([this, answers = std::move(answers)] {
      for (const std::string& a : answers) {
        const int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        char buf[1024];
        (void)read(c, buf, sizeof(buf));
        const bool hold = a.empty() || absl::EndsWith(a, kHold);
        const std::string bytes =
            hold && !a.empty() ? a.substr(0, a.size() - strlen(kHold)) : a;
        if (!bytes.empty()) (void)write(c, bytes.data(), bytes.size());
        if (hold) absl::SleepFor(absl::Seconds(3));
        close(c);
      }
    });
  }
  ~CannedHttp() {
    thread_.join();
    close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

TEST(MetricsScrapeTest, ABodyOn200AndAnErrorOtherwise) {
  CannedHttp http(
      {"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
       "a_total{x=\"1\"} 2\na_total{x=\"2\"} 1e+01\n",
       "HTTP/1.0 404 Not Found\r\n\r\nno such page\n", "",
       absl::StrCat("HTTP/1.0 200 OK\r\n\r\na_total 2\n", kHold)});
  auto body = HttpGetBody("127.0.0.1", http.port(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(SumMetric(*body, "a_total"), 12);
  EXPECT_EQ(SumMetric(*body, "a_total", {"x=\"2\""}), 10);
  EXPECT_TRUE(HasSample(*body, "a_total"));
  EXPECT_FALSE(HasSample(*body, "a"));      // a prefix of a name
  EXPECT_FALSE(HasSample(*body, "total"));  // not at a line's start
  auto missing = HttpGetBody("127.0.0.1", http.port(), "/metrics");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(missing.status().message().find(
                "HTTP/1.0 404 Not Found: expected status 200"),
            absl::string_view::npos)
      << missing.status();
  // A listener that never answers: the read times out (2 s), before
  // the server side gives up (3 s).
  const absl::Time start = absl::Now();
  auto silent = HttpGetBody("127.0.0.1", http.port(), "/metrics");
  EXPECT_EQ(silent.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
  // A body that stops coming (its samples would read as 0) is an error,
  // not the part that came.
  auto cut = HttpGetBody("127.0.0.1", http.port(), "/metrics");
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(cut.status().message().find(": the answer was cut short"),
            absl::string_view::npos)
      << cut.status();
}

}  // namespace
}  // namespace normserve
