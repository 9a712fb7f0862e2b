// fuzz_path: the path resolver. Each input is one path as a client or node would send it.
// It goes through the lexical rules (check_path / path_problem must agree), then through
// a real workspace beneath a scratch folder: open_read, a durable write, a read back, a
// remove — and the raw resolver (detail::open_beneath) with the lexical check skipped.
//
// Planted inside the workspace: symlinks that lead out (relative, absolute, to a file,
// to a parent, two levels up, a self loop) and a FIFO. Beside it: a canary folder. After
// every run the scratch folder must hold exactly the workspace and the canary, the canary
// its original bytes, and every descriptor the resolver handed out must name something
// beneath the workspace (checked through /proc/self/fd). Any breach aborts.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/error.hpp"
#include "meshhub/path.hpp"
#include "meshhub/workspace.hpp"

namespace fs = std::filesystem;
using namespace meshhub;

namespace {

[[noreturn]] void breach(const std::string& what, std::string_view path) {
  std::fprintf(stderr, "fuzz_path: %s (path %s)\n", what.c_str(), detail::quoted(path).c_str());
  std::abort();
}

constexpr std::string_view canary_bytes = "canary: must never change\n";
constexpr std::string_view written_bytes = "written by fuzz_path\n";

/// The scratch tree: S/ws (the workspace) and S/outside/canary.txt.
struct scratch {
  fs::path root, ws_root, outside;
  std::string ws_real;  ///< the workspace's resolved path, as /proc/self/fd shows it
  std::unique_ptr<workspace> ws;
  std::uint64_t runs = 0;

  /// The links and special files planted in the workspace: name → symlink target ("" = FIFO,
  /// "/" = a real folder).
  std::vector<std::pair<std::string, std::string>> planted() const {
    return {{"out", "../outside"},
            {"abs", outside.string()},
            {"canary", "../outside/canary.txt"},
            {"up", ".."},
            {"sub", "/"},
            {"sub/up", "../.."},
            {"sub/loop", "loop"},
            {"sub/out", "../../outside"},
            {"fifo", ""}};
  }

  scratch() {
    // tmpfs when there is one: a durable write fsyncs three times per run.
    std::string base = "/tmp";
    if (const char* t = std::getenv("TMPDIR"); t && *t) base = t;
    else if (::access("/dev/shm", W_OK) == 0) base = "/dev/shm";
    std::string templ = base + "/meshhub-fuzz-path-XXXXXX";
    if (!::mkdtemp(templ.data())) breach("cannot make a scratch folder", templ);
    root = templ;
    ws_root = root / "ws";
    outside = root / "outside";
    fs::create_directories(ws_root);
    fs::create_directories(outside);
    write_file(outside / "canary.txt", canary_bytes);
    ws = std::make_unique<workspace>(ws_root, false);
    ws_real = fs::canonical(ws_root).string();
    replant();
  }
  ~scratch() {
    ws.reset();
    std::error_code ec;
    fs::remove_all(root, ec);
  }

  static void write_file(const fs::path& p, std::string_view bytes) {
    FILE* f = std::fopen(p.c_str(), "wb");
    if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0)
      breach("cannot write " + p.string(), {});
  }

  /// Puts back any planted entry a run replaced (a write over "out" renames a file over
  /// the link, which is allowed: the link itself is replaced, nothing beyond it is touched).
  void replant() {
    std::error_code ec;
    for (auto& [name, target] : planted()) {
      const fs::path at = ws_root / name;
      const auto st = fs::symlink_status(at, ec);
      bool ok = false;
      if (target.empty()) ok = fs::is_fifo(st);
      else if (target == "/") ok = fs::is_directory(st);
      else ok = fs::is_symlink(st) && fs::read_symlink(at, ec) == target;
      if (ok) continue;
      if (fs::exists(st) && !(target == "/" && fs::is_directory(st))) fs::remove_all(at, ec);
      if (target.empty()) ::mkfifo(at.c_str(), 0600);
      else if (target == "/") fs::create_directory(at, ec);
      else fs::create_symlink(target, at, ec);
    }
  }

