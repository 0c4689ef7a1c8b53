#!/usr/bin/env bash
# On a GPU machine whose python3 holds torch 2.x with CUDA: builds attnlab against that libtorch for sm_90,
# runs every test (cpu and gpu labels), runs the benchmarks, and prints a short table last.
# Dependencies missing there come from .deps/ (scripts/gpu_deps.sh gathers them on a Debian machine).
# Results go to $OUT (or ./gpu-out) : gpu_env.json, ctest.log, bench_softmax.csv/.log, fla.csv/.log,
# bench_linear.csv/.log, train_cuda.log, gpu_summary.md.
# The linear part wants FLA's source tree at .peer/fla (git-ignored; carry it: carry ".peer/fla"), with the
# Triton autotune results of an earlier run in .peer/fla/triton-autotune (then only the chosen configs compile).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
JOBS=${JOBS:-$(nproc)}
BUILD=${BUILD:-build-gpu}
PREFIX=$ROOT/.deps/prefix
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
summary() { echo "$*" | tee -a "$OUT/gpu_summary.md"; }
# PARTS picks what runs after the build (all by default): tests bench linear train tasks study perf30m
PARTS=${PARTS:-"tests bench linear train tasks study perf30m"}
want() { [[ " $PARTS " == *" $1 "* ]]; }
: > "$OUT/gpu_summary.md"

step() { echo "=== $* ($(date +%T))"; }

