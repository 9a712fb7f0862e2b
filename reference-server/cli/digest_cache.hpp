#pragma once
/// The CLI's stat cache of a pushed folder: per file, the stat it had and the content digest
/// that stat's bytes have, so a second push of an unchanged tree reads no file. One cache per
/// local folder (the digests are the folder's, whatever session or hub it goes to), kept in
/// `$MESHHUB_CACHE_DIR`, else `$XDG_CACHE_HOME/meshhub`, else `~/.cache/meshhub`, under
/// `tree-digests/`. An entry is believed only when its stat matches and was taken past the
/// racy window after the file's last change (file_stat::settled); anything else is read
/// and hashed again. The cache is only ever a shortcut: losing it, or failing to write it,
/// costs a re-read, never a wrong answer.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "meshhub/detail/unique_fd.hpp"
#include "meshhub/digest.hpp"
#include "meshhub/file_stat.hpp"
#include "meshhub/manifest.hpp"

namespace meshhub::cli {

class digest_cache {
 public:
  /// The racy window: a stat taken within this of the file's last change is not believed.
  /// It covers the file system's timestamp granularity: a coarse clock tick (≤ 10 ms) where
  /// timestamps carry nanoseconds, two seconds where they are whole seconds (FAT, some
  /// network file systems — their ctimes never have a fraction).
  [[nodiscard]] static std::int64_t racy_ns(const file_stat& st) noexcept {
    return st.ctime_ns % 1'000'000'000 == 0 ? 2'000'000'000 : 50'000'000;
  }

  digest_cache() = default;

  /// The cache of local folder `dir`, loaded (empty when there is none or it cannot be read).
  explicit digest_cache(const std::filesystem::path& dir) : file_(cache_file(dir)) {
    if (file_.empty()) return;
    std::ifstream in(file_);
    if (!in) return;
    try {
      const auto j = nlohmann::json::parse(in);
      if (j.value("format", 0) != format) return;
      for (const auto& [rel, e] : j.at("files").items()) {
        entries_[rel] = {file_stat{e.at(0).get<std::int64_t>(), e.at(1).get<std::int64_t>(), e.at(2).get<std::uint64_t>(),
                                   e.at(3).get<std::uint64_t>(), e.at(4).get<std::int64_t>()},
                         digest_from_hex(e.at(5).get<std::string>())};
      }
    } catch (const std::exception&) {
      entries_.clear();  // a damaged cache is no cache
    }
  }

  /// The content digest of `rel`, whose stat is `now`: from the cache when it can be
  /// believed, otherwise read and hashed (and remembered). nullopt when it cannot be read.
  std::optional<digest> content_of(const std::string& rel, const std::filesystem::path& local, const file_stat& now) {
    if (auto it = entries_.find(rel); it != entries_.end() && it->second.stat.same_file(now) &&
        it->second.stat.settled(racy_ns(it->second.stat)))
      return it->second.content;
    detail::unique_fd fd(::open(local.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return std::nullopt;
    const auto before = file_stat::of_fd(fd.get());
    const auto content = content_digest_of_fd(fd.get());
    if (before.same_file(now)) remember(rel, before, content);
    return content;
  }

  /// `rel` had stat `st` when bytes whose digest is `content` were read from it.
  void remember(const std::string& rel, const file_stat& st, const digest& content) {
    entries_[rel] = {st, content};
    dirty_ = true;
  }

  /// Writes the cache (temp file, rename: a reader sees the old or the new one). Best
  /// effort: a cache that cannot be written is skipped.
  void save() noexcept {
    if (file_.empty() || !dirty_) return;
    try {
      nlohmann::json files = nlohmann::json::object();
      for (const auto& [rel, e] : entries_)
        files[rel] = {e.stat.mtime_ns, e.stat.ctime_ns, e.stat.ino, e.stat.size, e.stat.taken_ns, to_hex(e.content)};
      std::filesystem::create_directories(file_.parent_path());
      const auto temp = file_.string() + ".tmp-" + std::to_string(::getpid());
      {
        std::ofstream out(temp, std::ios::trunc);
        out << nlohmann::json{{"format", format}, {"files", std::move(files)}}.dump();
        if (!out) throw std::runtime_error("write");
      }
      std::filesystem::rename(temp, file_);
      dirty_ = false;
    } catch (const std::exception&) {
    }
  }

 private:
  static constexpr int format = 1;

  struct entry {
    file_stat stat;
    digest content{};
  };

  /// Where the cache of `dir` lives; empty when there is no cache folder to use.
  static std::filesystem::path cache_file(const std::filesystem::path& dir) {
    std::filesystem::path root;
    if (const char* d = std::getenv("MESHHUB_CACHE_DIR"); d && *d) root = d;
    else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) root = std::filesystem::path(x) / "meshhub";
    else if (const char* h = std::getenv("HOME"); h && *h) root = std::filesystem::path(h) / ".cache" / "meshhub";
    else return {};
    std::error_code ec;
    const auto absolute = std::filesystem::weakly_canonical(std::filesystem::absolute(dir, ec), ec);
    if (ec) return {};
    return root / "tree-digests" / (to_hex(sha256_of(absolute.string())).substr(0, 32) + ".json");
  }

  std::filesystem::path file_;
  std::map<std::string, entry> entries_;
  bool dirty_ = false;
};

}  // namespace meshhub::cli
