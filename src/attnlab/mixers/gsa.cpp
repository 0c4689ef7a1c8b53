// GSA, gated slot attention (Zhang et al. 2024): a bounded memory of m slots, read by a softmax over slots.
#include <algorithm>
#include <cmath>

#include "attnlab/core/error.h"
#include "attnlab/mixers/registry.h"
#include "attnlab/model/layers.h"
#include "attnlab/ops/gla.h"

namespace attnlab {
namespace {

// Zhang et al. 2024, in FLA's formulation (fla/layers/gsa.py, fla/ops/gsa/naive.py):
//   a_t = exp(f_t), f_t = logsigmoid(W_f x_t) / gate_logit_normalizer, s_t = 1 - a_t   (per slot, [M])
//   K~_t = diag(a_t) K~_{t-1} + s_t k_t^T,  V~_t = diag(a_t) V~_{t-1} + s_t v_t^T      ([M, K], [M, V])
//   o_t = V~_t^T softmax(K~_t q_t)
// Two passes of GLA over the slots. Pass 2 (read the slot values with the slot scores as queries) is the gla
// op exactly: q = softmax(...), k = s, v = v, g = f, state V~ [M, V]. Pass 1 stores hk = K~^T [K, M], whose
// decay falls on the value side (the slots), while the gla op decays key channels; FLA runs it with a
// value-gated GLA kernel (chunk_gsa_fwd_k). We write that form here: slot_scores, chunkwise, below.
struct GsaOptions {
  int64_t num_slots = 64;
  double expand_k = 1.0;
  double expand_v = 1.0;
  double gate_logit_normalizer = 8.0;
  double norm_eps = 1e-5;
  std::string impl = "auto";
  int64_t chunk_size = 64;

