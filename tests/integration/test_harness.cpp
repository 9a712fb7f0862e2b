/// The harness' own tests: they need no meshhub program, so they run (and keep the
/// harness honest) even before the programs exist.
#include "mesh.hpp"

using namespace meshhub::it;

TEST_CASE("harness: run_program passes stdin through and keeps stdout and stderr apart", "[harness]") {
  std::string big(8 * mib + 123, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7919) >> 3);
  // 8 MiB each way: a pipe-based runner that does not poll both ends would deadlock here.
  auto r = run_program({"/bin/sh", "-c", "cat; echo oops >&2; exit 3"}, big, 20s);
  INFO(r.describe(200));
  CHECK_FALSE(r.timed_out);
  CHECK(r.exit_code == 3);
  CHECK(r.out.size() == big.size());
  CHECK(sha256(r.out) == sha256(big));
  CHECK(r.err == "oops\n");
}

TEST_CASE("harness: run_program kills a child at its deadline", "[harness]") {
  const auto t0 = steady::now();
  auto r = run_program({"/bin/sleep", "30"}, {}, 300ms);
  CHECK(r.timed_out);
  CHECK(r.exit_code == 128 + SIGKILL);
  CHECK(steady::now() - t0 < 5s);
}

TEST_CASE("harness: a program that cannot be executed is reported", "[harness]") {
  CHECK_THROWS_WITH(run_program({"/nonexistent/meshhub"}, {}, 1s), Catch::Contains("cannot exec"));
}

TEST_CASE("harness: process logs, terminates and kills", "[harness]") {
  temp_dir d("harness");
  process p("sh", {"/bin/sh", "-c", "echo started; echo warn >&2; exec sleep 30"},
            d.path() / "sh.out", d.path() / "sh.err");
  CHECK(p.running());
  wait_until(5s, [&] { return read_file(p.out_log()) == "started\n"; }, "the child's stdout in its log");
  CHECK(read_file(p.err_log()) == "warn\n");
  const int st = p.terminate(2s);
  CHECK(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGTERM);
  CHECK_FALSE(p.running());

  process q("sleep", {"/bin/sleep", "30"}, d.path() / "q.out", d.path() / "q.err");
  q.kill(SIGKILL);
  CHECK_FALSE(q.running());
  CHECK(q.describe().find("signal 9") != std::string::npos);
}

TEST_CASE("harness: the children do not inherit MESHHUB_ variables", "[harness]") {
  ::setenv("MESHHUB_HUB", "10.0.0.1:1", 1);
  auto r = run_program({"/bin/sh", "-c", "echo \"hub=${MESHHUB_HUB-unset}\""}, {}, 5s);
  ::unsetenv("MESHHUB_HUB");
  CHECK(r.out == "hub=unset\n");
}

TEST_CASE("harness: digests", "[harness]") {
  CHECK(sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Empty content: one empty block, so the content digest is SHA-256(SHA-256("")).
  const std::string empty_block =
      "\xe3\xb0\xc4\x42\x98\xfc\x1c\x14\x9a\xfb\xf4\xc8\x99\x6f\xb9\x24\x27\xae\x41\xe4\x64\x9b\x93\x4c\xa4\x95\x99\x1b\x78\x52\xb8\x55";
  CHECK(content_digest("") == sha256(empty_block));

  temp_dir d("harness");
  const std::string small = "hello mesh\n";
  write_file(d.path() / "small", small);
  CHECK(sha256_file(d.path() / "small") == sha256(small));
  CHECK(content_digest_file(d.path() / "small") == content_digest(small));
  write_file(d.path() / "empty", "");
  CHECK(content_digest_file(d.path() / "empty") == content_digest(""));

  // Two full blocks and a short one; and exactly two full blocks (no empty third block).
  for (std::uint64_t size : {2 * chunk_bytes + 5, 2 * chunk_bytes}) {
    make_mixed_file(d.path() / "m", size, 7);
    const std::string bytes = read_file(d.path() / "m");
    REQUIRE(bytes.size() == size);
    std::string concat;
    for (std::uint64_t off = 0; off < size; off += chunk_bytes) {
      sha256_ctx b;
      b.update(std::string_view(bytes).substr(off, chunk_bytes));
      const auto raw = b.raw();
      concat.append(reinterpret_cast<const char*>(raw.data()), raw.size());
    }
    CHECK(content_digest(bytes) == sha256(concat));
    CHECK(content_digest_file(d.path() / "m") == sha256(concat));
  }
}

TEST_CASE("harness: make_mixed_file is deterministic and mixed", "[harness]") {
  temp_dir d("harness");
  make_mixed_file(d.path() / "a", 3 * mib + 17, 42);
  make_mixed_file(d.path() / "b", 3 * mib + 17, 42);
  make_mixed_file(d.path() / "c", 3 * mib + 17, 43);
  CHECK(fs::file_size(d.path() / "a") == 3 * mib + 17);
  CHECK(sha256_file(d.path() / "a") == sha256_file(d.path() / "b"));
  CHECK(sha256_file(d.path() / "a") != sha256_file(d.path() / "c"));
  // Both kinds of run are there: text lines and bytes that are not text.
  const std::string s = read_file(d.path() / "a");
  const auto newlines = std::count(s.begin(), s.end(), '\n');
  const auto high = std::count_if(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
  CHECK(newlines > 10'000);
  CHECK(high > 100'000);
}

TEST_CASE("harness: wait_until returns once the predicate holds", "[harness]") {
  const auto t0 = steady::now();
  int calls = 0;
  CHECK(wait_until(5s, [&] { return ++calls == 4; }, "fourth call"));
  CHECK(calls == 4);
  CHECK(steady::now() - t0 < 2s);
  CHECK_FALSE(poll_until(100ms, [] { return false; }));
}

TEST_CASE("harness: list_tree", "[harness]") {
  temp_dir d("harness");
  write_file(d.path() / "x" / "y.txt", "1");
  write_file(d.path() / "z", "2");
  CHECK(list_tree(d.path()) == std::set<std::string>{"x/", "x/y.txt", "z"});
  CHECK(list_tree(d.path() / "nope").empty());
}

TEST_CASE("harness: tail", "[harness]") {
  temp_dir d("harness");
  std::string s;
  for (int i = 0; i < 100; ++i) s += "line " + std::to_string(i) + "\n";
  write_file(d.path() / "log", s);
  CHECK(tail(d.path() / "log", 3) == "line 97\nline 98\nline 99\n");
  write_file(d.path() / "short", "only\n");
  CHECK(tail(d.path() / "short", 3) == "only\n");
  write_file(d.path() / "nonl", "a\nb");
  CHECK(tail(d.path() / "nonl", 1) == "b");
  CHECK(tail(d.path() / "missing") == "(missing)\n");
}
