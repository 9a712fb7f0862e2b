// Writes the seed corpora of the fuzz targets: a few hand-made inputs per target that
// reach past the first checks (valid and hostile paths, decodable and bombed chunks, node
// conversations that name the fuzzed hub's real sessions, versions and digests).
//
//   meshhub_fuzz_seeds fuzz/corpus      # writes fuzz/corpus/<target>/<name>
//
// Inputs a fuzzing run found (crashes fixed since) are added to the corpora by hand, next
// to these, and are never overwritten here.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hub_state.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/v1/node.pb.h"

namespace fs = std::filesystem;
using namespace meshhub;
using namespace std::string_literals;

namespace {

fs::path out_root;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = out_root / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

// ---- fuzz_path ------------------------------------------------------------------------

void path_seeds() {
  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"plain", "a.txt"},
      {"nested", "a/b/c.txt"},
      {"dotdot", "../outside/canary.txt"},
      {"dotdot-inner", "a/../../outside/canary.txt"},
      {"absolute", "/etc/passwd"},
      {"through-link", "out/canary.txt"},
      {"through-abs-link", "abs/new.txt"},
      {"file-link", "canary"},
      {"up-link", "up/outside/canary.txt"},
      {"nested-up-link", "sub/up/outside/x"},
      {"self-loop", "sub/loop/x"},
      {"fifo", "fifo"},
      {"backslash", "a\\..\\b"},
      {"nul", "a\0/../../x"s},
      {"reserved", ".meshhub-tmp-0123456789abcdef"},
      {"deep", [] {
         std::string s;
         for (int i = 0; i < 63; ++i) s += "d/";  // 64 components: the deepest allowed
         return s + "f";
       }()},
  };
  for (auto& [name, path] : seeds) put("fuzz_path", name, path);
}

// ---- fuzz_chunk -----------------------------------------------------------------------

std::string zlib_of(const std::string& raw) {
  std::string out(compressBound(static_cast<uLong>(raw.size())), '\0');
  auto len = static_cast<uLongf>(out.size());
  compress2(reinterpret_cast<Bytef*>(out.data()), &len, reinterpret_cast<const Bytef*>(raw.data()),
            static_cast<uLong>(raw.size()), 9);
  out.resize(len);
  return out;
}

/// The fuzz_chunk layout: codec, raw_size (LE), limit byte, digest, payload.
std::string chunk_input(std::uint8_t codec, std::uint32_t raw_size, const digest& d, const std::string& payload,
                        std::uint8_t limit = 12 /* 4 MiB */) {
  std::string s;
  s += static_cast<char>(codec);
  for (int i = 0; i < 4; ++i) s += static_cast<char>((raw_size >> (8 * i)) & 0xff);
  s += static_cast<char>(limit);
  s.append(reinterpret_cast<const char*>(d.data()), d.size());
  return s + payload;
}

void chunk_seeds() {
  const std::string text = fuzzing::text(3000, 'z');
  const std::string z = zlib_of(text);
  const auto u32 = [](std::size_t n) { return static_cast<std::uint32_t>(n); };
  put("fuzz_chunk", "identity-ok", chunk_input(0, u32(text.size()), sha256_of(text), text));
  put("fuzz_chunk", "zlib-ok", chunk_input(1, u32(text.size()), sha256_of(text), z));
  put("fuzz_chunk", "zlib-empty-ok", chunk_input(1, 0, sha256_of(""), zlib_of("")));
  put("fuzz_chunk", "zlib-wrong-digest", chunk_input(1, u32(text.size()), sha256_of("other"), z));
  put("fuzz_chunk", "zlib-truncated", chunk_input(1, u32(text.size()), sha256_of(text), z.substr(0, z.size() / 2)));
  put("fuzz_chunk", "zlib-trailing", chunk_input(1, u32(text.size()), sha256_of(text), z + "xyz"));
  put("fuzz_chunk", "zlib-short-claim", chunk_input(1, u32(text.size() - 1), sha256_of(text), z));
  // A bomb: 1 MiB of zeros in about 1 KiB, claimed to be 64 KiB.
  put("fuzz_chunk", "zlib-bomb", chunk_input(1, 64 * 1024, sha256_of(""), zlib_of(std::string(1u << 20, '\0'))));
  put("fuzz_chunk", "too-large", chunk_input(1, 5u << 20, sha256_of(""), z));
  put("fuzz_chunk", "small-limit", chunk_input(0, u32(text.size()), sha256_of(text), text, 0 /* 1 KiB */));
  put("fuzz_chunk", "unknown-codec", chunk_input(7, 3, sha256_of("abc"), "abc"));
}

// ---- fuzz_node_link -------------------------------------------------------------------

/// Messages as a node's stream: each a varint length, then the message.
std::string stream(const std::vector<v1::NodeMessage>& messages) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream raw(&out);
    google::protobuf::io::CodedOutputStream coded(&raw);
    for (auto& m : messages) {
      coded.WriteVarint32(static_cast<std::uint32_t>(m.ByteSizeLong()));
      m.SerializeToCodedStream(&coded);
    }
  }
  return out;
}

