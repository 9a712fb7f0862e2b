#pragma once
/// Text and byte helpers behind the MCP server's file tools: base64, UTF-8 checks, the
/// exact-match edit, the line diff shown for an edit, and glob matching for search. They
/// know nothing of gRPC or JSON-RPC, so each rule reads (and is tested) on its own.
#include <fnmatch.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace meshhub::cli::mcp {

// ---------------------------------------------------------------------------------------
// base64 (RFC 4648, standard alphabet, padded): how binary bytes travel in JSON.

inline std::string base64_encode(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t at = 0;
  for (; at + 3 <= bytes.size(); at += 3) {
    const auto v = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at])) << 16 |
                   static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 1])) << 8 |
                   static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 2]));
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += alphabet[v >> 6 & 63];
    out += alphabet[v & 63];
  }
  if (const auto rest = bytes.size() - at; rest > 0) {
    std::uint32_t v = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at])) << 16;
    if (rest == 2) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 1])) << 8;
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += rest == 2 ? alphabet[v >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

/// The bytes `text` encodes, or nullopt when it is not padded standard base64. Line breaks
/// and spaces are skipped: some clients wrap long base64 strings.
inline std::optional<std::string> base64_decode(std::string_view text) {
  auto value_of = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  std::uint32_t group = 0;
  int in_group = 0;
  int padding = 0;
  for (const char c : text) {
    if (c == '\n' || c == '\r' || c == ' ' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      group <<= 6;
    } else {
      const int v = value_of(c);
      if (v < 0 || padding > 0) return std::nullopt;  // no data after padding
      group = group << 6 | static_cast<std::uint32_t>(v);
    }
    if (++in_group == 4) {
      if (padding > 2) return std::nullopt;
      out += static_cast<char>(group >> 16 & 0xff);
      if (padding < 2) out += static_cast<char>(group >> 8 & 0xff);
      if (padding < 1) out += static_cast<char>(group & 0xff);
      group = 0;
      in_group = 0;
      if (padding > 0) padding = 3;  // a padded group ends the text
    }
  }
  if (in_group != 0) return std::nullopt;
  return out;
}

// ---------------------------------------------------------------------------------------
// UTF-8: JSON strings carry text, so bytes shown as text must be valid UTF-8.

/// Length of the UTF-8 sequence that starts with `lead` (0 for a byte that cannot start one).
inline std::size_t utf8_sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/// The offset of the first byte that is not part of well-formed UTF-8 (no overlongs, no
/// surrogates, nothing above U+10FFFF), or nullopt when all of `text` is well formed.
inline std::optional<std::size_t> utf8_error_at(std::string_view text) {
  std::size_t at = 0;
  while (at < text.size()) {
    const auto lead = static_cast<unsigned char>(text[at]);
    const std::size_t length = utf8_sequence_length(lead);
    if (length == 0 || at + length > text.size()) return at;
    for (std::size_t k = 1; k < length; ++k)
      if ((static_cast<unsigned char>(text[at + k]) & 0xc0) != 0x80) return at;
    if (length >= 3) {
      const auto second = static_cast<unsigned char>(text[at + 1]);
      if (lead == 0xe0 && second < 0xa0) return at;  // overlong
      if (lead == 0xed && second > 0x9f) return at;  // surrogate
      if (lead == 0xf0 && second < 0x90) return at;  // overlong
      if (lead == 0xf4 && second > 0x8f) return at;  // above U+10FFFF
    }
    at += length;
  }
  return std::nullopt;
}

/// How many bytes at the end of `text` belong to a sequence cut short by the end of a
/// slice: a part read ends there, and the next part starts with them whole.
inline std::size_t utf8_incomplete_tail(std::string_view text) {
  const std::size_t back = std::min<std::size_t>(3, text.size());
  for (std::size_t k = 1; k <= back; ++k) {
    const auto byte = static_cast<unsigned char>(text[text.size() - k]);
    if ((byte & 0xc0) == 0x80) continue;  // a continuation byte: keep looking for the lead
    const std::size_t length = utf8_sequence_length(byte);
    return length > k ? k : 0;
  }
  return 0;
}

/// True when `text` starts inside a character (an offset that is not a character boundary).
inline bool starts_inside_character(std::string_view text) {
  return !text.empty() && (static_cast<unsigned char>(text.front()) & 0xc0) == 0x80;
}

/// A line shortened to at most `limit` bytes without cutting a character, with "…" when cut.
inline std::string clip_line(std::string_view line, std::size_t limit) {
  if (line.size() <= limit) return std::string(line);
  const auto head = line.substr(0, limit);
  return std::string(head.substr(0, head.size() - utf8_incomplete_tail(head))) + "…";
}

// ---------------------------------------------------------------------------------------
// Exact-match edits

/// Where `needle` occurs in `haystack`: up to `limit` offsets (enough to tell 0, 1 or more).
inline std::vector<std::size_t> occurrences(std::string_view haystack, std::string_view needle, std::size_t limit = 2) {
  std::vector<std::size_t> found;
  if (needle.empty()) return found;
  for (std::size_t at = haystack.find(needle); at != std::string_view::npos && found.size() < limit;
       at = haystack.find(needle, at + 1))
    found.push_back(at);
  return found;
}

/// One replacement asked for: `old_text` must occur exactly once.
struct text_edit {
  std::string old_text;
  std::string new_text;
};

/// The outcome of applying edits: the new text, or which edit failed and why.
struct edit_outcome {
  std::string text;
  std::string problem;  ///< "" when every edit applied
};

/// Applies `edits` in order, each to the text the previous ones produced. An `old_text`
/// found zero times or more than once stops everything: a partial edit is never returned.
inline edit_outcome apply_edits(std::string text, const std::vector<text_edit>& edits) {
  for (std::size_t k = 0; k < edits.size(); ++k) {
    const auto& edit = edits[k];
    const auto found = occurrences(text, edit.old_text);
    const std::string which = "edits[" + std::to_string(k) + "].old_text";
    if (edit.old_text.empty()) return {{}, which + " is empty; give the exact text to replace"};
    if (found.empty()) return {{}, which + " was not found in the file (it must match exactly, including whitespace)"};
    if (found.size() > 1)
      return {{}, which + " occurs more than once; include more surrounding text so it matches exactly once"};
    text.replace(found.front(), edit.old_text.size(), edit.new_text);
  }
  return {std::move(text), {}};
}

// ---------------------------------------------------------------------------------------
// A unified diff (lines, 3 of context) of what an edit changes. Myers' O((N+M)·D) algorithm
// keeps it cheap for the usual case: a large file with a few changed lines.

inline std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    if (end == std::string_view::npos) {
      lines.push_back(text.substr(start));
      break;
    }
    lines.push_back(text.substr(start, end - start + 1));  // keeps its '\n'
    start = end + 1;
  }
  return lines;
}

