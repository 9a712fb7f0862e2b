// Skill promotion (meshhub/skill/library.hpp) and the store's part of it: a session's
// skills/<name> folder moved into $DATA_DIR/skills/ and replaced by a symlink; identical
// content linked, different content kept as <name>@<hex>; errors that change nothing; a
// promotion failed at each step and finished or rolled back by recovery; threads, and real
// processes (meshhub_promote_worker), promoting one name at once; a holder SIGKILLed inside
// the lock. Judged from outside: lstat, readlink and file bytes, and the store's rows.
#include <catch2/catch.hpp>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/sync/named_mutex.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "meshhub/failpoint.hpp"
#include "meshhub/skill/aliases.hpp"
#include "meshhub/skill/link.hpp"
#include "support/fs.hpp"
#include "support/child_process.hpp"
#include "support/store_fixtures.hpp"
#include "support/temp_dir.hpp"

extern char** environ;

using namespace meshhub;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;
using testing::code_of;
using testing::is_dir_no_follow;
using testing::is_symlink_no_follow;

namespace {

// --- the files of a skill, and judging a tree from outside -------------------------------

/// Plants skills/<name>/ in a session's mirror: SKILL.md, a nested script, a 100 KiB blob
/// and an empty file. `variant` changes one byte of SKILL.md (a different skill content).
void plant_skill(const fs::path& data, const std::string& session, const std::string& name, int variant = 0) {
  const auto dir = data / "sessions" / session / "skills" / name;
  testing::plant(dir / "SKILL.md", "# " + name + "\nUse it well (variant " + std::to_string(variant) + ").\n");
  testing::plant(dir / "lib" / "helper.py", "def helper():\n    return 42\n");
  testing::plant(dir / "data" / "blob.bin", testing::random_bytes(100 * 1024, 7));
  testing::plant(dir / "empty.txt", "");
}

/// Every entry beneath `root`, nothing followed: path → "dir", "link <target>" or the bytes.
std::map<std::string, std::string> tree(const fs::path& root) {
  std::map<std::string, std::string> out;
  if (!testing::exists_no_follow(root)) return out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    const auto rel = fs::relative(it->path(), root).string();
    if (it->is_symlink()) out[rel] = "link " + fs::read_symlink(it->path()).string();
    else if (it->is_directory()) out[rel] = "dir";
    else out[rel] = testing::read_file_unchecked(it->path());
  }
  return out;
}

/// The regular files beneath `root` and their bytes (a skill's identity).
std::map<std::string, std::string> files_of(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto& [rel, what] : tree(root))
    if (what != "dir" && !what.starts_with("link ")) out[rel] = what;
  return out;
}

/// What the library would call the digest, computed the way the brief defines it.
digest digest_of(const fs::path& folder) { return scan(workspace(folder, false)).root(); }

/// Names in $DATA_DIR/skills/ that are not skills: staging folders, temp files.
std::vector<std::string> leftovers(const fs::path& data) {
  std::vector<std::string> out;
  for (auto& n : testing::names_in_unchecked(data / "skills"))
    if (n.starts_with(".")) out.push_back(n);
  return out;
}

/// meshhub temp names a crash may leave in a session's skills/ folder.
std::vector<std::string> temp_links(const fs::path& data, const std::string& session) {
  std::vector<std::string> out;
  for (auto& n : testing::names_in_unchecked(data / "sessions" / session / "skills"))
    if (n.starts_with(".meshhub")) out.push_back(n);
  return out;
}

fs::path session_skill(const fs::path& data, const std::string& session, const std::string& name = "demo") {
  return data / "sessions" / session / "skills" / name;
}

/// REQUIREs that the session's skills/<name> is the library's symlink to `global`.
void require_linked(const fs::path& data, const std::string& session, const std::string& global, const std::string& name = "demo") {
  const auto p = session_skill(data, session, name);
  INFO("session " << session << ": skills/" << name << " → skills/" << global);
  REQUIRE(is_symlink_no_follow(p));
  CHECK(fs::read_symlink(p).string() == "../../../skills/" + global);
  CHECK(fs::canonical(p) == fs::canonical(data / "skills" / global));
}

// --- a data dir, a store and a library over one lock policy -----------------------------

struct null_fixture {
  using lock = null_lock;
};
struct thread_fixture {
  using lock = thread_lock;
};
struct named_fixture {
  using lock = named_mutex_lock;
};
using lock_fixtures = std::tuple<null_fixture, thread_fixture, named_fixture>;
// null_lock excludes nothing: promoting one name from two threads at once races on the
// journal and the disk. RENAME_NOREPLACE still refuses every overwrite, so the loser throws
// instead of destroying a copy, but which one throws is up to the scheduler — not a property
// a test can assert. The concurrent tests therefore run the excluding policies only.
using excluding_fixtures = std::tuple<thread_fixture, named_fixture>;

/// A data dir with its SQLite file, and a library on them that `restart()` rebuilds (a new
/// store connection and a new library: what a crash and a restart leave). Removes the
/// named semaphores its locks created.
template <class Lock>
struct world {
  using library_type = skill_library<Lock, sqlite_store>;
  testing::temp_dir dir{"skills"};
  fs::path data = dir.path() / "data";
  std::mutex keys_mu;
  std::set<std::string> keys;
  std::unique_ptr<sqlite_store> store;
  std::unique_ptr<library_type> library;

  world() {
    fs::create_directories(data);
    restart();
  }
  ~world() {
    arm_failpoint("");
    library.reset();
    store.reset();
    if constexpr (std::is_same_v<Lock, named_mutex_lock>)
      for (auto& k : keys) named_mutex_lock::remove(k, library_type::lock_dir(data));
  }
  world(const world&) = delete;
  world& operator=(const world&) = delete;

