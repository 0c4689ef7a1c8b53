#!/usr/bin/env python3
"""FLA's Triton kernels of the linear family, timed on the shapes of ../shared/PERFORMANCE.md.

The peer side of `attnlab bench ops --ops linear_attention,simple_gla,gla,delta_rule,gated_delta_rule,
gated_delta_rule_step --fla-csv FILE`: the same ops, shapes and input distributions, timed with
triton.testing.do_bench (medians). FLA is imported from a source tree (--fla PATH, the folder that holds the
`fla` package; no pip install needed), so it runs with torch, triton, einops and packaging only.

    python3 bench/fla_bench.py --fla .peer/fla --out gpu-out/fla.csv
    python3 bench/fla_bench.py --fla .peer/fla --ops gla --seq-lens 8192 --head-dims 128

Rows: op (our op names), impl = fla, B, T, H, D, dtype, fwd_ms, fwdbwd_ms, peak_mib, note. A failure (an
exception, an OOM, the time budget) becomes a row with a note; the sweep goes on.

FLA refuses its gated backward (chunk_bwd_dqkwg with g) on Hopper with Triton < 3.7.1 (FLA issue #640:
wrong gradients). This script lifts that guard for timing only (in FLA's module namespace, not in its
files), so FLA's fwd+bwd times on such a machine are speed only, not a statement about FLA's gradients.
"""

import argparse
import csv
import gc
import math
import os
import sys
import time

OPS = ["linear_attention", "simple_gla", "gla", "delta_rule", "gated_delta_rule", "gated_delta_rule_step"]
FLA_FUNCTIONS = {
    "linear_attention": "fla.ops.linear_attn.chunk_linear_attn(normalize=False)",
    "simple_gla": "fla.ops.simple_gla.chunk_simple_gla",
    "gla": "fla.ops.gla.chunk_gla",
    "delta_rule": "fla.ops.delta_rule.chunk_delta_rule",
    "gated_delta_rule": "fla.ops.gated_delta_rule.chunk_gated_delta_rule",
    "gated_delta_rule_step": "fla.ops.gated_delta_rule.fused_recurrent_gated_delta_rule (T=1, state in/out)",
}
COLUMNS = ["op", "impl", "B", "T", "H", "D", "dtype", "fwd_ms", "fwdbwd_ms", "peak_mib", "note"]


def int_list(s):
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fla", default=".peer/fla",
                   help="folder holding FLA's `fla` package (a source tree; default .peer/fla)")
    p.add_argument("--out", default="", help="CSV file to write (default: only the table)")
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated, of: " + ",".join(OPS))
    p.add_argument("--seq-lens", default="512,1024,2048,4096,8192,16384,32768", type=int_list,
                   help="sequence lengths T, each dividing --tokens")
    p.add_argument("--head-dims", default="128,64", type=int_list, help="head dims D (K = V = D)")
    p.add_argument("--tokens", default=32768, type=int, help="B * T of every shape (B = tokens / T)")
    p.add_argument("--heads", default=16, type=int, help="heads H")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--decode-batches", default="1,32", type=int_list,
                   help="batch sizes of the one-token decode step (gated_delta_rule_step; H = --heads, D = 128)")
    p.add_argument("--decode-dim", default=128, type=int, help="K = V of the decode step")
    p.add_argument("--warmup", default=25, type=int, help="do_bench warm-up, milliseconds")
    p.add_argument("--rep", default=100, type=int, help="do_bench repetition time, milliseconds")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--time-budget", default=200.0, type=float,
                   help="seconds for the whole sweep (priming gets at most 60%% of it); rows past it are written as "
                        "skipped (0: no limit)")
    p.add_argument("--tilelang", action="store_true",
                   help="let FLA pick its TileLang backend where installed (default: FLA_TILELANG=0, Triton only)")
    p.add_argument("--jobs", default=10, type=int,
                   help="compile (and autotune) FLA's kernels first in this many processes at once, one per op and "
                        "head dim, then time in this one (0: compile while timing)")
    p.add_argument("--autotune-cache", default=None,
                   help="folder of Triton autotune results (*.autotune.json) from an earlier run on this GPU model: "
                        "copied into the Triton cache first (then only the chosen configs compile), and this run's "
                        "added after (default: FLA_PATH/triton-autotune; 'none' for neither)")
    p.add_argument("--prime-one", default="", help=argparse.SUPPRESS)  # internal: OP:D, one priming worker
    p.add_argument("--keep-guard", action="store_true",
                   help="do not lift FLA's Hopper/Triton<3.7.1 guard on the gated backward (issue #640)")
    a = p.parse_args(argv)
    if a.autotune_cache is None:
        a.autotune_cache = os.path.join(a.fla, "triton-autotune")
    if a.autotune_cache == "none":
        a.autotune_cache = ""
    a.ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    for o in a.ops:
        if o not in OPS:
            p.error(f"unknown op '{o}'; known: {','.join(OPS)}")
    for t in a.seq_lens:
        if t <= 0 or a.tokens % t:
            p.error(f"every sequence length must divide --tokens {a.tokens}, got {t}")
    return a


