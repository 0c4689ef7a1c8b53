// Training history: train_loss every log_every steps, val_loss / val_ppl every eval_every steps. Written as
// history.json and metrics.csv in the run directory (atomically), and kept in checkpoints for resume.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace attnlab {

struct HistoryRow {
  int64_t step = 0;
  std::string kind;  // "train" or "val"
  double loss = 0;
  double ppl = 0;
  double lr = 0;
  double tokens_per_s = 0;
  double elapsed_s = 0;
};

class History {
 public:
  void add(HistoryRow row) { rows_.push_back(std::move(row)); }
  const std::vector<HistoryRow>& rows() const { return rows_; }
  // Drops rows after `step` (a resumed run redoes them).
  void truncate_after(int64_t step);
  nlohmann::json to_json() const;
  static History from_json(const nlohmann::json& j);
  std::string to_csv() const;
  // Writes history.json and metrics.csv into `dir`.
  void write(const std::string& dir) const;

 private:
  std::vector<HistoryRow> rows_;
};

}  // namespace attnlab
