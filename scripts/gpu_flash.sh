#!/usr/bin/env bash
# The flash-attention part of the GPU run (issue 6), in one device call: the standalone harness
# (kernels/flash_attn/harness, no torch: built in seconds for sm_90a) checks every case against its float32
# reference and times the kernels, once with the wgmma backward (--bwd-wgmma) and once with the mma.sync one;
# bench/sdpa_flash_bench.py times PyTorch SDPA's flash (FA2) and cuDNN backends on the same shapes. With
# FULL=1 it then builds the CLI and test_gpu_flash against the pip torch's libtorch (carry .deps), runs the
# test and `attnlab bench ops --ops softmax` (validated, through the binding). Prints a table last; CSVs and
# logs.tgz under $OUT (default ./gpu-out). HARNESS=0 skips the harness and SDPA part; FULL=1 PERF30M=1 adds the
# 30M model's training step beside PyTorch eager's (gpu_common.sh's perf30m_stage; carry data/sotu).
#   COMMIT=$(git rev-parse --short HEAD) bash scripts/gpu_flash.sh
source "$(dirname "$0")/gpu_common.sh"
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
H=kernels/flash_attn/harness
if [ "${HARNESS:-1}" = 1 ]; then
  ARCH=-arch=sm_90a bash "$H/build.sh" > "$OUT/harness_build.log" 2>&1
  el "harness build rc $?"; tail -n 3 "$OUT/harness_build.log"
  for mode in wgmma mma; do
    flag=$([ "$mode" = wgmma ] && echo --bwd-wgmma)
    stage 200 "$H/flash_attn_harness" --quick $flag "$RESULTS/flash_$mode.csv" > "$OUT/harness_$mode.log" 2>&1
    el "harness ($mode backward) rc $?"; grep -E "FAIL|passed" "$OUT/harness_$mode.log" | head -n 12
  done
  stage 150 python3 bench/sdpa_flash_bench.py --out "$RESULTS/sdpa_flash.csv" > "$OUT/sdpa_flash.log" 2>&1
  el "sdpa rc $?"
fi
if [ "${FULL:-0}" = 1 ]; then
  gpu_build_setup
  stage 400 cmake --build "$BUILD" -j "$JOBS" --target attnlab test_gpu_flash -- -k 0 > "$OUT/build.log" 2>&1
  el "build rc $?"; grep -E "error" "$OUT/build.log" | head -n 20; build_times 8
  stage 120 "$BUILD/tests/test_gpu_flash" > "$OUT/test_gpu_flash.log" 2>&1
  el "test_gpu_flash rc $?"; grep -E "^\[  (PASSED|FAILED) |Failure" "$OUT/test_gpu_flash.log" | head -n 20
  stage 150 "$BUILD/attnlab" bench ops --ops softmax --dtype bf16 --head-dims 128,64 \
    --seq-lens 512,1024,2048,4096,8192,16384,32768 --tokens 32768 --heads 16 --out "$RESULTS/bench_softmax.csv" \
    --commit "${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" > "$OUT/bench_softmax.log" 2>&1
  el "bench ops softmax rc $?"; grep -E "^(op |softmax +128 )|MISMATCH|error" "$OUT/bench_softmax.log" | head -n 30
  if [ "${PERF30M:-0}" = 1 ]; then perf30m_stage; fi  # carry data/sotu
fi
# Table: causal bf16 TFLOP/s (forward / backward / forward+backward) of ours (wgmma and mma.sync backward) and
# SDPA's backends, by head dim and T.
python3 - "$RESULTS" <<'EOF'
import csv, os, sys
r = sys.argv[1]
def load(name, key):
    path = os.path.join(r, name)
    if not os.path.exists(path):
        return {}
    out = {}
    for row in csv.DictReader(l for l in open(path) if not l.startswith("#")):
        if row.get("kind", "bench") == "bench" and row["causal"] == "1":
            out[(key(row), int(row["D"]), int(row["T"]))] = row
    return out
rows = {}
rows.update(load("flash_wgmma.csv", lambda x: "ours wgmma-bwd"))
rows.update(load("flash_mma.csv", lambda x: "ours mma-bwd"))
rows.update(load("sdpa_flash.csv", lambda x: "sdpa " + x["backend"]))
impls = ["ours wgmma-bwd", "ours mma-bwd", "sdpa flash", "sdpa cudnn"]
print("causal bf16, H 16, B*T 32768: fwd / bwd / f+b TFLOP/s")
print(f"{'D':>4} {'T':>6} " + " ".join(f"{i:>22}" for i in impls))
for D in (128, 64):
    for T in (512, 1024, 2048, 4096, 8192, 16384):
        cells = []
        for i in impls:
            x = rows.get((i, D, T))
            cells.append(f"{x['fwd_tflops']:>6}/{x['bwd_tflops']:>6}/{x['fwdbwd_tflops']:>6}" if x else f"{'-':>22}")
        print(f"{D:4} {T:6} " + " ".join(f"{c:>22}" for c in cells))
EOF
