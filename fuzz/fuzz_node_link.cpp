// fuzz_node_link: what a hostile node can make the hub do. Each input is the byte stream a
// node sends on its NodeLink stream, cut into messages as protobuf's delimited format
// does (a varint length, then a serialized meshhub.v1.NodeMessage). Each message takes
// the reference server's path (reference-server/server/server.cpp, node_link_service):
// ParseFromArray, the first message must be a Hello (convert.hpp's from_proto → attach),
// every later one converts to an inbound_message (from_proto → on_message), anything
// else ends the stream (detach). Calls run on the hub's executor, one at a time, as the
// server posts them.
//
// The hub is real (memory store, zlib, sequential dispatch) and fresh for every input,
// over a scratch data folder, with sessions "s" (members n1, n2) and "t" (member n1) and
// a few versions written while no node was connected, so a hello meets pending waves,
// catch-up, reconciliation and a relayed command.
//
// Oracles: the hub throws only meshhub::error; it never sends a node anything of a
// session that node is not a member of; its welcome names exactly the node's
// memberships; every chunk it sends decodes and verifies. Any breach aborts.
#include <google/protobuf/io/coded_stream.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "meshhub/meshhub.hpp"
#include "meshhub/store/memory.hpp"
#include "meshhub/v1/node.pb.h"
#include "hub_state.hpp"
#include "server/convert.hpp"

namespace fs = std::filesystem;
using namespace meshhub;

namespace {

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_node_link: %s\n", what.c_str());
  std::abort();
}

using fuzz_hub = memory_hub;

/// Who belongs where (set up identically for every input).
const std::map<std::string, std::set<std::string>>& memberships() {
  static const std::map<std::string, std::set<std::string>> m{{"n1", {"s", "t"}}, {"n2", {"s"}}};
  return m;
}
std::set<std::string> sessions_of(const std::string& node) {
  auto it = memberships().find(node);
  return it == memberships().end() ? std::set<std::string>{} : it->second;
}

/// The node's side of the link: takes everything at once (never full), checks what the
/// hub sends against the node's memberships, and verifies every chunk.
class fuzz_link final : public node_link {
 public:
  explicit fuzz_link(std::string node) : node_(std::move(node)), allowed_(sessions_of(node_)) {}

  bool try_send(outbound_message message) override {
    std::visit([&](const auto& m) { check(m); }, message);
    std::lock_guard g(mu_);
    ++sent_[message.index()];
    return !closed_;
  }
  /// What the hub sent, per kind (outbound_message's alternatives, in order).
  std::string tally() const {
    std::lock_guard g(mu_);
    std::string out;
    for (auto& [index, n] : sent_) out += " [" + std::to_string(index) + "]×" + std::to_string(n);
    return out;
  }
  [[nodiscard]] std::size_t queued_chunks() const override { return 0; }
  void close(const std::string&) override {
    std::lock_guard g(mu_);
    closed_ = true;
  }

 private:
  void allowed(const std::string& session, const char* what) const {
    // The skill library is a session every node belongs to (meshhub/skill/link.hpp).
    if (!allowed_.count(session) && !is_library_session(session))
      finding(std::string("the hub sent node '") + node_ + "' a " + what + " of session '" + session +
              "', which it is not a member of");
  }
  void check(const welcome& w) const {
    if (std::set<std::string>(w.sessions.begin(), w.sessions.end()) != allowed_ || w.sessions.size() != allowed_.size())
      finding("the welcome to node '" + node_ + "' does not name exactly its memberships");
  }
  void check(const node_command& c) const { allowed(c.session, "command"); }
  /// A file_begin, a removal, a link, …: anything else names the file it is about.
  template <class Message>
    requires requires(const Message& m) { m.file.session; }
  void check(const Message& m) const {
    allowed(m.file.session, "message about a file");
  }
  void check(const chunk_ptr& c) const {
    allowed(c->file.session, "chunk");
    std::string raw;
    try {
      decode_chunk(c->body, raw);
    } catch (const error& e) {
      finding(std::string("the hub sent a chunk that does not verify: ") + e.what());
    }
  }

  std::string node_;
  std::set<std::string> allowed_;
  mutable std::mutex mu_;
  std::map<std::size_t, std::size_t> sent_;
  bool closed_ = false;
};

