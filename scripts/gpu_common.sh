# Shared by the one-call GPU scripts (gpu_linear.sh, gpu_flash.sh); sourced, not run. Sets RESULTS (the
# device's $OUT, or ./gpu-out) and OUT (its logs/ folder, packed into logs.tgz at exit: the device tool brings
# back few files), the stage deadline, and gpu_build_setup (the header-only deps from .deps, configured against
# the pip torch's libtorch for sm_90a).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RESULTS=${OUT:-$PWD/gpu-out}; mkdir -p "$RESULTS"
OUT=$RESULTS/logs; mkdir -p "$OUT"
pack() { tar czf "$RESULTS/logs.tgz" -C "$RESULTS" logs && rm -rf "$OUT"; }
trap pack EXIT
JOBS=${JOBS:-$(nproc)}; BUILD=${BUILD:-build-gpu}; P=$PWD/.deps/prefix
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
# The device kills a call at 600 s, and a killed call packs no logs: every stage gets at most what is left of
# DEADLINE (seconds from the start), and a stage that would get under 20 s is skipped and says so.
DEADLINE=${DEADLINE:-575}
budget() { local left=$(( DEADLINE - ($(date +%s) - T0) )); [ "$left" -lt "$1" ] && echo "$left" || echo "$1"; }
stage() { local t; t=$(budget "$1"); shift
  if [ "$t" -lt 20 ]; then echo "skipped (deadline): $*" >&2; return 124; fi; timeout "$t" "$@"; }
