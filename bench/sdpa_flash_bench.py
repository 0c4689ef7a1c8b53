#!/usr/bin/env python3
"""PyTorch SDPA's flash (FlashAttention-2) and cuDNN backends on the shapes of the flash harness (issue 6's peer).

The side of kernels/flash_attn/harness/flash_attn_harness's benchmark that it cannot run itself: the same
shapes (bf16, H = 16, B*T = 32768, D = 128 and 64, causal T = 512 .. 16384 and non-causal at 4096 and 16384),
the same FLOP convention (forward 4*B*H*T^2*D, halved when causal; backward 2.5x the forward) and the same
timing (CUDA events, warm-up, median), so that one device call puts our kernels and SDPA's side by side.
`attnlab bench ops --ops softmax` is the full comparison (validated, through the binding); this one needs
only torch and runs in seconds.

    python3 bench/sdpa_flash_bench.py --out gpu-out/sdpa_flash.csv [--reps 10] [--backends flash,cudnn]

Rows: backend, D, B, T, H, causal, fwd_ms, bwd_ms, fwdbwd_ms, fwd_tflops, bwd_tflops, fwdbwd_tflops, torch, device.
"""

import argparse
import csv
import statistics
import sys

import torch
import torch.nn.attention
import torch.nn.functional as F

BACKENDS = {
    "flash": torch.nn.attention.SDPBackend.FLASH_ATTENTION,
    "cudnn": torch.nn.attention.SDPBackend.CUDNN_ATTENTION,
}


def median_ms(fn, reps):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--backends", default="flash,cudnn")
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    shapes = [(D, T, 1) for D in (128, 64) for T in (512, 1024, 2048, 4096, 8192, 16384)]
    shapes += [(D, T, 0) for D in (128, 64) for T in (4096, 16384)]
    rows = []
    print(f"{'backend':8} {'D':>4} {'T':>6} {'B':>4} {'causal':>6} | {'fwd ms':>8} {'bwd ms':>8} {'f+b ms':>8} |"
          f" {'fwd':>6} {'bwd':>6} {'f+b':>6} TFLOP/s")
    for name in args.backends.split(","):
        backend = BACKENDS[name]
        for D, T, causal in shapes:
            B, H = 32768 // T, 16
            g = torch.Generator(device="cuda").manual_seed(777)
            q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
            q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
            flops = 4.0 * B * H * T * T * D / (2 if causal else 1)
            try:
                with torch.nn.attention.sdpa_kernel(backend):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))

                    def fwd():
                        with torch.no_grad():
                            F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))

                    def bwd():
                        torch.autograd.grad(o, (q, k, v), do, retain_graph=True)

                    def fwdbwd():
                        out = F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
                        torch.autograd.grad(out, (q, k, v), do)

                    f, bw, fb = median_ms(fwd, args.reps), median_ms(bwd, args.reps), median_ms(fwdbwd, args.reps)
            except RuntimeError as e:  # a backend that refuses the shape
                print(f"{name:8} {D:4} {T:6} {B:4} {causal:6} | refused: {str(e).splitlines()[0]}", file=sys.stderr)
                continue
            tf = lambda ms, mult: mult * flops / (ms * 1e-3) / 1e12
            row = dict(backend=name, D=D, B=B, T=T, H=H, causal=causal, fwd_ms=f"{f:.4f}", bwd_ms=f"{bw:.4f}",
                       fwdbwd_ms=f"{fb:.4f}", fwd_tflops=f"{tf(f, 1):.1f}", bwd_tflops=f"{tf(bw, 2.5):.1f}",
                       fwdbwd_tflops=f"{tf(fb, 3.5):.1f}", torch=torch.__version__, device=dev)
            rows.append(row)
            print(f"{name:8} {D:4} {T:6} {B:4} {causal:6} | {f:8.3f} {bw:8.3f} {fb:8.3f} | {tf(f, 1):6.1f} "
                  f"{tf(bw, 2.5):6.1f} {tf(fb, 3.5):6.1f}", flush=True)
            del q, k, v, do, o
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()) if rows else ["backend"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
