#include "services/manifest_publisher/git_publish.h"

#include <fcntl.h>
#include <git2.h>
#include <git2/sys/mempack.h>
#include <git2/sys/odb_backend.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "services/manifest_publisher/git_stream.h"
#include "services/manifest_publisher/git_transport.h"

namespace elfdeploy::publisher {
namespace {

template <auto Free>
struct GitFree {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};

using BlobPtr = std::unique_ptr<git_blob, GitFree<git_blob_free>>;
using CommitPtr = std::unique_ptr<git_commit, GitFree<git_commit_free>>;
using DiffPtr = std::unique_ptr<git_diff, GitFree<git_diff_free>>;
using PackBuilderPtr = std::unique_ptr<git_packbuilder, GitFree<git_packbuilder_free>>;
using ReferencePtr = std::unique_ptr<git_reference, GitFree<git_reference_free>>;
using RemotePtr = std::unique_ptr<git_remote, GitFree<git_remote_free>>;
using RepositoryPtr = std::unique_ptr<git_repository, GitFree<git_repository_free>>;
using RevwalkPtr = std::unique_ptr<git_revwalk, GitFree<git_revwalk_free>>;
using SignaturePtr = std::unique_ptr<git_signature, GitFree<git_signature_free>>;
using TreeEntryPtr = std::unique_ptr<git_tree_entry, GitFree<git_tree_entry_free>>;
using TreePtr = std::unique_ptr<git_tree, GitFree<git_tree_free>>;

using X509Ptr = std::unique_ptr<X509, GitFree<X509_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, GitFree<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, GitFree<X509_STORE_CTX_free>>;

std::string LastGitError() {
  const git_error* error = git_error_last();
  return error != nullptr && error->message != nullptr ? std::string(error->message)
                                                       : std::string("unknown libgit2 error");
}

int LastGitErrorClass() {
  const git_error* error = git_error_last();
  return error != nullptr ? error->klass : GIT_ERROR_NONE;
}

bool ContainsIgnoreCase(absl::string_view text, absl::string_view needle) {
  return absl::StrContains(absl::AsciiStrToLower(text), absl::AsciiStrToLower(needle));
}

std::string OidHex(const git_oid& oid) {
  char hex[GIT_OID_HEXSZ + 1];
  git_oid_tostr(hex, sizeof(hex), &oid);
  return hex;
}

std::string PercentDecode(absl::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && absl::ascii_isxdigit(text[i + 1]) &&
        absl::ascii_isxdigit(text[i + 2])) {
      auto digit = [](char c) {
        return absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10;
      };
      out.push_back(static_cast<char>(digit(text[i + 1]) * 16 + digit(text[i + 2])));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// The password of "scheme://user:password@host/...", percent-decoded; "" without one.
std::string UrlPassword(absl::string_view url) {
  size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos) return "";
  absl::string_view rest = url.substr(scheme_end + 3);
  absl::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  size_t at = authority.rfind('@');
  if (at == absl::string_view::npos) return "";
  absl::string_view info = authority.substr(0, at);
  size_t colon = info.find(':');
  if (colon == absl::string_view::npos) return "";
  return PercentDecode(info.substr(colon + 1));
}

// The repository path of a file:// URL or a plain path; nullopt for remote URLs. Like git, a
// colon before any slash makes an scp-like "host:path".
std::optional<std::string> LocalRepositoryPath(absl::string_view url) {
  if (absl::ConsumePrefix(&url, "file://")) {
    absl::ConsumePrefix(&url, "localhost");
    if (!absl::StartsWith(url, "/")) return std::nullopt;
    return PercentDecode(url);
  }
  if (absl::StrContains(url, "://")) return std::nullopt;
  size_t colon = url.find(':');
  size_t slash = url.find('/');
  if (colon != absl::string_view::npos && (slash == absl::string_view::npos || colon < slash)) {
    return std::nullopt;
  }
  return std::string(url);
}

// Removes credentials from text that leaves the publisher.
class Redactor {
 public:
  explicit Redactor(const GitTarget& target) {
    for (const std::string& secret :
         {target.credentials.password.Reveal(), target.credentials.ssh_passphrase.Reveal(),
          UrlPassword(target.url)}) {
      if (!secret.empty()) secrets_.push_back(secret);
    }
    url_ = (*this)(target.url);
  }

  std::string operator()(absl::string_view text) const {
    std::string out = RedactValue(text);
    for (const std::string& secret : secrets_) {
      out = absl::StrReplaceAll(out, {{secret, kRedacted}});
    }
    return out;
  }

  const std::string& url() const { return url_; }

 private:
  std::vector<std::string> secrets_;
  std::string url_;
};

absl::Status LocalGitError(absl::string_view what, const Redactor& redact) {
  return absl::InternalError(redact(absl::StrCat(what, ": ", LastGitError())));
}

bool IsIpAddress(const char* host) {
  X509_VERIFY_PARAM* param = X509_VERIFY_PARAM_new();
  bool ip = X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1;
  X509_VERIFY_PARAM_free(param);
  return ip;
}

// Verifies a DER server certificate against the PEM certificates of `ca_file` and `host`.
absl::Status VerifyCertificate(const git_cert_x509& cert, const std::string& ca_file,
                               const char* host) {
  const unsigned char* der = static_cast<const unsigned char*>(cert.data);
  X509Ptr leaf(d2i_X509(nullptr, &der, static_cast<long>(cert.len)));
  if (leaf == nullptr) return absl::FailedPreconditionError("unparsable server certificate");
  X509StorePtr store(X509_STORE_new());
  if (store == nullptr || X509_STORE_load_file(store.get(), ca_file.c_str()) != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load CA certificates from ", ca_file));
  }
  X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (ctx == nullptr || X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), nullptr) != 1) {
    return absl::InternalError("cannot set up certificate verification");
  }
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_SERVER);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  int named = IsIpAddress(host) ? X509_VERIFY_PARAM_set1_ip_asc(param, host)
                                : X509_VERIFY_PARAM_set1_host(param, host, 0);
  if (named != 1) return absl::InternalError("cannot set the expected host name");
  if (X509_verify_cert(ctx.get()) != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("the TLS certificate of ", host, " does not verify against ", ca_file, ": ",
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
  }
  return absl::OkStatus();
}

// State of one connection to the remote: credentials are handed out once, so a refused password
// ends the operation instead of looping.
class RemoteContext {
 public:
  RemoteContext(const GitTarget& target, const Redactor& redact)
      : target_(target), redact_(redact) {}

  void Install(git_remote_callbacks* callbacks) {
    callbacks->credentials = &RemoteContext::Credentials;
    callbacks->certificate_check = &RemoteContext::CertificateCheck;
    callbacks->push_update_reference = &RemoteContext::PushUpdateReference;
    callbacks->payload = this;
  }

  // The rejection reason the remote reported for the pushed ref; "" when it was accepted.
  const std::string& push_rejection() const { return push_rejection_; }

  absl::Status Error(int rc, absl::string_view operation) const {
    std::string where =
        absl::StrCat("git ", operation, " ", redact_.url(), " (branch ", target_.branch, ")");
    if (auth_failed_) {
      if (no_credentials_) {
        return absl::UnauthenticatedError(absl::StrCat(
            where, ": the server requires authentication and no credentials are configured"));
      }
      return absl::UnauthenticatedError(redact_(
          absl::StrCat(where, ": the server refused the credentials of user \"", user_, "\"")));
    }
    if (!cert_error_.empty()) {
      return absl::FailedPreconditionError(redact_(absl::StrCat(where, ": ", cert_error_)));
    }
    std::string detail = LastGitError();
    std::string message = redact_(absl::StrCat(where, ": ", detail));
    if (rc == GIT_ENOTFOUND || absl::StrContains(detail, "status code: 404") ||
        ContainsIgnoreCase(detail, "repository not found") ||
        ContainsIgnoreCase(detail, "could not find repository") ||
        ContainsIgnoreCase(detail, "no such file or directory")) {
      return absl::NotFoundError(message);
    }
    if (absl::StrContains(detail, "status code: 401") || rc == GIT_EAUTH) {
      return absl::UnauthenticatedError(message);
    }
    if (absl::StrContains(detail, "status code: 403")) {
      return absl::PermissionDeniedError(message);
    }
    if (rc == GIT_ECERTIFICATE) return absl::FailedPreconditionError(message);
    switch (LastGitErrorClass()) {
      case GIT_ERROR_NET:
      case GIT_ERROR_HTTP:
      case GIT_ERROR_SSH:
      case GIT_ERROR_SSL:
      case GIT_ERROR_OS:
        return absl::UnavailableError(message);
      default:
        return absl::InternalError(message);
    }
  }

