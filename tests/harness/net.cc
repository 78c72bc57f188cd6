#include "tests/harness/net.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"

namespace elfdeploy::testing {
namespace {

bool TryConnect(const std::string& host, int port, std::string* error) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses);
  if (rc != 0) {
    *error = gai_strerror(rc);
    return false;
  }
  bool connected = false;
  for (addrinfo* a = addresses; a != nullptr && !connected; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    connected = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    if (!connected) *error = strerror(errno);
    close(fd);
  }
  freeaddrinfo(addresses);
  return connected;
}

// Binds a socket to 127.0.0.1:`port` (0: the kernel picks), closes it, and returns the port.
absl::StatusOr<int> BindProbe(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::string error = strerror(errno);
    close(fd);
    return absl::UnavailableError(absl::StrCat("bind 127.0.0.1:", port, ": ", error));
  }
  close(fd);
  return ntohs(address.sin_port);
}

// The lowest port of the kernel's ephemeral range (net.ipv4.ip_local_port_range).
int EphemeralLow() {
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 32768;
  range >> low;
  return range ? low : 32768;
}

}  // namespace

absl::StatusOr<int> PickFreePort() {
  constexpr int kLowest = 10000;
  int low = EphemeralLow();
  if (low - kLowest >= 1000) {
    thread_local std::mt19937 random(std::random_device{}());
    std::uniform_int_distribution<int> ports(kLowest, low - 1);
    for (int attempt = 0; attempt < 100; ++attempt) {
      absl::StatusOr<int> port = BindProbe(ports(random));
      if (port.ok()) return port;
    }
  }
  return BindProbe(0);
}

absl::Status WaitForTcpPort(const std::string& host, int port, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  std::string error;
  while (!TryConnect(host, port, &error)) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("nothing accepted on ", host, ":", port,
                                                      " within ", absl::FormatDuration(timeout),
                                                      ": ", error));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::OkStatus();
}

}  // namespace elfdeploy::testing
