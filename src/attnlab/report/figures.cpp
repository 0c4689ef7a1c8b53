// Figures through gnuplot: writes the data and a standalone script, then runs gnuplot in the output folder.
#include "attnlab/report/figures.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "attnlab/core/error.h"
#include "attnlab/core/fs.h"

namespace attnlab::report {

namespace {

// Tableau 10 (matplotlib's default cycle: colours people know apart) and two darker extras: 12 mechanisms.
constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"};
constexpr int kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);
// Filled circle, square, triangle up, triangle down, diamond, pentagon; then the open ones.
constexpr int kPointTypes[] = {7, 5, 9, 11, 13, 15, 6, 4, 8, 10, 12, 14};

// A gnuplot single-quoted string: no escapes are interpreted there except '' for a quote. Line breaks
// cannot appear inside, so they become spaces.
std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "''";
    else if (c == '\n' || c == '\r')
      out += ' ';
    else
      out += c;
  }
  return out + "'";
}

bool valid_name(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

bool is_power_of_two(double x) {
  if (!(x >= 1) || x > 9.007199254740992e15 || x != std::floor(x)) return false;
  auto v = static_cast<uint64_t>(x);
  return (v & (v - 1)) == 0;
}

std::string terminal_line(const std::string& format, const RenderOptions& o) {
  if (format == "png")
    return fmt::format(
        "set terminal pngcairo size {},{} enhanced font 'DejaVu Sans,10' background rgb 'white'", o.width,
        o.height);
  if (format == "pdf")  // 160 px per inch: 900 x 560 px is 5.6 x 3.5 in, a page-width figure
    return fmt::format("set terminal pdfcairo size {:.2f}in,{:.2f}in enhanced font 'DejaVu Sans,8'",
                       o.width / 160.0, o.height / 160.0);
  if (format == "svg")
    return fmt::format(
        "set terminal svg size {},{} dynamic enhanced font 'DejaVu Sans,11' background rgb 'white'", o.width,
        o.height);
  return "";
}

struct RunOutput {
  int status = -1;  // exit status, or -1 when it did not exit normally
  std::string output;
  std::string error;  // why it could not be started or waited for
};

// Runs `exe script` with `dir` as the working directory, collecting stdout and stderr. fork + exec rather
// than system(): no shell quoting of paths, and only async-signal-safe calls in the child (libtorch's threads
// may be running).
RunOutput run_in_dir(const fs::path& exe, const fs::path& dir, const std::string& script) {
  RunOutput r;
  int fds[2];
  if (::pipe(fds) != 0) {
    r.error = fmt::format("pipe failed: {}", std::strerror(errno));
    return r;
  }
  std::string exe_s = exe.string(), dir_s = dir.string();
  const char* argv[] = {"gnuplot", script.c_str(), nullptr};
  pid_t pid = ::fork();
  if (pid < 0) {
    r.error = fmt::format("fork failed: {}", std::strerror(errno));
    ::close(fds[0]);
    ::close(fds[1]);
    return r;
  }
  if (pid == 0) {
    int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    if (::chdir(dir_s.c_str()) != 0) ::_exit(126);
    ::execv(exe_s.c_str(), const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(fds[1]);
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n > 0) {
      r.output.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  pid_t w;
  do {
    w = ::waitpid(pid, &status, 0);
  } while (w < 0 && errno == EINTR);
  if (w < 0) {
    r.error = fmt::format("waitpid failed: {}", std::strerror(errno));
  } else if (WIFEXITED(status)) {
    r.status = WEXITSTATUS(status);
    if (r.status == 126) r.error = fmt::format("cannot enter directory '{}'", dir_s);
    if (r.status == 127) r.error = fmt::format("cannot execute '{}'", exe_s);
  } else if (WIFSIGNALED(status)) {
    r.error = fmt::format("gnuplot was killed by signal {}", WTERMSIG(status));
  }
  return r;
}

// The last lines of gnuplot's output, for an error message.
std::string tail_lines(const std::string& s, size_t max_lines) {
  size_t end = s.size();
  while (end > 0 && (s[end - 1] == '\n' || s[end - 1] == ' ')) --end;
  size_t pos = end, lines = 0;
  while (pos > 0 && lines < max_lines) {
    pos = s.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
    ++lines;
  }
  std::string t = s.substr(pos, end - pos);
  while (!t.empty() && t.front() == '\n') t.erase(0, 1);
  return t;
}

}  // namespace

fs::path RenderResult::file(const std::string& format) const {
  for (const auto& f : files)
    if (f.extension() == "." + format) return f;
  return {};
}

fs::path find_executable(const std::string& name) {
  if (name.empty()) return {};
  if (name.find('/') != std::string::npos)
    return ::access(name.c_str(), X_OK) == 0 ? fs::path(name) : fs::path();
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (dir.empty()) dir = ".";
    fs::path cand = fs::path(dir) / name;
    std::error_code ec;
    if (fs::is_regular_file(cand, ec) && ::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return {};
}

Series fit_series(const std::string& name, const PowerFit& fit, double x_min, double x_max) {
  Series s;
  s.name = name;
  s.style = "lines";
  s.dashed = true;
  const int n = 16;
  for (int i = 0; i < n; ++i) {
    // Evenly spaced in log(x), so the line looks straight and smooth on a log axis.
    double x = x_min * std::pow(x_max / x_min, static_cast<double>(i) / (n - 1));
    s.xs.push_back(x);
    s.ys.push_back(fit.predict(x));
  }
  return s;
}

RenderResult render(const Figure& fig, const fs::path& out_dir, const RenderOptions& opt) {
  RenderResult res;
  if (!valid_name(fig.name)) {
    res.error = fmt::format("figure name '{}' is not a file stem (letters, digits, '-', '_', '.')", fig.name);
    return res;
  }
  try {
    fs::create_directories(out_dir);
    for (const auto& f : opt.formats) {
      if (terminal_line(f, opt).empty()) {
        res.error = fmt::format("figure '{}': unknown format '{}' (known: png, pdf, svg)", fig.name, f);
        return res;
      }
      std::error_code ec;
      fs::remove(out_dir / (fig.name + "." + f), ec);
    }

    // ---- the data: one block per series, blocks separated by two blank lines (gnuplot's "index").
    std::string dat =
        fmt::format("# {}: data of {}.gp; one block per series (gnuplot index)\n", fig.name, fig.name);
    std::vector<std::string> plots;
    bool pow2_x = fig.logx;
    int block = 0;
    for (size_t si = 0; si < fig.series.size(); ++si) {
      const Series& s = fig.series[si];
      if (s.xs.size() != s.ys.size()) {
        res.error = fmt::format("figure '{}': series '{}' has {} x values and {} y values", fig.name, s.name,
                                s.xs.size(), s.ys.size());
        return res;
      }
      std::string rows;
      size_t kept = 0;
      for (size_t i = 0; i < s.xs.size(); ++i) {
        double x = s.xs[i], y = s.ys[i];
        if (!std::isfinite(x) || !std::isfinite(y) || (fig.logx && x <= 0) || (fig.logy && y <= 0)) continue;
        rows += fmt::format("{}\t{}\n", x, y);
        // Powers of two on x (sequence lengths, sizes) get base-2 ticks; dashed (fitted) lines do not count.
        if (!s.dashed && !is_power_of_two(x)) pow2_x = false;
        ++kept;
      }
      if (kept < s.xs.size())
        res.notes.push_back(
            fmt::format("series '{}': {} of {} points not plottable (missing, or <= 0 on a log axis)", s.name,
                        s.xs.size() - kept, s.xs.size()));
      if (kept == 0) {
        res.notes.push_back(fmt::format("series '{}' left out: no plottable points", s.name));
        continue;
      }
      dat += fmt::format("# series {}: {}\n{}\n\n", block, s.name, rows);
      int ls = 1 + (s.color >= 0 ? s.color : static_cast<int>(si)) % kPaletteSize;
      std::string with = s.style == "lines" ? "lines" : s.style == "points" ? "points" : "linespoints";
      plots.push_back(fmt::format("'{}.dat' index {} using 1:2 with {} ls {}{} title {}", fig.name, block,
                                  with, ls, s.dashed ? " dt 2" : "", gp_quote(s.name)));
      ++block;
    }
    if (plots.empty()) {
      res.error = fmt::format("figure '{}': no series has a plottable point", fig.name);
      return res;
    }
    for (const auto& note : fig.key_notes)
      plots.push_back(fmt::format("keyentry with lines lc rgb 'white' lw 0 title {}", gp_quote(note)));

    // ---- the script: standalone, so that `gnuplot <name>.gp` in this folder redoes the figures.
    std::string gp = fmt::format("# {}: written by attnlab; run `gnuplot {}.gp` in this folder to redraw\n",
                                 fig.name, fig.name);
    gp += "set encoding utf8\n";
    gp += "set termoption noenhanced\n";
    if (!fig.title.empty()) gp += "set title " + gp_quote(fig.title) + " noenhanced font ',12'\n";
    if (!fig.xlabel.empty()) gp += "set xlabel " + gp_quote(fig.xlabel) + " noenhanced\n";
    if (!fig.ylabel.empty()) gp += "set ylabel " + gp_quote(fig.ylabel) + " noenhanced\n";
    if (fig.logx) gp += pow2_x ? "set logscale x 2\nset format x '%.0f'\n" : "set logscale x\n";
    if (fig.logy) gp += "set logscale y\n";
    if (!fig.logx) gp += "set mxtics\n";
    if (!fig.logy) gp += "set mytics\n";
    gp += "set format y '%g'\n";
    // The range ends at the data (not at the next tick, a decade away on a log axis), plus a small margin.
    gp += "set autoscale fix\nset offsets graph 0.03, graph 0.03, graph 0.05, graph 0.05\n";
    gp += "set border 3 lc rgb '#444444'\nset tics nomirror out scale 0.6\n";
    gp += "set grid xtics ytics mxtics mytics lt 1 lc rgb '#d8d8d8' lw 1, lt 1 lc rgb '#eeeeee' lw 1\n";
    gp += "set key outside right top vertical Left reverse noenhanced samplen 2.5 spacing 1.15\n";
    for (int i = 0; i < kPaletteSize; ++i)
      gp += fmt::format("set style line {} lc rgb '{}' lw 2 pt {} ps 0.9\n", i + 1, kPalette[i],
                        kPointTypes[i]);
    int label = 1;
    for (const auto& a : fig.annotations)
      gp += fmt::format("set label {} {} at {} {}, {} {} front noenhanced\n", label++, gp_quote(a.text),
                        a.graph ? "graph" : "first", a.x, a.graph ? "graph" : "first", a.y);
    std::string plot_cmd = "plot " + fmt::format("{}", fmt::join(plots, ", \\\n     ")) + "\n";
    bool first = true;
    for (const auto& f : opt.formats) {
      gp += terminal_line(f, opt) + "\nset termoption noenhanced\n";
      gp += fmt::format("set output '{}.{}'\n", fig.name, f);
      gp += first ? plot_cmd : "replot\n";
      first = false;
    }
    gp += "unset output\n";

    res.data = out_dir / (fig.name + ".dat");
    res.script = out_dir / (fig.name + ".gp");
    write_file_atomic(res.data, dat);
    write_file_atomic(res.script, gp);
  } catch (const std::exception& e) {
    res.error = fmt::format("figure '{}': {}", fig.name, e.what());
    return res;
  }

  fs::path exe = find_executable(opt.gnuplot);
  if (exe.empty()) {
    res.error = fmt::format(
        "figure '{}': gnuplot ('{}') not found; install gnuplot-nox (scripts/setup.sh) or run "
        "`gnuplot {}.gp` in {} later",
        fig.name, opt.gnuplot, fig.name, out_dir.string());
    return res;
  }
  RunOutput run = run_in_dir(exe, out_dir, fig.name + ".gp");
  res.log = run.output;
  std::vector<std::string> missing;
  for (const auto& f : opt.formats) {
    fs::path p = out_dir / (fig.name + "." + f);
    std::error_code ec;
    if (fs::is_regular_file(p, ec) && fs::file_size(p, ec) > 0)
      res.files.push_back(p);
    else
      missing.push_back(f);
  }
  if (!run.error.empty() || run.status != 0 || !missing.empty()) {
    std::string why =
        !run.error.empty() ? run.error : fmt::format("gnuplot exited with status {}", run.status);
    if (run.status == 0 && run.error.empty()) why = "gnuplot exited normally";
    res.error = fmt::format(
        "figure '{}': {}; {}; gnuplot said: {}", fig.name, why,
        missing.empty() ? "all images written" : fmt::format("not written: {}", fmt::join(missing, ", ")),
        run.output.empty() ? "(nothing)" : tail_lines(run.output, 8));
  }
  return res;
}

}  // namespace attnlab::report
