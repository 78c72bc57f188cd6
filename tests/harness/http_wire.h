#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace elfdeploy::testing {

// One HTTP/1.1 request or response with its whole body, already de-chunked.
struct HttpMessage {
  // "GET /v2/ HTTP/1.1" or "HTTP/1.1 200 OK", without the CRLF.
  std::string start_line;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first word of a request's start line ("GET").
  std::string Method() const;
  // The second word of a request's start line ("/v2/?n=1").
  std::string Target() const;
  // The status code of a response's start line; 0 when it has none.
  int Status() const;
  // The value of the first header called `name` (case-insensitive); "" when there is none.
  std::string Header(absl::string_view name) const;
  // Whether a header called `name` (case-insensitive) is present.
  bool HasHeader(absl::string_view name) const;
  // Whether the first header called `name` contains `lower_case_text`, ignoring case.
  bool HeaderContains(absl::string_view name, absl::string_view lower_case_text) const;
  // Removes every header called `name`, then appends `name: value`.
  void SetHeader(absl::string_view name, absl::string_view value);
  // Removes every header called `name` (case-insensitive).
  void RemoveHeader(absl::string_view name);
  // The message in wire form as it is: no framing header is added or changed.
  std::string Serialize() const;
};

// An HTTP/1.1 response with `status`, its usual reason phrase, `headers`, Content-Length and
// `body`.
HttpMessage MakeResponse(int status, std::string body,
                         std::vector<std::pair<std::string, std::string>> headers = {});

// A connected TCP socket with a read buffer; closes the socket when destroyed. Not thread-safe.
class HttpConnection {
 public:
  // Takes ownership of the connected socket `fd`.
  explicit HttpConnection(int fd) : fd_(fd) {}
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;
  ~HttpConnection();

  // Reads one request, its body by Content-Length or chunked. Answers "Expect: 100-continue" with
  // "100 Continue" before reading the body. OUT_OF_RANGE when the peer closed the connection
  // before a request began; other errors for broken or malformed input.
  absl::StatusOr<HttpMessage> ReadRequest();
  // Reads one response to a `method` request: no body for HEAD, 1xx, 204 and 304; otherwise by
  // Content-Length, chunked, or up to the end of the stream.
  absl::StatusOr<HttpMessage> ReadResponse(absl::string_view method);
  // Writes all of `data`; a closed peer is an error, never SIGPIPE.
  absl::Status Write(absl::string_view data);
  // Makes the close in the destructor abort the connection (SO_LINGER 0): the peer gets a RST and
  // sees ECONNRESET.
  void ResetOnClose();

 private:
  absl::Status Fill();
  absl::StatusOr<std::string> ReadLine();
  absl::StatusOr<std::string> ReadExactly(size_t size);
  absl::Status ReadHead(HttpMessage* message);
  absl::StatusOr<std::string> ReadChunked();

  int fd_;
  std::string buffer_;
};

// Connects to `host`:`port` (a name or an address).
absl::StatusOr<std::unique_ptr<HttpConnection>> ConnectTcp(const std::string& host, int port);

// A TCP server on 127.0.0.1 that hands each accepted connection to a handler on its own thread;
// the connection is closed when the handler returns.
class TcpServer {
 public:
  using Handler = std::function<void(HttpConnection&)>;

  // Listens on a port chosen by the kernel (no clash possible) and starts accepting.
  static absl::StatusOr<std::unique_ptr<TcpServer>> Start(Handler handler);
  TcpServer(const TcpServer&) = delete;
  TcpServer& operator=(const TcpServer&) = delete;
  // Stops accepting, shuts open connections down (the handlers' reads and writes fail) and joins
  // every thread.
  ~TcpServer();

  int port() const { return port_; }
  // "127.0.0.1:PORT".
  std::string host() const;

 private:
  TcpServer(Handler handler, int fd, int port)
      : handler_(std::move(handler)), listen_fd_(fd), port_(port) {}
  void AcceptLoop();
  void Serve(int fd);

  Handler handler_;
  int listen_fd_;
  int port_;
  std::thread accept_thread_;
  std::vector<std::thread> threads_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::set<int> open_ ABSL_GUARDED_BY(mu_);
};

}  // namespace elfdeploy::testing
