// Standalone check and timing of the delta_wy kernels (the WY preparation of DeltaNet / Gated DeltaNet,
// kernels/delta_wy), no torch: compiled with `nvcc -x cu` by build.sh in seconds, for a short device call
// that compares the ways of the inverse's products (DeltaWyInverse) before the libtorch build and tests do.
//
//   ./delta_wy_harness [out.csv]
//
// Inputs as the delta mixers feed the op: k rows L2-normalised and v ~ N(0, 1), both rounded to bf16 (fp16 in
// two cases); beta =
// sigmoid(N(0, 1)); g = logsigmoid(N(0, 1)) / 16 (weak) or 2 logsigmoid(2 N(0, 1) - 1) (strong, |G| up to
// ~200 in a chunk). Per check case and per way of the inverse (every output poisoned with NaN first):
//   * the forward's W, U, G and the backward's dk, dv, dbeta, dg against a float64 reference of the same
//   inputs
//     on the host (relative RMS; bf16's own rounding of W, U, dk, dv is ~1.6e-3, fp16's ~2e-4: the bounds as
//     in tests/test_gpu_delta_wy.cpp, 4e-3 and 5e-4, and 1e-3 for dbeta, dg);
//   * the backward from the forward's saved M against the backward that recomputes M: dk, dv the same bits,
//     dbeta, dg to 1e-5 of their largest value (float atomics in another order);
//   * the backward of each way against the tf32x3 one (relative RMS under 4e-3 for dk, dv; 1e-3 for dbeta,
//     dg).
// Then every kernel of each way is timed on the shapes of PERFORMANCE.md (B * T = 32768, H = 16, bf16; the
// preparation does the same work at every T there: 8192 chunks), CUDA events, median of 20.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/common/harness/harness_util.h"
#include "kernels/delta_wy/harness/reference.h"
#include "kernels/delta_wy/params.h"

namespace {

namespace kn = attnlab::kernels;
using attnlab::harness::Buf;
using attnlab::harness::median_ms;

struct Case {
  const char* name;
  int B, T, H, D;
  const char* gate;   // none | weak | strong
  bool check;         // a check case (small); else timed
  bool fp16 = false;  // the 16-bit tensors in fp16 (else bf16)
};

// A 16-bit element of a case's dtype from float and back.
uint16_t to16(const Case& c, float x) {
  return c.fp16 ? attnlab::harness::to_fp16(x) : attnlab::harness::to_bf16(x);
}
double from16(const Case& c, uint16_t b) {
  return c.fp16 ? attnlab::harness::from_fp16(b) : attnlab::harness::from_bf16(b);
}

struct Host {
  std::vector<uint16_t> k, v, dw, du;  // 16-bit [B, T, H, D]
  std::vector<float> beta, g, dG;      // [B, T, H]
};

// Device buffers of one case: inputs, and each output twice (the run under test and the one it is compared
// with).
struct Dev {
  Buf k, v, beta, g, dw, du, dG, m;
  Buf w[2], u[2], G[2], dk[2], dv[2], dbeta[2], dg[2];
  Dev(const Case& c)
      : k(size_t(c.B) * c.T * c.H * c.D * 2),
        v(k.bytes),
        beta(size_t(c.B) * c.T * c.H * 4),
        g(beta.bytes),
        dw(k.bytes),
        du(k.bytes),
        dG(beta.bytes),
        m(size_t(c.B) * c.H * kn::linear_chunk_count(c.T) * kn::kDeltaWySavedM * 4),
        w{Buf(k.bytes), Buf(k.bytes)},
        u{Buf(k.bytes), Buf(k.bytes)},
        G{Buf(beta.bytes), Buf(beta.bytes)},
        dk{Buf(k.bytes), Buf(k.bytes)},
        dv{Buf(k.bytes), Buf(k.bytes)},
        dbeta{Buf(beta.bytes), Buf(beta.bytes)},
        dg{Buf(beta.bytes), Buf(beta.bytes)} {}
};

float log_sigmoid(float z) {
  return z < 0 ? z - std::log1p(std::exp(z)) : -std::log1p(std::exp(-z));
}

Host make_inputs(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const size_t rows = size_t(c.B) * c.T * c.H;
  Host h;
  h.k.resize(rows * c.D), h.v.resize(rows * c.D), h.dw.resize(rows * c.D), h.du.resize(rows * c.D);
  std::vector<float> row(c.D);
  for (size_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int d = 0; d < c.D; ++d) ss += double(row[d] = nd(rng)) * row[d];
    const float s = float(1.0 / std::sqrt(ss + 1e-12));
    for (int d = 0; d < c.D; ++d) h.k[r * c.D + d] = to16(c, row[d] * s);
  }
  for (auto* x : {&h.v, &h.dw, &h.du})
    for (auto& e : *x) e = to16(c, nd(rng));
  h.beta.resize(rows), h.g.resize(rows), h.dG.resize(rows);
  for (auto& x : h.beta) x = 1.f / (1.f + std::exp(-nd(rng)));
  const std::string gate = c.gate;
  for (auto& x : h.g) {
    const float z = nd(rng);
    x = gate == "strong" ? 2.f * log_sigmoid(2.f * z - 1.f) : log_sigmoid(z) / 16.f;
  }
  for (auto& x : h.dG) x = nd(rng);
  return h;
}

