// The lock policies: exclusion between threads for every policy that promises it, and for
// named_mutex_lock exclusion between real processes (meshhub_lock_worker, fork/exec'd) and
// recovery from a holder killed while holding the lock.
#include <catch2/catch.hpp>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/sync/named_mutex.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "meshhub/lock/named_mutex.hpp"
#include "meshhub/lock/null.hpp"
#include "meshhub/lock/thread.hpp"
#include "support/child_process.hpp"
#include "support/temp_dir.hpp"

extern char** environ;

using namespace meshhub;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

/// Removes the semaphore a test created (it outlives the process otherwise, in /dev/shm).
struct semaphore_cleanup {
  std::string key;
  std::filesystem::path dir;
  ~semaphore_cleanup() { named_mutex_lock::remove(key, dir); }
};

/// One fixture per policy: makes the lock; `excludes` says whether it promises exclusion.
struct null_fixture {
  static constexpr bool excludes = false;
  null_lock lock;
};
struct thread_fixture {
  static constexpr bool excludes = true;
  thread_lock lock;
};
struct named_fixture {
  static constexpr bool excludes = true;
  testing::temp_dir dir{"lock"};
  semaphore_cleanup cleanup{"counter", dir.path()};
  named_mutex_lock lock{"counter", dir.path()};
};
using lock_fixtures = std::tuple<null_fixture, thread_fixture, named_fixture>;

/// A meshhub_lock_worker process (tests/lock_worker.cpp).
struct worker : testing::child_process {
  explicit worker(std::vector<std::string> args) : child_process(MESHHUB_LOCK_WORKER_BIN, std::move(args)) {}
};