 private:
  static int Credentials(git_credential** out, const char* /*url*/, const char* username_from_url,
                         unsigned int allowed_types, void* payload) {
    auto* self = static_cast<RemoteContext*>(payload);
    const GitCredentials& credentials = self->target_.credentials;
    std::string user = credentials.username;
    if (user.empty() && username_from_url != nullptr) user = username_from_url;
    if (user.empty()) user = "git";
    self->user_ = user;
    if ((allowed_types & GIT_CREDENTIAL_USERNAME) != 0) {
      return git_credential_username_new(out, user.c_str());
    }
    if (++self->attempts_ > 1) {
      self->auth_failed_ = true;
      git_error_set_str(GIT_ERROR_NET, "credentials refused");
      return GIT_EUSER;
    }
    if ((allowed_types & GIT_CREDENTIAL_SSH_KEY) != 0 &&
        !credentials.ssh_private_key_path.empty()) {
      return git_credential_ssh_key_new(
          out, user.c_str(),
          credentials.ssh_public_key_path.empty() ? nullptr
                                                  : credentials.ssh_public_key_path.c_str(),
          credentials.ssh_private_key_path.c_str(),
          credentials.ssh_passphrase.empty() ? nullptr
                                             : credentials.ssh_passphrase.Reveal().c_str());
    }
    if ((allowed_types & GIT_CREDENTIAL_USERPASS_PLAINTEXT) != 0 && !credentials.password.empty()) {
      return git_credential_userpass_plaintext_new(out, user.c_str(),
                                                   credentials.password.Reveal().c_str());
    }
    self->auth_failed_ = true;
    self->no_credentials_ = UrlPassword(self->target_.url).empty();
    git_error_set_str(GIT_ERROR_NET, "no credentials configured");
    return GIT_EUSER;
  }

  static int CertificateCheck(git_cert* cert, int valid, const char* host, void* payload) {
    auto* self = static_cast<RemoteContext*>(payload);
    // libgit2 1.5 has no known_hosts support: ssh host keys are accepted as they come.
    if (cert->cert_type != GIT_CERT_X509) return 0;
    if (valid != 0 || self->target_.insecure_skip_tls_verify) return 0;
    if (self->target_.ca_file.empty()) {
      self->cert_error_ =
          absl::StrCat("the TLS certificate of ", host, " is not trusted (set ca_file to its CA)");
    } else {
      absl::Status verified = VerifyCertificate(*reinterpret_cast<const git_cert_x509*>(cert),
                                                self->target_.ca_file, host);
      if (verified.ok()) return 0;
      self->cert_error_ = std::string(verified.message());
    }
    git_error_set_str(GIT_ERROR_SSL, self->cert_error_.c_str());
    return GIT_ECERTIFICATE;
  }

  static int PushUpdateReference(const char* refname, const char* status, void* payload) {
    auto* self = static_cast<RemoteContext*>(payload);
    if (status != nullptr) {
      self->push_rejection_ = absl::StrCat(refname, ": ", status);
    }
    return 0;
  }

  const GitTarget& target_;
  const Redactor& redact_;
  int attempts_ = 0;
  bool auth_failed_ = false;
  bool no_credentials_ = false;
  std::string user_;
  std::string cert_error_;
  std::string push_rejection_;
};

absl::Status ValidatePath(absl::string_view path, std::vector<std::string>* components) {
  if (path.empty()) return absl::InvalidArgumentError("empty path");
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == ".." || absl::EqualsIgnoreCase(part, ".git") ||
        absl::StrContains(part, '\0')) {
      return absl::InvalidArgumentError(absl::StrCat("invalid path \"", path, "\""));
    }
    components->emplace_back(part);
  }
  return absl::OkStatus();
}

class CommitTreeReader final : public TreeReader {
 public:
  CommitTreeReader(git_repository* repo, const git_tree* tree, std::string head)
      : repo_(repo), tree_(tree), head_(std::move(head)) {}

  absl::StatusOr<std::optional<std::string>> ReadFile(const std::string& path) const override {
    std::vector<std::string> components;
    absl::Status valid = ValidatePath(path, &components);
    if (!valid.ok()) return valid;
    absl::MutexLock lock(&mu_);
    if (tree_ == nullptr) return std::nullopt;
    git_tree_entry* raw_entry = nullptr;
    int rc = git_tree_entry_bypath(&raw_entry, tree_, path.c_str());
    if (rc == GIT_ENOTFOUND) return std::nullopt;
    if (rc < 0) return absl::InternalError(absl::StrCat("reading ", path, ": ", LastGitError()));
    TreeEntryPtr entry(raw_entry);
    if (git_tree_entry_type(entry.get()) != GIT_OBJECT_BLOB) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is not a file"));
    }
    git_blob* raw_blob = nullptr;
    if (git_blob_lookup(&raw_blob, repo_, git_tree_entry_id(entry.get())) < 0) {
      return absl::InternalError(absl::StrCat("reading ", path, ": ", LastGitError()));
    }
    BlobPtr blob(raw_blob);
    return std::string(static_cast<const char*>(git_blob_rawcontent(blob.get())),
                       static_cast<size_t>(git_blob_rawsize(blob.get())));
  }

  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) const override {
    absl::string_view dir = path;
    while (absl::ConsumeSuffix(&dir, "/")) {
    }
    std::vector<std::string> components;
    if (!dir.empty()) {
      absl::Status valid = ValidatePath(dir, &components);
      if (!valid.ok()) return valid;
    }
    absl::MutexLock lock(&mu_);
    std::vector<std::string> names;
    if (tree_ == nullptr) return names;
    const git_tree* tree = tree_;
    TreePtr subtree;
    if (!dir.empty()) {
      git_tree_entry* raw_entry = nullptr;
      int rc = git_tree_entry_bypath(&raw_entry, tree_, std::string(dir).c_str());
      if (rc == GIT_ENOTFOUND) return names;
      if (rc < 0) return absl::InternalError(absl::StrCat("listing ", dir, ": ", LastGitError()));
      TreeEntryPtr entry(raw_entry);
      if (git_tree_entry_type(entry.get()) != GIT_OBJECT_TREE) return names;
      git_tree* raw_tree = nullptr;
      if (git_tree_lookup(&raw_tree, repo_, git_tree_entry_id(entry.get())) < 0) {
        return absl::InternalError(absl::StrCat("listing ", dir, ": ", LastGitError()));
      }
      subtree.reset(raw_tree);
      tree = subtree.get();
    }
    size_t count = git_tree_entrycount(tree);
    names.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      names.emplace_back(git_tree_entry_name(git_tree_entry_byindex(tree, i)));
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string head() const override { return head_; }

 private:
  git_repository* repo_;
  const git_tree* tree_;
  std::string head_;
  mutable absl::Mutex mu_;
};

struct ChangeNode {
  std::map<std::string, const FileChange*> files;
  std::map<std::string, ChangeNode> dirs;
};

absl::StatusOr<ChangeNode> IndexChanges(const std::vector<FileChange>& changes) {
  ChangeNode root;
  std::set<std::string> seen;
  for (const FileChange& change : changes) {
    std::vector<std::string> components;
    absl::Status valid = ValidatePath(change.path, &components);
    if (!valid.ok()) return valid;
    if (!seen.insert(change.path).second) {
      return absl::InvalidArgumentError(absl::StrCat("path \"", change.path, "\" changed twice"));
    }
    ChangeNode* node = &root;
    for (size_t i = 0; i + 1 < components.size(); ++i) {
      auto file = node->files.find(components[i]);
      if (file != node->files.end() && file->second->content.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("path \"", change.path, "\" is under file \"", file->second->path, "\""));
      }
      node = &node->dirs[components[i]];
    }
    const std::string& name = components.back();
    if (change.content.has_value() && node->dirs.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("file \"", change.path, "\" is also a directory of other changes"));
    }
    node->files[name] = &change;
  }
  return root;
}

// Writes a new object straight into the staging mempack. Going through git_odb_write would first
// look the object up in every backend and, when it is missing (the usual case here), rescan the
// pack directory: once per object.
absl::StatusOr<git_oid> StageObject(git_odb_backend* staged, absl::string_view data,
                                    git_object_t type, const Redactor& redact) {
  git_oid oid;
  if (git_odb_hash(&oid, data.data(), data.size(), type) < 0 ||
      staged->write(staged, &oid, data.data(), data.size(), type) < 0) {
    return LocalGitError("staging an object", redact);
  }
  return oid;
}

struct TreeItem {
  git_filemode_t mode;
  git_oid oid;
};

// A tree object's bytes: entries in git's order, which compares a directory's name as if it ended
// in '/'.
std::string SerializeTree(const std::map<std::string, TreeItem>& items) {
  std::vector<std::pair<std::string, const TreeItem*>> sorted;
  sorted.reserve(items.size());
  for (const auto& [name, item] : items) {
    sorted.emplace_back(item.mode == GIT_FILEMODE_TREE ? absl::StrCat(name, "/") : name, &item);
  }
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (const auto& [key, item] : sorted) {
    absl::string_view name = key;
    if (item->mode == GIT_FILEMODE_TREE) name.remove_suffix(1);
    char mode[16];  // octal without leading zeros: "100644", "40000"
    std::snprintf(mode, sizeof(mode), "%o", static_cast<unsigned>(item->mode));
    out.append(mode);
    out.push_back(' ');
    out.append(name.data(), name.size());
    out.push_back('\0');
    out.append(reinterpret_cast<const char*>(item->oid.id), GIT_OID_RAWSZ);
  }
  return out;
}

