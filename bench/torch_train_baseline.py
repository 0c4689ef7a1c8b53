#!/usr/bin/env python3
"""PyTorch eager's training step of PERFORMANCE.md's 30M model, on the GPU that runs ours (issue 6).

The peer side of `attnlab study configs/perf30m.yaml` (its efficiency stage): the same architecture as
attnlab's language model with the softmax mixer (src/attnlab/model/lm.cpp, mixers/softmax.cpp): token
embedding, pre-norm blocks of RMSNorm (float32, eps 1e-6) -> q/k/v projections without bias -> rotary
embedding (rotate half, theta 10000) -> causal SDPA -> output projection, RMSNorm -> SwiGLU (hidden
ratio 8/3 rounded up to 16), final RMSNorm, untied head; cross-entropy on random tokens, bf16 autocast,
AdamW (fused=True, as PERFORMANCE.md's baseline). Timed with CUDA events: warm-up steps, then the median.

    python3 bench/torch_train_baseline.py --out gpu-out/torch_train.csv
    python3 bench/torch_train_baseline.py --vocab 5000 --batch 16 --seq-len 2048 --sdpa flash

Rows: model, vocab, d_model, layers, heads, B, T, parameters, step_ms, tokens_per_s, peak_mib, sdpa, torch,
device, note. Only torch is needed.
"""

import argparse
import csv
import math
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.attention  # sdpa_kernel, SDPBackend (torch >= 2.3)
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def rope(x, theta):  # x [B, T, H, D]
    D, T = x.shape[-1], x.shape[1]
    inv_freq = theta ** (-torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)
    angles = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos = torch.cat([angles.cos(), angles.cos()], -1)[None, :, None, :]
    sin = torch.cat([angles.sin(), angles.sin()], -1)[None, :, None, :]
    xf = x.float()
    x1, x2 = xf[..., : D // 2], xf[..., D // 2 :]
    return (xf * cos + torch.cat([-x2, x1], -1) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, d, heads, theta):
        super().__init__()
        self.h, self.theta = heads, theta
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x):
        B, T, d = x.shape
        q = rope(self.wq(x).view(B, T, self.h, -1), self.theta)
        k = rope(self.wk(x).view(B, T, self.h, -1), self.theta)
        v = self.wv(x).view(B, T, self.h, -1)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(B, T, d))


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.w1, self.w3 = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, d, heads, hidden, theta):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(d), RMSNorm(d)
        self.attn, self.mlp = Attention(d, heads, theta), SwiGLU(d, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LM(nn.Module):
    def __init__(self, vocab, d, layers, heads, mlp_ratio=8.0 / 3.0, theta=10000.0):
        super().__init__()
        hidden = (math.ceil(mlp_ratio * d - 1e-6) + 15) // 16 * 16  # attnlab's swiglu_hidden
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, hidden, theta) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=5000)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--sdpa", choices=["default", "flash", "cudnn"], default="default",
                    help="restrict SDPA to one backend (default: PyTorch's own choice)")
    ap.add_argument("--out", default="", help="CSV file to write (one row)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_train_baseline: needs a CUDA device, found none")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = LM(a.vocab, a.d_model, a.layers, a.heads).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    tokens = torch.randint(a.vocab, (a.batch, a.seq_len + 1), device=dev)
    x, y = tokens[:, :-1], tokens[:, 1:]

    backends = {
        "flash": [torch.nn.attention.SDPBackend.FLASH_ATTENTION],
        "cudnn": [torch.nn.attention.SDPBackend.CUDNN_ATTENTION],
    }

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
            loss = F.cross_entropy(logits.float().view(-1, a.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed_steps():
        for _ in range(a.warmup):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(a.repeat):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            step()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        return statistics.median(times)

    note = ""
    try:
        if a.sdpa == "default":
            ms = timed_steps()
        else:
            with torch.nn.attention.sdpa_kernel(backends[a.sdpa]):
                ms = timed_steps()
    except RuntimeError as err:  # an OOM or a refused backend: a row that says so
        ms, note = float("nan"), str(err).splitlines()[0][:200]
    row = {
        "model": "softmax_30m" if (a.d_model, a.layers, a.heads) == (512, 8, 8) else "softmax",
        "vocab": a.vocab, "d_model": a.d_model, "layers": a.layers, "heads": a.heads, "B": a.batch,
        "T": a.seq_len, "parameters": params, "step_ms": f"{ms:.3f}",
        "tokens_per_s": f"{a.batch * a.seq_len / (ms / 1e3):.0f}" if ms == ms else "",
        "peak_mib": f"{torch.cuda.max_memory_allocated() / 2**20:.1f}", "sdpa": a.sdpa,
        "torch": torch.__version__, "device": torch.cuda.get_device_name(), "note": note,
    }
    print(", ".join(f"{k} {v}" for k, v in row.items()))
    if a.out:
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerow(row)


if __name__ == "__main__":
    main()
