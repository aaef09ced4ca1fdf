#!/usr/bin/env bash
# One GPU session's measurements, section by section, shaped for the lent device machine: it
# returns at most 8 files from $OUT, so everything goes to $OUT/summary.txt (also printed) and
# $OUT/logs.tgz; one command may run 600 s, so pick the sections that fit one call.
#
#   bash benchmarks/gpu_round.sh SECTION [SECTION ...]
#
# Sections (flash-attn-4 where the shipped YAMLs' `auto` should pick flash: source .flash2/setup.sh
# first, see ../shared/tools/device-prep):
#   matrix        compile {none,model,blocks} x FSDP {FULL_SHARD,SHARD_GRAD_OP,NO_SHARD} x {PURE,DEFAULT},
#                 meta init, two micro-batches a batch; loss against the uncompiled run; then
#                 triton attention with each compile mode under FULL_SHARD + PURE
#   matrix-full   the compile x FSDP GPU test's own matrix (FULL mixed precision and CPU init
#                 too; MATRIX_ATTN, default torch; MATRIX_ARGS narrows it, e.g. "--mp FULL
#                 --init cpu", compile_matrix.py's options): which combination fails, where pytest only
#                 says the test did (it failed on one H100 2026-12-06, its output lost; later
#                 that day all 36 torch and all 36 triton combinations were ok, a call each)
#   gpu-tests     every `gpu`-marked test of the five packages (GPU_TESTS_K, a pytest -k
#                 expression, picks some, e.g. "compile_trains and torch": each attention's
#                 compile x FSDP test takes about 300 s on an H100)
#   shipped       the shipped pretraining YAMLs through foundry-train (SHIPPED_PRESETS, default
#                 "125m 350m 1b 3b"; SHIPPED_STEPS, default 20; SHIPPED_ACCUM micro-batches a batch,
#                 default 8; SHIPPED_ACCUM=1 matches the harness rows' one micro-batch a step;
#                 SHIPPED_MB sets the micro-batch and SHIPPED_SET="KEY=VALUE ..." adds overrides;
#                 FOUNDRY_TRAIN_COMPILE_MODE=max-autotune-no-cudagraphs reaches the runs and their tag;
#                 FOUNDRY_FLASH_PACKED_QKV=0|1 likewise; SHIPPED_TIMEOUT, default 300 s a run)
#   baseline      the same-run Llama-125M (SDPA) harness row beside them
#   harness-new   the 125m harness row (flash, whole-model compile, loss chunk 8192) on this tree;
#                 harness-base runs it on the tree in $BASE_TREE (e.g. `git archive` of an older commit)
#   fp8           for each of FP8_PRESETS (default 1b) the shipped YAML in bf16, then each of
#                 FP8_RECIPES (default "tensorwise rowwise"); global batch 64 (1b: 16 x 4, 3b: 4 x 16);
#                 SHIPPED_MB and SHIPPED_SET apply to every row
#   fp8-loss      mpt-125m, 300 steps of real text, bf16 and FP8 tensorwise: the last-20-steps loss
#   mp-loss       as fp8-loss, mixed_precision FULL (fp32 residual stream on one GPU) against the
#                 shipped PURE (bf16 residual stream)
#   long          mpt-1b at max_seq_len 8192 on data converted at 8192 tokens a sample (LONG_SEQS,
#                 default 8192, e.g. "8192 32768"; activation checkpointing past 8192). On one
#                 H100 2026-12-05 the 8192 row took 142 s (its eval then ran out of memory, since fixed)
#   titan         benchmarks/torchtitan_peer.py (needs .titan/setup.sh sourced; TITAN_ARGS adds
#                 options, e.g. "--profile --rows bf16": Foundry's runs then profile 3 batches
#                 after the measured ones, the summary in foundry-bf16.log; "--mixed-precision
#                 PURE": Foundry's bf16 residual stream of the shipped YAMLs, where the default
#                 keeps torchtitan's one-GPU fp32 stream). On one H100
#                 2026-12-05 the four rows took 373 s; 2026-12-06 with "--mixed-precision PURE
#                 --profile" 240 s. Build .titan/ here with `scripts/device-titan`
#   infer         foundry-infer's GPU tests and benchmarks/infer_gpu.py (INFER_SECTIONS, default all:
#                 batch1,batch-sizes,agreement,ort,server; INFER_BUDGET_S, default 330; INFER_ARGS adds
#                 options, e.g. "--server-compile-decode" for a second server row; INFER_TESTS=0
#                 skips the GPU tests, e.g. in a second call; on one H200
#                 2026-12-05 the tests took 24 s and all sections 320 s, ORT's export 94 of them,
#                 before the compiled-decode row, the compiled baseline and the fp32 truth were added,
#                 so plan two calls, e.g. INFER_SECTIONS=batch1,server then the rest). Its server section and the
#                 server GPU test need fastapi, uvicorn (foundry-infer's server dependencies, see
#                 packages/foundry-infer/pyproject.toml), openai and httpx (the clients), which the
#                 host lacks; the section says which are missing. Bundle them (no dependency
#                 resolution there, so the closure is listed; versions from uv.lock) with
#                   ../shared/tools/device-prep fastapi==0.165.0 starlette==1.10.0 \
#                     annotated-doc==0.0.7 opentelemetry-api==1.45.2 uvicorn==0.54.0 click==8.5.1 \
#                     h11==0.16.0 anyio==4.16.0 sniffio==1.3.1 idna==3.20 certifi==2026.10.19.post1 \
#                     httpx==0.28.1 httpcore==1.0.9 openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 \
#                     truststore==0.10.5 jiter==0.19.0 typing-extensions==4.16.0 distro torchao==0.18.0
#                 (pydantic is in device-prep's own list), then `. .device/setup.sh` (carry .device);
#                 torchao is for the fp8 sections. The .device of 2026-12-05 16:20 UTC was built so.
#                 The ort section and the ORT CUDA GPU test need onnxruntime-gpu (CUDA 13), in
#                 six parts: scripts/device-ort-gpu writes them, and its header says how to send
#                 them (five copy calls, then the call that uses it)
#   infer-profile benchmarks/infer_profile.py on the MPT-1B and the Llama: a batch-1 decode step's
#                 wall and GPU time and its kernels, eager static engine, --compile-decode, then
#                 with --overlap (FOUNDRY_DECODE_OVERLAP=1), then also with --triton-attention
#                 (FOUNDRY_DECODE_ATTENTION=triton), then instead with
#                 FOUNDRY_DECODE_COMPILE_MODE=max-autotune-no-cudagraphs (no flash needed; about
#                 30-45 s a run on an H100 without autotuning), after the overlap's GPU tests;
#                 INFER_PROFILE_ARCHS picks the models (default "mpt llama")
#   profile       each of SHIPPED_PRESETS (default 350m) through foundry-train with
#                 callbacks.profiler over batches 12-14 (PROFILE_BATCH, default 128, a batch):
#                 the kernel time by kind and the top kernels
#   fa4-op        flash-attn-4 through foundry's custom ops (FOUNDRY_FA4_CUSTOM_OP=1): the ops' GPU
#                 tests, then the 125m harness row without and with the ops, alternated twice
#                 (about 80 s a row on an H100; the first three rows are in the DATASHEET)
#
# Seen on one H100 80GB (2026-12-05; the approximate ones derived from the calls' wall times), to
# plan calls: flash + .device setup about 35 s; data prepare
# with the baseline about 90 s; shipped 125m 149 s, 350m 145 s, 1b 207 s (20 batches, eval and
# checkpoint included); one harness row about 80 s; fp8's bf16 and tensorwise rows 170 s and 183 s
# (rowwise did not fit the same 560 s call). On one H100 later that day: the infer section (tests,
# then batch1,server,agreement) 268 s; the whole test_gpu_attention.py over 300 s (34 tests passed
# by then); shipped 350m 132-137 s a row after a 90 s data prepare. On a third H100 (21:29-21:55
# UTC): infer with INFER_SECTIONS=batch1,agreement,server and --server-compile-decode 168 s (GPU
# tests 31 s); LONG_SEQS="8192 32768" long 308 s with both data prepares; profile of 350m and
# 125m 187 s; fp8 bf16 + rowwise 256 s; infer-profile (both models, five runs each) 195 s.
# On one H100 2026-12-06: FP8_PRESETS=3b FP8_RECIPES=tensorwise SHIPPED_MB=4 fp8 418 s with the
# flash setup (the two 3b rows 192 s and 176 s, each writing and removing a 32 GB checkpoint);
# matrix 178 s; infer batch1 135 s with the setup, batch-sizes,agreement 63 s. The foundry-train
# and foundry-infer GPU tests in one pytest ran past 340 s: run gpu-tests (its log comes back in
# logs.tgz even when the budget stops it), not a bare pytest piped through tail.
# Later on 2026-12-06 (H100): matrix-full 343 s with the .flash1 copy and setup, MATRIX_ATTN=triton
# 369 s with the .flash2 setup; INFER_TESTS=0 INFER_SECTIONS=agreement infer 108 s.
# 2026-12-06 08:24-08:40 UTC (H100): GPU_TESTS_K="compile_trains and triton" gpu-tests 283 s
# (1 passed); GPU_TESTS_K=fp8 gpu-tests 220 s (3 passed); then SHIPPED_PRESETS=125m
# FOUNDRY_TRAIN_COMPILE_MODE=max-autotune-no-cudagraphs shipped had not finished its data prepare
# and one run after 330 s, when the call's limit stopped it (its logs were lost then; the archive
# is now refreshed every 30 s): give that mode a call of its own. On one H200 09:18 UTC:
# ROUND_BUDGET_S=330 SHIPPED_TIMEOUT=130 FP8_PRESETS=3b FP8_RECIPES=tensorwise SHIPPED_MB=8 fp8
# 311 s with the flash setup and data prepare; each row had logged its 20 batches by 130 s (bf16
# 107 s, FP8 99 s on the progress bar) and was stopped in the end-of-run eval and checkpoint.
# ROUND_BUDGET_S counts from this script's start, not the call's: leave the setup's time out of it.
# 2026-12-06 10:17 UTC (H100): TITAN_ARGS="--mixed-precision PURE --rows bf16" titan with
# FOUNDRY_TRAIN_COMPILE_MODE=max-autotune-no-cudagraphs 526 s with the flash setup (Foundry's run
# alone 399 s, nearly all of it autotuning); the same without that variable 172 s.
set -u
S=$OUT/summary.txt
W=/tmp/gpu-round
mkdir -p "$W/logs"
pack() {  # every run's log and rows so far (runs still going too) into $OUT/logs.tgz, atomically;
  # the sections leave their runs' logs in $W/SECTION/ and this gathers them into $W/logs/
  local f dir
  for f in "$W"/*/rows.jsonl "$W"/*/*.log; do
    dir=$(basename "$(dirname "$f")")
    [ -f "$f" ] && [ "$dir" != logs ] || continue
    case $f in  # the names shipped() and the sections give them
      */rows.jsonl) cp "$f" "$W/logs/$dir-rows.jsonl" ;;
      *) cp "$f" "$W/logs/" ;;
    esac
  done
  tar -czf "$OUT/.logs.tgz.tmp" -C "$W" logs 2>/dev/null && mv "$OUT/.logs.tgz.tmp" "$OUT/logs.tgz"
}
if [ -z "${GPU_ROUND_INNER:-}" ]; then
  # The sections run under one overall budget (ROUND_BUDGET_S, default 570 s) so that the log
  # archive is written even when a section overruns the call's 600 s. The archive is also
  # refreshed every 30 s: when the call's own limit stops everything first (its setup's time
  # counts there and not here, 2026-12-06), the logs up to then still come back.
  (while sleep 30; do pack; done) &
  packer=$!
  GPU_ROUND_INNER=1 timeout -k 5 "${ROUND_BUDGET_S:-570}" bash "$0" "$@"
  rc=$?
  kill $packer 2>/dev/null
  [ $rc -eq 124 ] && echo "== stopped by ROUND_BUDGET_S=${ROUND_BUDGET_S:-570}" | tee -a "$S"
  pack
  exit $rc
