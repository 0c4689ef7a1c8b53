#!/usr/bin/env bash
# The linear-family part of the GPU run, in one call that fits a short device budget: builds only what it
# needs (the CLI and the gpu-labelled kernel tests) against the pip torch's libtorch for sm_90, runs the
# kernel tests, then FLA's Triton kernels (bench/fla_bench.py, when .peer/fla was carried) and ours
# (attnlab bench ops) on the shapes of PERFORMANCE.md. Under $OUT (default ./gpu-out): the CSVs and one
# logs.tgz holding every log (the device tool brings back few files). Carry .deps (scripts/gpu_deps.sh),
# .peer/fla (FLA's source, for its side of the bench) and, with PERF30M=1, data/sotu (scripts/setup.sh).
# Since the device goes back seconds after a call, one call does the build and everything after it:
#   COMMIT=<sha> PERF30M=1 bash scripts/gpu_linear.sh
# Write the sha out (from `git rev-parse --short HEAD` run here): $(git rev-parse) inside the device command runs
# there, where the git metadata can lag the copied tree (runs 2026-12-03f-h recorded f3f350c that way).
source "$(dirname "$0")/gpu_common.sh"
# WY_HARNESS=1: the torch-free delta_wy harness first (about a minute: its checks and both inverses' times),
# so that a call whose libtorch build fails still answers it.
[ "${WY_HARNESS:-0}" = 1 ] && { nvidia-smi --query-gpu=name --format=csv,noheader; wy_harness_stage; }
gpu_build_setup
DEFAULT_TESTS="test_gpu_linear_chunk test_gpu_delta_chunk test_gpu_recurrent_step"
for t in test_gpu_gla_chunk test_gpu_delta_wy test_gpu_fused; do [ -f "tests/$t.cpp" ] && DEFAULT_TESTS="$DEFAULT_TESTS $t"; done
TESTS=${TESTS:-$DEFAULT_TESTS}  # TESTS=" ": none (a second call on a warm machine that only benches)
stage 420 cmake --build "$BUILD" -j "$JOBS" --target attnlab $TESTS -- -k 0 > "$OUT/build.log" 2>&1
el "build rc $?"; grep -E "error" "$OUT/build.log" | head -n 20; build_times 8
nvidia-smi --query-gpu=name,clocks.sm,power.draw,temperature.gpu --format=csv,noheader
for t in $TESTS; do
  [ -x "$BUILD/tests/$t" ] || { echo "$t: not built"; continue; }
  stage 240 "$BUILD/tests/$t" > "$OUT/$t.log" 2>&1; el "$t rc $?"
  grep -E "^\[  (PASSED|FAILED) |Failure" "$OUT/$t.log" | head -n 20
done
# VERIFY=0 skips the next two checks (about a minute), for a call short of device time that reruns the kernel
# tests of what it changed.
if [ "${VERIFY:-1}" = 1 ]; then
  # The wgmma wrappers (kernels/common/wgmma.cuh, sm_90a) against a CPU GEMM: which layouts hold.
  (bash kernels/common/harness/build.sh && stage 60 kernels/common/harness/wgmma_check) > "$OUT/wgmma_check.log" 2>&1
  el "wgmma_check rc $?"; tail -n 1 "$OUT/wgmma_check.log"
  # The kernels against FLA's fixtures (K = 16, V = 20, zero-padded to 64: exact), bf16 as under autocast.
  for op in linear_attention simple_gla gla delta_rule gated_delta_rule; do
    stage 60 "$BUILD/attnlab" ops verify --op "$op" --file "tests/data/$op.safetensors" --impl kernel --device cuda \
      --dtype bf16 --pad-head-dims 64 > "$OUT/verify_$op.log" 2>&1
    echo "ops verify $op (kernel, bf16): rc $? $(tail -n 1 "$OUT/verify_$op.log")"
  done
fi
# FLA's Triton autotune choices measured on an H200 (committed as data): seeding them saves minutes of compiling.
SEED=bench/results/h200-2026-12-01/fla_triton_autotune.tgz
if [ -d .peer/fla ] && [ ! -d .peer/fla/triton-autotune ] && [ -f "$SEED" ]; then tar xzf "$SEED" -C .peer/fla; fi
# FLA_CSV=path: reuse FLA's times from an earlier call on the same GPU (for a call that only compares our
# own forms; results meant to be side by side run FLA in the same call, the default).
if [ -n "${FLA_CSV:-}" ]; then cp "$FLA_CSV" "$RESULTS/fla.csv"; el "fla: reused $FLA_CSV";
elif [ -d .peer/fla ] && [ -f bench/fla_bench.py ]; then
  stage 240 python3 bench/fla_bench.py --fla .peer/fla --out "$RESULTS/fla.csv" ${FLA_ARGS:-} > "$OUT/fla.log" 2>&1
  el "fla rc $?"; tail -n 4 "$OUT/fla.log"
