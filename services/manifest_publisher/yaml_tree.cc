#include "services/manifest_publisher/yaml_tree.h"

#include <yaml.h>

#include <algorithm>
#include <map>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace elfdeploy::publisher::yaml {
namespace {

constexpr std::uint64_t kSizeCap = std::uint64_t{1} << 40;

std::string Where(const yaml_mark_t& mark) {
  return yaml::Where(Mark{-1, static_cast<int>(mark.line), static_cast<int>(mark.column)});
}

std::uint64_t SatAdd(std::uint64_t a, std::uint64_t b) { return std::min(kSizeCap, a + b); }

bool IsNullScalar(absl::string_view value) {
  return value.empty() || value == "~" || value == "null" || value == "Null" || value == "NULL";
}

// A tag that says more than "plain" or "non-plain" ('!' alone).
bool IsExplicitTag(const yaml_char_t* tag) {
  return tag != nullptr && !(tag[0] == '!' && tag[1] == '\0');
}

// libyaml counts characters; edits need byte offsets.
class Offsets {
 public:
  explicit Offsets(absl::string_view text) {
    if (std::all_of(text.begin(), text.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
      return;
    }
    for (std::size_t i = 0; i < text.size(); ++i) {
      if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) byte_of_char_.push_back(int(i));
    }
    byte_of_char_.push_back(static_cast<int>(text.size()));
  }

  Mark Of(const yaml_mark_t& mark) const {
    int index = static_cast<int>(mark.index);
    if (!byte_of_char_.empty()) {
      index = byte_of_char_[std::min(mark.index, byte_of_char_.size() - 1)];
    }
    return Mark{index, static_cast<int>(mark.line), static_cast<int>(mark.column)};
  }

 private:
  std::vector<int> byte_of_char_;  // empty for ASCII text
};

class Parser {
 public:
  explicit Parser(absl::string_view text) {
    yaml_parser_initialize(&parser_);
    yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    yaml_parser_set_encoding(&parser_, YAML_UTF8_ENCODING);
  }
  ~Parser() { yaml_parser_delete(&parser_); }
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // The next event; false on a syntax error (then see Error()).
  bool Next(yaml_event_t* event) { return yaml_parser_parse(&parser_, event) == 1; }

  absl::Status Error() const {
    std::string message =
        absl::StrCat("invalid YAML at ", Where(parser_.problem_mark), ": ",
                     parser_.problem != nullptr ? parser_.problem : "unknown error");
    if (parser_.context != nullptr) {
      absl::StrAppend(&message, " (", parser_.context, " at ", Where(parser_.context_mark), ")");
    }
    return absl::InvalidArgumentError(message);
  }

 private:
  yaml_parser_t parser_;
};

struct EventGuard {
  yaml_event_t event;
  ~EventGuard() { yaml_event_delete(&event); }
};

}  // namespace

std::string Where(const Mark& mark) {
  return absl::StrFormat("line %d, column %d", mark.line + 1, mark.column + 1);
}

NodeType Node::type() const {
  return stream_ == nullptr ? NodeType::kUndefined : stream_->nodes_[index_].type;
}

const std::string& Node::Scalar() const {
  static const std::string* const kEmpty = new std::string;
  return IsScalar() ? stream_->nodes_[index_].scalar : *kEmpty;
}

bool Node::IsPlain() const { return stream_ != nullptr && stream_->nodes_[index_].plain; }

bool Node::IsFlow() const { return stream_ != nullptr && stream_->nodes_[index_].flow; }

Mark Node::mark() const { return stream_ == nullptr ? Mark{} : stream_->nodes_[index_].mark; }

std::size_t Node::size() const {
  if (!IsSequence() && !IsMap()) return 0;
  const Stream::NodeData& data = stream_->nodes_[index_];
  return IsMap() ? data.count / 2 : data.count;
}

Node Node::Item(std::size_t i) const {
  if (!IsSequence() || i >= size()) return Node();
  return Node(stream_, stream_->children_[stream_->nodes_[index_].first + i]);
}

Node Node::Key(std::size_t i) const {
  if (!IsMap() || i >= size()) return Node();
  return Node(stream_, stream_->children_[stream_->nodes_[index_].first + 2 * i]);
}

Node Node::Value(std::size_t i) const {
  if (!IsMap() || i >= size()) return Node();
  return Node(stream_, stream_->children_[stream_->nodes_[index_].first + 2 * i + 1]);
}