// The float64 reference (reference.h) of a case's inputs, their 16-bit values as the kernels read them.
attnlab::harness::WyReference reference(const Case& c, const Host& in, bool gated) {
  attnlab::harness::WyInputs x;
  x.B = c.B, x.T = c.T, x.H = c.H, x.D = c.D, x.gated = gated;
  for (auto [dst, src] : {std::pair{&x.k, &in.k}, {&x.v, &in.v}, {&x.dw, &in.dw}, {&x.du, &in.du}})
    for (uint16_t e : *src) dst->push_back(from16(c, e));
  x.beta.assign(in.beta.begin(), in.beta.end()), x.g.assign(in.g.begin(), in.g.end());
  x.dG.assign(in.dG.begin(), in.dG.end());
  return attnlab::harness::delta_wy_reference(x);
}

// Relative RMS of a device output (the case's 16-bit dtype, or float32 with c nullptr) against a float64
// reference; NaN anywhere: 1e30.
double rel_rms(const Buf& got, const std::vector<double>& ref, const Case* c) {
  double num = 0, den = 0;
  const std::vector<uint16_t> h16 = c ? got.download<uint16_t>() : std::vector<uint16_t>();
  const std::vector<float> h32 = c ? std::vector<float>() : got.download<float>();
  for (size_t i = 0; i < ref.size(); ++i) {
    const double x = c ? from16(*c, h16[i]) : h32[i];
    if (std::isnan(x)) return 1e30;
    num += (x - ref[i]) * (x - ref[i]), den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// The same between two device outputs of `n` elements (b against a).
double rel_rms(const Buf& a, const Buf& b, size_t n, const Case* c) {
  std::vector<double> ref(n);
  if (c) {
    const auto h = a.download<uint16_t>();
    for (size_t i = 0; i < n; ++i) ref[i] = from16(*c, h[i]);
  } else {
    const auto h = a.download<float>();
    for (size_t i = 0; i < n; ++i) ref[i] = h[i];
  }
  return rel_rms(b, ref, c);
}

// max |a - b| / max |a| of two float32 outputs (NaN in b: 1e30); bits that differ in two 16-bit outputs.
double rel_max32(const Buf& a, const Buf& b, size_t n) {
  const auto x = a.download<float>(), y = b.download<float>();
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num = std::max(num, std::isnan(y[i]) ? 1e30 : std::fabs(double(y[i]) - x[i]));
    den = std::max(den, std::fabs(double(x[i])));
  }
  return den > 0 ? num / den : num;
}
size_t differing16(const Buf& a, const Buf& b, size_t n) {
  const auto x = a.download<uint16_t>(), y = b.download<uint16_t>();
  size_t d = 0;
  for (size_t i = 0; i < n; ++i) d += x[i] != y[i];
  return d;
}

kn::DeltaWyParams forward_params(const Case& c, const Dev& bufs, bool gated, kn::DeltaWyInverse inv, int slot,
                                 bool save_m) {
  kn::DeltaWyParams p;
  p.dtype = c.fp16 ? kn::LinearDtype::kFP16 : kn::LinearDtype::kBF16;
  p.B = c.B, p.T = c.T, p.H = c.H, p.K = p.V = c.D;
  p.k = bufs.k.p, p.v = bufs.v.p, p.beta = bufs.beta.f(), p.g = gated ? bufs.g.f() : nullptr;
  p.w = bufs.w[slot].p, p.u = bufs.u[slot].p, p.G = bufs.G[slot].f();
  p.m = save_m ? bufs.m.f() : nullptr;
  p.inverse = inv;
  return p;
}

kn::DeltaWyParams backward_params(kn::DeltaWyParams p, const Dev& bufs, int slot, bool saved_m) {
  p.m = saved_m ? bufs.m.f() : nullptr;
  p.dw = bufs.dw.p, p.du = bufs.du.p, p.dG = p.g ? bufs.dG.f() : nullptr;
  p.dk = bufs.dk[slot].p, p.dv = bufs.dv[slot].p, p.dbeta = bufs.dbeta[slot].f();
  p.dg = p.g ? bufs.dg[slot].f() : nullptr;
  return p;
}

void poison_outputs(const Dev& bufs, int slot) {
  for (const Buf* b : {&bufs.w[slot], &bufs.u[slot], &bufs.G[slot], &bufs.dk[slot], &bufs.dv[slot],
                       &bufs.dbeta[slot], &bufs.dg[slot]})
    b->poison();
}

const char* inverse_name(kn::DeltaWyInverse inv) {
  return inv == kn::DeltaWyInverse::kBf16x3 ? "bf16x3" : "tf32x3";
}

}  // namespace

