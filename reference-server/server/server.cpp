/// The gRPC face of the hub: one class per service, a nested reactor per streaming RPC.
/// Reactors never block — every call that may touch disk, the store or a lock is posted to
/// the hub's executor, and a reactor continues (next read, next write, Finish) from there.
/// This is the only translation unit of meshhub-server that includes gRPC headers.
#include <grpc/grpc_security_constants.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/server_interceptor.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <thread>
#include <type_traits>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

#include "common/grpc_config.hpp"
#include "common/link_security.hpp"
#include "common/service_notify.hpp"
#include "common/status_name.hpp"
#include "meshhub/v1/assistant.grpc.pb.h"
#include "meshhub/v1/node.grpc.pb.h"
#include "server/change_gate.hpp"
#include "server/convert.hpp"
#include "server/credentials.hpp"
#include "server/http.hpp"
#include "server/hub_metrics.hpp"
#include "server/recent_events.hpp"
#include "server/server.hpp"
#include "server/server_hub.hpp"

namespace meshhub::programs {
namespace {

namespace v1 = meshhub::v1;

/// An answer whose gRPC code says more than an `errc` can: FAILED_PRECONDITION for a
/// delta whose blocks the mirror no longer holds (the client then sends the file whole).
struct status_error : std::runtime_error {
  explicit status_error(grpc::Status s) : std::runtime_error(s.error_message()), status(std::move(s)) {}
  grpc::Status status;
};

inline status_error failed_precondition(const std::string& why) {
  return status_error({grpc::StatusCode::FAILED_PRECONDITION, why});
}

/// Runs `body` and turns a meshhub error (or any exception) into a gRPC status.
template <class F>
grpc::Status guarded(F&& body) {
  try {
    body();
    return grpc::Status::OK;
  } catch (const status_error& e) {
    return e.status;
  } catch (const error& e) {
    return to_status(e);
  } catch (const std::exception& e) {
    return {grpc::StatusCode::INTERNAL, e.what()};
  }
}

// ---- who is calling (docs/security.md) -----------------------------------------------------

/// The token of an `authorization: Bearer <token>` value.
std::optional<std::string_view> bearer_token(std::string_view value) {
  constexpr std::string_view scheme = "Bearer ";
  if (!value.starts_with(scheme)) return std::nullopt;
  return value.substr(scheme.size());
}

/// Runs before any handler: a call with neither a token the hub issued nor a client
/// certificate its CA verified (mTLS) is refused UNAUTHENTICATED, and nothing of it reaches
/// the hub. (Which calls a caller may make is the handlers' business: `caller_of`.)
class token_checker final : public grpc::AuthMetadataProcessor {
 public:
  explicit token_checker(const credential_store& credentials) : credentials_(credentials) {}
  bool IsBlocking() const override { return false; }  // a map lookup

  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context, OutputMetadata*, OutputMetadata*) override {
    if (auto it = metadata.find(std::string(token_metadata_key)); it != metadata.end()) {
      const auto token = bearer_token(std::string_view(it->second.data(), it->second.size()));
      if (token && credentials_.find(*token)) return grpc::Status::OK;
      return {grpc::StatusCode::UNAUTHENTICATED, "the token is not one this hub issued (or it was replaced)"};
    }
    if (context && !context->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME).empty()) return grpc::Status::OK;
    return {grpc::StatusCode::UNAUTHENTICATED, "every call needs a token (--token, --token-file) or a client certificate"};
  }

 private:
  const credential_store& credentials_;
};

/// Who is calling: the owner of its token, or the node its verified certificate names
/// (common name = node id). Both present and naming different callers → refused.
std::variant<principal, grpc::Status> caller_of(const grpc::ServerContextBase& ctx, const credential_store& credentials) {
  std::optional<principal> by_token, by_certificate;
  const auto& metadata = ctx.client_metadata();
  if (auto it = metadata.find(std::string(token_metadata_key)); it != metadata.end())
    if (auto token = bearer_token(std::string_view(it->second.data(), it->second.size()))) by_token = credentials.find(*token);
  if (auto auth = ctx.auth_context())
    if (auto cn = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME); !cn.empty())
      by_certificate = principal{principal::kind::node, std::string(cn.front().data(), cn.front().size())};
  if (by_token && by_certificate && *by_token != *by_certificate)
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "the token belongs to " + std::string(to_string(by_token->what)) +
                                                                " '" + by_token->name + "', the certificate to node '" +
                                                                by_certificate->name + "'");
  if (by_token) return *by_token;
  if (by_certificate) return *by_certificate;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no token and no client certificate");
}

/// An assistant client, or the reason this caller is not one.
grpc::Status require_client(const grpc::ServerContextBase& ctx, const credential_store& credentials) {
  auto who = caller_of(ctx, credentials);
  if (auto* status = std::get_if<grpc::Status>(&who)) return *status;
  const auto& p = std::get<principal>(who);
  if (p.what != principal::kind::client)
    return {grpc::StatusCode::PERMISSION_DENIED,
            "node '" + p.name + "' may only send its own changes (Push/Remove with its id as origin); this call is for clients"};
  return grpc::Status::OK;
}

