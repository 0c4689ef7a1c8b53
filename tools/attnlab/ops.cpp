// `attnlab ops verify`: an op's output, final state and gradients against those stored in a safetensors file.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "attnlab/core/error.h"
#include "attnlab/core/safetensors.h"
#include "attnlab/ops/check.h"
#include "attnlab/ops/registry.h"
#include "attnlab/ops/softmax_attention.h"
#include "commands.h"

namespace attnlab::cli {
namespace {

// The RecurrentArgs fields a file may hold, in the order the table lists their gradients.
const std::vector<std::string> kInputNames = {"q", "k", "v", "g", "beta", "u", "h0"};

const char* kFormatHelp = R"(File format (safetensors; docs/ops_verify.md):
  inputs   q, k [B,T,H,K]; v [B,T,H,V]; g [B,T,H] or [B,T,H,K] (log decay); beta [B,T,H];
           u [H,K] (rwkv6); h0 [B,H,K,V] (optional initial state). Which ones an op reads: --op's list.
  expected o [B,T,H,V]; ht [B,H,K,V] (final state; asked for when ht or dht is present).
  upstream do [B,T,H,V], dht [B,H,K,V]: the loss is sum(o*do) + sum(ht*dht).
  grads    d<name> for any input <name> (dq, dk, dv, dg, dbeta, du, dh0): d loss / d <name>.
  metadata "scale" (a number; K^-0.5 when absent); other keys are ignored.
Every tensor present among o, ht and d<name> is compared: rel_rms_err = rms(ours - file) / rms(file),
PASS when it is <= --tol and ours is finite. softmax_attention runs causal with q, k, v only.)";

struct Row {
  std::string name, shape, why;
  double err = 0;
  bool finite = true, pass = false;
};

Row compare(const std::string& name, const torch::Tensor& ours, const torch::Tensor& ref, double tol) {
  Row r;
  r.name = name;
  r.shape = shape_str(ref.sizes());
  if (!ours.defined()) {
    r.why = "attnlab produced none";
    r.err = std::numeric_limits<double>::infinity();
    return r;
  }
  if (ours.sizes() != ref.sizes()) {
    r.why = fmt::format("shape: attnlab {} vs file {}", shape_str(ours.sizes()), r.shape);
    r.err = std::numeric_limits<double>::infinity();
    return r;
  }
  r.err = ops::rel_rms_error(ours, ref);
  r.finite = ops::all_finite(ours);
  r.pass = r.finite && r.err <= tol;
  if (!r.finite) r.why = "attnlab's tensor has NaN/inf";
  return r;
}

struct VerifyArgs {
  std::string op, file, impl = "auto";
  double tol = 1e-4;
  int64_t chunk_size = 64;
};

void verify(const VerifyArgs& a) {
  auto file = SafetensorFile::load(a.file);
  auto impl = ops::parse_impl(a.impl);
  bool softmax = a.op == "softmax_attention";
  auto known = ops::OpRegistry::instance().names();
  known.push_back("softmax_attention");
  ATTNLAB_CHECK(std::find(known.begin(), known.end(), a.op) != known.end(),
                "ops verify: unknown op '{}'; known: {}", a.op, fmt::join(known, ", "));
  std::vector<std::string> reads = {"q", "k", "v"};
  if (!softmax) reads = ops::OpRegistry::instance().get(a.op).inputs;
  ATTNLAB_CHECK(a.tol > 0, "ops verify: --tol must be > 0, got {}", a.tol);

  // Inputs: every one the op reads must be in the file, except the optional initial state.
  std::map<std::string, torch::Tensor> in;
  for (const auto& name : reads) {
    if (!file.has(name)) {
      ATTNLAB_CHECK(name == "h0",
                    "ops verify: {} has no tensor '{}', which op {} reads (it reads {}); the file has {}",
                    a.file, name, a.op, fmt::join(reads, ", "), fmt::join(file.names(), ", "));
      continue;
    }
    auto t = file.tensor(name);
    if (t.is_floating_point()) t.requires_grad_(true);
    in[name] = t;
  }
  for (const auto& name : kInputNames)
    if (file.has(name) && !in.count(name))
      std::cout << fmt::format("note: the file's '{}' is not an input of {} (it reads {}); ignored\n", name,
                               a.op, fmt::join(reads, ", "));

  double scale = 0;
  std::string scale_from = "metadata";
  if (auto it = file.metadata().find("scale"); it != file.metadata().end()) {
    try {
      scale = std::stod(it->second);
    } catch (const std::exception&) {
      fail("ops verify: metadata 'scale' of {} is not a number: '{}'", a.file, it->second);
    }
  } else {
    scale = 1.0 / std::sqrt(static_cast<double>(in.at("q").size(-1)));
    scale_from = "K^-0.5, no 'scale' in the metadata";
  }

  // Forward.
  bool want_state = file.has("ht") || file.has("dht");
  torch::Tensor o, ht;
  if (softmax) {
    ops::SoftmaxArgs s;
    s.q = in.at("q"), s.k = in.at("k"), s.v = in.at("v"), s.scale = scale, s.causal = true;
    o = ops::softmax_attention(s, impl);
  } else {
    ops::RecurrentArgs r;
    auto get = [&](const char* n) { return in.count(n) ? in.at(n) : torch::Tensor(); };
    r.q = get("q"), r.k = get("k"), r.v = get("v"), r.g = get("g"), r.beta = get("beta"), r.u = get("u");
    r.h0 = get("h0"), r.scale = scale, r.output_final_state = want_state, r.chunk_size = a.chunk_size;
    auto out = ops::OpRegistry::instance().get(a.op).fn(r, impl);
    o = out.o, ht = out.ht;
  }

  // Backward of sum(o*do) + sum(ht*dht), for the inputs whose gradient the file stores.
  std::vector<std::string> grad_names;
  std::vector<torch::Tensor> grad_inputs;
  for (const auto& name : reads)
    if (file.has("d" + name) && in.count(name) && in.at(name).requires_grad()) {
      grad_names.push_back(name);
      grad_inputs.push_back(in.at(name));
    }
  std::map<std::string, torch::Tensor> grads;
  std::string missing_upstream;
  if (!grad_inputs.empty()) {
    torch::Tensor loss;
    if (file.has("do")) loss = (o * file.tensor("do").to(o.scalar_type())).sum();
    if (file.has("dht") && ht.defined()) {
      auto l = (ht * file.tensor("dht").to(ht.scalar_type())).sum();
      loss = loss.defined() ? loss + l : l;
    }
    if (loss.defined()) {
      auto gs = torch::autograd::grad({loss}, grad_inputs, {}, false, false, /*allow_unused=*/true);
      for (size_t i = 0; i < gs.size(); ++i) grads[grad_names[i]] = gs[i];
    } else {
      missing_upstream = "the file has no 'do' or 'dht' to backpropagate";
    }
  }

  std::vector<Row> rows;
  if (file.has("o")) rows.push_back(compare("o", o.detach(), file.tensor("o"), a.tol));
  if (file.has("ht"))
    rows.push_back(compare("ht", ht.defined() ? ht.detach() : ht, file.tensor("ht"), a.tol));
  for (const auto& name : kInputNames) {
    if (!file.has("d" + name)) continue;
    auto ref = file.tensor("d" + name);
    Row r = compare("d" + name, grads.count(name) ? grads.at(name) : torch::Tensor(), ref, a.tol);
    if (!missing_upstream.empty())
      r.why = missing_upstream;
    else if (!in.count(name))
      r.why = fmt::format("{} does not read '{}'", a.op, name);
    else if (!grads.count(name) || !grads.at(name).defined())
      r.why = fmt::format("no gradient reaches '{}'", name);
    rows.push_back(r);
  }
  ATTNLAB_CHECK(!rows.empty(), "ops verify: {} holds none of o, ht, d<name> to compare with; the file has {}",
                a.file, fmt::join(file.names(), ", "));

  std::cout << fmt::format("ops verify: op {}, impl {}{}, file {}\n", a.op, ops::impl_name(impl),
                           softmax ? "" : fmt::format(" (chunk_size {})", a.chunk_size), a.file);
  std::cout << fmt::format("  q {}, v {}, scale {} ({})\n", shape_str(in.at("q").sizes()),
                           shape_str(in.at("v").sizes()), scale, scale_from);
  std::cout << fmt::format("  {:<7} {:<18} {:>12}  {:<6}  {}\n", "tensor", "shape", "rel_rms_err", "finite",
                           fmt::format("result (tol {:.1e})", a.tol));
  std::vector<std::string> failed;
  for (const auto& r : rows) {
    std::cout << fmt::format("  {:<7} {:<18} {:>12.3e}  {:<6}  {}{}\n", r.name, r.shape, r.err,
                             r.finite ? "yes" : "NO", r.pass ? "PASS" : "FAIL",
                             r.why.empty() ? "" : " (" + r.why + ")");
    if (!r.pass)
      failed.push_back(r.why.empty() ? fmt::format("{} err {:.3e} > tol {:.1e}", r.name, r.err, a.tol)
                                     : fmt::format("{}: {}", r.name, r.why));
  }
  if (!failed.empty())
    fail("ops verify: {} of {} checks failed for op {} (impl {}) against {}: {}", failed.size(), rows.size(),
         a.op, ops::impl_name(impl), a.file, fmt::join(failed, "; "));
  std::cout << fmt::format("all {} checks passed\n", rows.size());
}

}  // namespace

