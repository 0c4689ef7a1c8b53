// Standalone check and benchmark of the delta_chunk kernels' one- and two-pass forms, forward and backward,
// no torch: compiled with `nvcc -x cu` by build.sh; not part of the project's CMake build (.cpp files under
// kernels/ are not globbed). A GPU call of seconds, where a libtorch build takes minutes.
//
//   ./delta_chunk_harness [out.csv]
//
// For each case: random q, k (rows L2-normalised, as the delta mixers do), v ~ N(0, 1), beta = sigmoid(N(0,
// 1)), g = logsigmoid(N(0, 1)) / 16 (gated) and h0 ~ N(0, 1) in float32; the WY factors from
// launch_delta_wy_fwd; then the one-pass forward (DeltaChunkParams::vn = nullptr) and the two-pass forward
// (vn set), every output poisoned with NaN first. The two must agree bit for bit (o, ht, hs: the same
// products in the same order); the one-pass forward itself is checked against the float32 chunk form by
// tests/test_gpu_delta_chunk.cpp. Then both are timed (CUDA events, median of 20 after 5 warm-ups; the WY
// preparation separately) on the shapes of PERFORMANCE.md (B*T = 32768, H = 16, bf16). The backward likewise:
// random dout and dht, the one-pass kernel against the two-pass one (dq, dk, dw, du, dh0 bit for bit; dG,
// whose float sums run in another order, to 1e-5 of its largest value), then both timed.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/common/harness/harness_util.h"
#include "kernels/delta_chunk/params.h"
#include "kernels/delta_wy/params.h"

using attnlab::kernels::DeltaChunkParams;
using attnlab::kernels::DeltaWyParams;
using attnlab::kernels::LinearDtype;

namespace {

using attnlab::harness::Buf;
using attnlab::harness::median_ms;
using attnlab::harness::to_bf16;

struct Case {
  const char* name;
  int B, T, H, D;
  bool gated, h0;
};

struct Inputs {
  Buf q, k, v, w, u, o1, o2, vn, hs1, hs2, beta, g, G, h0, ht1, ht2;
  // backward: dout, dht in; per form dq, dk, dw, du, dG, dh0 out; the two-pass workspaces
  Buf dout, dht, dq1, dk1, dw1, du1, dG1, dh01, dq2, dk2, dw2, du2, dG2, dh02, dhs;
  Inputs(const Case& c, size_t nt)
      : q(size_t(c.B) * c.T * c.H * c.D * 2),
        k(q.bytes),
        v(q.bytes),
        w(q.bytes),
        u(q.bytes),
        o1(q.bytes),
        o2(q.bytes),
        vn(q.bytes),
        hs1(size_t(c.B) * c.H * nt * c.D * c.D * 2),
        hs2(hs1.bytes),
        beta(size_t(c.B) * c.T * c.H * 4),
        g(beta.bytes),
        G(beta.bytes),
        h0(size_t(c.B) * c.H * c.D * c.D * 4),
        ht1(h0.bytes),
        ht2(h0.bytes),
        dout(q.bytes),
        dht(h0.bytes),
        dq1(q.bytes),
        dk1(q.bytes),
        dw1(q.bytes),
        du1(q.bytes),
        dG1(beta.bytes),
        dh01(h0.bytes),
        dq2(q.bytes),
        dk2(q.bytes),
        dw2(q.bytes),
        du2(q.bytes),
        dG2(beta.bytes),
        dh02(h0.bytes),
        dhs(hs1.bytes) {}
};

void upload_random(const Case& c, Inputs& in, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  const size_t rows = size_t(c.B) * c.T * c.H, n = rows * c.D;
  std::vector<uint16_t> h(n);
  std::vector<float> row(c.D);
  for (Buf* b : {&in.q, &in.k, &in.v}) {
    const bool normed = b != &in.v;
    for (size_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int d = 0; d < c.D; ++d) ss += double(row[d] = nd(rng)) * row[d];
      const float s = normed ? float(1.0 / std::sqrt(ss + 1e-12)) : 1.f;
      for (int d = 0; d < c.D; ++d) h[r * c.D + d] = to_bf16(row[d] * s);
    }
    CK(cudaMemcpy(b->p, h.data(), n * 2, cudaMemcpyHostToDevice));
  }
  std::vector<float> f(rows);
  for (auto& x : f) x = 1.f / (1.f + std::exp(-nd(rng)));
  CK(cudaMemcpy(in.beta.p, f.data(), rows * 4, cudaMemcpyHostToDevice));
  for (auto& x : f) {
    const float z = nd(rng);
    x = (z < 0 ? z - std::log1p(std::exp(z)) : -std::log1p(std::exp(-z))) / 16.f;  // logsigmoid / 16
  }
  CK(cudaMemcpy(in.g.p, f.data(), rows * 4, cudaMemcpyHostToDevice));
  std::vector<float> s(size_t(c.B) * c.H * c.D * c.D);
  for (auto& x : s) x = nd(rng);
  CK(cudaMemcpy(in.h0.p, s.data(), s.size() * 4, cudaMemcpyHostToDevice));
  for (auto& x : s) x = nd(rng);
  CK(cudaMemcpy(in.dht.p, s.data(), s.size() * 4, cudaMemcpyHostToDevice));
  for (auto& x : h) x = to_bf16(nd(rng));
  CK(cudaMemcpy(in.dout.p, h.data(), n * 2, cudaMemcpyHostToDevice));
}