/// A streaming call refused before it starts.
template <class Reactor>
class refused_call final : public Reactor {
 public:
  explicit refused_call(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

// ---- the node link ------------------------------------------------------------------------

class node_link_service;

/// One node's bounded outbound queue over its stream. Shared with the hub, which may call
/// it from any thread; it outlives the reactor, which it forgets in `reactor_gone`.
class grpc_node_link final : public node_link {
 public:
  using drained_fn = std::function<void()>;

  grpc_node_link(grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* reactor, std::size_t bound, drained_fn drained)
      : reactor_(reactor), bound_(bound), drained_(std::move(drained)) {}

  bool try_send(outbound_message message) override {
    const bool is_chunk = std::holds_alternative<chunk_ptr>(message);
    grpc::ByteBuffer bytes = encode(message);
    std::lock_guard g(mu_);
    if (!reactor_ || closed_) return false;
    if (is_chunk && queued_chunks_ >= bound_) return false;
    queue_.push_back({std::move(bytes), is_chunk});
    queued_chunks_ += is_chunk;
    if (!writing_) start_write_locked();
    return true;
  }

  [[nodiscard]] std::size_t queued_chunks() const override {
    std::lock_guard g(mu_);
    return queued_chunks_;
  }

  void close(const std::string& reason) override {
    std::lock_guard g(mu_);
    closed_ = true;
    if (finished_ || !reactor_) return;
    finished_ = true;
    reactor_->Finish(grpc::Status(grpc::StatusCode::ABORTED, reason));
  }

  /// The reactor finished its write; start the next one, and say when the queue drained
  /// to half its bound (the hub parks waves above that).
  void write_done(bool ok) {
    bool drained = false;
    {
      std::lock_guard g(mu_);
      writing_ = false;
      if (!queue_.empty()) {
        if (queue_.front().is_chunk) {
          drained = queued_chunks_-- == bound_ / 2 + 1;
        }
        queue_.pop_front();
      }
      if (!ok) {
        closed_ = true;
        queue_.clear();
        queued_chunks_ = 0;
      } else if (!queue_.empty() && !closed_) {
        start_write_locked();
      }
    }
    if (drained) drained_();
  }

  /// Closes the link for sending and claims the one call to Finish: true for the first
  /// caller only. (A failed write closes the link too, but only this claims the Finish.)
  bool claim_finish() {
    std::lock_guard g(mu_);
    closed_ = true;
    return !std::exchange(finished_, true);
  }

  void reactor_gone() {
    std::lock_guard g(mu_);
    reactor_ = nullptr;
    queue_.clear();
    queued_chunks_ = 0;
  }

 private:
  struct queued {
    grpc::ByteBuffer bytes;
    bool is_chunk;
  };

  void start_write_locked() {
    writing_ = true;
    reactor_->StartWrite(&queue_.front().bytes);
  }

  /// A chunk is serialized once, by whichever link meets it first; the others copy the
  /// ByteBuffer, which only adds references to the same slices.
  static grpc::ByteBuffer encode(const outbound_message& message) {
    if (auto* c = std::get_if<chunk_ptr>(&message))
      return (*c)->encoded<grpc::ByteBuffer>([](const chunk_message& m) { return serialize(to_proto(m)); });
    return serialize(std::visit([](const auto& m) { return to_proto(m); }, message));
  }

  static grpc::ByteBuffer serialize(const v1::HubMessage& message) {
    grpc::ByteBuffer out;
    bool own = false;
    grpc::SerializationTraits<v1::HubMessage>::Serialize(message, &out, &own);
    return out;
  }

  mutable std::mutex mu_;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* reactor_;
  std::size_t bound_;
  drained_fn drained_;
  std::deque<queued> queue_;  ///< front is being written while `writing_`
  std::size_t queued_chunks_ = 0;
  bool writing_ = false;
  bool closed_ = false;    ///< nothing more is queued
  bool finished_ = false;  ///< Finish was called (exactly once)
};

class node_link_service final : public v1::NodeLink::WithRawCallbackMethod_Connect<v1::NodeLink::Service> {
 public:
  node_link_service(server_hub& hub, const credential_store& credentials, const change_gate& gate)
      : hub_(hub), credentials_(credentials), gate_(gate) {}

  /// Ends every node's stream with `reason` (ABORTED): a draining hub says goodbye.
  void close_all(const std::string& reason) {
    std::vector<std::shared_ptr<grpc_node_link>> links;
    {
      std::lock_guard g(links_mu_);
      for (auto& [c, link] : links_) links.push_back(link);
    }
    for (auto& link : links) link->close(reason);
  }

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Connect(grpc::CallbackServerContext* context) override {
    if (gate_.closed())  // a draining hub takes no new links: the node comes back after the restart
      return new refused_call<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>>(
          {grpc::StatusCode::UNAVAILABLE, std::string(draining_refusal) + ": reconnect later"});
    auto who = caller_of(*context, credentials_);
    if (auto* status = std::get_if<grpc::Status>(&who))
      return new refused_call<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>>(*status);
    const auto& p = std::get<principal>(who);
    if (p.what != principal::kind::node)
      return new refused_call<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>>(
          {grpc::StatusCode::PERMISSION_DENIED, "client '" + p.name + "' cannot open a node link: that needs a node's token or certificate"});
    return new connection(*this, context->peer(), p.name);
  }

 private:
  /// One node's stream. Reads one message at a time and hands it to the hub's executor;
  /// the next read starts once the hub has handled it, which keeps a node's messages in
  /// order and lets a flood from one node wait on itself.
  class connection final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    connection(node_link_service& service, std::string peer, std::string authenticated)
        : service_(service), hub_(service.hub_), peer_(std::move(peer)), authenticated_(std::move(authenticated)) {
      link_ = std::make_shared<grpc_node_link>(this, hub_.options().queue_chunks, [this, &hub = hub_] {
        // Called from write_done, while the reactor is alive; the hub copies what it needs.
        hub.post([&hub, node = node_id_] {
          if (!node.empty()) hub.on_drained(node);
        });
      });
      {
        std::lock_guard g(service_.links_mu_);
        service_.links_[this] = link_;
      }
      StartRead(&in_);
    }

    void OnReadDone(bool ok) override {
      if (!ok) return finish(grpc::Status::OK);
      v1::NodeMessage message;
      if (!grpc::SerializationTraits<v1::NodeMessage>::Deserialize(&in_, &message).ok())
        return finish({grpc::StatusCode::INVALID_ARGUMENT, "malformed NodeMessage"});
      if (node_id_.empty()) {
        if (!message.has_hello()) return finish({grpc::StatusCode::FAILED_PRECONDITION, "the first message must be Hello"});
        auto h = from_proto(message.hello());
        if (h.node_id != authenticated_)  // a node cannot pose as another
          return finish({grpc::StatusCode::PERMISSION_DENIED,
                         "the credentials of node '" + authenticated_ + "' cannot say hello as '" + h.node_id + "'"});
        hub_.post([this, h = std::move(h)] {
          // Named before attach: attach queues the welcome, and the link's drain callback
          // (on a gRPC thread, ordered after that queueing by the link's mutex) reads it.
          node_id_ = h.node_id;
          auto status = guarded([&] { hub_.attach(h, link_); });
          if (!status.ok()) return finish(status);
          spdlog::info("node {} connected from {}", node_id_, peer_);
          StartRead(&in_);
        });
        return;
      }
      if (message.has_hello())  // a replay, or a confused node: either way the stream is spent
        return finish({grpc::StatusCode::INVALID_ARGUMENT, "a second Hello on one stream; reconnect to say hello again"});
      auto inbound = from_proto(message);
      if (!inbound) return finish({grpc::StatusCode::INVALID_ARGUMENT, "unexpected message after Hello"});
      hub_.post([this, m = std::move(*inbound)]() mutable {
        auto status = guarded([&] { hub_.on_message(node_id_, std::move(m)); });
        if (!status.ok()) spdlog::warn("node {}: {}", node_id_, status.error_message());
        StartRead(&in_);
      });
    }

    void OnWriteDone(bool ok) override { link_->write_done(ok); }

    void OnDone() override {
      link_->reactor_gone();
      {
        std::lock_guard g(service_.links_mu_);
        service_.links_.erase(this);
      }
      delete this;
    }

   private:
    /// Ends the stream: the hub forgets the link (detach is idempotent), and Finish is
    /// called once, unless the hub already finished it (a newer connection replaced it).
    void finish(grpc::Status status) {
      const bool claimed = link_->claim_finish();
      if (!node_id_.empty()) {
        spdlog::info("node {} disconnected{}", node_id_, status.ok() ? "" : ": " + status.error_message());
        hub_.post([&hub = hub_, node = node_id_, link = link_] { hub.detach(node, link); });
      } else if (!status.ok()) {
        spdlog::warn("refused a node link from {}: {}", peer_, status.error_message());
      }
      if (claimed) Finish(status);
    }

    node_link_service& service_;
    server_hub& hub_;
    std::string peer_;
    const std::string authenticated_;  ///< the node its token or certificate names
    std::string node_id_;  ///< set once the hello is accepted; only the reactor's own path writes it
    std::shared_ptr<grpc_node_link> link_;
    grpc::ByteBuffer in_;
  };

  server_hub& hub_;
  const credential_store& credentials_;
  const change_gate& gate_;
  std::mutex links_mu_;  ///< guards links_ only
  std::map<const connection*, std::shared_ptr<grpc_node_link>> links_;  ///< every live stream, for close_all
};

// ---- the assistant API ---------------------------------------------------------------------

class assistant_service final : public v1::Assistant::CallbackService {
 public:
  assistant_service(server_hub& hub, credential_store& credentials, hub_metrics& metrics, change_gate& gate)
      : hub_(hub), credentials_(credentials), metrics_(metrics), gate_(gate) {}

  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* ctx, const v1::SessionRequest* req,
                                          v1::SessionReply* reply) override {
    return changing_unary(ctx, [=, this] { fill(*reply->mutable_session(), hub_.create_session(req->session())); });
  }

