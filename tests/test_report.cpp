// labels: cpu
// Report infrastructure: CSV tables, power-law fits, CRC-32C, TensorBoard event files, the span tracer,
// gnuplot figures and report.html (checked in headless Chromium when it is installed).
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "attnlab/bench/tracer.h"
#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"
#include "attnlab/report/crc32c.h"
#include "attnlab/report/csv.h"
#include "attnlab/report/figures.h"
#include "attnlab/report/fit.h"
#include "attnlab/report/html.h"
#include "attnlab/report/tensorboard.h"
#include "support/helpers.h"

using namespace attnlab;
using namespace attnlab::report;
using attnlab::testing::TempDir;

namespace {

std::string slurp(const fs::path& p) {
  return read_file(p);
}

void spin_for(std::chrono::microseconds d) {
  std::this_thread::sleep_for(d);
}

// Runs a shell command and returns its stdout.
std::string capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

// Three series of sequence-length scaling, one with an OOM point, and the fit of one.
Figure scaling_figure(const std::string& name) {
  Figure f;
  f.name = name;
  f.title = "Forward time against T (\"quoted\", it's)";
  f.xlabel = "sequence length T";
  f.ylabel = "time (ms)";
  f.logx = f.logy = true;
  for (int k = 0; k < 3; ++k) {
    Series s;
    s.name = k == 0 ? "softmax" : k == 1 ? "gla" : "deltanet";
    for (double t = 256; t <= 8192; t *= 2) {
      s.xs.push_back(t);
      s.ys.push_back(k == 0 ? 1e-5 * t * t : 1e-3 * (k + 1) * t);
    }
    f.series.push_back(s);
  }
  f.series[0].ys.back() = NAN;  // an OOM point: left out, noted
  PowerFit fit = fit_power_law({256, 512, 1024}, {0.65536, 2.62144, 10.48576});
  Series line = fit_series("softmax fit", fit, 256, 8192);
  line.color = 0;
  f.series.push_back(line);
  f.key_notes.push_back("softmax: " + describe(fit));
  f.annotations.push_back({"slope 2 = quadratic", 0.03, 0.93, true});
  return f;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------- CSV

TEST(Csv, RoundTripKeepsTypesQuotingAndMissingCells) {
  TempDir dir;
  Table t;
  t.comments = {"device: cpu", "commit: abc123"};
  t.columns = {"mixer", "T", "ms", "note"};
  t.add_row({std::string("softmax"), int64_t{1024}, 0.1, std::monostate{}});
  t.add_row({std::string("a, \"quoted\"\nname"), int64_t{-7}, 1.0, std::string("")});
  t.add_row({std::string("123"), int64_t{9007199254740993}, 1.0 / 3.0, std::string(" padded ")});
  t.add_row({std::string("#hash"), std::monostate{}, 6.02214076e23, std::string("1e5")});
  t.add_row({std::string("x"), int64_t{0}, std::nan(""), std::string("nan")});
  write_csv(dir / "r.csv", t);
  Table back = read_csv(dir / "r.csv");
  EXPECT_EQ(back.comments, t.comments);
  ASSERT_EQ(back.columns, t.columns);
  ASSERT_EQ(back.rows.size(), t.rows.size());
  for (size_t r = 0; r < t.rows.size(); ++r)
    for (size_t c = 0; c < t.columns.size(); ++c) {
      const Cell &a = t.rows[r][c], &b = back.rows[r][c];
      ASSERT_EQ(a.index(), b.index()) << "row " << r << " col " << c << ": " << cell_string(b);
      if (auto d = std::get_if<double>(&a)) {
        if (std::isnan(*d))
          EXPECT_TRUE(std::isnan(std::get<double>(b)));
        else
          EXPECT_EQ(*d, std::get<double>(b)) << "row " << r;  // bit-exact: shortest round-trip digits
      } else {
        EXPECT_TRUE(a == b) << "row " << r << " col " << c;
      }
    }
  // The text as written: RFC 4180 quoting, numbers-as-text quoted, missing as an empty field.
  std::string text = slurp(dir.path() / "r.csv");
  EXPECT_NE(text.find("# device: cpu\n"), std::string::npos);
  EXPECT_NE(text.find("softmax,1024,0.1,\n"), std::string::npos);
  EXPECT_NE(text.find("\"a, \"\"quoted\"\"\nname\",-7,1.0,\"\"\n"), std::string::npos);
  EXPECT_NE(text.find("\"123\","), std::string::npos);
  EXPECT_EQ(back.number(1, "ms"), 1.0);
  EXPECT_FALSE(back.number(3, "T").has_value());
  EXPECT_EQ(back.text(0, "mixer"), "softmax");
  EXPECT_ERROR_WITH(back.number(0, "mixer"), "expected a number", "softmax");
  EXPECT_ERROR_WITH(back.at(0, "nosuch"), "no column 'nosuch'", "mixer, T, ms, note");
}

TEST(Csv, ParsesCrLfAndOtherWritersFiles) {
  Table t = parse_csv("a,b,c\r\n1,\"x\r\ny\",2.5\r\n\"q\"\"\",,-3\r\n", "other.csv");
  ASSERT_EQ(t.columns, (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(std::get<int64_t>(t.rows[0][0]), 1);
  EXPECT_EQ(std::get<std::string>(t.rows[0][1]), "x\r\ny");
  EXPECT_EQ(std::get<double>(t.rows[0][2]), 2.5);
  EXPECT_EQ(std::get<std::string>(t.rows[1][0]), "q\"");
  EXPECT_TRUE(std::holds_alternative<std::monostate>(t.rows[1][1]));
  EXPECT_ERROR_WITH(parse_csv("a,b\n1,2,3\n", "bad.csv"), "bad.csv", "3 fields", "header has 2");
  EXPECT_ERROR_WITH(parse_csv("a,b\n\"1,2\n", "open.csv"), "open.csv", "not closed");
  EXPECT_ERROR_WITH(parse_csv("", "empty.csv"), "empty.csv", "no header");
}

TEST(Csv, RequireColumnsNamesFileExpectedAndActual) {
  Table t;
  t.columns = {"mixer", "T", "ms"};
  require_columns(t, {"mixer", "ms"}, "results/efficiency.csv");
  EXPECT_ERROR_WITH(require_columns(t, {"mixer", "T", "peak_mb", "tokens_s"}, "results/efficiency.csv"),
                    "results/efficiency.csv", "missing columns peak_mb, tokens_s",
                    "expected columns: mixer, T, peak_mb, tokens_s", "the file has: mixer, T, ms");
}

TEST(Csv, AppendRowCreatesThenAppendsAndChecksTheHeader) {
  TempDir dir;
  std::string path = dir / "sweep/results.csv";
  append_csv_row(path, {"lr", "loss"}, {1e-3, 2.5});
  append_csv_row(path, {"lr", "loss"}, {3e-3, std::monostate{}});
  Table t = read_csv(path);
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(std::get<double>(t.rows[1][0]), 3e-3);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_ERROR_WITH(append_csv_row(path, {"lr", "ppl"}, {1.0, 2.0}), "results.csv", "[lr, loss]",
                    "[lr, ppl]");
  EXPECT_ERROR_WITH(append_csv_row(path, {"lr", "loss"}, {1.0}), "1 cells", "2 columns");
  EXPECT_EQ(read_csv(path).rows.size(), 2u);  // a failed append leaves the file as it was
}

TEST(Csv, TextTableAndNumberFormats) {
  EXPECT_EQ(format_number(4.56789), "4.568");
  EXPECT_EQ(format_number(0.012345), "0.01235");
  EXPECT_EQ(format_number(123456.7), "123457");
  EXPECT_EQ(format_number(1.5e-5), "1.500e-05");
  EXPECT_EQ(format_number(0), "0");
  Table t;
  t.columns = {"name", "ms"};
  t.add_row({std::string("a"), 1.23456});
  t.add_row({std::string("longer"), 100.0});
  EXPECT_EQ(to_text(t), "name       ms\na       1.235\nlonger  100.0\n");
}

// ---------------------------------------------------------------------------------------------------- fit

TEST(Fit, ExactPowerLaw) {
  std::vector<double> xs = {1, 2, 4, 8, 16, 100}, ys;
  for (double x : xs) ys.push_back(3 * x * x);
  PowerFit f = fit_power_law(xs, ys);
  EXPECT_NEAR(f.slope, 2.0, 1e-12);
  EXPECT_NEAR(f.intercept, std::log(3.0), 1e-12);
  EXPECT_NEAR(f.r2, 1.0, 1e-12);
  EXPECT_EQ(f.n, 6u);
  EXPECT_NEAR(f.predict(10), 300, 1e-9);
  EXPECT_EQ(describe(f), "slope 2.00, r² 1.000");
}

TEST(Fit, NoisyData) {
  // y = 5 x^1.5 with 5% multiplicative noise over three decades: the slope is within 0.05 (its standard
  // error here is ~0.01) and the fit explains nearly all the variance.
  std::mt19937 rng(7);
  std::normal_distribution<double> noise(0.0, 0.05);
  std::vector<double> xs, ys;
  for (int i = 0; i < 40; ++i) {
    double x = std::pow(10.0, 3.0 * i / 39.0);
    xs.push_back(x);
    ys.push_back(5 * std::pow(x, 1.5) * std::exp(noise(rng)));
  }
  PowerFit f = fit_power_law(xs, ys);
  EXPECT_NEAR(f.slope, 1.5, 0.05);
  EXPECT_GT(f.r2, 0.99);
  EXPECT_LT(f.r2, 1.0);
}

TEST(Fit, ErrorsNameTheBadPoint) {
  EXPECT_ERROR_WITH(fit_power_law({1}, {2}, "softmax time"), "softmax time", "at least 2 points, got 1");
  EXPECT_ERROR_WITH(fit_power_law({1, 2, 3}, {1, 0, 4}, "gla memory"), "gla memory", "y[1] = 0", "x = 2");
  EXPECT_ERROR_WITH(fit_power_law({1, -2}, {1, 4}), "x[1] = -2", "positive");
  EXPECT_ERROR_WITH(fit_power_law({1, 2}, {1, NAN}), "y[1] = nan");
  EXPECT_ERROR_WITH(fit_power_law({3, 3}, {1, 2}), "all 2 x values are equal");
  EXPECT_ERROR_WITH(fit_power_law({1, 2}, {1}), "2 x values but 1 y values");
}

// ---------------------------------------------------------------------------------------------------- CRC

TEST(Crc32c, StandardCheckValueAndMask) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  // RFC 3720 (iSCSI) test vector: 32 bytes of zeros.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  // Incremental: continuing from a CRC gives the CRC of the concatenation.
  EXPECT_EQ(crc32c("6789", 4, crc32c("12345")), 0xE3069283u);
  for (uint32_t c : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu}) EXPECT_EQ(unmask_crc(mask_crc(c)), c);
  EXPECT_EQ(mask_crc(0), 0xa282ead8u);
}

// ---------------------------------------------------------------------------------------------- TensorBoard

namespace {
uint64_t le(const std::string& s, size_t pos, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(s[pos + i])) << (8 * i);
  return v;
}
}  // namespace

TEST(TensorBoard, WrittenFileReadsBackWithValidFraming) {
  TempDir dir;
  fs::path path;
  {
    EventWriter w(dir.path() / "tb");
    path = w.path();
    w.add_scalar("train/loss", 2.5, 0, 1700000000.25);
    w.add_scalar("train/loss", 1.25, 10);
    w.add_scalars({{"val/ppl", 12.0}, {"train/lr", 3e-4}}, 20);
    w.add_scalar("neg/step", -1.5, -3);
    // Flushed at every add: the file is complete before the writer is closed.
    EXPECT_EQ(read_events(path).scalars.size(), 5u);
  }
  std::string name = path.filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  EXPECT_NE(name.find(host), std::string::npos) << name;

  // The framing, checked by hand on the first record: length, masked CRC of the length, data, masked CRC.
  std::string bytes = slurp(path);
  uint64_t len = le(bytes, 0, 8);
  ASSERT_GE(bytes.size(), 16 + len);
  EXPECT_EQ(le(bytes, 8, 4), mask_crc(crc32c(bytes.data(), 8)));
  EXPECT_EQ(le(bytes, 12 + len, 4), mask_crc(crc32c(bytes.data() + 12, len)));
  EXPECT_NE(bytes.substr(12, len).find("brain.Event:2"), std::string::npos);

  EventFile ef = read_events(path);
  EXPECT_EQ(ef.file_version, "brain.Event:2");
  EXPECT_EQ(ef.records, 5u);  // the version record and 4 scalar events
  ASSERT_EQ(ef.scalars.size(), 5u);
  EXPECT_EQ(ef.scalars[0].tag, "train/loss");
  EXPECT_EQ(ef.scalars[0].step, 0);
  EXPECT_EQ(ef.scalars[0].value, 2.5f);
  EXPECT_EQ(ef.scalars[0].wall_time, 1700000000.25);
  EXPECT_EQ(ef.scalars[1].step, 10);
  EXPECT_NEAR(ef.scalars[1].wall_time, unix_time_now(), 60);
  EXPECT_EQ(ef.scalars[2].tag, "val/ppl");
  EXPECT_EQ(ef.scalars[3].tag, "train/lr");
  EXPECT_EQ(ef.scalars[3].value, 3e-4f);
  EXPECT_EQ(ef.scalars[3].step, 20);
  EXPECT_EQ(ef.scalars[4].step, -3);
  EXPECT_EQ(ef.scalars[4].value, -1.5f);
}

TEST(TensorBoard, CorruptionAndTruncationAreDetected) {
  TempDir dir;
  fs::path path;
  {
    EventWriter w(dir.path());
    path = w.path();
    w.add_scalar("loss", 1.0, 1);
  }
  const std::string good = slurp(path);
  uint64_t first = 12 + le(good, 0, 8) + 4;  // the second record starts here
  auto corrupt = [&](size_t pos) {
    std::string b = good;
    b[pos] = static_cast<char>(b[pos] ^ 0x40);
    write_file_atomic(path, b);
  };
  corrupt(first + 20);  // a byte of the scalar event's data
  EXPECT_ERROR_WITH(read_events(path), path.filename().string(), "record 1", "data CRC mismatch");
  corrupt(first + 1);  // a byte of its length
  EXPECT_ERROR_WITH(read_events(path), "record 1", fmt::format("at byte {}", first), "length CRC mismatch");
  corrupt(first + 9);  // a byte of the length's CRC
  EXPECT_ERROR_WITH(read_events(path), "length CRC mismatch");
  write_file_atomic(path, good.substr(0, good.size() - 3));
  EXPECT_ERROR_WITH(read_events(path), "record 1", "truncated");
  write_file_atomic(path, good);
  EXPECT_EQ(read_events(path).scalars.size(), 1u);
}

TEST(TensorBoard, TwoWritersInOneSecondGetTwoFiles) {
  TempDir dir;
  EventWriter a(dir.path()), b(dir.path());
  EXPECT_NE(a.path(), b.path());
}

// ---------------------------------------------------------------------------------------------------- tracer

TEST(Tracer, NestingGivesFoldedStacksAndChromeTrace) {
  TempDir dir;
  bench::Tracer tr;
  tr.enable();
  {
    bench::Span step(tr, "step", "train");
    spin_for(std::chrono::milliseconds(2));
    {
      bench::Span fwd(tr, "forward");
      spin_for(std::chrono::milliseconds(3));
      {
        bench::Span mm(tr, "matmul;fused", "op");
        spin_for(std::chrono::milliseconds(5));
      }
    }
    {
      bench::Span bwd(tr, "backward");
      spin_for(std::chrono::milliseconds(4));
    }
  }
  auto ev = tr.events();
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_EQ(ev[0].parent, -1);
  EXPECT_EQ(ev[1].parent, 0);
  EXPECT_EQ(ev[2].parent, 1);
  EXPECT_EQ(ev[3].parent, 0);
  for (const auto& e : ev) EXPECT_GE(e.dur_ns, 0);

  // Folded stacks: one line per unique stack with its self time in microseconds (sleeps are at least as
  // long as asked; the upper bound is loose for a loaded machine).
  tr.write_folded_stacks(dir / "stacks.txt");
  std::string folded = slurp(dir.path() / "stacks.txt");
  std::map<std::string, long> self;
  std::istringstream in(folded);
  std::string line;
  while (std::getline(in, line)) {
    size_t sp = line.rfind(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    self[line.substr(0, sp)] = std::stol(line.substr(sp + 1));
  }
  ASSERT_EQ(self.size(), 4u) << folded;
  EXPECT_GE(self["step"], 2000);
  EXPECT_GE(self["step;forward"], 3000);
  EXPECT_GE(self["step;forward;matmul:fused"], 5000);  // ';' in a name would split the frame
  EXPECT_GE(self["step;backward"], 4000);
  EXPECT_LT(self["step;forward;matmul:fused"], 500000);

  // Chrome trace: parses back; complete events nest in time; another trace's events are merged.
  write_file_atomic(dir / "torch.json",
                    R"({"traceEvents":[{"name":"aten::mm","ph":"X","ts":1,"dur":2,"pid":9,"tid":9}]})");
  tr.write_chrome_trace(dir / "trace.json", {dir / "torch.json"});
  auto j = nlohmann::json::parse(slurp(dir.path() / "trace.json"));
  ASSERT_TRUE(j["traceEvents"].is_array());
  std::map<std::string, nlohmann::json> x;
  bool merged = false;
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] == "X" && e["pid"] != 9) x[e["name"].get<std::string>()] = e;
    if (e["name"] == "aten::mm") merged = true;
  }
  EXPECT_TRUE(merged);
  ASSERT_EQ(x.size(), 4u);
  EXPECT_EQ(x["step"]["cat"], "train");
  EXPECT_EQ(x["matmul;fused"]["cat"], "op");
  EXPECT_EQ(x["forward"]["cat"], "attnlab");
  EXPECT_EQ(x["step"]["tid"], x["backward"]["tid"]);
  EXPECT_EQ(x["step"]["pid"], static_cast<int>(::getpid()));
  auto ts = [&](const char* n) { return x[n]["ts"].get<double>(); };
  auto end = [&](const char* n) { return ts(n) + x[n]["dur"].get<double>(); };
  // Unix-epoch microseconds (~1.8e15) in a double step by 0.25 us, so a child that ends within a fraction of
  // a microsecond of its parent can round past it: compare with a 1 us slack.
  const double slack = 1.0;
  EXPECT_LE(ts("step"), ts("forward") + slack);
  EXPECT_LE(ts("forward"), ts("matmul;fused") + slack);
  EXPECT_LE(end("matmul;fused"), end("forward") + slack);
  EXPECT_LE(end("forward"), ts("backward") + slack);
  EXPECT_LE(end("backward"), end("step") + slack);
  EXPECT_GE(x["step"]["dur"].get<double>(), 14000);
  // Unix-epoch microseconds, as libtorch's profiler writes them.
  EXPECT_NEAR(ts("step") / 1e6, unix_time_now(), 120);

  write_file_atomic(dir / "bad.json", "{\"not\": \"a trace\"}");
  EXPECT_ERROR_WITH(tr.write_chrome_trace(dir / "t2.json", {dir / "bad.json"}), "bad.json", "traceEvents");
}

