#pragma once

#include <openssl/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/harness/http_wire.h"
#include "tests/harness/temp_dir.h"

namespace elfdeploy::testing {

struct TokenUser {
  std::string username;
  std::string password;
  // The actions this user gets on any resource; requested actions outside this list are dropped.
  std::vector<std::string> actions = {"pull", "push", "delete"};
};

struct TokenServerOptions {
  // Must match the `service` query parameter and becomes the tokens' audience.
  std::string service = "elfdeploy-registry";
  std::string issuer = "elfdeploy-token-server";
  std::vector<TokenUser> users = {};
  // Requests without credentials get tokens granting at most "pull"; otherwise they get 401.
  bool allow_anonymous_pull = false;
  absl::Duration token_lifetime = absl::Minutes(5);
};

// A plain-http token server on 127.0.0.1 implementing the Docker registry token protocol:
// `GET /token?service=S&scope=TYPE:NAME:ACTIONS[&scope=...]` with optional HTTP basic auth answers
// {"token", "access_token", "expires_in", "issued_at"}. Tokens are ES256 JWTs whose header carries
// the signing certificate in `x5c`; claims are iss, sub, aud, exp, nbf, iat, jti and access. Wrong
// credentials (or none, unless anonymous pull is allowed) get 401, an unknown service 400.
// Thread-safe; the destructor stops the server.
class TokenServer {
 public:
  using Options = TokenServerOptions;

  // Makes a P-256 key and a self-signed certificate for it, writes the certificate to
  // cert_file() and starts serving on its own threads.
  static absl::StatusOr<std::unique_ptr<TokenServer>> Start(Options options);
  TokenServer(const TokenServer&) = delete;
  TokenServer& operator=(const TokenServer&) = delete;
  ~TokenServer();

  // "http://127.0.0.1:PORT/token", the registry's `auth.token.realm`.
  std::string realm() const;
  // The PEM certificate that verifies the tokens, the registry's `auth.token.rootcertbundle`.
  std::string cert_file() const { return dir_.Join("token-signer.pem"); }
  const Options& options() const { return options_; }
  int port() const { return server_->port(); }
  // Tokens handed out so far.
  int tokens_issued() const;
  // Every `scope` parameter received so far, answered or refused, in order of arrival.
  std::vector<std::string> requested_scopes() const;

 private:
  TokenServer(Options options, TempDir dir) : options_(std::move(options)), dir_(std::move(dir)) {}
  absl::Status MakeSigningCertificate();
  void Serve(HttpConnection& connection);
  HttpMessage Handle(const HttpMessage& request);
  absl::StatusOr<std::string> Sign(absl::string_view input) const;

  const Options options_;
  TempDir dir_;
  EVP_PKEY* key_ = nullptr;
  std::string cert_der_;
  mutable absl::Mutex mu_;
  int tokens_issued_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> requested_scopes_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<TcpServer> server_;
};

}  // namespace elfdeploy::testing