fi
OPS=${OPS:-linear_attention,simple_gla,gla,delta_rule,gated_delta_rule,gated_delta_rule_step}
# The libtorch chunk-form rows are slow (tens of ms per call, more for the delta rule's loop over chunks) and
# were measured once (bench/results/h200-2026-12-01b): not timed unless CHUNK_REPEAT > 0 (the chunk form still
# validates every kernel row). A subset of T unless SEQS says otherwise, to stay inside one 10-minute call.
SEQS=${SEQS:-512,2048,8192,32768}
stage 300 "$BUILD/attnlab" bench ops --ops "$OPS" --dtype bf16 --head-dims 128,64 \
  --seq-lens "$SEQS" --tokens 32768 --heads 16 --chunk-repeat "${CHUNK_REPEAT:-0}" \
  $( [ -f "$RESULTS/fla.csv" ] && echo --fla-csv "$RESULTS/fla.csv" ) --out "$RESULTS/bench_linear.csv" \
  --commit "${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" > "$OUT/bench_linear.log" 2>&1
el "bench rc $?"
grep -E "^(op |linear|simple|gla|delta|gated)" "$OUT/bench_linear.log" | head -n 60
# The delta ops benched again with one setting forced: delta_variant TAG DIMS VAR=VALUE writes
# bench_delta_TAG.csv. These are the rows that pick a default form.
delta_variant() {
  local tag=$1 dims=$2 setting=$3
  stage 120 env ${setting//,/ } "$BUILD/attnlab" bench ops --ops delta_rule,gated_delta_rule --dtype bf16 \
    --head-dims "$dims" --seq-lens "$SEQS" --tokens 32768 --heads 16 --chunk-repeat 0 \
    $( [ -f "$RESULTS/fla.csv" ] && echo --fla-csv "$RESULTS/fla.csv" ) --out "$RESULTS/bench_delta_$tag.csv" \
    --commit "${COMMIT:-unknown}+$setting" > "$OUT/bench_delta_$tag.log" 2>&1
  el "bench (delta, $setting) rc $?"; grep -E "^(delta|gated)" "$OUT/bench_delta_$tag.log" | grep kernel
}
# DELTA_FORMS=1: the backward forced to each form (ATTNLAB_DELTA_BWD; delta_chunk_default_two_pass_bwd).
if [ "${DELTA_FORMS:-0}" = 1 ]; then
  for form in one_pass two_pass; do delta_variant "$form" 128,64 "ATTNLAB_DELTA_BWD=$form"; done
fi
# DELTA_FWD_FORMS=1: the forward forced to each form (ATTNLAB_DELTA_FWD; delta_chunk_default_two_pass).
if [ "${DELTA_FWD_FORMS:-0}" = 1 ]; then
  for form in one_pass two_pass; do delta_variant "fwd_$form" 128,64 "ATTNLAB_DELTA_FWD=$form"; done
fi
# DELTA_V_SPLITS="2 4": the walks' V-split forced (ATTNLAB_DELTA_V_SPLIT, 4 at D = 128 only;
# delta_chunk_default_v_split).
for vs in ${DELTA_V_SPLITS:-}; do
  delta_variant "vsplit$vs" "$([ "$vs" = 4 ] && echo 128 || echo 128,64)" "ATTNLAB_DELTA_V_SPLIT=$vs"
done
# DELTA_ENVS="VAR=VALUE ...": the delta ops at D = DELTA_ENV_DIMS (default 128) benched once per setting
# (bench_delta_<setting>.csv), e.g. ATTNLAB_DELTA_FWD_WGMMA=0 for the mma.sync walk beside the default; a
# setting of several variables joins them with commas (ATTNLAB_DELTA_FWD_WGMMA=1,ATTNLAB_DELTA_BWD=one_pass),
# and one that ends in @DIMS runs at those head dims only (ATTNLAB_DELTA_BWD_WALK_WGMMA=1@128).
for setting in ${DELTA_ENVS:-}; do
  dims=${DELTA_ENV_DIMS:-128}
  case "$setting" in *@*) dims=${setting##*@}; setting=${setting%@*} ;; esac
  delta_variant "$(echo "$setting" | sed 's/ATTNLAB_DELTA_//g' | tr 'A-Z=,' 'a-z_-')" "$dims" "$setting"
done
# linear_chunk's mma.sync forward (the default is the wgmma one on sm_90a; MMA_DIMS, default 128,64), validated
# and timed the same way, for the comparison (MMA_FWD=0 skips it).
[ "${MMA_FWD:-1}" = 1 ] && stage 120 env ATTNLAB_LINEAR_FWD=mma "$BUILD/attnlab" bench ops --ops linear_attention,simple_gla --dtype bf16 \
  --head-dims "${MMA_DIMS:-128,64}" --seq-lens "$SEQS" --tokens 32768 --heads 16 --chunk-repeat 0 \
  $( [ -f "$RESULTS/fla.csv" ] && echo --fla-csv "$RESULTS/fla.csv" ) --out "$RESULTS/bench_linear_mma.csv" \
  > "$OUT/bench_linear_mma.log" 2>&1
[ "${MMA_FWD:-1}" = 1 ] && { el "bench (mma.sync forward) rc $?"
  grep -E "^(linear|simple)" "$OUT/bench_linear_mma.log" | grep kernel | head -n 16; }
# SEG_VARIANTS="16 32": linear_chunk's split forced (ATTNLAB_LINEAR_SEG_CHUNKS) at D = SEG_DIMS (default 64) and
# T = SEG_SEQS (default 2048,8192): the rows behind the binding's default_seg_chunks.
for sc in ${SEG_VARIANTS:-}; do
  stage 90 env ATTNLAB_LINEAR_SEG_CHUNKS="$sc" "$BUILD/attnlab" bench ops --ops linear_attention,simple_gla \
    --dtype bf16 --head-dims "${SEG_DIMS:-64}" --seq-lens "${SEG_SEQS:-2048,8192}" --tokens 32768 --heads 16 \
    --chunk-repeat 0 $( [ -f "$RESULTS/fla.csv" ] && echo --fla-csv "$RESULTS/fla.csv" ) \
    --out "$RESULTS/bench_linear_seg$sc.csv" > "$OUT/bench_linear_seg$sc.log" 2>&1
  el "bench (seg_chunks $sc) rc $?"; grep -E "^(linear|simple)" "$OUT/bench_linear_seg$sc.log" | grep kernel
done
# NCU=1: per-kernel GPU time of one shape per op (T = 8192 and 32768, D = 128), from Nsight Compute with the
# clocks left alone: which kernel of each forward and backward to work on (bench/ncu_summary.py).
if [ "${NCU:-0}" = 1 ]; then
  stage 150 ncu --clock-control none --metrics gpu__time_duration.sum --csv --kernel-name-base demangled \
    -k regex:attnlab::kernels \
    "$BUILD/attnlab" bench ops --ops linear_attention,simple_gla,gla,delta_rule,gated_delta_rule --dtype bf16 \
    --head-dims 128 --seq-lens 8192,32768 --tokens 32768 --heads 16 --warmup 1 --repeat 1 --chunk-repeat 0 \
    > "$RESULTS/ncu.csv" 2> "$OUT/ncu.log"
  el "ncu rc $?"; python3 bench/ncu_summary.py "$RESULTS/ncu.csv" --top 30 | tee "$OUT/ncu_summary.txt"
fi
# NCU_SPECS="delta_rule:128:32768 ...": per-kernel times of those op:D:T shapes (ncu_times.txt), as gpu_ncu_times.sh.
if [ -n "${NCU_SPECS:-}" ]; then ncu_times_stage "$NCU_SPECS"; grep -E "^====|delta" "$RESULTS/ncu_times.txt" | head -n 40; fi
# NCU_DETAIL=op:D:T:REGEX: the sections and stall reasons of the kernels matching REGEX at that shape
# (ncu_detail.txt, ncu_stalls.csv), as gpu_ncu_detail.sh.
[ -n "${NCU_DETAIL:-}" ] && ncu_detail_stage "$NCU_DETAIL"
# PERF30M=1: also the 30M model's training step beside PyTorch eager (gpu_common.sh), in the same build.
if [ "${PERF30M:-0}" = 1 ]; then perf30m_stage; fi
