// The workspace cannot be escaped, judged from outside.
//
// A table of hostile cases — each one operation (write through a durable_writer, read,
// remove, mkdir, list, adopt) on one path, with something planted in the workspace first —
// runs under BOTH resolvers (openat2 and the O_NOFOLLOW walk, forced with use_resolver).
// Every refusal must be `errc::invalid_argument` with a message saying why, must leave the
// workspace exactly as it was, and the canary tree beside the workspace must stay
// byte-identical (compared by a digest of its every entry). Accepted cases (look-alike
// names, a symlink replaced by a write) must land inside. Both resolvers must answer every
// case with the same code and message. Then a thread swaps a parent folder for a symlink to
// the canary while 10,000 writes go on beneath it.
//
// Hard links are out of scope: a hard link is the same inode, not a path that leads
// anywhere, and making one needs write access to the outside file's file system; a write
// replaces the link by rename and never writes through it (test_path.cpp checks that).
//
// The trees live on /dev/shm when it is there: the security property does not depend on
// the file system, and tmpfs makes 10,000 durable writes (two fsyncs each) take a moment
// instead of a minute on a virtual disk.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "meshhub/error.hpp"
#include "meshhub/path.hpp"
#include "meshhub/workspace.hpp"
#include "support/fs.hpp"

using namespace meshhub;
using namespace meshhub::testing;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

// --- the arena: a canary beside the workspace ---------------------------------------------

/// A fresh folder on /dev/shm (else $TMPDIR), removed afterwards without following links.
class scratch_dir {
 public:
  scratch_dir() {
    std::error_code ec;
    const bool shm = fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0;
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = (shm ? std::string("/dev/shm") : std::string(tmp && *tmp ? tmp : "/tmp")) + "/meshhub-hostile-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  ~scratch_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);  // removes symlinks as themselves
  }
  [[nodiscard]] const fs::path& path() const noexcept { return path_; }

 private:
  fs::path path_;
};

std::string sha256_hex(const std::string& bytes) {
  const auto r = openssl_sha256(bytes);
  return to_hex(std::span<const std::uint8_t>(r.bytes.data(), r.length));
}

/// Every entry beneath `root` (never following a link): type, link text, SHA-256 of the
/// bytes. Top-level names in `skip` are left out.
std::map<std::string, std::string> snapshot(const fs::path& root, const std::set<std::string>& skip = {}) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    const auto rel = it->path().lexically_relative(root).string();  // fs::relative would follow links
    if (it.depth() == 0 && skip.count(rel)) {
      it.disable_recursion_pending();
      continue;
    }
    const auto st = it->symlink_status();
    if (fs::is_symlink(st)) out[rel] = "link:" + fs::read_symlink(it->path()).string();
    else if (fs::is_regular_file(st)) out[rel] = "file:" + sha256_hex(read_file_unchecked(it->path()));
    else if (fs::is_directory(st)) out[rel] = "dir";
    else out[rel] = "other";
  }
  return out;
}

/// One digest of a snapshot: what "byte-identical" is compared by.
std::string digest_of(const std::map<std::string, std::string>& snap) {
  std::string all;
  for (auto& [k, v] : snap) all += k + '\0' + v + '\n';
  return sha256_hex(all);
}

/// What changed between two snapshots, for the failure message.
std::string changes(const std::map<std::string, std::string>& before, const std::map<std::string, std::string>& now) {
  std::string out;
  for (auto& [k, v] : before)
    if (!now.count(k)) out += " removed:" + k;
    else if (now.at(k) != v) out += " changed:" + k;
  for (auto& [k, v] : now)
    if (!before.count(k)) out += " created:" + k;
  return out;
}

const std::string canary_secret = "CANARY-SECRET: never written, read, removed or listed through a workspace\n";

/// base/canary (the canary: files, a folder, names a hostile path aims at), base/ws (the
/// workspace, made afresh per case), base/incoming (adopt's source folder). "Outside" is
/// everything under base but ws and incoming.
struct arena {
  scratch_dir dir;
  fs::path base = dir.path(), canary = base / "canary", ws_root = base / "ws", incoming = base / "incoming";
  int canary_fd = -1;  ///< an fd on the canary folder, for /proc/self/fd/N magic links
  int incoming_fd = -1;