void add_ops(CLI::App& app) {
  auto* ops_cmd = app.add_subcommand("ops", "Attention ops: check them against reference numbers");
  ops_cmd->require_subcommand(1);
  auto* cmd = ops_cmd->add_subcommand(
      "verify",
      "Run an op on the inputs of a safetensors file; compare o, ht and every stored gradient with it");
  static VerifyArgs a;
  auto names = ops::OpRegistry::instance().names();
  names.push_back("softmax_attention");
  cmd->add_option("--op", a.op, fmt::format("the op: {}", fmt::join(names, ", ")))->required();
  cmd->add_option("--file", a.file, "safetensors file with inputs, upstream gradients and expected results")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--impl", a.impl,
                  "naive, chunk, kernel, auto (softmax_attention: naive, sdpa, kernel, auto)")
      ->capture_default_str();
  cmd->add_option(
         "--tol", a.tol,
         "largest relative RMS error that passes; 1e-4 suits float32 against float32 (FLA lands near 1e-6)")
      ->capture_default_str();
  cmd->add_option("--chunk-size", a.chunk_size, "chunk length of the chunk form (>= 1)")
      ->capture_default_str();
  std::string footer = kFormatHelp;
  footer += "\nOps (the inputs each reads, its equation):";
  for (const auto& n : ops::OpRegistry::instance().names()) {
    const auto& e = ops::OpRegistry::instance().get(n);
    footer += fmt::format("\n  {:<18} reads {}: {}", n, fmt::join(e.inputs, ","), e.equation);
  }
  footer += fmt::format("\n  {:<18} reads q,k,v: o_t = sum_(s<=t) softmax_s(scale q_t.k_s) v_s",
                        "softmax_attention");
  cmd->footer(footer + "\n");
  cmd->callback([] { verify(a); });
}

}  // namespace attnlab::cli
