#pragma once
/// Counters, gauges and histograms, and their Prometheus text exposition (format 0.0.4).
///
/// prometheus-cpp is not packaged for Debian 12, and a hub needs only three kinds of
/// metric and one output format, so they are written here, small. Updating a metric is
/// lock-free (relaxed atomics: a scrape may see one update before another, never a torn
/// value), so the data plane can count on every chunk; only registering a metric or a
/// new label value, and rendering, take the registry's lock.
///
/// Names follow Prometheus' conventions, checked at registration: `[a-zA-Z_:][a-zA-Z0-9_:]*`,
/// base units (seconds, bytes), counters end in `_total`.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace meshhub::metrics {

/// A monotone count (events, bytes).
class counter {
 public:
  void add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  /// For a counter mirrored from another monotone source read at scrape time: moves to
  /// `v` if that is ahead, so what is exposed never goes backwards.
  void advance_to(std::uint64_t v) noexcept {
    auto cur = value_.load(std::memory_order_relaxed);
    while (cur < v && !value_.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
  }
  [[nodiscard]] std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

/// A value that goes up and down (nodes connected, queue depth).
class gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double d) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  [[nodiscard]] double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

/// Observations counted into fixed buckets (upper bounds, ascending), with their sum.
class histogram {
 public:
  explicit histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), buckets_(bounds_.size() + 1) {
    if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
        std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end())
      throw std::invalid_argument("histogram bucket bounds must ascend strictly");
  }

  /// Lock-free: one bucket increment, one add to the sum.
  void observe(double v) noexcept {
    const auto at = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    buckets_[at].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
  }

  [[nodiscard]] const std::vector<double>& bounds() const noexcept { return bounds_; }
  /// Observations ≤ bounds()[i] (cumulative, as Prometheus counts them); i == size: all.
  [[nodiscard]] std::vector<std::uint64_t> cumulative() const {
    std::vector<std::uint64_t> out(buckets_.size());
    std::uint64_t running = 0;
    for (std::size_t i = 0; i < buckets_.size(); ++i) out[i] = running += buckets_[i].load(std::memory_order_relaxed);
    return out;
  }
  [[nodiscard]] double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<std::uint64_t>> buckets_;  ///< per bucket, not cumulative; last: above every bound
  std::atomic<double> sum_{0};
};

/// Bounds from `start`, each `factor` times the last: `exponential(0.001, 4, 8)` spans 1 ms … 16 s.
[[nodiscard]] inline std::vector<double> exponential_bounds(double start, double factor, std::size_t count) {
  std::vector<double> out;
  for (double b = start; out.size() < count; b *= factor) out.push_back(b);
  return out;
}

namespace detail {

inline bool valid_name(std::string_view n) {
  if (n.empty()) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

/// Prometheus numbers: shortest round-trip decimal, `+Inf`, `-Inf`, `NaN`.
inline void append_number(std::string& out, double v) {
  if (std::isnan(v)) return out.append("NaN"), void();
  if (std::isinf(v)) return out.append(v > 0 ? "+Inf" : "-Inf"), void();
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

inline void append_number(std::string& out, std::uint64_t v) { out.append(std::to_string(v)); }

/// Label values escape backslash, double quote and newline; HELP text backslash and newline.
inline void append_escaped(std::string& out, std::string_view s, bool quote) {
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (quote && c == '"') out += "\\\"";
    else out += c;
  }
}

}  // namespace detail

/// The metrics of one process, in registration order, and their exposition.
///
/// A family is one name with HELP and TYPE; it holds one unlabeled metric, or one per value
/// of its single label (e.g. `method`). The label's values must be few and known in
/// advance in spirit (RPC methods), never paths or sessions: each value is a time series.
/// Every reference handed out stays valid for the registry's life.
class registry {
  struct family;

 public:
  counter& add_counter(std::string name, std::string help) { return add<counter>(std::move(name), std::move(help), "counter", {}); }
  gauge& add_gauge(std::string name, std::string help) { return add<gauge>(std::move(name), std::move(help), "gauge", {}); }
  histogram& add_histogram(std::string name, std::string help, std::vector<double> bounds) {
    return add<histogram>(std::move(name), std::move(help), "histogram", std::move(bounds));
  }

  /// A histogram family with one label: `labeled_histogram::with(value)` finds or makes the
  /// histogram of one label value (under the registry's lock; keep the reference when
  /// the value repeats).
  class labeled_histogram {
   public:
    histogram& with(std::string_view value) {
      std::lock_guard g(owner_->mu_);
      auto& slot = family_->children[std::string(value)];
      if (!slot) slot = std::make_unique<metric>(histogram(family_->bounds));
      return std::get<histogram>(slot->value);
    }

