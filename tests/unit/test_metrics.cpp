// The metrics registry and its Prometheus text exposition: what a scrape reads back is
// what was counted, in the format's exact spelling (HELP/TYPE, cumulative buckets, +Inf,
// escaping), and updates from many threads are neither lost nor torn.
#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "meshhub/metrics.hpp"

using namespace meshhub::metrics;

namespace {

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

}  // namespace

TEST_CASE("a counter and a gauge render with HELP and TYPE lines", "[metrics]") {
  registry r;
  auto& sent = r.add_counter("meshhub_bytes_sent_total", "Bytes sent.\nTo nodes \\ all.");
  auto& nodes = r.add_gauge("meshhub_nodes_connected", "Nodes connected.");
  sent.add(40);
  sent.add(2);
  nodes.set(3);
  const auto text = r.render();
  CHECK(has_line(text, "# HELP meshhub_bytes_sent_total Bytes sent.\\nTo nodes \\\\ all."));
  CHECK(has_line(text, "# TYPE meshhub_bytes_sent_total counter"));
  CHECK(has_line(text, "meshhub_bytes_sent_total 42"));
  CHECK(has_line(text, "# TYPE meshhub_nodes_connected gauge"));
  CHECK(has_line(text, "meshhub_nodes_connected 3"));
  CHECK(text.back() == '\n');
  CHECK(text.find("meshhub_bytes_sent_total") < text.find("meshhub_nodes_connected"));  // registration order
}

TEST_CASE("advance_to never moves a counter backwards", "[metrics]") {
  registry r;
  auto& c = r.add_counter("x_total", "x");
  c.advance_to(10);
  c.advance_to(4);
  CHECK(c.value() == 10);
  c.advance_to(11);
  CHECK(c.value() == 11);
}

TEST_CASE("a histogram renders cumulative buckets, +Inf, sum and count", "[metrics]") {
  registry r;
  auto& h = r.add_histogram("meshhub_wave_duration_seconds", "Waves.", {0.1, 1, 10});
  h.observe(0.05);
  h.observe(0.1);  // on a bound: counted in that bucket (le = less or equal)
  h.observe(5);
  h.observe(100);
  const auto text = r.render();
  CHECK(has_line(text, "# TYPE meshhub_wave_duration_seconds histogram"));
  CHECK(has_line(text, "meshhub_wave_duration_seconds_bucket{le=\"0.1\"} 2"));
  CHECK(has_line(text, "meshhub_wave_duration_seconds_bucket{le=\"1\"} 2"));
  CHECK(has_line(text, "meshhub_wave_duration_seconds_bucket{le=\"10\"} 3"));
  CHECK(has_line(text, "meshhub_wave_duration_seconds_bucket{le=\"+Inf\"} 4"));
  CHECK(has_line(text, "meshhub_wave_duration_seconds_sum 105.15"));
  CHECK(has_line(text, "meshhub_wave_duration_seconds_count 4"));
}

TEST_CASE("a labeled histogram keeps one series per label value, escaped", "[metrics]") {
  registry r;
  auto family = r.add_labeled_histogram("meshhub_rpc_duration_seconds", "RPCs.", "method", {1});
  family.with("Push").observe(0.5);
  family.with("Push").observe(2);
  family.with("we\"ird\\").observe(0.5);
  const auto text = r.render();
  CHECK(has_line(text, "meshhub_rpc_duration_seconds_bucket{method=\"Push\",le=\"1\"} 1"));
  CHECK(has_line(text, "meshhub_rpc_duration_seconds_bucket{method=\"Push\",le=\"+Inf\"} 2"));
  CHECK(has_line(text, "meshhub_rpc_duration_seconds_count{method=\"Push\"} 2"));
  CHECK(has_line(text, "meshhub_rpc_duration_seconds_sum{method=\"Push\"} 2.5"));
  CHECK(has_line(text, "meshhub_rpc_duration_seconds_count{method=\"we\\\"ird\\\\\"} 1"));
  CHECK(&family.with("Push") == &family.with("Push"));
}

TEST_CASE("bad names, non-_total counters, duplicates and unsorted bounds are refused", "[metrics]") {
  registry r;
  CHECK_THROWS_AS(r.add_counter("bytes_sent", "no _total"), std::invalid_argument);
  CHECK_THROWS_AS(r.add_gauge("9lives", "starts with a digit"), std::invalid_argument);
  CHECK_THROWS_AS(r.add_gauge("a-b", "dash"), std::invalid_argument);
  r.add_gauge("g", "g");
  CHECK_THROWS_AS(r.add_gauge("g", "again"), std::invalid_argument);
  CHECK_THROWS_AS(r.add_histogram("h", "h", {2, 1}), std::invalid_argument);
  CHECK_THROWS_AS(r.add_labeled_histogram("l", "l", "le", {1}), std::invalid_argument);
  CHECK(r.render().find("bytes_sent") == std::string::npos);  // a refusal registers nothing
}

TEST_CASE("updates from many threads are all counted", "[metrics]") {
  registry r;
  auto& c = r.add_counter("n_total", "n");
  auto& h = r.add_histogram("d_seconds", "d", exponential_bounds(0.001, 10, 4));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 100'000; ++i) {
        c.add();
        h.observe(0.5);
      }
    });
  for (auto& t : threads) t.join();
  CHECK(c.value() == 400'000);
  CHECK(h.cumulative().back() == 400'000);
  CHECK(h.sum() == Approx(200'000));
  CHECK(exponential_bounds(0.001, 10, 4) == std::vector<double>{0.001, 0.01, 0.1, 1});
}