// Appends the path of every file under `tree` (at `prefix`) to `paths`.
absl::Status ListFiles(git_repository* repo, const git_oid& tree, const std::string& prefix,
                       std::vector<std::string>* paths, const Redactor& redact) {
  git_tree* raw_tree = nullptr;
  if (git_tree_lookup(&raw_tree, repo, &tree) < 0) {
    return LocalGitError(absl::StrCat("reading ", prefix), redact);
  }
  TreePtr subtree(raw_tree);
  for (size_t i = 0, n = git_tree_entrycount(subtree.get()); i < n; ++i) {
    const git_tree_entry* entry = git_tree_entry_byindex(subtree.get(), i);
    std::string path = absl::StrCat(prefix, "/", git_tree_entry_name(entry));
    if (git_tree_entry_filemode(entry) == GIT_FILEMODE_TREE) {
      if (absl::Status s = ListFiles(repo, *git_tree_entry_id(entry), path, paths, redact);
          !s.ok()) {
        return s;
      }
    } else {
      paths->push_back(std::move(path));
    }
  }
  return absl::OkStatus();
}

// Writes the tree `base` with `node` applied into `staged`; nullopt when it ends up empty (unless
// keep_empty). Unchanged content is hashed but never written, so unchanged subtrees keep their ids.
// The path of every file added, changed or removed goes to `changed` (unsorted).
absl::StatusOr<std::optional<git_oid>> WriteTree(git_repository* repo, git_odb_backend* staged,
                                                 const git_tree* base, const ChangeNode& node,
                                                 const std::string& prefix, bool keep_empty,
                                                 std::vector<std::string>* changed,
                                                 const Redactor& redact) {
  auto path_of = [&prefix](const std::string& name) {
    return prefix.empty() ? name : absl::StrCat(prefix, "/", name);
  };
  std::map<std::string, TreeItem> items;
  if (base != nullptr) {
    for (size_t i = 0, n = git_tree_entrycount(base); i < n; ++i) {
      const git_tree_entry* entry = git_tree_entry_byindex(base, i);
      items.emplace(git_tree_entry_name(entry),
                    TreeItem{git_tree_entry_filemode(entry), *git_tree_entry_id(entry)});
    }
  }
  bool modified = false;
  for (const auto& [name, change] : node.files) {
    auto existing = items.find(name);
    if (!change->content.has_value()) {
      if (existing == items.end()) continue;
      if (existing->second.mode == GIT_FILEMODE_TREE) {
        if (absl::Status s = ListFiles(repo, existing->second.oid, path_of(name), changed, redact);
            !s.ok()) {
          return s;
        }
      } else {
        changed->push_back(path_of(name));
      }
      items.erase(existing);
      modified = true;
      continue;
    }
    if (existing != items.end() && existing->second.mode == GIT_FILEMODE_TREE) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write file \"", change->path, "\": it is a directory"));
    }
    git_oid blob;
    if (git_odb_hash(&blob, change->content->data(), change->content->size(), GIT_OBJECT_BLOB) <
        0) {
      return LocalGitError(absl::StrCat("hashing ", change->path), redact);
    }
    if (existing != items.end() && git_oid_equal(&blob, &existing->second.oid)) continue;
    if (staged->write(staged, &blob, change->content->data(), change->content->size(),
                      GIT_OBJECT_BLOB) < 0) {
      return LocalGitError(absl::StrCat("writing ", change->path), redact);
    }
    git_filemode_t mode = existing != items.end() && existing->second.mode != GIT_FILEMODE_BLOB
                              ? existing->second.mode  // executable or symlink stays so
                              : GIT_FILEMODE_BLOB;
    items.insert_or_assign(name, TreeItem{mode, blob});
    changed->push_back(path_of(name));
    modified = true;
  }
  for (const auto& [name, child] : node.dirs) {
    std::string path = path_of(name);
    auto existing = items.find(name);
    TreePtr subtree;
    if (existing != items.end()) {
      if (existing->second.mode != GIT_FILEMODE_TREE) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot write under \"", path, "\": it is a file"));
      }
      git_tree* raw_tree = nullptr;
      if (git_tree_lookup(&raw_tree, repo, &existing->second.oid) < 0) {
        return LocalGitError(absl::StrCat("reading ", path), redact);
      }
      subtree.reset(raw_tree);
    }
    absl::StatusOr<std::optional<git_oid>> written =
        WriteTree(repo, staged, subtree.get(), child, path, false, changed, redact);
    if (!written.ok()) return written.status();
    if (written->has_value()) {
      if (existing != items.end() && git_oid_equal(&**written, &existing->second.oid)) continue;
      items.insert_or_assign(name, TreeItem{GIT_FILEMODE_TREE, **written});
    } else if (existing != items.end()) {
      items.erase(existing);
    } else {
      continue;
    }
    modified = true;
  }
  if (!keep_empty && items.empty()) return std::nullopt;
  if (!modified && base != nullptr) return *git_tree_id(base);
  absl::StatusOr<git_oid> tree = StageObject(staged, SerializeTree(items), GIT_OBJECT_TREE, redact);
  if (!tree.ok()) return tree.status();
  return *tree;
}

absl::StatusOr<std::string> ComposeMessage(const CommitSpec& spec) {
  absl::string_view subject = absl::StripAsciiWhitespace(spec.message);
  if (subject.empty()) return absl::InvalidArgumentError("empty commit message");
  std::string message(subject);
  if (!spec.trailers.empty()) absl::StrAppend(&message, "\n");
  for (const auto& [key, value] : spec.trailers) {
    bool key_ok = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
      return absl::ascii_isalnum(c) || c == '-';
    });
    if (!key_ok) {
      return absl::InvalidArgumentError(absl::StrCat("invalid trailer key \"", key, "\""));
    }
    if (value.empty() || absl::StrContains(value, '\n') || absl::StrContains(value, '\r')) {
      return absl::InvalidArgumentError(
          absl::StrCat("trailer \"", key, "\" needs a non-empty single-line value"));
    }
    absl::StrAppend(&message, "\n", key, ": ", value);
  }
  absl::StrAppend(&message, "\n");
  return message;
}

// The per-process lock of one cache repository, plus an flock(2) against other processes. It may
// be released on another thread than the one that took it (a background keep).
class CacheLock {
 public:
  explicit CacheLock(const std::string& repo_path) : slot_(SlotFor(repo_path)) {
    {
      absl::MutexLock lock(&slot_.mu);
      ++slot_.waiting;
      slot_.mu.Await(absl::Condition(
          +[](Slot* slot) { return !slot->held; }, &slot_));
      --slot_.waiting;
      slot_.held = true;
    }
    fd_ = open(absl::StrCat(repo_path, ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      error_ = absl::StrCat("cannot open the lock of ", repo_path, ": ", std::strerror(errno));
      return;
    }
    while (flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) {
        error_ = absl::StrCat("cannot lock ", repo_path, ": ", std::strerror(errno));
        return;
      }
    }
  }
  CacheLock(const CacheLock&) = delete;
  CacheLock& operator=(const CacheLock&) = delete;
  ~CacheLock() {
    if (fd_ >= 0) close(fd_);
    absl::MutexLock lock(&slot_.mu);
    slot_.held = false;
  }

  absl::Status status() const {
    return error_.empty() ? absl::OkStatus() : absl::InternalError(error_);
  }

  // Returns when another thread of this process waits for the lock, or after `timeout`.
  void AwaitWaiter(absl::Duration timeout) {
    absl::MutexLock lock(&slot_.mu);
    slot_.mu.AwaitWithTimeout(absl::Condition(
                                  +[](Slot* slot) { return slot->waiting > 0; }, &slot_),
                              timeout);
  }

 private:
  struct Slot {
    absl::Mutex mu;
    bool held ABSL_GUARDED_BY(mu) = false;
    int waiting ABSL_GUARDED_BY(mu) = 0;
  };

  static Slot& SlotFor(const std::string& path) {
    static absl::Mutex* registry_mu = new absl::Mutex();
    static auto* registry = new std::map<std::string, std::unique_ptr<Slot>>();
    absl::MutexLock lock(registry_mu);
    std::unique_ptr<Slot>& slot = (*registry)[path];
    if (slot == nullptr) slot = std::make_unique<Slot>();
    return *slot;
  }

  Slot& slot_;
  int fd_ = -1;
  std::string error_;
};

std::string TrackingRef(const std::string& branch) {
  return absl::StrCat("refs/remotes/origin/", branch);
}