  void restart() {
    library.reset();
    store.reset();
    store = std::make_unique<sqlite_store>((data / "meshhub.db").string());
    library = make_library();
  }
  /// Another library on the same data dir and store (another promoter).
  std::unique_ptr<library_type> make_library(std::size_t max_idle_locks = library_type::default_max_idle_locks) {
    return std::make_unique<library_type>(
        data, *store,
        [this](std::string_view name) {
          {
            std::lock_guard g(keys_mu);
            keys.insert(std::string(name));
          }
          return make_skill_lock<Lock>(name, data);
        },
        max_idle_locks);
  }
  promotion_result promote(const std::string& session, const std::string& name = "demo") {
    return library->promote(session, name);
  }
};

/// The store's record of one global skill, if any.
std::optional<global_skill_record> recorded(const sqlite_store& s, const std::string& global) {
  for (auto& g : s.global_skills())
    if (g.global_name == global) return g;
  return std::nullopt;
}

}  // namespace

// ==== the store's part =======================================================================

namespace {

using testing::store_fixtures;

const digest da = sha256_of("a");
const digest db = sha256_of("b");

skill_promotion_record row(std::string session, std::string name, const digest& d, std::string global) {
  return {0, std::move(session), std::move(name), d, std::move(global), skill_promotion_state::done /* ignored */};
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("skills store: the promotion journal — begin / retarget / finish / abandon", "[skills]", store_fixtures) {
  TestType f;
  auto& s = f.store;
  const auto a = s.begin_skill_promotion(row("s1", "demo", da, "demo"));
  const auto b = s.begin_skill_promotion(row("s2", "demo", db, "demo@0123456789ab"));
  const auto c = s.begin_skill_promotion(row("s3", "other", da, "other"));
  CHECK(a < b);
  CHECK(b < c);

  auto open = s.unfinished_skill_promotions("demo");
  REQUIRE(open.size() == 2);
  CHECK(open[0].id == a);
  CHECK(open[0].state == skill_promotion_state::begun);  // whatever the caller passed
  CHECK(open[0].session == "s1");
  CHECK(open[0].content == da);
  CHECK(open[1].global_name == "demo@0123456789ab");
  CHECK(s.unfinished_skill_promotions("").size() == 3);

  s.retarget_skill_promotion(b, "demo@fedcba987654", da);
  CHECK(s.unfinished_skill_promotions("demo")[1].global_name == "demo@fedcba987654");
  CHECK(s.unfinished_skill_promotions("demo")[1].content == da);

  CHECK(s.global_skills().empty());  // nothing is recorded before a promotion is done
  CHECK(s.finish_skill_promotion(a));
  CHECK_FALSE(s.finish_skill_promotion(a));  // idempotent: recovery may repeat it
  CHECK(s.abandon_skill_promotion(c));
  CHECK_FALSE(s.finish_skill_promotion(c));  // an abandoned row stays abandoned
  CHECK_FALSE(s.abandon_skill_promotion(a));
  CHECK_FALSE(s.finish_skill_promotion(999));
  s.retarget_skill_promotion(a, "elsewhere", db);  // a finished row is left alone

  const auto history = s.skill_promotions("");
  REQUIRE(history.size() == 3);
  CHECK(history[0].state == skill_promotion_state::done);
  CHECK(history[0].global_name == "demo");
  CHECK(history[1].state == skill_promotion_state::begun);
  CHECK(history[2].state == skill_promotion_state::abandoned);
  CHECK(s.skill_promotions("other").size() == 1);
  CHECK(s.unfinished_skill_promotions("").size() == 1);

  const auto skills = s.global_skills();
  REQUIRE(skills.size() == 1);
  CHECK(skills[0].global_name == "demo");
  CHECK(skills[0].name == "demo");
  CHECK(skills[0].content == da);
  CHECK(skills[0].sessions == std::vector<std::string>{"s1"});
}

TEMPLATE_LIST_TEST_CASE("skills store: global skills list the sessions linking them", "[skills]", store_fixtures) {
  TestType f;
  auto& s = f.store;
  for (const char* session : {"s3", "s1", "s2"}) s.finish_skill_promotion(s.begin_skill_promotion(row(session, "demo", da, "demo")));
  s.finish_skill_promotion(s.begin_skill_promotion(row("s4", "demo", db, "demo@aaaaaaaaaaaa")));
  s.finish_skill_promotion(s.begin_skill_promotion(row("s1", "zeta", db, "zeta")));
  const auto skills = s.global_skills();
  REQUIRE(skills.size() == 3);
  CHECK(skills[0].global_name == "demo");
  CHECK(skills[0].sessions == std::vector<std::string>{"s1", "s2", "s3"});
  CHECK(skills[1].global_name == "demo@aaaaaaaaaaaa");
  CHECK(skills[1].name == "demo");
  CHECK(skills[1].content == db);
  CHECK(skills[1].sessions == std::vector<std::string>{"s4"});
  CHECK(skills[2].sessions == std::vector<std::string>{"s1"});

  // A session that promotes the name again (a new version) moves its link.
  s.finish_skill_promotion(s.begin_skill_promotion(row("s2", "demo", db, "demo@aaaaaaaaaaaa")));
  const auto after = s.global_skills();
  CHECK(after[0].sessions == std::vector<std::string>{"s1", "s3"});
  CHECK(after[1].sessions == std::vector<std::string>{"s2", "s4"});
}

TEMPLATE_LIST_TEST_CASE("skills store: a link entry keeps its target, and removing it ends the session's link", "[skills]",
                        store_fixtures) {
  // The store keeps rows: the commit pipeline, which knows the path was a link, names the
  // link a change ends (`ends_skill_link`), and the store forgets it in the same transaction.
  TestType f;
  auto& s = f.store;
  for (const char* session : {"s1", "s2"}) {
    s.create_session(session);
    s.finish_skill_promotion(s.begin_skill_promotion(row(session, "demo", da, "demo")));
    s.commit_change(change{session, "skills/demo", 0, link_digest("demo"), false, {}, {}, "demo", {}});
  }
  const auto rec = s.file("s1", "skills/demo");
  REQUIRE(rec);
  CHECK(rec->link == "demo");
  CHECK(rec->content == link_digest("demo"));
  CHECK(s.files("s1").at(0).link == "demo");

  // Removing s1's link: s1 no longer links the skill, s2 still does; the tombstone has no target.
  s.commit_change(change{"s1", "skills/demo", 0, {}, true, {}, {}, {}, "demo"});
  CHECK(s.file("s1", "skills/demo")->link.empty());
  CHECK(s.global_skills().at(0).sessions == std::vector<std::string>{"s2"});
  // A file at a path that was never a link leaves the links alone.
  s.commit_change(change{"s2", "skills/other", 3, da, false, {}, {}, {}, {}});
  CHECK(s.global_skills().at(0).sessions == std::vector<std::string>{"s2"});
}

TEST_CASE("skills store: sqlite keeps the journal across a reopen and never reuses an id", "[skills]") {
  testing::temp_dir dir{"skills-store"};
  const auto file = (dir / "meshhub.db").string();
  std::uint64_t last = 0;
  {
    sqlite_store s(file);
    s.finish_skill_promotion(s.begin_skill_promotion(row("s1", "demo", da, "demo")));
    s.begin_skill_promotion(row("s2", "demo", da, "demo"));
    last = s.begin_skill_promotion(row("s3", "demo", db, "demo@aaaaaaaaaaaa"));
    s.abandon_skill_promotion(last);
  }
  sqlite_store s(file);
  REQUIRE(s.unfinished_skill_promotions("demo").size() == 1);
  CHECK(s.unfinished_skill_promotions("demo")[0].session == "s2");
  CHECK(s.global_skills().size() == 1);
  CHECK(s.begin_skill_promotion(row("s4", "demo", da, "demo")) > last);  // ids name staging folders
  CHECK(s.integrity_check() == "ok");
}

TEST_CASE("skills store: sqlite migrates a v2 database to the current schema and keeps its rows", "[skills]") {
  testing::temp_dir dir{"skills-store"};
  const auto file = (dir / "meshhub.db").string();
  {
    sqlite_db db(file);
    for (int v = 0; v < 2; ++v)
      db.transaction([&] {
        db.exec(sqlite_store::schema_steps[v]);
        db.exec(("PRAGMA user_version = " + std::to_string(v + 1)).c_str());
      });
    db.exec("INSERT INTO sessions VALUES ('old', 0)");
  }
  sqlite_store s(file);
  CHECK(sqlite_store::schema_version == 5);
  CHECK(s.session_exists("old"));
  CHECK(s.global_skills().empty());
  s.finish_skill_promotion(s.begin_skill_promotion(row("old", "demo", da, "demo")));
  CHECK(s.global_skills().size() == 1);
  CHECK(s.integrity_check() == "ok");
  CHECK(sqlite_db(file).user_version() == sqlite_store::schema_version);
}

TEST_CASE("skills store: stores opened at once on a fresh file all open and migrate it once", "[skills]") {
  // Several hub processes (here: connections on threads, which SQLite locks alike) starting
  // on a new data dir: each sees version 0, and only one may run each migration step; each
  // asks for WAL, which SQLite refuses at once (SQLITE_BUSY, no busy handler) to all but one.
  constexpr int openers = 8, repeats = 20;
  for (int round = 0; round < repeats; ++round) {
    testing::temp_dir dir{"skills-store"};
    const auto file = (dir / "meshhub.db").string();
    std::latch start(openers);
    std::mutex mu;
    std::vector<std::string> failures;
    std::vector<std::thread> pool;
    for (int i = 0; i < openers; ++i)
      pool.emplace_back([&] {
        start.arrive_and_wait();
        try {
          sqlite_store s(file);
          s.begin_skill_promotion(row("s", "demo", da, "demo"));
        } catch (const std::exception& e) {
          std::lock_guard g(mu);
          failures.emplace_back(e.what());
        }
      });
    for (auto& t : pool) t.join();
    INFO("round " << round << ", first failure: " << (failures.empty() ? "" : failures[0]));
    REQUIRE(failures.empty());
    sqlite_store s(file);
    CHECK(s.unfinished_skill_promotions("demo").size() == std::size_t{openers});
    CHECK(s.integrity_check() == "ok");
  }
}

// ==== promotion in one process ================================================================

TEMPLATE_LIST_TEST_CASE("skills: promote moves the folder into the library and leaves a link", "[skills]", lock_fixtures) {
  world<typename TestType::lock> w;
  plant_skill(w.data, "s1", "demo");
  const auto source = files_of(session_skill(w.data, "s1"));
  const auto expected = digest_of(session_skill(w.data, "s1"));

  const auto r = w.promote("s1");
  CHECK(r.kind == promotion_kind::promoted);
  CHECK(r.global_name == "demo");
  CHECK(r.content == expected);
  CHECK(r.promotion_id != 0);
  INFO(r.detail);

  CHECK(files_of(w.data / "skills" / "demo") == source);  // byte-identical, every file
  CHECK(testing::names_in(w.data / "skills") == std::vector<std::string>{"demo"});
  require_linked(w.data, "s1", "demo");
  CHECK(testing::read_file(w.data / "sessions/s1/skills/demo/SKILL.md") == source.at("SKILL.md"));  // through the link
  CHECK(temp_links(w.data, "s1").empty());

  const auto skill = recorded(*w.store, "demo");
  REQUIRE(skill);
  CHECK(skill->content == expected);
  CHECK(skill->name == "demo");
  CHECK(skill->sessions == std::vector<std::string>{"s1"});
  CHECK(w.library->skills().size() == 1);
  const auto history = w.store->skill_promotions("demo");
  REQUIRE(history.size() == 1);
  CHECK(history[0].state == skill_promotion_state::done);
  CHECK(history[0].content == expected);

  // Again: nothing to do.
  const auto again = w.promote("s1");
  CHECK(again.kind == promotion_kind::already_linked);
  CHECK(again.global_name == "demo");
  CHECK(again.content == expected);
  CHECK(w.store->skill_promotions("demo").size() == 1);
}

TEMPLATE_LIST_TEST_CASE("skills: identical content is linked and different content kept beside it", "[skills]", lock_fixtures) {
  world<typename TestType::lock> w;
  plant_skill(w.data, "s1", "demo");
  plant_skill(w.data, "s2", "demo");
  plant_skill(w.data, "s3", "demo", 1);
  plant_skill(w.data, "s4", "demo", 1);
  const auto original = files_of(session_skill(w.data, "s1"));
  const auto variant = files_of(session_skill(w.data, "s3"));
  const auto variant_digest = digest_of(session_skill(w.data, "s3"));
  const auto versioned = "demo@" + to_hex(variant_digest).substr(0, 12);

  CHECK(w.promote("s1").kind == promotion_kind::promoted);

  const auto same = w.promote("s2");
  CHECK(same.kind == promotion_kind::linked);
  CHECK(same.global_name == "demo");
  require_linked(w.data, "s2", "demo");

  const auto other = w.promote("s3");
  CHECK(other.kind == promotion_kind::conflict);
  CHECK(other.global_name == versioned);
  CHECK(other.content == variant_digest);
  CHECK(other.detail.find("both kept") != std::string::npos);
  require_linked(w.data, "s3", versioned);

  // The variant again: linked to the kept copy; the result names it, so the caller sees it
  // differs from the library's "demo".
  const auto variant_again = w.promote("s4");
  CHECK(variant_again.kind == promotion_kind::linked);
  CHECK(variant_again.global_name == versioned);
  require_linked(w.data, "s4", versioned);

  // Both survive, each byte-identical to its source; nothing else is in the library.
  CHECK(files_of(w.data / "skills" / "demo") == original);
  CHECK(files_of(w.data / "skills" / versioned) == variant);
  CHECK(testing::names_in(w.data / "skills") == std::vector<std::string>{"demo", versioned});

  const auto skills = w.library->skills();
  REQUIRE(skills.size() == 2);
  CHECK(skills[0].global_name == "demo");
  CHECK(skills[0].sessions == std::vector<std::string>{"s1", "s2"});
  CHECK(skills[1].global_name == versioned);
  CHECK(skills[1].name == "demo");
  CHECK(skills[1].content == variant_digest);
  CHECK(skills[1].sessions == std::vector<std::string>{"s3", "s4"});
}

TEMPLATE_LIST_TEST_CASE("skills: a refused promotion changes nothing", "[skills]", lock_fixtures) {
  world<typename TestType::lock> w;
  plant_skill(w.data, "s1", "demo");
  plant_skill(w.data, "s1", "nomd");
  fs::remove(session_skill(w.data, "s1", "nomd") / "SKILL.md");
  plant_skill(w.data, "s1", "mddir");
  fs::remove(session_skill(w.data, "s1", "mddir") / "SKILL.md");
  fs::create_directories(session_skill(w.data, "s1", "mddir") / "SKILL.md");
  plant_skill(w.data, "s1", "mdlink");
  fs::remove(session_skill(w.data, "s1", "mdlink") / "SKILL.md");
  fs::create_symlink("../demo/SKILL.md", session_skill(w.data, "s1", "mdlink") / "SKILL.md");
  testing::plant(session_skill(w.data, "s1", "file"), "not a folder");
  fs::create_symlink("../../../../elsewhere", session_skill(w.data, "s1", "foreign"));
  fs::create_symlink("../../../skills/demo", session_skill(w.data, "s1", "lookalike"));  // no such global skill
  fs::create_directories(w.data / "sessions" / "bare");  // a session without skills/
  const auto before = tree(w.data / "sessions");
  const auto library_before = tree(w.data / "skills");

  struct refusal {
    std::string session, name;
    errc code;
  };
  const std::vector<refusal> refusals{
      {"s1", "", errc::invalid_argument},
      {"s1", "../demo", errc::invalid_argument},
      {"s1", "demo/x", errc::invalid_argument},
      {"s1", ".hidden", errc::invalid_argument},
      {"s1", "demo@0123456789ab", errc::invalid_argument},  // '@' is the library's, for kept conflicts
      {"s1", std::string(129, 'a'), errc::invalid_argument},
      {"../s1", "demo", errc::invalid_argument},
      {"", "demo", errc::invalid_argument},
      {"nosuch", "demo", errc::not_found},      // no session folder
      {"bare", "demo", errc::not_found},        // no skills/ folder
      {"s1", "absent", errc::not_found},        // no skills/absent
      {"s1", "nomd", errc::not_found},          // no SKILL.md
      {"s1", "mddir", errc::not_found},         // SKILL.md is a folder
      {"s1", "mdlink", errc::not_found},        // SKILL.md is a symlink
      {"s1", "file", errc::invalid_argument},   // skills/file is a file
      {"s1", "foreign", errc::invalid_argument},    // a symlink this library did not make
      {"s1", "lookalike", errc::invalid_argument},  // ours in form, but names no global skill
  };
  for (const auto& r : refusals) {
    std::string message;
    INFO("promote(" << r.session << ", " << r.name << ")");
    CHECK(code_of([&] { w.promote(r.session, r.name); }, &message) == r.code);
    INFO(message);
    CHECK_FALSE(message.empty());
  }
  CHECK(tree(w.data / "sessions") == before);
  CHECK(tree(w.data / "skills") == library_before);
  CHECK(w.store->skill_promotions("").empty());  // nothing was even journaled
  CHECK(w.store->global_skills().empty());
}

TEMPLATE_LIST_TEST_CASE("skills: a promotion failed at each step is finished or rolled back at restart", "[skills]", lock_fixtures) {
  const std::string scenario = GENERATE(as<std::string>{}, "new", "identical", "different");
  const std::string step = GENERATE(as<std::string>{}, "skill_journaled", "skill_staged", "skill_published", "skill_linked");
  DYNAMIC_SECTION(scenario << " content, failed at " << step) {
    world<typename TestType::lock> w;
    if (scenario != "new") {
      plant_skill(w.data, "s0", "demo");
      REQUIRE(w.promote("s0").kind == promotion_kind::promoted);
    }
    plant_skill(w.data, "s1", "demo", scenario == "different" ? 1 : 0);
    const auto source = files_of(session_skill(w.data, "s1"));
    const auto d = digest_of(session_skill(w.data, "s1"));
    const std::string global = scenario == "different" ? "demo@" + to_hex(d).substr(0, 12) : "demo";
    const auto library_before = tree(w.data / "skills");

    arm_failpoint(step, 1, failpoint_action::fail);
    CHECK(code_of([&] { w.promote("s1"); }) == errc::io);
    arm_failpoint("");
    w.restart();

    const auto outcomes = w.library->recover();
    REQUIRE(outcomes.size() == 1);
    INFO(outcomes[0].detail);
    CHECK(outcomes[0].promotion.session == "s1");
    if (step == "skill_journaled") {
      // Nothing had moved: rolled back, the session keeps its folder as it was.
      CHECK(outcomes[0].promotion.state == skill_promotion_state::abandoned);
      REQUIRE(is_dir_no_follow(session_skill(w.data, "s1")));
      CHECK(files_of(session_skill(w.data, "s1")) == source);
      CHECK(tree(w.data / "skills") == library_before);
      // ...and it can be promoted as if nothing had happened.
      const auto r = w.promote("s1");
      CHECK(r.kind == (scenario == "new" ? promotion_kind::promoted
                       : scenario == "identical" ? promotion_kind::linked
                                                 : promotion_kind::conflict));
    } else {
      CHECK(outcomes[0].promotion.state == skill_promotion_state::done);
      CHECK(outcomes[0].promotion.global_name == global);
    }
    // Either way, now: linked, byte-identical, recorded, nothing half-moved or left over.
    require_linked(w.data, "s1", global);
    CHECK(files_of(w.data / "skills" / global) == source);
    if (scenario != "new") CHECK(files_of(w.data / "skills" / "demo") == files_of(session_skill(w.data, "s0")));
    CHECK(leftovers(w.data).empty());
    CHECK(temp_links(w.data, "s1").empty());
    CHECK(w.store->unfinished_skill_promotions("").empty());
    const auto skill = recorded(*w.store, global);
    REQUIRE(skill);
    CHECK(skill->content == d);
    CHECK(std::count(skill->sessions.begin(), skill->sessions.end(), "s1") == 1);
    CHECK(w.library->recover().empty());  // idempotent
  }
}

TEMPLATE_LIST_TEST_CASE("skills: the next promoter of a name finishes what a failed one began", "[skills]", lock_fixtures) {
  world<typename TestType::lock> w;
  plant_skill(w.data, "s1", "demo");
  plant_skill(w.data, "s2", "demo");
  arm_failpoint("skill_staged", 1, failpoint_action::fail);
  CHECK(code_of([&] { w.promote("s1"); }) == errc::io);
  arm_failpoint("");
  CHECK(leftovers(w.data).size() == 1);  // the staged folder, named by the journal

  // No restart, no recover(): promoting the name again finishes s1's promotion first.
  const auto r = w.promote("s2");
  INFO(r.detail);
  CHECK(r.kind == promotion_kind::linked);
  CHECK(r.detail.find("interrupted promotion #") != std::string::npos);
  require_linked(w.data, "s1", "demo");
  require_linked(w.data, "s2", "demo");
  CHECK(leftovers(w.data).empty());
  CHECK(w.store->unfinished_skill_promotions("").empty());
}

TEMPLATE_LIST_TEST_CASE("skills: an interrupted removal of a redundant staged copy is finished", "[skills]", lock_fixtures) {
  // The library held the content already, so publishing removes the staged copy; a crash
  // in the middle of that removal leaves part of it. Recovery must not take the part for a
  // new skill: the row's target holds the row's digest, so the part is removed.
  world<typename TestType::lock> w;
  plant_skill(w.data, "s0", "demo");
  plant_skill(w.data, "s1", "demo");
  REQUIRE(w.promote("s0").kind == promotion_kind::promoted);
  arm_failpoint("skill_staged", 1, failpoint_action::fail);
  CHECK(code_of([&] { w.promote("s1"); }) == errc::io);
  arm_failpoint("");
  const auto staged = leftovers(w.data);
  REQUIRE(staged.size() == 1);
  fs::remove_all(w.data / "skills" / staged[0] / "lib");  // what the removal had done so far
  fs::remove(w.data / "skills" / staged[0] / "SKILL.md");

  w.restart();
  const auto outcomes = w.library->recover();
  REQUIRE(outcomes.size() == 1);
  CHECK(outcomes[0].promotion.state == skill_promotion_state::done);
  CHECK(testing::names_in(w.data / "skills") == std::vector<std::string>{"demo"});
  require_linked(w.data, "s1", "demo");
  CHECK(files_of(w.data / "skills" / "demo") == files_of(session_skill(w.data, "s0")));
}

TEMPLATE_LIST_TEST_CASE("skills: a staged copy that differs from its journal is published by its own digest", "[skills]", lock_fixtures) {
  // The journal says digest D, but the staged folder holds other bytes (written after the
  // digest was taken): the library keeps what is there — journaled first — never D's name.
  world<typename TestType::lock> w;
  plant_skill(w.data, "s0", "demo");
  REQUIRE(w.promote("s0").kind == promotion_kind::promoted);
  plant_skill(w.data, "s1", "demo");  // identical: the journal says "link to demo"
  arm_failpoint("skill_staged", 1, failpoint_action::fail);
  CHECK(code_of([&] { w.promote("s1"); }) == errc::io);
  arm_failpoint("");
  const auto staged = leftovers(w.data);
  REQUIRE(staged.size() == 1);
  testing::plant(w.data / "skills" / staged[0] / "late.txt", "written after the digest");
  const auto content = files_of(w.data / "skills" / staged[0]);
  const auto d = digest_of(w.data / "skills" / staged[0]);
  const auto global = "demo@" + to_hex(d).substr(0, 12);

  w.restart();
  const auto outcomes = w.library->recover();
  REQUIRE(outcomes.size() == 1);
  CHECK(outcomes[0].promotion.state == skill_promotion_state::done);
  CHECK(outcomes[0].promotion.global_name == global);
  CHECK(outcomes[0].promotion.content == d);
  require_linked(w.data, "s1", global);
  CHECK(files_of(w.data / "skills" / global) == content);
  CHECK(files_of(w.data / "skills" / "demo") == files_of(session_skill(w.data, "s0")));
  REQUIRE(recorded(*w.store, global));
  CHECK(recorded(*w.store, global)->content == d);
  CHECK(leftovers(w.data).empty());
}

TEMPLATE_LIST_TEST_CASE("skills: recover() leaves a row it cannot settle safely and settles the others", "[skills]", lock_fixtures) {
  // A staged copy whose own digest maps to names both holding other content (a 48-bit
  // collision of the versioned name, or hands in the library): nothing may be removed.
  world<typename TestType::lock> w;
  plant_skill(w.data, "s1", "demo");
  plant_skill(w.data, "s2", "other");
  const auto staged_digest = digest_of(session_skill(w.data, "s1"));
  const auto versioned = "demo@" + to_hex(staged_digest).substr(0, 12);
  testing::plant(w.data / "skills" / "demo" / "SKILL.md", "someone else's demo\n");
  testing::plant(w.data / "skills" / versioned / "SKILL.md", "a collision\n");
  const auto stuck = w.store->begin_skill_promotion({0, "s1", "demo", staged_digest, "demo", {}});
  fs::rename(session_skill(w.data, "s1"), w.data / "skills" / (".staging-" + std::to_string(stuck)));
  const auto staged = files_of(w.data / "skills" / (".staging-" + std::to_string(stuck)));
  w.store->begin_skill_promotion({0, "s2", "other", digest_of(session_skill(w.data, "s2", "other")), "other", {}});

  const auto outcomes = w.library->recover();
  REQUIRE(outcomes.size() == 2);
  CHECK(outcomes[0].promotion.id == stuck);
  CHECK(outcomes[0].promotion.state == skill_promotion_state::begun);
  CHECK(outcomes[0].detail.find("left unfinished") != std::string::npos);
  CHECK(outcomes[1].promotion.state == skill_promotion_state::abandoned);  // nothing of it had moved
  CHECK(files_of(w.data / "skills" / (".staging-" + std::to_string(stuck))) == staged);  // untouched
  CHECK(testing::read_file(w.data / "skills" / "demo" / "SKILL.md") == "someone else's demo\n");
  CHECK(testing::read_file(w.data / "skills" / versioned / "SKILL.md") == "a collision\n");
  REQUIRE(w.store->unfinished_skill_promotions("").size() == 1);

  // Promotions of that name refuse, saying why; other names go on.
  plant_skill(w.data, "s3", "demo", 2);
  std::string why;
  CHECK(code_of([&] { w.promote("s3"); }, &why) == errc::already_exists);
  CHECK(why.find("interrupted promotion #" + std::to_string(stuck)) != std::string::npos);
  CHECK(is_dir_no_follow(session_skill(w.data, "s3")));
  CHECK(w.promote("s2", "other").kind == promotion_kind::promoted);
}

TEMPLATE_LIST_TEST_CASE("skills: threads promoting one name at once", "[skills]", excluding_fixtures) {
  const bool two_contents = GENERATE(false, true);
  const bool library_per_thread = GENERATE(false, true);  // one shared object, or one each (one lock object each)
  if (library_per_thread && std::is_same_v<typename TestType::lock, thread_lock>) return;  // thread_lock excludes within one object only
  // 0: no idle lock is kept, so the shared lock object lives exactly as long as some thread uses it.
  const std::size_t max_idle = GENERATE(std::size_t{0}, std::size_t{64});
  world<typename TestType::lock> w;
  w.library = w.make_library(max_idle);
  constexpr int threads = 8;
  for (int i = 0; i < threads; ++i) plant_skill(w.data, "s" + std::to_string(i), "demo", two_contents ? i % 2 : 0);
  std::vector<std::unique_ptr<typename world<typename TestType::lock>::library_type>> own;
  for (int i = 0; library_per_thread && i < threads; ++i) own.push_back(w.make_library(max_idle));

  std::latch start(threads);
  std::vector<std::optional<promotion_result>> results(threads);
  std::vector<std::string> errors(threads);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&, i] {
      start.arrive_and_wait();
      try {
        auto& library = library_per_thread ? *own[static_cast<std::size_t>(i)] : *w.library;
        results[static_cast<std::size_t>(i)] = library.promote("s" + std::to_string(i), "demo");
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(i)] = e.what();
      }
    });
  for (auto& t : pool) t.join();

  std::map<promotion_kind, int> kinds;
  for (int i = 0; i < threads; ++i) {
    INFO("s" << i << ": " << errors[static_cast<std::size_t>(i)]);
    REQUIRE(results[static_cast<std::size_t>(i)]);
    ++kinds[results[static_cast<std::size_t>(i)]->kind];
    require_linked(w.data, "s" + std::to_string(i), results[static_cast<std::size_t>(i)]->global_name);
  }
  CHECK(kinds[promotion_kind::promoted] == 1);
  CHECK(kinds[promotion_kind::conflict] == (two_contents ? 1 : 0));
  CHECK(kinds[promotion_kind::linked] == threads - 1 - (two_contents ? 1 : 0));
  CHECK(testing::names_in(w.data / "skills").size() == (two_contents ? 2u : 1u));
  CHECK(w.store->global_skills().size() == (two_contents ? 2u : 1u));
  CHECK(w.store->unfinished_skill_promotions("").empty());
  CHECK(w.library->locks_held() <= std::max<std::size_t>(max_idle, 1));
}

