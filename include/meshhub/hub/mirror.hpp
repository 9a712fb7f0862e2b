#pragma once
/// The hub's durable copy of every session (`$DATA_DIR/sessions/<session>/`) and of the
/// skill library (`$DATA_DIR/skills/`), and the one rule of reading it: beneath a promoted
/// skill's link (`skills/<name>` → a global skill) the bytes are the library's, read
/// through the store's link row, never by following a symlink in the mirror.
///
/// Stateless apart from the store it reads; every method is thread-safe.
#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "meshhub/concepts.hpp"
#include "meshhub/error.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/store/records.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub {

/// The mirror of every session, over the store's current versions.
template <version_store Store>
class mirror {
 public:
  mirror(std::filesystem::path data_dir, const Store& store)
      : data_dir_(std::move(data_dir)), sessions_root_(data_dir_ / "sessions"), store_(store) {}

  /// A session's folder — or, for the library session, the library itself.
  [[nodiscard]] workspace of(std::string_view session) const {
    if (is_library_session(session)) return workspace(data_dir_ / "skills", false);
    return workspace(data_dir_ / "sessions" / std::string(session));
  }

  /// The folder that holds every session's folder.
  [[nodiscard]] const workspace& sessions_root() const noexcept { return sessions_root_; }

  /// `(global name, rest)` when `path` lies beneath `skills/<name>/` and the session's
  /// `skills/<name>` is a link into the library.
  [[nodiscard]] std::optional<std::pair<std::string, std::string>> beneath_promoted_skill(std::string_view session,
                                                                                          std::string_view path) const {
    auto beneath = beneath_skill_link(path);
    if (!beneath) return std::nullopt;
    auto rec = store_.file(session, "skills/" + beneath->first);
    if (!rec || rec->deleted || rec->link.empty()) return std::nullopt;
    return std::pair{rec->link, std::move(beneath->second)};
  }

  /// A promoted skill is shared by every session that links it, so it is read-only from
  /// each: a new version is a new folder, promoted again (docs/skills.md).
  void refuse_beneath_promoted_skill(std::string_view session, std::string_view path) const {
    if (auto promoted = beneath_promoted_skill(session, path))
      throw error(errc::permission_denied, "'" + std::string(path) + "' is in the promoted skill '" + promoted->first +
                                               "', shared by every session linking it: write a new version into a new "
                                               "folder and promote it");
  }

  /// Whether `path` of `session` is a folder in the mirror (a file or link put there must
  /// first have what the folder holds removed).
  [[nodiscard]] bool is_folder(std::string_view session, std::string_view path) const {
    auto [parent, leaf] = detail::split_parent(path);
    try {
      const auto dir = of(session).open_folder(parent, false);
      struct stat st {};
      return ::fstatat(dir.get(), std::string(leaf).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    } catch (const error&) {
      return false;  // no such folder above it, so no folder at it
    }
  }

  /// A symlink's path holds nothing beneath it: a write there would go through the link
  /// (or be refused by the workspace) and leave the mirror and the store apart.
  void refuse_beneath_symlink(std::string_view session, std::string_view path) const {
    for (auto slash = path.find('/'); slash != std::string_view::npos; slash = path.find('/', slash + 1)) {
      const auto folder = path.substr(0, slash);
      if (auto rec = store_.file(session, folder); rec && !rec->deleted && !rec->symlink.empty())
        throw error(errc::invalid_argument, "'" + std::string(path) + "' lies beneath the symlink '" + std::string(folder) +
                                                "' -> '" + rec->symlink + "': remove the link first to make it a folder");
    }
  }

  /// Opens the bytes of a session path as they are now: from the mirror, or beneath a
  /// promoted skill from the library's copy.
  [[nodiscard]] unique_fd open_version(std::string_view session, std::string_view path) const {
    if (auto promoted = beneath_promoted_skill(session, path))
      return of(library_session).open_read(promoted->first + "/" + promoted->second);
    return of(session).open_read(path);
  }

  /// Finishes publishing a journaled wave (renames its temp file into place, or unlinks a
  /// removal). False when its temp file is gone — the rename had happened.
  bool publish_staged(const wave_record& w) const {
    auto ws = of(w.session);
    if (w.deleted) {
      ws.remove(w.path);
      return true;
    }
    return !w.staged.empty() && ws.finish_staged(w.path, w.staged);
  }

 private:
  std::filesystem::path data_dir_;
  workspace sessions_root_;
  const Store& store_;
};

}  // namespace meshhub