  static const OptionSet<GsaOptions>& schema() {
    static const OptionSet<GsaOptions> s = [] {
      using O = GsaOptions;
      OptionSet<O> o("mixer.gsa");
      o.add("num_slots", &O::num_slots, "memory slots m per head", check::positive<int64_t>());
      o.add("expand_k", &O::expand_k, "key width / d_model", check::positive<double>());
      o.add("expand_v", &O::expand_v, "value width / d_model", check::positive<double>());
      o.add("gate_logit_normalizer", &O::gate_logit_normalizer,
            "f = logsigmoid(W_f x) / this: > 1 keeps the slot decays near 1 at init (FLA: 8)",
            check::positive<double>());
      o.add("norm_eps", &O::norm_eps, "epsilon of the output RMSNorm", check::positive<double>());
      o.add("impl", &O::impl, "naive (loops over t) | chunk | auto (= chunk), both passes",
            check::one_of({"auto", "naive", "chunk"}));
      o.add("chunk_size", &O::chunk_size, "chunk length of pass 2 (gla op)", check::positive<int64_t>());
      return o;
    }();
    return s;
  }
};

struct GsaCache : MixerCache {
  torch::Tensor hk;  // [B, H, K, M]: K~^T, float32 (float64 for float64 activations)
  torch::Tensor hv;  // [B, H, M, V]: V~
};

// Pass 1 chunk length: the intra-chunk decays form a [C, C, M] tensor per chunk; 16 keeps it at 16 M floats
// per token while the state pass still runs T/16 steps.
constexpr int64_t kSlotChunk = 16;

// Pass 1, heads-first in the accumulation dtype: q, k [B,H,T,K], s and log gates g [B,H,T,M] (g <= 0),
// hk0 [B,H,K,M]. With hk_t = hk_{t-1} diag(exp(g_t)) + k_t s_t^T, returns the slot scores q_t^T hk_t
// [B,H,T,M] and the final hk.
std::pair<torch::Tensor, torch::Tensor> slot_scores(const torch::Tensor& q, const torch::Tensor& k,
                                                    const torch::Tensor& s, const torch::Tensor& g,
                                                    const torch::Tensor& hk0, bool naive) {
  const int64_t T = q.size(2);
  if (naive) {  // the definition, one step at a time
    auto h = hk0;
    std::vector<torch::Tensor> out;
    for (int64_t t = 0; t < T; ++t) {
      auto kt = k.select(2, t).unsqueeze(-1), st = s.select(2, t).unsqueeze(-2);  // [B,H,K,1], [B,H,1,M]
      h = h * g.select(2, t).exp().unsqueeze(-2) + kt * st;                       // [B, H, K, M]
      out.push_back(torch::matmul(q.select(2, t).unsqueeze(-2), h).squeeze(-2));  // [B, H, M]
    }
    return {torch::stack(out, 2), h};
  }
  const int64_t C = ops::linear::chunk_len(kSlotChunk, T);
  auto qc = ops::linear::to_chunks(q, C), kc = ops::linear::to_chunks(k, C);  // [B, H, N, C, K]
  auto sc = ops::linear::to_chunks(s, C), gc = ops::linear::to_chunks(g, C);  // [B, H, N, C, M]
  auto G = gc.cumsum(3);                                                      // [B, H, N, C, M], inclusive
  auto G_last = G.narrow(3, C - 1, 1);                                        // [B, H, N, 1, M]
  // Every exponent below is a sum of log gates over a span, so <= 0: no overflow for any gate strength.
  auto U = torch::matmul(kc.transpose(-1, -2), sc * (G_last - G).exp());  // [B, H, N, K, M]
  auto [S_in, S_end] = ops::linear::scan_states(hk0, G_last.exp(), U);    // [B, H, N, K, M]
  auto inter = torch::matmul(qc, S_in) * G.exp();                         // [B, H, N, C, M]
  auto A = torch::matmul(qc, kc.transpose(-1, -2));                       // [B, H, N, C, C]
  auto future = torch::ones({C, C}, q.options().dtype(torch::kBool)).triu(1).unsqueeze(-1);  // [C, C, 1]
  // D[t, s, m] = exp(G_t - G_s) for s <= t; the future is masked before exp, so that it cannot overflow.
  auto D = (G.unsqueeze(4) - G.unsqueeze(3)).masked_fill(future, -INFINITY).exp();  // [B, H, N, C, C, M]
  auto intra = (A.unsqueeze(-1) * D * sc.unsqueeze(3)).sum(4);                      // [B, H, N, C, M]
  return {ops::linear::from_chunks(inter + intra, T), S_end};
}

int64_t whole(const char* what, double ratio, int64_t C, int64_t H) {
  double w = ratio * static_cast<double>(C);
  auto n = static_cast<int64_t>(std::llround(w));
  ATTNLAB_CHECK(n >= 1 && std::abs(w - static_cast<double>(n)) < 1e-9 && n % H == 0,
                "gsa: {} * d_model must be a whole number divisible by num_heads {}, got {} * {} = {}", what,
                H, ratio, C, w);
  return n;
}

class GsaMixer : public Mixer {
 public:
  GsaMixer(const MixerContext& ctx, const GsaOptions& opt)
      : opt_(opt), C_(ctx.d_model), H_(ctx.n_heads), M_(opt.num_slots) {
    ATTNLAB_CHECK(H_ > 0, "gsa: num_heads must be > 0, got {}", H_);
    K_ = whole("expand_k", opt.expand_k, C_, H_) / H_;
    V_ = whole("expand_v", opt.expand_v, C_, H_) / H_;
    impl_ = ops::parse_impl(opt.impl);
    auto lin = [](int64_t in, int64_t out, double sd) {
      torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(false));
      init_linear(l, sd);
      return l;
    };
    q_proj_ = register_module("q_proj", lin(C_, H_ * K_, 0.02));
    k_proj_ = register_module("k_proj", lin(C_, H_ * K_, 0.02));
    v_proj_ = register_module("v_proj", lin(C_, H_ * V_, 0.02));
    f_proj_ = register_module("f_proj", lin(C_, H_ * M_, 0.02));
    g_norm_ = register_module("g_norm", RMSNorm(H_ * V_, opt.norm_eps));
    o_proj_ = register_module("o_proj",
                              lin(H_ * V_, C_, 0.02 / std::sqrt(2.0 * static_cast<double>(ctx.n_layers))));
  }

