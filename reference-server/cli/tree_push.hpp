#pragma once
/// Pushing a local folder into a session, shared by `meshhub push DIR` (main.cpp) and the
/// MCP server's `push` (mcp.cpp): the plan (the walk, what the session already holds, what
/// to send and remove) and one change set on the wire (a PushTree call). The callers keep
/// their own loop over the sets, their own context per call and their own reporting.
#include <grpcpp/grpcpp.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cli/digest_cache.hpp"
#include "cli/listing.hpp"
#include "cli/tree.hpp"
#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/v1/assistant.grpc.pb.h"

namespace meshhub::cli {

/// Changes per PushTree call: the hub's `max_set_files` by default (each open upload holds
/// two descriptors until its set commits); a larger tree goes as several sets, each whole.
inline constexpr std::size_t tree_set_changes = 4096;
/// A file's bytes travel in pieces this large.
inline constexpr std::size_t tree_piece_bytes = 1u << 20;

/// A push that stopped: `usage` for a mistake in what was asked (a bad PATH or exclude);
/// `status` set when the hub refused or could not be reached (nothing sent otherwise).
struct tree_push_error : std::runtime_error {
  tree_push_error(std::string what, bool usage_error = false, grpc::Status s = grpc::Status::OK)
      : std::runtime_error(std::move(what)), usage(usage_error), status(std::move(s)) {}
  bool usage;
  grpc::Status status;
};

/// What a folder push will do, decided before any byte is sent.
struct tree_plan {
  std::string session, base;  ///< base: the session folder the files land under ("" = the root)
  local_tree tree;
  std::vector<const tree_file*> send;  ///< into `tree.files`
  std::vector<const tree_link*> send_links;  ///< into `tree.links`: new or retargeted symlinks
  /// Relative to base: what --delete removes, and what the tree replaces whatever the
  /// flags (a file or link where the tree has a folder, anything beneath a new link).
  std::vector<std::string> removals;
  std::uint64_t bytes = 0;             ///< of `send`
  std::size_t unchanged = 0;           ///< files the session already holds with this content
  /// Files beneath a promoted skill's link (`skills/<name>` in the session): left out, since
  /// a promoted skill is read-only from sessions (docs/skills.md).
  std::size_t in_promoted_skills = 0;
  digest_cache digests;                ///< the folder's stat cache

  tree_plan() = default;
  tree_plan(const tree_plan&) = delete;  // `send` points into `tree`
  tree_plan& operator=(const tree_plan&) = delete;
};

/// What `session` holds beneath `base`: session path → (size, content digest as the wire
/// carries it) of each file, the text of each symlink, and the promoted skills' links. A
/// folder the session does not have holds nothing, if the session exists.
struct held_tree {
  std::map<std::string, std::pair<std::uint64_t, std::string>> files;
  std::map<std::string, std::string> symlinks;
  std::vector<std::string> links;

