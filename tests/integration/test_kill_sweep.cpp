/// The kill sweep: the main proof of "an acknowledged change is never lost, and after any
/// crash every member converges". A driver thread changes one session through the CLI —
/// small and large pushes, overwrites, removals, folder pushes — while the test SIGKILLs the hub at seeded
/// random moments and restarts it on the same data dir and port (the nodes reconnect by
/// themselves). After each crash it checks the store file (`PRAGMA integrity_check`) and the
/// mirror against every change the CLI acknowledged; after a restart, that the nodes
/// converge on the mirror byte for byte, that no wave stays pending and no temp file is left.
/// A second case crashes the hub exactly at each named failpoint of the write path
/// (include/meshhub/failpoint.hpp) and checks the same.
///
/// The model: per path, the set of contents the mirror may hold. An acknowledged change
/// makes it exactly that change; a change whose CLI failed (in flight at the crash) adds
/// itself as a possibility, whole or not at all; a change the CLI reported as "nothing was
/// changed" adds nothing (the CLI's contract). Once the mesh converged, what it shows becomes
/// the model: a converged version must survive every later crash too. A folder push is one
/// change set: its paths follow the same rules one by one, and after recovery it must have
/// landed whole or not at all (`sweep_state::check_trees`).
///
/// Reproduce: the seed ($MESHHUB_SEED) and the kill count ($MESHHUB_SOAK) are printed at the
/// start; they fix the contents, the operations and the kill delays (not the exact
/// interleaving, which is the experiment).

#include <cmath>
#include <condition_variable>
#include <deque>
#include <iomanip>
#include <mutex>

#include "mesh.hpp"

using namespace meshhub::it;

namespace {

const std::string session = "s";
const std::vector<std::string> node_ids{"n1", "n2", "n3"};
constexpr std::uint64_t default_seed = 0x6b696c6c;  // "kill"
constexpr std::uint64_t default_kills = 40;
constexpr std::string_view temp_prefix = ".meshhub-tmp-";
/// The model's name for "no file at this path" (a content digest is 64 hex digits).
const std::string absent = "(absent)";

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* e = std::getenv(name);
  if (!e || !*e) return fallback;
  errno = 0;
  char* end = nullptr;
  const auto v = std::strtoull(e, &end, 0);
  if (errno != 0 || end == e || *end != '\0')
    throw std::invalid_argument("$" + std::string(name) + " is not a number: '" + e + "'");
  return v;
}

std::string short_digest(const std::string& d) { return d.size() == 64 ? d.substr(0, 12) + "…" : d; }

