#pragma once
/// How the CLI and the node agent secure their link to the hub (docs/security.md): TLS
/// (the hub's certificate checked against `--tls-ca`, or the system's roots), optionally a
/// client certificate (mTLS, nodes), and a bearer token on every call. Plaintext only with
/// `--insecure-loopback`, and then only to a loopback address — a token is never sent in
/// the clear to another machine.
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/client_security.hpp"
#include "meshhub/error.hpp"

namespace meshhub::programs {

/// The channel credentials for `target`; throws `invalid_argument` for plaintext to a
/// non-loopback address and `not_found` for a PEM file that cannot be read.
inline std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const std::string& target, const client_security& s) {
  if (s.insecure_loopback) {
    if (!is_loopback(target))
      throw error(errc::invalid_argument, "--insecure-loopback only talks to a loopback hub (127.0.0.1, ::1, localhost), not '" +
                                              target + "': use TLS (--tls-ca) to reach another machine");
    return grpc::experimental::LocalCredentials(LOCAL_TCP);
  }
  grpc::SslCredentialsOptions o;
  if (!s.tls_ca.empty()) o.pem_root_certs = read_secret_file(s.tls_ca, "CA certificate (--tls-ca)");
  if (!s.tls_cert.empty() || !s.tls_key.empty()) {
    if (s.tls_cert.empty() || s.tls_key.empty()) throw error(errc::invalid_argument, "--tls-cert and --tls-key go together");
    o.pem_cert_chain = read_secret_file(s.tls_cert, "certificate (--tls-cert)");
    o.pem_private_key = read_secret_file(s.tls_key, "private key (--tls-key)");
  }
  return grpc::SslCredentials(o);
}

/// The metadata key of the bearer token.
inline constexpr std::string_view token_metadata_key = "authorization";

/// Puts the token on every call of a channel (the hub authenticates each call). Plain
/// metadata rather than gRPC call credentials: those refuse to travel over local
/// (loopback plaintext) credentials, and `channel_credentials` already keeps plaintext local.
class token_interceptor final : public grpc::experimental::Interceptor {
 public:
  explicit token_interceptor(const std::string& token) : value_("Bearer " + token) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA))
      methods->GetSendInitialMetadata()->insert({std::string(token_metadata_key), value_});
    methods->Proceed();
  }

 private:
  std::string value_;
};

class token_interceptor_factory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit token_interceptor_factory(std::string token) : token_(std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new token_interceptor(token_);
  }

 private:
  std::string token_;
};

/// A channel to the hub with these credentials and arguments, carrying the token (if any)
/// on every call. Throws as `channel_credentials` does.
inline std::shared_ptr<grpc::Channel> secure_channel(const std::string& target, const client_security& s,
                                                     const grpc::ChannelArguments& args) {
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!s.token.empty()) interceptors.push_back(std::make_unique<token_interceptor_factory>(s.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, channel_credentials(target, s), args,
                                                                std::move(interceptors));
}

}  // namespace meshhub::programs
