#pragma once
/// The global skill library: agents write reusable skills into their session workspace
/// (`skills/<name>/SKILL.md` plus files); *promotion* moves such a folder out of the hub's
/// mirror of the session (`$DATA_DIR/sessions/<S>/skills/<name>`) into the library
/// (`$DATA_DIR/skills/<global name>`) and leaves a relative symlink in its place, so every
/// session that wrote the same skill shares one copy. It exists apart from the hub because
/// several hub processes may share one `$DATA_DIR`: promotion runs under an interprocess lock
/// keyed by the skill name and keeps its own journal in the store, so a promoter killed at
/// any step is completed or rolled back by the next one (or by the next start).
///
/// One promotion of `skills/<name>` of session S, under the lock of `<name>`; every step is
/// durable (fsync of the folders it changed) before its failpoint:
///
/// | step | on disk afterwards | failpoint |
/// |---|---|---|
/// | 1. journal: the store records (id, S, name, digest, target global name), `begun` | nothing moved | `skill_journaled` |
/// | 2. stage: rename the session's folder to `$DATA_DIR/skills/.staging-<id>` | the bytes, under a name nobody reads | `skill_staged` |
/// | 3. publish: rename staging to `skills/<target>` — or, when the target already holds this content, remove the staging copy | the library holds the skill | `skill_published` |
/// | 4. link: symlink `sessions/S/skills/<name>` → `../../../skills/<target>` (made as `.meshhub-tmp-skill-<id>`, then renamed; a crash's leftover is a temp name the hub's sweep may remove, and recovery makes it again) | the session sees the library's copy | `skill_linked` |
/// | 5. record: the row is `done`; the global skill and the link are recorded, atomically | — | — |
///
/// The target: `<name>` when the library has no such skill, or has one with the same digest
/// (then only link). Other content under `<name>` → `<name>@<first 12 hex of the digest>`,
/// both kept, a *conflict*; never an overwrite (renames refuse to replace: RENAME_NOREPLACE).
/// The digest of a folder is `scan(workspace(folder)).root()` (manifest.hpp): the paths,
/// sizes and content digests of its regular files; empty folders and symlinks inside a skill
/// move with it but are not part of its identity.
///
/// Recovery (`recover()` at start; and `promote(…, name)` first finishes `name`'s unfinished
/// rows under the same lock, so a live promoter completes what a killed one began). Per
/// `begun` row, by what is on disk — roll forward whenever the bytes are safe outside the
/// session folder, roll back when nothing moved:
///
/// | staging | session's `skills/<name>` | then |
/// |---|---|---|
/// | present | — | the row's target holds every file of it (same size and content): it is a redundant copy, or what an interrupted removal left of one — remove it. Otherwise publish it, the target chosen again by its own digest (journaled first), so bytes written after the digest was taken are kept, never dropped. Then link if the session path is free and finish; if the path was taken again, abandon (the copy stays published) |
/// | absent | our symlink | finish (only the record was missing) |
/// | absent | absent, target present | link, finish |
/// | absent | the folder | abandon: nothing moved (the folder stays) |
/// | absent | absent, target absent | abandon, said in the outcome: the files are nowhere this library put them (removed by hand) |
///
/// Writes into a promoted skill: afterwards the session path `skills/<name>` is a symlink.
/// The hub resolves every path with no symlink followed (workspace.hpp), so a write beneath
/// `skills/<name>/` is refused rather than reaching the shared copy; the library's copy is
/// immutable. A new version of a skill is a new promotion: the agent writes a *folder* again
/// (after removing the link), and promoting it with the same name and different content
/// keeps it as `<name>@<digest>`.
///
/// Requirements on the caller: nothing writes beneath the session's `skills/<name>` while it
/// is promoted (the hub promotes under the session's write lock), and every process sharing
/// the data dir promotes through this class with an excluding lock policy. `null_lock`
/// excludes nothing: one thread of one process only.
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "meshhub/concepts.hpp"
#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/error.hpp"
#include "meshhub/failpoint.hpp"
#include "meshhub/manifest.hpp"
#include "meshhub/path.hpp"
#include "meshhub/skill/link.hpp"
#include "meshhub/store/records.hpp"
#include "meshhub/workspace.hpp"

