#ifndef ELFDEPLOY_SERVICES_MANIFEST_PUBLISHER_YAML_TREE_H_
#define ELFDEPLOY_SERVICES_MANIFEST_PUBLISHER_YAML_TREE_H_

// A YAML stream parsed with libyaml into a read-only tree whose nodes know where they start in
// the text, for editing the text in place. Only plain YAML is accepted: anchors, aliases and
// explicit tags are refused, so the tree is exactly what the text says.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace elfdeploy::publisher::yaml {

// Where a node starts: byte offset into the parsed text, 0-based line and column (characters).
struct Mark {
  int pos = -1;
  int line = -1;
  int column = -1;
};

// "line L, column C", 1-based, for messages.
std::string Where(const Mark& mark);

enum class NodeType : std::uint8_t { kUndefined, kNull, kScalar, kSequence, kMap };

struct ParseOptions {
  // Collections nested deeper than this are refused.
  int max_depth = 256;
  // An alias-expanded stream larger than this many nodes is reported as a YAML bomb.
  std::uint64_t max_expanded_nodes = 100000;
};

class Stream;

// A node of a Stream: a small handle, valid while its Stream lives. Missing nodes (a default
// Node, or what a lookup did not find) are undefined.
class Node {
 public:
  Node() = default;

  NodeType type() const;
  bool IsDefined() const { return stream_ != nullptr; }
  // An empty value or a plain ~, null, Null or NULL.
  bool IsNull() const { return type() == NodeType::kNull; }
  bool IsScalar() const { return type() == NodeType::kScalar; }
  bool IsSequence() const { return type() == NodeType::kSequence; }
  bool IsMap() const { return type() == NodeType::kMap; }

  // A scalar's value; "" for other nodes.
  const std::string& Scalar() const;
  // A scalar written plain (unquoted, not a block scalar).
  bool IsPlain() const;
  // A collection written in flow style ({...} or [...]).
  bool IsFlow() const;
  Mark mark() const;

  // Items of a sequence or entries of a mapping; 0 for other nodes.
  std::size_t size() const;
  Node Item(std::size_t i) const;
  Node Key(std::size_t i) const;
  Node Value(std::size_t i) const;

 private:
  friend class Stream;
  Node(const Stream* stream, std::uint32_t index) : stream_(stream), index_(index) {}

  const Stream* stream_ = nullptr;
  std::uint32_t index_ = 0;
};

class Stream {
 public:
  // Parses UTF-8 `text` (without a byte order mark). INVALID_ARGUMENT says what is wrong and
  // where: a syntax error, an anchor or alias (a YAML bomb when their expansion exceeds
  // max_expanded_nodes), an explicit tag, or nesting deeper than max_depth.
  static absl::StatusOr<std::unique_ptr<Stream>> Parse(absl::string_view text,
                                                       const ParseOptions& options = {});

  // The root node of each document, in order; an empty document is a null node.
  const std::vector<Node>& documents() const { return documents_; }

 private:
  friend class Node;
  struct NodeData {
    NodeType type = NodeType::kUndefined;
    bool plain = false;
    bool flow = false;
    Mark mark;
    std::string scalar;
    // Children in children_: items, or key and value of each entry in turn.
    std::uint32_t first = 0;
    std::uint32_t count = 0;
  };

  Stream() = default;

  std::vector<NodeData> nodes_;
  std::vector<std::uint32_t> children_;
  std::vector<Node> documents_;
};

}  // namespace elfdeploy::publisher::yaml

#endif  // ELFDEPLOY_SERVICES_MANIFEST_PUBLISHER_YAML_TREE_H_