// max |a - b| / max |a| over two float32 device buffers (dG: the same sums in another order; NaN: 1e30)
double rel_max32(const Buf& a, const Buf& b, size_t elems) {
  std::vector<float> x(elems), y(elems);
  CK(cudaMemcpy(x.data(), a.p, elems * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(y.data(), b.p, elems * 4, cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (size_t i = 0; i < elems; ++i) {
    const double d = std::isnan(y[i]) ? 1e30 : std::fabs(double(y[i]) - x[i]);
    num = std::max(num, d);
    den = std::max(den, std::fabs(double(x[i])));
  }
  return den > 0 ? num / den : num;
}

// Bytes that differ between two device buffers, and whether b holds a NaN (of the poison or not) where a
// holds a number: read back and compared on the host (the cases are small enough).
struct Diff {
  size_t differing = 0, nan = 0, n = 0;
};
Diff compare16(const Buf& a, const Buf& b, size_t elems) {
  std::vector<uint16_t> x(elems), y(elems);
  CK(cudaMemcpy(x.data(), a.p, elems * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(y.data(), b.p, elems * 2, cudaMemcpyDeviceToHost));
  Diff d;
  d.n = elems;
  for (size_t i = 0; i < elems; ++i) {
    d.differing += x[i] != y[i];
    d.nan += (y[i] & 0x7F80) == 0x7F80 && (y[i] & 0x7F);
  }
  return d;
}
Diff compare32(const Buf& a, const Buf& b, size_t elems) {
  std::vector<uint32_t> x(elems), y(elems);
  CK(cudaMemcpy(x.data(), a.p, elems * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(y.data(), b.p, elems * 4, cudaMemcpyDeviceToHost));
  Diff d;
  d.n = elems;
  for (size_t i = 0; i < elems; ++i) {
    d.differing += x[i] != y[i];
    float f;
    std::memcpy(&f, &y[i], 4);
    d.nan += std::isnan(f);
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  const cudaDeviceProp prop = attnlab::harness::print_device();
  std::FILE* csv = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
  if (csv)
    std::fprintf(csv,
                 "case,B,T,H,D,gated,v_split,default_two_pass,wy_ms,one_pass_ms,two_pass_ms,bwd_one_pass_ms,"
                 "bwd_two_pass_ms,o_diff,ht_diff,bwd_diff,dg_err,pass\n");
  const std::vector<Case> cases = {
      {"check D128 gated h0 T1000", 2, 1000, 4, 128, true, true},
      {"check D128 plain T777", 1, 777, 3, 128, false, false},
      {"check D64 gated h0 T1000", 2, 1000, 4, 64, true, true},
      {"check D64 plain T65", 3, 65, 2, 64, false, true},
      {"bench D128 gated T2048", 16, 2048, 16, 128, true, false},
      {"bench D128 gated T8192", 4, 8192, 16, 128, true, false},
      {"bench D128 gated T32768", 1, 32768, 16, 128, true, false},
      {"bench D128 plain T8192", 4, 8192, 16, 128, false, false},
      {"bench D128 plain T32768", 1, 32768, 16, 128, false, false},
      {"bench D64 gated T8192", 4, 8192, 16, 64, true, false},
      {"bench D64 gated T32768", 1, 32768, 16, 64, true, false},
  };
  int failures = 0;
  uint64_t seed = 42;
  for (const Case& c : cases) {
    const size_t nt = size_t(attnlab::kernels::linear_chunk_count(c.T));
    Inputs in(c, nt);
    upload_random(c, in, seed++);
    DeltaWyParams wp;
    wp.dtype = LinearDtype::kBF16;
    wp.B = c.B, wp.T = c.T, wp.H = c.H, wp.K = wp.V = c.D;
    wp.k = in.k.p, wp.v = in.v.p, wp.beta = static_cast<float*>(in.beta.p);
    wp.g = c.gated ? static_cast<float*>(in.g.p) : nullptr;
    wp.w = in.w.p, wp.u = in.u.p, wp.G = static_cast<float*>(in.G.p);
    CK(attnlab::kernels::launch_delta_wy_fwd(wp));

    DeltaChunkParams p;
    p.dtype = LinearDtype::kBF16;
    p.B = c.B, p.T = c.T, p.H = c.H, p.K = p.V = c.D;
    p.scale = 1.f / std::sqrt(float(c.D));
    p.q = in.q.p, p.k = in.k.p, p.w = in.w.p, p.u = in.u.p;
    p.G = c.gated ? static_cast<float*>(in.G.p) : nullptr;
    p.h0 = c.h0 ? static_cast<float*>(in.h0.p) : nullptr;
    p.v_split = attnlab::kernels::delta_chunk_default_v_split(c.B, c.H, c.D, prop.multiProcessorCount);
    DeltaChunkParams p1 = p, p2 = p;
    p1.o = in.o1.p, p1.ht = static_cast<float*>(in.ht1.p), p1.hs = in.hs1.p;
    p2.o = in.o2.p, p2.ht = static_cast<float*>(in.ht2.p), p2.hs = in.hs2.p, p2.vn = in.vn.p;
    for (Buf* b : {&in.o1, &in.o2, &in.hs1, &in.hs2, &in.ht1, &in.ht2, &in.vn})
      CK(cudaMemset(b->p, 0xFF, b->bytes));
    CK(attnlab::kernels::launch_delta_chunk_fwd(p1));
    CK(attnlab::kernels::launch_delta_chunk_fwd(p2));
    CK(cudaDeviceSynchronize());
    const size_t n_o = size_t(c.B) * c.T * c.H * c.D;
    const Diff o = compare16(in.o1, in.o2, n_o), hs = compare16(in.hs1, in.hs2, in.hs1.bytes / 2),
               ht = compare32(in.ht1, in.ht2, in.ht1.bytes / 4), o1 = compare16(in.o2, in.o1, n_o);
    // backward: the one-pass kernel and the two-pass one (its walk split like the forward), outputs poisoned
    DeltaChunkParams b1 = p1, b2 = p1;
    b1.dout = b2.dout = in.dout.p;
    b1.dht = b2.dht = static_cast<float*>(in.dht.p);
    b1.dq = in.dq1.p, b1.dk = in.dk1.p, b1.dw = in.dw1.p, b1.du = in.du1.p;
    b1.dG = c.gated ? static_cast<float*>(in.dG1.p) : nullptr;
    b1.dh0 = c.h0 ? static_cast<float*>(in.dh01.p) : nullptr;
    b2.dq = in.dq2.p, b2.dk = in.dk2.p, b2.dw = in.dw2.p, b2.du = in.du2.p;
    b2.dG = c.gated ? static_cast<float*>(in.dG2.p) : nullptr;
    b2.dh0 = c.h0 ? static_cast<float*>(in.dh02.p) : nullptr;
    b2.dhs = in.dhs.p;
    for (Buf* bf : {&in.dq1, &in.dk1, &in.dw1, &in.du1, &in.dG1, &in.dh01, &in.dq2, &in.dk2, &in.dw2, &in.du2,
                    &in.dG2, &in.dh02, &in.dhs})
      CK(cudaMemset(bf->p, 0xFF, bf->bytes));
    CK(attnlab::kernels::launch_delta_chunk_bwd(b1));
    CK(attnlab::kernels::launch_delta_chunk_bwd(b2));
    CK(cudaDeviceSynchronize());
    size_t bwd_diff = 0, bwd_nan = 0;
    for (auto pr : {std::make_pair(&in.dq1, &in.dq2), std::make_pair(&in.dk1, &in.dk2),
                    std::make_pair(&in.dw1, &in.dw2), std::make_pair(&in.du1, &in.du2)}) {
      const Diff d = compare16(*pr.first, *pr.second, n_o);
      bwd_diff += d.differing, bwd_nan += d.nan;
    }
    if (c.h0) {
      const Diff d = compare32(in.dh01, in.dh02, in.dh01.bytes / 4);
      bwd_diff += d.differing, bwd_nan += d.nan;
    }
    const double dg_err = c.gated ? rel_max32(in.dG1, in.dG2, size_t(c.B) * c.T * c.H) : 0.0;
    const bool pass = o.differing == 0 && hs.differing == 0 && ht.differing == 0 && o.nan == 0 &&
                      o1.nan == 0 && bwd_diff == 0 && bwd_nan == 0 && dg_err < 1e-5;
    failures += !pass;
    double wy = 0, t1 = 0, t2 = 0, tb1 = 0, tb2 = 0;
    if (c.name[0] == 'b') {
      wy = median_ms([&] { CK(attnlab::kernels::launch_delta_wy_fwd(wp)); });
      t1 = median_ms([&] { CK(attnlab::kernels::launch_delta_chunk_fwd(p1)); });
      t2 = median_ms([&] { CK(attnlab::kernels::launch_delta_chunk_fwd(p2)); });
      tb1 = median_ms([&] { CK(attnlab::kernels::launch_delta_chunk_bwd(b1)); });
      tb2 = median_ms([&] { CK(attnlab::kernels::launch_delta_chunk_bwd(b2)); });
    }
    const bool dflt =
        attnlab::kernels::delta_chunk_default_two_pass(c.B, c.H, c.D, c.gated, prop.multiProcessorCount);
    std::printf(
        "%-26s v_split %d: o %zu/%zu differ (NaN %zu), hs %zu, ht %zu; bwd %zu differ (NaN %zu), dG %.1e  %s",
        c.name, p.v_split, o.differing, o.n, o.nan, hs.differing, ht.differing, bwd_diff, bwd_nan, dg_err,
        pass ? "PASS" : "FAIL");
    if (c.name[0] == 'b')
      std::printf(" | wy %.3f ms; fwd one-pass %.3f, two-pass %.3f ms (%.2fx)%s; bwd %.3f, %.3f ms (%.2fx)",
                  wy, t1, t2, t1 / t2, dflt ? " [default]" : "", tb1, tb2, tb1 / tb2);
    std::printf("\n");
    std::fflush(stdout);
    if (csv)
      std::fprintf(csv, "%s,%d,%d,%d,%d,%d,%d,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%zu,%zu,%zu,%.2e,%d\n", c.name, c.B,
                   c.T, c.H, c.D, int(c.gated), p.v_split, int(dflt), wy, t1, t2, tb1, tb2, o.differing,
                   ht.differing, bwd_diff, dg_err, int(pass));
  }
  if (csv) std::fclose(csv);
  std::printf("\n%d of %zu cases pass\n", int(cases.size()) - failures, cases.size());
  return failures ? 1 : 0;
}