  grpc::ServerUnaryReactor* JoinSession(grpc::CallbackServerContext* ctx, const v1::MembershipRequest* req,
                                        v1::SessionReply* reply) override {
    return changing_unary(ctx, [=, this] {
      fill(*reply->mutable_session(), hub_.join(req->session(), {req->nodes().begin(), req->nodes().end()}));
    });
  }

  grpc::ServerUnaryReactor* LeaveSession(grpc::CallbackServerContext* ctx, const v1::MembershipRequest* req,
                                         v1::SessionReply* reply) override {
    return changing_unary(ctx, [=, this] {
      fill(*reply->mutable_session(), hub_.leave(req->session(), {req->nodes().begin(), req->nodes().end()}));
    });
  }

  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx, const v1::ListSessionsRequest*,
                                         v1::ListSessionsReply* reply) override {
    return unary(ctx, [=, this] {
      for (auto& s : hub_.sessions()) fill(*reply->add_sessions(), s);
    });
  }

  grpc::ServerUnaryReactor* PromoteSkill(grpc::CallbackServerContext* ctx, const v1::PromoteSkillRequest* req,
                                         v1::PromoteSkillReply* reply) override {
    auto* reactor = ctx->DefaultReactor();
    if (auto status = require_client(*ctx, credentials_); !status.ok()) return reactor->Finish(status), reactor;
    auto pass = std::make_shared<change_gate::pass>(gate_.enter());
    if (!*pass) return reactor->Finish(draining()), reactor;
    hub_.post([=, this] {  // moves folders and fsyncs: bulk work, not the control lane
      reactor->Finish(guarded([&] {
        const auto r = hub_.promote_skill(req->session(), req->name());
        reply->set_kind(std::string(to_string(r.kind)));
        reply->set_global_name(r.global_name);
        reply->set_digest(to_bytes(r.content));
        reply->set_detail(r.detail);
      }));
    });
    return reactor;
  }

  grpc::ServerUnaryReactor* ListSkills(grpc::CallbackServerContext* ctx, const v1::ListSkillsRequest*,
                                       v1::ListSkillsReply* reply) override {
    return unary(ctx, [=, this] {
      for (auto& s : hub_.skills()) {
        auto& out = *reply->add_skills();
        out.set_name(s.global_name);
        out.set_digest(to_bytes(s.content));
        for (auto& session : s.sessions) out.add_sessions(session);
      }
    });
  }

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const v1::StatusRequest*, v1::StatusReply* reply) override {
    return unary(ctx, [=, this] { fill(*reply, hub_.status()); });
  }

  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx, const v1::ListRequest* req, v1::ListReply* reply) override {
    auto* reactor = ctx->DefaultReactor();
    if (auto status = require_client(*ctx, credentials_); !status.ok()) return reactor->Finish(status), reactor;
    hub_.post_control([=, this] {
      reply->set_session(req->session());
      if (req->node().empty()) return reactor->Finish(guarded([&] { fill_page(*req, *reply); }));
      auto status = guarded([&] {
        auto entries = std::make_shared<std::vector<node_entry>>();  // the node's, after the page's start
        hub_.ask_node(req->node(), node_command::kind::list, req->session(), req->path(), [=, this](command_result r) {
          if (!r.error.empty()) return reactor->Finish({grpc::StatusCode::UNAVAILABLE, "node " + req->node() + ": " + r.error});
          for (auto& e : r.entries)
            if (e.path > req->after()) entries->push_back(std::move(e));
          if (!r.last) return;
          fill_node_page(*req, *entries, *reply);
          reactor->Finish(grpc::Status::OK);
        });
      });
      if (!status.ok()) reactor->Finish(status);
    });
    return reactor;
  }

  /// A listing page's bounds: entries, and bytes (half the message bound).
  static constexpr std::size_t list_page_files = 10'000;
  static constexpr std::size_t list_page_bytes = max_message_bytes / 2;

  /// One page of the mirror listing, as many entries as fit `list_page_bytes` (and at most
  /// the request's limit): a session of any size lists without a reply over the message
  /// bound, however long its paths or however many members each entry names.
  void fill_page(const v1::ListRequest& req, v1::ListReply& reply) {
    const std::size_t limit = req.limit() ? std::min<std::size_t>(req.limit(), list_page_files) : list_page_files;
    auto page = hub_.list_page(req.session(), req.path(), !req.files_only(), req.after(), limit);
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < page.files.size(); ++i) {
      v1::ListedFile one;
      fill(one, page.files[i]);
      bytes += one.ByteSizeLong() + 8;  // and its field tag and length
      if (bytes > list_page_bytes && i > 0) {
        page.next_after = page.files[i - 1].file.path;
        break;
      }
      reply.add_files()->Swap(&one);
    }
    reply.set_next_after(page.next_after);
  }

  /// One page of a node's own listing, bounded as `fill_page` bounds the mirror's. The node
  /// lists its folder whole for every page (its survey reads the stat cache, not the
  /// files); the page is what follows `after` in path order.
  static void fill_node_page(const v1::ListRequest& req, std::vector<node_entry>& entries, v1::ListReply& reply) {
    std::sort(entries.begin(), entries.end(), [](const node_entry& a, const node_entry& b) { return a.path < b.path; });
    const std::size_t limit = req.limit() ? std::min<std::size_t>(req.limit(), list_page_files) : list_page_files;
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      v1::FileEntry one;
      fill(one, entries[i], req.node());
      bytes += one.ByteSizeLong() + 8;
      if (i == limit || (bytes > list_page_bytes && i > 0)) {
        reply.set_next_after(entries[i - 1].path);
        return;
      }
      reply.add_node_files()->Swap(&one);
    }
  }

  grpc::ServerUnaryReactor* IssueToken(grpc::CallbackServerContext* ctx, const v1::IssueTokenRequest* req,
                                       v1::IssueTokenReply* reply) override {
    return unary(ctx, [=, this] {
      reply->set_token(credentials_.issue({req->kind() == v1::IssueTokenRequest::NODE ? principal::kind::node : principal::kind::client,
                                           req->name()}));
    });
  }

  grpc::ServerUnaryReactor* Remove(grpc::CallbackServerContext* ctx, const v1::RemoveRequest* req, v1::WriteReply* reply) override {
    auto* reactor = ctx->DefaultReactor();
    if (auto status = may_change(*ctx, req->origin_node()); !status.ok()) return reactor->Finish(status), reactor;
    auto pass = std::make_shared<change_gate::pass>(gate_.enter());
    if (!*pass) return reactor->Finish(draining()), reactor;
    hub_.post([=, this] {
      std::optional<write_result> result;
      auto status = guarded([&] { result = timed_commit([&] { return hub_.remove(req->session(), req->path(), origin_of(*req)); }); });
      pass->release();  // committed or refused: a drain need not wait for the answer's delivery wait
      if (!status.ok()) return reactor->Finish(status);
      finish_write(reactor, *result, req->wait_all(), req->timeout_ms(), reply);
    });
    return reactor;
  }

  grpc::ServerReadReactor<v1::PushRequest>* Push(grpc::CallbackServerContext* ctx, v1::WriteReply* reply) override {
    auto pass = gate_.enter();
    if (!pass) return new refused_call<grpc::ServerReadReactor<v1::PushRequest>>(draining());
    return new push_reactor(*this, ctx, reply, std::move(pass));
  }

  /// Have/want before a delta Push: which blocks of the new version the mirror's copy lacks.
  grpc::ServerUnaryReactor* Want(grpc::CallbackServerContext* ctx, const v1::WantRequest* req, v1::WantReply* reply) override {
    return unary(ctx, [=, this] {
      const auto wanted = blocks_of(req->blocks(), hub_.options().max_file_bytes);
      std::uint64_t bytes = 0;
      for (const auto i : hub_.blocks_wanted(req->session(), req->path(), wanted)) {
        reply->add_missing(i);
        bytes += wanted.blocks[i].span.size;
      }
      reply->set_missing_bytes(bytes);
    });
  }

  grpc::ServerReadReactor<v1::TreeRequest>* PushTree(grpc::CallbackServerContext* ctx, v1::TreeReply* reply) override {
    auto pass = gate_.enter();
    if (!pass) return new refused_call<grpc::ServerReadReactor<v1::TreeRequest>>(draining());
    return new tree_reactor(*this, ctx, reply, std::move(pass));
  }

  grpc::ServerWriteReactor<v1::CatReply>* Cat(grpc::CallbackServerContext* ctx, const v1::CatRequest* req) override {
    if (auto status = require_client(*ctx, credentials_); !status.ok()) return new refused_call<grpc::ServerWriteReactor<v1::CatReply>>(status);
    return new cat_reactor(hub_, *req);
  }

  grpc::ServerWriteReactor<v1::Event>* Events(grpc::CallbackServerContext* ctx, const v1::EventsRequest* req) override {
    if (auto status = require_client(*ctx, credentials_); !status.ok()) return new refused_call<grpc::ServerWriteReactor<v1::Event>>(status);
    return new events_reactor(hub_, req->replay());
  }

 private:
  /// What a change call gets once the hub drains: nothing of it was taken.
  static grpc::Status draining() {
    return {grpc::StatusCode::UNAVAILABLE, std::string(draining_refusal) + ": it takes no new changes now; retry once it is back"};
  }

  /// Runs a commit and records how long it took to become durable.
  template <class F>
  std::invoke_result_t<F&> timed_commit(F&& commit) {
    const auto start = std::chrono::steady_clock::now();
    auto result = commit();
    metrics_.commit_duration.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return result;
  }

  /// A node-originated change names its node and base version; an assistant's does not.
  template <class Request>
  static std::optional<change_origin> origin_of(const Request& r) {
    if (r.origin_node().empty()) return std::nullopt;
    check_node_id(r.origin_node());
    return change_origin{r.origin_node(), r.base_version()};
  }

  /// A change (Push, Remove) may come from a client, or from a node as its own change:
  /// `origin_node` must then be the node its credentials name — a node cannot pose as another.
  grpc::Status may_change(const grpc::ServerContextBase& ctx, const std::string& origin_node) const {
    auto who = caller_of(ctx, credentials_);
    if (auto* status = std::get_if<grpc::Status>(&who)) return *status;
    const auto& p = std::get<principal>(who);
    if (p.what == principal::kind::client && origin_node.empty()) return grpc::Status::OK;
    if (p.what == principal::kind::node && origin_node == p.name) return grpc::Status::OK;
    if (p.what == principal::kind::client)
      return {grpc::StatusCode::PERMISSION_DENIED, "client '" + p.name + "' cannot send a change as node '" + origin_node + "'"};
    return {grpc::StatusCode::PERMISSION_DENIED,
            "node '" + p.name + "' may only send its own changes" + (origin_node.empty() ? "" : ", not node '" + origin_node + "''s")};
  }

  /// `may_change` for a stream that learns its origin from its first message: throws.
  void require_may_change(const grpc::ServerContextBase& ctx, const std::string& origin_node) const {
    if (auto status = may_change(ctx, origin_node); !status.ok())
      throw error(status.error_code() == grpc::StatusCode::UNAUTHENTICATED ? errc::unauthenticated : errc::permission_denied,
                  status.error_message());
  }

  /// Every unary control call, clients only: run `body` on the hub's control lane, then
  /// finish with its status. (Uploads, commits and waves run on the bulk executor and never
  /// delay it.)
  template <class F>
  grpc::ServerUnaryReactor* unary(grpc::CallbackServerContext* ctx, F body) {
    auto* reactor = ctx->DefaultReactor();
    if (auto status = require_client(*ctx, credentials_); !status.ok()) return reactor->Finish(status), reactor;
    hub_.post_control([reactor, body = std::move(body)] { reactor->Finish(guarded(body)); });
    return reactor;
  }

  /// `unary` for a call that changes the hub (membership): refused while draining, and
  /// waited for by a drain once it started.
  template <class F>
  grpc::ServerUnaryReactor* changing_unary(grpc::CallbackServerContext* ctx, F body) {
    auto* reactor = ctx->DefaultReactor();
    if (auto status = require_client(*ctx, credentials_); !status.ok()) return reactor->Finish(status), reactor;
    auto pass = std::make_shared<change_gate::pass>(gate_.enter());
    if (!*pass) return reactor->Finish(draining()), reactor;
    hub_.post_control([reactor, pass, body = std::move(body)] {
      auto status = guarded(body);
      pass->release();
      reactor->Finish(status);
    });
    return reactor;
  }

  /// Answers a write: at once, or once every member holds it (or the wait runs out, and
  /// the reply names who does not).
  template <class Reactor>
  void finish_write(Reactor* reactor, const write_result& result, bool wait_all, std::uint32_t timeout_ms, v1::WriteReply* reply) {
    fill(*reply, result);
    if (!wait_all) return reactor->Finish(grpc::Status::OK);
    const auto timeout = std::chrono::milliseconds(timeout_ms ? timeout_ms : 120'000);
    hub_.when_delivered(result.session, result.path, result.version, timeout, [reactor, reply](std::vector<std::string> missing) {
      for (auto& m : missing) reply->add_missing(m);
      reactor->Finish(grpc::Status::OK);
    });
  }

  /// A client stream the hub takes one message at a time on its executor (the next read
  /// starts once the last message is on disk, so a fast client cannot outrun the hub's
  /// memory) and publishes at its end: `Derived::take(request)` per message,
  /// `Derived::publish()` at the end, `Derived::finish(status)` on a failure. A derived
  /// constructor calls `start()` last, so no read completes into a half-built reactor.
  template <class Derived, class Request>
  class upload_reactor : public grpc::ServerReadReactor<Request> {
   public:
    void OnReadDone(bool ok) override {
      if (!ok) {
        if (ctx_->IsCancelled()) return self().finish({grpc::StatusCode::CANCELLED, what_ + " cancelled; nothing was changed"});
        return hub_.post([this] { self().publish(); });
      }
      hub_.post([this] {
        auto status = guarded([&] { self().take(request_); });
        if (!status.ok()) return self().finish(status);
        this->StartRead(&request_);
      });
    }

    void OnDone() override { delete &self(); }

   protected:
    upload_reactor(assistant_service& service, grpc::CallbackServerContext* ctx, std::string what, change_gate::pass pass)
        : service_(service), hub_(service.hub_), ctx_(ctx), pass_(std::move(pass)), what_(std::move(what)) {}
    void start() { this->StartRead(&request_); }
    /// Counts received file bytes (the upload metric).
    void received(std::size_t bytes) { service_.metrics_.upload_bytes.add(bytes); }

    assistant_service& service_;
    server_hub& hub_;
    grpc::CallbackServerContext* ctx_;
    /// Held from the first message until the change is committed or failed; a drain waits for it.
    change_gate::pass pass_;

   private:
    Derived& self() { return static_cast<Derived&>(*this); }
    Request request_;
    std::string what_;
  };

  /// A block list as the wire carries it (Want, a delta Push); each block at most the
  /// content-defined maximum, the whole at most `max_size`.
  static block_list blocks_of(const google::protobuf::RepeatedPtrField<v1::Block>& blocks, std::uint64_t max_size) {
    block_list out;
    out.blocks.reserve(static_cast<std::size_t>(blocks.size()));
    for (const auto& b : blocks) add_block(out, b.size(), digest_from_bytes(b.digest()), cdc_params{}.max, max_size);
    return out;
  }

  /// The most a delta Push may carry: its blocks are held in memory until the stream ends.
  static constexpr std::uint64_t max_delta_carried = 256u << 20;

  /// Push: header first, then data pieces into a temp file in the mirror; the end of the
  /// stream publishes the version. A cancelled or short stream publishes nothing. With a
  /// block list in the header (a delta), the data is the carried blocks, kept in memory,
  /// and the version is built from them and the mirror's copy at the end.
  
  class push_reactor final : public upload_reactor<push_reactor, v1::PushRequest> {
   public:
    push_reactor(assistant_service& service, grpc::CallbackServerContext* ctx, v1::WriteReply* reply, change_gate::pass pass)
        : upload_reactor(service, ctx, "push", std::move(pass)), reply_(reply) {
      start();
    }

   private:
    friend upload_reactor;
    void take(const v1::PushRequest& request) {
      if (request.has_header()) {
        if (upload_) throw error(errc::invalid_argument, "push: a second header");
        header_ = request.header();
        service_.require_may_change(*ctx_, header_.origin_node());
        if (header_.blocks_size() > 0 || header_.carried_size() > 0) take_delta_header();
        upload_.emplace(header_.size() >= 0
                            ? hub_.begin_upload(header_.session(), header_.path(), static_cast<std::uint64_t>(header_.size()))
                            : hub_.begin_upload(header_.session(), header_.path()));
        return;
      }
      if (!upload_) throw error(errc::invalid_argument, "push: the first message must be the header");
      received(request.data().size());
      if (!delta_) return upload_->append(request.data());
      if (request.data().size() > delta_->expected - delta_->bytes.size())
        throw error(errc::invalid_argument, "push: more data than the carried blocks hold; nothing was changed");
      delta_->bytes += request.data();
    }

    /// A delta's header: the blocks, and which of them the data carries.
    void take_delta_header() {
      if (!header_.origin_node().empty()) throw error(errc::invalid_argument, "push: a node's upload carries no block list");
      auto& d = delta_.emplace();
      d.wanted = blocks_of(header_.blocks(), hub_.options().max_file_bytes);
      if (header_.size() != static_cast<std::int64_t>(d.wanted.size()))
        throw error(errc::invalid_argument, "push: the size is not the blocks' total; nothing was changed");
      std::int64_t previous = -1;
      for (const auto i : header_.carried()) {
        if (static_cast<std::int64_t>(i) <= previous || i >= d.wanted.blocks.size())
          throw error(errc::invalid_argument, "push: the carried blocks must be ascending indices into the block list");
        previous = i;
        d.expected += d.wanted.blocks[i].span.size;
      }
      if (d.expected > max_delta_carried)
        throw error(errc::too_large, "push: a delta may carry at most " + std::to_string(max_delta_carried) +
                                         " bytes; push the file whole");
    }

    /// The version a delta describes, built into the upload from the carried blocks and the
    /// mirror's copy. A block that is neither (the copy changed since Want) or that does not
    /// match its digest is FAILED_PRECONDITION: the client pushes the file whole.
    void build_delta() {
      auto& d = *delta_;
      if (d.bytes.size() != d.expected)
        throw error(errc::invalid_argument, "push: received " + std::to_string(d.bytes.size()) + " of the " +
                                                std::to_string(d.expected) + " bytes its blocks carry; nothing was changed");
      std::unordered_map<digest, std::span<const std::byte>, digest_hash> carried;
      std::size_t at = 0;
      for (const auto i : header_.carried()) {
        const auto& b = d.wanted.blocks[i];
        carried.emplace(b.sha256, std::as_bytes(std::span(d.bytes.data() + at, b.span.size)));
        at += b.span.size;
      }
      try {
        hub_.append_blocks(*upload_, header_.session(), header_.path(), d.wanted,
                           [&](const digest& sha) -> std::optional<std::span<const std::byte>> {
                             const auto it = carried.find(sha);
                             if (it == carried.end()) return std::nullopt;
                             return it->second;
                           });
      } catch (const error& e) {
        if (e.code() != errc::not_found && e.code() != errc::corrupt) throw;
        throw failed_precondition(std::string(e.what()) + "; nothing was changed: push the file whole");
      }
    }

    void publish() {
      std::optional<write_result> result;
      auto status = guarded([&] {
        if (!upload_) throw error(errc::invalid_argument, "push: no header was sent; nothing was changed");
        if (delta_) build_delta();
        if (header_.size() >= 0 && upload_->size() != static_cast<std::uint64_t>(header_.size()))
          throw error(errc::invalid_argument, "push: received " + std::to_string(upload_->size()) + " of " +
                                                  std::to_string(header_.size()) + " bytes; nothing was changed");
        result = service_.timed_commit([&] { return hub_.finish_upload(std::move(*upload_), origin_of(header_)); });
        upload_.reset();
      });
      pass_.release();
      if (!status.ok()) return finish(status);
      service_.finish_write(this, *result, header_.wait_all(), header_.timeout_ms(), reply_);
    }

    void finish(grpc::Status status) {
      upload_.reset();  // an unpublished upload removes its temp file
      pass_.release();
      Finish(status);
    }

    v1::WriteReply* reply_;
    v1::PushHeader header_;
    std::optional<server_hub::upload> upload_;
    struct delta_state {
      block_list wanted;
      std::uint64_t expected = 0;  ///< the carried blocks' bytes
      std::string bytes;           ///< those received so far
    };
    std::optional<delta_state> delta_;
  };

  /// PushTree: a header, then each file's TreeFile and data pieces into temp files in the
  /// mirror, as Push; the end of the stream commits them and the header's removals as one
  /// change set (basic_hub::commit_set). A cancelled or short stream publishes nothing.
  class tree_reactor final : public upload_reactor<tree_reactor, v1::TreeRequest> {
   public:
    tree_reactor(assistant_service& service, grpc::CallbackServerContext* ctx, v1::TreeReply* reply, change_gate::pass pass)
        : upload_reactor(service, ctx, "tree push", std::move(pass)), reply_(reply) {
      start();
    }

   private:
    friend upload_reactor;
    void take(const v1::TreeRequest& request) {
      switch (request.body_case()) {
        case v1::TreeRequest::kHeader: {
          if (header_) throw error(errc::invalid_argument, "tree push: a second header");
          header_ = request.header();
          // As Push: a client's set, or a node's own changes under its own id.
          service_.require_may_change(*ctx_, header_->origin_node());
          if (!header_->path().empty()) check_folder(header_->path());
          for (const auto& r : header_->remove()) removals_.push_back(beneath(r));
          if (!header_->origin_node().empty()) {
            check_node_id(header_->origin_node());
            if (header_->remove_base_size() != header_->remove_size())
              throw error(errc::invalid_argument, "tree push: " + std::to_string(header_->remove_size()) + " removals but " +
                                                      std::to_string(header_->remove_base_size()) + " base versions");
            origin_.emplace(set_origin{header_->origin_node(), {}});
          } else if (header_->remove_base_size() > 0) {
            throw error(errc::invalid_argument, "tree push: base versions without an origin node");
          }
          return;
        }
        case v1::TreeRequest::kFile: {
          if (!header_) throw error(errc::invalid_argument, "tree push: the first message must be the header");
          close_file();
          const auto& f = request.file();
          if (f.size() < 0) throw error(errc::invalid_argument, "tree push: '" + f.path() + "' has no size");
          if (uploads_.size() + removals_.size() + links_.size() >= hub_.options().max_set_files)
            throw error(errc::too_large, "tree push: more than " + std::to_string(hub_.options().max_set_files) +
                                             " changes in one set (max_set_files); nothing was changed");
          if (!f.symlink().empty()) {  // a symlink: its text is all there is, no data follows
            if (origin_) throw error(errc::invalid_argument, "tree push: a node's change set carries no symlinks");
            if (f.size() != 0) throw error(errc::invalid_argument, "tree push: the symlink '" + f.path() + "' has a size");
            links_.push_back({beneath(f.path()), f.symlink()});
            check_symlink_target(links_.back().path, links_.back().target);
            in_link_ = true;
            return;
          }
          in_link_ = false;
          expected_ = static_cast<std::uint64_t>(f.size());
          uploads_.push_back(hub_.begin_upload(header_->session(), beneath(f.path()), expected_));
          if (origin_) origin_->bases.push_back(f.base_version());
          return;
        }
        case v1::TreeRequest::kData:
          if (uploads_.empty() || in_link_) throw error(errc::invalid_argument, "tree push: data before any file, or after a symlink");
          received(request.data().size());
          uploads_.back().append(request.data());
          return;
        case v1::TreeRequest::BODY_NOT_SET: break;
      }
      throw error(errc::invalid_argument, "tree push: a message with no body");
    }

    /// `rel` beneath the header's folder, checked as a path of its own.
    std::string beneath(const std::string& rel) const {
      check_path(rel);
      return header_->path().empty() ? rel : header_->path() + "/" + rel;
    }

    /// The file before the next one (or the end) must have come whole.
    void close_file() {
      if (uploads_.empty() || uploads_.back().size() == expected_) return;
      throw error(errc::invalid_argument, "tree push: received " + std::to_string(uploads_.back().size()) + " of " +
                                              std::to_string(expected_) + " bytes of a file; nothing was changed");
    }

    void publish() {
      auto status = guarded([&] {
        if (!header_) throw error(errc::invalid_argument, "tree push: no header was sent; nothing was changed");
        close_file();
        if (origin_) origin_->bases.insert(origin_->bases.end(), header_->remove_base().begin(), header_->remove_base().end());
        results_ = service_.timed_commit(
            [&] { return hub_.commit_set(header_->session(), std::move(uploads_), removals_, origin_, links_); });
        uploads_.clear();
      });
      pass_.release();
      if (!status.ok()) return finish(status);
      reply_->set_session(header_->session());
      for (const auto& r : results_) fill(*reply_->add_changes(), r);
      if (!results_.empty())
        for (const auto& m : results_.front().members) reply_->add_members(m);
      if (!header_->wait_all() || results_.empty()) return Finish(grpc::Status::OK);
      wait_all();
    }

    /// Answers once every member holds every change (or the wait ran out: the reply then
    /// names each member missing any of them).
    void wait_all() {
      const auto timeout = std::chrono::milliseconds(header_->timeout_ms() ? header_->timeout_ms() : 120'000);
      std::vector<std::pair<std::string, std::uint64_t>> versions;
      versions.reserve(results_.size());
      for (const auto& r : results_) versions.emplace_back(r.path, r.version);
      // The answer finishes the call, and this reactor with it (it may come inline).
      hub_.when_delivered(header_->session(), std::move(versions), timeout, [this](std::vector<std::string> missing) {
        for (const auto& m : missing) reply_->add_missing(m);
        Finish(grpc::Status::OK);
      });
    }

    void finish(grpc::Status status) {
      uploads_.clear();  // unpublished uploads remove their temp files
      pass_.release();
      Finish(status);
    }

    v1::TreeReply* reply_;
    std::optional<v1::TreeHeader> header_;
    std::vector<server_hub::upload> uploads_;
    std::vector<std::string> removals_;
    std::vector<symlink_change> links_;
    std::optional<set_origin> origin_;  ///< a node's own changes: its id and each change's base
    std::uint64_t expected_ = 0;
    bool in_link_ = false;  ///< the last TreeFile was a symlink: no data may follow
    std::vector<write_result> results_;
  };

  /// Cat: streams the mirror's copy in 1 MiB pieces read on the executor, or relays a
  /// node's answer piece by piece.
  class cat_reactor final : public grpc::ServerWriteReactor<v1::CatReply> {
   public:
    cat_reactor(server_hub& hub, v1::CatRequest request) : hub_(hub), request_(std::move(request)) {
      hub_.post([this] { request_.node().empty() ? open_mirror() : ask_node(); });
    }

    void OnWriteDone(bool ok) override {
      if (!ok) return done_writing(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      if (fd_) return hub_.post([this] { read_next(); });
      std::lock_guard g(mu_);
      writing_ = false;
      pieces_.pop_front();
      write_next_locked();
    }

    void OnDone() override {
      const auto live = live_;
      {
        std::lock_guard g(live->mu);  // waits for a node answer being handed over right now
        live->alive = false;
      }
      delete this;
    }

   private:
    static constexpr std::size_t piece_size = 1 << 20;

    void open_mirror() {
      auto status = guarded([&] { fd_ = hub_.open_mirror(request_.session(), request_.path()); });
      if (!status.ok()) return Finish(status);
      read_next();
    }

    void read_next() {
      std::string& data = *reply_.mutable_data();
      data.resize(piece_size);
      ssize_t n;
      do n = ::read(fd_.get(), data.data(), data.size());
      while (n < 0 && errno == EINTR);
      if (n < 0) return Finish({grpc::StatusCode::INTERNAL, std::string("read: ") + std::strerror(errno)});
      if (n == 0) return Finish(grpc::Status::OK);
      data.resize(static_cast<std::size_t>(n));
      StartWrite(&reply_);
    }

    void ask_node() {
      auto status = guarded([&] {
        hub_.ask_node(request_.node(), node_command::kind::read, request_.session(), request_.path(), [this, live = live_](command_result r) {
          std::lock_guard l(live->mu);
          if (!live->alive) return;  // the call ended (the client went away): drop the rest
          std::lock_guard g(mu_);
          if (!r.error.empty()) {
            final_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "node " + request_.node() + ": " + r.error);
          } else {
            if (!r.data.empty()) {
              v1::CatReply piece;
              piece.set_data(std::move(r.data));
              pieces_.push_back(std::move(piece));
            }
            if (r.last) final_ = grpc::Status::OK;
          }
          write_next_locked();
        });
      });
      if (!status.ok()) Finish(status);
    }

    void write_next_locked() {
      if (writing_ || finished_) return;
      if (!pieces_.empty()) {
        writing_ = true;
        StartWrite(&pieces_.front());
      } else if (final_) {
        finished_ = true;
        Finish(*final_);
      }
    }

    void done_writing(grpc::Status status) {
      if (fd_) return Finish(status);
      std::lock_guard g(mu_);
      writing_ = false;
      if (!finished_) {
        finished_ = true;
        Finish(status);
      }
    }

    server_hub& hub_;
    v1::CatRequest request_;
    unique_fd fd_;
    v1::CatReply reply_;
    std::mutex mu_;  ///< node relay: pieces arrive on hub threads
    std::deque<v1::CatReply> pieces_;
    std::optional<grpc::Status> final_;
    bool writing_ = false, finished_ = false;
    /// A node's answers keep arriving on hub threads after the call may have ended (a client
    /// that stops reading mid-file): they reach this reactor only while it lives.
    struct liveness {
      std::recursive_mutex mu;  // recursive: a Finish inside a handover may end the call inline
      bool alive = true;
    };
    std::shared_ptr<liveness> live_ = std::make_shared<liveness>();
  };

  /// Events: follows the hub's event stream. A client too slow to keep up loses events
  /// (counted in the next one's detail) rather than growing the hub's memory.
  class events_reactor final : public grpc::ServerWriteReactor<v1::Event> {
   public:
    events_reactor(server_hub& hub, bool replay) : hub_(hub) {
      subscription_ = hub_.subscribe([this](const event& e) { push(e); }, replay);
    }

    void OnWriteDone(bool ok) override {
      std::lock_guard g(mu_);
      writing_ = false;
      if (!ok) return finish_locked(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      queue_.pop_front();
      write_next_locked();
    }

    void OnCancel() override {
      std::lock_guard g(mu_);
      finish_locked(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    }

    void OnDone() override {
      hub_.unsubscribe(subscription_);  // after this no handler runs
      delete this;
    }

   private:
    static constexpr std::size_t max_queued = 4096;

    void push(const event& e) {
      std::lock_guard g(mu_);
      if (finished_) return;
      if (queue_.size() >= max_queued) {
        ++dropped_;
        return;
      }
      v1::Event out;
      fill(out, e);
      if (dropped_) out.set_detail(out.detail() + (out.detail().empty() ? "" : "; ") + std::to_string(std::exchange(dropped_, 0)) +
                                   " earlier event(s) dropped: client too slow");
      queue_.push_back(std::move(out));
      write_next_locked();
    }

    void write_next_locked() {
      if (writing_ || finished_ || queue_.empty()) return;
      writing_ = true;
      StartWrite(&queue_.front());
    }

    void finish_locked(grpc::Status status) {
      if (finished_) return;
      finished_ = true;
      Finish(status);
    }

    server_hub& hub_;
    std::uint64_t subscription_ = 0;
    std::mutex mu_;
    std::deque<v1::Event> queue_;
    std::size_t dropped_ = 0;
    bool writing_ = false, finished_ = false;
  };

  server_hub& hub_;
  credential_store& credentials_;
  hub_metrics& metrics_;
  change_gate& gate_;
};

/// Times every assistant call from its arrival to its status, by method (a fixed set of
/// names). Node links are left out: a stream's life is a connection's, not a call's.
class rpc_timer final : public grpc::experimental::Interceptor {
 public:
  explicit rpc_timer(metrics::histogram& h) : histogram_(h) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS))
      histogram_.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    methods->Proceed();
  }

 private:
  metrics::histogram& histogram_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

class rpc_timer_factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit rpc_timer_factory(hub_metrics& metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    constexpr std::string_view service = "/meshhub.v1.Assistant/";
    const std::string_view method = info->method() ? info->method() : "";
    if (!method.starts_with(service)) return nullptr;
    return new rpc_timer(metrics_.rpc_duration.with(method.substr(service.size())));
  }

 private:
  hub_metrics& metrics_;
};