// A cache repository held open, with its in-memory staging backend.
struct OpenRepository {
  RepositoryPtr repo;
  git_odb_backend* staged = nullptr;  // owned by the repository's object database
  bool in_use = false;
  uint64_t last_use = 0;
  // objects/pack's modification time when last released: another process sharing the cache
  // dir may add or delete packs meanwhile, and then the repository is opened afresh.
  std::optional<timespec> packs_changed;
};

std::optional<timespec> PacksChanged(const std::string& path) {
  struct stat st = {};
  if (stat(absl::StrCat(path, "/objects/pack").c_str(), &st) != 0) return std::nullopt;
  return st.st_mtim;
}

}  // namespace

// Cache repositories stay open between publishes, so libgit2's object cache still holds the trees
// the last publish wrote when the next push walks its parent's tree (building a one-app push's
// pack took ~2.5-3.5 ms with them read again, ~1.5-2.5 ms without). At most kMaxOpen stay open; the
// least recently used idle one is closed first.
class RepositoryPool {
 public:
  static constexpr size_t kMaxOpen = 8;

  // `path`'s repository, opened (or created) unless already open. The caller holds the path's
  // CacheLock and gives the repository back with Release.
  absl::StatusOr<OpenRepository*> Acquire(const std::string& path, const Redactor& redact);

  // Keeps the repository open for the next publish, or closes it when `reopen` (after an error
  // or a repack the next publish reads the disk afresh).
  void Release(const std::string& path, bool reopen) {
    absl::MutexLock lock(&mu_);
    auto it = open_.find(path);
    if (it == open_.end()) return;
    if (reopen) {
      open_.erase(it);
    } else {
      it->second->in_use = false;
      it->second->packs_changed = PacksChanged(path);
    }
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<OpenRepository>> open_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;
};

namespace {

// The cache repository of one target, locked and open; objects written while publishing are
// staged in memory and reach the disk only once a push lands. The repository stays open for the
// next publish only after KeepOpen.
class Cache {
 public:
  Cache(std::unique_ptr<CacheLock> lock, RepositoryPool* pool, std::string path,
        OpenRepository* open)
      : lock_(std::move(lock)), pool_(pool), path_(std::move(path)), open_(open) {}
  Cache(Cache&& other) noexcept
      : lock_(std::move(other.lock_)),
        pool_(std::exchange(other.pool_, nullptr)),
        path_(std::move(other.path_)),
        open_(other.open_),
        reopen_(other.reopen_) {}
  Cache& operator=(Cache&&) = delete;
  ~Cache() {
    if (pool_ != nullptr) pool_->Release(path_, reopen_);
  }  // then lock_ goes

  git_repository* repo() const { return open_->repo.get(); }
  git_odb_backend* staged() const { return open_->staged; }
  const std::string& path() const { return path_; }
  void KeepOpen() { reopen_ = false; }
  void AwaitWaiter(absl::Duration timeout) { lock_->AwaitWaiter(timeout); }