  /// The link `path` lies beneath, if any.
  [[nodiscard]] bool beneath_link(const std::string& path) const {
    return std::any_of(links.begin(), links.end(),
                       [&](const std::string& l) { return path.size() > l.size() && path.starts_with(l) && path[l.size()] == '/'; });
  }
};
inline held_tree held_beneath(
    v1::Assistant::Stub& hub, const std::string& session, const std::string& base,
    const std::function<void(grpc::ClientContext&)>& prepare) {
  v1::ListRequest request;
  request.set_session(session);
  request.set_path(base);
  request.set_files_only(true);
  held_tree held;
  const auto status = list_pages(hub, request, prepare, [&held](v1::ListReply& page) {
    for (const auto& f : page.files()) {
      const auto& m = f.mirror();
      if (!m.link().empty()) held.links.push_back(m.path());
      else if (!m.symlink().empty()) held.symlinks[m.path()] = m.symlink();
      else held.files[m.path()] = {m.size(), m.content_digest()};
    }
  });
  if (status.error_code() == grpc::StatusCode::NOT_FOUND && !base.empty()) {
    (void)held_beneath(hub, session, "", prepare);  // throws when the session is what is missing
    return {};
  }
  if (!status.ok()) throw tree_push_error(status.error_message(), false, status);
  return held;
}

/// Walks `dir` (excludes from `exclude_patterns` and DIR/.meshhubignore), asks the hub what
/// the session holds beneath `base`, and decides: files whose size and content digest the
/// session already has are skipped, and so are files beneath a promoted skill's link (the
/// skill is read-only; its link stays); with `delete_missing`, what the session holds beneath
/// `base` that the folder lacks (and no exclude names) is removed. Throws tree_push_error.
inline void plan_tree_push(tree_plan& plan, v1::Assistant::Stub& hub, const std::filesystem::path& dir,
                           const std::vector<std::string>& exclude_patterns, bool delete_missing,
                           const std::function<void(grpc::ClientContext&)>& prepare) {
  auto& base = plan.base;
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (!base.empty())
    if (const auto problem = path_problem(base); !problem.empty())
      throw tree_push_error("PATH '" + base + "': " + problem, true);
  plan.digests = digest_cache(dir);
  exclude_rules excludes;
  try {
    for (const auto& e : exclude_patterns) excludes.add(e, "--exclude");
    excludes.add_file(dir / ignore_file_name);
  } catch (const std::exception& e) {
    throw tree_push_error(e.what(), true);
  }
  try {
    plan.tree = walk_tree(dir, excludes);
  } catch (const std::exception& e) {
    throw tree_push_error(e.what());
  }
  if (!plan.tree.refused.empty()) {
    std::string named;
    const auto& refused = plan.tree.refused;
    for (std::size_t i = 0; i < refused.size() && i < 10; ++i) named += (i ? "; " : "") + refused[i];
    if (refused.size() > 10) named += "; and " + std::to_string(refused.size() - 10) + " more";
    throw tree_push_error("cannot push " + std::to_string(refused.size()) + " path(s) of " + dir.string() + " (" +
                          named + "); exclude them (--exclude, .meshhubignore) or remove them");
  }
  const auto held = held_beneath(hub, plan.session, base, prepare);
  const auto session_path = [&](const std::string& rel) { return base.empty() ? rel : base + "/" + rel; };
  std::set<std::string> local_paths;
  for (const auto& f : plan.tree.files) {
    local_paths.insert(session_path(f.rel));
    if (!held.links.empty() && held.beneath_link(session_path(f.rel))) {
      ++plan.in_promoted_skills;
      continue;
    }
    if (auto it = held.files.find(session_path(f.rel)); it != held.files.end() && it->second.first == f.size) {
      const auto content = plan.digests.content_of(f.rel, f.local, f.stat);
      if (content && to_bytes(*content) == it->second.second) {
        ++plan.unchanged;
        continue;
      }
    }
    plan.send.push_back(&f);
    plan.bytes += f.size;
  }
  for (const auto& l : plan.tree.links) {
    const auto path = session_path(l.rel);
    local_paths.insert(path);
    if (!held.links.empty() && held.beneath_link(path)) {
      ++plan.in_promoted_skills;
      continue;
    }
    if (auto it = held.symlinks.find(path); it != held.symlinks.end() && it->second == l.target) {
      ++plan.unchanged;
      continue;
    }
    plan.send_links.push_back(&l);
  }
  plan.digests.save();

  // What the session holds that the tree replaces: a file or link where the tree has a
  // folder, and whatever lies beneath a path where the tree has a file or a link. Removed
  // whatever the flags: the new entries cannot land beside them.
  std::set<std::string> folders, removed;  // session paths
  for (const auto& path : local_paths)
    for (auto slash = path.find('/', base.empty() ? 0 : base.size() + 1); slash != std::string::npos; slash = path.find('/', slash + 1))
      folders.insert(path.substr(0, slash));
  const auto remove = [&](const std::string& path) {
    if (removed.insert(path).second) plan.removals.push_back(base.empty() ? path : path.substr(base.size() + 1));
  };
  const auto held_paths = [&](auto&& each) {
    for (const auto& [path, info] : held.files) each(path);
    for (const auto& [path, text] : held.symlinks) each(path);
  };
  held_paths([&](const std::string& path) {
    if (folders.contains(path)) remove(path);
  });
  const auto remove_beneath = [&](const auto& held_map, const std::string& folder) {
    for (auto it = held_map.lower_bound(folder); it != held_map.end() && it->first.starts_with(folder); ++it) remove(it->first);
  };
  for (const auto& path : local_paths) {
    remove_beneath(held.files, path + "/");
    remove_beneath(held.symlinks, path + "/");
  }
  if (delete_missing)
    held_paths([&](const std::string& path) {
      const auto rel = base.empty() ? path : path.substr(base.size() + 1);
      if (!local_paths.contains(path) && !excludes.excludes_path(rel)) remove(path);
    });
  std::sort(plan.removals.begin(), plan.removals.end());
  if (plan.removals.size() > tree_set_changes)
    throw tree_push_error("the push would remove " + std::to_string(plan.removals.size()) +
                          " paths, more than one change set holds (" + std::to_string(tree_set_changes) + ")");
}

/// The plan's change sets, in path order: each at most `tree_set_changes` changes; the
/// removals travel with the last, so a tree never loses files before the new ones land —
/// except what must go before the new entries can land (a file or link the session holds
/// where the tree has a folder, anything beneath a new file or link): those removals go
/// first, in a set of their own (the hub cannot stage a file beneath a file, nor rename
/// one over a folder that holds files).
struct tree_set {
  std::vector<const tree_file*> files;
  std::vector<const tree_link*> links;
  std::vector<std::string> removals;
  [[nodiscard]] std::size_t size() const noexcept { return files.size() + links.size() + removals.size(); }
};
inline std::vector<tree_set> tree_sets(const tree_plan& plan) {
  std::vector<tree_set> sets;
  std::set<std::string> folders;  // every folder a file or link to send lies beneath
  const auto add_folders = [&](const std::string& rel) {
    for (auto slash = rel.find('/'); slash != std::string::npos; slash = rel.find('/', slash + 1)) folders.insert(rel.substr(0, slash));
  };
  for (const auto* f : plan.send) add_folders(f->rel);
  for (const auto* l : plan.send_links) add_folders(l->rel);
  std::set<std::string> sent;  // every file and link to send
  for (const auto* f : plan.send) sent.insert(f->rel);
  for (const auto* l : plan.send_links) sent.insert(l->rel);
  const auto beneath_sent = [&](const std::string& r) {
    for (auto slash = r.find('/'); slash != std::string::npos; slash = r.find('/', slash + 1))
      if (sent.contains(r.substr(0, slash))) return true;
    return false;
  };
  std::vector<std::string> later;
  tree_set clearing;
  for (const auto& r : plan.removals) (folders.contains(r) || beneath_sent(r) ? clearing.removals : later).push_back(r);
  if (!clearing.removals.empty()) sets.push_back(std::move(clearing));
  const std::size_t first = sets.size();  // the sets of new entries start here
  for (std::size_t at = 0; at < plan.send.size(); at += tree_set_changes) {
    const auto end = std::min(plan.send.size(), at + tree_set_changes);
    sets.push_back({{plan.send.begin() + static_cast<std::ptrdiff_t>(at), plan.send.begin() + static_cast<std::ptrdiff_t>(end)}, {}, {}});
  }
  for (const auto* l : plan.send_links) {
    if (sets.size() == first || sets.back().size() >= tree_set_changes) sets.emplace_back();
    sets.back().links.push_back(l);
  }
  if (later.empty()) return sets;
  if (sets.size() == first || sets.back().size() + later.size() > tree_set_changes) sets.emplace_back();
  sets.back().removals = std::move(later);
  return sets;
}

/// The hub took `set`: each file's digest (as the hub computed it over the bytes sent)
/// goes into the stat cache with the stat the walk saw, so the next push reads none of
/// them. A file changed after the walk has another stat then, and is read again.
inline void remember_sent(tree_plan& plan, const tree_set& set, const v1::TreeReply& reply) {
  std::map<std::string, const std::string*> digests;  // session path → its digest on the wire
  for (const auto& c : reply.changes())
    if (!c.content_digest().empty()) digests[c.path()] = &c.content_digest();
  for (const auto* f : set.files) {
    const auto it = digests.find(plan.base.empty() ? f->rel : plan.base + "/" + f->rel);
    if (it != digests.end() && it->second->size() == digest{}.size()) plan.digests.remember(f->rel, f->stat, digest_from_bytes(*it->second));
  }
  plan.digests.save();
}

/// One PushTree call carrying `set`: header, then each file and its bytes (`sent(n)` after
/// each piece), then each symlink. A file that changes while read cancels the call (the hub commits nothing of
/// the set) and throws tree_push_error; the hub's refusal comes back as the status.
inline grpc::Status push_tree_set(v1::Assistant::Stub& hub, grpc::ClientContext& context, tree_plan& plan,
                                  const tree_set& set, bool wait_all, std::uint32_t timeout_ms,
                                  const std::function<void(std::uint64_t)>& sent, v1::TreeReply& reply) {
  const auto writer = hub.PushTree(&context, &reply);
  v1::TreeRequest request;
  auto& header = *request.mutable_header();
  header.set_session(plan.session);
  header.set_path(plan.base);
  header.set_wait_all(wait_all);
  header.set_timeout_ms(timeout_ms);
  for (const auto& r : set.removals) header.add_remove(r);
  bool open = writer->Write(request);
  for (const auto* f : set.files) {
    if (!open) break;
    request.Clear();
    request.mutable_file()->set_path(f->rel);
    request.mutable_file()->set_size(static_cast<std::int64_t>(f->size));
    open = writer->Write(request);
    std::string failure;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> in{std::fopen(f->local.c_str(), "rb"), std::fclose};
    std::uint64_t done = 0;
    if (!in) failure = "cannot read " + f->local.string() + ": " + std::strerror(errno);
    while (in && open && failure.empty()) {
      request.Clear();
      std::string& piece = *request.mutable_data();
      piece.resize(tree_piece_bytes);
      const std::size_t got = std::fread(piece.data(), 1, piece.size(), in.get());
      piece.resize(got);
      if (got == 0) break;
      done += got;
      if (done > f->size) break;
      open = writer->Write(request);
      sent(got);
    }
    if (failure.empty() && open && (std::ferror(in.get()) || done != f->size))
      failure = f->local.string() + " changed while it was being read";
    if (!failure.empty()) {
      context.TryCancel();  // tells the hub to commit nothing of this set
      (void)writer->Finish();
      throw tree_push_error(failure + "; the push was cancelled, nothing of this change set was changed");
    }
  }
  for (const auto* l : set.links) {
    if (!open) break;
    request.Clear();
    request.mutable_file()->set_path(l->rel);
    request.mutable_file()->set_symlink(l->target);
    open = writer->Write(request);
  }
  if (open) writer->WritesDone();
  auto status = writer->Finish();
  if (status.ok()) remember_sent(plan, set, reply);
  return status;
}

/// Files and removals the replies report, and the members (and, after a wait, those
/// missing any change).
struct tree_outcome {
  std::size_t files = 0, removed = 0;
  std::set<std::string> members, missing;
};
inline tree_outcome outcome_of(const std::vector<v1::TreeReply>& replies) {
  tree_outcome out;
  for (const auto& r : replies) {
    for (const auto& c : r.changes()) (c.content_digest().empty() ? out.removed : out.files) += 1;
    out.members.insert(r.members().begin(), r.members().end());
    out.missing.insert(r.missing().begin(), r.missing().end());
  }
  return out;
}

}  // namespace meshhub::cli