TEST_CASE("skills: a library keeps at most max_idle_locks idle locks (descriptors stay bounded)", "[skills]") {
  // One named_mutex_lock per skill name ever promoted would hold a lease descriptor each:
  // a hub with thousands of skills would run out of descriptors.
  auto lease_fds = [] {
    std::size_t n = 0;
    for (auto& e : fs::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      const auto target = fs::read_symlink(e.path(), ec);
      if (!ec && target.extension() == ".lease" && target.string().find("meshhub-skills-") != std::string::npos) ++n;
    }
    return n;
  };
  world<named_mutex_lock> w;
  w.library = w.make_library(2);
  for (int i = 0; i < 6; ++i) {
    const auto name = "skill" + std::to_string(i);
    plant_skill(w.data, "s", name);
    CHECK(w.promote("s", name).kind == promotion_kind::promoted);
    CHECK(w.library->locks_held() <= 2);
    CHECK(lease_fds() <= 2);
  }
  // A name whose lock was dropped is locked again as before.
  plant_skill(w.data, "t", "skill0");
  CHECK(w.promote("t", "skill0").kind == promotion_kind::linked);
  CHECK(w.library->locks_held() == 2);
}

// ==== promotion across real processes =========================================================

namespace {

/// A meshhub_promote_worker (tests/promote_worker.cpp), with `failpoint` armed in it (or
/// none, whatever this process's environment says).
struct promoter : testing::child_process {
  explicit promoter(std::vector<std::string> args, const std::string& failpoint = {})
      : child_process(MESHHUB_PROMOTE_WORKER_BIN, std::move(args), {{"MESHHUB_FAILPOINT", failpoint}}) {}
  void start() { close_stdin(); }  ///< closing its stdin is the start signal
};

/// A worker's answer: "<kind> <global> <digest hex> <lock recoveries> <finished>".
struct answer {
  std::string kind, global, hex;
  int recoveries = -1, finished = -1;
};
std::optional<answer> parse(const std::optional<std::string>& line) {
  if (!line) return std::nullopt;
  answer a;
  std::istringstream in(*line);
  if (!(in >> a.kind >> a.global >> a.hex >> a.recoveries >> a.finished) || a.kind == "error") return std::nullopt;
  return a;
}

/// Rounds of the 16-process test; MESHHUB_SKILL_ROUNDS=N for more (or fewer).
int rounds() {
  const char* env = std::getenv("MESHHUB_SKILL_ROUNDS");
  const int n = env ? std::atoi(env) : 0;
  return n > 0 ? n : 50;
}

/// The folder fast rounds of the 16-process test run in: $MESHHUB_SKILL_TMPDIR, else
/// /dev/shm (tmpfs: the same rename, flock and symlink semantics, but fsync costs nothing,
/// so promotions are ~10x shorter and the 16 processes meet at the lock far more often),
/// else $TMPDIR.
fs::path fast_base() {
  if (const char* env = std::getenv("MESHHUB_SKILL_TMPDIR"); env && *env) return env;
  if (::access("/dev/shm", W_OK | X_OK) == 0 && is_dir_no_follow("/dev/shm")) return "/dev/shm";
  const char* tmp = std::getenv("TMPDIR");
  return tmp && *tmp ? tmp : "/tmp";
}

/// A fresh data dir for one multi-process round, under `base` ($TMPDIR by default); removes
/// itself and its semaphore at the end.
struct process_round {
  fs::path root, data;
  explicit process_round(const fs::path& base = {}) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = (base.empty() ? fs::path(tmp && *tmp ? tmp : "/tmp") : base).string() + "/meshhub-skills-mp-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    root = pattern;
    data = root / "data";
    fs::create_directories(data);
  }
  ~process_round() {
    named_mutex_lock::remove("demo", skill_library_mp::lock_dir(data));
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  process_round(const process_round&) = delete;
  process_round& operator=(const process_round&) = delete;
  std::vector<std::string> promote_args(const std::string& session) const {
    return {"promote", data.string(), session, "demo"};
  }
};

/// Rounds of the 16-process test that run on $TMPDIR (the real disk) before the rest go
/// to `fast_base()`.
constexpr int disk_rounds = 3;

}  // namespace