int main(int argc, char** argv) {
  attnlab::harness::print_device();
  std::FILE* csv = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
  if (csv)
    std::fprintf(
        csv,
        "case,B,T,H,D,gate,inverse,w_err,u_err,G_err,dk_err,dv_err,dbeta_err,dg_err,recompute_diff,"
        "recompute_err,dk_vs_tf32,dv_vs_tf32,dbeta_vs_tf32,dg_vs_tf32,fwd_ms,fwd_save_m_ms,bwd_saved_m_ms,"
        "bwd_recompute_ms,pass\n");
  const std::vector<Case> cases = {
      {"check D64 strong T333", 2, 333, 3, 64, "strong", true},
      {"check D64 none T100", 2, 100, 3, 64, "none", true},
      {"check D128 weak T333", 1, 333, 2, 128, "weak", true},
      {"check D128 strong T64", 2, 64, 2, 128, "strong", true},
      {"check D64 weak T5", 2, 5, 2, 64, "weak", true},
      {"check D64 strong T333 fp16", 2, 333, 3, 64, "strong", true, true},
      {"check D128 weak T200 fp16", 1, 200, 2, 128, "weak", true, true},
      {"bench D64 gated", 4, 8192, 16, 64, "weak", false},
      {"bench D64 plain", 4, 8192, 16, 64, "none", false},
      {"bench D128 gated", 4, 8192, 16, 128, "weak", false},
      {"bench D128 plain", 4, 8192, 16, 128, "none", false},
  };
  const kn::DeltaWyInverse ways[] = {kn::DeltaWyInverse::kTf32x3, kn::DeltaWyInverse::kBf16x3};
  int failures = 0, runs = 0;
  uint64_t seed = 7;
  for (const Case& c : cases) {
    const bool gated = std::string(c.gate) != "none";
    const Host in = make_inputs(c, seed++);
    Dev bufs(c);
    bufs.k.upload(in.k), bufs.v.upload(in.v), bufs.beta.upload(in.beta), bufs.g.upload(in.g);
    bufs.dw.upload(in.dw), bufs.du.upload(in.du), bufs.dG.upload(in.dG);
    const auto ref = c.check ? reference(c, in, gated) : attnlab::harness::WyReference();
    const size_t n = size_t(c.B) * c.T * c.H * c.D, rows = size_t(c.B) * c.T * c.H;
    // the tf32x3 backward's outputs (slot 0 of a spare Dev would double the memory: kept on the host)
    std::vector<uint16_t> tf_dk, tf_dv;
    std::vector<float> tf_dbeta, tf_dg;
    for (const kn::DeltaWyInverse inv : ways) {
      ++runs;
      double w_err = 0, u_err = 0, G_err = 0, rc_err = 0, x_dk = 0, x_dv = 0, x_db = 0, x_dg = 0;
      double dk_err = 0, dv_err = 0, db_err = 0, dg_err = 0;
      size_t rc_diff = 0;
      bool pass = true;
      const auto fwd = forward_params(c, bufs, gated, inv, 0, true);
      const double t16 =
          c.fp16 ? 5e-4 : 4e-3;  // 2.5x the final 16-bit rounding (tests/test_gpu_delta_wy.cpp)
      if (c.check) {
        // forward (saving M) and backward from the saved M into slot 0; the backward recomputing M into 1
        poison_outputs(bufs, 0), poison_outputs(bufs, 1);
        CK(kn::launch_delta_wy_fwd(fwd));
        CK(kn::launch_delta_wy_bwd(backward_params(fwd, bufs, 0, true)));
        CK(kn::launch_delta_wy_bwd(backward_params(fwd, bufs, 1, false)));
        CK(cudaDeviceSynchronize());
        w_err = rel_rms(bufs.w[0], ref.W, &c), u_err = rel_rms(bufs.u[0], ref.U, &c);
        G_err = gated ? rel_rms(bufs.G[0], ref.G, nullptr) : 0.0;
        dk_err = rel_rms(bufs.dk[0], ref.dk, &c), dv_err = rel_rms(bufs.dv[0], ref.dv, &c);
        db_err = rel_rms(bufs.dbeta[0], ref.dbeta, nullptr);
        dg_err = gated ? rel_rms(bufs.dg[0], ref.dg, nullptr) : 0.0;
        rc_diff = differing16(bufs.dk[0], bufs.dk[1], n) + differing16(bufs.dv[0], bufs.dv[1], n);
        rc_err = rel_max32(bufs.dbeta[0], bufs.dbeta[1], rows);
        if (gated) rc_err = std::max(rc_err, rel_max32(bufs.dg[0], bufs.dg[1], rows));
        pass = w_err < t16 && u_err < t16 && G_err < 1e-5 && dk_err < t16 && dv_err < t16 && db_err < 1e-3 &&
               dg_err < 1e-3 && rc_diff == 0 && rc_err < 1e-5;
        if (inv == kn::DeltaWyInverse::kTf32x3) {
          tf_dk = bufs.dk[0].download<uint16_t>(), tf_dv = bufs.dv[0].download<uint16_t>();
          tf_dbeta = bufs.dbeta[0].download<float>(), tf_dg = bufs.dg[0].download<float>();
        } else {  // against the tf32x3 backward, uploaded into slot 1
          bufs.dk[1].upload(tf_dk), bufs.dv[1].upload(tf_dv), bufs.dbeta[1].upload(tf_dbeta),
              bufs.dg[1].upload(tf_dg);
          x_dk = rel_rms(bufs.dk[1], bufs.dk[0], n, &c), x_dv = rel_rms(bufs.dv[1], bufs.dv[0], n, &c);
          x_db = rel_rms(bufs.dbeta[1], bufs.dbeta[0], rows, nullptr);
          x_dg = gated ? rel_rms(bufs.dg[1], bufs.dg[0], rows, nullptr) : 0.0;
          pass = pass && x_dk < t16 && x_dv < t16 && x_db < 1e-3 && x_dg < 1e-3;
        }
      }
      double t_fwd = 0, t_fwd_m = 0, t_bwd = 0, t_bwd_rc = 0;
      if (!c.check) {
        const auto plain = forward_params(c, bufs, gated, inv, 0, false);
        t_fwd = median_ms([&] { CK(kn::launch_delta_wy_fwd(plain)); });
        t_fwd_m = median_ms([&] { CK(kn::launch_delta_wy_fwd(fwd)); });
        const auto b_saved = backward_params(fwd, bufs, 0, true), b_rc = backward_params(fwd, bufs, 0, false);
        t_bwd = median_ms([&] { CK(kn::launch_delta_wy_bwd(b_saved)); });
        t_bwd_rc = median_ms([&] { CK(kn::launch_delta_wy_bwd(b_rc)); });
        CK(cudaDeviceSynchronize());
      }
      failures += !pass;
      std::printf("%-24s %-6s", c.name, inverse_name(inv));
      if (c.check)
        std::printf(
            " W %.2e U %.2e G %.1e dk %.2e dv %.2e dbeta %.2e dg %.2e | recomputed M: %zu bits differ, "
            "dbeta/dg %.1e",
            w_err, u_err, G_err, dk_err, dv_err, db_err, dg_err, rc_diff, rc_err);
      if (c.check && inv != kn::DeltaWyInverse::kTf32x3)
        std::printf(" | vs tf32x3: dk %.2e dv %.2e dbeta %.2e dg %.2e", x_dk, x_dv, x_db, x_dg);
      if (!c.check)
        std::printf(" fwd %.4f ms (saving M %.4f) | bwd from saved M %.4f ms, recomputing %.4f", t_fwd,
                    t_fwd_m, t_bwd, t_bwd_rc);
      std::printf("  %s\n", pass ? "PASS" : "FAIL");
      std::fflush(stdout);
      if (csv)
        std::fprintf(csv,
                     "%s,%d,%d,%d,%d,%s,%s,%.3e,%.3e,%.3e,%.3e,%.3e,%.3e,%.3e,%zu,%.3e,%.3e,%.3e,%.3e,%.3e,%."
                     "4f,%.4f,%.4f,"
                     "%.4f,%d\n",
                     c.name, c.B, c.T, c.H, c.D, c.gate, inverse_name(inv), w_err, u_err, G_err, dk_err,
                     dv_err, db_err, dg_err, rc_diff, rc_err, x_dk, x_dv, x_db, x_dg, t_fwd, t_fwd_m, t_bwd,
                     t_bwd_rc, int(pass));
    }
  }
  if (csv) std::fclose(csv);
  std::printf("\n%d of %d runs pass\n", runs - failures, runs);
  return failures ? 1 : 0;
}