std::vector<std::string> lines_of(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("lock: threads incrementing a counter under lock_guard", "[lock]", lock_fixtures) {
  TestType f;
  constexpr int threads = 8, iterations = 2000;
  // The increment is a read, a yield, then a write: without exclusion another thread's
  // write in the window is lost. null_lock excludes nothing by design, so its counter is an
  // atomic read and written with separate relaxed operations — lost updates without a data
  // race (no UB, TSan-clean) — and its total is not checked: it may or may not come out exact.
  long plain = 0;
  std::atomic<long> racy{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < iterations; ++i) {
        std::lock_guard guard(f.lock);
        if constexpr (TestType::excludes) {
          const long v = plain;
          std::this_thread::yield();
          plain = v + 1;
        } else {
          const long v = racy.load(std::memory_order_relaxed);
          std::this_thread::yield();
          racy.store(v + 1, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  if constexpr (TestType::excludes) {
    CHECK(plain == long{threads} * iterations);
  } else {
    CHECK(racy.load() <= long{threads} * iterations);
  }
}

TEST_CASE("named_mutex_lock: one object per thread excludes like one per process", "[lock]") {
  // Separate objects have separate open file descriptions, so here the lease (flock) is what
  // excludes, not the in-process std::mutex.
  testing::temp_dir dir{"lock"};
  semaphore_cleanup cleanup{"k", dir.path()};
  constexpr int threads = 4, iterations = 1000;
  long counter = 0;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      named_mutex_lock lock("k", dir.path());
      for (int i = 0; i < iterations; ++i) {
        std::scoped_lock guard(lock);
        const long v = counter;
        std::this_thread::yield();
        counter = v + 1;
      }
    });
  }
  for (auto& t : pool) t.join();
  CHECK(counter == long{threads} * iterations);
}

TEST_CASE("named_mutex_lock: names per lease dir and key, and the lease file", "[lock]") {
  testing::temp_dir a{"lock"}, b{"lock"};
  CHECK(named_mutex_lock::mutex_name("skill", a.path()) != named_mutex_lock::mutex_name("skill", b.path()));
  CHECK(named_mutex_lock::mutex_name("skill", a.path()) != named_mutex_lock::mutex_name("skill2", a.path()));
  CHECK(named_mutex_lock::mutex_name("skill", a.path()) == named_mutex_lock::mutex_name("skill", a.path() / "." / ""));
  CHECK(named_mutex_lock::safe_key("a/b") != named_mutex_lock::safe_key("a_b"));
  CHECK(named_mutex_lock::safe_key("a/b") != named_mutex_lock::safe_key("a%2fb"));

  const std::string long_key(5000, 'x');
  const auto name = named_mutex_lock::mutex_name(long_key, a.path());
  CHECK(name.size() <= 251);
  CHECK(name.find('/') == std::string::npos);
  CHECK(named_mutex_lock::mutex_name(long_key + "y", a.path()) != name);

  const auto dir = a.path() / "locks" / "deeper";  // created by the constructor
  semaphore_cleanup cleanup{"my skill/v1", dir};
  {
    named_mutex_lock lock("my skill/v1", dir);
    const auto lease = dir / (named_mutex_lock::safe_key("my skill/v1") + ".lease");
    REQUIRE(std::filesystem::exists(lease));
    struct stat st {};
    REQUIRE(::stat(lease.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(lock.try_lock());
    lock.unlock();
  }
  // Destroyed unlocked: neither the mutex nor the lease is left held.
  named_mutex_lock again("my skill/v1", dir);
  CHECK(again.try_lock());
  again.unlock();
  CHECK(again.recoveries() == 0);
}

TEST_CASE("named_mutex_lock: a mutex left locked with its lease free is adopted", "[lock]") {
  // What a holder killed mid-lock leaves: the semaphore taken, nobody holding the lease.
  testing::temp_dir dir{"lock"};
  semaphore_cleanup cleanup{"k", dir.path()};
  named_mutex_lock lock("k", dir.path());
  boost::interprocess::named_mutex bare(boost::interprocess::open_only,
                                        named_mutex_lock::mutex_name("k", dir.path()).c_str());
  REQUIRE(bare.try_lock());

  SECTION("by lock") { lock.lock(); }
  SECTION("by try_lock") { REQUIRE(lock.try_lock()); }
  CHECK(lock.recoveries() == 1);
  lock.unlock();
  // The adopter released it for real: the semaphore is free once, not twice.
  CHECK(bare.try_lock());
  CHECK_FALSE(bare.try_lock());
  bare.unlock();
  CHECK(lock.try_lock());
  lock.unlock();
  CHECK(lock.recoveries() == 1);
}

TEST_CASE("named_mutex_lock: 16 processes never interleave their critical sections", "[lock]") {
  testing::temp_dir dir{"lock"};
  semaphore_cleanup cleanup{"shared", dir.path()};
  const auto out = dir / "log";
  constexpr int processes = 16, iterations = 1000;
  std::vector<std::unique_ptr<worker>> workers;
  for (int i = 0; i < processes; ++i)
    workers.push_back(std::make_unique<worker>(std::vector<std::string>{
        "hammer", dir.path().string(), "shared", std::to_string(iterations), out.string()}));
  for (auto& w : workers) w->close_stdin();  // the start line: all begin together

  const auto deadline = clock_type::now() + 120s;
  for (auto& w : workers) {
    CHECK(w->read_line(deadline) == "done 0");  // no recoveries: nobody died
    CHECK(w->wait() == 0);
  }

  const auto lines = lines_of(out);
  REQUIRE(lines.size() == std::size_t{2} * processes * iterations);
  std::map<std::string, int> per_pid;
  std::size_t split_pairs = 0;
  for (std::size_t i = 0; i < lines.size(); i += 2) {
    if (lines[i] != lines[i + 1]) ++split_pairs;  // another holder wrote inside the window
    per_pid[lines[i]] += 2;
  }
  CHECK(split_pairs == 0);
  CHECK(per_pid.size() == std::size_t{processes});
  for (const auto& [pid, n] : per_pid) CHECK(n == 2 * iterations);
}

TEST_CASE("named_mutex_lock: a live holder keeps the lock until it releases it", "[lock]") {
  testing::temp_dir dir{"lock"};
  semaphore_cleanup cleanup{"k", dir.path()};
  const auto events = (dir / "events").string();
  const auto d = dir.path().string();

  worker holder({"hold", d, "k", events});
  REQUIRE(holder.read_line(clock_type::now() + 10s) == "locked");

  worker prober({"try", d, "k"});
  CHECK(prober.read_line(clock_type::now() + 10s) == "busy");
  CHECK(prober.wait() == 0);
  named_mutex_lock here("k", dir.path());  // another open file description, in this process
  CHECK_FALSE(here.try_lock());

  worker waiter({"acquire", d, "k", events});
  // Nothing to wait *for* here: a line within this window would be the bug.
  CHECK_FALSE(waiter.read_line(clock_type::now() + 300ms).has_value());

  holder.close_stdin();  // let it release
  CHECK(holder.read_line(clock_type::now() + 10s) == "unlocked");
  const auto line = waiter.read_line(clock_type::now() + 10s);
  REQUIRE(line.has_value());
  CHECK(line->rfind("locked 0 ", 0) == 0);  // a hand-over between live holders: no recovery
  CHECK(holder.wait() == 0);
  CHECK(waiter.wait() == 0);

  const auto log = lines_of(events);
  REQUIRE(log.size() == 3);
  CHECK(log[0].rfind("hold ", 0) == 0);
  CHECK(log[1].rfind("release ", 0) == 0);
  CHECK(log[2].rfind("acquired ", 0) == 0);
  CHECK(here.try_lock());
  here.unlock();
  CHECK(here.recoveries() == 0);
}

TEST_CASE("named_mutex_lock: a holder killed with SIGKILL is recovered within 5 s", "[lock]") {
  testing::temp_dir dir{"lock"};
  semaphore_cleanup cleanup{"k", dir.path()};
  const auto d = dir.path().string();

  worker holder({"hold", d, "k", "-"});
  REQUIRE(holder.read_line(clock_type::now() + 10s) == "locked");
  worker waiter({"acquire", d, "k", "-"});  // blocks in lock() behind the holder
  CHECK_FALSE(waiter.read_line(clock_type::now() + 200ms).has_value());

  const auto killed_at = clock_type::now();
  holder.kill9();
  const auto line = waiter.read_line(killed_at + 5s);
  const auto takeover = clock_type::now() - killed_at;
  REQUIRE(line.has_value());
  CHECK(line->rfind("locked 1 ", 0) == 0);  // it adopted the dead holder's mutex
  CHECK(holder.wait() == 128 + SIGKILL);
  CHECK(waiter.wait() == 0);
  std::printf("[lock] takeover after SIGKILL: %.2f ms\n",
              std::chrono::duration<double, std::milli>(takeover).count());

  // The adopter released the mutex normally: the next holders find it free.
  worker next({"acquire", d, "k", "-"});
  const auto next_line = next.read_line(clock_type::now() + 10s);
  REQUIRE(next_line.has_value());
  CHECK(next_line->rfind("locked 0 ", 0) == 0);
  CHECK(next.wait() == 0);
  named_mutex_lock here("k", dir.path());
  CHECK(here.try_lock());
  here.unlock();
  CHECK(here.recoveries() == 0);
}
