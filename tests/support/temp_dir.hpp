#pragma once
/// A fresh folder per test under $TMPDIR, removed afterwards.
#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace meshhub::testing {

class temp_dir {
 public:
  /// $TMPDIR/meshhub-test-XXXXXX; throws std::runtime_error if it cannot be made.
  temp_dir() : temp_dir("test") {}
  /// $TMPDIR/meshhub-<name>-XXXXXX; throws std::runtime_error if it cannot be made.
  explicit temp_dir(std::string_view name) {
    std::error_code ec;
    make(name, ec);
    if (ec) throw std::runtime_error("mkdtemp failed");
  }
  /// $TMPDIR/meshhub-<name>-XXXXXX; if it cannot be made, `ec` says why and path() is empty.
  temp_dir(std::string_view name, std::error_code& ec) { make(name, ec); }
  /// The folder moves with the object (the moved-from one removes nothing).
  temp_dir(temp_dir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] std::filesystem::path operator/(const std::string& leaf) const { return path_ / leaf; }

 private:
  void make(std::string_view name, std::error_code& ec) {
    ec.clear();
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/meshhub-";
    pattern.append(name);
    pattern += "-XXXXXX";
    if (!::mkdtemp(pattern.data())) {
      ec.assign(errno, std::generic_category());
      return;
    }
    path_ = std::move(pattern);
  }

  std::filesystem::path path_;
};

}  // namespace meshhub::testing
