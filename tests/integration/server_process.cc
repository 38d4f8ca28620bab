#include "tests/integration/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/time/clock.h"
#include "client/metrics_scrape.h"

namespace normserve::testing {

ServerProcess::ServerProcess(const std::string& binary,
                             std::vector<std::string> args) {
  args.insert(args.begin(), binary);
  args.push_back("--grpc_port=0");
  args.push_back("--metrics_port=0");
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  pid_ = fork();
  if (pid_ == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    std::perror("execv");
    _exit(127);
  }
  close(fds[1]);
  out_fd_ = fds[0];
  // The port after the last ':' of "grpc=HOST:PORT" and "metrics=HOST:PORT".
  auto port_of = [this](const std::string& key) {
    const size_t at = output_.find(key);
    if (at == std::string::npos) return 0;
    const size_t end = output_.find(' ', at);
    const std::string field = output_.substr(at, end - at);
    return std::atoi(field.c_str() + field.rfind(':') + 1);
  };
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    Output();
    if (output_.find("normserve listening") != std::string::npos &&
        output_.find('\n', output_.find("normserve listening")) !=
            std::string::npos) {
      grpc_port_ = port_of("grpc=");
      metrics_port_ = port_of("metrics=");
      return;
    }
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fprintf(stderr, "server did not start; output:\n%s\n", output_.c_str());
  std::abort();
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
}

std::string ServerProcess::grpc_target() const {
  return "127.0.0.1:" + std::to_string(grpc_port_);
}

int64_t ServerProcess::RssBytes() const {
  std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0)
      return std::atoll(line.c_str() + 6) * 1024;
  }
  return 0;
}

std::string ServerProcess::Output() {
  for (;;) {
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP))) break;
    char buf[4096];
    const ssize_t n = read(out_fd_, buf, sizeof(buf));
    if (n <= 0) break;
    output_.append(buf, static_cast<size_t>(n));
  }
  return output_;
}

int ServerProcess::Stop(int signal, int timeout_s) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      Output();
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

std::unique_ptr<NormClient> Connect(const std::string& target,
                                    absl::Duration timeout) {
  NormClient::Options o;
  o.target = target;
  o.timeout = timeout;
  auto client = NormClient::Create(o);
  if (!client.ok()) std::abort();  // only on an empty target
  return *std::move(client);
}

std::string HttpGet(int port, const std::string& path) {
  auto body = HttpGetBody("127.0.0.1", port, path);
  return body.ok() ? *body : "";
}

double MetricValue(const std::string& text, const std::string& name,
                   const std::vector<std::string>& labels) {
  return SumMetric(text, name, labels);
}

std::string ScrapeUntil(int port, const std::string& name,
                        const std::vector<std::string>& labels, double at_least,
                        absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string text = HttpGet(port, "/metrics");
  while (MetricValue(text, name, labels) < at_least && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
    text = HttpGet(port, "/metrics");
  }
  return text;
}

}  // namespace normserve::testing
