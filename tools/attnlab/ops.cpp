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
  std::string op, file, impl = "auto", device = "cpu", dtype = "float32";
  double tol = 0;  // 0: by dtype (kDefaultTol)
  int64_t chunk_size = 64;
  int64_t pad_head_dims = 0;
};

// Relative RMS error that passes by default: float32 against float32 lands near 1e-6 (FLA's own checks);
// 16-bit inputs carry their rounding (bf16 keeps 8 bits, fp16 11) through every product.
double default_tol(torch::ScalarType dt) {
  return dt == torch::kBFloat16 ? 1e-2 : dt == torch::kHalf ? 2e-3 : 1e-4;
}

torch::ScalarType parse_dtype(const std::string& s) {
  if (s == "float32" || s == "fp32") return torch::kFloat;
  if (s == "bf16" || s == "bfloat16") return torch::kBFloat16;
  if (s == "fp16" || s == "float16") return torch::kHalf;
  fail("ops verify: --dtype must be float32, bf16 or fp16, got '{}'", s);
}

// Zero channels appended to the key axis of q, k, g [.., K], u [H, K] and the rows of h0, and to the value
// axis of v and the columns of h0, change nothing the ops compute: a zero key channel adds nothing to
// q.k, its state row starts at zero and receives k = 0 (the delta rule's k^T S and k k^T alike), and a zero
// value channel gives a zero output column. So a file whose head dims the CUDA kernels do not take (the
// fixtures' K = 16, V = 20) can still check them, padded to 64, with the padding cut off before comparing.
torch::Tensor pad_input(const std::string& name, const torch::Tensor& t, int64_t to, int64_t K, int64_t V) {
  auto pad_last = [&](const torch::Tensor& x, int64_t d) {
    return torch::constant_pad_nd(x, {0, to - d});  // the last axis to `to`
  };
  if (name == "q" || name == "k" || name == "u" || (name == "g" && t.dim() == 4)) return pad_last(t, K);
  if (name == "v") return pad_last(t, V);
  if (name == "h0") return torch::constant_pad_nd(t, {0, to - V, 0, to - K});
  return t;
}