std::string one_line(std::string s, std::size_t max = 300) {
  for (auto& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s.size() <= max ? s : s.substr(0, max) + "…";
}

// ---------------------------------------------------------------------------------------
// Contents: incompressible random bytes or compressible text, so chunks go raw and zlib.

std::string make_content(std::mt19937_64& rng, std::size_t size) {
  std::string s;
  s.reserve(size + 64);
  if (rng() % 2 == 0) {
    s.resize(size + 8);
    for (std::size_t i = 0; i < size; i += 8) {
      const std::uint64_t v = rng();
      std::memcpy(s.data() + i, &v, 8);
    }
  } else {
    static constexpr std::array<std::string_view, 12> words = {
        "mesh", "hub", "node", "wave", "chunk", "mirror", "crash", "journal", "fsync", "rename", "ack", "sync"};
    // Up to 256 KiB of text lines, then copies of it, each stamped with a random line: a
    // large file stays compressible, unique, and quick to make (the hub idles meanwhile).
    const std::size_t block = std::min<std::size_t>(size, 256 * 1024);
    for (std::uint64_t line = rng() % 1000; s.size() < block; ++line) {
      s += std::to_string(line);
      s += ':';
      for (auto n = 3 + rng() % 9; n > 0; --n) {
        s += ' ';
        s += words[rng() % words.size()];
      }
      s += '\n';
    }
    s.resize(block);
    const std::string base = s;
    while (s.size() < size) {
      s += "stamp " + std::to_string(rng()) + "\n";
      if (s.size() < size) s.append(base, 0, std::min(base.size(), size - s.size()));
    }
  }
  s.resize(size);
  return s;
}

// ---------------------------------------------------------------------------------------
// One operation and what became of it.

/// The names a folder push may hold beneath its base: each push takes some of them (fresh
/// contents) and, pushed with --delete, removes the others.
const std::vector<std::string> tree_names{"a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt", "g.txt", "h.txt",
                                          "sub/i.txt", "sub/j.txt", "sub/k.txt", "sub/deep/l.txt"};

struct op_spec {
  /// A folder push: `push s DIR <path> --delete --json`, DIR holding these files (name →
  /// bytes, a subset of tree_names); empty for a single-file operation.
  std::map<std::string, std::string> tree;
  bool remove = false;
  bool via_stdin = false;  ///< `write s PATH -` instead of `push s FILE PATH`
  bool wait_all = false;
  bool large = false;
  std::string path;
  std::string bytes;
};

enum class outcome {
  acked,        ///< the hub replied with the version: durable in mirror and journal
  unknown,      ///< the CLI failed: in flight at a crash, may or may not have landed
  not_applied,  ///< the CLI failed and said "nothing was changed"
};

std::string_view outcome_name(outcome o) {
  switch (o) {
    case outcome::acked: return "acked";
    case outcome::unknown: return "FAILED (outcome unknown)";
    case outcome::not_applied: return "failed, nothing was changed";
  }
  return "?";
}

struct op_record {
  std::size_t index = 0;
  int hub_start = 0;  ///< the hub start (1-based) the op was sent to
  int kills_before = 0;
  bool remove = false, via_stdin = false, wait_all = false, large = false;
  bool in_tree = false;  ///< one path of a folder push (the push's records share `index`)
  std::string path;
  std::uint64_t size = 0;
  std::string digest;  ///< content digest of the bytes sent; `absent` for rm
  outcome result = outcome::unknown;
  int exit_code = -1;
  std::uint64_t version = 0;  ///< from the reply
  std::string reply_digest, reply_path;
  std::uint64_t reply_size = 0;
  std::string detail;  ///< stderr (one line) when it failed, or a note
  std::int64_t took_ms = 0;

  std::string describe() const {
    std::ostringstream o;
    o << "op #" << index << " [hub start " << hub_start << ", after " << kills_before << " kills] ";
    if (in_tree)
      o << "folder push: " << (remove ? "--delete " + path : path + " (" + std::to_string(size) + " B, digest " + short_digest(digest) + ")");
    else if (remove)
      o << "rm " << path;
    else
      o << (via_stdin ? "write " : "push ") << path << " (" << size << " B, digest " << short_digest(digest) << ")";
    if (wait_all) o << " --wait all";
    o << " -> " << outcome_name(result);
    if (result == outcome::acked) o << " v" << version;
    o << " (exit " << exit_code << ", " << took_ms << " ms)";
    if (!detail.empty()) o << ": " << detail;
    return o.str();
  }
};

/// The CLI's --json answer, or null when it printed none (or not JSON).
json reply_of(const cli_result& res) {
  try {
    if (!res.out.empty()) return json::parse(res.out);
  } catch (const std::exception&) {
  }
  return {};
}

/// A call that brought no acknowledgement: refused with nothing changed, or of unknown
/// outcome (in flight at a crash); exit 0 without a reply breaks the CLI's contract.
void classify_failure(op_record& r, const cli_result& res) {
  r.result = res.exit_code != 0 && res.err.find("nothing was changed") != std::string::npos ? outcome::not_applied
                                                                                            : outcome::unknown;
  r.detail = res.exit_code == 0 ? "CONTRACT: exit 0 without a JSON reply: " + one_line(res.out) + " / " + one_line(res.err)
                                : one_line(res.err) + (res.timed_out ? " (CLI TIMED OUT, killed)" : "");
}

/// Runs one operation through the CLI against `hub` and classifies the answer. Thread-safe.
op_record execute(const op_spec& spec, std::size_t index, const std::string& hub, const fs::path& src_dir,
                  int hub_start, int kills_before) {
  op_record r;
  r.index = index;
  r.hub_start = hub_start;
  r.kills_before = kills_before;
  r.remove = spec.remove;
  r.via_stdin = spec.via_stdin;
  r.wait_all = spec.wait_all;
  r.large = spec.large;
  r.path = spec.path;
  r.size = spec.bytes.size();
  r.digest = spec.remove ? absent : content_digest(spec.bytes);

  std::vector<std::string> args{"--hub", hub, "--timeout", "10"};
  std::string_view stdin_data;
  fs::path src;
  if (spec.remove) {
    args.insert(args.end(), {"rm", session, spec.path});
  } else if (spec.via_stdin) {
    args.insert(args.end(), {"write", session, spec.path, "-"});
    stdin_data = spec.bytes;
  } else {
    src = src_dir / ("op-" + std::to_string(index) + ".bin");
    write_file(src, spec.bytes);
    args.insert(args.end(), {"push", session, src.string(), spec.path});
  }
  if (spec.wait_all) args.insert(args.end(), {"--wait", "all"});
  args.push_back("--json");

  const auto t0 = steady::now();
  const cli_result res = run_cli(args, stdin_data, 120s);
  r.took_ms = std::chrono::duration_cast<milliseconds>(steady::now() - t0).count();
  r.exit_code = res.exit_code;
  if (!src.empty()) {
    std::error_code ec;
    fs::remove(src, ec);
  }

  const json reply = reply_of(res);
  if (reply.is_object() && u64(reply, "version") > 0) {
    // The hub answered with the version: the change is durable. With --wait all, exit 1
    // and a `missing` list mean "committed, not yet held by every member" — still acked.
    r.result = outcome::acked;
    r.version = u64(reply, "version");
    r.reply_digest = reply.value("digest", "");
    r.reply_path = reply.value("path", "");
    r.reply_size = u64(reply, "size");
    if (res.exit_code != 0) r.detail = "committed; missing " + reply.value("missing", json::array()).dump();
  } else {
    classify_failure(r, res);
  }
  return r;
}

/// Runs one folder push (`spec.tree` beneath `spec.path`, with --delete) and returns one
/// record per name of tree_names: a file of the folder, or a removal of what it lacks.
std::vector<op_record> execute_tree(const op_spec& spec, std::size_t index, const std::string& hub, const fs::path& src_dir,
                                    int hub_start, int kills_before) {
  const fs::path dir = src_dir / ("tree-" + std::to_string(index));
  for (const auto& [rel, bytes] : spec.tree) {
    fs::create_directories((dir / rel).parent_path());
    write_file(dir / rel, bytes);
  }
  std::vector<std::string> args{"--hub", hub, "--timeout", "10", "push", session, dir.string(), spec.path, "--delete"};
  if (spec.wait_all) args.insert(args.end(), {"--wait", "all"});
  args.push_back("--json");
  const auto t0 = steady::now();
  const cli_result res = run_cli(args, {}, 120s);
  const auto took = std::chrono::duration_cast<milliseconds>(steady::now() - t0).count();
  std::error_code ec;
  fs::remove_all(dir, ec);

  const json reply = reply_of(res);
  const bool acked = reply.is_object() && reply.contains("changes");
  std::map<std::string, json> changes;  // session path → its change in the reply
  if (acked)
    for (const auto& c : reply["changes"]) changes[c.value("path", "")] = c;
  std::vector<op_record> out;
  for (const auto& name : tree_names) {
    op_record r;
    r.index = index;
    r.hub_start = hub_start;
    r.kills_before = kills_before;
    r.in_tree = true;
    r.wait_all = spec.wait_all;
    r.path = spec.path + "/" + name;
    const auto file = spec.tree.find(name);
    r.remove = file == spec.tree.end();
    r.size = r.remove ? 0 : file->second.size();
    r.digest = r.remove ? absent : content_digest(file->second);
    r.exit_code = res.exit_code;
    r.took_ms = took;
    if (acked) {
      r.result = outcome::acked;
      if (const auto c = changes.find(r.path); c != changes.end()) {
        r.version = u64(c->second, "version");
        r.reply_digest = c->second.value("digest", "");
        r.reply_path = c->second.value("path", "");
        r.reply_size = u64(c->second, "size");
      } else if (r.remove) {
        r.reply_path = r.path;  // nothing held there: nothing to remove, no new version
      } else {
        r.detail = "CONTRACT: the folder push's reply has no change for " + r.path + ": " + one_line(res.out);
      }
      if (res.exit_code != 0) r.detail += (r.detail.empty() ? "" : "; ") + std::string("committed; missing ") +
                                          reply.value("missing", json::array()).dump();
    } else {
      classify_failure(r, res);
    }
    out.push_back(std::move(r));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// The model of what the mirror may hold, and the log of every operation.

struct path_state {
  /// content digest (or `absent`) → why it is allowed
  std::map<std::string, std::string> allowed{{absent, "never written"}};
  std::uint64_t version = 0;  ///< last version known (acknowledged or seen converged)
  bool settled = true;        ///< no change of unknown outcome since `version`
  std::vector<std::size_t> ops;
};

class sweep_state {
 public:
  explicit sweep_state(std::string context) : context_(std::move(context)) {}

  const std::string& context() const { return context_; }

  std::size_t next_index() {
    std::lock_guard g(mu_);
    return next_index_++;
  }

  /// Folds one finished operation into the model (any thread).
  void record(op_record r) {
    std::lock_guard g(mu_);
    auto& ps = paths_[r.path];
    ps.ops.push_back(ops_.size());
    const std::string content = r.remove ? absent : r.digest;
    if (r.detail.rfind("CONTRACT:", 0) == 0) violations_.push_back(r.describe());
    switch (r.result) {
      case outcome::acked: {
        const std::string want_digest = r.remove ? "" : r.digest;
        if (r.reply_digest != want_digest || r.reply_size != r.size || r.reply_path != r.path)
          violations_.push_back("the hub acknowledged something else than what was sent: " + r.describe() +
                                "; reply says path '" + r.reply_path + "', size " + std::to_string(r.reply_size) +
                                ", digest '" + r.reply_digest + "'; sent digest '" + want_digest + "'");
        const bool removed_nothing = r.in_tree && r.remove && r.version == 0;  // the session held nothing there
        if (!removed_nothing && r.version <= ps.version)
          violations_.push_back("version not increasing: " + r.describe() + ", but v" + std::to_string(ps.version) +
                                " of " + r.path + " was already known (acknowledged or converged): a crash lost a "
                                "version and the store handed it out again\n" + history_locked(r.path, ps));
        ps.allowed = {{content, "op #" + std::to_string(r.index) + " acked v" + std::to_string(r.version)}};
        ps.version = std::max(ps.version, r.version);
        ps.settled = true;
        ++acked_;
        break;
      }
      case outcome::unknown:
        ps.allowed.emplace(content, "op #" + std::to_string(r.index) + " in flight, CLI failed");
        ps.settled = false;
        ++unknown_;
        break;
      case outcome::not_applied: ++not_applied_; break;
    }
    ops_.push_back(std::move(r));
  }

  /// Folds a folder push (one record per path, sharing an index) into the model; one of
  /// unknown outcome waits for `check_trees`.
  void record_tree(std::vector<op_record> records) {
    if (records.empty()) return;
    if (records.front().result == outcome::unknown) {
      std::map<std::string, std::string> changes;
      for (const auto& r : records) changes[r.path] = r.remove ? absent : r.digest;
      std::lock_guard g(mu_);
      unsettled_trees_.push_back({records.front().index, std::move(changes)});
    }
    for (auto& r : records) record(std::move(r));
  }

  /// After recovery, a folder push of unknown outcome landed whole or not at all: of its
  /// paths that nothing changed since, and whose new content tells it apart from what was
  /// there before, either all hold the new content or none does. Forgets the pushes it
  /// judged (or can no longer judge).
  std::vector<std::string> check_trees(const std::map<std::string, std::string>& found, const std::string& where) {
    std::lock_guard g(mu_);
    std::vector<std::string> out;
    for (const auto& [index, changes] : unsettled_trees_) {
      std::vector<std::string> landed, not_landed;
      bool judged = true;
      for (const auto& [path, content] : changes) {
        const auto& ps = paths_.at(path);
        if (ops_[ps.ops.back()].index != index) {
          judged = false;  // a later operation changed the path
          break;
        }
        if (ps.allowed.size() < 2) continue;  // the new content is the only one (e.g. absent before and after)
        const auto it = found.find(path);
        (( it == found.end() ? absent : it->second) == content ? landed : not_landed).push_back(path);
      }
      if (!judged || landed.empty() || not_landed.empty()) continue;
      out.push_back(where + ": the folder push op #" + std::to_string(index) + " (outcome unknown) LANDED IN PART: " +
                    join(std::set<std::string>(landed.begin(), landed.end())) + " hold its changes, " +
                    join(std::set<std::string>(not_landed.begin(), not_landed.end())) + " do not\n" +
                    history_locked(landed.front(), paths_.at(landed.front())));
    }
    unsettled_trees_.clear();
    return out;
  }

  /// A path that may hold a file now (for rm), or nullopt.
  std::optional<std::string> possibly_present(std::mt19937_64& rng) const {
    std::lock_guard g(mu_);
    std::vector<std::string> v;
    for (const auto& [p, ps] : paths_)
      if (ps.allowed.size() > 1 || !ps.allowed.contains(absent)) v.push_back(p);
    if (v.empty()) return std::nullopt;
    return v[rng() % v.size()];
  }

  /// Violations found while recording (any thread), handed over once.
  std::vector<std::string> take_violations() {
    std::lock_guard g(mu_);
    return std::exchange(violations_, {});
  }

  /// Compares what a tree holds (path → content digest) with the model: every path the
  /// model knows must hold one of its allowed contents, and nothing else may be there.
  std::vector<std::string> check(const std::map<std::string, std::string>& found, const std::string& where) const {
    std::lock_guard g(mu_);
    std::vector<std::string> out;
    for (const auto& [path, ps] : paths_) {
      const auto it = found.find(path);
      const std::string have = it == found.end() ? absent : it->second;
      if (ps.allowed.contains(have)) continue;
      std::ostringstream o;
      o << where << ": " << session << "/" << path << " holds " << (have == absent ? "nothing" : "content " + have)
        << "; allowed: ";
      bool first = true;
      for (const auto& [d, why] : ps.allowed) o << (first ? "" : ", ") << (d == absent ? d : short_digest(d)) << " (" << why << ")", first = false;
      if (ps.allowed.size() == 1) {
        const std::string& why = ps.allowed.begin()->second;
        if (why.find(" acked v") != std::string::npos)
          o << "\n  => AN ACKNOWLEDGED CHANGE IS LOST";
        else if (why.rfind("converged", 0) == 0)
          o << "\n  => A CHANGE EVERY MEMBER HELD (converged) IS LOST";
        else if (why.find("recovery must publish it") != std::string::npos)
          o << "\n  => A JOURNALED CHANGE WAS NOT RECOVERED";
      }
      o << "\n" << history_locked(path, ps);
      out.push_back(o.str());
    }
    for (const auto& [path, d] : found)
      if (!paths_.contains(path))
        out.push_back(where + ": unexpected file " + session + "/" + path + " (content " + d +
                      "): no operation ever wrote it");
    return out;
  }

  /// Checks the hub's listing against the mirror and the versions the model knows.
  std::vector<std::string> check_listing(const json& ls, const std::map<std::string, std::string>& mirror,
                                         const std::string& where) const {
    std::lock_guard g(mu_);
    std::vector<std::string> out;
    std::set<std::string> listed;
    for (const auto& f : ls.value("files", json::array())) {
      const std::string path = f.value("path", "");
      listed.insert(path);
      const std::uint64_t v = u64(f, "version");
      const std::string d = f.value("digest", "");
      const auto m = mirror.find(path);
      if (m == mirror.end()) {
        out.push_back(where + ": `ls` lists " + path + " v" + std::to_string(v) + " (digest " + d +
                      ") but the mirror has no such file");
        continue;
      }
      const auto ps = paths_.find(path);
      if (m->second != d)
        out.push_back(where + ": `ls` says " + path + " v" + std::to_string(v) + " has digest " + d +
                      " but the mirror file's content digest is " + m->second + ": store and mirror disagree" +
                      (ps != paths_.end() ? "\n" + history_locked(path, ps->second) : ""));
      if (ps == paths_.end()) continue;  // reported by check()
      if (v < ps->second.version)
        out.push_back(where + ": `ls` says " + path + " is at v" + std::to_string(v) + ", below v" +
                      std::to_string(ps->second.version) + " that was acknowledged or converged before: the store lost "
                      "a version\n" + history_locked(path, ps->second));
      else if (ps->second.settled && v != ps->second.version)
        out.push_back(where + ": `ls` says " + path + " is at v" + std::to_string(v) + ", but the last change of it "
                      "was v" + std::to_string(ps->second.version) + " and no change of unknown outcome followed\n" +
                      history_locked(path, ps->second));
    }
    for (const auto& [path, d] : mirror)
      if (!listed.contains(path))
        out.push_back(where + ": the mirror holds " + path + " (content " + d +
                      ") but `ls` does not list it: store and mirror disagree" +
                      (paths_.contains(path) ? "\n" + history_locked(path, paths_.at(path)) : ""));
    return out;
  }

  /// After a verified convergence: what the mesh shows is now the model.
  void settle(const std::map<std::string, std::string>& mirror, const json& ls, const std::string& where) {
    std::lock_guard g(mu_);
    std::map<std::string, std::uint64_t> versions;
    for (const auto& f : ls.value("files", json::array())) versions[f.value("path", "")] = u64(f, "version");
    for (auto& [path, ps] : paths_) {
      const auto it = mirror.find(path);
      const std::string have = it == mirror.end() ? absent : it->second;
      if (ps.allowed.size() == 1 && ps.allowed.contains(have) && ps.settled) continue;
      std::string why = "converged " + where;
      if (const auto v = versions.find(path); v != versions.end()) {
        ps.version = std::max(ps.version, v->second);
        why += " at v" + std::to_string(v->second);
      }
      ps.allowed = {{have, why}};
      ps.settled = true;
    }
  }

  std::string history(const std::string& path) const {
    std::lock_guard g(mu_);
    const auto it = paths_.find(path);
    return it == paths_.end() ? "" : history_locked(path, it->second);
  }

  /// Operations sent to hub start `k` whose outcome is unknown: the ones its crash interrupted.
  std::vector<op_record> unknown_on(int hub_start) const {
    std::lock_guard g(mu_);
    std::vector<op_record> v;
    for (const auto& r : ops_)
      if (r.hub_start == hub_start && r.result == outcome::unknown) v.push_back(r);
    return v;
  }

  /// The last operation: its one record, or every record of a folder push.
  std::vector<op_record> last_op() const {
    std::lock_guard g(mu_);
    std::vector<op_record> out;
    for (auto it = ops_.rbegin(); it != ops_.rend() && it->index == ops_.back().index; ++it) out.insert(out.begin(), *it);
    return out;
  }

  /// The design's word on a change in flight at a failpoint: it must have landed (`true`) or
  /// must not have (`false`). Returns false when `r` is not the last operation of its path.
  bool force(const op_record& r, bool landed, const std::string& why) {
    std::lock_guard g(mu_);
    auto& ps = paths_[r.path];
    if (ps.ops.empty() || ops_[ps.ops.back()].index != r.index) return false;
    const std::string content = r.remove ? absent : r.digest;
    if (landed) {
      ps.allowed = {{content, "op #" + std::to_string(r.index) + ", " + why}};
    } else {
      ps.allowed.erase(content);
      if (ps.allowed.empty()) ps.allowed.emplace(absent, "never written");
      for (auto& [d, w] : ps.allowed) w += " (op #" + std::to_string(r.index) + " must not have landed: " + why + ")";
    }
    return true;
  }

  void write_log(const fs::path& file) const {
    std::lock_guard g(mu_);
    std::ofstream out(file);
    out << context_ << "\n";
    for (const auto& r : ops_) out << r.describe() << "\n";
  }

  std::string summary() const {
    std::lock_guard g(mu_);
    std::size_t large = 0, removes = 0;
    std::set<std::size_t> trees;
    for (const auto& r : ops_) {
      if (r.in_tree) trees.insert(r.index);
      else large += r.large, removes += r.remove;
    }
    std::ostringstream o;
    o << ops_.size() << " path operations (" << large << " large pushes, " << removes << " removals, " << trees.size()
      << " folder pushes of " << tree_names.size() << " paths each) over " << paths_.size() << " paths: " << acked_ << " acknowledged, " << unknown_ << " failed with unknown outcome, "
      << not_applied_ << " refused with nothing changed";
    return o.str();
  }

 private:
  std::string history_locked(const std::string& path, const path_state& ps) const {
    std::ostringstream o;
    o << "  history of " << path << " (last 10 of " << ps.ops.size() << "):";
    const std::size_t from = ps.ops.size() > 10 ? ps.ops.size() - 10 : 0;
    for (std::size_t i = from; i < ps.ops.size(); ++i) o << "\n    " << ops_[ps.ops[i]].describe();
    return o.str();
  }

  std::string context_;
  mutable std::mutex mu_;
  std::size_t next_index_ = 1;
  std::vector<op_record> ops_;
  std::map<std::string, path_state> paths_;
  std::vector<std::string> violations_;
  /// Folder pushes of unknown outcome not yet judged: index, session path → new content.
  std::vector<std::pair<std::size_t, std::map<std::string, std::string>>> unsettled_trees_;
  std::size_t acked_ = 0, unknown_ = 0, not_applied_ = 0;
};

// ---------------------------------------------------------------------------------------
// The workload: waves of small pushes over a pool of paths (so many are overwrites), now
// and then a large one, and removals of paths that may exist.

class op_generator {
 public:
  explicit op_generator(std::uint64_t seed) : rng_(seed) {}

  op_spec next(const sweep_state& st) {
    if (wave_.empty()) plan_wave();
    op_spec s = std::move(wave_.front());
    wave_.pop_front();
    if (s.remove) {
      if (auto p = st.possibly_present(rng_)) {
        s.path = *p;
        return s;
      }
      s = small();  // nothing to remove yet
    }
    return s;
  }

  /// A small push, a large one or a removal (by the caller's choice).
  op_spec small() {
    op_spec s;
    const auto k = rng_() % 40;
    s.path = "d" + std::to_string(k % 4) + (k % 7 == 0 ? "/deep/er/" : "/") + "f" + std::to_string(k) + ".bin";
    // Log-uniform in [300 B, 64 KiB].
    const double lo = std::log(300.0), hi = std::log(64.0 * 1024);
    const auto size = static_cast<std::size_t>(std::exp(std::uniform_real_distribution<double>(lo, hi)(rng_)));
    s.bytes = make_content(rng_, size);
    s.via_stdin = rng_() % 4 == 0;
    s.wait_all = rng_() % 10 == 0;
    return s;
  }
  op_spec large() {
    op_spec s;
    s.large = true;
    s.path = "big/large-" + std::to_string(rng_() % 3) + ".bin";
    s.bytes = make_content(rng_, static_cast<std::size_t>(8 * mib + rng_() % (16 * mib + 1)));
    return s;
  }
  static op_spec removal() {
    op_spec s;
    s.remove = true;
    return s;
  }
  /// A folder push to one of three bases: some of tree_names with fresh contents of
  /// 100 B … 16 KiB (log-uniform), the others removed (--delete).
  op_spec tree() {
    op_spec s;
    s.path = "trees/t" + std::to_string(rng_() % 3);
    const double lo = std::log(100.0), hi = std::log(16.0 * 1024);
    for (const auto& name : tree_names)
      if (rng_() % 5 < 3 || (&name == &tree_names.back() && s.tree.empty()))
        s.tree[name] = make_content(rng_, static_cast<std::size_t>(std::exp(std::uniform_real_distribution<double>(lo, hi)(rng_))));
    s.wait_all = rng_() % 10 == 0;
    return s;
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  void plan_wave() {
    for (auto n = 6 + rng_() % 7; n > 0; --n) wave_.push_back(small());
    if (rng_() % 10 < 6) wave_.push_back(large());
    for (auto n = rng_() % 3; n > 0; --n) wave_.push_back(tree());
    for (auto n = 1 + rng_() % 2; n > 0; --n) wave_.push_back(removal());
    std::shuffle(wave_.begin(), wave_.end(), rng_);
  }

  std::mt19937_64 rng_;
  std::deque<op_spec> wave_;
};

/// The driver thread: runs operations back to back until paused. It never touches Catch2
/// (not thread-safe) nor the mesh: only the CLI at a fixed address, and the sweep state.
class driver {
 public:
  driver(sweep_state& st, std::string hub, fs::path src_dir, std::uint64_t seed)
      : st_(st), hub_(std::move(hub)), src_dir_(std::move(src_dir)), gen_(seed), thread_([this] { run(); }) {}
  driver(const driver&) = delete;
  driver& operator=(const driver&) = delete;
  ~driver() {
    {
      std::lock_guard g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  /// Lets the driver run against hub start `hub_start`.
  void resume(int hub_start, int kills) {
    {
      std::lock_guard g(mu_);
      hub_start_ = hub_start;
      kills_ = kills;
      pause_ = false;
    }
    cv_.notify_all();
  }

  /// Asks the driver to stop after its current operation; waits until it has.
  bool pause(milliseconds timeout) {
    std::unique_lock lk(mu_);
    pause_ = true;
    cv_.notify_all();
    return cv_.wait_for(lk, scaled(timeout), [&] { return parked_; });
  }

  /// The command running now (for a report when the driver does not park).
  std::string current() const {
    std::lock_guard g(mu_);
    return current_;
  }
  std::string error() const {
    std::lock_guard g(mu_);
    return error_;
  }

 private:
  void run() {
    for (;;) {
      int hub_start = 0, kills = 0;
      {
        std::unique_lock lk(mu_);
        if (pause_ || stop_) {
          parked_ = true;
          cv_.notify_all();
          cv_.wait(lk, [&] { return !pause_ || stop_; });
          if (stop_) return;
          parked_ = false;
        }
        hub_start = hub_start_;
        kills = kills_;
      }
      try {
        op_spec spec = gen_.next(st_);
        const std::size_t index = st_.next_index();
        {
          std::lock_guard g(mu_);
          current_ = "op #" + std::to_string(index) + " " + (!spec.tree.empty() ? "push DIR " : spec.remove ? "rm " : "push ") + spec.path;
        }
        if (!spec.tree.empty())
          st_.record_tree(execute_tree(spec, index, hub_, src_dir_, hub_start, kills));
        else
          st_.record(execute(spec, index, hub_, src_dir_, hub_start, kills));
        std::lock_guard g(mu_);
        current_.clear();
      } catch (const std::exception& e) {
        std::lock_guard g(mu_);
        error_ = e.what();
        pause_ = true;  // park; the test reports it
      }
    }
  }

  sweep_state& st_;
  const std::string hub_;
  const fs::path src_dir_;
  op_generator gen_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool pause_ = true, parked_ = false, stop_ = false;
  int hub_start_ = 0, kills_ = 0;
  std::string current_, error_;
  std::thread thread_;  // last: starts once everything above exists
};

// ---------------------------------------------------------------------------------------
// Disk: content digests (cached by inode and times), trees, temp files, the store file.

class digest_cache {
 public:
  /// The content digest of `file`, recomputed only when its inode, size or times changed.
  std::string of(const fs::path& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + file.string());
    const key k{st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec,
                st.st_ctim.tv_nsec};
    auto& e = cache_[file.string()];
    if (e.first != k || e.second.empty()) e = {k, content_digest_file(file)};
    return e.second;
  }

 private:
  using key = std::tuple<dev_t, ino_t, off_t, time_t, long, time_t, long>;
  std::map<std::string, std::pair<key, std::string>> cache_;
};

struct tree {
  std::map<std::string, std::uint64_t> sizes;  ///< regular files (relative path → size), temps excluded
  std::vector<std::string> temps;              ///< temp files (names starting `.meshhub-tmp-`)
};

/// Regular files beneath `root` (none when it does not exist); tolerant of concurrent change.
tree scan(const fs::path& root) {
  tree t;
  std::error_code ec;
  if (!fs::exists(root, ec)) return t;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code e2;
    if (!it->is_regular_file(e2) || it->is_symlink(e2)) continue;
    const std::string rel = fs::relative(it->path(), root, e2).generic_string();
    if (it->path().filename().string().starts_with(temp_prefix)) {
      t.temps.push_back(rel);
      continue;
    }
    t.sizes[rel] = it->file_size(e2);
  }
  return t;
}

/// Content digests of a scanned tree; a file that vanished since the scan (only while a
/// mesh that has not converged still moves) shows as "(unreadable: …)", never as a match.
std::map<std::string, std::string> digests(const fs::path& root, const tree& t, digest_cache& cache) {
  std::map<std::string, std::string> out;
  for (const auto& [rel, size] : t.sizes) {
    try {
      out[rel] = cache.of(root / rel);
    } catch (const std::exception& e) {
      out[rel] = std::string("(unreadable: ") + e.what() + ")";
    }
  }
  return out;
}

/// How two trees differ, in a line ("" when they hold the same files at the same sizes).
std::string tree_diff(const tree& want, const tree& have, const std::string& who) {
  std::ostringstream o;
  for (const auto& [p, s] : want.sizes) {
    const auto it = have.sizes.find(p);
    if (it == have.sizes.end())
      o << who << " lacks " << p << "; ";
    else if (it->second != s)
      o << who << " has " << p << " at " << it->second << " B, the mirror at " << s << " B; ";
  }
  for (const auto& [p, s] : have.sizes)
    if (!want.sizes.contains(p)) o << who << " has " << p << " which the mirror does not; ";
  return o.str();
}

/// `PRAGMA integrity_check` on the store file, opened read-only: "ok" when it is sound.
std::string integrity_check(const fs::path& db) {
  try {
    const auto rows = query_store(db, "PRAGMA integrity_check");
    return join(std::set<std::string>(rows.begin(), rows.end()), "; ");
  } catch (const std::exception& e) {
    return e.what();
  }
}

fs::path mirror_root(mesh& m) { return m.hub_data() / "sessions" / session; }

/// Right after a crash, before any restart: the store file is sound, and the mirror on disk
/// already holds every acknowledged change (the reply went out after the rename).
std::vector<std::string> check_at_crash(mesh& m, sweep_state& st, digest_cache& cache, const std::string& where) {
  std::vector<std::string> v;
  if (const auto ic = integrity_check(m.store_file()); ic != "ok")
    v.push_back(where + ": PRAGMA integrity_check on " + m.store_file().string() + " says: " + ic);
  const tree t = scan(mirror_root(m));
  for (auto& s : st.check(digests(mirror_root(m), t, cache), where + " (mirror on disk, before recovery)"))
    v.push_back(std::move(s));
  return v;
}

/// After a restart: waits until every node is connected, no wave is pending, `ls` shows
/// every member in sync and every node's session folder lists the mirror's files; then
/// checks contents byte for byte (content digests), the listing, temp files and the model.
std::vector<std::string> check_converged(mesh& m, sweep_state& st, digest_cache& cache, const std::string& where,
                                         milliseconds timeout = 60s) {
  std::vector<std::string> v;
  std::string reason, last_status, last_ls;
  json ls, last_ls_json;
  tree mirror;
  const bool converged = poll_until(
      timeout,
      [&] {
        for (const auto& id : node_ids)
          if (!m.node(id).running()) {
            reason = "meshhub-node " + id + " is not running: " + m.node(id).describe();
            return false;
          }
        std::string why;
        const auto status = m.try_status_json(&why);
        if (!status) {
          reason = "status failed: " + why;
          return false;
        }
        last_status = status->dump();
        for (const auto& id : node_ids) {
          const json* n = mesh::find_node(*status, id);
          if (!n || !n->value("connected", false)) {
            reason = id + " is not connected";
            return false;
          }
        }
        if (const auto p = u64(*status, "pending_waves"); p != 0) {
          reason = "pending_waves = " + std::to_string(p);
          return false;
        }
        const auto listing = m.try_ls_json(session, &why);
        if (!listing) {
          reason = "ls failed: " + why;
          return false;
        }
        last_ls = listing->dump();
        last_ls_json = *listing;
        for (const auto& f : listing->value("files", json::array()))
          if (!mesh::all_in_sync(*listing, f.value("path", ""), node_ids)) {
            reason = "not every member in-sync: " + f.dump();
            return false;
          }
        mirror = scan(mirror_root(m));
        for (const auto& id : node_ids)
          if (const auto d = tree_diff(mirror, scan(m.workspace(id) / session), id); !d.empty()) {
            reason = "files differ from the mirror: " + d;
            return false;
          }
        ls = *listing;
        return true;
      },
      100ms);
  if (!converged) {
    v.push_back(where + ": the mesh did not converge within " + std::to_string(scaled(timeout).count()) +
                " ms; last reason: " + reason + "\n  last status: " + last_status.substr(0, 3000) +
                "\n  last ls: " + last_ls.substr(0, 3000));
    // Why not, as far as the hub's own state tells: the mirror against the model and
    // against the store's listing (a mirror file the store does not know never converges).
    const auto mirror_now = digests(mirror_root(m), scan(mirror_root(m)), cache);
    for (auto& s : st.check(mirror_now, where + " (mirror, not converged)")) v.push_back(std::move(s));
    if (last_ls_json.is_object())
      for (auto& s : st.check_listing(last_ls_json, mirror_now, where + " (not converged)")) v.push_back(std::move(s));
    return v;
  }
  // Contents: mirror against the model and the listing, every node against the mirror.
  const auto mirror_digests = digests(mirror_root(m), mirror, cache);
  for (auto& s : st.check(mirror_digests, where + " (mirror after convergence)")) v.push_back(std::move(s));
  for (auto& s : st.check_trees(mirror_digests, where + " (mirror after convergence)")) v.push_back(std::move(s));
  for (auto& s : st.check_listing(ls, mirror_digests, where)) v.push_back(std::move(s));
  for (const auto& id : node_ids) {
    const fs::path root = m.workspace(id) / session;
    const tree t = scan(root);
    for (const auto& [path, d] : digests(root, t, cache)) {
      const auto it = mirror_digests.find(path);
      if (it == mirror_digests.end())
        v.push_back(where + ": " + id + " holds " + path + " which the mirror does not");
      else if (it->second != d)
        v.push_back(where + ": " + id + " holds " + path + " with content digest " + d + ", the mirror " + it->second +
                    " (`ls` says every member is in sync)\n" + st.history(path));
    }
    if (!t.temps.empty())
      v.push_back(where + ": temp files left in " + id + "'s session folder: " +
                  join(std::set<std::string>(t.temps.begin(), t.temps.end())));
  }
  if (const tree all = scan(m.hub_data() / "sessions"); !all.temps.empty())
    v.push_back(where + ": temp files left in the mirror: " + join(std::set<std::string>(all.temps.begin(), all.temps.end())));
  if (v.empty()) st.settle(mirror_digests, ls, where);
  return v;
}

/// Reports `violations` as failed checks, each with the run's context and the logs of the
/// hub start that crashed; writes the operation log into the test folder. True when none.
bool report(mesh& m, const sweep_state& st, const std::vector<std::string>& violations, int crashed_start) {
  if (violations.empty()) return true;
  const fs::path log = m.dir() / "ops.log";
  st.write_log(log);
  std::ostringstream logs;
  if (crashed_start > 0)
    logs << "--- hub start " << crashed_start << " (crashed) stderr tail ---\n"
         << tail(m.hub_err_log(crashed_start), 25) << "--- its events (stdout) tail ---\n"
         << tail(m.hub_out_log(crashed_start), 10);
  for (const auto& v : violations)
    FAIL_CHECK(st.context() << "\n" << v << "\n" << logs.str() << "(every operation: " << log.string() << ")");
  return false;
}

/// Three nodes joined to the session, all connected.
void set_up_session(mesh& m) {
  for (const auto& id : node_ids) m.add_node(id);
  m.wait_connected(node_ids);
  m.cli_ok({"session", "create", session});
  std::vector<std::string> join_args{"session", "join", session};
  join_args.insert(join_args.end(), node_ids.begin(), node_ids.end());
  m.cli_ok(join_args);
}

}  // namespace

TEST_CASE("kill sweep: after random hub crashes no acknowledged change is lost and every member converges",
          "[kill][sweep]") {
  const std::uint64_t seed = env_u64("MESHHUB_SEED", default_seed);
  const auto kills = static_cast<int>(env_u64("MESHHUB_SOAK", default_kills));
  const std::string context = "kill sweep: MESHHUB_SEED=" + std::to_string(seed) + " MESHHUB_SOAK=" + std::to_string(kills);
  std::cout << "[kill-sweep] " << context << std::endl;
  const auto t0 = steady::now();

  mesh m("kill", hub_options::on_sqlite());
  set_up_session(m);
  sweep_state st(context);
  digest_cache cache;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> delay_ms(50, 600);
  driver d(st, m.hub_addr(), m.dir() / "src", seed ^ 0x9e3779b97f4a7c15ull);

  int done = 0, verified = 0, interrupted = 0, interrupted_large = 0;
  d.resume(m.hub_starts(), 0);
  for (int k = 1; k <= kills; ++k) {
    // The experiment: a crash at a random moment after the hub became ready.
    std::this_thread::sleep_for(milliseconds(delay_ms(rng)));
    const int crashed = m.hub_starts();
    m.kill_hub();
    ++done;
    const std::string where = "kill " + std::to_string(k) + "/" + std::to_string(kills) + " (hub start " +
                              std::to_string(crashed) + ")";
    if (!d.pause(150s)) FAIL(context << ": " << where << ": the driver did not finish its operation: " << d.current());
    if (const auto e = d.error(); !e.empty()) FAIL(context << ": " << where << ": the driver failed: " << e);
    for (const auto& r : st.unknown_on(crashed)) ++interrupted, interrupted_large += r.large;

    auto violations = st.take_violations();
    for (auto& s : check_at_crash(m, st, cache, where)) violations.push_back(std::move(s));
    if (!report(m, st, violations, crashed)) break;

    m.restart_hub(hub_options::on_sqlite());
    // Mostly check convergence after every crash; now and then crash again while the nodes
    // are still catching up (never after the last one).
    if (k == kills || rng() % 4 != 0) {
      if (!report(m, st, check_converged(m, st, cache, where + ", after the restart"), crashed)) break;
      ++verified;
    }
    d.resume(m.hub_starts(), k);
  }
  if (!d.pause(150s)) FAIL(context << ": the driver did not finish its operation: " << d.current());
  if (const auto e = d.error(); !e.empty()) FAIL(context << ": the driver failed: " << e);
  report(m, st, st.take_violations(), 0);

  m.check_alive();
  m.finish();
  {
    INFO(context << ": the store after a clean stop");
    CHECK(integrity_check(m.store_file()) == "ok");
  }

  const auto secs = std::chrono::duration_cast<std::chrono::duration<double>>(steady::now() - t0).count();
  std::ostringstream summary;
  summary << context << ": " << done << " kills, convergence verified after " << verified << ", " << interrupted
          << " operations interrupted by a crash (" << interrupted_large << " large pushes); " << st.summary() << "; "
          << std::fixed << std::setprecision(1) << secs << " s";
  std::cout << "[kill-sweep] " << summary.str() << std::endl;
  WARN(summary.str());
  INFO(context << ": the sweep stopped at the first kill that broke an invariant");
  CHECK(done == kills);
}

TEST_CASE("kill sweep: a hub crash at each failpoint of the write path loses no acknowledged change",
          "[kill][failpoint]") {
#ifndef MESHHUB_SERVER_FAILPOINTS_BIN
  if (bins().server_failpoints.empty()) {
    WARN("meshhub-server-failpoints is not built (CMake target of that name): failpoint crashes not tested");
    return;
  }
#endif
  const fs::path failpoint_server = bins().server_failpoints;
  INFO("failpoint server " << failpoint_server.string());
  REQUIRE(::access(failpoint_server.c_str(), X_OK) == 0);

  const std::uint64_t seed = env_u64("MESHHUB_SEED", default_seed);
  const std::string context = "kill sweep (failpoints): MESHHUB_SEED=" + std::to_string(seed);
  std::cout << "[kill-sweep] " << context << std::endl;

  mesh m("failpoint", hub_options::on_sqlite());
  set_up_session(m);
  sweep_state st(context);
  digest_cache cache;
  op_generator gen(seed ^ 0xf00d);
  std::mt19937_64 rng(seed);

  // Each step, the first time and a later time (then state has piled up before it).
  const std::array<std::string, 5> steps{"mirror_written", "journal_committed", "published", "first_send",
                                         "before_ack_record"};
  std::vector<std::pair<std::string, unsigned>> plan;
  for (const auto& s : steps) plan.emplace_back(s, 1u);
  for (const auto& s : steps) plan.emplace_back(s, 2u + static_cast<unsigned>(rng() % 3));

  int round = 0;
  std::vector<std::string> rounds;  // what each crash interrupted, for the summary
  for (const auto& [step, nth] : plan) {
    ++round;
    const std::string spec = step + "@" + std::to_string(nth);
    const std::string where = "failpoint " + spec + " (round " + std::to_string(round) + ")";
    // A clean stop, then the failpoint build on the same port: the nodes reconnect to it.
    m.hub().terminate();
    hub_options opts = hub_options::on_sqlite();
    opts.server = failpoint_server;
    opts.env = {"MESHHUB_FAILPOINT=" + spec};
    m.restart_hub(opts);
    const int armed = m.hub_starts();

    // Changes until the hub dies: small pushes, every fourth a removal, every fifth large,
    // now and then a folder push.
    const auto deadline = steady::now() + scaled(90s);
    int ops = 0;
    while (m.hub().running() && steady::now() < deadline && ops < 80) {
      op_spec s = ops % 5 == 4 ? gen.large() : ops % 4 == 3 ? op_generator::removal() : ops % 3 == 2 ? gen.tree() : gen.small();
      if (s.remove) {
        if (auto p = st.possibly_present(gen.rng()))
          s.path = *p;
        else
          s = gen.small();
      }
      s.wait_all = false;
      if (!s.tree.empty())
        st.record_tree(execute_tree(s, st.next_index(), m.hub_addr(), m.dir() / "src", armed, round - 1));
      else
        st.record(execute(s, st.next_index(), m.hub_addr(), m.dir() / "src", armed, round - 1));
      ++ops;
    }
    const auto status = m.hub().wait_for(scaled(20s));
    {
      INFO(context << ": " << where << ": " << ops << " operations sent; hub " << m.hub().describe() << "\n"
                   << tail(m.hub_err_log(armed), 25));
      REQUIRE(status.has_value());
      CHECK((WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL));
      CHECK(read_file(m.hub_err_log(armed)).find("failpoint " + step + " hit") != std::string::npos);
    }

    auto violations = st.take_violations();
    for (auto& s : check_at_crash(m, st, cache, where)) violations.push_back(std::move(s));
    if (!report(m, st, violations, armed)) break;

    // What the design promises for the change in flight at a step of the commit path
    // (include/meshhub/failpoint.hpp): before the journal it never happened; once
    // journaled, recovery publishes it. Judged after the restart.
    std::string note = spec + ": died after " + std::to_string(ops) + " operations";
    if (const auto last = st.last_op(); !last.empty() && last[0].hub_start == armed && last[0].result == outcome::unknown) {
      const op_record& op = last[0];  // a folder push's first record is its top-level tree_names[0]
      const bool tree = op.in_tree;
      note += "; in flight: op #" + std::to_string(op.index) +
              (tree ? " push DIR to " + fs::path(op.path).parent_path().string() + " (" + std::to_string(last.size()) + " paths)"
                    : (op.remove ? " rm " : " push ") + op.path);
      // Forced on every path of a folder push: it is one change set.
      const auto force_all = [&](bool landed, const std::string& why) {
        bool all = true;
        for (const auto& r : last) all = st.force(r, landed, why) && all;
        return all;
      };
      if (step == "mirror_written" && (tree || !op.remove) && force_all(false, "the hub crashed at mirror_written, before the journal"))
        note += " (must not land)";
      else if ((step == "journal_committed" || step == "published") &&
               force_all(true, "journaled before the crash at " + step + ": recovery must publish it"))
        note += " (must land)";
    } else {
      note += "; no operation in flight";
    }
    rounds.push_back(note);

    m.restart_hub(hub_options::on_sqlite());
    if (!report(m, st, check_converged(m, st, cache, where + ", after the restart"), armed)) break;
  }
  report(m, st, st.take_violations(), 0);
  m.check_alive();
  m.finish();
  {
    INFO(context << ": the store after a clean stop");
    CHECK(integrity_check(m.store_file()) == "ok");
  }
  std::string per_round;
  for (const auto& r : rounds) per_round += "\n  " + r;
  WARN(context << ": " << round << " failpoint crashes; " << st.summary() << per_round);
}