/// TLS (with client certificates verified against --tls-client-ca when given), or on a
/// loopback address only, plaintext (gRPC's local credentials: they refuse non-loopback
/// peers by construction). Every call then passes the token checker.
std::shared_ptr<grpc::ServerCredentials> server_credentials(const server_config& config, const credential_store& credentials) {
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (!config.tls_cert.empty() || !config.tls_key.empty()) {
    if (config.tls_cert.empty() || config.tls_key.empty()) throw error(errc::invalid_argument, "--tls-cert and --tls-key go together");
    grpc::SslServerCredentialsOptions o(config.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                                     : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    o.pem_key_cert_pairs.push_back({read_secret_file(config.tls_key, "private key (--tls-key)"),
                                    read_secret_file(config.tls_cert, "certificate (--tls-cert)")});
    if (!config.tls_client_ca.empty()) o.pem_root_certs = read_secret_file(config.tls_client_ca, "client CA (--tls-client-ca)");
    creds = grpc::SslServerCredentials(o);
  } else if (config.insecure_loopback) {
    if (!is_loopback(config.listen))
      throw error(errc::invalid_argument, "--insecure-loopback serves plaintext on a loopback address only (127.0.0.1, ::1, "
                                          "localhost), not on '" + config.listen + "': give --tls-cert and --tls-key");
    creds = grpc::experimental::LocalServerCredentials(LOCAL_TCP);
  } else {
    throw error(errc::invalid_argument, "the hub serves TLS (--tls-cert, --tls-key) or, on a loopback address only, "
                                        "plaintext with --insecure-loopback");
  }
  creds->SetAuthMetadataProcessor(std::make_shared<token_checker>(credentials));
  return creds;
}

/// The first start of a data dir issues the first client token ("admin") into
/// `$DATA_DIR/admin.token` (mode 0600): whoever can read the data dir may administer the hub.
void bootstrap_admin_token(credential_store& credentials, const std::filesystem::path& data_dir) {
  if (credentials.any(principal::kind::client)) return;
  const auto file = data_dir / "admin.token";
  const auto temp = file.string() + ".tmp";
  const std::string token = credentials.issue({principal::kind::client, "admin"});
  {
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw_errno("create " + temp, errno);
    const std::string line = token + "\n";
    const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) throw_errno("write " + temp, errno);
  }
  std::filesystem::rename(temp, file);
  spdlog::info("issued the first client token ('admin') into {}", file.string());
}