void verify(const VerifyArgs& a) {
  auto file = SafetensorFile::load(a.file);
  auto impl = ops::parse_impl(a.impl);
  const auto dtype = parse_dtype(a.dtype);
  const double tol = a.tol > 0 ? a.tol : default_tol(dtype);
  ATTNLAB_CHECK(a.device == "cpu" || a.device == "cuda", "ops verify: --device must be cpu or cuda, got '{}'",
                a.device);
  ATTNLAB_CHECK(a.device == "cpu" || torch::cuda::is_available(),
                "ops verify: --device cuda, but this libtorch sees no CUDA device");
  const torch::Device device(a.device == "cuda" ? torch::kCUDA : torch::kCPU);
  bool softmax = a.op == "softmax_attention";
  auto known = ops::OpRegistry::instance().names();
  known.push_back("softmax_attention");
  ATTNLAB_CHECK(std::find(known.begin(), known.end(), a.op) != known.end(),
                "ops verify: unknown op '{}'; known: {}", a.op, fmt::join(known, ", "));
  std::vector<std::string> reads = {"q", "k", "v"};
  if (!softmax) reads = ops::OpRegistry::instance().get(a.op).inputs;
  ATTNLAB_CHECK(a.tol >= 0, "ops verify: --tol must be > 0 (or 0: by --dtype), got {}", a.tol);
  ATTNLAB_CHECK(a.pad_head_dims >= 0, "ops verify: --pad-head-dims must be >= 0, got {}", a.pad_head_dims);
  for (const char* need : {"q", "v"})
    ATTNLAB_CHECK(file.has(need), "ops verify: {} has no tensor '{}'; the file has {}", a.file, need,
                  fmt::join(file.names(), ", "));
  const int64_t K = file.tensor("q").size(-1), V = file.tensor("v").size(-1);
  ATTNLAB_CHECK(a.pad_head_dims == 0 || (a.pad_head_dims >= K && a.pad_head_dims >= V),
                "ops verify: --pad-head-dims {} is below the file's head dims (K {}, V {})", a.pad_head_dims,
                K, V);

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
    if (a.pad_head_dims > 0) t = pad_input(name, t, a.pad_head_dims, K, V);
    // q, k, v (and rwkv6's u) in --dtype, as a model under autocast hands them over; gates, beta and the
    // state stay float32, as the layers keep them.
    bool low = name == "q" || name == "k" || name == "v" || name == "u";
    t = t.to(device, low ? dtype : t.scalar_type());
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
    scale = 1.0 / std::sqrt(static_cast<double>(K));  // the file's K, before any padding
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
    auto upstream = [&](const char* n, const torch::Tensor& like) {
      auto t = file.tensor(n);
      if (a.pad_head_dims > 0) t = pad_input(std::string(n) == "do" ? "v" : "h0", t, a.pad_head_dims, K, V);
      return t.to(like.device(), torch::kFloat);
    };
    if (file.has("do")) loss = (o.to(torch::kFloat) * upstream("do", o)).sum();
    if (file.has("dht") && ht.defined()) {
      auto l = (ht.to(torch::kFloat) * upstream("dht", ht)).sum();
      loss = loss.defined() ? loss + l : l;
    }
    if (loss.defined()) {
      auto gs = torch::autograd::grad({loss}, grad_inputs, {}, false, false, /*allow_unused=*/true);
      for (size_t i = 0; i < gs.size(); ++i) grads[grad_names[i]] = gs[i];
    } else {
      missing_upstream = "the file has no 'do' or 'dht' to backpropagate";
    }
  }

  // Back to the file's shapes (padding cut off), float32 on the CPU.
  auto unpad = [&](const torch::Tensor& t, const std::vector<int64_t>& shape) {
    if (!t.defined()) return t;
    auto x = t.detach();
    if (a.pad_head_dims > 0)
      for (int64_t d = 0; d < x.dim() && d < static_cast<int64_t>(shape.size()); ++d)
        if (x.size(d) != shape[d]) x = x.narrow(d, 0, shape[d]);
    return x.to(torch::kCPU, torch::kFloat);
  };
  std::vector<Row> rows;
  auto shape_of = [&](const char* n) { return file.tensor(n).sizes().vec(); };
  if (file.has("o")) rows.push_back(compare("o", unpad(o, shape_of("o")), file.tensor("o"), tol));
  if (file.has("ht")) rows.push_back(compare("ht", unpad(ht, shape_of("ht")), file.tensor("ht"), tol));
  for (const auto& name : kInputNames) {
    if (!file.has("d" + name)) continue;
    auto ref = file.tensor("d" + name);
    Row r = compare("d" + name,
                    unpad(grads.count(name) ? grads.at(name) : torch::Tensor(), ref.sizes().vec()), ref, tol);
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

  std::cout << fmt::format(
      "ops verify: op {}, impl {}{}, file {}, {} {}{}\n", a.op, ops::impl_name(impl),
      softmax ? "" : fmt::format(" (chunk_size {})", a.chunk_size), a.file, a.device, a.dtype,
      a.pad_head_dims > 0
          ? fmt::format(", head dims zero-padded from K {}, V {} to {}", K, V, a.pad_head_dims)
          : "");
  std::cout << fmt::format("  q {}, v {}, scale {} ({})\n", shape_str(in.at("q").sizes()),
                           shape_str(in.at("v").sizes()), scale, scale_from);
  std::cout << fmt::format("  {:<7} {:<18} {:>12}  {:<6}  {}\n", "tensor", "shape", "rel_rms_err", "finite",
                           fmt::format("result (tol {:.1e})", tol));
  std::vector<std::string> failed;
  for (const auto& r : rows) {
    std::cout << fmt::format("  {:<7} {:<18} {:>12.3e}  {:<6}  {}{}\n", r.name, r.shape, r.err,
                             r.finite ? "yes" : "NO", r.pass ? "PASS" : "FAIL",
                             r.why.empty() ? "" : " (" + r.why + ")");
    if (!r.pass)
      failed.push_back(r.why.empty() ? fmt::format("{} err {:.3e} > tol {:.1e}", r.name, r.err, tol)
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
  cmd->add_option("--tol", a.tol,
                  "largest relative RMS error that passes (default by --dtype: float32 1e-4, fp16 2e-3, bf16 "
                  "1e-2; float32 against float32 lands near 1e-6, as in FLA's checks)");
  cmd->add_option("--device", a.device, "cpu or cuda: where the op runs")->capture_default_str();
  cmd->add_option("--dtype", a.dtype,
                  "float32, bf16 or fp16: the dtype of q, k, v (gates, beta, h0 stay float32)")
      ->capture_default_str();
  cmd->add_option(
         "--pad-head-dims", a.pad_head_dims,
         "zero-pad K and V to this size (exact: zero channels change nothing), so that the CUDA kernels "
         "(K = V = 64 or 128) can check a file with other head dims; 0: as stored")
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