 private:
  std::unique_ptr<CacheLock> lock_;
  RepositoryPool* pool_;
  std::string path_;
  OpenRepository* open_;
  bool reopen_ = true;
};

// Packs from the cache carry whole objects. Delta search costs more CPU than it saves on the
// small manifests a GitOps tree holds (in a 500-app publish, half the push time on this side and
// the delta resolution on the server's), and a publish's own changes seldom have a base in the
// same pack. libgit2 1.5 reads the size above which it skips delta search from
// pack.deltaCacheSize (a known slip for core.bigFileThreshold); objects under 50 bytes are never
// deltified anyway.
absl::Status DisableDeltaSearch(git_repository* repo, const Redactor& redact) {
  git_config* raw_config = nullptr;
  if (git_repository_config(&raw_config, repo) < 0) {
    return LocalGitError("reading the cache configuration", redact);
  }
  std::unique_ptr<git_config, GitFree<git_config_free>> config(raw_config);
  int64_t value = 0;
  if (git_config_get_int64(&value, config.get(), "pack.deltaCacheSize") == 0 && value == 1) {
    return absl::OkStatus();
  }
  git_error_clear();
  if (git_config_set_int64(config.get(), "pack.deltaCacheSize", 1) < 0) {
    return LocalGitError("writing the cache configuration", redact);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OpenRepository*> RepositoryPool::Acquire(const std::string& path,
                                                        const Redactor& redact) {
  {
    absl::MutexLock lock(&mu_);
    auto it = open_.find(path);
    std::optional<timespec> changed = PacksChanged(path);
    if (it != open_.end() && changed.has_value() && it->second->packs_changed.has_value() &&
        changed->tv_sec == it->second->packs_changed->tv_sec &&
        changed->tv_nsec == it->second->packs_changed->tv_nsec) {
      it->second->in_use = true;
      it->second->last_use = ++clock_;
      return it->second.get();
    }
    if (it != open_.end()) open_.erase(it);
  }
  // Opened outside the pool's mutex: the caller's CacheLock keeps others off this path.
  auto open = std::make_unique<OpenRepository>();
  git_repository* raw_repo = nullptr;
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && git_repository_open_bare(&raw_repo, path.c_str()) < 0) {
    raw_repo = nullptr;
    std::filesystem::remove_all(path, ec);
  }
  if (raw_repo == nullptr && git_repository_init(&raw_repo, path.c_str(), 1) < 0) {
    return LocalGitError(absl::StrCat("creating cache repository ", path), redact);
  }
  open->repo.reset(raw_repo);
  if (absl::Status s = DisableDeltaSearch(raw_repo, redact); !s.ok()) return s;
  git_odb* odb = nullptr;
  if (git_mempack_new(&open->staged) < 0) return LocalGitError("creating a mempack", redact);
  if (git_repository_odb(&odb, raw_repo) < 0 || git_odb_add_backend(odb, open->staged, 999) < 0) {
    open->staged->free(open->staged);
    git_odb_free(odb);
    return LocalGitError("staging objects in memory", redact);
  }
  git_odb_free(odb);

  absl::MutexLock lock(&mu_);
  open->in_use = true;
  open->last_use = ++clock_;
  OpenRepository* result = open.get();
  open_[path] = std::move(open);
  while (open_.size() > kMaxOpen) {
    auto oldest = open_.end();
    for (auto it = open_.begin(); it != open_.end(); ++it) {
      if (!it->second->in_use &&
          (oldest == open_.end() || it->second->last_use < oldest->second->last_use)) {
        oldest = it;
      }
    }
    if (oldest == open_.end()) break;  // all in use: they close when released past the limit
    open_.erase(oldest);
  }
  return result;
}

namespace {

absl::StatusOr<Cache> OpenCache(const std::string& cache_dir, const GitTarget& target,
                                RepositoryPool& pool, const Redactor& redact) {
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create cache dir ", cache_dir, ": ", ec.message()));
  }
  std::string key = absl::StrCat(redact.url(), "\n", target.branch);
  git_oid hash;
  if (git_odb_hash(&hash, key.data(), key.size(), GIT_OBJECT_BLOB) < 0) {
    return LocalGitError("hashing the cache key", redact);
  }
  std::string path = absl::StrCat(cache_dir, "/", OidHex(hash), ".git");
  auto lock = std::make_unique<CacheLock>(path);
  if (absl::Status locked = lock->status(); !locked.ok()) return locked;
  absl::StatusOr<OpenRepository*> open = pool.Acquire(path, redact);
  if (!open.ok()) return open.status();
  return Cache(std::move(lock), &pool, std::move(path), *open);
}

bool HasObject(git_repository* repo, const git_oid& oid) {
  git_odb* odb = nullptr;
  if (git_repository_odb(&odb, repo) < 0) return false;
  bool exists = git_odb_exists(odb, &oid) != 0;
  git_odb_free(odb);
  return exists;
}

constexpr int kMaxCachePacks = 32;

// A pack of the cache. The base pack is marked by a .keep file naming the commit it holds
// everything reachable from.
struct CachePack {
  std::filesystem::path path;  // the .pack file
  uintmax_t size = 0;
  std::optional<git_oid> base_of;
};

std::vector<std::filesystem::path> PackFiles(const std::string& pack_dir) {
  std::vector<std::filesystem::path> packs;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(pack_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->path().extension() == ".pack") packs.push_back(it->path());
  }
  return packs;
}

// Each pack's size and, from its .keep, the commit it is the base of.
std::vector<CachePack> DescribePacks(const std::vector<std::filesystem::path>& files) {
  std::vector<CachePack> packs;
  for (const std::filesystem::path& file : files) {
    CachePack pack;
    pack.path = file;
    std::error_code ec;
    pack.size = std::filesystem::file_size(pack.path, ec);
    std::filesystem::path keep = pack.path;
    char hex[GIT_OID_HEXSZ] = {};
    if (std::FILE* f = std::fopen(keep.replace_extension(".keep").c_str(), "r"); f != nullptr) {
      git_oid commit;
      if (std::fread(hex, 1, sizeof(hex), f) == sizeof(hex) &&
          git_oid_fromstrn(&commit, hex, sizeof(hex)) == 0) {
        pack.base_of = commit;
      }
      std::fclose(f);
    }
    packs.push_back(std::move(pack));
  }
  return packs;
}

// Deletes a pack and the files beside it (its .keep first, the .pack last), or only the .keep.
void RemovePack(std::filesystem::path pack, bool keep_only) {
  std::error_code ec;
  for (const char* extension :
       {".keep", ".idx", ".rev", ".bitmap", ".mtimes", ".promisor", ".pack"}) {
    std::filesystem::remove(pack.replace_extension(extension), ec);
    if (keep_only) return;
  }
}

// Keeps the cache at no more than kMaxCachePacks + 1 packs. Past that, the packs beside the base
// (one per landed publish or fetch) become one pack of what `head` adds over the base's commit;
// once they weigh as much as the base, everything reachable from `head` becomes the new base
// instead. A merge thus writes at most about the base's size, and the whole history, which the
// base holds, is rewritten each time it has doubled rather than every kMaxCachePacks publishes.
// True when packs were deleted.
absl::StatusOr<bool> CompactCache(Cache& cache, const git_oid& head, const Redactor& redact) {
  std::string pack_dir = absl::StrCat(cache.path(), "/objects/pack");
  std::vector<std::filesystem::path> files = PackFiles(pack_dir);
  if (static_cast<int>(files.size()) <= kMaxCachePacks) return false;
  std::vector<CachePack> packs = DescribePacks(files);
  const CachePack* base = nullptr;
  for (const CachePack& pack : packs) {
    if (pack.base_of.has_value() && HasObject(cache.repo(), *pack.base_of) &&
        (base == nullptr || pack.size > base->size)) {
      base = &pack;
    }
  }
  uintmax_t rest = 0;
  for (const CachePack& pack : packs) {
    if (&pack != base) rest += pack.size;
  }
  const bool rebase = base == nullptr || rest >= base->size;
  git_packbuilder* raw_builder = nullptr;
  git_revwalk* raw_walk = nullptr;
  if (git_packbuilder_new(&raw_builder, cache.repo()) < 0) {
    return LocalGitError("creating a pack builder", redact);
  }
  PackBuilderPtr builder(raw_builder);
  if (git_revwalk_new(&raw_walk, cache.repo()) < 0) {
    return LocalGitError("creating a revwalk", redact);
  }
  RevwalkPtr walk(raw_walk);
  if (git_revwalk_push(walk.get(), &head) < 0 ||
      (!rebase && git_revwalk_hide(walk.get(), &*base->base_of) < 0) ||
      git_packbuilder_insert_walk(builder.get(), walk.get()) < 0 ||
      git_packbuilder_write(builder.get(), pack_dir.c_str(), 0, nullptr, nullptr) < 0) {
    return LocalGitError("repacking the cache", redact);
  }
  const std::string written = absl::StrCat("pack-", git_packbuilder_name(builder.get()));
  if (rebase) {
    std::string keep = absl::StrCat(pack_dir, "/", written, ".keep");
    std::string content = absl::StrCat(OidHex(head), "\n");
    std::FILE* f = std::fopen(keep.c_str(), "w");
    bool ok = f != nullptr && std::fwrite(content.data(), 1, content.size(), f) == content.size();
    if (f != nullptr && std::fclose(f) != 0) ok = false;
    if (!ok) {
      // The old packs stay and the new one goes: unmarked, each compaction would add one more.
      std::string error = std::strerror(errno);
      bool existed = std::any_of(packs.begin(), packs.end(), [&](const CachePack& pack) {
        return pack.path.stem() == written;
      });
      RemovePack(absl::StrCat(pack_dir, "/", written, ".pack"), existed);
      return absl::InternalError(redact(absl::StrCat("cannot write ", keep, ": ", error)));
    }
  }
  for (const CachePack& pack : packs) {
    if (pack.path.stem() == written || (!rebase && &pack == base)) continue;
    RemovePack(pack.path, false);
  }
  return true;
}

// Writes the staged objects into the cache as one pack, so the next publish finds the commit
// that just landed without fetching it; true when the cache was repacked.
absl::StatusOr<bool> KeepStagedObjects(Cache& cache, const git_oid& head, const Redactor& redact) {
  git_buf pack = GIT_BUF_INIT;
  git_odb* odb = nullptr;
  git_odb_writepack* writer = nullptr;
  // Only what the new commit adds over its parent: git_mempack_dump would pack its whole tree.
  git_packbuilder* builder = nullptr;
  git_revwalk* walk = nullptr;
  git_commit* commit = nullptr;
  int rc = git_packbuilder_new(&builder, cache.repo());
  if (rc == 0) rc = git_revwalk_new(&walk, cache.repo());
  if (rc == 0) rc = git_revwalk_push(walk, &head);
  if (rc == 0) rc = git_commit_lookup(&commit, cache.repo(), &head);
  if (rc == 0 && git_commit_parentcount(commit) > 0) {
    rc = git_revwalk_hide(walk, git_commit_parent_id(commit, 0));
  }
  if (rc == 0) rc = git_packbuilder_insert_walk(builder, walk);
  if (rc == 0) rc = git_packbuilder_write_buf(&pack, builder);
  git_commit_free(commit);
  git_revwalk_free(walk);
  git_packbuilder_free(builder);
  if (rc == 0) rc = git_repository_odb(&odb, cache.repo());
  if (rc == 0) rc = git_odb_write_pack(&writer, odb, nullptr, nullptr);
  if (rc == 0) {
    git_indexer_progress stats = {};
    rc = writer->append(writer, pack.ptr, pack.size, &stats);
    if (rc == 0) rc = writer->commit(writer, &stats);
    writer->free(writer);
    // Adds the new pack to the object database now: else the next publish's first lookup of
    // this commit misses in every known pack and rescans objects/pack (~0.25 ms).
    if (rc == 0) rc = git_odb_refresh(odb);
  }
  absl::Status status = rc == 0 ? absl::OkStatus() : LocalGitError("writing the cache", redact);
  git_odb_free(odb);
  git_buf_dispose(&pack);
  git_mempack_reset(cache.staged());
  if (!status.ok()) return status;
  return CompactCache(cache, head, redact);
}

absl::Status ValidateTarget(const GitTarget& target) {
  if (target.url.empty()) return absl::InvalidArgumentError("empty git URL");
  int valid = 0;
  std::string ref = absl::StrCat("refs/heads/", target.branch);
  if (target.branch.empty() || git_reference_name_is_valid(&valid, ref.c_str()) < 0 || !valid) {
    return absl::InvalidArgumentError(absl::StrCat("invalid branch name \"", target.branch, "\""));
  }
  return absl::OkStatus();
}

// An anonymous remote for the URL exactly as given: url.*.insteadOf rewriting is skipped, which
// also avoids a libgit2 1.5 leak (pcre2 match data for every config entry it scans).
int CreateRemote(git_remote** out, git_repository* repo, const std::string& url) {
  git_remote_create_options options;
  git_remote_create_options_init(&options, GIT_REMOTE_CREATE_OPTIONS_VERSION);
  options.repository = repo;
  options.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
  return git_remote_create_with_opts(out, url.c_str(), &options);
}

absl::Status SetTrackingRef(git_repository* repo, const std::string& branch,
                            const std::optional<git_oid>& head, const Redactor& redact) {
  std::string tracking_ref = TrackingRef(branch);
  git_reference* raw_ref = nullptr;
  if (head.has_value()) {
    if (git_reference_create(&raw_ref, repo, tracking_ref.c_str(), &*head, 1, nullptr) < 0) {
      return LocalGitError(absl::StrCat("updating ", tracking_ref), redact);
    }
    git_reference_free(raw_ref);
  } else if (git_reference_lookup(&raw_ref, repo, tracking_ref.c_str()) == 0) {
    ReferencePtr ref(raw_ref);
    git_reference_delete(ref.get());
  }
  git_error_clear();
  return absl::OkStatus();
}

bool SameHead(const std::optional<git_oid>& a, const std::optional<git_oid>& b) {
  if (!a.has_value() || !b.has_value()) return a.has_value() == b.has_value();
  return git_oid_equal(&*a, &*b) != 0;
}

// The branch head the cache saw last, when the cache holds its commit.
std::optional<git_oid> CachedHead(git_repository* repo, const std::string& branch) {
  git_oid head;
  if (git_reference_name_to_id(&head, repo, TrackingRef(branch).c_str()) != 0) {
    git_error_clear();
    return std::nullopt;
  }
  if (!HasObject(repo, head)) return std::nullopt;
  return head;
}

// Fetches the branch; its head, or nullopt when the remote has no such branch.
absl::StatusOr<std::optional<git_oid>> FetchBranch(git_repository* repo, const GitTarget& target,
                                                   const Redactor& redact) {
  git_remote* raw_remote = nullptr;
  if (CreateRemote(&raw_remote, repo, target.url) < 0) {
    return absl::InvalidArgumentError(
        redact(absl::StrCat("git URL ", target.url, ": ", LastGitError())));
  }
  RemoteContext context(target, redact);
  RemotePtr remote(raw_remote);
  git_fetch_options options;
  git_fetch_options_init(&options, GIT_FETCH_OPTIONS_VERSION);
  context.Install(&options.callbacks);
  options.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
  options.update_fetchhead = 0;
  options.prune = GIT_FETCH_NO_PRUNE;
  std::string branch_ref = absl::StrCat("refs/heads/", target.branch);
  std::string refspec = absl::StrCat("+", branch_ref, ":", TrackingRef(target.branch));
  char* refspecs[] = {refspec.data()};
  git_strarray specs = {refspecs, 1};
  int rc = git_remote_fetch(remote.get(), &specs, &options, nullptr);
  if (rc < 0) return context.Error(rc, "fetch from");
  const git_remote_head** heads = nullptr;
  size_t count = 0;
  if (git_remote_ls(&heads, &count, remote.get()) < 0) {
    return context.Error(GIT_ERROR, "list refs of");
  }
  std::optional<git_oid> head;
  for (size_t i = 0; i < count; ++i) {
    if (branch_ref == heads[i]->name) head = heads[i]->oid;
  }
  if (absl::Status tracked = SetTrackingRef(repo, target.branch, head, redact); !tracked.ok()) {
    return tracked;
  }
  return head;
}

// The outcome of a push attempt: nullopt when the branch now points at the commit, else why the
// remote refused it because the branch moved.
using PushRejection = std::optional<std::string>;

bool IsRaceRejection(absl::string_view reason) {
  for (absl::string_view race : {"fast-forward", "fastforward", "fetch first", "stale", "lock",
                                 "failed to update", "already exists"}) {
    if (ContainsIgnoreCase(reason, race)) return true;
  }
  return false;
}

// Where a publish goes: tells the branch head as the remote has it now, then pushes a commit on
// top of it.
class Destination {
 public:
  virtual ~Destination() = default;
  // The branch head; nullopt when the branch does not exist.
  virtual absl::StatusOr<std::optional<git_oid>> Head() = 0;
  // Moves the branch from `expected` to `commit` unless it moved meanwhile.
  virtual absl::StatusOr<PushRejection> Push(const git_oid& commit,
                                             const std::optional<git_oid>& expected) = 0;
};

// A remote reached through libgit2's transports, connected for push. The head comes from
// receive-pack's advertisement on the same connection the push then uses, so the window in which
// another writer can move the branch is a single connection; receive-pack compares the old value
// under its ref lock.
class RemoteDestination final : public Destination {
 public:
  // Not yet connected.
  static absl::StatusOr<std::unique_ptr<RemoteDestination>> Create(git_repository* repo,
                                                                   const GitTarget& target,
                                                                   const Redactor& redact) {
    std::unique_ptr<RemoteDestination> destination(new RemoteDestination(repo, target, redact));
    git_remote* raw_remote = nullptr;
    if (CreateRemote(&raw_remote, repo, target.url) < 0) {
      return absl::InvalidArgumentError(
          redact(absl::StrCat("git URL ", target.url, ": ", LastGitError())));
    }
    destination->remote_.reset(raw_remote);
    return destination;
  }

