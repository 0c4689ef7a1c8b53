// Training history.
#include "attnlab/train/history.h"

#include <fmt/format.h>

#include <algorithm>

#include "attnlab/core/fs.h"

namespace attnlab {

void History::truncate_after(int64_t step) {
  rows_.erase(
      std::remove_if(rows_.begin(), rows_.end(), [step](const HistoryRow& r) { return r.step > step; }),
      rows_.end());
}

nlohmann::json History::to_json() const {
  nlohmann::json train = nlohmann::json::array(), val = nlohmann::json::array();
  for (const auto& r : rows_) {
    if (r.kind == "train")
      train.push_back({{"step", r.step},
                       {"train_loss", r.loss},
                       {"lr", r.lr},
                       {"tokens_per_s", r.tokens_per_s},
                       {"elapsed_s", r.elapsed_s}});
    else
      val.push_back({{"step", r.step}, {"val_loss", r.loss}, {"val_ppl", r.ppl}, {"elapsed_s", r.elapsed_s}});
  }
  return {{"train", train}, {"val", val}};
}

History History::from_json(const nlohmann::json& j) {
  History h;
  for (const auto& r : j.value("train", nlohmann::json::array()))
    h.add({r["step"], "train", r["train_loss"], 0, r["lr"], r["tokens_per_s"], r["elapsed_s"]});
  for (const auto& r : j.value("val", nlohmann::json::array()))
    h.add({r["step"], "val", r["val_loss"], r["val_ppl"], 0, 0, r["elapsed_s"]});
  std::stable_sort(h.rows_.begin(), h.rows_.end(),
                   [](const auto& a, const auto& b) { return a.step < b.step; });
  return h;
}

std::string History::to_csv() const {
  std::string out = "step,kind,loss,ppl,lr,tokens_per_s,elapsed_s\n";
  for (const auto& r : rows_)
    out += fmt::format("{},{},{:.6f},{:.6f},{:.6g},{:.1f},{:.3f}\n", r.step, r.kind, r.loss, r.ppl, r.lr,
                       r.tokens_per_s, r.elapsed_s);
  return out;
}

void History::write(const std::string& dir) const {
  write_file_atomic(fs::path(dir) / "history.json", to_json().dump(1) + "\n");
  write_file_atomic(fs::path(dir) / "metrics.csv", to_csv());
}

}  // namespace attnlab