  torch::Tensor forward(const torch::Tensor& x, MixerCache* cache) override {
    ATTNLAB_CHECK(x.dim() == 3 && x.size(2) == C_, "gsa: x must be [B,T,C] with C={}, got {}", C_,
                  shape_str(x.sizes()));
    const int64_t B = x.size(0), T = x.size(1);
    GsaCache* c = nullptr;
    if (cache) {
      c = dynamic_cast<GsaCache*>(cache);
      ATTNLAB_CHECK(c, "gsa: expected a cache made by this mixer's make_cache(), got another kind");
      ATTNLAB_CHECK(c->hk.size(0) == B, "gsa: cache made for batch {}, got batch {}", c->hk.size(0), B);
    }
    auto acc = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
    // FLA's defaults: swish feature map on q and k, SiLU on v.
    auto q = torch::silu(q_proj_(x)).view({B, T, H_, K_});                         // [B, T, H, K]
    auto k = torch::silu(k_proj_(x)).view({B, T, H_, K_});                         // [B, T, H, K]
    auto v = torch::silu(v_proj_(x)).view({B, T, H_, V_});                         // [B, T, H, V]
    auto f = torch::log_sigmoid(f_proj_(x).to(acc)) / opt_.gate_logit_normalizer;  // [B, T, H*M], <= 0
    f = f.view({B, T, H_, M_});
    auto s = -torch::expm1(f);  // 1 - a_t [B, T, H, M], without the cancellation of 1 - exp(f)
    // Pass 1: slot scores K~_t q_t, scale 1 as FLA's layer (the softmax temperature is learned through q).
    auto hk0 = c ? c->hk.to(acc) : torch::zeros({B, H_, K_, M_}, x.options().dtype(acc));
    auto tr = [&](const torch::Tensor& t) {
      return t.to(acc).transpose(1, 2);
    };  // [B, T, H, D] -> [B, H, T, D]
    auto [ok, hk] = slot_scores(tr(q), tr(k), tr(s), tr(f), hk0, impl_ == ops::Impl::naive);  // [B, H, T, M]
    auto qv = torch::softmax(ok, -1).transpose(1, 2);  // [B, T, H, M]: a distribution over the slots
    // Pass 2: o_t = V~_t^T qv_t, the gla op with the slots as its key channels.
    ops::RecurrentArgs a;
    a.q = qv;
    a.k = s;
    a.v = v;
    a.g = f;
    a.scale = 1.0;
    a.chunk_size = opt_.chunk_size;
    if (c) {
      a.h0 = c->hv;
      a.output_final_state = true;
    }
    auto out = ops::gla(a, impl_);  // o [B, T, H, V]
    if (c) {
      c->hk = hk.detach();
      c->hv = out.ht.detach();
      c->position += T;
    }
    auto o = g_norm_(torch::silu(out.o.reshape({B, T, H_ * V_})));  // FLA: RMSNorm(SiLU(o)), no output gate
    return o_proj_(o);
  }

  std::unique_ptr<MixerCache> make_cache(int64_t batch, int64_t /*max_len*/,
                                         const torch::TensorOptions& options) const override {
    auto c = std::make_unique<GsaCache>();
    auto acc = options.dtype() == torch::kDouble ? torch::kDouble : torch::kFloat;
    c->hk = torch::zeros({batch, H_, K_, M_}, options.dtype(acc));
    c->hv = torch::zeros({batch, H_, M_, V_}, options.dtype(acc));
    return c;
  }

  MixerInfo info() const override {
    MixerInfo i;
    i.parameters = count_parameters();
    int64_t state = 4 * H_ * M_ * (K_ + V_);  // float32 K~ and V~: the memory is m slots, whatever T
    i.state_bytes = [state](int64_t) { return state; };
    const double C = static_cast<double>(C_), H = static_cast<double>(H_), K = static_cast<double>(K_),
                 V = static_cast<double>(V_), M = static_cast<double>(M_);
    double proj = 2.0 * C * H * (2.0 * K + V + M) + 2.0 * H * V * C;
    // Per head, recurrent form: each pass decays (1), updates (2) and reads (2) its state; the softmax ~5 M.
    double op = H * (5.0 * M * K + 5.0 * M * V + 5.0 * M);
    i.flops_per_token = [total = proj + op](int64_t) { return total; };
    return i;
  }

 private:
  GsaOptions opt_;
  int64_t C_, H_, M_, K_ = 0, V_ = 0;
  ops::Impl impl_;
  torch::nn::Linear q_proj_{nullptr}, k_proj_{nullptr}, v_proj_{nullptr}, f_proj_{nullptr}, o_proj_{nullptr};
  RMSNorm g_norm_{nullptr};
};

}  // namespace

ATTNLAB_REGISTER_MIXER("gsa", GsaOptions, GsaMixer,
                       "gated slot attention: two-pass GLA over m memory slots with a softmax read");

}  // namespace attnlab
