// meshhub_lock_worker: one process of the multi-process tests of named_mutex_lock
// (tests/unit/test_lock.cpp). The tests fork/exec it so each holder is a real process with
// its own descriptors and semaphore mapping, which a forked copy of the test would not be.
//
//   hammer DIR KEY ITERS OUT   wait for EOF on stdin (the start line), then ITERS times: lock,
//                              append "<pid>\n" to OUT, yield, append it again, unlock;
//                              print "done <recoveries>"
//   hold DIR KEY EVENTS        lock, append "hold <pid>" to EVENTS, print "locked", wait for
//                              EOF on stdin, append "release <pid>", unlock, print "unlocked"
//   acquire DIR KEY EVENTS     lock, append "acquired <pid>", print
//                              "locked <recoveries> <microseconds spent in lock()>", unlock
//   try DIR KEY                print "got" or "busy" after one try_lock (unlock if got)
// EVENTS may be "-" (none). Exit status 0 on success, 2 on bad arguments, 1 on errors.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>

#include "meshhub/lock/named_mutex.hpp"

namespace {

void append(const std::string& file, const std::string& line) {
  if (file == "-") return;
  const int fd = ::open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("open " + file);
  // One write(2) per line: O_APPEND makes each one land whole at the end of the file.
  const auto n = ::write(fd, line.data(), line.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size())) throw std::runtime_error("write " + file);
}

void say(const std::string& line) {
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

void wait_for_stdin_eof() {
  char buf[64];
  while (::read(0, buf, sizeof buf) > 0) {}
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (argc < 4 || (mode != "try" && argc < 5) || (mode == "hammer" && argc < 6)) {
    std::fprintf(stderr, "usage: see the comment at the top of tests/lock_worker.cpp\n");
    return 2;
  }
  meshhub::named_mutex_lock lock(argv[3], argv[2]);
  const std::string pid = std::to_string(::getpid());

  if (mode == "hammer") {
    const long iters = std::atol(argv[4]);
    const std::string out = argv[5];
    wait_for_stdin_eof();
    for (long i = 0; i < iters; ++i) {
      lock.lock();
      append(out, pid + "\n");
      ::sched_yield();  // the window another holder would have to interleave in
      append(out, pid + "\n");
      lock.unlock();
    }
    say("done " + std::to_string(lock.recoveries()));
  } else if (mode == "hold") {
    lock.lock();
    append(argv[4], "hold " + pid + "\n");
    say("locked");
    wait_for_stdin_eof();
    append(argv[4], "release " + pid + "\n");
    lock.unlock();
    say("unlocked");
  } else if (mode == "acquire") {
    const auto t0 = std::chrono::steady_clock::now();
    lock.lock();
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    append(argv[4], "acquired " + pid + "\n");
    say("locked " + std::to_string(lock.recoveries()) + " " + std::to_string(us.count()));
    lock.unlock();
  } else if (mode == "try") {
    const bool got = lock.try_lock();
    if (got) lock.unlock();
    say(got ? "got" : "busy");
  } else {
    std::fprintf(stderr, "unknown mode '%s'\n", mode.c_str());
    return 2;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "meshhub_lock_worker: %s\n", e.what());
  return 1;
}
