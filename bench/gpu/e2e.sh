#!/usr/bin/env bash
# The whole GPU path on one GPU through the make targets users run, in resumable stages (docs/benchmarks.md):
#   random-init Qwen2.5-VL-7B shape -> synthetic data -> make prepare -> make sft (a few steps, the default recipe's
#   speed settings) -> make export -> make infer (vLLM) -> make score -> make submit-task1 DRY_RUN=1 (its generated
#   script run offline here) -> make submit-task2 DRY_RUN=1 (a few rows)
# Run from the repository root with the stack installed for python3 (e.g. after `source .../vllm_env.sh`):
#   bash bench/gpu/e2e.sh                       # the default stages above
#   bash bench/gpu/e2e.sh infer_lora kill_parent # named stages only (the extra ones run only when named)
#   bash bench/gpu/e2e.sh --list                # every stage and whether it is a default one; nothing runs
# Extra stages: infer_logprobs (--logprobs), infer_lora (the sft adapter served by vLLM, no merge), kill_parent /
#   kill_group (SIGKILL mid-run, no GPU process left, rerun completes with every row once), too_long (a prompt longer
#   than --max-model-len), kv_too_big (a KV cache that does not fit): the last two must fail with one line (exit 2).
# State on disk: $E2E/state/<stage>.done (a rerun skips finished stages; FORCE=1 reruns them). Stage times:
# $RESULTS/stage_times.tsv (bench/gpu/stages.sh: stage, seconds, exit_code, invocation, start, end, fresh); timing
# JSONs, scores and logs are copied to $RESULTS (keep it small: the model is 16 GB). Exit 0 = every stage named is
# done, 1 = a stage failed (its log's end is printed; KEEP_GOING=1 runs the stages after it too), 2 = a bad stage name.
# Variables: E2E (/tmp/e2e), BASE (the 7B-shape base model, $E2E/model; an existing one is reused), RESULTS
# ($E2E/results), TARBALL (also pack RESULTS into this .tgz), MAKE_SETUP (SETUP=none: the already-installed stack;
# before that switch exists use MAKE_SETUP="-o .venv/.medico-setup"), PY (python3), IMAGES_N (synthetic images, 160),
# SFT_STEPS (4), SFT_BATCH (16, per GPU), SFT_GLOBAL (SFT_BATCH: samples per optimizer step; on N GPUs a multiple
# of N x SFT_BATCH), SFT_EXTRA (more sft flags, e.g. --deepspeed zero2), TASK2_LIMIT (4), MAX_NEW_TOKENS (64).
# Stages can run in groups, one invocation each
# (e.g. `model data prepare sft export`, then `infer score submit1`, then `submit2`): the state carries over.
set -uo pipefail
SCRIPT=bench/gpu/e2e.sh
# shellcheck source=bench/gpu/stages.sh
source "$(dirname "${BASH_SOURCE[0]}")/stages.sh"   # fail say, the stage runs and their times
DEFAULT_STAGES=(model data prepare sft export infer score submit1 submit2)
EXTRA_STAGES=(infer_logprobs infer_lora kill_parent kill_group too_long kv_too_big)
if [ "${1:-}" = --list ]; then
  printf 'stage\tdefault\n'
  for s in "${DEFAULT_STAGES[@]}"; do printf '%s\tyes\n' "$s"; done
  for s in "${EXTRA_STAGES[@]}"; do printf '%s\tno\n' "$s"; done
  exit 0
fi
for arg in "$@"; do   # before anything runs or is made: a typo must not cost the stages before it
  [[ " ${DEFAULT_STAGES[*]} ${EXTRA_STAGES[*]} " == *" $arg "* ]] \
    || fail stage "unknown stage '$arg' (stages: ${DEFAULT_STAGES[*]} ${EXTRA_STAGES[*]})"
