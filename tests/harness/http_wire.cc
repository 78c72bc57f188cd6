#include "tests/harness/http_wire.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace elfdeploy::testing {
namespace {

absl::Status Errno(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", strerror(errno)));
}

std::string Word(absl::string_view line, size_t index) {
  std::vector<absl::string_view> words = absl::StrSplit(line, absl::MaxSplits(' ', 2));
  return index < words.size() ? std::string(words[index]) : "";
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

}  // namespace

std::string HttpMessage::Method() const { return Word(start_line, 0); }

std::string HttpMessage::Target() const { return Word(start_line, 1); }

int HttpMessage::Status() const {
  int status = 0;
  return absl::SimpleAtoi(Word(start_line, 1), &status) ? status : 0;
}

std::string HttpMessage::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, name)) return value;
  }
  return "";
}

bool HttpMessage::HasHeader(absl::string_view name) const {
  for (const auto& header : headers) {
    if (absl::EqualsIgnoreCase(header.first, name)) return true;
  }
  return false;
}

bool HttpMessage::HeaderContains(absl::string_view name, absl::string_view lower_case_text) const {
  return absl::StrContains(absl::AsciiStrToLower(Header(name)), lower_case_text);
}

void HttpMessage::SetHeader(absl::string_view name, absl::string_view value) {
  RemoveHeader(name);
  headers.emplace_back(name, value);
}

void HttpMessage::RemoveHeader(absl::string_view name) {
  std::erase_if(headers,
                [&](const auto& header) { return absl::EqualsIgnoreCase(header.first, name); });
}

std::string HttpMessage::Serialize() const {
  std::string wire = absl::StrCat(start_line, "\r\n");
  for (const auto& [name, value] : headers) absl::StrAppend(&wire, name, ": ", value, "\r\n");
  absl::StrAppend(&wire, "\r\n", body);
  return wire;
}

HttpMessage MakeResponse(int status, std::string body,
                         std::vector<std::pair<std::string, std::string>> headers) {
  HttpMessage response{.start_line = absl::StrCat("HTTP/1.1 ", status, " ", ReasonPhrase(status)),
                       .headers = std::move(headers),
                       .body = std::move(body)};
  response.SetHeader("Content-Length", std::to_string(response.body.size()));
  return response;
}

HttpConnection::~HttpConnection() { close(fd_); }

absl::Status HttpConnection::Fill() {
  char chunk[16384];
  ssize_t n;
  do {
    n = recv(fd_, chunk, sizeof(chunk), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Errno("recv");
  if (n == 0) return absl::OutOfRangeError("connection closed by peer");
  buffer_.append(chunk, static_cast<size_t>(n));
  return absl::OkStatus();
}

absl::StatusOr<std::string> HttpConnection::ReadLine() {
  size_t end;
  while ((end = buffer_.find('\n')) == std::string::npos) {
    absl::Status status = Fill();
    if (!status.ok()) return status;
  }
  std::string line = buffer_.substr(0, end);
  buffer_.erase(0, end + 1);
  if (absl::EndsWith(line, "\r")) line.pop_back();
  return line;
}

absl::StatusOr<std::string> HttpConnection::ReadExactly(size_t size) {
  while (buffer_.size() < size) {
    absl::Status status = Fill();
    if (!status.ok()) return status;
  }
  std::string data = buffer_.substr(0, size);
  buffer_.erase(0, size);
  return data;
}

absl::Status HttpConnection::ReadHead(HttpMessage* message) {
  absl::StatusOr<std::string> line = ReadLine();
  if (!line.ok()) return line.status();
  message->start_line = *std::move(line);
  while (true) {
    line = ReadLine();
    if (!line.ok())
      return line.status().code() == absl::StatusCode::kOutOfRange
                 ? absl::DataLossError("connection closed inside a header")
                 : line.status();
    if (line->empty()) return absl::OkStatus();
    size_t colon = line->find(':');
    if (colon == std::string::npos) return absl::InvalidArgumentError("malformed header: " + *line);
    message->headers.emplace_back(line->substr(0, colon),
                                  absl::StripAsciiWhitespace(line->substr(colon + 1)));
  }
}

absl::StatusOr<std::string> HttpConnection::ReadChunked() {
  std::string body;
  while (true) {
    absl::StatusOr<std::string> line = ReadLine();
    if (!line.ok()) return line.status();
    size_t size = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(line->substr(0, line->find(';'))), &size)) {
      return absl::InvalidArgumentError("malformed chunk size: " + *line);
    }
    if (size == 0) break;
    absl::StatusOr<std::string> data = ReadExactly(size + 2);
    if (!data.ok()) return data.status();
    body.append(*data, 0, size);
  }
  while (true) {
    absl::StatusOr<std::string> trailer = ReadLine();
    if (!trailer.ok()) return trailer.status();
    if (trailer->empty()) return body;
  }
}