gpu_build_setup() {
  if [ ! -f "$P/.done" ]; then
    (cmake -S .deps/src/yaml-cpp -B .deps/by -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
       -DYAML_CPP_BUILD_TESTS=OFF -DYAML_CPP_BUILD_TOOLS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_INSTALL_PREFIX="$P" &&
     cmake --build .deps/by -j "$JOBS" && cmake --install .deps/by &&
     cmake -S .deps/src/googletest -B .deps/bg -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
       -DCMAKE_INSTALL_PREFIX="$P" && cmake --build .deps/bg -j "$JOBS" && cmake --install .deps/bg &&
     mkdir -p "$P/include" && cp -r .deps/include/* "$P/include/" && touch "$P/.done") > "$OUT/deps.log" 2>&1 ||
      { tail -n 20 "$OUT/deps.log"; exit 1; }
  fi
  el deps
  # sm_90a (wgmma paths; H100 / H200 only), or plain sm_90 where this cmake does not take "90a".
  configure() {
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$1" \
      -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)');$P" \
      -DATTNLAB_HEADER_ONLY_DEPS=ON -DATTNLAB_DEPS_INCLUDE="$P/include" > "$OUT/configure.log" 2>&1
  }
  configure "${CUDA_ARCH:-90a}" || { rm -rf "$BUILD"; configure 90; } || { tail -n 30 "$OUT/configure.log"; exit 1; }
  el "configured for $(grep -m1 -o 'CMAKE_CUDA_ARCHITECTURES:STRING=.*' "$BUILD/CMakeCache.txt")"
}
# The 30M model's training step on CUDA (configs/perf30m.yaml: step time, tokens/s, peak memory and the
# profile, softmax against Gated DeltaNet; issue 6) with "$BUILD/attnlab", then PyTorch eager's step of the same
# model on this GPU (bench/torch_train_baseline.py: vocabulary 5000, fused AdamW). Needs data/sotu carried.
perf30m_stage() {
  rm -rf runs/gpu-perf30m
  stage "${PERF30M_TIMEOUT:-200}" "$BUILD/attnlab" study configs/perf30m.yaml --set study.device=cuda \
    --set train.device=cuda --out runs/gpu-perf30m > "$OUT/perf30m.log" 2>&1
  el "perf30m rc $?"; tail -n 6 "$OUT/perf30m.log"
  mkdir -p "$OUT/perf30m" && cp -r runs/gpu-perf30m/results "$OUT/perf30m/" 2>/dev/null
  # The same models with the libtorch short conv and the one-pass delta backward forced (the defaults
  # before 2026-12-02i), for the comparison: runs/gpu-perf30m-before.
  rm -rf runs/gpu-perf30m-before
  stage 60 env ATTNLAB_SHORT_CONV=libtorch ATTNLAB_DELTA_BWD=one_pass "$BUILD/attnlab" study configs/perf30m.yaml \
    --set study.device=cuda --set train.device=cuda --set 'study.stages=[env,efficiency]' \
    --out runs/gpu-perf30m-before > "$OUT/perf30m_before.log" 2>&1
  el "perf30m (libtorch short conv, one-pass delta backward) rc $?"
  grep -E "efficiency .*tok/s" "$OUT/perf30m_before.log"
  stage 90 python3 bench/torch_train_baseline.py --out "$RESULTS/torch_train.csv" > "$OUT/torch_train.log" 2>&1
  el "torch eager baseline rc $?"; tail -n 1 "$OUT/torch_train.log"
  cp runs/gpu-perf30m/profiler/*_top_ops.csv "$OUT/perf30m/" 2>/dev/null
}
# The CLI alone (the profiling scripts need nothing else), then the GPU's name, clocks, power, temperature.
gpu_build_cli() {
  gpu_build_setup
  stage 400 cmake --build "$BUILD" -j "$JOBS" --target attnlab > "$OUT/build.log" 2>&1
  el "build rc $?"; grep -E "error" "$OUT/build.log" | head -n 20; build_times 5
  nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
}
# The build's slowest steps from ninja's log (start and end ms per output): where a call's build time goes
# (about 155 s of run h100-2026-12-07a's call), and the log itself under $OUT.
build_times() {
  [ -f "$BUILD/.ninja_log" ] || return 0
  cp "$BUILD/.ninja_log" "$OUT/ninja_log.txt"
  awk -F'\t' 'NR > 1 { printf "%7.1f s  %s\n", ($2 - $1) / 1000, $4 }' "$BUILD/.ninja_log" | sort -rn | head -n "${1:-8}"
}
# The delta_wy harness (kernels/delta_wy/harness, no torch: built in about 30 s): the WY kernels against a
# float64 host reference and both ways of the inverse's products timed side by side (delta_wy_harness.csv).
wy_harness_stage() {
  (ARCH=-arch=sm_90a bash kernels/delta_wy/harness/build.sh && stage 120 kernels/delta_wy/harness/delta_wy_harness \
     "$RESULTS/delta_wy_harness.csv") > "$OUT/delta_wy_harness.log" 2>&1
  el "delta_wy harness rc $?"; grep -E "PASS|FAIL|runs pass|device" "$OUT/delta_wy_harness.log"
}
# Per-kernel GPU time (Nsight Compute's gpu__time_duration, clocks left alone) of each op:D:T[:VAR=VALUE,...] in
# $1 (the settings, if any, in the environment of that run), summed per kernel by bench/ncu_summary.py into
# $RESULTS/ncu_times.txt (gpu_ncu_times.sh; gpu_linear.sh with NCU_SPECS).
ncu_times_stage() {
  : > "$RESULTS/ncu_times.txt"
  for spec in $1; do
    IFS=: read -r op d t envs <<< "$spec"
    csv="$OUT/ncu_${op}_${d}_${t}$( [ -n "$envs" ] && echo "_$(echo "$envs" | tr -c 'A-Za-z0-9_\n' '_')" ).csv"
    # ncu runs one kernel at a time, so the streamed forms (a consumer spinning on a producer launched beside
    # it) cannot run under it: the plain forms are what it times.
    stage 120 env ATTNLAB_DELTA_STREAM=0 ATTNLAB_DELTA_BWD_STREAM=0 ${envs//,/ } \
      ncu --clock-control none --metrics gpu__time_duration.sum --csv --kernel-name-base demangled \
      -k "regex:${NCU_REGEX:-attnlab::kernels}" "$BUILD/attnlab" bench ops --ops "$op" --dtype bf16 --head-dims "$d" \
      --seq-lens "$t" --tokens 32768 --heads 16 --warmup 1 --repeat 1 --chunk-repeat 0 > "$csv" 2> "${csv%.csv}.log"
    el "ncu $spec rc $?"
    { echo "==== $spec (B * T = 32768, H = 16, bf16)"; python3 bench/ncu_summary.py "$csv" --top 20; } >> "$RESULTS/ncu_times.txt"
  done
}
# Where one kernel's time goes (gpu_ncu_detail.sh; gpu_linear.sh with NCU_DETAIL=op:D:T): Nsight Compute's
# speed-of-light, occupancy, warp-state (every stall reason's cycles per issued instruction) and source-counter
# sections for the launches matching REGEX (or NCU_REGEX) at shape $1 (op:D:T[:REGEX]), clocks left alone: ncu_detail.txt,
# ncu_stalls.csv and, with NCU_SASS=1, ncu_sass.csv (per SASS instruction: stall samples) under $RESULTS.
ncu_detail_stage() {
  IFS=: read -r op d t rx <<< "$1"
  stage "${NCU_TIMEOUT:-150}" ncu --clock-control none --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    --section SourceCounters --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
    --kernel-name-base demangled -k "regex:${rx:-${NCU_REGEX:-delta_bwd}}" --launch-skip "${NCU_SKIP:-1}" \
    --launch-count "${NCU_COUNT:-1}" -f -o "$OUT/ncu_detail" "$BUILD/attnlab" bench ops --ops "$op" --dtype bf16 \
    --head-dims "$d" --seq-lens "$t" --tokens 32768 --heads 16 --warmup 1 --repeat 1 --chunk-repeat 0 \
    > "$OUT/ncu_detail.log" 2>&1
  el "ncu detail $1 rc $?"
  ncu -i "$OUT/ncu_detail.ncu-rep" --print-details all > "$RESULTS/ncu_detail.txt" 2>> "$OUT/ncu_detail.log"
  ncu -i "$OUT/ncu_detail.ncu-rep" --page raw --csv --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
    > "$RESULTS/ncu_stalls.csv" 2>> "$OUT/ncu_detail.log"
  if [ "${NCU_SASS:-0}" = 1 ]; then
    ncu -i "$OUT/ncu_detail.ncu-rep" --page source --print-source sass --csv > "$RESULTS/ncu_sass.csv" 2>> "$OUT/ncu_detail.log"
    el "sass page rc $? ($(wc -c < "$RESULTS/ncu_sass.csv") bytes)"
  fi
  rm -f "$OUT/ncu_detail.ncu-rep"
  python3 - "$RESULTS/ncu_stalls.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
if len(rows) < 3: sys.exit(print("no stall metrics"))
head, units, data = rows[0], rows[1], rows[2:]
name = head.index("Kernel Name") if "Kernel Name" in head else None
for r in data:
    pairs = [(float(v.replace(",", "")), h.replace("smsp__average_warps_issue_stalled_", "").replace("_per_issue_active.ratio", ""))
             for h, v in zip(head, r) if h.startswith("smsp__average_warps_issue_stalled_") and v.replace(",", "").replace(".", "").isdigit()]
    pairs.sort(reverse=True)
    print((r[name][:60] if name is not None else "?"), " ".join(f"{n} {v:.2f}" for v, n in pairs[:8]))
PY
}