done
E2E=${E2E:-/tmp/e2e}; RESULTS=${RESULTS:-$E2E/results}; PY=${PY:-python3}
MAKE_SETUP=${MAKE_SETUP:-SETUP=none}
BASE=${BASE:-$E2E/model}   # the 7B-shape base model; an existing one (e.g. the benchmarks') is reused, not rebuilt
IMAGES_N=${IMAGES_N:-160}; SFT_STEPS=${SFT_STEPS:-4}; SFT_BATCH=${SFT_BATCH:-16}; TASK2_LIMIT=${TASK2_LIMIT:-4}
SFT_GLOBAL=${SFT_GLOBAL:-$SFT_BATCH}; SFT_EXTRA=${SFT_EXTRA:-}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1 PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
STATE=$E2E/state; LOGS=$E2E/logs
HIGHLIGHTS="^error|timing \[|wrote [0-9]+ predictions|bleu|Error"
mkdir -p "$STATE" "$LOGS" "$RESULTS"
M="make --no-print-directory $MAKE_SETUP PY=$PY"
RUN=$E2E/run; DATA=$E2E/prepared; PREDS=$E2E/preds
COMMON="RUN=$RUN DATA=$DATA NAME=e2e MAX_NEW_TOKENS=$MAX_NEW_TOKENS SUBMISSION_BUILD=$E2E/submission"
TASK1=$PREDS/task1_public-original.jsonl

gpu_processes() { nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader 2>/dev/null; }

infer_direct() {  # out, extra args...: inference.predict like `make infer` (same flags), but a pid of our own
  local out=$1; shift
  $PY -m inference.predict --model "$RUN/merged" --data "$DATA/swift/task1_public-original.jsonl" --out "$out" \
    --backend vllm --max-new-tokens "$MAX_NEW_TOKENS" "$@"
}

kill_mid_run() {  # group|parent: SIGKILL once 100 rows are saved, check the GPU is free, rerun to the end
  # 16 concurrent sequences: rows then finish in waves over ~20 s (all at once they would finish in one step)
  local how=$1 out=$PREDS/killed_$1.jsonl seqs=16
  [ -f "$TASK1" ] || { echo "run the infer stage first (the uninterrupted run to compare with)"; return 1; }
  rm -f "$out" "$out".partial*
  # started directly (not through a shell function) so that $! is inference.predict itself; setsid: its own group
  ${SETSID:+setsid} $PY -m inference.predict --model "$RUN/merged" --data "$DATA/swift/task1_public-original.jsonl" \
    --out "$out" --backend vllm --max-new-tokens "$MAX_NEW_TOKENS" --batch-size $seqs &
  local pid=$! waited=0
  until [ "$(cat "$out.partial" 2>/dev/null | wc -l)" -ge 100 ]; do
    sleep 0.2; waited=$((waited + 1))
    kill -0 $pid 2>/dev/null || { echo "inference.predict ended before 100 rows"; return 1; }
    [ $waited -lt 3000 ] || { echo "no 100 rows in 600 s"; kill -9 $pid; return 1; }
  done
  if [ "$how" = group ]; then kill -9 -- -$pid; else kill -9 $pid; fi
  echo "killed ($how) with $(wc -l < "$out.partial") rows saved"
  sleep 10
  local left; left=$(gpu_processes)
  [ -z "$left" ] || { echo "GPU still held after the kill: $left"; return 1; }
  echo "no process holds the GPU after the kill"
  infer_direct "$out" --batch-size $seqs || return 1
  $PY - "$out" "$TASK1" <<'EOF'
import json, sys
rows, full = [[json.loads(l) for l in open(p)] for p in sys.argv[1:3]]
assert [r['index'] for r in rows] == [r['index'] for r in full], 'rows lost, duplicated or out of order'
same = sum(a['prediction'] == b['prediction'] for a, b in zip(rows, full))
print(f'resumed run: {len(rows)} rows, each once, in order; '
      f'{same}/{len(rows)} answers identical to the uninterrupted run')
EOF
}

expect_one_line_error() {  # name, extra predict args...: must exit 2, its last line `error: ...` naming the knob
  local name=$1; shift
  local out=$PREDS/$name.jsonl err=$LOGS/$name.stderr
  rm -f "$out" "$out".partial*
  infer_direct "$out" "$@" 2> "$err"; local rc=$?
  tail -3 "$err"
  [ $rc = 2 ] && tail -1 "$err" | grep -q '^error: ' && return 0
  echo "expected exit 2 and a last line 'error: ...' (rc=$rc)"; return 1
}

check_logprobs() {
  $M infer $COMMON SPLIT=task1_public-original BACKEND=vllm PRED=$PREDS/logprobs.jsonl INFER_ARGS=--logprobs || return 1
  $PY - "$PREDS/logprobs.jsonl" <<'EOF'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert rows and all(len(r['tokens']) == len(r['token_logprobs']) >= 1 for r in rows)
assert all(math.isfinite(x) and x <= 0 for r in rows for x in r['token_logprobs'])
print(f'--logprobs: {len(rows)} rows, tokens and finite log-probs of equal length')
EOF
}