def import_fla(path, tilelang):
    """Imports FLA's ops from a source tree without running fla/__init__.py's import of fla.layers and
    fla.models (they pull transformers in; the ops need only torch, triton, einops, packaging)."""
    root = os.path.abspath(path)
    pkg = os.path.join(root, "fla")
    if not os.path.isfile(os.path.join(pkg, "ops", "__init__.py")):
        sys.exit(f"fla_bench: no FLA source tree at {root} (expected {pkg}/ops/__init__.py); pass --fla PATH")
    if not tilelang:
        os.environ.setdefault("FLA_TILELANG", "0")
    sys.path.insert(0, root)
    import types
    if "fla" not in sys.modules:
        m = types.ModuleType("fla")
        m.__path__ = [pkg]
        m.__file__ = os.path.join(pkg, "__init__.py")
        with open(m.__file__) as f:
            for line in f:
                if line.startswith("__version__"):
                    m.__version__ = line.split("=", 1)[1].strip().strip("\"'")
        sys.modules["fla"] = m
    import importlib
    mods = {}
    for name in ["linear_attn", "simple_gla", "gla", "delta_rule", "gated_delta_rule"]:
        mods[name] = importlib.import_module("fla.ops." + name)
    return sys.modules["fla"], mods


def lift_hopper_guard(keep):
    """FLA's fla/ops/common/chunk_o.py: chunk_bwd_dqkwg raises when g is not None and IS_NVIDIA_HOPPER and
    TRITON_ABOVE_3_4_0 and not TRITON_ABOVE_3_7_1 (issue #640). The check reads the module's globals at call
    time, so setting chunk_o.TRITON_ABOVE_3_7_1 = True lifts it (nothing else in that module reads it)."""
    import fla.ops.common.chunk_o as chunk_o
    with open(chunk_o.__file__) as f:
        src = f.read()
    has_guard = "not TRITON_ABOVE_3_7_1" in src
    active = bool(has_guard and chunk_o.IS_NVIDIA_HOPPER and chunk_o.TRITON_ABOVE_3_4_0 and
                  not chunk_o.TRITON_ABOVE_3_7_1)
    if not has_guard:
        return "FLA's Hopper guard (#640) not found in fla/ops/common/chunk_o.py: nothing to lift"
    if not active:
        return ("FLA's Hopper guard (#640) is present but inactive here (not Hopper, or Triton outside "
                "[3.4.0, 3.7.1)): FLA's gated backward runs as FLA ships it")
    if keep:
        return "FLA's Hopper guard (#640) kept (--keep-guard): gated fwd+bwd rows will fail"
    chunk_o.TRITON_ABOVE_3_7_1 = True
    return ("LIFTED FLA's Hopper guard (issue #640, Triton < 3.7.1 on Hopper) in chunk_o.chunk_bwd_dqkwg for "
            "timing only: FLA's gated gradients (simple_gla, gla, gated_delta_rule) are speed only, not correct")


class Budget:
    def __init__(self, seconds):
        self.start = time.monotonic()
        self.seconds = seconds

    def spent(self):
        return time.monotonic() - self.start

    def over(self):
        return self.seconds > 0 and self.spent() > self.seconds