  /// Everything outside the workspace is as it was.
  void check_canary(std::string_view path) const {
    std::error_code ec;
    std::vector<std::string> top, out;
    for (auto& e : fs::directory_iterator(root, ec)) top.push_back(e.path().filename().string());
    for (auto& e : fs::directory_iterator(outside, ec)) out.push_back(e.path().filename().string());
    std::sort(top.begin(), top.end());
    if (top != std::vector<std::string>{"outside", "ws"}) breach("something was created beside the workspace", path);
    if (out != std::vector<std::string>{"canary.txt"}) breach("something was created in the canary folder", path);
    if (!fs::is_regular_file(fs::symlink_status(outside / "canary.txt", ec))) breach("the canary was replaced", path);
    FILE* f = std::fopen((outside / "canary.txt").c_str(), "rb");
    std::string got(256, '\0');
    got.resize(f ? std::fread(got.data(), 1, got.size(), f) : 0);
    if (f) std::fclose(f);
    if (got != canary_bytes) breach("the canary's bytes changed", path);
  }

  /// A descriptor the resolver returned names something beneath the workspace.
  void check_beneath(int fd, std::string_view path) const {
    char buf[8192];
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    if (n < 0) return;  // no /proc: the canary check still stands
    const std::string_view target(buf, static_cast<std::size_t>(n));
    if (target != ws_real && !target.starts_with(ws_real + "/"))
      breach("resolved to " + std::string(target) + ", outside the workspace " + ws_real, path);
  }

  /// Keeps the tree small: folders the runs created are dropped now and then.
  void prune() {
    std::error_code ec;
    for (auto& e : fs::directory_iterator(ws_root, ec)) fs::remove_all(e.path(), ec);
    replant();
  }
};

scratch& env() {
  static scratch s;  // destroyed at exit: the scratch folder goes with it
  return s;
}

/// The only errors a hostile path may cause; anything else (another exception type, a
/// crash) is a finding.
void expect_refusal(const error& e, std::string_view path, bool lexically_valid) {
  if (!lexically_valid && e.code() != errc::invalid_argument)
    breach(std::string("a lexically invalid path was refused with the wrong code: ") + e.what(), path);
  switch (e.code()) {
    case errc::invalid_argument:
    case errc::not_found:
    case errc::io:  // e.g. ENAMETOOLONG from the kernel, EEXIST racing a folder
      return;
    default: breach(std::string("unexpected error code: ") + e.what(), path);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& s = env();
  const std::string_view path(reinterpret_cast<const char*>(data), size);

  // 1. The lexical rules: check_path throws exactly when path_problem names a problem.
  const std::string why = path_problem(path);
  const bool valid = why.empty();
  try {
    check_path(path);
    if (!valid) breach("check_path accepted a path path_problem refuses: " + why, path);
  } catch (const error& e) {
    if (valid) breach(std::string("check_path refused a path path_problem accepts: ") + e.what(), path);
    if (e.code() != errc::invalid_argument) breach("check_path threw a code other than invalid_argument", path);
  }

  // 2. The workspace: read, write durably, read back, remove.
  try {
    auto fd = s.ws->open_read(path);
    if (!valid) breach("open_read accepted an invalid path", path);
    s.check_beneath(fd.get(), path);
  } catch (const error& e) {
    expect_refusal(e, path, valid);
  }
  if (valid) {
    bool written = false;
    try {
      s.ws->write(path, written_bytes);
      written = true;
    } catch (const error& e) {
      expect_refusal(e, path, valid);
    }
    if (written) {
      try {
        auto fd = s.ws->open_read(path);
        s.check_beneath(fd.get(), path);
        if (s.ws->read(path) != written_bytes) breach("read back other bytes than written", path);
        if (!s.ws->remove(path)) breach("remove did not find the file just written", path);
      } catch (const error& e) {
        breach(std::string("a path written could not be read back or removed: ") + e.what(), path);
      }
    }
  }

  // 3. The raw resolver, without the lexical check (what a caller that forgot it gets).
  const std::string raw(path.substr(0, path.find('\0')));
  if (!raw.empty()) {
    const int fd = detail::open_beneath(s.ws->fd(), raw, O_RDONLY | O_NONBLOCK);
    if (fd >= 0) {
      s.check_beneath(fd, path);
      ::close(fd);
    }
  }

  s.check_canary(path);
  if (++s.runs % 4096 == 0) s.prune();
  else s.replant();
  return 0;
}