lora_direct() {  # the LoRA checkpoint of `make sft`, served by vLLM on the base model (no merge)
  local ckpt; ckpt=$(ls -d "$RUN"/v*/checkpoint-* 2>/dev/null | sort -V | tail -1)
  [ -n "$ckpt" ] || { echo "no checkpoint under $RUN"; return 1; }
  $M infer $COMMON MODEL=$BASE SPLIT=task1_public-original BACKEND=vllm PRED=$PREDS/lora.jsonl \
    INFER_ARGS="--adapters $ckpt" || return 1
  $PY - "$PREDS/lora.jsonl" "$TASK1" <<'EOF'
import json, sys
lora, merged = [[json.loads(l)['prediction'] for l in open(p)] for p in sys.argv[1:3]]
same = sum(a == b for a, b in zip(lora, merged))
print(f'adapter served by vLLM vs merged model: {same}/{len(lora)} answers identical')
EOF
}

run_stage() {  # the command of each stage
  case $1 in
    model)   [ -f "$BASE/config.json" ] || $PY -m bench.gpu.build_model "$BASE" --device cuda ;;
    data)    $M synthetic OUT=$E2E/synthetic IMAGES_N=$IMAGES_N ;;
    prepare) $M prepare DATASET=$E2E/synthetic DATA=$DATA AUG_K=1 ;;
    sft)     $M sft $COMMON MODEL=$BASE SFT_ARGS="--max_steps $SFT_STEPS --save_steps $SFT_STEPS \
               --eval_steps $SFT_STEPS --logging_steps 1 --per_device_train_batch_size $SFT_BATCH \
               --global_batch $SFT_GLOBAL --report_to none $SFT_EXTRA" ;;
    export)  $M export $COMMON ;;
    infer)   $M infer $COMMON SPLIT=task1_public-original BACKEND=vllm PRED=$TASK1 ;;
    score)   $M score PRED=$TASK1 REPORT=$E2E/reports/task1 ;;
    submit1) $M submit-task1 $COMMON HUB_REPO=e2e/medico2026-task1 TEAM=submission/team.demo.json \
               SUBMIT_DATASET=$E2E/synthetic DRY_RUN=1 ;;
    submit2) $M submit-task2 $COMMON HUB_REPO=e2e/medico2026-task2 TEAM=submission/team.demo.json \
               SUBMIT_DATASET=$E2E/synthetic DRY_RUN=1 TASK1_PRED=$E2E/none \
               CALIBRATION=$DATA/swift/val-original.jsonl TASK2_ARGS="--limit $TASK2_LIMIT --calibration-limit 16 \
               --grid 4 --probe-tokens 16 --grounding-tokens 32" ;;
    infer_logprobs) check_logprobs ;;
    infer_lora)     lora_direct ;;
    kill_parent)    kill_mid_run parent ;;
    kill_group)     SETSID=1 kill_mid_run group ;;
    too_long)       expect_one_line_error too_long --max-model-len 256 --max-pixels 200704 ;;
    kv_too_big)     expect_one_line_error kv_too_big --max-model-len 32768 --gpu-memory-utilization 0.13 ;;
  esac
}

STAGES=("$@")
[ $# -gt 0 ] || STAGES=("${DEFAULT_STAGES[@]}")
failed=0
for name in "${STAGES[@]}"; do
  stage_skipped "$name" && continue
  timed_stage "$name" run_stage "$name" && continue
  stage_failed "$name" $?
  failed=1; [ -n "${KEEP_GOING:-}" ] || break
done
cp "$PREDS"/*.timing.json "$E2E"/reports/task1/*.json "$RESULTS"/ 2>/dev/null
mkdir -p "$RESULTS/logs" && cp "$LOGS"/* "$RESULTS/logs/" 2>/dev/null
say "stage times in $RESULTS/stage_times.tsv:"
column -t "$RESULTS/stage_times.tsv" 2>/dev/null || cat "$RESULTS/stage_times.tsv"
[ -z "${TARBALL:-}" ] || tar -czf "$TARBALL" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"  # one file to fetch
exit $failed
