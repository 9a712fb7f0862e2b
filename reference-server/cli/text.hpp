#pragma once
/// Plain-text helpers for the `meshhub` CLI's human output: hex digests, byte sizes,
/// durations and aligned tables. Nothing here knows about gRPC or protobuf, so the
/// formatting rules live in one place and read without the protocol in mind.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "meshhub/digest.hpp"  // to_hex: digests travel as raw bytes in the protocol

namespace meshhub::cli {

/// The first `length` hex digits of a digest: enough to tell versions apart in a table.
inline std::string short_hex(std::string_view bytes, std::size_t length = 12) {
  return to_hex(bytes).substr(0, length);
}

/// "512 B", "1.5 KiB", "64.0 MiB": binary units, one decimal above a kibibyte.
inline std::string human_bytes(std::uint64_t bytes) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(units)) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
  return text;
}

/// "0:07", "12:34", "1:02:03": the shape people expect from an ETA.
inline std::string human_duration(std::uint64_t seconds) {
  char text[32];
  const auto hours = seconds / 3600;
  const auto minutes = seconds / 60 % 60;
  const auto secs = seconds % 60;
  if (hours > 0) {
    std::snprintf(text, sizeof text, "%llu:%02llu:%02llu", static_cast<unsigned long long>(hours),
                  static_cast<unsigned long long>(minutes), static_cast<unsigned long long>(secs));
  } else {
    std::snprintf(text, sizeof text, "%llu:%02llu", static_cast<unsigned long long>(minutes),
                  static_cast<unsigned long long>(secs));
  }
  return text;
}

/// Local wall-clock time with milliseconds, for event lines read by a person.
inline std::string local_time_ms(std::int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm parts{};
  localtime_r(&seconds, &parts);
  char text[48];
  const auto length = std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &parts);
  std::snprintf(text + length, sizeof text - length, ".%03d", static_cast<int>(unix_ms % 1000));
  return text;
}

/// "1 member", "3 members".
inline std::string count_of(std::uint64_t count, std::string_view noun) {
  std::string text = std::to_string(count) + ' ' + std::string(noun);
  if (count != 1) text += 's';
  return text;
}

/// Joins words with a separator ("n2, n3").
inline std::string join(const std::vector<std::string>& words, std::string_view separator) {
  std::string out;
  for (const auto& word : words) {
    if (!out.empty()) out += separator;
    out += word;
  }
  return out;
}

/// Columns are measured in code points, not bytes, so UTF-8 paths stay aligned.
inline std::size_t display_width(std::string_view text) {
  std::size_t width = 0;
  for (const unsigned char byte : text) {
    if ((byte & 0xc0) != 0x80) ++width;
  }
  return width;
}

/// A table with a header row, columns padded to their widest cell, two spaces apart.
/// The last column is not padded, so lines carry no trailing blanks.
class text_table {
 public:
  explicit text_table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }

  void add_row(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

  void print(std::FILE* out) const {
    const auto widths = column_widths();
    for (const auto& row : rows_) {
      std::string line;
      for (std::size_t column = 0; column < row.size(); ++column) {
        line += row[column];
        if (column + 1 < row.size()) line.append(widths[column] - display_width(row[column]) + 2, ' ');
      }
      // An empty last cell would leave the padding of the one before it behind.
      line.erase(line.find_last_not_of(' ') + 1);
      line += '\n';
      std::fputs(line.c_str(), out);
    }
  }

 private:
  std::vector<std::size_t> column_widths() const {
    std::vector<std::size_t> widths;
    for (const auto& row : rows_) {
      if (widths.size() < row.size()) widths.resize(row.size(), 0);
      for (std::size_t column = 0; column < row.size(); ++column) {
        widths[column] = std::max(widths[column], display_width(row[column]));
      }
    }
    return widths;
  }

  std::vector<std::vector<std::string>> rows_;
};

}  // namespace meshhub::cli