  // Connects for push and reads the advertisement. Touches the remote and the network but not
  // the repository (no proxy lookup in its config), so it may run beside work on the repository.
  absl::Status Connect() {
    git_remote_callbacks callbacks;
    git_remote_init_callbacks(&callbacks, GIT_REMOTE_CALLBACKS_VERSION);
    context_.Install(&callbacks);
    int rc = git_remote_connect(remote_.get(), GIT_DIRECTION_PUSH, &callbacks, nullptr, nullptr);
    if (rc < 0) return context_.Error(rc, "connect to");
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<git_oid>> Head() override {
    const git_remote_head** heads = nullptr;
    size_t count = 0;
    if (git_remote_ls(&heads, &count, remote_.get()) < 0) {
      return context_.Error(GIT_ERROR, "list refs of");
    }
    std::string branch_ref = absl::StrCat("refs/heads/", target_.branch);
    for (size_t i = 0; i < count; ++i) {
      if (branch_ref == heads[i]->name) return heads[i]->oid;
    }
    return std::nullopt;
  }

  absl::StatusOr<PushRejection> Push(const git_oid& commit,
                                     const std::optional<git_oid>& /*expected*/) override {
    std::string branch_ref = absl::StrCat("refs/heads/", target_.branch);
    git_reference* raw_ref = nullptr;
    if (git_reference_create(&raw_ref, repo_, branch_ref.c_str(), &commit, 1, nullptr) < 0) {
      return LocalGitError(absl::StrCat("updating ", branch_ref), redact_);
    }
    git_reference_free(raw_ref);
    git_push_options options;
    git_push_options_init(&options, GIT_PUSH_OPTIONS_VERSION);
    options.pb_parallelism = 0;  // pack with every core
    context_.Install(&options.callbacks);
    std::string refspec = absl::StrCat(branch_ref, ":", branch_ref);
    char* refspecs[] = {refspec.data()};
    git_strarray specs = {refspecs, 1};
    int rc = git_remote_upload(remote_.get(), &specs, &options);
    std::string error = LastGitError();
    absl::Status status = rc < 0 ? context_.Error(rc, "push to") : absl::OkStatus();
    if (git_reference_lookup(&raw_ref, repo_, branch_ref.c_str()) == 0) {
      ReferencePtr ref(raw_ref);
      git_reference_delete(ref.get());
    }
    if (rc == GIT_ENONFASTFORWARD) return PushRejection(error);
    if (!status.ok()) return status;
    git_remote_disconnect(remote_.get());
    const std::string& rejection = context_.push_rejection();
    if (rejection.empty()) return PushRejection();
    if (IsRaceRejection(rejection)) return PushRejection(rejection);
    return absl::FailedPreconditionError(redact_(absl::StrCat(
        "git push to ", target_.url, " (branch ", target_.branch, ") refused: ", rejection)));
  }

 private:
  RemoteDestination(git_repository* repo, const GitTarget& target, const Redactor& redact)
      : repo_(repo), target_(target), redact_(redact), context_(target, redact) {}

  git_repository* repo_;
  const GitTarget& target_;
  const Redactor& redact_;
  RemoteContext context_;
  RemotePtr remote_;
};

// A bare repository on this machine. libgit2's local transport would update the ref without
// checking its old value, so this writes the pack itself and compares-and-swaps the ref under
// git's lock file.
class LocalDestination final : public Destination {
 public:
  static absl::StatusOr<std::unique_ptr<LocalDestination>> Open(git_repository* repo,
                                                                const std::string& path,
                                                                const GitTarget& target,
                                                                const Redactor& redact) {
    git_repository* raw_remote = nullptr;
    if (git_repository_open_bare(&raw_remote, path.c_str()) < 0) {
      return absl::NotFoundError(redact(absl::StrCat(
          "git push to ", target.url, ": no bare repository at ", path, ": ", LastGitError())));
    }
    return std::unique_ptr<LocalDestination>(
        new LocalDestination(repo, RepositoryPtr(raw_remote), target, redact));
  }

  absl::StatusOr<std::optional<git_oid>> Head() override {
    git_oid head;
    int rc = git_reference_name_to_id(&head, remote_.get(), branch_ref_.c_str());
    if (rc == GIT_ENOTFOUND) {
      git_error_clear();
      return std::nullopt;
    }
    if (rc < 0) {
      return absl::UnavailableError(redact_(absl::StrCat(
          "git fetch from ", target_.url, ": reading ", branch_ref_, ": ", LastGitError())));
    }
    return head;
  }