absl::StatusOr<std::unique_ptr<Stream>> Stream::Parse(absl::string_view text,
                                                      const ParseOptions& options) {
  std::unique_ptr<Stream> stream(new Stream);
  const Offsets offsets(text);
  Parser parser(text);

  struct Open {
    std::uint32_t node;
    std::vector<std::uint32_t> children;
    std::uint64_t size;  // nodes below, aliases expanded
    std::string anchor;
  };
  std::vector<Open> open;
  std::map<std::string, std::uint64_t> anchor_sizes;
  std::uint64_t total = 0;
  std::optional<Mark> first_alias, first_anchor, first_tag;

  // Hangs a finished node (`size` nodes with what is below it) under the open collection.
  auto attach = [&](std::uint32_t node, std::uint64_t size) {
    if (open.empty()) {
      stream->documents_.push_back(Node(stream.get(), node));
    } else {
      open.back().children.push_back(node);
      open.back().size = SatAdd(open.back().size, size);
    }
  };
  auto new_node = [&](NodeType type, const yaml_mark_t& mark) {
    NodeData data;
    data.type = type;
    data.mark = offsets.Of(mark);
    stream->nodes_.push_back(std::move(data));
    return static_cast<std::uint32_t>(stream->nodes_.size() - 1);
  };
  auto note = [&](const yaml_char_t* anchor, const yaml_char_t* tag, const yaml_mark_t& mark) {
    if (anchor != nullptr && !first_anchor) first_anchor = offsets.Of(mark);
    if (IsExplicitTag(tag) && !first_tag) first_tag = offsets.Of(mark);
  };

  for (bool done = false; !done;) {
    EventGuard guard;
    if (!parser.Next(&guard.event)) return parser.Error();
    const yaml_event_t& event = guard.event;
    switch (event.type) {
      case YAML_STREAM_END_EVENT:
        done = true;
        break;
      case YAML_ALIAS_EVENT: {
        if (!first_alias) first_alias = offsets.Of(event.start_mark);
        auto it = anchor_sizes.find(reinterpret_cast<const char*>(event.data.alias.anchor));
        const std::uint64_t size = it == anchor_sizes.end() ? 1 : it->second;
        total = SatAdd(total, size);
        attach(new_node(NodeType::kNull, event.start_mark), size);
        break;
      }
      case YAML_SCALAR_EVENT: {
        const auto& scalar = event.data.scalar;
        note(scalar.anchor, scalar.tag, event.start_mark);
        absl::string_view value(reinterpret_cast<const char*>(scalar.value), scalar.length);
        const bool plain = scalar.style == YAML_PLAIN_SCALAR_STYLE;
        std::uint32_t node = new_node(
            plain && IsNullScalar(value) ? NodeType::kNull : NodeType::kScalar, event.start_mark);
        NodeData& data = stream->nodes_[node];
        data.plain = plain;
        if (data.type == NodeType::kScalar) data.scalar.assign(value.data(), value.size());
        if (scalar.anchor != nullptr) {
          anchor_sizes[reinterpret_cast<const char*>(scalar.anchor)] = 1;
        }
        total = SatAdd(total, 1);
        attach(node, 1);
        break;
      }
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        const bool map = event.type == YAML_MAPPING_START_EVENT;
        const yaml_char_t* anchor =
            map ? event.data.mapping_start.anchor : event.data.sequence_start.anchor;
        note(anchor, map ? event.data.mapping_start.tag : event.data.sequence_start.tag,
             event.start_mark);
        if (static_cast<int>(open.size()) >= options.max_depth) {
          return absl::InvalidArgumentError(
              absl::StrCat("invalid YAML at ", Where(event.start_mark), ": nested deeper than ",
                           options.max_depth, " levels"));
        }
        std::uint32_t node = new_node(map ? NodeType::kMap : NodeType::kSequence, event.start_mark);
        stream->nodes_[node].flow =
            map ? event.data.mapping_start.style == YAML_FLOW_MAPPING_STYLE
                : event.data.sequence_start.style == YAML_FLOW_SEQUENCE_STYLE;
        open.push_back(
            Open{node, {}, 1, anchor != nullptr ? reinterpret_cast<const char*>(anchor) : ""});
        break;
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT: {
        Open done_node = std::move(open.back());
        open.pop_back();
        NodeData& data = stream->nodes_[done_node.node];
        data.first = static_cast<std::uint32_t>(stream->children_.size());
        data.count = static_cast<std::uint32_t>(done_node.children.size());
        stream->children_.insert(stream->children_.end(), done_node.children.begin(),
                                 done_node.children.end());
        if (!done_node.anchor.empty()) anchor_sizes[done_node.anchor] = done_node.size;
        // Everything below is in `total` already; the collection itself is not.
        total = SatAdd(total, 1);
        attach(done_node.node, done_node.size);
        break;
      }
      default:
        break;
    }
    if (first_alias && total > options.max_expanded_nodes) break;
  }

  if (first_alias && total > options.max_expanded_nodes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("YAML bomb: alias expansion exceeds %d nodes (first alias at %s)",
                        options.max_expanded_nodes, Where(*first_alias)));
  }
  if (first_alias || first_anchor) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML anchors and aliases are not supported (",
                     Where(first_alias ? *first_alias : *first_anchor), ")"));
  }
  if (first_tag) {
    return absl::InvalidArgumentError(
        absl::StrCat("explicit YAML tags are not supported (", Where(*first_tag), ")"));
  }
  return stream;
}

}  // namespace elfdeploy::publisher::yaml
