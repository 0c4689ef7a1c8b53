#!/usr/bin/env bash
# On a GPU machine whose python3 holds torch 2.x with CUDA: builds attnlab against that libtorch for sm_90,
# runs every test (cpu and gpu labels), runs the benchmarks, and prints a short table last.
# Dependencies missing there come from .deps/ (scripts/gpu_deps.sh gathers them on a Debian machine).
# Results go to $OUT (or ./gpu-out) : gpu_env.json, ctest.log, bench_softmax.csv/.log, train_cuda.log,
# gpu_summary.md.
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
# PARTS picks what runs after the build (all by default): tests bench train tasks study
PARTS=${PARTS:-"tests bench train tasks study"}
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

# ---- 3. tests (cpu and gpu labels)
tests_rc=skipped bench_rc=skipped train_rc=skipped t30_rc=skipped task_rc=skipped study_rc=skipped
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
summary "| study quick on CUDA | rc $study_rc, $(grep -c 'done in' "$OUT/study_cuda.log") stages done |"
summary "| 30M model B16 T2048 bf16 | $(grep -oE '[0-9.]+[KM]? tok/s' "$OUT/train_30m.log" | tail -n1) (rc $t30_rc) |"
# fwd / fwd+bwd TFLOP/s of one implementation at T=8192, D=128 (CSV columns: impl 2, T 5, D 7, TFLOP/s 11, 12)
bench_row() {
  awk -F, -v impl="$1" '!/^#/ && $2 == impl && $5 == 8192 && $7 == 128 { printf "%s / %s", $11, $12 }' \
    "$OUT/bench_softmax.csv" 2>/dev/null
}
summary "| softmax bf16 causal T=8192 D=128, fwd / fwd+bwd TFLOP/s | ours $(bench_row ours); SDPA flash $(bench_row sdpa_flash); SDPA cuDNN $(bench_row sdpa_cudnn) (rc $bench_rc) |"

# The device returns at most 8 files: everything but the summary travels in one archive.
(cd "$OUT" && tar czf ../gpu_results.tgz . && find . -mindepth 1 ! -name gpu_summary.md -delete &&
  mv ../gpu_results.tgz .)
