#include "client/metrics_scrape.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace normserve {

absl::StatusOr<std::string> HttpGetBody(const std::string& host, int port,
                                        const std::string& path) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(host, ": expected an IPv4 address"));
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::UnavailableError("socket() failed");
  // Bounds connect and write (SO_SNDTIMEO) and each read (SO_RCVTIMEO): a
  // filtered host or a listener that never answers fails the scrape.
  const timeval timeout{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string response;
  bool cut_short = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req =
        absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host,
                     "\r\nConnection: close\r\n\r\n");
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[65536];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0)
        response.append(buf, static_cast<size_t>(n));
      // A read that timed out or failed leaves the body cut short: its
      // missing samples would read as 0.
      cut_short = n < 0;
    }
  }
  close(fd);
  const std::string url = absl::StrCat("http://", host, ":", port, path);
  if (cut_short) {
    return absl::UnavailableError(
        absl::StrCat(url,
                     ": the answer was cut short (a read failed or took "
                     "over 2 s)"));
  }
  const size_t split = response.find("\r\n\r\n");
  if (split == std::string::npos) {
    return absl::UnavailableError(absl::StrCat(url, ": no answer"));
  }
  // "HTTP/1.x 200 OK"
  const size_t line_end = response.find("\r\n");
  const std::string status_line = response.substr(0, line_end);
  if (status_line.size() < 12 || status_line.compare(0, 5, "HTTP/") != 0 ||
      status_line.compare(8, 4, " 200") != 0) {
    return absl::UnavailableError(
        absl::StrCat(url, ": ", status_line, ": expected status 200"));
  }
  return response.substr(split + 4);
}

double SumMetric(const std::string& text, const std::string& name,
                 const std::vector<std::string>& labels) {
  double total = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    bool match = true;
    for (const auto& l : labels)
      match = match && line.find(l) != std::string::npos;
    if (match)
      total += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  }
  return total;
}

bool HasSample(const std::string& text, const std::string& name) {
  for (size_t at = text.find(name); at != std::string::npos;
       at = text.find(name, at + 1)) {
    const size_t next = at + name.size();
    if ((at == 0 || text[at - 1] == '\n') && next < text.size() &&
        (text[next] == ' ' || text[next] == '{')) {
      return true;
    }
  }
  return false;
}

}  // namespace normserve