/// One line of a diff script: ' ' kept, '-' removed, '+' added.
struct diff_line {
  char op;
  std::string_view text;
};

/// The shortest edit script from `a` to `b` (Myers 1986, greedy forward search).
inline std::vector<diff_line> diff_script(const std::vector<std::string_view>& a, const std::vector<std::string_view>& b) {
  // Equal head and tail are common and cheap to strip; the search runs on the middle.
  std::size_t head = 0;
  while (head < a.size() && head < b.size() && a[head] == b[head]) ++head;
  std::size_t tail = 0;
  while (tail < a.size() - head && tail < b.size() - head && a[a.size() - 1 - tail] == b[b.size() - 1 - tail]) ++tail;
  const auto n = static_cast<long>(a.size() - head - tail);
  const auto m = static_cast<long>(b.size() - head - tail);
  auto ax = [&](long i) { return a[head + static_cast<std::size_t>(i)]; };
  auto bx = [&](long j) { return b[head + static_cast<std::size_t>(j)]; };

  const long max = n + m;
  std::vector<long> v(static_cast<std::size_t>(2 * max + 2), 0);
  std::vector<std::vector<long>> trace;
  const auto at = [&](long k) -> long& { return v[static_cast<std::size_t>(k + max + 1)]; };
  long found_d = 0;
  for (long d = 0; d <= max; ++d) {
    trace.push_back(v);
    bool done = false;
    for (long k = -d; k <= d; k += 2) {
      long x = (k == -d || (k != d && at(k - 1) < at(k + 1))) ? at(k + 1) : at(k - 1) + 1;
      long y = x - k;
      while (x < n && y < m && ax(x) == bx(y)) ++x, ++y;
      at(k) = x;
      if (x >= n && y >= m) {
        done = true;
        break;
      }
    }
    if (done) {
      found_d = d;
      break;
    }
  }
  // Walk the trace back from (n, m) to (0, 0).
  std::vector<diff_line> middle;
  long x = n, y = m;
  for (long d = found_d; d > 0; --d) {
    const auto& row = trace[static_cast<std::size_t>(d)];
    const auto prev = [&](long k) { return row[static_cast<std::size_t>(k + max + 1)]; };
    const long k = x - y;
    const long prev_k = (k == -d || (k != d && prev(k - 1) < prev(k + 1))) ? k + 1 : k - 1;
    const long prev_x = prev(prev_k);
    const long prev_y = prev_x - prev_k;
    while (x > prev_x && y > prev_y) middle.push_back({' ', ax(--x)}), --y;
    if (x == prev_x) {
      middle.push_back({'+', bx(--y)});
    } else {
      middle.push_back({'-', ax(--x)});
    }
  }
  while (x > 0 && y > 0) middle.push_back({' ', ax(--x)}), --y;
  std::reverse(middle.begin(), middle.end());

  std::vector<diff_line> script;
  script.reserve(head + middle.size() + tail);
  for (std::size_t i = 0; i < head; ++i) script.push_back({' ', a[i]});
  script.insert(script.end(), middle.begin(), middle.end());
  for (std::size_t i = a.size() - tail; i < a.size(); ++i) script.push_back({' ', a[i]});
  return script;
}

