#pragma once
/// The rows a store policy keeps, as plain values.
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"

namespace meshhub {

/// A path of a session at its current version; `deleted` marks a removal (tombstone),
/// kept so versions stay monotonic and removals reach nodes that were away.
struct file_record {
  std::string path;
  std::uint64_t version = 0;
  std::uint64_t size = 0;
  digest content{};
  bool deleted = false;
  /// A promoted skill's link (`skills/<name>` → this global skill, meshhub/skill/link.hpp):
  /// size 0, content `link_digest(link)`. Empty for a file or a removal.
  std::string link;
  /// A symlink of the session's own (meshhub/symlink.hpp): its target, as the link's
  /// text; size 0, content `symlink_digest(symlink)`. Empty for a file or a removal.
  std::string symlink{};
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
  /// See `file_record::link`.
  std::string link;
  /// The skill name whose link this change removes or replaces (`skills/<name>` was a
  /// link): the store forgets the session's link to it in the same transaction. Set by
  /// the commit pipeline, which knows what the path held.
  std::string ends_skill_link;
  /// See `file_record::symlink`. A symlink is published after the journal, from the
  /// record itself: it has no temp file, and recovery makes it again.
  std::string symlink{};
};

/// Refuses a change set that names a (session, path) twice: its order would decide which
/// change wins, and a set is one change of many paths, not a sequence.
inline void check_distinct_paths(std::span<const change> set) {
  std::set<std::pair<std::string_view, std::string_view>> seen;
  for (auto& c : set)
    if (!seen.emplace(c.session, c.path).second)
      throw error(errc::invalid_argument, "a change set names '" + c.path + "' of session '" + c.session +
                                              "' twice; nothing was changed");
}

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

/// A current version a node lacks, and the version it holds of the path (0: none).
struct behind_record {
  file_record file;
  std::uint64_t held = 0;
};

/// Where a skill promotion stands in the journal (meshhub/skill/library.hpp).
enum class skill_promotion_state {
  begun,      ///< journaled; the disk may be anywhere between "nothing moved" and "linked"
  done,       ///< the skill is in the library, the session links to it, both recorded
  abandoned,  ///< rolled back: nothing had moved, the session keeps its folder
};

/// The journal's spelling of a state (SQLite stores it as this text).
[[nodiscard]] constexpr std::string_view to_string(skill_promotion_state s) {
  switch (s) {
    case skill_promotion_state::begun: return "begun";
    case skill_promotion_state::done: return "done";
    case skill_promotion_state::abandoned: return "abandoned";
  }
  return "begun";
}

/// One promotion of a session's `skills/<name>` folder into the global library, journaled
/// before anything on disk moves. Its id names its staging folder, so ids are never reused.
struct skill_promotion_record {
  std::uint64_t id = 0;
  std::string session;      ///< the session whose folder is promoted
  std::string name;         ///< the skill name: the folder's name under `skills/`
  digest content{};         ///< the folder's digest (manifest root over its files)
  std::string global_name;  ///< what it becomes or links to: `<name>` or `<name>@<12 hex>`
  skill_promotion_state state = skill_promotion_state::begun;
};

/// A skill of the global library (`$DATA_DIR/skills/<global_name>`) as the store records it.
struct global_skill_record {
  std::string global_name;
  std::string name;                   ///< the skill name it was promoted under
  digest content{};                   ///< its folder's digest
  std::vector<std::string> sessions;  ///< the sessions whose `skills/<name>` links to it, sorted
};

}  // namespace meshhub