namespace meshhub {

/// What one `promote` did.
enum class promotion_kind {
  promoted,        ///< the folder became the global skill `<name>`
  linked,          ///< the library held this content already (`<name>`, or `<name>@<hex>` when
                   ///< `<name>` differs): the session's copy was dropped and linked to it
  conflict,        ///< `<name>` holds other content: the folder became `<name>@<12 hex>`, both kept
  already_linked,  ///< the session path was a link into the library already: nothing changed
};

[[nodiscard]] constexpr std::string_view to_string(promotion_kind k) {
  switch (k) {
    case promotion_kind::promoted: return "promoted";
    case promotion_kind::linked: return "linked";
    case promotion_kind::conflict: return "conflict";
    case promotion_kind::already_linked: return "already_linked";
  }
  return "unknown";
}

/// The answer of `promote`. `global_name != name` says the session's skill differs from the
/// library's `<name>` (a conflict now, or linked to the copy an earlier conflict kept).
struct promotion_result {
  promotion_kind kind{};
  std::string global_name;           ///< the folder in `$DATA_DIR/skills/` the session links to
  digest content{};                  ///< the skill folder's digest
  std::string detail;                ///< for a person: what happened, and what recovery finished first
  std::uint64_t promotion_id = 0;    ///< the journal row (0 for already_linked)
};

/// What `recover` did with one unfinished promotion.
struct recovery_outcome {
  skill_promotion_record promotion;  ///< as it ended: done or abandoned
  std::string detail;                ///< which rule applied
};

/// The lock a library makes for a skill name when given no factory: a policy constructible
/// from (key, lease dir) — `named_mutex_lock` — gets `(name, data_dir/"locks")`; any other
/// policy is default-constructed.
template <lock_policy Lock>
[[nodiscard]] std::unique_ptr<Lock> make_skill_lock(std::string_view name, const std::filesystem::path& data_dir) {
  if constexpr (std::is_constructible_v<Lock, std::string_view, const std::filesystem::path&>) {
    return std::make_unique<Lock>(name, data_dir / "locks");
  } else {
    static_assert(std::default_initializable<Lock>, "give skill_library a lock factory for this lock policy");
    return std::make_unique<Lock>();
  }
}

namespace detail {

/// renameat2(RENAME_NOREPLACE): fails with EEXIST rather than replace the target. Where the
/// filesystem cannot refuse (EINVAL), looks first — callers hold the skill's lock.
inline int rename_noreplace(int from_dir, const std::string& from, int to_dir, const std::string& to) {
  if (::renameat2(from_dir, from.c_str(), to_dir, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return -1;
  struct stat st {};
  if (::fstatat(to_dir, to.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    errno = EEXIST;
    return -1;
  }
  return ::renameat(from_dir, from.c_str(), to_dir, to.c_str());
}

}  // namespace detail

/// The global skill library on one data dir: promotes session skill folders into
/// `$DATA_DIR/skills/`, under one `Lock` per skill name, journaling in `Store`.
/// Thread-safe for every policy that excludes threads (not `null_lock`); several processes
/// may share the data dir and the store when `Lock` excludes processes (`named_mutex_lock`).
template <lock_policy Lock, skill_journal Store>
class skill_library {
 public:
  using lock_type = Lock;
  using store_type = Store;
  /// Makes the lock of one skill name. The library keeps each lock while a promotion of
  /// that name uses it, and afterwards among at most `max_idle_locks` idle ones (a
  /// `named_mutex_lock` holds a descriptor and a semaphore mapping: one per skill name
  /// forever would exhaust descriptors). Threads promoting one name at once share one object.
  using lock_factory = std::function<std::unique_ptr<Lock>(std::string_view name)>;

  /// Idle locks kept for reuse by default; any value ≥ 0 is safe (0 makes a lock per promotion).
  static constexpr std::size_t default_max_idle_locks = 64;

  /// A library on `data_dir` (created, with `skills/`, when missing) with the default locks
  /// (`make_skill_lock`). `store` must outlive the library.
  skill_library(std::filesystem::path data_dir, Store& store)
      : skill_library(data_dir, store, [data_dir](std::string_view name) { return make_skill_lock<Lock>(name, data_dir); }) {}

  /// A library whose lock per skill name comes from `make_lock`.
  skill_library(std::filesystem::path data_dir, Store& store, lock_factory make_lock,
                std::size_t max_idle_locks = default_max_idle_locks)
      : data_dir_(std::move(data_dir)), data_(data_dir_), store_(store), make_lock_(std::move(make_lock)),
        max_idle_locks_(max_idle_locks), skills_(data_.open_folder("skills", true)) {}

  skill_library(const skill_library&) = delete;
  skill_library& operator=(const skill_library&) = delete;

  [[nodiscard]] const std::filesystem::path& data_dir() const noexcept { return data_dir_; }
  [[nodiscard]] Store& store() const noexcept { return store_; }

  /// Promotes `sessions/<session>/skills/<name>` (see the table at the top of this header).
  /// Throws `errc::invalid_argument` for a bad session or skill name (`name_problem`) or a
  /// session path that is neither a folder nor this library's link, `errc::not_found` when
  /// the session folder or `skills/<name>/SKILL.md` (a regular file) is missing — and then
  /// nothing changed. A failure after step 1 leaves the promotion journaled: the next
  /// `promote` of `name`, or `recover()`, completes it.
  promotion_result promote(std::string_view session, std::string_view name) {
    check_session_name(session);
    check_skill_name(name);
    const lock_use use(*this, name);
    std::lock_guard hold(use.lock());
    const auto recovered = recover_locked(name);
    auto result = promote_locked(std::string(session), std::string(name));
    for (auto& r : recovered)
      result.detail += "; first finished interrupted promotion #" + std::to_string(r.promotion.id) + " (" + r.detail + ")";
    return result;
  }

  /// Completes or rolls back every unfinished promotion in the journal, each under its
  /// skill's lock. The hub calls it at start; it is idempotent. A row it cannot settle
  /// safely (an I/O error, or both `<name>` and `<name>@<hex>` holding other content) is
  /// left `begun`, its files untouched, and reported with the reason: one odd skill does
  /// not stop a start, and `promote` of that name refuses until the row is settled.
  std::vector<recovery_outcome> recover() {
    std::set<std::string> names;
    for (auto& p : store_.unfinished_skill_promotions("")) names.insert(p.name);
    std::vector<recovery_outcome> out;
    for (auto& n : names) {
      const lock_use use(*this, n);
      std::lock_guard hold(use.lock());
      for (auto& p : store_.unfinished_skill_promotions(n)) {
        try {
          out.push_back(recover_one(p));
        } catch (const std::exception& e) {
          out.push_back({p, std::string("left unfinished, nothing removed: ") + e.what()});
        }
      }
    }
    return out;
  }

  /// The global library as the store records it, each skill with the sessions linking it
  /// (what `meshhub skill ls` shows).
  [[nodiscard]] std::vector<global_skill_record> skills() const { return store_.global_skills(); }

  /// How many lock objects the library holds now (in use or idle).
  [[nodiscard]] std::size_t locks_held() const {
    std::lock_guard g(locks_mu_);
    return locks_.size();
  }

  /// The name a conflicting copy is kept under: `<name>@<first 12 hex digits of its digest>`.
  [[nodiscard]] static std::string versioned_name(std::string_view name, const digest& content) {
    return std::string(name) + "@" + to_hex(content).substr(0, 12);
  }
  /// What the session's `skills/<name>` symlink says: relative, so a data dir can move.
  [[nodiscard]] static std::string link_target(std::string_view global_name) {
    return "../../../skills/" + std::string(global_name);
  }
  /// Where named_mutex_lock's lease files live (`named_mutex_lock::remove(name, lock_dir(d))`).
  [[nodiscard]] static std::filesystem::path lock_dir(const std::filesystem::path& data_dir) { return data_dir / "locks"; }
  /// The staging folder of promotion `id`, in `$DATA_DIR/skills/`.
  [[nodiscard]] static std::string staging_name(std::uint64_t id) { return ".staging-" + std::to_string(id); }

  /// A skill name follows the session-name rule (`name_problem`): one path component that
  /// cannot be `.`, `..`, hidden, or contain '@' (so no name looks like a kept conflict).
  static void check_skill_name(std::string_view name) {
    if (auto why = name_problem(name, "skill name"); !why.empty())
      throw error(errc::invalid_argument, "invalid skill name " + detail::quoted(name) + ": " + why);
  }

  /// The digest of the folder `rel` beneath the data dir: `scan(workspace(folder)).root()`,
  /// computed through the data dir's fd so no symlink is followed on the way.
  [[nodiscard]] digest folder_digest(const std::string& rel) const { return folder_manifest(rel).root(); }

 private:
  struct lock_entry {
    std::unique_ptr<Lock> lock;
    std::size_t users = 0;
    std::uint64_t last_used = 0;
  };

  /// One use of a skill name's lock: the entry lives (is not evicted) until this ends.
  class lock_use {
   public:
    lock_use(skill_library& library, std::string_view name) : library_(library) {
      std::lock_guard g(library_.locks_mu_);
      auto it = library_.locks_.find(name);
      if (it == library_.locks_.end()) it = library_.locks_.emplace(std::string(name), lock_entry{library_.make_lock_(name)}).first;
      ++it->second.users;
      entry_ = it;
    }
    ~lock_use() {
      std::lock_guard g(library_.locks_mu_);
      --entry_->second.users;
      entry_->second.last_used = ++library_.lock_clock_;
      library_.evict_idle_locks();
    }
    lock_use(const lock_use&) = delete;
    lock_use& operator=(const lock_use&) = delete;
    [[nodiscard]] Lock& lock() const { return *entry_->second.lock; }

   private:
    skill_library& library_;
    typename std::map<std::string, lock_entry, std::less<>>::iterator entry_;
  };

  /// Drops the least recently used idle locks beyond `max_idle_locks_` (caller holds locks_mu_).
  void evict_idle_locks() {
    for (;;) {
      std::size_t idle = 0;
      auto oldest = locks_.end();
      for (auto it = locks_.begin(); it != locks_.end(); ++it) {
        if (it->second.users != 0) continue;
        ++idle;
        if (oldest == locks_.end() || it->second.last_used < oldest->second.last_used) oldest = it;
      }
      if (idle <= max_idle_locks_) return;
      locks_.erase(oldest);
    }
  }

  /// The manifest of the folder `rel` beneath the data dir, its paths relative to it.
  [[nodiscard]] manifest folder_manifest(const std::string& rel) const {
    const auto m = scan(data_, rel);
    std::vector<manifest_entry> entries;
    entries.reserve(m.entries().size());
    for (const auto& e : m.entries()) {
      auto copy = e;
      copy.path.erase(0, rel.size() + 1);
      entries.push_back(std::move(copy));
    }
    return manifest(std::move(entries));
  }

  /// Every file of the folder `part` is in the folder `whole` with the same size and
  /// content: `part` is a copy of `whole`, or what an interrupted removal left of one.
  [[nodiscard]] bool holds_all_of(const std::string& whole, const std::string& part) const {
    const auto d = folder_manifest(whole).diff(folder_manifest(part));
    return d.extra.empty() && d.changed.empty();
  }

  struct target_choice {
    std::string global_name;
    bool exists = false;  ///< the library holds it already, with the same digest
  };

  static std::string skill_rel(const std::string& session, const std::string& name) {
    return "sessions/" + session + "/skills/" + name;
  }

  /// The session's `skills/` folder, or an empty fd when it (or the session) is missing.
  unique_fd session_skills(const std::string& session, bool must_exist) const {
    unique_fd s;
    try {
      s = data_.open_folder("sessions/" + session, false);
    } catch (const error& e) {
      if (e.code() != errc::not_found || must_exist)
        throw error(e.code(), "session '" + session + "': its mirror folder " +
                                  (e.code() == errc::not_found ? "does not exist" : std::string("cannot be opened: ") + e.what()));
      return {};
    }
    unique_fd skills(::openat(s.get(), "skills", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!skills && must_exist) {
      if (errno == ENOENT) throw error(errc::not_found, "session '" + session + "' has no skills/ folder");
      throw_errno("open skills/ of session '" + session + "'", errno);
    }
    return skills;
  }

  /// The global name the session's symlink `name` points to, if it is one this library
  /// makes (`../../../skills/<name>[@<12 hex>]`) and that folder exists.
  std::optional<std::string> our_link(int session_skills_fd, const std::string& name) const {
    const auto text = detail::link_text(session_skills_fd, name);
    const std::string prefix = link_target("");
    if (!text || !text->starts_with(prefix)) return std::nullopt;
    const std::string global = text->substr(prefix.size());
    if (!is_global_skill_name(name, global)) return std::nullopt;
    if (detail::entry_at(skills_.get(), global) != detail::entry_kind::folder) return std::nullopt;
    return global;
  }

  /// Where content `d` of skill `name` goes: `<name>` if free or equal, else
  /// `<name>@<hex>` if free or equal. Both taken by other content (12 hex digits equal,
  /// the rest not): refused, nothing changed.
  target_choice choose_target(const std::string& name, const digest& d) const {
    const auto plain = detail::entry_at(skills_.get(), name);
    if (plain == detail::entry_kind::absent) return {name, false};
    if (plain == detail::entry_kind::folder && folder_digest("skills/" + name) == d) return {name, true};
    const auto versioned = versioned_name(name, d);
    const auto v = detail::entry_at(skills_.get(), versioned);
    if (v == detail::entry_kind::absent) return {versioned, false};
    if (v == detail::entry_kind::folder && folder_digest("skills/" + versioned) == d) return {versioned, true};
    throw error(errc::already_exists, "skills/" + versioned + " exists with other content than skill '" + name +
                                          "' (" + to_hex(d) + "); nothing was changed");
  }

  void sync_skills() const { detail::fsync_or_throw(skills_.get(), "the skills folder"); }

  /// Step 3: the bytes staged for `p` end up under `p.global_name`.
  void publish(const skill_promotion_record& p, bool target_exists) {
    const auto staging = staging_name(p.id);
    if (target_exists) {
      detail::remove_tree(skills_.get(), staging);
    } else if (detail::rename_noreplace(skills_.get(), staging, skills_.get(), p.global_name) != 0) {
      throw_errno("publish skills/" + p.global_name, errno);
    }
    sync_skills();
  }

  /// Step 4: `skills/<name>` of the session becomes a symlink to the library's copy. False
  /// when the path is taken (something was written there since the folder moved).
  bool link(int session_skills_fd, const skill_promotion_record& p) {
    const std::string temp = std::string(reserved_prefix) + "-tmp-skill-" + std::to_string(p.id);
    ::unlinkat(session_skills_fd, temp.c_str(), 0);  // a crash's leftover
    if (::symlinkat(link_target(p.global_name).c_str(), session_skills_fd, temp.c_str()) != 0)
      throw_errno("create the link of skill '" + p.name + "' in session '" + p.session + "'", errno);
    if (detail::rename_noreplace(session_skills_fd, temp, session_skills_fd, p.name) != 0) {
      const int err = errno;
      ::unlinkat(session_skills_fd, temp.c_str(), 0);
      if (err == EEXIST) return false;
      throw_errno("link skill '" + p.name + "' into session '" + p.session + "'", err);
    }
    detail::fsync_or_throw(session_skills_fd, "skills/ of session '" + p.session + "'");
    return true;
  }

  promotion_result promote_locked(const std::string& session, const std::string& name) {
    auto sk = session_skills(session, true);
    const std::string rel = skill_rel(session, name);
    const std::string where = "session '" + session + "': skills/" + name;
    switch (detail::entry_at(sk.get(), name)) {
      case detail::entry_kind::absent: throw error(errc::not_found, where + " does not exist");
      case detail::entry_kind::other: throw error(errc::invalid_argument, where + " is not a folder; nothing was changed");
      case detail::entry_kind::symlink: {
        const auto global = our_link(sk.get(), name);
        if (!global)
          throw error(errc::invalid_argument, where + " is a symlink this library did not make; nothing was changed");
        return {promotion_kind::already_linked, *global, folder_digest("skills/" + *global),
                "already a link to skills/" + *global, 0};
      }
      case detail::entry_kind::folder: break;
    }
    {
      unique_fd folder(::openat(sk.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      struct stat st {};
      if (!folder || ::fstatat(folder.get(), "SKILL.md", &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        throw error(errc::not_found, where + "/SKILL.md is not a regular file; nothing was changed");
    }
    const digest content = folder_digest(rel);
    const auto target = choose_target(name, content);
    const auto kind = target.exists                 ? promotion_kind::linked
                      : target.global_name == name ? promotion_kind::promoted
                                                   : promotion_kind::conflict;

    // 1. journal
    skill_promotion_record p{0, session, name, content, target.global_name, skill_promotion_state::begun};
    p.id = store_.begin_skill_promotion(p);
    MESHHUB_FAILPOINT("skill_journaled");

    // 2. stage. A refused rename moved nothing: the row is rolled back at once.
    const auto staging = staging_name(p.id);
    if (detail::rename_noreplace(sk.get(), name, skills_.get(), staging) != 0) {
      const int err = errno;
      store_.abandon_skill_promotion(p.id);
      throw_errno("stage " + where + " as skills/" + staging + " (nothing was changed)", err);
    }
    sync_skills();
    detail::fsync_or_throw(sk.get(), "skills/ of session '" + session + "'");
    MESHHUB_FAILPOINT("skill_staged");

    // 3. publish
    publish(p, target.exists);
    MESHHUB_FAILPOINT("skill_published");

    // 4. link
    if (!link(sk.get(), p))
      throw error(errc::already_exists, where + " was written again while it was promoted; the skill is kept as skills/" +
                                            p.global_name + " and the next promotion of '" + name + "' settles the journal");
    MESHHUB_FAILPOINT("skill_linked");

    // 5. record
    store_.finish_skill_promotion(p.id);
    std::string detail;
    switch (kind) {
      case promotion_kind::promoted: detail = "promoted to skills/" + name; break;
      case promotion_kind::linked: detail = "identical to skills/" + p.global_name + ": the session's copy was replaced by a link"; break;
      case promotion_kind::conflict:
        detail = "skills/" + name + " holds other content: both kept, this one as skills/" + p.global_name;
        break;
      case promotion_kind::already_linked: break;
    }
    return {kind, p.global_name, content, std::move(detail), p.id};
  }

  /// `name`'s unfinished rows, before a new promotion of it: one that cannot be settled
  /// refuses the promotion (the journal must be settled before the disk changes again).
  std::vector<recovery_outcome> recover_locked(std::string_view name) {
    std::vector<recovery_outcome> out;
    for (auto& p : store_.unfinished_skill_promotions(name)) {
      try {
        out.push_back(recover_one(p));
      } catch (const error& e) {
        throw error(e.code(), "skill '" + std::string(name) + "': interrupted promotion #" + std::to_string(p.id) +
                                  " cannot be finished, so no new one starts: " + e.what());
      }
    }
    return out;
  }

  /// One begun row, by what is on disk (the table at the top of this header).
  recovery_outcome recover_one(skill_promotion_record p) {
    auto ended = [&](bool done, std::string detail) {
      if (done) {
        store_.finish_skill_promotion(p.id);
        p.state = skill_promotion_state::done;
      } else {
        store_.abandon_skill_promotion(p.id);
        p.state = skill_promotion_state::abandoned;
      }
      return recovery_outcome{p, std::move(detail)};
    };
    if (!name_problem(p.session).empty() || !name_problem(p.name, "skill name").empty() || !is_global_skill_name(p.name, p.global_name))
      return ended(false, "rolled back: not a promotion this library journals (its names are refused)");

    auto sk = session_skills(p.session, false);
    const auto in_session = sk ? detail::entry_at(sk.get(), p.name) : detail::entry_kind::other;
    const auto staging = staging_name(p.id);

    if (detail::entry_at(skills_.get(), staging) == detail::entry_kind::folder) {
      std::string how;
      if (detail::entry_at(skills_.get(), p.global_name) == detail::entry_kind::folder &&
          holds_all_of("skills/" + p.global_name, "skills/" + staging)) {
        publish(p, true);  // a copy of what the library holds, or part of one: removal was interrupted
        how = "the library held it already; the staged copy was removed";
      } else {
        const digest staged = folder_digest("skills/" + staging);
        const auto target = choose_target(p.name, staged);
        if (target.global_name != p.global_name || staged != p.content) {
          store_.retarget_skill_promotion(p.id, target.global_name, staged);  // journal before the disk changes
          p.global_name = target.global_name;
          p.content = staged;
        }
        publish(p, target.exists);
        how = target.exists ? "identical to skills/" + p.global_name + "; the staged copy was removed"
                            : "the staged copy was published as skills/" + p.global_name;
      }
      if (in_session == detail::entry_kind::absent && link(sk.get(), p)) return ended(true, "rolled forward: " + how + ", then linked");
      if (in_session == detail::entry_kind::symlink && our_link(sk.get(), p.name) == p.global_name)
        return ended(true, "rolled forward: " + how + "; the session linked to it already");
      return ended(false, how + "; the session path is taken or gone, so it was not linked");
    }
    if (in_session == detail::entry_kind::symlink) {
      if (const auto global = our_link(sk.get(), p.name)) {
        if (*global != p.global_name) {
          p.global_name = *global;
          p.content = folder_digest("skills/" + *global);
          store_.retarget_skill_promotion(p.id, p.global_name, p.content);
        }
        return ended(true, "rolled forward: linked to skills/" + p.global_name + "; only the record was missing");
      }
      return ended(false, "rolled back: the session path is a symlink this library did not make");
    }
    if (in_session == detail::entry_kind::absent) {
      if (detail::entry_at(skills_.get(), p.global_name) == detail::entry_kind::folder) {
        const digest published = folder_digest("skills/" + p.global_name);
        if (published != p.content) {
          store_.retarget_skill_promotion(p.id, p.global_name, published);
          p.content = published;
        }
        if (link(sk.get(), p)) return ended(true, "rolled forward: published as skills/" + p.global_name + ", then linked");
        return ended(false, "published as skills/" + p.global_name + "; the session path was taken, so it was not linked");
      }
      return ended(false, "abandoned: the folder is neither in the session, staged nor published (removed by hand?)");
    }
    if (in_session == detail::entry_kind::folder)
      return ended(false, "rolled back: the session holds the folder (nothing had moved, or it was written again)");
    return ended(false, "rolled back: the session's skills/ folder is gone");
  }

  std::filesystem::path data_dir_;
  workspace data_;
  Store& store_;
  lock_factory make_lock_;
  std::size_t max_idle_locks_;
  detail::unique_fd skills_;  ///< `$DATA_DIR/skills/`
  mutable std::mutex locks_mu_;
  std::map<std::string, lock_entry, std::less<>> locks_;  ///< per skill name, in use or idle
  std::uint64_t lock_clock_ = 0;                          ///< orders idle locks by last use
};

}  // namespace meshhub