  absl::StatusOr<PushRejection> Push(const git_oid& commit,
                                     const std::optional<git_oid>& expected) override {
    git_packbuilder* raw_builder = nullptr;
    git_revwalk* raw_walk = nullptr;
    if (git_packbuilder_new(&raw_builder, repo_) < 0) {
      return LocalGitError("creating a pack builder", redact_);
    }
    PackBuilderPtr builder(raw_builder);
    if (git_revwalk_new(&raw_walk, repo_) < 0) {
      return LocalGitError("creating a revwalk", redact_);
    }
    RevwalkPtr walk(raw_walk);
    if (git_revwalk_push(walk.get(), &commit) < 0 ||
        (expected.has_value() && git_revwalk_hide(walk.get(), &*expected) < 0) ||
        git_packbuilder_insert_walk(builder.get(), walk.get()) < 0) {
      return LocalGitError("collecting objects to push", redact_);
    }
    std::string pack_dir = absl::StrCat(git_repository_path(remote_.get()), "objects/pack");
    if (git_packbuilder_write(builder.get(), pack_dir.c_str(), 0, nullptr, nullptr) < 0) {
      return absl::UnavailableError(redact_(
          absl::StrCat("git push to ", target_.url, ": writing the pack: ", LastGitError())));
    }
    std::string log_message = absl::StrCat("elfdeploy: publish ", OidHex(commit));
    // The zero id makes the creation of a missing branch a compare-and-swap too (a plain
    // non-forced create checks for the ref before taking its lock).
    git_oid old_id;
    if (expected.has_value()) {
      old_id = *expected;
    } else {
      std::memset(&old_id, 0, sizeof(old_id));
    }
    git_reference* raw_ref = nullptr;
    int rc = GIT_ELOCKED;
    // Like git's core.filesRefLockTimeout: wait up to ~100 ms for another writer's ref lock.
    for (int tries = 0; rc == GIT_ELOCKED && tries < 20; ++tries) {
      if (tries > 0) absl::SleepFor(absl::Milliseconds(5));
      rc = git_reference_create_matching(&raw_ref, remote_.get(), branch_ref_.c_str(), &commit, 1,
                                         &old_id, log_message.c_str());
    }
    if (rc == 0) {
      git_reference_free(raw_ref);
      return PushRejection();
    }
    if (rc == GIT_EMODIFIED || rc == GIT_EEXISTS || rc == GIT_ELOCKED) {
      return PushRejection(absl::StrCat(branch_ref_, ": ", LastGitError()));
    }
    return absl::UnavailableError(redact_(absl::StrCat("git push to ", target_.url, " (branch ",
                                                       target_.branch, "): ", LastGitError())));
  }

 private:
  LocalDestination(git_repository* repo, RepositoryPtr remote, const GitTarget& target,
                   const Redactor& redact)
      : repo_(repo),
        remote_(std::move(remote)),
        target_(target),
        redact_(redact),
        branch_ref_(absl::StrCat("refs/heads/", target.branch)) {}

  git_repository* repo_;
  RepositoryPtr remote_;
  const GitTarget& target_;
  const Redactor& redact_;
  std::string branch_ref_;
};

absl::StatusOr<std::unique_ptr<Destination>> OpenDestination(git_repository* repo,
                                                             const GitTarget& target,
                                                             const Redactor& redact) {
  std::optional<std::string> local_path = LocalRepositoryPath(target.url);
  if (local_path.has_value()) {
    absl::StatusOr<std::unique_ptr<LocalDestination>> local =
        LocalDestination::Open(repo, *local_path, target, redact);
    if (!local.ok()) return local.status();
    return std::unique_ptr<Destination>(*std::move(local));
  }
  absl::StatusOr<std::unique_ptr<RemoteDestination>> remote =
      RemoteDestination::Create(repo, target, redact);
  if (!remote.ok()) return remote.status();
  if (absl::Status connected = (*remote)->Connect(); !connected.ok()) return connected;
  return std::unique_ptr<Destination>(*std::move(remote));
}

struct Prepared {
  std::optional<git_oid> head;
  CommitPtr head_commit;
  git_oid tree;
  bool unchanged = false;
  std::vector<std::string> changed_paths;
  std::string patch;
  absl::Time render_done;
};

// Renders on `head` (present in the cache) and writes the new tree into the cache repository.
absl::StatusOr<Prepared> RenderOn(git_repository* repo, git_odb_backend* staged,
                                  const std::optional<git_oid>& head, const RenderFn& render,
                                  const Redactor& redact, bool want_patch) {
  Prepared prepared;
  prepared.head = head;
  TreePtr head_tree;
  if (prepared.head.has_value()) {
    git_commit* raw_commit = nullptr;
    git_tree* raw_tree = nullptr;
    if (git_commit_lookup(&raw_commit, repo, &*prepared.head) < 0) {
      return LocalGitError(absl::StrCat("reading commit ", OidHex(*prepared.head)), redact);
    }
    prepared.head_commit.reset(raw_commit);
    if (git_commit_tree(&raw_tree, raw_commit) < 0) {
      return LocalGitError(absl::StrCat("reading the tree of ", OidHex(*prepared.head)), redact);
    }
    head_tree.reset(raw_tree);
  }
  absl::StatusOr<std::vector<FileChange>> changes;
  {
    CommitTreeReader reader(repo, head_tree.get(),
                            prepared.head.has_value() ? OidHex(*prepared.head) : "");
    changes = render(reader);
  }
  if (!changes.ok()) return changes.status();
  prepared.render_done = absl::Now();
  absl::StatusOr<ChangeNode> index = IndexChanges(*changes);
  if (!index.ok()) return index.status();
  absl::StatusOr<std::optional<git_oid>> tree =
      WriteTree(repo, staged, head_tree.get(), *index, "", true, &prepared.changed_paths, redact);
  if (!tree.ok()) return tree.status();
  prepared.tree = **tree;
  git_tree* raw_new_tree = nullptr;
  if (git_tree_lookup(&raw_new_tree, repo, &prepared.tree) < 0) {
    return LocalGitError("reading the new tree", redact);
  }
  TreePtr new_tree(raw_new_tree);
  prepared.unchanged = head_tree != nullptr
                           ? git_oid_equal(git_tree_id(head_tree.get()), &prepared.tree) != 0
                           : git_tree_entrycount(new_tree.get()) == 0;
  std::sort(prepared.changed_paths.begin(), prepared.changed_paths.end());
  if (prepared.unchanged || !want_patch) return prepared;
  git_diff_options options;
  git_diff_options_init(&options, GIT_DIFF_OPTIONS_VERSION);
  git_diff* raw_diff = nullptr;
  if (git_diff_tree_to_tree(&raw_diff, repo, head_tree.get(), new_tree.get(), &options) < 0) {
    return LocalGitError("diffing the trees", redact);
  }
  DiffPtr diff(raw_diff);
  git_buf patch = GIT_BUF_INIT;
  if (git_diff_to_buf(&patch, diff.get(), GIT_DIFF_FORMAT_PATCH) < 0) {
    return LocalGitError("formatting the diff", redact);
  }
  prepared.patch.assign(patch.ptr, patch.size);
  git_buf_dispose(&patch);
  return prepared;
}

absl::StatusOr<git_oid> CreateCommit(git_repository* repo, const CommitSpec& spec,
                                     const std::string& message, const Prepared& prepared,
                                     const Redactor& redact) {
  int64_t time = spec.time != 0 ? spec.time : absl::ToUnixSeconds(absl::Now());
  git_signature* raw_signature = nullptr;
  if (git_signature_new(&raw_signature, spec.author_name.c_str(), spec.author_email.c_str(), time,
                        0) < 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid author \"", spec.author_name, " <",
                                                   spec.author_email, ">\": ", LastGitError()));
  }
  SignaturePtr signature(raw_signature);
  git_tree* raw_tree = nullptr;
  if (git_tree_lookup(&raw_tree, repo, &prepared.tree) < 0) {
    return LocalGitError("reading the new tree", redact);
  }
  TreePtr tree(raw_tree);
  const git_commit* parents[] = {prepared.head_commit.get()};
  git_oid commit;
  if (git_commit_create(&commit, repo, nullptr, signature.get(), signature.get(), nullptr,
                        message.c_str(), tree.get(), prepared.head_commit != nullptr ? 1 : 0,
                        parents) < 0) {
    return LocalGitError("creating the commit", redact);
  }
  return commit;
}

// A push connection idle for longer than this during a render is replaced before pushing.
constexpr absl::Duration kMaxIdleConnection = absl::Seconds(10);

// A landed publish's cache writes wait this long, unless another publish waits for the cache or
// more writes are queued, so that they do not compete with sending Publish's answer (on two cores
// they added 0-2 ms to it).
constexpr absl::Duration kKeepDelay = absl::Milliseconds(5);
// How long the destructor waits for servers to finish their answers after push reports.
constexpr absl::Duration kPushTailWait = absl::Seconds(10);

absl::Duration Jitter(absl::Duration backoff) {
  thread_local std::mt19937_64 random{std::random_device{}()};
  std::uniform_real_distribution<double> factor(0.0, 1.0);
  return backoff * factor(random);
}

}  // namespace

// Runs the cache writes of landed publishes, in order, after Publish has answered. A task learns
// whether more are queued behind it (or the keeper is stopping): then it must not linger.
class GitPublisher::Keeper {
 public:
  Keeper() : thread_([this] { Run(); }) {}
  ~Keeper() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    thread_.join();
  }
  Keeper(const Keeper&) = delete;
  Keeper& operator=(const Keeper&) = delete;

  void Post(absl::AnyInvocable<void(bool backlog) &&> task) {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }

 private:
  // Until stopped, and then until every posted task has run.
  void Run() {
    for (;;) {
      absl::AnyInvocable<void(bool backlog) &&> task;
      bool backlog = false;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Keeper* keeper) { return keeper->stopping_ || !keeper->tasks_.empty(); }, this));
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
        backlog = stopping_ || !tasks_.empty();
      }
      std::move(task)(backlog);
    }
  }

  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void(bool backlog) &&>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: it starts once the members above exist
};