fi
say() { echo "$@" | tee -a "$S"; }
data() {  # data SEQ: a tokenizer and MDS of standard-library text, through foundry-data
  local d=$W/data-$1
  [ -d "$d/mds/val" ] || timeout 120 python benchmarks/shipped_yamls.py prepare --data "$d" \
    --seq "$1" > "$W/logs/prepare-$1.log" 2>&1
  echo "$d"
}
shipped() {  # shipped OUTDIR ARGS...: rows in $W/OUTDIR/rows.jsonl and the summary
  python benchmarks/shipped_yamls.py run --out-dir "$W/$1" "${@:2}" 2>&1 | tee -a "$S"
}
harness() {  # harness NAME TREE
  local H="run --model mpt --preset 125m --micro-batch 32 --attn-impl flash --full-compile"
  (cd "$2" && PYTHONPATH="$(ls -d "$2"/packages/*/src | paste -sd:):$PYTHONPATH" timeout 120 python benchmarks/train_throughput.py $H --loss-chunk 8192 --steps 20 \
    --warmup 8 --out "$W/$1.jsonl" > "$W/logs/$1.log" 2>&1)
  say "$1 ($2): $(tail -n 1 "$W/$1.jsonl" 2>/dev/null)"
}
say "card: $(nvidia-smi --query-gpu=name --format=csv,noheader) date: $(date -u +%FT%TZ)"
for section in "$@"; do
  say "== $section"
  case $section in
    matrix)
      timeout 400 python packages/foundry-train/tests/gpu_checks/compile_matrix.py \
        --out-dir "$W/matrix" --parallel 6 --attn flash --compile none model blocks \
        --fsdp FULL_SHARD SHARD_GRAD_OP NO_SHARD --mp PURE DEFAULT --init meta --accum 2 \
        --data "$(data 2048)" --timeout 300 2>&1 | tee -a "$S"
      # issue 17's other report: triton attention with compile under FULL_SHARD + PURE
      timeout 200 python packages/foundry-train/tests/gpu_checks/compile_matrix.py \
        --out-dir "$W/matrix" --parallel 3 --attn triton --compile none model blocks \
        --fsdp FULL_SHARD --mp PURE --init meta --accum 2 --data "$(data 2048)" --timeout 190 \
        2>&1 | tee -a "$S" ;;
    matrix-full)
      # the GPU test's own matrix (test_compile_trains_with_every_fsdp_setting_and_meta_init:
      # mixed precision FULL and CPU init too), one line per combination; MATRIX_ATTN picks the
      # attention (default torch; the test is one per attention, 36 runs each, a call each)
      timeout 540 python packages/foundry-train/tests/gpu_checks/compile_matrix.py \
        --out-dir "$W/matrix-full" --parallel 6 --attn ${MATRIX_ATTN:-torch} --timeout 300 \
        ${MATRIX_ARGS:-} 2>&1 | tee -a "$S" ;;
    gpu-tests)
      timeout 560 python -m pytest -q -m gpu -p no:cacheprovider packages/*/tests -rs \
        ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} > "$W/logs/gpu-tests.log" 2>&1
      say "gpu tests rc $?: $(tail -n 1 "$W/logs/gpu-tests.log")" ;;
    shipped)
      d=$(data 2048)
      for p in ${SHIPPED_PRESETS:-125m 350m 1b 3b}; do
        mb=$(sed -n 's/^device_train_microbatch_size: *//p' \
          "packages/foundry-train/src/foundry_train/yamls/pretrain/mpt-$p.yaml")
        sets=(${SHIPPED_SET:-})
        [ -n "${SHIPPED_MB:-}" ] && { mb=$SHIPPED_MB; sets+=("device_train_microbatch_size=$mb"); }
        shipped shipped --data "$d" --presets "$p" --steps "${SHIPPED_STEPS:-20}" \
          --global-batch $((${SHIPPED_ACCUM:-8} * mb)) --tag "accum${SHIPPED_ACCUM:-8}${SHIPPED_MB:+-mb$mb}${FOUNDRY_FA4_CUSTOM_OP:+-fa4op$FOUNDRY_FA4_CUSTOM_OP}${FOUNDRY_TRAIN_COMPILE_MODE:+-$FOUNDRY_TRAIN_COMPILE_MODE}${FOUNDRY_FLASH_PACKED_QKV:+-packed$FOUNDRY_FLASH_PACKED_QKV}" \
          --timeout "${SHIPPED_TIMEOUT:-300}" ${sets[@]:+--set "${sets[@]}"}
      done ;;
    baseline)
      timeout 120 python benchmarks/train_throughput.py run --model llama --preset 125m \
        --micro-batch 16 --attn-impl sdpa --out "$W/baseline.jsonl" > "$W/logs/baseline.log" 2>&1
      say "llama baseline: $(tail -n 1 "$W/baseline.jsonl" 2>/dev/null)" ;;
    harness-new) harness harness-new "$PWD" ;;
    fa4-op)
      # only the custom ops' tests: the whole file (every impl x case x dtype, each a kernel JIT
      # build) ran past 300 s on one H100 (34 passed by then); gpu-tests runs all of it
      timeout 240 python -m pytest -q -p no:cacheprovider -k "flash_op or custom_op" \
        packages/foundry-models/tests/test_gpu_attention.py > "$W/logs/fa4-op-tests.log" 2>&1
      say "attention gpu tests rc $?: $(tail -n 1 "$W/logs/fa4-op-tests.log")"
      for i in 1 2; do
        FOUNDRY_FA4_CUSTOM_OP=0 harness "harness-plain-$i" "$PWD"
        FOUNDRY_FA4_CUSTOM_OP=1 harness "harness-op-$i" "$PWD"
      done ;;
    infer-profile)
      timeout 180 python -m pytest -q -p no:cacheprovider -m gpu \
        packages/foundry-infer/tests/test_overlap.py packages/foundry-infer/tests/test_gpu.py \
        -k "overlap or triton_decode" > "$W/logs/overlap-tests.log" 2>&1
      say "overlap and triton-attention gpu tests rc $?: $(tail -n 1 "$W/logs/overlap-tests.log")"
      for arch in ${INFER_PROFILE_ARCHS:-mpt llama}; do
        for how in "" "--compile-decode" "--compile-decode --overlap" \
          "--compile-decode --overlap --triton-attention" \
          "--compile-decode --overlap --compile-mode max-autotune-no-cudagraphs"; do
          tag=$arch$(echo "$how" | tr -d ' -' | sed 's/compiledecode/-compiled/;s/overlap/-overlap/;s/tritonattention/-triton/;s/compilemode/-/')
          timeout 150 python benchmarks/infer_profile.py --arch $arch $how --top 20 \
            > "$W/logs/profile-$tag.log" 2>&1
          say "profile $tag rc $?: $(grep 'wall per step' "$W/logs/profile-$tag.log")"
        done
      done ;;
    profile)
      # where a shipped YAML's batch goes: callbacks.profiler over batches 12-14 of 16
      d=$(data 2048)
      for p in ${SHIPPED_PRESETS:-350m}; do
        shipped profile --data "$d" --presets "$p" --steps 16 --global-batch "${PROFILE_BATCH:-128}" \
          --tag prof --timeout 300 --set callbacks.profiler.start_batch=12 callbacks.profiler.batches=3 \
          callbacks.profiler.top=30 ${SHIPPED_SET:-}
        cat "$W/profile/run-$p-prof/profile/summary-rank0.txt" 2>/dev/null | tee -a "$S"
      done ;;
    harness-base) harness harness-base "${BASE_TREE:?set BASE_TREE to an older tree}" ;;
    fp8)
      d=$(data 2048)
      sets=(${SHIPPED_SET:-})
      [ -n "${SHIPPED_MB:-}" ] && sets+=("device_train_microbatch_size=$SHIPPED_MB")
      for p in ${FP8_PRESETS:-1b}; do
        shipped fp8 --data "$d" --presets "$p" --steps 20 --global-batch 64 --tag bf16 \
          --timeout "${SHIPPED_TIMEOUT:-300}" ${sets[@]:+--set "${sets[@]}"}
        for r in ${FP8_RECIPES:-tensorwise rowwise}; do
          shipped fp8 --data "$d" --presets "$p" --steps 20 --global-batch 64 --tag "fp8-$r" \
            --set fp8.recipe=$r ${sets[@]:+"${sets[@]}"} --timeout "${SHIPPED_TIMEOUT:-300}"
        done
      done
      python benchmarks/shipped_yamls.py compare "$W/fp8/rows.jsonl" --base bf16 | tee -a "$S" ;;
    fp8-loss)
      d=$(data 2048)
      shipped fp8-loss --data "$d" --presets 125m --steps 300 --global-batch 32 --tag bf16
      shipped fp8-loss --data "$d" --presets 125m --steps 300 --global-batch 32 --tag fp8 \
        --set fp8.recipe=tensorwise
      python benchmarks/shipped_yamls.py compare "$W/fp8-loss/rows.jsonl" --base bf16 | tee -a "$S" ;;
    mp-loss)
      # one GPU without the FSDP wrapper: the residual stream in fp32 (mixed_precision FULL)
      # against bf16 (the shipped PURE), the same 300 batches of real text
      d=$(data 2048)
      shipped mp-loss --data "$d" --presets 125m --steps 300 --global-batch 32 --tag full \
        --set fsdp_config.mixed_precision=FULL
      shipped mp-loss --data "$d" --presets 125m --steps 300 --global-batch 32 --tag pure
      python benchmarks/shipped_yamls.py compare "$W/mp-loss/rows.jsonl" --base full | tee -a "$S" ;;
    long)
      # 16,384 tokens a micro-batch (one sequence beyond that), four micro-batches a batch;
      # past 8192 every block's activations are recomputed in backward
      for seq in ${LONG_SEQS:-8192}; do
        mb=$((16384 / seq)); [ $mb -lt 1 ] && mb=1
        extra=(); [ "$seq" -gt 8192 ] && extra=(fsdp_config.activation_checkpointing=true)
        shipped long --data "$(data "$seq")" --presets 1b --steps 12 --global-batch $((4 * mb)) \
          --set max_seq_len="$seq" device_train_microbatch_size=$mb ${extra[@]:+"${extra[@]}"} \
          --tag "s$seq" --timeout 400
      done ;;
    titan)
      timeout 560 python benchmarks/torchtitan_peer.py --out-dir "$W/titan" ${TITAN_ARGS:-} \
        > "$W/logs/titan.log" 2>&1
      say "titan rc $?"; cat "$W/titan/peer.md" 2>/dev/null | tee -a "$S" ;;
    infer)
      missing=""
      for m in fastapi uvicorn openai httpx; do
        err=$(python -c "import $m" 2>&1) || missing="$missing $m ($(echo "$err" | tail -n 1))"
      done
      if [ -n "$missing" ]; then
        say "infer: MISSING python modules:$missing; the server section and the server GPU test"
        say "  will fail; add them with the device-prep command in this script's header"
      else
        say "infer: fastapi, uvicorn, openai, httpx import"
      fi
      if [ "${INFER_TESTS:-1}" = 1 ]; then
        timeout 300 python -m pytest -q -p no:cacheprovider packages/foundry-infer/tests/test_gpu.py \
          > "$W/logs/infer-tests.log" 2>&1
        say "infer gpu tests rc $?: $(tail -n 1 "$W/logs/infer-tests.log")"
      fi
      timeout $((${INFER_BUDGET_S:-330} + 30)) python benchmarks/infer_gpu.py --out-dir "$W/infer" \
        --budget-s "${INFER_BUDGET_S:-330}" --sections "${INFER_SECTIONS:-batch1,batch-sizes,agreement,ort,server}" \
        ${INFER_ARGS:-} > "$W/logs/infer-bench.log" 2>&1
      say "infer bench rc $?"; cat "$W/infer/results.md" 2>/dev/null | tee -a "$S" ;;
    *) say "unknown section $section" ;;
  esac
done
