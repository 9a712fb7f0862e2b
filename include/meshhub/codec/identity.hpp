#pragma once
/// A codec that never compresses: for data known to be incompressible, and for tests
/// and benchmarks that want the pipeline without deflate's cost.
#include <cstddef>
#include <span>
#include <string>

#include "meshhub/codec/kind.hpp"
#include "meshhub/concepts.hpp"

namespace meshhub {

/// Sends every chunk as it is.
struct identity_codec {
  codec_kind encode(std::span<const std::byte> raw, std::string& out) const {
    out.assign(reinterpret_cast<const char*>(raw.data()), raw.size());
    return codec_kind::identity;
  }
};

static_assert(codec_policy<identity_codec>);

}  // namespace meshhub