absl::StatusOr<HttpMessage> HttpConnection::ReadRequest() {
  HttpMessage request;
  absl::Status status = ReadHead(&request);
  if (!status.ok()) return status;
  const bool chunked = request.HeaderContains("Transfer-Encoding", "chunked");
  size_t length = 0;
  if (!chunked && request.HasHeader("Content-Length") &&
      !absl::SimpleAtoi(request.Header("Content-Length"), &length)) {
    return absl::InvalidArgumentError("malformed Content-Length");
  }
  if ((chunked || length > 0) && absl::EqualsIgnoreCase(request.Header("Expect"), "100-continue")) {
    status = Write("HTTP/1.1 100 Continue\r\n\r\n");
    if (!status.ok()) return status;
  }
  absl::StatusOr<std::string> body = chunked ? ReadChunked() : ReadExactly(length);
  if (!body.ok()) return body.status();
  request.body = *std::move(body);
  return request;
}

absl::StatusOr<HttpMessage> HttpConnection::ReadResponse(absl::string_view method) {
  HttpMessage response;
  absl::Status status = ReadHead(&response);
  if (!status.ok()) return status;
  const int code = response.Status();
  if (method == "HEAD" || code < 200 || code == 204 || code == 304) return response;
  absl::StatusOr<std::string> body;
  size_t length = 0;
  if (response.HeaderContains("Transfer-Encoding", "chunked")) {
    body = ReadChunked();
  } else if (response.HasHeader("Content-Length")) {
    if (!absl::SimpleAtoi(response.Header("Content-Length"), &length)) {
      return absl::InvalidArgumentError("malformed Content-Length");
    }
    body = ReadExactly(length);
  } else {
    while ((status = Fill()).ok()) {
    }
    if (status.code() != absl::StatusCode::kOutOfRange) return status;
    body = std::move(buffer_);
    buffer_.clear();
  }
  if (!body.ok()) return body.status();
  response.body = *std::move(body);
  return response;
}

absl::Status HttpConnection::Write(absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("send");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

void HttpConnection::ResetOnClose() {
  linger option = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &option, sizeof(option));
}

absl::StatusOr<std::unique_ptr<HttpConnection>> ConnectTcp(const std::string& host, int port) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses);
  if (rc != 0) return absl::UnavailableError(absl::StrCat(host, ": ", gai_strerror(rc)));
  absl::Status status = absl::UnavailableError(absl::StrCat("no address for ", host));
  std::unique_ptr<HttpConnection> connection;
  for (addrinfo* a = addresses; a != nullptr && connection == nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      connection = std::make_unique<HttpConnection>(fd);
    } else {
      status = Errno(absl::StrCat("connect to ", host, ":", port));
      if (fd >= 0) close(fd);
    }
  }
  freeaddrinfo(addresses);
  if (connection == nullptr) return status;
  return connection;
}

absl::StatusOr<std::unique_ptr<TcpServer>> TcpServer::Start(Handler handler) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket");
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(fd, SOMAXCONN) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    absl::Status status = Errno("listen on 127.0.0.1:0");
    close(fd);
    return status;
  }
  std::unique_ptr<TcpServer> server(new TcpServer(std::move(handler), fd, ntohs(address.sin_port)));
  server->accept_thread_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  return server;
}

TcpServer::~TcpServer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (int fd : open_) shutdown(fd, SHUT_RDWR);
  }
  shutdown(listen_fd_, SHUT_RDWR);
  accept_thread_.join();
  for (std::thread& thread : threads_) thread.join();
  close(listen_fd_);
}

std::string TcpServer::host() const { return absl::StrCat("127.0.0.1:", port_); }

void TcpServer::AcceptLoop() {
  while (true) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0 && (errno == EINTR || errno == ECONNABORTED)) continue;
    if (fd < 0) return;
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      close(fd);
      return;
    }
    open_.insert(fd);
    threads_.emplace_back([this, fd] { Serve(fd); });
  }
}

void TcpServer::Serve(int fd) {
  HttpConnection connection(fd);
  handler_(connection);
  absl::MutexLock lock(&mu_);
  open_.erase(fd);
}

}  // namespace elfdeploy::testing