def make_inputs(torch, F, op, B, T, H, D, dtype, gen):
    """The distributions of FLA's tests, as `attnlab bench ops` draws them: q, k ~ N(0, 1), k unit-norm (and
    q for the delta ops), v ~ N(0, 1), log gates logsigmoid(N(0, 1)) / 16 in float32, beta = sigmoid(N(0, 1))."""
    dev = "cuda"

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen, device=dev, dtype=torch.float32).to(dt)

    q, k, v = randn(B, T, H, D), randn(B, T, H, D), randn(B, T, H, D)
    k = F.normalize(k.float(), p=2, dim=-1).to(dtype)
    if op in ("delta_rule", "gated_delta_rule", "gated_delta_rule_step"):
        q = F.normalize(q.float(), p=2, dim=-1).to(dtype)
    x = {"q": q, "k": k, "v": v}
    if op in ("simple_gla", "gated_delta_rule", "gated_delta_rule_step"):
        x["g"] = F.logsigmoid(randn(B, T, H, dt=torch.float32)) / 16
    if op == "gla":
        x["g"] = F.logsigmoid(randn(B, T, H, D, dt=torch.float32)) / 16
    if op in ("delta_rule", "gated_delta_rule", "gated_delta_rule_step"):
        x["beta"] = torch.sigmoid(randn(B, T, H, dt=torch.float32)).to(dtype)
    return x


def fla_call(mods, op, x, scale, h0=None, final=False):
    """(o, final state) of FLA's chunk function for `op`."""
    if op == "linear_attention":
        return mods["linear_attn"].chunk_linear_attn(x["q"], x["k"], x["v"], scale=scale, initial_state=h0,
                                                     output_final_state=final, normalize=False)
    if op == "simple_gla":
        return mods["simple_gla"].chunk_simple_gla(x["q"], x["k"], x["v"], g=x["g"], scale=scale,
                                                   initial_state=h0, output_final_state=final)
    if op == "gla":
        return mods["gla"].chunk_gla(x["q"], x["k"], x["v"], x["g"], scale=scale, initial_state=h0,
                                     output_final_state=final)
    if op == "delta_rule":
        return mods["delta_rule"].chunk_delta_rule(x["q"], x["k"], x["v"], x["beta"], scale=scale,
                                                   initial_state=h0, output_final_state=final)
    if op == "gated_delta_rule":
        return mods["gated_delta_rule"].chunk_gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"],
                                                               scale=scale, initial_state=h0,
                                                               output_final_state=final)
    raise ValueError(op)


def first_line(e):
    s = f"{type(e).__name__}: {e}".strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