/// `--- a/PATH` / `+++ b/PATH` and `@@ -l,n +l,n @@` hunks with `context` lines around each
/// change; at most `limit` bytes (then a final "… diff truncated" line). Empty when equal.
inline std::string unified_diff(std::string_view before, std::string_view after, std::string_view path,
                                std::size_t limit, std::size_t context = 3) {
  const auto a = split_lines(before);
  const auto b = split_lines(after);
  const auto script = diff_script(a, b);
  std::vector<std::size_t> changed;
  for (std::size_t i = 0; i < script.size(); ++i)
    if (script[i].op != ' ') changed.push_back(i);
  if (changed.empty()) return {};

  std::string out = "--- a/" + std::string(path) + "\n+++ b/" + std::string(path) + "\n";
  // Line numbers before and after, at each script position.
  std::vector<std::size_t> line_a(script.size() + 1), line_b(script.size() + 1);
  for (std::size_t i = 0; i < script.size(); ++i) {
    line_a[i + 1] = line_a[i] + (script[i].op != '+');
    line_b[i + 1] = line_b[i] + (script[i].op != '-');
  }
  std::size_t c = 0;
  while (c < changed.size()) {
    const std::size_t first = changed[c] >= context ? changed[c] - context : 0;
    std::size_t last = changed[c];
    // Changes closer than two contexts apart share one hunk.
    while (c + 1 < changed.size() && changed[c + 1] <= last + 2 * context + 1) last = changed[++c];
    ++c;
    const std::size_t end = std::min(script.size(), last + context + 1);
    const std::size_t count_a = line_a[end] - line_a[first];
    const std::size_t count_b = line_b[end] - line_b[first];
    out += "@@ -" + std::to_string(line_a[first] + (count_a ? 1 : 0)) + "," + std::to_string(count_a) + " +" +
           std::to_string(line_b[first] + (count_b ? 1 : 0)) + "," + std::to_string(count_b) + " @@\n";
    for (std::size_t i = first; i < end; ++i) {
      out += script[i].op;
      out += script[i].text;
      if (!script[i].text.ends_with('\n')) out += "\n\\ No newline at end of file\n";
      if (out.size() > limit) {
        const std::string_view kept = std::string_view(out).substr(0, limit);
        return std::string(kept.substr(0, kept.size() - utf8_incomplete_tail(kept))) + "\n… diff truncated at " +
               std::to_string(limit) + " bytes\n";
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Globs for search_files: shell patterns (`*`, `?`, `[...]`, `**/` for any folders). A
// pattern without '/' matches the file name in any folder ("*.md"); one with '/' matches
// the whole path ("docs/*.md", "src/**/*.cpp").

/// `pattern` (with '/') against a whole path; each "**/" is tried as 0…`levels` folders.
inline bool glob_match_path(const std::string& pattern, const std::string& path, std::size_t levels) {
  const auto star = pattern.find("**/");
  if (star == std::string::npos) return ::fnmatch(pattern.c_str(), path.c_str(), FNM_PATHNAME | FNM_PERIOD) == 0;
  std::string folders;
  for (std::size_t k = 0; k <= levels; ++k, folders += "*/")
    if (glob_match_path(pattern.substr(0, star) + folders + pattern.substr(star + 3), path, levels)) return true;
  return false;
}

inline bool glob_match(std::string_view pattern, std::string_view path) {
  if (pattern.empty()) return true;
  const std::string p(pattern);
  if (p.find('/') == std::string::npos) {
    const auto slash = path.rfind('/');
    const std::string name(slash == std::string_view::npos ? path : path.substr(slash + 1));
    return ::fnmatch(p.c_str(), name.c_str(), FNM_PERIOD) == 0;
  }
  const std::string whole(path);
  return glob_match_path(p, whole, static_cast<std::size_t>(std::count(whole.begin(), whole.end(), '/')));
}

}  // namespace meshhub::cli::mcp