std::string store_file(const server_config& config) {
  const std::string& url = config.store;
  if (url.empty()) return (config.hub.data_dir / "meshhub.db").string();
  if (url == "memory://" || url == "memory:") return ":memory:";
  if (url.starts_with("sqlite://")) return url.substr(9);
  throw error(errc::invalid_argument, "--store: expected sqlite://FILE or memory://, got '" + url + "'");
}

/// The ready file appears whole or not at all (written aside, then renamed).
void write_ready_file(const std::string& file, const std::string& address) {
  const std::string temp = file + ".tmp";
  std::ofstream(temp) << address << "\n";
  std::filesystem::rename(temp, file);
}

std::string event_json(const event& e) {
  return nlohmann::json{{"seq", e.seq},   {"unix_ms", e.unix_ms},   {"kind", to_string(e.kind)}, {"session", e.session},
                        {"node", e.node}, {"path", e.path}, {"version", e.version}, {"detail", e.detail}}
      .dump();
}

/// What a drain stops, in the order it stops them.
struct drain_parts {
  server_hub& hub;
  node_link_service& nodes;
  grpc::Server& server;
  change_gate& gate;
  serving_state& state;
  hub_metrics& metrics;
  http_frontend* http;
  std::uint64_t log_subscription;
};

/// A stop signal's drain (docs/operations.md): refuse new changes, let the ones under way
/// commit or fail, answer every wait, say goodbye to the nodes, stop serving. Every
/// acknowledged change is already durable (fsync before the answer), so what the bound
/// cuts short is only what was never acknowledged. A second signal, or a drain stuck
/// past its bound, ends the process at once.
int drain(int signal, const server_config& config, drain_parts p) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + config.drain_timeout;
  spdlog::info("{} received: draining (at most {} ms)", signal == SIGINT ? "SIGINT" : "SIGTERM", config.drain_timeout.count());
  notify_service("STOPPING=1");
  p.state.draining = true;
  p.metrics.draining.set(1);
  // Detached: it also covers closing the hub and the store after this function returns,
  // and ends with the process.
  std::thread([deadline, bound = config.drain_timeout] {
    sigset_t again;
    sigemptyset(&again);
    sigaddset(&again, SIGINT);
    sigaddset(&again, SIGTERM);
    const timespec step{0, 50'000'000};
    for (;;) {
      if (sigtimedwait(&again, nullptr, &step) > 0) {
        std::fputs("meshhub-server: second stop signal: exiting now\n", stderr);
        std::_Exit(1);
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        std::fprintf(stderr, "meshhub-server: the drain did not end within %lld ms: exiting now\n", static_cast<long long>(bound.count()));
        std::_Exit(1);
      }
    }
  }).detach();
  // Changes under way get most of the bound; the rest below takes milliseconds.
  const auto changes_by = start + config.drain_timeout * 8 / 10;
  if (p.gate.close(changes_by))
    spdlog::info("drain: no change under way");
  else
    spdlog::warn("drain: {} change(s) still under way after {} ms: cancelling them (they fail; nothing of them was acknowledged)",
                 p.gate.out(), std::chrono::duration_cast<std::chrono::milliseconds>(changes_by - start).count());
  // Answer every pending wait and relayed command now, so Shutdown need not wait for them.
  p.hub.stop_waiting();
  p.nodes.close_all("hub is draining: it is shutting down; reconnect later");
  // What still runs (event streams, reads, a change past its share of the bound) is
  // cancelled: a short grace, within the bound.
  const auto grace = std::min(std::chrono::steady_clock::now() + std::chrono::milliseconds(500), start + config.drain_timeout * 9 / 10);
  p.server.Shutdown(std::chrono::system_clock::now() + (grace - std::chrono::steady_clock::now()));
  p.server.Wait();
  if (p.http) p.http->stop();
  p.hub.unsubscribe(p.log_subscription);
  spdlog::info("drained in {} ms", std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());
  return 0;
}

}  // namespace