def free_cuda(torch):
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def bench_chunk_shape(torch, F, do_bench, mods, a, op, T, D, gen):
    B, H = a.tokens // T, a.heads
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float16
    row = dict(op=op, impl="fla", B=B, T=T, H=H, D=D, dtype=a.dtype, fwd_ms="", fwdbwd_ms="", peak_mib="",
               note="")
    stage = "inputs"
    try:
        free_cuda(torch)
        base = torch.cuda.memory_allocated()
        x = make_inputs(torch, F, op, B, T, H, D, dtype, gen)
        do = torch.randn(B, T, H, D, generator=gen, device="cuda", dtype=torch.float32).to(dtype)
        scale = D ** -0.5
        stage = "forward"
        with torch.no_grad():
            o, _ = fla_call(mods, op, x, scale)
            if not torch.isfinite(o.float()).all():
                row["note"] = "nonfinite output"
            del o
            row["fwd_ms"] = do_bench(lambda: fla_call(mods, op, x, scale), warmup=a.warmup, rep=a.rep,
                                     return_mode="median")
        stage = "forward+backward"
        xg = {n: t.detach().requires_grad_(n in ("q", "k", "v", "g", "beta")) for n, t in x.items()}
        leaves = [xg[n] for n in ("q", "k", "v", "g", "beta") if n in xg]

        def fwdbwd():
            o, _ = fla_call(mods, op, xg, scale)
            torch.autograd.grad([o], leaves, [do])

        row["fwdbwd_ms"] = do_bench(fwdbwd, warmup=a.warmup, rep=a.rep, return_mode="median")
        stage = "peak memory"
        free_cuda(torch)
        torch.cuda.reset_peak_memory_stats()
        o, _ = fla_call(mods, op, xg, scale)
        grads = torch.autograd.grad([o], leaves, [do])
        torch.cuda.synchronize()
        # Everything the step allocates, its inputs (q, k, v, gates, do) included.
        row["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        del o, grads
    except torch.cuda.OutOfMemoryError as e:
        row["note"] = f"OOM in {stage}: {first_line(e)}"
    except Exception as e:  # noqa: BLE001 - a failure is a row, never the end of the sweep
        row["note"] = f"error in {stage}: {first_line(e)}"
    x = xg = leaves = do = None
    free_cuda(torch)
    return row


def bench_decode(torch, F, do_bench, mods, a, B, gen):
    D, H = a.decode_dim, a.heads
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float16
    row = dict(op="gated_delta_rule_step", impl="fla", B=B, T=1, H=H, D=D, dtype=a.dtype, fwd_ms="",
               fwdbwd_ms="", peak_mib="", note="")
    try:
        free_cuda(torch)
        x = make_inputs(torch, F, "gated_delta_rule_step", B, 1, H, D, dtype, gen)
        h0 = torch.randn(B, H, D, D, generator=gen, device="cuda", dtype=torch.float32) * 0.1
        fn = mods["gated_delta_rule"].fused_recurrent_gated_delta_rule
        with torch.no_grad():
            def step():
                return fn(x["q"], x["k"], x["v"], g=x["g"], beta=x["beta"], scale=D ** -0.5, initial_state=h0,
                          output_final_state=True)
            o, ht = step()
            if not (torch.isfinite(o.float()).all() and torch.isfinite(ht).all()):
                row["note"] = "nonfinite output"
            row["fwd_ms"] = do_bench(step, warmup=a.warmup, rep=a.rep, return_mode="median")
    except Exception as e:  # noqa: BLE001
        row["note"] = f"error: {first_line(e)}"
    free_cuda(torch)
    return row


def fmt(x, spec):
    return format(x, spec) if isinstance(x, float) and math.isfinite(x) else ("-" if x == "" else str(x))


def table(rows):
    lines = [f"{'op':<22} {'D':>4} {'T':>6} {'B':>4} {'fwd ms':>9} {'f+b ms':>9} {'peak MiB':>9}  note"]
    for r in rows:
        if r["op"] == "gated_delta_rule_step":
            fwd = "-" if r["fwd_ms"] == "" else f"{r['fwd_ms'] * 1e3:.1f}us"
        else:
            fwd = fmt(r["fwd_ms"], ".3f")
        lines.append(f"{r['op']:<22} {r['D']:>4} {r['T']:>6} {r['B']:>4} {fwd:>9} {fmt(r['fwdbwd_ms'], '.3f'):>9} "
                     f"{fmt(r['peak_mib'], '.0f'):>9}  {r['note']}")
    return "\n".join(lines)


def triton_cache_dir():
    d = os.environ.get("TRITON_CACHE_DIR")
    return d if d else os.path.join(os.path.expanduser("~"), ".triton", "cache")


def seed_autotune_cache(src):
    """Copies src/<hash>/<kernel>.autotune.json into the Triton cache (what Triton's autotuner wrote there in an
    earlier run, cache_results=True): the autotuner then reads its earlier choice and compiles only that config."""
    import shutil
    n = 0
    dst = triton_cache_dir()
    for d, _, files in os.walk(src):
        for f in files:
            if f.endswith(".autotune.json"):
                rel = os.path.relpath(os.path.join(d, f), src)
                os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
                if not os.path.exists(os.path.join(dst, rel)):
                    shutil.copyfile(os.path.join(d, f), os.path.join(dst, rel))
                    n += 1
    return n


def save_autotune_cache(dst):
    import shutil
    n = 0
    src = triton_cache_dir()
    for d, _, files in os.walk(src):
        for f in files:
            if f.endswith(".autotune.json"):
                rel = os.path.relpath(os.path.join(d, f), src)
                os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
                if not os.path.exists(os.path.join(dst, rel)):
                    shutil.copyfile(os.path.join(d, f), os.path.join(dst, rel))
                    n += 1
    return n


def install_bench_lock(torch, path):
    """Several priming processes share the GPU. Triton's autotuner times each config with
    triton.testing.do_bench; this wrapper first runs the kernel once outside the lock (the compile, CPU work,
    overlaps across processes), then times it holding an exclusive file lock, so no two processes time configs
    at once and the choices are those of an idle GPU."""
    import fcntl
    import triton.testing
    orig = triton.testing.do_bench
    stats = {"calls": 0, "locked_s": 0.0, "wait_s": 0.0}

    def locked(fn, *args, **kwargs):
        fn()
        torch.cuda.synchronize()
        t0 = time.monotonic()
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            t1 = time.monotonic()
            try:
                return orig(fn, *args, **kwargs)
            finally:
                torch.cuda.synchronize()
                stats["calls"] += 1
                stats["wait_s"] += t1 - t0
                stats["locked_s"] += time.monotonic() - t1
                fcntl.flock(f, fcntl.LOCK_UN)

    triton.testing.do_bench = locked
    return stats


def prime_one(a):
    """A priming worker: one op and head dim, every sequence length once, forward and forward+backward, so that
    Triton compiles and autotunes every kernel (results in the shared Triton cache). No timing."""
    import torch
    import torch.nn.functional as F
    op, D = a.prime_one.split(":")
    D = int(D)
    t0 = time.monotonic()
    os.makedirs(triton_cache_dir(), exist_ok=True)
    stats = install_bench_lock(torch, os.path.join(triton_cache_dir(), "attnlab-fla-bench.lock"))
    _, mods = import_fla(a.fla, a.tilelang)
    lift_hopper_guard(a.keep_guard)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(a.seed)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float16
    done, errors = 0, []
    shapes = ([(B, 1) for B in a.decode_batches] if op == "gated_delta_rule_step"
              else [(a.tokens // T, T) for T in a.seq_lens])
    for B, T in shapes:
        try:
            x = make_inputs(torch, F, op, B, T, a.heads, D, dtype, gen)
            if op == "gated_delta_rule_step":
                h0 = torch.zeros(B, a.heads, D, D, device="cuda", dtype=torch.float32)
                with torch.no_grad():
                    mods["gated_delta_rule"].fused_recurrent_gated_delta_rule(
                        x["q"], x["k"], x["v"], g=x["g"], beta=x["beta"], scale=D ** -0.5, initial_state=h0,
                        output_final_state=True)
            else:
                with torch.no_grad():
                    fla_call(mods, op, x, D ** -0.5)
                xg = {n: t.detach().requires_grad_(True) for n, t in x.items()}
                o, _ = fla_call(mods, op, xg, D ** -0.5)
                torch.autograd.grad([o], list(xg.values()), [torch.randn_like(o)])
            torch.cuda.synchronize()
            done += 1
        except Exception as e:  # noqa: BLE001 - the timing phase reports failures row by row
            errors.append(f"T={T}: {first_line(e)}")
        x = xg = o = None
        free_cuda(torch)
    print(f"prime {op} D={D}: {done}/{len(shapes)} shapes in {time.monotonic() - t0:.0f}s; autotune timings "
          f"{stats['calls']} ({stats['locked_s']:.0f}s timing, {stats['wait_s']:.0f}s waiting for the GPU)"
          + (f"; errors: {'; '.join(errors)}" if errors else ""), flush=True)
    return 0


def prime_all(a, budget):
    """Runs the priming workers, --jobs at a time, within the time budget."""
    import subprocess
    jobs = [f"{op}:{D}" for D in a.head_dims for op in a.ops if op != "gated_delta_rule_step"]
    if "gated_delta_rule_step" in a.ops:
        jobs.append(f"gated_delta_rule_step:{a.decode_dim}")
    passthrough = ["--fla", a.fla, "--seq-lens", ",".join(map(str, a.seq_lens)), "--tokens", str(a.tokens),
                   "--heads", str(a.heads), "--dtype", a.dtype, "--seed", str(a.seed),
                   "--decode-batches", ",".join(map(str, a.decode_batches))]
    if a.tilelang:
        passthrough.append("--tilelang")
    if a.keep_guard:
        passthrough.append("--keep-guard")
    print(f"priming: compiling and autotuning FLA's kernels in {min(a.jobs, len(jobs))} processes "
          f"({len(jobs)} jobs: one per op and head dim)", flush=True)
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < a.jobs:
            job = pending.pop(0)
            cmd = [sys.executable, os.path.abspath(__file__), "--prime-one", job] + passthrough
            running.append((job, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        time.sleep(0.5)
        for job, proc in list(running):
            if proc.poll() is not None:
                out = proc.stdout.read()
                lines = [ln for ln in out.splitlines() if ln.startswith("prime ")]
                print(lines[-1] if lines else f"prime {job}: exit {proc.returncode}: {out.strip()[-500:]}", flush=True)
                running.remove((job, proc))
            elif budget.seconds > 0 and budget.spent() > 0.6 * budget.seconds:
                proc.kill()
                proc.wait()
                print(f"prime {job}: killed, 60% of the time budget {a.time_budget:.0f}s spent", flush=True)
                running.remove((job, proc))
    print(f"priming done in {budget.spent():.0f}s", flush=True)


def write_csv(path, header, rows):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        for line in header:
            f.write("# " + line.replace("\n", " ") + "\n")
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.5f}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    os.replace(tmp, path)


def main(argv=None):
    a = parse_args(argv)
    budget = Budget(a.time_budget)
    os.environ.setdefault("FLA_CACHE_RESULTS", "1")  # FLA passes it to Triton's autotune(cache_results=...)
    if not a.tilelang:
        os.environ.setdefault("FLA_TILELANG", "0")
    if a.prime_one:
        return prime_one(a)
    import torch
    import torch.nn.functional as F
    import triton
    from triton.testing import do_bench
    if not torch.cuda.is_available():
        sys.exit("fla_bench: needs a CUDA GPU (torch.cuda.is_available() is false)")
    seeded = seed_autotune_cache(a.autotune_cache) if a.autotune_cache and os.path.isdir(a.autotune_cache) else 0
    if a.autotune_cache:
        os.makedirs(a.autotune_cache, exist_ok=True)
    fla, mods = import_fla(a.fla, a.tilelang)
    guard = lift_hopper_guard(a.keep_guard)
    dev = torch.cuda.get_device_properties(0)
    header = [
        "fla_bench.py: FLA's Triton kernels of the linear family (do_bench medians)",
        f"device: {dev.name} (sm_{dev.major}{dev.minor}, {dev.multi_processor_count} SMs, "
        f"{dev.total_memory / 2 ** 30:.1f} GiB)",
        f"torch {torch.__version__}, triton {triton.__version__}, fla {getattr(fla, '__version__', '?')} from "
        f"{os.path.abspath(a.fla)}",
        f"FLA_TILELANG={os.environ.get('FLA_TILELANG', '(unset)')}, FLA_CACHE_RESULTS="
        f"{os.environ.get('FLA_CACHE_RESULTS')}, Triton cache {triton_cache_dir()}"
        + (f", {seeded} autotune results seeded from {a.autotune_cache}" if a.autotune_cache else ""),
        guard,
        f"do_bench warmup {a.warmup} ms, rep {a.rep} ms, return_mode median (L2 flushed before each run)",
        f"shapes: B = {a.tokens} / T, H = {a.heads}, K = V = D, {a.dtype}, scale D^-0.5, h0 none",
        "inputs: q, k ~ N(0,1), k (and q for the delta ops) L2-normalised, v ~ N(0,1), g = logsigmoid(N(0,1))/16 "
        "float32, beta = sigmoid(N(0,1)); fwd+bwd: torch.autograd.grad(o, (q, k, v, g, beta), do)",
        "peak_mib: torch.cuda.max_memory_allocated over one fwd+bwd, the inputs (q, k, v, gates, do) included",
        "gated_delta_rule_step: one token, h0 float32 [B,H,K,V] in, final state out, no grad; fwd_ms only",
        "functions: " + "; ".join(f"{o} = {FLA_FUNCTIONS[o]}" for o in a.ops),
    ]
    for line in header:
        print(line, flush=True)
    if a.jobs > 0:
        prime_all(a, budget)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(a.seed)
    rows = []

    def add(row):
        rows.append(row)
        print(table([row]).splitlines()[1], f"[{budget.spent():.0f}s]", flush=True)
        if a.out:
            write_csv(a.out, header, rows)  # after every row: a run killed from outside still leaves its rows

    print(table([]), flush=True)
    for D in a.head_dims:
        for op in a.ops:
            if op == "gated_delta_rule_step":
                continue
            for T in a.seq_lens:
                if budget.over():
                    add(dict(op=op, impl="fla", B=a.tokens // T, T=T, H=a.heads, D=D, dtype=a.dtype, fwd_ms="",
                             fwdbwd_ms="", peak_mib="", note=f"skipped: time budget {a.time_budget:.0f}s spent"))
                    continue
                add(bench_chunk_shape(torch, F, do_bench, mods, a, op, T, D, gen))
    if "gated_delta_rule_step" in a.ops:
        for B in a.decode_batches:
            add(bench_decode(torch, F, do_bench, mods, a, B, gen))  # cheap: never skipped

    print()
    print(table(rows))
    print(f"fla_bench: {len(rows)} rows in {budget.spent():.0f}s; "
          f"{sum(1 for r in rows if r['note'] and not r['note'].startswith('nonfinite'))} with a failure note")
    if a.autotune_cache:
        print(f"fla_bench: {save_autotune_cache(a.autotune_cache)} new autotune results saved to {a.autotune_cache}")
    if a.out:
        write_csv(a.out, header, rows)
        print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
