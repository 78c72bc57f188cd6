#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/common/log.h"
#include "tests/kubesim/store.h"

namespace httplib {
class Server;
}

namespace elfdeploy::kubesim {

struct ApiServerOptions {
  // HOST:PORT; port 0 picks a free port (see ApiServer::address()).
  std::string listen_addr = "127.0.0.1:0";
  // PEM files; both set serves HTTPS only, both empty plain HTTP.
  std::string tls_cert_file = {};
  std::string tls_key_file = {};
  // When set, every request except /healthz, /livez, /readyz and /version needs
  // "Authorization: Bearer <token>" (401 Status otherwise).
  Secret token = {};
  // Period of BOOKMARK events on watches that ask for them.
  absl::Duration bookmark_interval = absl::Seconds(1);
  // A watch without timeoutSeconds ends after this long (the API server picks 30-60 min).
  absl::Duration max_watch_timeout = absl::Minutes(30);
  // Worker threads: each open watch or log stream holds one.
  int threads = 128;
  // What /version reports as gitVersion.
  std::string git_version = "v1.29.0-kubesim";
};

// The Kubernetes REST API over `store`: HTTP/1.1 + JSON, list/watch/get/create/replace/patch/
// delete of every served type, pods/{name}/log, /version, /healthz; unknown paths get a 404
// Status. The store must outlive the server.
class ApiServer {
 public:
  using Options = ApiServerOptions;

  // Binds and starts serving before returning. INVALID_ARGUMENT for a bad address or a lone TLS
  // file, UNAVAILABLE when the address cannot be bound or the TLS files do not load.
  static absl::StatusOr<std::unique_ptr<ApiServer>> Start(ObjectStore* store, Options options);

  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;
  // Stop().
  ~ApiServer();

  // Ends open watches and log streams (their streams close), stops listening and joins the
  // workers. Shuts the store down too (ObjectStore::Shutdown). Idempotent.
  void Stop();

  // "HOST:PORT" actually bound.
  std::string address() const;
  int port() const { return port_; }
  // "http://HOST:PORT" or "https://HOST:PORT".
  std::string base_url() const;
  bool tls() const { return !options_.tls_cert_file.empty(); }

 private:
  ApiServer(ObjectStore* store, Options options);
  class Handler;

  ObjectStore* store_;
  Options options_;
  std::string host_;
  int port_ = 0;
  std::unique_ptr<Handler> handler_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace elfdeploy::kubesim