/// Runs `body` on the hub's executor and waits for it, as the server's reactor does with
/// every node message. False when the hub refused it (meshhub::error, as the server's
/// `guarded` turns into a status); any other exception is a finding.
template <class F>
bool on_hub(fuzz_hub& hub, F&& body) {
  std::promise<bool> done;
  hub.post([&] {
    try {
      body();
      done.set_value(true);
    } catch (const error&) {
      done.set_value(false);
    } catch (const std::exception& e) {
      finding(std::string("the hub threw something other than meshhub::error: ") + e.what());
    }
  });
  return done.get_future().get();
}

/// The scratch folder every input's hub lives in (tmpfs where there is one: fsync is free);
/// removed at exit.
struct scratch {
  fs::path root;
  scratch() {
    std::string base = "/tmp";
    if (const char* t = std::getenv("TMPDIR"); t && *t) base = t;
    else if (::access("/dev/shm", W_OK) == 0) base = "/dev/shm";
    std::string templ = base + "/meshhub-fuzz-link-XXXXXX";
    if (!::mkdtemp(templ.data())) finding("cannot make a scratch folder");
    root = templ;
  }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};

const fs::path& scratch_root() {
  static const scratch s;
  return s.root;
}

/// A hub in the state every input starts from.
void populate(fuzz_hub& hub) {
  hub.create_session("s");
  hub.create_session("t");
  hub.join("s", {"n1", "n2"});
  hub.join("t", {"n1"});
  hub.write("s", "a.txt", fuzzing::a_v1());  // v1: 3 chunks
  hub.write("s", "dir/b.bin", fuzzing::b_v1());
  hub.write("s", "a.txt", fuzzing::a_v2());  // v2
  (void)hub.remove("s", "dir/b.bin");        // v2: a removal
  hub.write("t", "only-n1.txt", fuzzing::t_v1());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static std::uint64_t run = 0;
  const fs::path dir = scratch_root() / ("hub-" + std::to_string(++run));
  {
    hub_options o;
    o.data_dir = dir;
    o.chunk_size = fuzzing::chunk_size;
    o.queue_chunks = 4;
    o.backlog_chunks = 4;
    o.io_threads = 1;
    o.io_nice = 0;  // the fuzzer waits on this thread: do not let it yield
    o.control_threads = 1;
    o.catch_up_window = 2;
    o.max_delivery_retries = 2;
    o.node_command_timeout = std::chrono::milliseconds(100);
    fuzz_hub hub(o, memory_store{});
    populate(hub);

    google::protobuf::io::CodedInputStream in(data, static_cast<int>(size));
    std::shared_ptr<fuzz_link> link;
    std::string node;
    for (int messages = 0; messages < 64; ++messages) {
      std::uint32_t length = 0;
      if (!in.ReadVarint32(&length)) break;
      std::string frame;
      if (!in.ReadString(&frame, static_cast<int>(std::min<std::uint32_t>(length, 1u << 20)))) break;
      v1::NodeMessage message;
      if (!message.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) break;  // "malformed NodeMessage"
      if (node.empty()) {
        if (!message.has_hello()) break;  // "the first message must be Hello"
        const hello h = programs::from_proto(message.hello());
        link = std::make_shared<fuzz_link>(h.node_id);
        if (!on_hub(hub, [&] { hub.attach(h, link); })) break;
        node = h.node_id;
        // A relayed command in flight (id 1), so a CommandResult can meet a real one.
        if (sessions_of(node).count("s"))
          on_hub(hub, [&] { hub.ask_node(node, node_command::kind::list, "s", "", [](command_result) {}); });
        continue;
      }
      auto inbound = programs::from_proto(message);
      if (!inbound) break;  // "unexpected message after Hello"
      on_hub(hub, [&] { hub.on_message(node, std::move(*inbound)); });
    }
    // Let the work those messages started go on for a while (each round runs what the
    // tasks before it posted: catch-up, waves, their chunks), then the stream ends.
    for (int round = 0; round < 8; ++round) on_hub(hub, [] {});
    if (!node.empty()) on_hub(hub, [&] { hub.detach(node, link); });
    // MESHHUB_FUZZ_VERBOSE=1: what each input made the hub send (to check the seeds reach deep).
    static const bool verbose = std::getenv("MESHHUB_FUZZ_VERBOSE") != nullptr;
    if (verbose && link) std::fprintf(stderr, "fuzz_node_link: node '%s' was sent%s\n", node.c_str(), link->tally().c_str());
  }  // the hub stops its executors here
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