# ---- 1. dependencies (built once into .deps/prefix)
if [ -d .deps/src ] && [ ! -f "$PREFIX/.done" ]; then
  step "building yaml-cpp and googletest into .deps/prefix"
  cmake -S .deps/src/yaml-cpp -B .deps/build-yaml -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 -DYAML_CPP_BUILD_TESTS=OFF \
    -DYAML_CPP_BUILD_TOOLS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_INSTALL_PREFIX="$PREFIX" >/dev/null &&
    cmake --build .deps/build-yaml -j "$JOBS" >/dev/null && cmake --install .deps/build-yaml >/dev/null || exit 1
  cmake -S .deps/src/googletest -B .deps/build-gtest -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" >/dev/null &&
    cmake --build .deps/build-gtest -j "$JOBS" >/dev/null && cmake --install .deps/build-gtest >/dev/null || exit 1
  mkdir -p "$PREFIX/include" && cp -r .deps/include/* "$PREFIX/include/" && touch "$PREFIX/.done"
fi

# ---- 2. build
step "configure + build ($BUILD)"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX" -DATTNLAB_WERROR=ON \
  -DATTNLAB_HEADER_ONLY_DEPS=ON -DATTNLAB_DEPS_INCLUDE="$PREFIX/include" 2>&1 | tail -n 5
if ! cmake --build "$BUILD" -j "$JOBS" -- -k 0 2>&1 | tee "$OUT/build.log" | grep -E "error|warning" | head -n 40; then :; fi
[ -x "$BUILD/attnlab" ] || { echo "build failed; see build.log"; tail -n 40 "$OUT/build.log"; exit 1; }
"$BUILD/attnlab" env --json > "$OUT/gpu_env.json"
"$BUILD/attnlab" env
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)

# ---- 3. tests (cpu and gpu labels)
perf_rc=skipped tests_rc=skipped bench_rc=skipped fla_rc=skipped linear_rc=skipped train_rc=skipped t30_rc=skipped task_rc=skipped study_rc=skipped
if want tests; then
step "tests"
(cd "$BUILD" && ctest --output-on-failure -j 8 --timeout 600) > "$OUT/ctest.log" 2>&1
tests_rc=$?
grep -E "tests passed|tests failed|\(Failed\)|\(Timeout\)" "$OUT/ctest.log" | tail -n 20
fi

# ---- 4. benchmarks: our softmax kernel against SDPA's flash and cuDNN backends (validated, then timed)
if want bench; then
step "bench ops softmax"
"$BUILD/attnlab" bench ops --ops softmax --dtype bf16 --head-dims 128,64 \
  --seq-lens 512,1024,2048,4096,8192,16384,32768 --tokens 32768 --heads 16 \
  --commit "${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" --out "$OUT/bench_softmax.csv" \
  > "$OUT/bench_softmax.log" 2>&1
bench_rc=$?
grep -E "^(op |softmax +128 )|MISMATCH|error" "$OUT/bench_softmax.log"
fi

# ---- 4b. the linear family: FLA's Triton kernels (bench/fla_bench.py) then ours (impl kernel and chunk),
# with FLA's times beside ours (ratio = FLA ms / ours). Shapes of PERFORMANCE.md; LINEAR_SEQ / LINEAR_DIMS pick
# fewer. FLA compiles its kernels in parallel processes first (seconds with .peer/fla/triton-autotune, ~5 min
# without); each side has a time limit and writes its CSV row by row.
LINEAR_SEQ=${LINEAR_SEQ:-512,1024,2048,4096,8192,16384,32768}
LINEAR_DIMS=${LINEAR_DIMS:-128,64}
if want linear; then
step "linear family: FLA's Triton kernels (bench/fla_bench.py)"
if [ -d .peer/fla/fla ]; then
  timeout "${FLA_TIMEOUT:-270}" python3 bench/fla_bench.py --fla .peer/fla --out "$OUT/fla.csv" \
    --seq-lens "$LINEAR_SEQ" --head-dims "$LINEAR_DIMS" --time-budget "${FLA_BUDGET:-240}" ${FLA_ARGS:-} \
    > "$OUT/fla.log" 2>&1
  fla_rc=$?
  grep -E "^(LIFTED|FLA's Hopper guard)|^priming done|^prime .*(killed|errors|exit)|^fla_bench:" "$OUT/fla.log"
  # New autotune results (a first run on this GPU model) come back for .peer/fla/triton-autotune.
  tar czf "$OUT/fla_triton_autotune.tgz" -C .peer/fla triton-autotune 2>/dev/null
else
  fla_rc=absent
  echo "FLA not run: .peer/fla is absent (the FLA source tree, git-ignored: carry .peer/fla)"
fi
step "linear family: ours (bench ops)"
case "$gpu_name" in *H100*) BANDWIDTH_GBS=${BANDWIDTH_GBS:-3350} ;; *) BANDWIDTH_GBS=${BANDWIDTH_GBS:-4800} ;; esac
fla_csv_arg=()
[ -s "$OUT/fla.csv" ] && fla_csv_arg=(--fla-csv "$OUT/fla.csv")
timeout "${LINEAR_TIMEOUT:-300}" "$BUILD/attnlab" bench ops \
  --ops linear_attention,simple_gla,gla,delta_rule,gated_delta_rule,gated_delta_rule_step --dtype bf16 \
  --head-dims "$LINEAR_DIMS" --seq-lens "$LINEAR_SEQ" --tokens 32768 --heads 16 --decode-batches 1,32 \
  --bandwidth-gbs "$BANDWIDTH_GBS" --chunk-repeat "${CHUNK_REPEAT:-3}" ${fla_csv_arg[@]+"${fla_csv_arg[@]}"} \
  --commit "${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" --out "$OUT/bench_linear.csv" \
  > "$OUT/bench_linear.log" 2>&1
linear_rc=$?
grep -E "^(op |[a-z_]+ +128 +8192 )|gated_delta_rule_step|MISMATCH|error" "$OUT/bench_linear.log" | head -n 40
fi

# ---- 5. benchmarks: end-to-end training on CUDA (bf16 autocast)
if want train; then
step "train quick preset on CUDA"
rm -rf runs/gpu-quick
"$BUILD/attnlab" train --config configs/quick.yaml --set train.device=cuda --set data.batch_size=64 \
  --set train.steps=300 --set train.eval_every=100 --out runs/gpu-quick > "$OUT/train_cuda.log" 2>&1
train_rc=$?
tail -n 8 "$OUT/train_cuda.log"

# ---- 5b. the 30M model of PERFORMANCE.md (vocab 5000, width 512, 8 layers, 8 heads, untied, B 16, T 2048)
step "train 30M model, B=16 T=2048"
rm -rf runs/gpu-30m
"$BUILD/attnlab" train --set model.vocab_size=5001 --set model.d_model=512 --set model.n_layers=8 \
  --set model.n_heads=8 --set model.tie_embeddings=false --set data.seq_len=2048 --set data.batch_size=16 \
  --set train.steps=40 --set train.log_every=10 --set train.eval_every=1000 --set train.eval_batches=1 \
  --set train.ckpt_every=1000 --set train.device=cuda --out runs/gpu-30m > "$OUT/train_30m.log" 2>&1
t30_rc=$?
grep -E "parameters|tok/s" "$OUT/train_30m.log" | tail -n 4
fi

# ---- 5c. the synthetic tasks and the whole study on CUDA (issue 6: everything that runs on the CPU runs here)
if want tasks; then
step "task mqar (quick preset) on CUDA"
rm -rf runs/gpu-mqar
"$BUILD/attnlab" task mqar --preset quick --mixer softmax,linear_attention,deltanet,gated_deltanet \
  --set sweep.device=cuda --out runs/gpu-mqar > "$OUT/task_mqar_cuda.log" 2>&1
task_rc=$?
grep -E "^mqar " "$OUT/task_mqar_cuda.log" | tail -n 8
cp runs/gpu-mqar/results.csv "$OUT/task_mqar_cuda.csv" 2>/dev/null
for t in copying in_context_recall noisy_recall fuzzy_recall selective_copying memorization passkey; do
  step "task $t (quick preset) on CUDA"
  rm -rf "runs/gpu-$t"
  "$BUILD/attnlab" task "$t" --preset quick --mixer softmax,linear_attention,deltanet,gated_deltanet \
    --set sweep.device=cuda --out "runs/gpu-$t" > "$OUT/task_${t}_cuda.log" 2>&1 || task_rc=$?
  cp "runs/gpu-$t/best.csv" "$OUT/task_${t}_best.csv" 2>/dev/null
done
fi
if want study; then
step "study configs/quick.yaml on CUDA"
rm -rf runs/gpu-study
"$BUILD/attnlab" study configs/quick.yaml --set study.device=cuda --set train.device=cuda \
  --set 'study.efficiency_seq_lens=[512,1024,2048,4096,8192]' --set study.efficiency_tokens=32768 \
  --set 'study.memory_seq_lens=[1024,2048,4096,8192,16384]' --out runs/gpu-study > "$OUT/study_cuda.log" 2>&1
study_rc=$?
tail -n 6 "$OUT/study_cuda.log"
mkdir -p "$OUT/study" && cp -r runs/gpu-study/results runs/gpu-study/report.html runs/gpu-study/figures "$OUT/study/" 2>/dev/null
fi
if want perf30m; then
step "study configs/perf30m.yaml on CUDA (30M model, B 16, T 2048: step time and profile)"
rm -rf runs/gpu-perf30m
"$BUILD/attnlab" study configs/perf30m.yaml --set study.device=cuda --set train.device=cuda \
  --out runs/gpu-perf30m > "$OUT/perf30m.log" 2>&1
perf_rc=$?
tail -n 6 "$OUT/perf30m.log"
mkdir -p "$OUT/perf30m" && cp -r runs/gpu-perf30m/results runs/gpu-perf30m/report.html "$OUT/perf30m/" 2>/dev/null
cp runs/gpu-perf30m/profiler/*_top_ops.csv "$OUT/perf30m/" 2>/dev/null
fi

# ---- 6. the short table
gpu=$(python3 -c 'import torch;print(torch.cuda.get_device_name(0))' 2>/dev/null)
summary "| what | result |"
summary "|---|---|"
summary "| device | $gpu |"
summary "| commit | ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)} |"
summary "| tests | $(grep -E 'tests passed' "$OUT/ctest.log" | tail -n1) (rc $tests_rc) |"
summary "| quick preset on CUDA | $(grep -E 'validation ppl' "$OUT/train_cuda.log") (rc $train_rc) |"
summary "| tokens/s (last log) | $(grep -oE '[0-9.]+[KM]? tok/s' "$OUT/train_cuda.log" | tail -n1) |"
summary "| mqar quick on CUDA (rc $task_rc) | $(awk -F, 'NR>1 {printf "%s lr %s: %.3f; ", $2, $5, $9}' "$OUT/task_mqar_cuda.csv" 2>/dev/null) |"
summary "| perf30m study on CUDA | rc $perf_rc, $(grep -c 'done in' "$OUT/perf30m.log" 2>/dev/null) stages done |"
summary "| study quick on CUDA | rc $study_rc, $(grep -c 'done in' "$OUT/study_cuda.log") stages done |"
summary "| 30M model B16 T2048 bf16 | $(grep -oE '[0-9.]+[KM]? tok/s' "$OUT/train_30m.log" | tail -n1) (rc $t30_rc) |"
# fwd / fwd+bwd TFLOP/s of one implementation at T=8192, D=128 (CSV columns: impl 2, T 5, D 7, TFLOP/s 11, 12)
bench_row() {
  awk -F, -v impl="$1" '!/^#/ && $2 == impl && $5 == 8192 && $7 == 128 { printf "%s / %s", $11, $12 }' \
    "$OUT/bench_softmax.csv" 2>/dev/null
}
summary "| softmax bf16 causal T=8192 D=128, fwd / fwd+bwd TFLOP/s | ours $(bench_row ours); SDPA flash $(bench_row sdpa_flash); SDPA cuDNN $(bench_row sdpa_cudnn) (rc $bench_rc) |"
# The linear family at T=8192, D=128 (bench_linear.csv: op 1, impl 2, T 5, D 7, fwd_ms 9, fwdbwd_ms 10,
# ratio_fwd 13, ratio_fwdbwd 14 = FLA ms / ours, peak_mib 27, fla_fwd_ms 28, fla_fwdbwd_ms 29; notes last)
linear_row() {
  awk -F, -v op="$1" '!/^#/ && $1 == op && $2 == "kernel" && $5 == 8192 && $7 == 128 {
      if ($9 == "") printf "ours: kernel unavailable"; else printf "ours %s / %s", $9, $10
      printf "; FLA %s / %s", ($28 == "" ? "-" : $28), ($29 == "" ? "-" : $29)
      if ($13 != "") printf "; FLA/ours %s / %s", $13, $14 }' "$OUT/bench_linear.csv" 2>/dev/null
}
for op in linear_attention simple_gla gla delta_rule gated_delta_rule; do
  summary "| $op bf16 T=8192 D=128, fwd / fwd+bwd ms | $(linear_row $op) (rc fla $fla_rc, ours $linear_rc) |"
done
step_row() {  # microseconds, one token
  awk -F, -v b="$1" '!/^#/ && $1 == "gated_delta_rule_step" && $2 == "kernel" && $4 == b {
      printf "ours %s us", ($9 == "" ? "unavailable" : $9 * 1000); if ($28 != "") printf ", FLA %s us", $28 * 1000 }' \
    "$OUT/bench_linear.csv" 2>/dev/null
}
summary "| gated_delta_rule decode step H=16 K=V=128, B=1 / B=32 | $(step_row 1) / $(step_row 32) |"

# The device returns at most 8 files: everything but the summary travels in one archive.
(cd "$OUT" && tar czf ../gpu_results.tgz . && find . -mindepth 1 ! -name gpu_summary.md -delete &&
  mv ../gpu_results.tgz .)