v1::NodeMessage hello(const std::string& id, bool reports_roots = false) {
  v1::NodeMessage m;
  m.mutable_hello()->set_node_id(id);
  m.mutable_hello()->set_agent("meshhub-node 0.1.0");
  m.mutable_hello()->set_reports_roots(reports_roots);
  return m;
}

v1::NodeMessage chunk_ack(const std::string& session, const std::string& path, std::uint64_t version, std::uint32_t index) {
  v1::NodeMessage m;
  auto& a = *m.mutable_chunk_ack();
  a.set_session(session);
  a.set_path(path);
  a.set_version(version);
  a.set_index(index);
  return m;
}

v1::NodeMessage file_ack(const std::string& session, const std::string& path, std::uint64_t version,
                         const std::string& content, bool ok, const std::string& why = {}) {
  v1::NodeMessage m;
  auto& a = *m.mutable_file_ack();
  a.set_session(session);
  a.set_path(path);
  a.set_version(version);
  if (!content.empty()) a.set_content_digest(to_bytes(content_digest_of(content)));
  a.set_ok(ok);
  a.set_error(why);
  return m;
}

v1::NodeMessage result(std::uint64_t id, bool last) {
  v1::NodeMessage m;
  auto& r = *m.mutable_result();
  r.set_id(id);
  r.set_last(last);
  auto& e = *r.add_entries();
  e.set_path("a.txt");
  e.set_size(2500);
  e.set_content_digest(to_bytes(content_digest_of(fuzzing::a_v2())));
  return m;
}

void node_link_seeds() {
  const std::string a2 = fuzzing::a_v2();
  // A well-behaved n1: takes a.txt v2 chunk by chunk, acknowledges it and the removal.
  put("fuzz_node_link", "n1-delivery",
      stream({hello("n1"), chunk_ack("s", "a.txt", 2, 0), chunk_ack("s", "a.txt", 2, 1), chunk_ack("s", "a.txt", 2, 2),
              file_ack("s", "a.txt", 2, a2, true), file_ack("s", "dir/b.bin", 2, {}, true),
              file_ack("t", "only-n1.txt", 1, fuzzing::t_v1(), true)}));
  // n1 reporting roots (nothing held: an empty root for s), then answering the command.
  {
    auto h = hello("n1", true);
    auto& r = *h.mutable_hello()->add_sessions();
    r.set_session("s");
    r.set_root_digest(std::string(32, '\0'));
    put("fuzz_node_link", "n1-roots-command", stream({h, result(1, false), result(1, true), result(1, true)}));
  }
  // n2 resuming a partial transfer of a.txt v2 at chunk 2.
  {
    auto h = hello("n2");
    auto& p = *h.mutable_hello()->add_partials();
    p.set_session("s");
    p.set_path("a.txt");
    p.set_version(2);
    p.set_content_digest(to_bytes(content_digest_of(a2)));
    p.set_chunks_done(2);
    put("fuzz_node_link", "n2-resume", stream({h, chunk_ack("s", "a.txt", 2, 2), file_ack("s", "a.txt", 2, a2, true)}));
  }
  // n2 refusing deliveries (corrupt), and claiming a file of a session it is not in.
  put("fuzz_node_link", "n2-refuses",
      stream({hello("n2"), file_ack("s", "a.txt", 2, {}, false, "corrupt chunk 0"),
              file_ack("s", "a.txt", 2, {}, false, "disk full"), chunk_ack("t", "only-n1.txt", 1, 0),
              file_ack("t", "only-n1.txt", 1, fuzzing::t_v1(), true)}));
  // A stranger: not a member anywhere, acknowledging someone else's files.
  put("fuzz_node_link", "stranger",
      stream({hello("n3"), file_ack("s", "a.txt", 2, a2, true), chunk_ack("s", "a.txt", 99, 4000000000u), result(1, true)}));
  // Hostile names: a node id and paths that must be refused or ignored.
  put("fuzz_node_link", "bad-names",
      stream({hello("n1"), file_ack("s", "../../etc/passwd", 1, {}, true), chunk_ack("../s", "a.txt", 1, 0),
              file_ack("s", "a.txt", 18446744073709551615ull, {}, true)}));
  put("fuzz_node_link", "bad-node-id", stream({hello("../n1"), chunk_ack("s", "a.txt", 1, 0)}));
  put("fuzz_node_link", "no-hello-first", stream({chunk_ack("s", "a.txt", 2, 0), hello("n1")}));
  // A second hello on the same stream (the server ends the stream: no business there).
  put("fuzz_node_link", "two-hellos", stream({hello("n1"), hello("n2"), chunk_ack("s", "a.txt", 2, 0)}));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR   (writes CORPUS_DIR/<target>/<seed>)\n", argv[0]);
    return 2;
  }
  out_root = argv[1];
  path_seeds();
  chunk_seeds();
  node_link_seeds();
  return 0;
}