int run_server(const server_config& config) {
  try {
    check_http_listen(config);  // a bad --http-listen is refused before anything starts
    const std::filesystem::path& data_dir = config.hub.data_dir;
    std::filesystem::create_directories(data_dir);
    // Built before the hub, so the event handlers below outlive every event.
    hub_metrics metrics;
    recent_events recent;
    serving_state state;
    change_gate gate;
    server_hub hub(config.hub, sqlite_store(store_file(config)), std::tuple{config.dispatch_threads});

    // Events: one JSON line each on stdout, the structured log operators and tests read;
    // and the metrics and the dashboard's recent events.
    std::mutex stdout_mu;
    const auto log_subscription = hub.subscribe([&](const event& e) {
      metrics.on_event(e);
      recent.on_event(e);
      std::lock_guard g(stdout_mu);
      std::fputs((event_json(e) + "\n").c_str(), stdout);
      std::fflush(stdout);
    });

    credential_store credentials((data_dir / "credentials.db").string());
    bootstrap_admin_token(credentials, data_dir);
    node_link_service nodes(hub, credentials, gate);
    assistant_service assistant(hub, credentials, metrics, gate);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(config.listen, server_credentials(config, credentials), &port);
    configure_server(builder);
    builder.RegisterService(&nodes);
    builder.RegisterService(&assistant);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
    interceptors.push_back(std::make_unique<rpc_timer_factory>(metrics));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
    auto server = builder.BuildAndStart();
    if (!server || port == 0) {
      spdlog::critical("cannot listen on {} (in use, or not a HOST:PORT?)", config.listen);
      return 1;
    }
    const std::string address = config.listen.substr(0, config.listen.rfind(':')) + ":" + std::to_string(port);
    std::unique_ptr<http_frontend> http;
    if (!config.http_listen.empty()) {
      http = std::make_unique<http_frontend>(
          config,
          hub_view{[&hub] { return hub.status(); }, [&hub] { return hub.store().pending_waves(); },
                   [&hub](std::string_view session, std::string_view path) { return hub.store().file(session, path); }},
          credentials, metrics, recent, state);
      spdlog::info("HTTP port (metrics, health, dashboard) on {}{}", http->address(),
                   config.http_open_metrics ? "; /metrics and health open without a token" : "");
    }
    // The store is open and recovery ran in the hub's constructor: ready.
    state.ready = true;
    spdlog::info("meshhub-server serving on {} (data dir {}, store {})", address, data_dir.string(), store_file(config));
    if (http && !config.http_ready_file.empty()) write_ready_file(config.http_ready_file, http->address());
    if (!config.ready_file.empty()) write_ready_file(config.ready_file, address);
    notify_service("READY=1");

    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    int signal = 0;
    sigwait(&stop, &signal);
    return drain(signal, config, {hub, nodes, *server, gate, state, metrics, http.get(), log_subscription});
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
}

}  // namespace meshhub::programs
