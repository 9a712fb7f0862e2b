#pragma once
/// A node's workspace on disk: `WS/<session>/` per session, `WS/.meshhub/` for the node's
/// own state (`partial/` for resumable transfers, `skills/` for its copy of the skill
/// library, `index.db` for the local index), each session folder opened once and kept.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/error.hpp"
#include "meshhub/path.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub::node {

/// The session folders in `root`: real folders (not symlinks) with valid session names
/// (so never `.meshhub`), unsorted; `ec` says why a listing stopped early.
[[nodiscard]] inline std::vector<std::string> session_folder_names(const std::filesystem::path& root, std::error_code& ec) {
  std::vector<std::string> out;
  for (std::filesystem::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    auto name = it->path().filename().string();
    std::error_code sec;
    if (name_problem(name).empty() && it->symlink_status(sec).type() == std::filesystem::file_type::directory)
      out.push_back(std::move(name));
  }
  return out;
}

/// Thread-safe (one mutex over the map of open folders; a workspace handed out stays valid).
class session_folders {
 public:
  /// Opens (creating) the workspace `root` and its state folders, each new folder fsynced
  /// into its parent.
  explicit session_folders(std::filesystem::path root) : path_(std::move(root)), root_(path_, true) {
    make_state_folder({".meshhub", "skills"});
    make_state_folder({".meshhub", "partial"});
  }

  [[nodiscard]] const std::filesystem::path& root() const noexcept { return path_; }
  [[nodiscard]] std::filesystem::path partial_folder() const { return path_ / ".meshhub" / "partial"; }
  [[nodiscard]] std::filesystem::path index_file() const { return path_ / ".meshhub" / "index.db"; }

  /// The workspace of session `name` (a valid name); nullptr when it has no folder and
  /// `create` is false. A folder deleted under us is opened afresh. The library session's
  /// folder is the node's own (`.meshhub/skills`), never created here.
  std::shared_ptr<workspace> open(const std::string& name, bool create) {
    std::lock_guard lock(mu_);
    if (auto it = open_.find(name); it != open_.end()) {
      struct stat st {};
      if (::fstat(it->second->fd(), &st) == 0 && st.st_nlink > 0) return it->second;
      open_.erase(it);
    }
    const auto folder = node_folder_of(name);
    struct stat st {};
    if (::fstatat(root_.fd(), folder.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) throw_errno("stat session folder '" + folder + "'", errno);
      if (!create || is_library_session(name)) return nullptr;
      (void)root_.open_folder(name, true);  // mkdir + fsync of WS
    } else if (!S_ISDIR(st.st_mode)) {
      throw error(errc::invalid_argument, "the folder of session '" + name + "' is not a folder on this node");
    }
    auto ws = std::make_shared<workspace>(path_ / folder, false);
    return open_.insert_or_assign(name, std::move(ws)).first->second;
  }

  /// The sessions with a folder here: real folders (not symlinks) with valid session names
  /// (so never `.meshhub`), and the library session, whose folder is ours; sorted. A
  /// workspace that cannot be listed lists only the library (`error` says why).
  [[nodiscard]] std::vector<std::string> names(std::error_code* error = nullptr) const {
    std::error_code ec;
    auto out = session_folder_names(path_, ec);
    out.emplace_back(library_session);
    if (error) *error = ec;
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  void make_state_folder(std::initializer_list<const char*> parts) {
    unique_fd at(::dup(root_.fd()));
    if (!at) throw_errno("open workspace", errno);
    for (const char* part : parts) {
      if (::mkdirat(at.get(), part, 0755) == 0) {
        detail::fsync_or_throw(at.get(), "workspace state folder");
      } else if (errno != EEXIST) {
        throw_errno(std::string("create state folder '") + part + "'", errno);
      }
      unique_fd next(::openat(at.get(), part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) throw_errno(std::string("open state folder '") + part + "'", errno);
      at = std::move(next);
    }
  }

  std::filesystem::path path_;
  workspace root_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<workspace>> open_;
};

}  // namespace meshhub::node