GitPublisher::GitPublisher(PublisherOptions options)
    : options_(std::move(options)),
      pool_(std::make_unique<RepositoryPool>()),
      keeper_(std::make_unique<Keeper>()) {
  git_libgit2_init();
  UseNoDelaySockets();
  UseEarlyPushReports();
}

GitPublisher::~GitPublisher() {
  keeper_.reset();  // pending cache writes finish while libgit2 is still initialized
  pool_.reset();
  if (!AwaitPushTails(kPushTailWait)) {
    // A thread still reads a server's answer through libgit2, which must stay initialized.
    log::Warning("git server still sending after its push report; libgit2 stays initialized",
                 {{"waited", kPushTailWait}});
    return;
  }
  git_libgit2_shutdown();
}

absl::StatusOr<PublishOutcome> GitPublisher::Publish(const GitTarget& target,
                                                     const RenderFn& render,
                                                     const CommitSpec& commit) {
  if (absl::Status valid = ValidateTarget(target); !valid.ok()) return valid;
  absl::StatusOr<std::string> message = ComposeMessage(commit);
  if (!message.ok()) return message.status();
  Redactor redact(target);
  absl::Time open_start = absl::Now();
  absl::StatusOr<Cache> cache = OpenCache(options_.cache_dir, target, *pool_, redact);
  if (!cache.ok()) return cache.status();
  const absl::Duration open_time = absl::Now() - open_start;
  git_repository* repo = cache->repo();
  int max_attempts = std::max(1, options_.max_attempts);
  absl::Duration backoff = options_.initial_backoff;
  std::string rejection;
  for (int attempt = 1; attempt <= max_attempts; ++attempt) {
    absl::Time attempt_start = absl::Now();
    git_mempack_reset(cache->staged());
    std::unique_ptr<Destination> destination;
    std::optional<git_oid> head;
    std::optional<absl::StatusOr<Prepared>> prepared;
    absl::Time render_start;
    absl::Time connected;
    // The first attempt renders on the head the cache saw last, on another thread, while this
    // one connects; that render stands when the remote advertises the same head (the usual
    // case). The connection, the longer of the two, starts first: a new thread may wait a
    // millisecond or more for a core.
    std::optional<git_oid> guess = attempt == 1 && !LocalRepositoryPath(target.url)
                                       ? CachedHead(repo, target.branch)
                                       : std::nullopt;
    if (guess.has_value()) {
      absl::StatusOr<std::unique_ptr<RemoteDestination>> remote =
          RemoteDestination::Create(repo, target, redact);
      if (!remote.ok()) return remote.status();
      std::thread renderer([&] {
        render_start = absl::Now();
        prepared = RenderOn(repo, cache->staged(), guess, render, redact, false);
      });
      absl::Status connect_status = (*remote)->Connect();
      connected = absl::Now();
      renderer.join();
      if (!connect_status.ok()) return connect_status;
      destination = *std::move(remote);
      absl::StatusOr<std::optional<git_oid>> advertised = destination->Head();
      if (!advertised.ok()) return advertised.status();
      head = *advertised;
      if (!prepared->ok()) return prepared->status();
      if (!SameHead(head, guess)) {
        prepared.reset();
        git_mempack_reset(cache->staged());
      }
    }
    for (int fetches = 0; !prepared.has_value(); ++fetches) {
      if (destination == nullptr) {
        absl::StatusOr<std::unique_ptr<Destination>> opened = OpenDestination(repo, target, redact);
        if (!opened.ok()) return opened.status();
        destination = *std::move(opened);
        connected = absl::Now();
        absl::StatusOr<std::optional<git_oid>> advertised = destination->Head();
        if (!advertised.ok()) return advertised.status();
        head = *advertised;
      }
      if (!head.has_value() || HasObject(repo, *head)) break;
      if (fetches == max_attempts) {
        return absl::AbortedError(absl::StrCat("git fetch from ", redact.url(), " (branch ",
                                               target.branch, "): the branch kept moving"));
      }
      destination.reset();
      absl::StatusOr<std::optional<git_oid>> fetched = FetchBranch(repo, target, redact);
      if (!fetched.ok()) return fetched.status();
    }
    if (!guess.has_value() || !SameHead(head, guess)) {
      if (absl::Status tracked = SetTrackingRef(repo, target.branch, head, redact); !tracked.ok()) {
        return tracked;
      }
    }
    if (!prepared.has_value()) {
      render_start = absl::Now();
      prepared = RenderOn(repo, cache->staged(), head, render, redact, false);
      if (!prepared->ok()) return prepared->status();
    }
    if (absl::Now() - connected > kMaxIdleConnection) {
      destination.reset();
      absl::StatusOr<std::unique_ptr<Destination>> reopened = OpenDestination(repo, target, redact);
      if (!reopened.ok()) return reopened.status();
      destination = *std::move(reopened);
    }
    Prepared& ready = **prepared;
    PublishOutcome outcome;
    outcome.attempts = attempt;
    outcome.parent = ready.head.has_value() ? OidHex(*ready.head) : "";
    if (ready.unchanged) {
      outcome.no_op = true;
      outcome.commit = outcome.parent;
      cache->KeepOpen();
      return outcome;
    }
    absl::StatusOr<git_oid> created = CreateCommit(repo, commit, *message, ready, redact);
    if (!created.ok()) return created.status();
    absl::Time push_start = absl::Now();
    absl::StatusOr<PushRejection> pushed = destination->Push(*created, ready.head);
    if (!pushed.ok()) return pushed.status();
    if (!pushed->has_value()) {
      log::Debug("git publish timings",
                 {{"url", redact.url()},
                  {"open_ms", absl::ToDoubleMilliseconds(open_time)},
                  {"connect_ms", absl::ToDoubleMilliseconds(connected - attempt_start)},
                  {"overlapped", guess.has_value() && SameHead(head, guess)},
                  {"render_ms", absl::ToDoubleMilliseconds(ready.render_done - render_start)},
                  {"tree_ms", absl::ToDoubleMilliseconds(push_start - ready.render_done)},
                  {"push_ms", absl::ToDoubleMilliseconds(absl::Now() - push_start)}});
      outcome.commit = OidHex(*created);
      outcome.changed_paths = std::move(ready.changed_paths);
      // Nothing else may use the repository once the cache moves to the keeper's thread.
      destination.reset();
      ready.head_commit.reset();
      keeper_->Post([cache = *std::move(cache), head = *created, branch = target.branch, redact,
                     posted = absl::Now()](bool backlog) mutable {
        if (!backlog) cache.AwaitWaiter(std::min(kKeepDelay, posted + kKeepDelay - absl::Now()));
        absl::Time start = absl::Now();
        absl::Status tracked = SetTrackingRef(cache.repo(), branch, head, redact);
        absl::StatusOr<bool> repacked =
            tracked.ok() ? KeepStagedObjects(cache, head, redact) : absl::StatusOr<bool>(tracked);
        if (!repacked.ok()) {
          log::Warning("git publish landed but the cache could not keep it",
                       {{"url", redact.url()}, {"branch", branch}, {"error", repacked.status()}});
          return;
        }
        // A repacked cache is opened afresh: the open one still maps the packs it deleted.
        if (!*repacked) cache.KeepOpen();
        log::Debug(
            "git publish kept in the cache",
            {{"url", redact.url()}, {"keep_ms", absl::ToDoubleMilliseconds(absl::Now() - start)}});
      });
      return outcome;
    }
    rejection = redact(**pushed);
    log::Info("git push rejected, the branch moved; rendering again", {{"url", redact.url()},
                                                                       {"branch", target.branch},
                                                                       {"attempt", attempt},
                                                                       {"reason", rejection}});
    if (attempt < max_attempts) {
      absl::SleepFor(Jitter(backoff));
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }
  return absl::AbortedError(absl::StrCat("git push to ", redact.url(), " (branch ", target.branch,
                                         ") still rejected after ", max_attempts,
                                         " attempts: ", rejection));
}

absl::StatusOr<std::pair<std::string, std::string>> GitPublisher::Diff(const GitTarget& target,
                                                                       const RenderFn& render) {
  if (absl::Status valid = ValidateTarget(target); !valid.ok()) return valid;
  Redactor redact(target);
  absl::StatusOr<Cache> cache = OpenCache(options_.cache_dir, target, *pool_, redact);
  if (!cache.ok()) return cache.status();
  git_repository* repo = cache->repo();
  absl::StatusOr<std::optional<git_oid>> head = FetchBranch(repo, target, redact);
  if (!head.ok()) return head.status();
  absl::StatusOr<Prepared> prepared = RenderOn(repo, cache->staged(), *head, render, redact, true);
  if (!prepared.ok()) return prepared.status();
  git_mempack_reset(cache->staged());
  cache->KeepOpen();
  return std::make_pair(std::move(prepared->patch),
                        prepared->head.has_value() ? OidHex(*prepared->head) : std::string());
}

}  // namespace elfdeploy::publisher
