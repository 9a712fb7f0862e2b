#pragma once
/// The rows a store policy keeps, as plain values.
#include <cstdint>
#include <string>
#include <vector>

#include "meshhub/digest.hpp"

namespace meshhub {

/// A path of a session at its current version; `deleted` marks a removal (tombstone),
/// kept so versions stay monotonic and removals reach nodes that were away.
struct file_record {
  std::string path;
  std::uint64_t version = 0;
  std::uint64_t size = 0;
  digest content{};
  bool deleted = false;
};

/// A session and its members.
struct session_record {
  std::string name;
  std::vector<std::string> members;
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
  std::uint64_t pending_waves = 0;
};

/// An accepted change, as the hub journals it *before* it is published in the mirror.
struct change {
  std::string session, path;
  std::uint64_t size = 0;
  digest content{};
  bool deleted = false;
  /// The mirror temp file (relative to the session folder) holding the bytes until they
  /// are renamed into place; empty for a removal. Recovery finishes the rename from it.
  std::string staged;
  /// The node the change came from: it holds the version already, so the wave skips it.
  std::string origin;
};

/// One journaled wave: a change and the members that do not hold it yet.
struct wave_record {
  std::uint64_t id = 0;
  std::string session, path;
  std::uint64_t version = 0;
  digest content{};
  bool deleted = false;
  std::vector<std::string> pending;
  std::string staged;      ///< see `change::staged`
  bool published = true;   ///< false until the mirror holds the change
};

/// What `commit_change` returns: the version the change got and its wave.
struct change_record {
  std::uint64_t version = 0;
  std::uint64_t wave_id = 0;
  std::vector<std::string> members;  ///< the wave's pending members at commit
};

/// A version some node holds of a path (acknowledged by that node).
struct node_version {
  std::string path;
  std::uint64_t version = 0;
};

}  // namespace meshhub
