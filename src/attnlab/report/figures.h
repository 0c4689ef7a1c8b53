// Figures through gnuplot: a plain description of a line plot, rendered to PNG, PDF and SVG.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "attnlab/report/fit.h"

namespace attnlab::report {

namespace fs = std::filesystem;

// One line of a plot. Points with a non-finite coordinate (an OOM row), or a non-positive one on a log
// axis, are left out.
struct Series {
  std::string name;  // shown in the key
  std::vector<double> xs, ys;
  std::string style = "linespoints";  // lines | points | linespoints
  bool dashed = false;                // e.g. a fitted line beside the measured points
  int color = -1;                     // index into the palette (12 colours); -1: the series' own index
};

// Text placed on the plot.
struct Annotation {
  std::string text;
  double x = 0.03, y = 0.95;  // where the text starts
  bool graph = true;          // true: x, y are fractions of the plot area; false: data coordinates
};

struct Figure {
  std::string name;  // file stem: letters, digits, '-', '_', '.'; the files are <name>.png/.pdf/.svg
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  std::vector<Series> series;
  std::vector<Annotation> annotations;
  std::vector<std::string> key_notes;  // extra lines at the end of the key, e.g. "gla: slope 1.02, r² 0.999"
};

struct RenderOptions {
  std::string gnuplot = "gnuplot";  // a name looked up in PATH, or a path
  std::vector<std::string> formats = {"png", "pdf", "svg"};
  int width = 900, height = 560;  // PNG and SVG pixels; the PDF has the same aspect ratio
};

// What render() did. It never throws for a plotting failure (a study keeps going without one figure):
// error says what went wrong, with gnuplot's own messages.
struct RenderResult {
  fs::path data, script;           // <name>.dat and <name>.gp, written first (rerun: gnuplot <name>.gp)
  std::vector<fs::path> files;     // the images written, in the order of RenderOptions::formats
  std::vector<std::string> notes;  // series left out (no plottable points), points dropped
  std::string error;               // empty when every format was written
  std::string log;                 // gnuplot's stdout and stderr (warnings too)
  bool ok() const { return error.empty(); }
  // The image of one format ("png"), or an empty path when it was not written.
  fs::path file(const std::string& format) const;
};

// Writes <name>.dat and <name>.gp into `out_dir` and runs gnuplot there, producing <name>.<format> for each
// format. Old images of that name are removed first, so `files` lists only what this call produced.
RenderResult render(const Figure& figure, const fs::path& out_dir, const RenderOptions& options = {});

// The executable `gnuplot` resolves to (PATH lookup), or an empty path when there is none.
fs::path find_executable(const std::string& name);

// A dashed line of `fit` between x_min and x_max (a few points evenly spaced on a log axis).
Series fit_series(const std::string& name, const PowerFit& fit, double x_min, double x_max);

}  // namespace attnlab::report