TEST(Tracer, TopOpsSortedBySelfTime) {
  bench::Tracer tr;
  tr.enable();
  for (int i = 0; i < 3; ++i) {
    bench::Span outer(tr, "layer");
    spin_for(std::chrono::microseconds(500));
    bench::Span inner(tr, "attention");
    spin_for(std::chrono::milliseconds(4));
  }
  Table t = tr.top_ops();
  ASSERT_EQ(t.columns,
            (std::vector<std::string>{"name", "calls", "total_ms", "self_ms", "mean_us", "percent"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.text(0, "name"), "attention");
  EXPECT_EQ(*t.number(0, "calls"), 3);
  EXPECT_GE(*t.number(0, "self_ms"), 12.0);
  EXPECT_GE(*t.number(0, "mean_us"), 4000.0);
  EXPECT_EQ(t.text(1, "name"), "layer");
  EXPECT_GE(*t.number(1, "total_ms"), *t.number(0, "total_ms"));
  EXPECT_NEAR(*t.number(0, "percent") + *t.number(1, "percent"), 100.0, 1e-9);
  EXPECT_GT(*t.number(0, "percent"), 50.0);
}

TEST(Tracer, DisabledRecordsNothingAndThreadsHaveTheirOwnStacks) {
  bench::Tracer tr;
  { bench::Span s(tr, "off"); }
  EXPECT_TRUE(tr.events().empty());
  tr.enable();
  {
    bench::Span main_span(tr, "main");
    std::thread th([&] {
      bench::Span w(tr, "worker");
      bench::Span inner(tr, "inner");
    });
    th.join();
  }
  auto ev = tr.events();
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[1].name, "worker");
  EXPECT_EQ(ev[1].parent, -1);  // not nested in the other thread's "main"
  EXPECT_NE(ev[1].tid, ev[0].tid);
  EXPECT_EQ(ev[2].parent, 1);
  // clear() drops the spans; one still open when it is called is dropped when it ends.
  {
    bench::Span open(tr, "open");
    tr.clear();
  }
  EXPECT_TRUE(tr.events().empty());
}

// ----------------------------------------------------------------------------------------------------
// figures

TEST(Figures, RendersPngPdfSvg) {
  if (find_executable("gnuplot").empty())
    GTEST_SKIP() << "gnuplot not installed (scripts/setup.sh installs gnuplot-nox); figures not rendered";
  TempDir dir;
  RenderResult r = render(scaling_figure("scaling"), dir.path() / "figures");
  ASSERT_TRUE(r.ok()) << r.error;
  ASSERT_EQ(r.files.size(), 3u);
  EXPECT_EQ(slurp(r.file("png")).substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_EQ(slurp(r.file("pdf")).substr(0, 5), "%PDF-");
  EXPECT_NE(slurp(r.file("svg")).find("<svg"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir.path() / "figures/scaling.dat"));
  EXPECT_TRUE(fs::exists(dir.path() / "figures/scaling.gp"));
  // The OOM point is left out and said so; the key carries the fit.
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("softmax"), std::string::npos);
  EXPECT_NE(slurp(dir.path() / "figures/scaling.gp").find("slope 2.00"), std::string::npos);
}

TEST(Figures, FailuresAreReportedNotThrown) {
  TempDir dir;
  RenderOptions no_gnuplot;
  no_gnuplot.gnuplot = "/nonexistent/gnuplot";
  RenderResult r = render(scaling_figure("f"), dir.path(), no_gnuplot);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("gnuplot"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("not found"), std::string::npos) << r.error;
  EXPECT_TRUE(fs::exists(r.script));  // the script is there to run later

  Figure empty;
  empty.name = "empty";
  empty.series.push_back({"oom", {1, 2}, {NAN, NAN}});
  EXPECT_NE(render(empty, dir.path()).error.find("no series has a plottable point"), std::string::npos);
  Figure bad = scaling_figure("../escape");
  EXPECT_NE(render(bad, dir.path()).error.find("not a file stem"), std::string::npos);

  if (find_executable("gnuplot").empty()) return;
  // gnuplot itself failing: its message comes back.
  fs::path fake = dir.path() / "fake-gnuplot";
  write_file_atomic(fake, "#!/bin/sh\necho 'line 3: unknown terminal type' >&2\nexit 1\n");
  fs::permissions(fake, fs::perms::owner_all);
  RenderOptions o;
  o.gnuplot = fake.string();
  r = render(scaling_figure("g"), dir.path(), o);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.error.find("status 1"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("unknown terminal type"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("not written: png, pdf, svg"), std::string::npos) << r.error;
}

// ---------------------------------------------------------------------------------------------------- HTML

namespace {

Report sample_report(const fs::path& fig_dir, RenderResult& rendered) {
  Report rep;
  rep.title = "Study <quick> & \"co\"";
  rep.subtitle = "quick preset, 2 cores";
  rep.environment = {
      {"torch", "1.13.1"}, {"threads", 2}, {"cuda", {{"available", false}}}, {"blas", {"openblas"}}};
  Table t;
  t.columns = {"mixer", "params", "val ppl", "note"};
  t.add_row({std::string("softmax"), int64_t{1023456}, 4.56789, std::monostate{}});
  t.add_row({std::string("gla <linear>"), int64_t{1020000}, 3.5e-5, std::string("OOM at T=32768")});
  rep.add_section("Perplexity summary")
      .paragraph("Lower is better.\n\nSecond paragraph with <b>markup</b> shown as text.")
      .table(t, "Validation perplexity & parameters");
  rendered = render(scaling_figure("scaling"), fig_dir);
  Section& eff = rep.add_section("Efficiency");
  eff.figure(rendered, "Forward time against T", "log-log plot of forward time");
  eff.figure(fig_dir / "scaling.png", "The same figure, from its path");
  eff.figure(fig_dir / "missing.png", "A figure that failed");
  eff.preformatted("top ops:\n  attention  12.5 ms");
  return rep;
}

}  // namespace

TEST(Html, EscapesEverythingAndEmbedsFigures) {
  EXPECT_EQ(html_escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  const char* rfc4648[][2] = {{"", ""},
                              {"f", "Zg=="},
                              {"fo", "Zm8="},
                              {"foo", "Zm9v"},
                              {"foob", "Zm9vYg=="},
                              {"fooba", "Zm9vYmE="},
                              {"foobar", "Zm9vYmFy"}};
  for (auto& v : rfc4648) EXPECT_EQ(base64_encode(v[0]), v[1]);
  EXPECT_EQ(base64_encode(std::string("\xff\x00\x80", 3)), "/wCA");

  TempDir dir;
  Report rep;
  rep.title = "T <1>";
  Table t;
  t.columns = {"a<b"};
  t.add_row({std::string("x&y")});
  write_file_atomic(dir / "fig.png", "not really a png");
  rep.add_section("S \"1\"").table(t).figure(dir.path() / "fig.png", "cap <i>", "alt \"q\"");
  std::string html = render_html(rep, dir.path());
  EXPECT_NE(html.find("<title>T &lt;1&gt;</title>"), std::string::npos);
  EXPECT_NE(html.find("<th>a&lt;b</th>"), std::string::npos);
  EXPECT_NE(html.find("<td>x&amp;y</td>"), std::string::npos);
  EXPECT_NE(html.find("data:image/png;base64," + base64_encode("not really a png")), std::string::npos);
  EXPECT_NE(html.find("alt=\"alt &quot;q&quot;\""), std::string::npos);
  EXPECT_NE(html.find("cap &lt;i&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<i>"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);  // no external resources
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

TEST(Html, ReportRendersInHeadlessChromium) {
  if (find_executable("gnuplot").empty())
    GTEST_SKIP() << "gnuplot not installed (scripts/setup.sh installs gnuplot-nox); no figures to embed";
  fs::path chromium = find_executable("chromium");
  if (chromium.empty()) chromium = find_executable("chromium-browser");
  if (chromium.empty())
    GTEST_SKIP()
        << "chromium not installed (scripts/setup.sh installs it); report.html not checked in a browser";
  TempDir dir;
  RenderResult rendered;
  Report rep = sample_report(dir.path() / "figures", rendered);
  ASSERT_TRUE(rendered.ok()) << rendered.error;
  write_html(dir.path() / "report.html", rep);
  std::string html = slurp(dir.path() / "report.html");
  EXPECT_NE(html.find("href=\"figures/scaling.pdf\""), std::string::npos);
  EXPECT_NE(html.find("href=\"figures/scaling.svg\""), std::string::npos);

  // A copy with a check that runs once the page (and so every image) has loaded: it writes, for every
  // <img>, whether it decoded and its natural size, into the DOM that --dump-dom prints.
  std::string check = R"(<script>
window.addEventListener('load', () => {
  const out = [];
  for (const img of document.images) out.push((img.complete && img.naturalWidth > 0 ? 'ok ' : 'bad ') +
                                               img.naturalWidth + 'x' + img.naturalHeight);
  const d = document.createElement('div');
  d.id = 'attnlab-check';
  d.textContent = 'images=' + document.images.length + ' tables=' + document.querySelectorAll('table').length +
                  ' [' + out.join(', ') + ']';
  document.body.appendChild(d);
});
</script>
)";
  size_t body_end = html.rfind("</body>");
  ASSERT_NE(body_end, std::string::npos);
  write_file_atomic(dir / "check.html", html.substr(0, body_end) + check + html.substr(body_end));
  std::string dom =
      capture(fmt::format("timeout 120 '{}' --headless --no-sandbox --disable-gpu --dump-dom "
                          "'file://{}' 2>/dev/null",
                          chromium.string(), (dir.path() / "check.html").string()));
  ASSERT_FALSE(dom.empty()) << "chromium printed nothing";
  size_t at = dom.find("id=\"attnlab-check\">");
  ASSERT_NE(at, std::string::npos) << "the load check did not run; DOM:\n" << dom.substr(0, 2000);
  std::string result = dom.substr(at, dom.find('<', at) - at);
  // Two images (the third figure failed and is a note); environment, perplexity tables.
  EXPECT_NE(result.find("images=2 tables=2"), std::string::npos) << result;
  EXPECT_NE(result.find("[ok 900x560, ok 900x560]"), std::string::npos) << result;
  EXPECT_NE(dom.find("gla &lt;linear&gt;"), std::string::npos);
  EXPECT_NE(dom.find("<td class=\"num\" title=\"4.56789\">4.568</td>"), std::string::npos);
  EXPECT_NE(dom.find("<th>cuda.available</th><td>false</td>"), std::string::npos);
  EXPECT_NE(dom.find("Figure not available"), std::string::npos);
  EXPECT_NE(dom.find("<figcaption>Forward time against T"), std::string::npos);
}