TEST_CASE("skills: 16 processes promote one name at once (50 rounds)", "[skills]") {
  const bool two_contents = GENERATE(false, true);
  constexpr int processes = 16;
  const int n_rounds = rounds();
  const auto began = clock_type::now();
  const auto fast = fast_base();
  for (int round = 0; round < n_rounds; ++round) {
    INFO("round " << round << (two_contents ? ", two contents" : ", one content"));
    process_round w(round < disk_rounds ? fs::path() : fast);
    std::map<int, std::map<std::string, std::string>> sources;  // variant → files
    for (int i = 0; i < processes; ++i) {
      const int variant = two_contents ? i % 2 : 0;
      plant_skill(w.data, "s" + std::to_string(i), "demo", variant);
      sources[variant] = files_of(session_skill(w.data, "s" + std::to_string(i)));
    }
    std::map<int, digest> digests;
    for (auto& [variant, files] : sources) digests[variant] = digest_of(session_skill(w.data, "s" + std::to_string(variant)));

    std::vector<std::unique_ptr<promoter>> workers;
    for (int i = 0; i < processes; ++i) workers.push_back(std::make_unique<promoter>(w.promote_args("s" + std::to_string(i))));
    for (auto& p : workers) p->start();  // all at once: they meet at the lock

    const auto deadline = clock_type::now() + 60s;
    std::map<std::string, int> kinds;
    std::map<std::string, std::string> global_of;  // session → the global it was linked to
    for (int i = 0; i < processes; ++i) {
      const auto line = workers[static_cast<std::size_t>(i)]->read_line(deadline);
      INFO("s" << i << " answered: " << line.value_or("<nothing>"));
      const auto a = parse(line);
      REQUIRE(a);
      ++kinds[a->kind];
      global_of["s" + std::to_string(i)] = a->global;
      CHECK(a->hex == to_hex(digests[two_contents ? i % 2 : 0]));
      CHECK(a->recoveries == 0);  // nobody died
      CHECK(workers[static_cast<std::size_t>(i)]->wait(deadline) == 0);
    }
    // Exactly one copy per content, complete and byte-identical; one conflict with two.
    CHECK(kinds["promoted"] == 1);
    CHECK(kinds["conflict"] == (two_contents ? 1 : 0));
    CHECK(kinds["linked"] == processes - 1 - (two_contents ? 1 : 0));
    std::set<std::string> globals;
    for (auto& [variant, d] : digests) {
      const auto& first = global_of["s" + std::to_string(variant)];
      globals.insert(first);
      CHECK(files_of(w.data / "skills" / first) == sources[variant]);
      CHECK(digest_of(w.data / "skills" / first) == d);
    }
    CHECK(testing::names_in(w.data / "skills") == std::vector<std::string>(globals.begin(), globals.end()));
    for (int i = 0; i < processes; ++i) {
      const auto s = "s" + std::to_string(i);
      CHECK(global_of[s] == global_of["s" + std::to_string(two_contents ? i % 2 : 0)]);
      require_linked(w.data, s, global_of[s]);
    }
    // The store the processes shared agrees with the disk.
    sqlite_store store((w.data / "meshhub.db").string());
    CHECK(store.integrity_check() == "ok");
    CHECK(store.unfinished_skill_promotions("").empty());
    const auto history = store.skill_promotions("demo");
    CHECK(history.size() == std::size_t{processes});
    for (auto& p : history) CHECK(p.state == skill_promotion_state::done);
    const auto skills = store.global_skills();
    REQUIRE(skills.size() == globals.size());
    std::size_t linked_sessions = 0;
    for (auto& g : skills) {
      CHECK(globals.count(g.global_name) == 1);
      CHECK(digest_of(w.data / "skills" / g.global_name) == g.content);
      for (auto& s : g.sessions) CHECK(global_of[s] == g.global_name);
      linked_sessions += g.sessions.size();
    }
    CHECK(linked_sessions == std::size_t{processes});
  }
  std::printf("[skills] 16 processes x %d rounds (%s; %d on $TMPDIR, the rest in %s): %.1f s\n", n_rounds,
              two_contents ? "two contents" : "one content", std::min(n_rounds, disk_rounds), fast.c_str(),
              std::chrono::duration<double>(clock_type::now() - began).count());
}

