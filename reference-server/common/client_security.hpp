#pragma once
/// What the CLI and the node agent are told about securing their link to the hub, and the
/// checks that need no gRPC (so `meshhub-node`'s main can refuse a bad setup at once).
/// `link_security.hpp` turns it into gRPC credentials.
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "meshhub/error.hpp"

namespace meshhub::programs {

/// The client side's settings (flags: --tls-ca, --tls-cert, --tls-key, --token,
/// --token-file, --insecure-loopback).
struct client_security {
  bool insecure_loopback = false;
  std::string tls_ca;    ///< PEM file of the CA that signed the hub's certificate; "" = system roots
  std::string tls_cert;  ///< PEM client certificate (mTLS); "" = none
  std::string tls_key;   ///< its private key
  std::string token;     ///< bearer token; "" = none (then a client certificate must identify us)
};

/// The whole content of a small file (a PEM file, a token file); throws with its name.
inline std::string read_secret_file(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(errc::not_found, std::string(what) + " file '" + path + "' cannot be read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// A token file holds the token and perhaps a newline.
inline std::string read_token_file(const std::string& path) {
  auto t = read_secret_file(path, "token");
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  return t;
}

/// The host part of HOST:PORT, [V6]:PORT or a bare host.
inline std::string_view host_of(std::string_view target) {
  if (auto scheme = target.find("://"); scheme != std::string_view::npos) target.remove_prefix(scheme + 3);
  if (target.starts_with('[')) return target.substr(1, target.find(']') - 1);
  return target.substr(0, target.rfind(':') == std::string_view::npos ? target.size() : target.rfind(':'));
}

/// 127.0.0.0/8, ::1 or localhost: the only places plaintext may go.
inline bool is_loopback(std::string_view target) {
  const auto host = host_of(target);
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

}  // namespace meshhub::programs
