#pragma once
/// The progress bar `meshhub push` draws on stderr while it streams a file to the hub.
/// It is drawn only on a terminal (a log file should not fill with carriage returns) and
/// redrawn at most ten times a second, so a fast loopback push does not spend its time
/// painting.
#include "text.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace meshhub::cli {

/// Bytes sent / total, percentage, rate and ETA on one self-overwriting stderr line.
class progress_bar {
 public:
  using clock = std::chrono::steady_clock;

  /// `total` < 0 means unknown (stdin): the bar then shows bytes and rate only.
  progress_bar(std::int64_t total, bool enabled) : total_(total), enabled_(enabled) {}

  /// Counts `bytes` more as handed to the hub; redraws when the last drawing is old enough.
  void advance(std::uint64_t bytes) {
    sent_ += bytes;
    if (!enabled_) return;
    const auto now = clock::now();
    if (now - last_draw_ < redraw_interval) return;
    draw(now);
  }

  /// Draws the final state and ends the line, so later output starts on a fresh one.
  void finish() {
    if (!enabled_ || finished_) return;
    draw(clock::now());
    std::fputc('\n', stderr);
    finished_ = true;
  }

  /// Ends the line without a final drawing: used when the push is abandoned midway.
  void abandon() {
    if (!enabled_ || finished_) return;
    if (drawn_) std::fputc('\n', stderr);
    finished_ = true;
  }

 private:
  static constexpr auto redraw_interval = std::chrono::milliseconds(100);
  static constexpr int bar_width = 24;

  void draw(clock::time_point now) {
    last_draw_ = now;
    drawn_ = true;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? static_cast<double>(sent_) / seconds : 0.0;
    // "\r" rewrites the line in place; "\033[K" erases what a longer earlier line left.
    const std::string line =
        "\r" + (total_ >= 0 ? known_total_text(rate) : unknown_total_text(rate)) + "\033[K";
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
  }

  std::string known_total_text(double rate) const {
    const auto total = static_cast<std::uint64_t>(total_);
    const double fraction =
        total == 0 ? 1.0 : std::min(1.0, static_cast<double>(sent_) / static_cast<double>(total));
    const int filled = static_cast<int>(fraction * bar_width);
    char text[160];
    std::snprintf(text, sizeof text, "[%s%s] %s / %s %3d%%  %s  ETA %s",
                  std::string(static_cast<std::size_t>(filled), '#').c_str(),
                  std::string(static_cast<std::size_t>(bar_width - filled), '.').c_str(),
                  human_bytes(sent_).c_str(), human_bytes(total).c_str(), static_cast<int>(fraction * 100.0),
                  rate_text(rate).c_str(), eta_text(rate, total).c_str());
    return text;
  }

  std::string unknown_total_text(double rate) const { return human_bytes(sent_) + "  " + rate_text(rate); }

  static std::string rate_text(double bytes_per_second) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f MB/s", bytes_per_second / 1e6);
    return text;
  }

  std::string eta_text(double rate, std::uint64_t total) const {
    if (sent_ >= total) return human_duration(0);
    if (rate <= 0) return "--:--";
    return human_duration(static_cast<std::uint64_t>(static_cast<double>(total - sent_) / rate + 0.5));
  }

  std::int64_t total_;
  bool enabled_;
  bool drawn_ = false;
  bool finished_ = false;
  std::uint64_t sent_ = 0;
  clock::time_point start_ = clock::now();
  clock::time_point last_draw_{};
};

}  // namespace meshhub::cli