TEST_CASE("skills: a promoter killed inside the lock does not wedge the others", "[skills]") {
  const std::string step = GENERATE(as<std::string>{}, "skill_journaled", "skill_staged", "skill_published", "skill_linked");
  DYNAMIC_SECTION("SIGKILLed at " << step) {
    process_round w;
    constexpr int contenders = 4;
    for (int i = 0; i <= contenders; ++i) plant_skill(w.data, "s" + std::to_string(i), "demo");
    const auto source = files_of(session_skill(w.data, "s0"));

    // s0's promoter dies at `step`, holding the skill's lock: its semaphore stays taken.
    {
      promoter victim(w.promote_args("s0"), step);
      victim.start();
      CHECK(victim.wait(clock_type::now() + 20s) == 128 + SIGKILL);
    }
    {
      boost::interprocess::named_mutex bare(boost::interprocess::open_only,
                                            named_mutex_lock::mutex_name("demo", skill_library_mp::lock_dir(w.data)).c_str());
      const bool free = bare.try_lock();
      if (free) bare.unlock();
      CHECK_FALSE(free);  // a bare named mutex would block everyone from here on
    }

    // The others, all at once: each gets the lock within 5 s; one of them adopts the dead
    // holder's lock and finishes (or rolls back) its promotion before its own.
    std::vector<std::unique_ptr<promoter>> workers;
    for (int i = 1; i <= contenders; ++i) workers.push_back(std::make_unique<promoter>(w.promote_args("s" + std::to_string(i))));
    const auto started = clock_type::now();
    for (auto& p : workers) p->start();
    int recoveries = 0, finished = 0;
    std::map<std::string, int> kinds;
    for (auto& p : workers) {
      const auto line = p->read_line(started + 5s);
      INFO("answer: " << line.value_or("<nothing within 5 s>"));
      const auto a = parse(line);
      REQUIRE(a);
      recoveries += a->recoveries;
      finished += a->finished;
      ++kinds[a->kind];
      CHECK(a->global == "demo");
      CHECK(p->wait(started + 10s) == 0);
    }
    std::printf("[skills] promoter SIGKILLed at %s: %d contenders done %.0f ms after start\n", step.c_str(), contenders,
                std::chrono::duration<double, std::milli>(clock_type::now() - started).count());
    CHECK(recoveries == 1);
    CHECK(finished == 1);

    sqlite_store store((w.data / "meshhub.db").string());
    const auto history = store.skill_promotions("demo");
    REQUIRE(history.size() == std::size_t{contenders + 1});
    CHECK(history[0].session == "s0");
    if (step == "skill_journaled") {
      CHECK(history[0].state == skill_promotion_state::abandoned);  // rolled back: s0 keeps its folder
      REQUIRE(is_dir_no_follow(session_skill(w.data, "s0")));
      CHECK(files_of(session_skill(w.data, "s0")) == source);
      CHECK(kinds["promoted"] == 1);
    } else {
      CHECK(history[0].state == skill_promotion_state::done);  // rolled forward
      require_linked(w.data, "s0", "demo");
      CHECK(kinds["linked"] == contenders);
    }
    for (int i = 1; i <= contenders; ++i) require_linked(w.data, "s" + std::to_string(i), "demo");
    CHECK(files_of(w.data / "skills" / "demo") == source);
    CHECK(testing::names_in(w.data / "skills") == std::vector<std::string>{"demo"});
    CHECK(temp_links(w.data, "s0").empty());
    CHECK(store.unfinished_skill_promotions("").empty());
    CHECK(store.integrity_check() == "ok");
  }
}

TEST_CASE("skills: recover() in another process finishes a killed promotion", "[skills]") {
  process_round w;
  plant_skill(w.data, "s0", "demo");
  {
    promoter victim(w.promote_args("s0"), "skill_published");
    victim.start();
    CHECK(victim.wait(clock_type::now() + 20s) == 128 + SIGKILL);
  }
  CHECK_FALSE(testing::exists_no_follow(session_skill(w.data, "s0")));  // moved, not yet linked
  promoter recoverer({"recover", w.data.string()});
  CHECK(recoverer.read_line(clock_type::now() + 5s) == "recovered 1");
  CHECK(recoverer.wait(clock_type::now() + 5s) == 0);
  require_linked(w.data, "s0", "demo");
  sqlite_store store((w.data / "meshhub.db").string());
  CHECK(store.unfinished_skill_promotions("").empty());
  REQUIRE(store.global_skills().size() == 1);
  CHECK(store.global_skills()[0].sessions == std::vector<std::string>{"s0"});
}
