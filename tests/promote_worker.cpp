// meshhub_promote_worker: one promoter process of the multi-process skill tests
// (tests/unit/test_skills.cpp). Each is a real process with its own SQLite connection to the
// shared DATA_DIR/meshhub.db and its own named_mutex_lock, as separate hub processes sharing a
// data dir would be. Built with MESHHUB_FAILPOINTS, so MESHHUB_FAILPOINT=skill_<step> in its
// environment SIGKILLs it at that step — inside the skill's lock.
//
//   promote DATA_DIR SESSION NAME   wait for EOF on stdin (the start line), promote, print
//                                   "<kind> <global name> <digest hex> <lock recoveries> <finished>"
//                                   (finished: interrupted promotions it completed first)
//   recover DATA_DIR                recover(); print "recovered <n>"
// Exit status 0 on success, 2 on bad arguments, 1 on errors ("error <message>" on stdout).
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

#include "meshhub/skill/aliases.hpp"

namespace {

void say(const std::string& line) {
  const std::string out = line + "\n";
  [[maybe_unused]] const auto n = ::write(STDOUT_FILENO, out.data(), out.size());  // one write: one whole line
}

std::size_t count(std::string_view text, std::string_view what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string_view::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

int main(int argc, char** argv) try {
  using namespace meshhub;
  const std::string mode = argc > 1 ? argv[1] : "";
  if (!((mode == "promote" && argc == 5) || (mode == "recover" && argc == 3))) {
    std::fprintf(stderr, "usage: see the comment at the top of tests/promote_worker.cpp\n");
    return 2;
  }
  const std::filesystem::path data_dir = argv[2];
  sqlite_store store((data_dir / "meshhub.db").string());
  // The skill's lock, to report its recoveries: the library keeps it (idle) after the
  // promotion, as it keeps up to default_max_idle_locks of them.
  const named_mutex_lock* made = nullptr;
  skill_library_mp library(data_dir, store, [&](std::string_view name) {
    auto lock = make_skill_lock<named_mutex_lock>(name, data_dir);
    made = lock.get();
    return lock;
  });

  if (mode == "recover") {
    say("recovered " + std::to_string(library.recover().size()));
    return 0;
  }
  char buf[64];
  while (::read(STDIN_FILENO, buf, sizeof buf) > 0) {}
  const auto r = library.promote(argv[3], argv[4]);
  say(std::string(to_string(r.kind)) + " " + r.global_name + " " + to_hex(r.content) + " " +
      std::to_string(made ? made->recoveries() : 0) + " " + std::to_string(count(r.detail, "interrupted promotion #")));
  return 0;
} catch (const std::exception& e) {
  std::string line = std::string("error ") + e.what();
  for (auto& c : line)
    if (c == '\n') c = ' ';
  say(line);
  return 1;
}
