// The task registry, the RNG and scoring.
#include "attnlab/data/tasks/task.h"

#include <algorithm>
#include <numeric>

#include "attnlab/core/error.h"

namespace attnlab::tasks {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}
}  // namespace

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

int64_t Rng::uniform(int64_t n) {
  ATTNLAB_CHECK(n >= 1, "Rng::uniform: expected n >= 1, got {}", n);
  const uint64_t range = static_cast<uint64_t>(n);
  // Lemire: the high 64 bits of a 128-bit product, rejecting the few low values that would bias it.
  unsigned __int128 m = static_cast<unsigned __int128>(next()) * range;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < range) {
    const uint64_t threshold = (0 - range) % range;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(next()) * range;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<int64_t>(m >> 64);
}

double Rng::uniform01() {
  return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0);
}

std::vector<int64_t> Rng::weighted_without_replacement(const std::vector<double>& weights, int64_t k) {
  const int64_t n = static_cast<int64_t>(weights.size());
  ATTNLAB_CHECK(k >= 0 && k <= n, "weighted sampling: cannot draw {} distinct items out of {}", k, n);
  std::vector<double> w = weights;
  double total = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(k));
  for (int64_t draw = 0; draw < k; ++draw) {
    double r = uniform01() * total, acc = 0;
    int64_t pick = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (w[static_cast<size_t>(i)] <= 0) continue;
      acc += w[static_cast<size_t>(i)];
      pick = i;  // the last positive weight catches rounding at the top end
      if (r < acc) break;
    }
    ATTNLAB_CHECK(pick >= 0, "weighted sampling: no positive weight left after {} draws", draw);
    out.push_back(pick);
    total -= w[static_cast<size_t>(pick)];
    w[static_cast<size_t>(pick)] = 0;
  }
  return out;
}

std::vector<int64_t> Rng::distinct(int64_t n, int64_t k) {
  ATTNLAB_CHECK(k >= 0 && k <= n, "cannot draw {} distinct values out of {}", k, n);
  // A partial Fisher-Yates over [0, n): k swaps.
  std::vector<int64_t> pool(static_cast<size_t>(n));
  std::iota(pool.begin(), pool.end(), 0);
  for (int64_t i = 0; i < k; ++i)
    std::swap(pool[static_cast<size_t>(i)], pool[static_cast<size_t>(range(i, n - 1))]);
  pool.resize(static_cast<size_t>(k));
  return pool;
}

uint64_t split_seed(uint64_t seed, const std::string& split) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the split name, mixed with the seed
  for (unsigned char c : split) h = (h ^ c) * 1099511628211ull;
  uint64_t x = seed ^ h;
  return splitmix64(x);
}

void Task::check_eval_set(const std::string& set) const {
  auto sets = eval_sets();
  if (std::find(sets.begin(), sets.end(), set) == sets.end())
    fail("unknown evaluation set '{}'; this task has {}", set, fmt::join(sets, ", "));
}

TaskScore score(const torch::Tensor& predictions, const torch::Tensor& labels) {
  ATTNLAB_CHECK(predictions.sizes() == labels.sizes(), "score: predictions {} and labels {} differ in shape",
                shape_str(predictions.sizes()), shape_str(labels.sizes()));
  auto mask = labels.ne(kIgnore);
  auto right = predictions.eq(labels).logical_and(mask);
  auto scored = mask.sum(1).to(torch::kDouble);  // [N]
  auto correct = right.sum(1).to(torch::kDouble);
  auto rows = scored.gt(0);
  TaskScore s;
  s.examples = rows.sum().item<int64_t>();
  s.positions = static_cast<int64_t>(scored.sum().item<double>());
  if (s.examples == 0) return s;
  auto frac = correct.masked_select(rows) / scored.masked_select(rows);
  s.accuracy = frac.mean().item<double>();
  s.exact_match = frac.eq(1.0).to(torch::kDouble).mean().item<double>();
  return s;
}

TaskRegistry& TaskRegistry::instance() {
  static TaskRegistry r;
  return r;
}

void TaskRegistry::add(TaskEntry entry) {
  const std::string name = entry.name;
  if (entries_.count(name)) throw Error("task '" + name + "' registered twice");
  entries_.emplace(name, std::move(entry));
}

const TaskEntry& TaskRegistry::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail("unknown task '{}'; known tasks: {}", name, fmt::join(names(), ", "));
  return it->second;
}

std::vector<std::string> TaskRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

std::unique_ptr<Task> build_task(const std::string& name, const AnyOptions& options) {
  return TaskRegistry::instance().get(name).build(options);
}

void check_preset_name(const std::string& preset) {
  if (preset != "quick" && preset != "paper")
    fail(
        "unknown task preset '{}'; expected quick (2 CPU cores, minutes) or paper (the published protocol, "
        "for a GPU)",
        preset);
}

}  // namespace attnlab::tasks