   private:
    friend class registry;
    labeled_histogram(registry* owner, family* f) : owner_(owner), family_(f) {}
    registry* owner_;
    family* family_;
  };

  labeled_histogram add_labeled_histogram(std::string name, std::string help, std::string label, std::vector<double> bounds) {
    // Everything is checked before the family is registered: a refusal registers nothing.
    if (!detail::valid_name(label) || label == "le") throw std::invalid_argument("invalid metric label name '" + label + "'");
    (void)histogram(bounds);  // checks the bounds now, not at first use
    std::lock_guard g(mu_);
    auto& f = new_family_locked(std::move(name), std::move(help), "histogram");
    f.label = std::move(label);
    f.bounds = std::move(bounds);
    return labeled_histogram(this, &f);
  }

  /// Every family in the text exposition format, version 0.0.4
  /// (`Content-Type: text/plain; version=0.0.4`).
  [[nodiscard]] std::string render() const {
    std::lock_guard g(mu_);
    std::string out;
    for (const auto& f : families_) {
      out += "# HELP " + f->name + " ";
      detail::append_escaped(out, f->help, false);
      out += "\n# TYPE " + f->name + " " + f->type + "\n";
      if (f->label.empty()) {
        render_one(out, *f, "", *f->children.begin()->second);
      } else {
        for (const auto& [value, m] : f->children) {
          std::string labels = f->label + "=\"";
          detail::append_escaped(labels, value, true);
          labels += "\"";
          render_one(out, *f, labels, *m);
        }
      }
    }
    return out;
  }

 private:
  struct metric {
    explicit metric(counter&&) {}
    explicit metric(gauge&&) : value(std::in_place_type<gauge>) {}
    explicit metric(histogram&& h) : value(std::in_place_type<histogram>, h.bounds()) {}
    std::variant<counter, gauge, histogram> value;
  };
  struct family {
    std::string name, help, type, label;
    std::vector<double> bounds;
    std::map<std::string, std::unique_ptr<metric>> children;  ///< "" when unlabeled
  };

  template <class M>
  M& add(std::string name, std::string help, const char* type, std::vector<double> bounds) {
    std::unique_ptr<metric> made;  // first, so a refused histogram registers nothing
    if constexpr (std::is_same_v<M, histogram>) made = std::make_unique<metric>(histogram(std::move(bounds)));
    else made = std::make_unique<metric>(M{});
    std::lock_guard g(mu_);
    auto& f = new_family_locked(std::move(name), std::move(help), type);
    auto& slot = f.children[""] = std::move(made);
    return std::get<M>(slot->value);
  }

  family& new_family_locked(std::string name, std::string help, std::string type) {
    if (!detail::valid_name(name)) throw std::invalid_argument("invalid metric name '" + name + "'");
    if (type == "counter" && !name.ends_with("_total")) throw std::invalid_argument("counter '" + name + "' must end in _total");
    for (const auto& f : families_)
      if (f->name == name) throw std::invalid_argument("metric '" + name + "' registered twice");
    families_.push_back(std::make_unique<family>(family{std::move(name), std::move(help), std::move(type), {}, {}, {}}));
    return *families_.back();
  }

  static void render_one(std::string& out, const family& f, const std::string& labels, const metric& m) {
    const auto sample = [&](std::string_view suffix, const std::string& extra, auto value) {
      out += f.name;
      out += suffix;
      if (!labels.empty() || !extra.empty()) out += "{" + labels + (!labels.empty() && !extra.empty() ? "," : "") + extra + "}";
      out += ' ';
      detail::append_number(out, value);
      out += '\n';
    };
    if (const auto* c = std::get_if<counter>(&m.value)) return sample("", "", c->value());
    if (const auto* g = std::get_if<gauge>(&m.value)) return sample("", "", g->value());
    const auto& h = std::get<histogram>(m.value);
    const auto counts = h.cumulative();
    for (std::size_t i = 0; i < h.bounds().size(); ++i) {
      std::string le = "le=\"";
      detail::append_number(le, h.bounds()[i]);
      sample("_bucket", le + "\"", counts[i]);
    }
    sample("_bucket", "le=\"+Inf\"", counts.back());
    sample("_sum", "", h.sum());
    sample("_count", "", counts.back());
  }

  mutable std::mutex mu_;  ///< guards the family table; never held while a metric is updated
  std::vector<std::unique_ptr<family>> families_;
};

}  // namespace meshhub::metrics