  arena() {
    plant(canary / "secret.txt", canary_secret);
    plant(canary / "sub/deep.txt", "deep canary\n");
    plant(canary / "x", "the canary's own x\n");
    plant(canary / "adopted", "the canary's own adopted\n");
    plant(canary / ".meshhub-tmp-canary", "a canary named like a temp file\n");
    plant(canary / "etc/passwd", "root:x:0:0:canary\n");
    fs::create_directories(ws_root);
    fs::create_directories(incoming);
    canary_fd = ::open(canary.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    incoming_fd = ::open(incoming.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(canary_fd >= 0);
    REQUIRE(incoming_fd >= 0);
  }
  arena(const arena&) = delete;
  arena& operator=(const arena&) = delete;
  ~arena() {
    ::close(canary_fd);
    ::close(incoming_fd);
  }

  [[nodiscard]] std::map<std::string, std::string> outside() const { return snapshot(base, {"ws", "incoming"}); }

  /// `s` with {canary} (its absolute path) and {canary_fd} filled in.
  [[nodiscard]] std::string expand(std::string s) const {
    for (auto [token, value] : {std::pair<std::string, std::string>{"{canary}", canary.string()},
                                {"{canary_fd}", std::to_string(canary_fd)}})
      for (std::size_t at; (at = s.find(token)) != std::string::npos;) s.replace(at, token.size(), value);
    return s;
  }
};

// --- the corpus -----------------------------------------------------------------------

enum class op { write, read, remove, mkdir, list, adopt };

const char* to_string(op o) {
  switch (o) {
    case op::write: return "write";
    case op::read: return "read";
    case op::remove: return "remove";
    case op::mkdir: return "mkdir";
    case op::list: return "list";
    case op::adopt: return "adopt";
  }
  return "?";
}

/// Something planted in the workspace (with plain POSIX calls) before a case runs.
struct planted {
  enum kind_t { file, folder, symlink, fifo, device, socket } kind;
  std::string rel;
  std::string target = {};  ///< a symlink's text ({canary}, {canary_fd} expanded)
};
using P = planted;

struct hostile_case {
  std::string name;
  std::vector<planted> plant;
  op what;
  std::string path;  ///< {canary}, {canary_fd} expanded
  /// A fragment of the refusal's message; empty: accepted, and the effect stays inside.
  std::string why;
  /// For an accepted write or adopt: the path that must now be a regular file (default: path).
  std::string lands = {};
};

// The rule each refusal must name.
const std::string dotdot = "'..' component", dot = "'.' component", absolute = "absolute",
                  empty_component = "empty component", nul = "NUL byte", backslash = "backslash",
                  control = "control character", long_component = "longer than 255 bytes",
                  long_path = "longer than 4095 bytes", too_deep = "more than 64 folders deep", reserved = "reserved",
                  symlink = "symlink", not_folder = "not a folder", not_regular = "not a regular file",
                  is_folder = "is a folder", neither = "neither a file nor a folder", inside = "";

const std::vector<hostile_case>& corpus() {
  const P link_out{P::symlink, "link", "{canary}"};              // a folder symlink, absolute
  const P file_link_out{P::symlink, "evil", "{canary}/secret.txt"};  // a file symlink, absolute
  const P file{P::file, "f"};
  const P folder{P::folder, "dir"}, folder_file{P::file, "dir/inner"};
  static const std::vector<hostile_case> cases{
      // '..' in every position, and '.'
      {"dotdot alone", {}, op::write, "..", dotdot},
      {"dotdot leading, aimed at the canary", {}, op::write, "../canary/x", dotdot},
      {"dotdot climbing out after descending", {}, op::write, "a/b/../../../canary/x", dotdot},
      {"dotdot trailing", {}, op::read, "a/..", dotdot},
      {"dotdot in the middle", {}, op::mkdir, "a/../b", dotdot},
      {"dotdot many times", {}, op::read, repeat("../", 20) + "etc/passwd", dotdot},
      {"dotdot remove of the canary", {}, op::remove, "../canary/secret.txt", dotdot},
      {"dotdot listing of the canary", {}, op::list, "../canary", dotdot},
      {"dotdot adopt into the canary", {}, op::adopt, "../canary/adopted", dotdot},
      {"dotdot after a real folder", {folder, folder_file}, op::write, "dir/../../canary/x", dotdot},
      {"dot in the middle", {}, op::write, "a/./b", dot},
      {"dot alone", {}, op::list, ".", dot},
      // absolute, '//', trailing '/'
      {"absolute path of the canary", {}, op::write, "{canary}/x", absolute},
      {"absolute read of the canary", {}, op::read, "{canary}/secret.txt", absolute},
      {"absolute remove of the canary", {}, op::remove, "{canary}/secret.txt", absolute},
      {"absolute mkdir", {}, op::mkdir, "{canary}/made", absolute},
      {"absolute adopt", {}, op::adopt, "{canary}/adopted", absolute},
      {"double slash leading", {}, op::write, "/{canary}/x", absolute},
      {"double slash in the middle", {}, op::write, "a//b", empty_component},
      {"trailing slash on a write", {}, op::write, "a/", empty_component},
      {"trailing slash on a mkdir", {}, op::mkdir, "a/b/", empty_component},
      {"empty path", {}, op::write, "", "the path is empty"},
      // NUL, backslash, control bytes
      {"NUL truncating to a climb", {}, op::write, "x\0/../../canary/x"s, nul},
      {"NUL at the end", {file}, op::read, "f\0"s, nul},
      {"NUL hiding a dotdot", {}, op::remove, "..\0"s, nul},
      {"backslash climb", {}, op::write, "..\\canary\\x", backslash},
      {"backslash separator", {}, op::mkdir, "a\\b", backslash},
      {"UNC path", {}, op::read, "\\\\server\\share", backslash},
      {"newline", {}, op::write, "a\nb", control},
      {"terminal escape", {}, op::write, "evil\x1b[2J", control},
      // lengths and depth
      {"component of 256 bytes", {}, op::write, std::string(256, 'a'), long_component},
      {"component of 256 bytes in the middle", {}, op::mkdir, "a/" + std::string(256, 'b') + "/c", long_component},
      {"path of 4097 bytes", {}, op::read, repeat(std::string(99, 'p') + "/", 40) + std::string(97, 'q'), long_path},
      {"path of 100,000 bytes", {}, op::write, repeat("abcdefghi/", 10000), long_path},
      {"depth 65", {}, op::write, deep(65), too_deep},
      {"depth 200", {}, op::mkdir, deep(200), too_deep},
      // meshhub's own names
      {"reserved .meshhub", {}, op::write, ".meshhub", reserved},
      {"reserved temp name", {}, op::write, ".meshhub-tmp-0123456789abcdef", reserved},
      {"reserved state folder", {}, op::remove, "a/.meshhub-state", reserved},
      {"reserved folder listing", {}, op::list, ".meshhub", reserved},
      // unicode look-alikes: ordinary names to the kernel; accepted, and they stay inside
      {"one-dot leaders U+2024 as a folder", {}, op::write, "\u2024\u2024/canary/x", inside},
      {"two-dot leader U+2025", {}, op::write, "\u2025/x", inside},
      {"fullwidth full stops U+FF0E climbing", {}, op::write, "\uff0e\uff0e/\uff0e\uff0e/canary/x", inside},
      {"fullwidth solidus U+FF0F", {}, op::write, "\uff0e\uff0e\uff0fcanary\uff0fx", inside},
      {"division slash U+2215", {}, op::write, "..\u2215canary\u2215x", inside},
      {"fraction slash U+2044", {}, op::mkdir, "..\u2044canary", inside},
      {"fullwidth reverse solidus U+FF3C", {}, op::write, "..\uff3ccanary\uff3cx", inside},
      {"overlong UTF-8 for '.' (C0 AE)", {}, op::write, "\xc0\xae\xc0\xae/canary/x", inside},
      {"overlong UTF-8 for '/' (C0 AF)", {}, op::write, "..\xc0\xaf" "canary\xc0\xafx", inside},
      {"percent-encoded climb", {}, op::write, "..%2fcanary%2fx", inside},
      {"a look-alike that is a planted symlink", {{P::symlink, "\u2024\u2024", ".."}}, op::read,
       "\u2024\u2024/canary/secret.txt", symlink},
      // planted file symlinks
      {"file symlink out (absolute): read", {file_link_out}, op::read, "evil", symlink},
      {"file symlink out (absolute): list", {file_link_out}, op::list, "evil", symlink},
      {"file symlink out (relative): read", {{P::symlink, "evil", "../canary/secret.txt"}}, op::read, "evil", symlink},
      {"file symlink out, nested (relative): read", {{P::symlink, "a/evil", "../../canary/secret.txt"}}, op::read,
       "a/evil", symlink},
      {"file symlink out: a write replaces the link", {file_link_out}, op::write, "evil", inside},
      {"file symlink out: a remove removes the link", {file_link_out}, op::remove, "evil", inside},
      {"file symlink out: an adopt replaces the link", {file_link_out}, op::adopt, "evil", inside},
      {"dangling symlink out: a write replaces the link", {{P::symlink, "dangling", "{canary}/new"}}, op::write,
       "dangling", inside},
      // planted folder symlinks
      {"folder symlink out (absolute): write beneath", {link_out}, op::write, "link/x", symlink},
      {"folder symlink out: overwrite the canary", {link_out}, op::write, "link/secret.txt", symlink},
      {"folder symlink out: write deeper", {link_out}, op::write, "link/new/deeper/x", symlink},
      {"folder symlink out: read beneath", {link_out}, op::read, "link/secret.txt", symlink},
      {"folder symlink out: remove beneath", {link_out}, op::remove, "link/secret.txt", symlink},
      {"folder symlink out: mkdir beneath", {link_out}, op::mkdir, "link/made", symlink},
      {"folder symlink out: mkdir of the link", {link_out}, op::mkdir, "link", symlink},
      {"folder symlink out: list", {link_out}, op::list, "link", symlink},
      {"folder symlink out: adopt beneath", {link_out}, op::adopt, "link/adopted", symlink},
      {"folder symlink out: a write of its own name replaces it", {link_out}, op::write, "link", inside},
      {"folder symlink out (relative): write", {{P::symlink, "rel", "../canary"}}, op::write, "rel/x", symlink},
      {"folder symlink to the parent", {{P::symlink, "up", ".."}}, op::write, "up/canary/x", symlink},
      {"folder symlink to /", {{P::symlink, "root", "/"}}, op::read, "root{canary}/secret.txt", symlink},
      {"folder symlink to itself (.)", {{P::symlink, "self", "."}}, op::write, "self/self/x", symlink},
      {"folder symlink pointing inside", {{P::folder, "real"}, {P::symlink, "alias", "real"}}, op::write, "alias/x",
       symlink},
      {"dangling folder symlink: write beneath", {{P::symlink, "dangling", "{canary}/new"}}, op::write, "dangling/x",
       symlink},
      {"symlink loop", {{P::symlink, "loop", "loop"}}, op::read, "loop/x", symlink},
      // symlinked parents, deeper
      {"symlinked parent two levels deep", {{P::folder, "a"}, {P::symlink, "a/b", "{canary}"}}, op::write, "a/b/c/x",
       symlink},
      {"relative symlink three levels deep climbing out", {{P::symlink, "a/b/c", "../../../canary"}}, op::write,
       "a/b/c/x", symlink},
      {"symlinked parent: read the canary", {{P::symlink, "a/b", "{canary}"}}, op::read, "a/b/sub/deep.txt", symlink},
      {"symlinked parent: remove", {{P::symlink, "a/b", "../../canary"}}, op::remove, "a/b/x", symlink},
      {"symlinked parent: list", {{P::symlink, "a/b", "../../canary"}}, op::list, "a/b/sub", symlink},
      // the shape of a promoted-skill link (skill/library.hpp): never followed by the
      // resolver; the hub reads such a skill from the library by the store's record
      {"a promoted-skill link: write beneath", {{P::symlink, "skills/tool", "../../../skills/tool"}}, op::write,
       "skills/tool/SKILL.md", symlink},
      {"a promoted-skill link: read beneath", {{P::symlink, "skills/tool", "../../../skills/tool"}}, op::read,
       "skills/tool/SKILL.md", symlink},
      // magic links (/proc): symlinks to the kernel, refused like any other
      {"magic link /proc/self/root", {{P::symlink, "proc", "/proc/self/root"}}, op::write, "proc{canary}/x", symlink},
      {"magic link /proc/self/root: read", {{P::symlink, "proc", "/proc/self/root"}}, op::read,
       "proc{canary}/secret.txt", symlink},
      {"magic link /proc/self/cwd", {{P::symlink, "cwd", "/proc/self/cwd"}}, op::mkdir, "cwd/made", symlink},
      {"magic link /proc/self/fd/N onto the canary folder", {{P::symlink, "fd", "/proc/self/fd"}}, op::read,
       "fd/{canary_fd}/secret.txt", symlink},
      {"magic link straight to an fd of the canary", {{P::symlink, "cfd", "/proc/self/fd/{canary_fd}"}}, op::write,
       "cfd/x", symlink},
      {"magic link as the final component", {{P::symlink, "mroot", "/proc/self/root"}}, op::list, "mroot", symlink},
      // not a folder where one is expected; not a file where one is expected
      {"a file as a parent: write", {file}, op::write, "f/x", not_folder},
      {"a file as a parent: read", {file}, op::read, "f/x", not_folder},
      {"a file as the folder to make", {file}, op::mkdir, "f", not_folder},
      {"a folder where a file is written", {folder, folder_file}, op::write, "dir", is_folder},
      {"a folder where a file is adopted", {folder, folder_file}, op::adopt, "dir", is_folder},
      {"a folder removed as a file", {folder, folder_file}, op::remove, "dir", is_folder},
      {"a folder read as a file", {folder, folder_file}, op::read, "dir", not_regular},
      {"a FIFO read (must not block)", {{P::fifo, "fifo"}}, op::read, "fifo", not_regular},
      {"a FIFO listed", {{P::fifo, "fifo"}}, op::list, "fifo", neither},
      {"a FIFO as a parent", {{P::fifo, "fifo"}}, op::mkdir, "fifo/x", not_folder},
      {"a FIFO replaced by a write", {{P::fifo, "fifo"}}, op::write, "fifo", inside},
      {"a socket read", {{P::socket, "sock"}}, op::read, "sock", not_regular},
      {"a device read", {{P::device, "null"}}, op::read, "null", not_regular},
  };
  return cases;
}

/// Plants `p` beneath `root`; false when the system does not let us (mknod without
/// CAP_MKNOD), and the case is then skipped with a warning.
bool plant_one(const arena& a, const planted& p) {
  const fs::path at = a.ws_root / p.rel;
  fs::create_directories(at.parent_path());
  switch (p.kind) {
    case planted::file: plant(at, "planted inside\n"); return true;
    case planted::folder: fs::create_directories(at); return true;
    case planted::symlink: REQUIRE(::symlink(a.expand(p.target).c_str(), at.c_str()) == 0); return true;
    case planted::fifo: REQUIRE(::mkfifo(at.c_str(), 0644) == 0); return true;
    case planted::device: return ::mknod(at.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0;
    case planted::socket: {
      const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
      REQUIRE(s >= 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      REQUIRE(at.string().size() < sizeof addr.sun_path);
      std::strcpy(addr.sun_path, at.c_str());
      const bool ok = ::bind(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
      ::close(s);
      REQUIRE(ok);
      return true;
    }
  }
  return false;
}

const std::string adoptee = "adopted bytes\n";

/// Runs one operation; throws what the workspace throws.
void run(op what, const workspace& ws, const std::string& path, int incoming_fd) {
  switch (what) {
    case op::write: {
      auto w = ws.writer(path);  // the durable_writer: temp O_EXCL, fsync, renameat, fsync
      w.append(std::string_view("pwned"));
      w.commit();
      break;
    }
    case op::read: (void)ws.read(path); break;
    case op::remove: (void)ws.remove(path); break;
    case op::mkdir: (void)ws.open_folder(path, true); break;
    case op::list: (void)ws.list(path); break;
    case op::adopt: ws.adopt(incoming_fd, "adoptee", path); break;
  }
}

/// Restores the resolver choice on scope exit.
struct forced_resolver {
  resolver previous;
  explicit forced_resolver(resolver r) : previous(use_resolver(r)) {}
  forced_resolver(const forced_resolver&) = delete;
  forced_resolver& operator=(const forced_resolver&) = delete;
  ~forced_resolver() { use_resolver(previous); }
};

const char* to_string(resolver r) { return r == resolver::walk ? "walk" : r == resolver::openat2 ? "openat2" : "automatic"; }

/// The resolvers this machine can run: the walk always, openat2 where the kernel has it.
std::vector<resolver> resolvers() {
  if (openat2_available()) return {resolver::openat2, resolver::walk};
  WARN("openat2 does not run here: the corpus runs under the walk only");
  return {resolver::walk};
}

/// Every temp file name beneath `root`, links not followed.
std::vector<std::string> temps_beneath(const fs::path& root) {
  std::vector<std::string> out;
  for (auto& [rel, kind] : snapshot(root))
    if (fs::path(rel).filename().string().starts_with(".meshhub-tmp-")) out.push_back(rel);
  return out;
}

/// Runs the whole corpus under `r` in `a`; returns each case's outcome ("ok" or
/// "<code>: <message>") for comparing the resolvers.
std::vector<std::string> run_corpus(arena& a, resolver r) {
  forced_resolver force(r);
  REQUIRE(active_resolver() == r);
  std::vector<std::string> outcomes;
  for (const auto& c : corpus()) {
    const std::string path = a.expand(c.path);
    CAPTURE(to_string(r), c.name, to_string(c.what), detail::quoted(path.substr(0, 120)), path.size());
    // A fresh workspace per case, with this case's plants.
    fs::remove_all(a.ws_root);
    fs::create_directories(a.ws_root);
    bool planted_all = true;
    for (const auto& p : c.plant) planted_all = plant_one(a, p) && planted_all;
    if (!planted_all) {
      WARN("could not plant for '" << c.name << "' (" << std::strerror(errno) << "): case skipped");
      outcomes.push_back("skipped");
      continue;
    }
    plant(a.incoming / "adoptee", adoptee);
    const workspace ws(a.ws_root, false);
    const auto ws_before = snapshot(a.ws_root);
    const auto outside_before = a.outside();

    std::string message;
    bool refused = false;
    errc code{};
    try {
      run(c.what, ws, path, a.incoming_fd);
    } catch (const error& e) {
      refused = true;
      code = e.code();
      message = e.what();
    }
    outcomes.push_back(refused ? std::to_string(static_cast<int>(code)) + ": " + message : "ok");
    INFO("message: " << message);

    if (!c.why.empty()) {
      // Refused, with invalid_argument, saying why; nothing changed anywhere.
      CHECK(refused);
      CHECK(code == errc::invalid_argument);
      CHECK_THAT(message, Catch::Contains(c.why));
      CHECK(std::none_of(message.begin(), message.end(),
                         [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f; }));
      const auto ws_now = snapshot(a.ws_root);
      INFO("inside the workspace:" << changes(ws_before, ws_now));
      CHECK(ws_now == ws_before);
      CHECK(read_file_unchecked(a.incoming / "adoptee") == adoptee);
    } else {
      // Accepted, and its effect is inside: the file is where its bytes say, a regular
      // file the workspace lists; a removed link is gone as itself.
      CHECK_FALSE(refused);
      const std::string lands = c.lands.empty() ? path : c.lands;
      if (c.what == op::write || c.what == op::adopt) {
        CHECK(is_regular_no_follow(a.ws_root / lands));
        CHECK(read_file_unchecked(a.ws_root / lands) == (c.what == op::write ? "pwned" : adoptee));
        bool listed = false;
        for (auto& f : ws.list()) listed = listed || f.path == lands;
        CHECK(listed);
      } else if (c.what == op::mkdir) {
        CHECK(is_dir_no_follow(a.ws_root / lands));
      } else if (c.what == op::remove) {
        CHECK_FALSE(exists_no_follow(a.ws_root / lands));
      }
    }
    CHECK(temps_beneath(a.ws_root).empty());
    const auto outside_now = a.outside();
    INFO("outside the workspace:" << changes(outside_before, outside_now));
    CHECK(outside_now == outside_before);
  }
  return outcomes;
}

}  // namespace

// ======================================================================================

TEST_CASE("path hostile corpus: every case refused with a clear error or kept inside, canary byte-identical, under both resolvers",
          "[hostile][path][workspace]") {
  REQUIRE(corpus().size() >= 60);
  std::size_t refusals = 0;
  for (auto& c : corpus()) refusals += c.why.empty() ? 0 : 1;
  CHECK(refusals >= 60);

  arena a;
  const auto canary_before = a.outside();
  const auto canary_digest = digest_of(canary_before);
  REQUIRE(canary_before.count("canary/secret.txt") == 1);

  std::map<resolver, std::vector<std::string>> outcomes;
  for (resolver r : resolvers()) outcomes[r] = run_corpus(a, r);

  // The two resolvers answer every case alike: same code, same message.
  if (outcomes.size() == 2) {
    const auto& o2 = outcomes[resolver::openat2];
    const auto& walk = outcomes[resolver::walk];
    REQUIRE(o2.size() == walk.size());
    for (std::size_t i = 0; i < o2.size(); ++i) {
      CAPTURE(corpus()[i].name);
      CHECK(o2[i] == walk[i]);
    }
  }

  // The canary, after the whole corpus under every resolver: byte-identical.
  const auto canary_after = a.outside();
  INFO("outside the workspace:" << changes(canary_before, canary_after));
  CHECK(digest_of(canary_after) == canary_digest);
  CHECK(read_file_unchecked(a.canary / "secret.txt") == canary_secret);
}

TEST_CASE("path resolvers: use_resolver forces each, and automatic picks openat2 where it runs", "[hostile][path]") {
  {
    forced_resolver force(resolver::walk);
    CHECK(active_resolver() == resolver::walk);
    {
      forced_resolver inner(resolver::openat2);
      CHECK(active_resolver() == resolver::openat2);
    }
    CHECK(active_resolver() == resolver::walk);
  }
  CHECK(active_resolver() == (openat2_available() ? resolver::openat2 : resolver::walk));
}

TEST_CASE("path renames stay in one folder: sibling, source and leaf names are single names", "[hostile][path][durable]") {
  arena a;
  const auto outside_before = a.outside();
  workspace ws(a.ws_root);
  const std::vector<std::string> bad_names{"../escaped", "a/b", "..", ".", "", "x\0y"s, std::string(256, 'n')};
  for (const auto& bad : bad_names) {
    CAPTURE(detail::quoted(bad));
    std::string message;
    {
      auto w = ws.writer("dir/file");
      w.append(std::string_view("bytes"));
      w.sync();
      if (!bad.empty()) {  // an empty sibling means "the target itself"
        CHECK(code_of([&] { w.publish(bad); }, &message) == errc::invalid_argument);
        CHECK_THAT(message, Catch::Contains("invalid sibling name"));
      }
    }  // unpublished: the temp file goes
    plant(a.incoming / "adoptee", adoptee);
    CHECK(code_of([&] { ws.adopt(a.incoming_fd, bad, "adopted"); }, &message) == errc::invalid_argument);
    CHECK_THAT(message, Catch::Contains("invalid source name"));
    CHECK(code_of([&] { durable_writer(ws.open_folder("dir", true), bad, "display"); }, &message) ==
          errc::invalid_argument);
    CHECK_THAT(message, Catch::Contains("invalid file name"));
  }
  CHECK(temps_beneath(a.ws_root).empty());
  CHECK_FALSE(exists_no_follow(a.ws_root / "dir/file"));
  CHECK_FALSE(exists_no_follow(a.ws_root / "escaped"));
  CHECK(a.outside() == outside_before);
  // A plain sibling (a conflict copy) lands beside the target.
  auto w = ws.writer("dir/file");
  w.append(std::string_view("copy"));
  w.sync();
  w.publish("file.conflict-n1-3");
  CHECK(read_file_unchecked(a.ws_root / "dir/file.conflict-n1-3") == "copy");
}

// ======================================================================================
// The race
// ======================================================================================

namespace {

/// One run of the race: a swapper thread cycles the folder race/d through "moved away /
/// a symlink to the canary in its place / moved back" while this thread makes `attempts`
/// writes beneath race/d (every other one into a new subfolder, so the create walk races
/// too) and reads race/d/keep every tenth. Every assertion holds however the threads
/// interleave: no timing, no sleeps.
void race(resolver r, bool atomic_swap, long attempts) {
  forced_resolver force(r);
  arena a;
  workspace ws(a.ws_root);
  ws.write("race/d/keep", "inside");
  const auto outside_before = a.outside();
  const int race_fd = ::open((a.ws_root / "race").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(race_fd >= 0);
  if (atomic_swap) REQUIRE(::symlinkat(a.canary.c_str(), race_fd, "swap") == 0);

  std::atomic<bool> stop{false};
  std::atomic<long> cycles{0};
  std::atomic<int> swap_error{0};
  std::thread swapper([&] {
    long extra = 0;
    auto fail = [&](int err) {
      swap_error = err ? err : -1;
      stop = true;
    };
    while (!stop.load()) {
      if (atomic_swap) {  // renameat2(RENAME_EXCHANGE): d is the folder or the symlink, never absent
        if (::renameat2(race_fd, "d", race_fd, "swap", RENAME_EXCHANGE) != 0 ||
            ::renameat2(race_fd, "d", race_fd, "swap", RENAME_EXCHANGE) != 0)
          return fail(errno);
      } else {
        // 1. the folder away; 2. a symlink to the canary in its place (EEXIST when a
        // write made a new d in between); 3. the symlink out and the folder back.
        if (::renameat(race_fd, "d", race_fd, "d.away") != 0) return fail(errno);
        const bool linked = ::symlinkat(a.canary.c_str(), race_fd, "d") == 0;
        if (!linked && errno != EEXIST) return fail(errno);
        if (linked && ::unlinkat(race_fd, "d", 0) != 0) return fail(errno);
        // A write may have made a folder d meanwhile: move it aside (it stays inside).
        // RENAME_NOREPLACE: never replace (so delete) such a folder, even an empty one.
        for (int tries = 0; ::renameat2(race_fd, "d.away", race_fd, "d", RENAME_NOREPLACE) != 0; ++tries) {
          if ((errno != ENOTEMPTY && errno != EEXIST && errno != EISDIR) || tries > 1000) return fail(errno);
          const std::string aside = "d.extra" + std::to_string(extra++);
          if (::renameat(race_fd, "d", race_fd, aside.c_str()) != 0 && errno != ENOENT) return fail(errno);
        }
      }
      cycles.fetch_add(1);
    }
  });
  // Start only once the swapper has gone round once, so it certainly ran.
  while (cycles.load() == 0 && !stop.load()) std::this_thread::yield();

  long writes_ok = 0, refused_symlink = 0, refused_not_folder = 0, absent = 0, reads_ok = 0, reads_refused = 0;
  std::vector<std::string> other_errors, leaked_reads;
  std::set<long> written;
  for (long i = 0; i < attempts; ++i) {
    const std::string name = "f" + std::to_string(i);
    const std::string path = i % 2 ? "race/d/" + name : "race/d/n" + std::to_string(i) + "/" + name;
    try {
      ws.write(path, "inside " + std::to_string(i));
      ++writes_ok;
      written.insert(i);
    } catch (const error& e) {
      const std::string m = e.what();
      if (e.code() == errc::invalid_argument && m.find("symlink") != std::string::npos) ++refused_symlink;
      else if (e.code() == errc::invalid_argument && m.find("not a folder") != std::string::npos) ++refused_not_folder;
      // The folder being made or written was moved or removed meanwhile: "does not exist".
      else if (e.code() == errc::not_found && m.find("does not exist") != std::string::npos) ++absent;
      else if (other_errors.size() < 10) other_errors.push_back(m);
      else other_errors.back() = "(more)";
    }
    if (i % 10 == 0) {
      try {
        const auto got = ws.read("race/d/keep");
        if (got == "inside") ++reads_ok;
        else leaked_reads.push_back(got.substr(0, 40));
      } catch (const error& e) {
        // A symlink in the way, or d absent or a fresh one without keep: refused or absent.
        if (e.code() == errc::invalid_argument || e.code() == errc::not_found) ++reads_refused;
        else if (other_errors.size() < 10) other_errors.push_back(e.what());
      }
    }
  }
  stop = true;
  swapper.join();
  ::close(race_fd);

  INFO("resolver " << to_string(r) << (atomic_swap ? ", RENAME_EXCHANGE" : ", three-step swap") << ": " << cycles
                   << " swap cycles; " << attempts << " writes: " << writes_ok << " ok, " << refused_symlink
                   << " refused (symlink), " << refused_not_folder << " refused (not a folder), " << absent
                   << " absent; reads " << reads_ok
                   << " ok, " << reads_refused << " refused or absent");
  CHECK(swap_error == 0);
  CHECK(cycles >= 1);
  // Every attempt either landed or was refused as invalid_argument naming why.
  CHECK(other_errors.empty());
  for (auto& m : other_errors) UNSCOPED_INFO(m);
  CHECK(writes_ok + refused_symlink + refused_not_folder + absent == attempts);
  CHECK(leaked_reads.empty());

  // Nothing escaped: the canary is byte-identical, nothing appeared outside.
  const auto outside_after = a.outside();
  INFO("outside the workspace:" << changes(outside_before, outside_after));
  CHECK(outside_after == outside_before);
  CHECK(digest_of(outside_after) == digest_of(outside_before));
  CHECK(read_file_unchecked(a.canary / "secret.txt") == canary_secret);

  // Every write that succeeded is inside, exactly once, with its own bytes; no temp file
  // is left; the folder is back with what it held.
  std::set<long> found;
  long misplaced = 0;
  for (auto& [rel, kind] : snapshot(a.ws_root)) {
    const auto leaf = fs::path(rel).filename().string();
    if (kind.starts_with("file:") && leaf.size() > 1 && leaf[0] == 'f') {
      const long i = std::stol(leaf.substr(1));
      misplaced += read_file_unchecked(a.ws_root / rel) == "inside " + std::to_string(i) && found.insert(i).second ? 0 : 1;
    }
  }
  CHECK(misplaced == 0);
  CHECK(found == written);
  CHECK(temps_beneath(a.ws_root).empty());
  CHECK(is_dir_no_follow(a.ws_root / "race/d"));
  CHECK(read_file_unchecked(a.ws_root / "race/d/keep") == "inside");
}

}  // namespace

TEST_CASE("path race: a parent swapped for a symlink to the canary during 10,000 writes", "[hostile][path][race]") {
  for (resolver r : resolvers()) {
    SECTION(std::string("three-step swap, ") + to_string(r)) { race(r, false, 10000); }
    SECTION(std::string("RENAME_EXCHANGE swap, ") + to_string(r)) { race(r, true, 10000); }
  }
}
