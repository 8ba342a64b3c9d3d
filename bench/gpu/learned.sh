#!/usr/bin/env bash
# A model that learned (docs/benchmarks.md, "A model that learned"): a 132 M Qwen2.5-VL (real architecture, real
# Qwen tokenizer, random init: bench.gpu.build_model --small) trained from scratch on one H200 with
# recipes/qwen2_5_vl/132M_full_scratch.args on the synthetic Kvasir-VQA-x1 set and its grounding rows, then the
# rest of the GPU path on it through the make targets a user runs, and the numbers that say what it learned.
#
#   bash bench/gpu/learned.sh [STAGE...]        (repository root; default: every stage, in this order)
#
# Stages: data prepare grounding model untrained sft export infer_test infer_test_aug infer_task2 infer_val
#         baseline score submit2 numbers
#   data       make synthetic: IMAGES_N frames x QA_PER_IMAGE questions (exact boxes and masks)
#   prepare    make prepare AUG_K=1: splits, organizer subsets, original + augmented images
#   grounding  make grounding-data SYNTHETIC=...: box rows from the generator's geometry (train images only)
#   model      the random model (SIZE: small = the recipe's 132 M; micro/tiny only for CPU plumbing checks)
#   untrained  make infer with the random model (the synthetic test subset, original images)
#   sft        make sft RESUME=1: stops with a checkpoint at this invocation's deadline; the next one continues
#   export     make export (a full fine-tune: the checkpoint copied into RUN/merged)
#   infer_*    make infer: test subset (task1_public) original + augmented, task2_val and val with log-probs
#   baseline   make baseline on the test subset (language priors that never see the image)
#   score      make score: learned (both settings side by side) and untrained
#   submit2    make submit-task2 DRY_RUN=1 on the learned model (1,500 val rows, calibrated on val)
#   numbers    python -m bench.gpu.learned_numbers: RESULTS/learned.{json,md} + the plots
# Resumable: $W/state/<stage>.done marks a finished stage and a rerun skips it (FORCE=1 reruns the named ones).
# Each invocation is meant for one call of the GPU machine (at most 10 minutes): BUDGET seconds (default 540).
# A stage whose expected time no longer fits is left for the next invocation, and sft stops with a checkpoint at
# the deadline; both end the invocation with exit code 3 ("run me again"); 0 = every stage done, 1 = a stage
# failed (its log's end is printed), 2 = bad arguments (one line, nothing run).
# baseline, score and numbers score METEOR: they need NLTK's WordNet and punkt_tab (<repo>/.nltk_data, or NLTK_DATA);
# without them the script stops there with one line (exit 2), after the stages before them ran.
# Stage times: $RESULTS/stage_times.tsv (bench/gpu/stages.sh: stage, seconds, exit_code, invocation, start, end,
# fresh). With OUT set (the GPU machine's output folder), RESULTS is packed into $OUT/learned_results.tgz at the end of
# every invocation.
# Variables (default):
#   W (/tmp/learned) work folder: data, model, run, predictions, state. RESULTS ($W/results) small files to keep.
#   PY (python3) the Python holding the stack; MAKE_SETUP (SETUP=none) how make finds it.
#   STACK (empty) wheel folders (stashed in $W/kit, then bench/gpu/install_stack.sh) installed when ms-swift is not
#   importable; SITE (/tmp/site) where they go.
#   BUDGET (540) seconds for this invocation; SFT_MAX_S (none) at most this many seconds of training in it.
#   SIZE (small), DEVICE (cuda), RECIPE (recipes/qwen2_5_vl/132M_full_scratch.args), MAX_PIXELS (the recipe's).
#   IMAGES_N (5000), QA_PER_IMAGE (8), TEST_FRACTION (0.2), WORKERS (the CPU count).
#   BACKEND (transformers) engine of make infer and submit-task2: transformers, vllm (when importable) or auto.
#   MAX_NEW_TOKENS (64), CALIBRATION_ROWS (2000), SFT_ARGS, INFER_ARGS, TASK2_ARGS (extra flags of each target).
set -uo pipefail
SCRIPT=bench/gpu/learned.sh
# shellcheck source=bench/gpu/stages.sh
source "$(dirname "${BASH_SOURCE[0]}")/stages.sh"   # fail need_int say left, the stage runs and their times
STAGES_ALL=(data prepare grounding model untrained sft export infer_test infer_test_aug infer_task2 infer_val baseline
            score submit2 numbers)
# Expected seconds of each stage on one H200 with 16 cores (docs/benchmarks.md; estimates until measured): a stage
# starts only when this much of BUDGET is left. sft needs only enough to make progress (it stops at the deadline).
declare -A NEED=([data]=60 [prepare]=90 [grounding]=20 [model]=30 [baseline]=30 [untrained]=90 [sft]=150
                 [export]=30 [infer_test]=90 [infer_test_aug]=90 [infer_task2]=90 [infer_val]=90 [score]=60
                 [submit2]=360 [numbers]=30)
SFT_MARGIN=45   # seconds kept after the training deadline: the last step, the checkpoint, the loss curve

W=${W:-/tmp/learned}; RESULTS=${RESULTS:-$W/results}; PY=${PY:-python3}; MAKE_SETUP=${MAKE_SETUP:-SETUP=none}
STACK=${STACK:-}; BUDGET=${BUDGET:-540}; SFT_MAX_S=${SFT_MAX_S:-}
SIZE=${SIZE:-small}; DEVICE=${DEVICE:-cuda}; RECIPE=${RECIPE:-recipes/qwen2_5_vl/132M_full_scratch.args}
IMAGES_N=${IMAGES_N:-5000}; QA_PER_IMAGE=${QA_PER_IMAGE:-8}; TEST_FRACTION=${TEST_FRACTION:-0.2}
WORKERS=${WORKERS:-$(nproc 2>/dev/null || echo 4)}; BACKEND=${BACKEND:-transformers}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}; CALIBRATION_ROWS=${CALIBRATION_ROWS:-2000}
SFT_ARGS=${SFT_ARGS:-}; INFER_ARGS=${INFER_ARGS:-}; TASK2_ARGS=${TASK2_ARGS:-}; SITE=${SITE:-/tmp/site}

# ---------------------------------------------------------------- argument checks (before anything runs)
need_int BUDGET 60; need_int IMAGES_N 2; need_int QA_PER_IMAGE 3; need_int WORKERS 1; need_int MAX_NEW_TOKENS 1
need_int CALIBRATION_ROWS 0
[ -z "$SFT_MAX_S" ] || need_int SFT_MAX_S 1
[[ $TEST_FRACTION =~ ^0?\.[0-9]+$ ]] && [[ ! $TEST_FRACTION =~ ^0?\.0+$ ]] \
  || fail TEST_FRACTION "must be a number between 0 and 1, got '$TEST_FRACTION'"
case $BACKEND in transformers|vllm|auto) ;; *) fail BACKEND "must be transformers, vllm or auto, got '$BACKEND'" ;; esac
case $SIZE in small|micro|tiny) ;; *) fail SIZE "must be small, micro or tiny, got '$SIZE'" ;; esac
case $DEVICE in cuda|cpu) ;; *) fail DEVICE "must be cuda or cpu, got '$DEVICE'" ;; esac
[ -f "$RECIPE" ] || fail RECIPE "no such recipe file: '$RECIPE'"
command -v "$PY" > /dev/null || fail PY "no such Python: '$PY'"
for dir in $STACK; do [ -d "$dir" ] || fail STACK "no such wheel folder: '$dir'"; done
STAGES=("$@")
[ ${#STAGES[@]} -gt 0 ] || STAGES=("${STAGES_ALL[@]}")
for s in "${STAGES[@]}"; do
  [[ " ${STAGES_ALL[*]} " == *" $s "* ]] || fail stage "unknown stage '$s' (stages: ${STAGES_ALL[*]})"
done
if [ -z "${MAX_PIXELS:-}" ]; then   # the recipe's image budget, for every stage (training, the untrained model too)
  MAX_PIXELS=$("$PY" - "$RECIPE" 2>&1 <<'EOF'
import sys
from training.recipe import load_recipe
print(load_recipe(sys.argv[1], {'DATA': '/d', 'RUN': '/r', 'MODEL': '/m'}).env().get('MAX_PIXELS', ''))
EOF
) || fail RECIPE "$(echo "$MAX_PIXELS" | tail -1)"
  [ -n "$MAX_PIXELS" ] || fail RECIPE "sets no MAX_PIXELS (--env MAX_PIXELS=N): give MAX_PIXELS"
fi
need_int MAX_PIXELS 3136

# ---------------------------------------------------------------- set-up
export MAX_PIXELS HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1 PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
STATE=$W/state; LOGS=$W/logs; KIT=$W/kit
HIGHLIGHTS="^error|^sft: |wrote [0-9]+ predictions|^\{\"bleu|built and validated|deadline reached|length check"
mkdir -p "$STATE" "$LOGS" "$RESULTS" || fail W "cannot create '$W'"
SYN=$W/synthetic; DATA=$W/prepared; BASE=$W/base; RUN=$W/run; PREDS=$W/preds; REPORTS=$W/reports
M="make --no-print-directory $MAKE_SETUP PY=$PY"
COMMON="RUN=$RUN DATA=$DATA NAME=learned MAX_NEW_TOKENS=$MAX_NEW_TOKENS SUBMISSION_BUILD=$W/submission BACKEND=$BACKEND"

pack() {  # every invocation's end: stage times and small results travel back (the model does not)
  mkdir -p "$RESULTS/logs"
  for f in "$LOGS"/*.log; do [ -e "$f" ] && tail -c 200000 "$f" > "$RESULTS/logs/$(basename "$f")"; done
  if [ -n "${OUT:-}" ]; then
    tar -czf "$OUT/learned_results.tgz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")" \
      && say "packed $OUT/learned_results.tgz"
  fi
}
trap pack EXIT

if ! "$PY" -c 'import swift' 2> /dev/null && [ -n "$STACK" ]; then   # a fresh machine: install the carried wheels
  say "ms-swift not importable: installing the stack from $STACK"
  install_kits || { say "installing the wheels failed (above; $LOGS/stack.log)"; exit 1; }
fi
# shellcheck disable=SC1091
[ -f "$SITE/stack_env.sh" ] && source "$SITE/stack_env.sh"
"$PY" -c 'import swift' 2> /dev/null \
  || fail PY "'$PY' cannot import ms-swift: install the stack (STACK=DIR... or make setup)"
if [ "$BACKEND" = vllm ] && ! "$PY" -c 'import vllm' 2> /dev/null; then   # only if a stage left to run needs it
  for s in "${STAGES[@]}"; do
    if [[ " untrained infer_test infer_test_aug infer_task2 infer_val submit2 " == *" $s "* ]] \
        && { [ ! -f "$STATE/$s.done" ] || [ -n "${FORCE:-}" ]; }; then
      fail BACKEND "vllm is not importable by '$PY' (install the vLLM kit, or BACKEND=transformers)"
    fi
  done
fi

# ---------------------------------------------------------------- stages
sft_finished() {  # the newest checkpoint of RUN reached its run's max_steps
  "$PY" - "$RUN" <<'EOF'
import json, sys
from pathlib import Path
from training.launch import latest_checkpoint
from training.time_budget import finished
ck = latest_checkpoint(Path(sys.argv[1]))
state = json.loads((ck / 'trainer_state.json').read_text()) if ck else {}
print(f"sft: newest checkpoint {ck} at step {state.get('global_step')} of {state.get('max_steps')}")
sys.exit(0 if ck and finished(state) else 3)
EOF
}

sft() {
  local deadline=$(( T0 + BUDGET - SFT_MARGIN ))
  if [ -n "$SFT_MAX_S" ] && (( $(date +%s) + SFT_MAX_S < deadline )); then deadline=$(( $(date +%s) + SFT_MAX_S )); fi
  echo "training deadline in $(( deadline - $(date +%s) )) s"
  MEDICO_TRAIN_DEADLINE=$deadline $M sft $COMMON RECIPE="$RECIPE" MODEL="$BASE" RESUME=1 SFT_ARGS="$SFT_ARGS" \
    || return 1
  sft_finished
}

infer() {  # model split pred extra-infer-args
  $M infer $COMMON MODEL="$1" SPLIT="$2" PRED="$3" INFER_ARGS="$4 $INFER_ARGS"
}

run_stage() {
  case $1 in
    data)      $M synthetic OUT="$SYN" IMAGES_N="$IMAGES_N" \
                 SYNTHETIC_ARGS="--qa-per-image $QA_PER_IMAGE --test-fraction $TEST_FRACTION --workers $WORKERS" ;;
    prepare)   $M prepare DATASET="$SYN" DATA="$DATA" AUG_K=1 PREPARE_ARGS="--workers $WORKERS" ;;
    grounding) $M grounding-data SYNTHETIC="$SYN" DATA="$DATA" ;;
    model)     rm -rf "$BASE" && "$PY" -m bench.gpu.build_model "$BASE" --"$SIZE" --max-pixels "$MAX_PIXELS" \
                 --device "$DEVICE" --dtype float32 ;;   # fp32 master weights, whatever the size
    baseline)  $M baseline DATA="$DATA" SPLIT=task1_public-original BASELINE_OUT="$PREDS/baseline" ;;
    untrained) infer "$BASE" task1_public-original "$PREDS/untrained/task1_public-original.jsonl" "" ;;
    sft)       sft ;;
    export)    $M export $COMMON ;;
    infer_test)     infer "$RUN/merged" task1_public-original \
                      "$PREDS/learned/task1_public-original.jsonl" "" ;;
    infer_test_aug) infer "$RUN/merged" task1_public-augmented \
                      "$PREDS/learned/task1_public-augmented.jsonl" "" ;;
    infer_task2)    infer "$RUN/merged" task2_val-original \
                      "$PREDS/learned/task2_val-original.jsonl" --logprobs ;;
    infer_val)      infer "$RUN/merged" val-original "$PREDS/learned/val-original.jsonl" --logprobs ;;
    score)     $M score PRED="$PREDS/learned/task1_public-original.jsonl" REPORT="$REPORTS/learned" \
                 && $M score PRED="$PREDS/untrained/task1_public-original.jsonl" REPORT="$REPORTS/untrained" ;;
    submit2)   $M submit-task2 $COMMON HUB_REPO=learned/medico2026-task2 \
                 TEAM=submission/team.demo.json SUBMIT_DATASET="$SYN" DRY_RUN=1 \
                 TASK1_PRED="$PREDS/learned/task2_val-original.jsonl" CALIBRATION="$PREDS/learned/val-original.jsonl" \
                 CALIBRATION_ROWS="$CALIBRATION_ROWS" TASK2_ARGS="$TASK2_ARGS" ;;
    numbers)   "$PY" -m bench.gpu.learned_numbers --work "$W" --out "$RESULTS" ;;
  esac
}

nltk_ready() {   # METEOR's data, where eval points NLTK (<repo>/.nltk_data unless NLTK_DATA says otherwise)
  "$PY" -c "import eval, nltk.data
for resource in ('corpora/wordnet', 'tokenizers/punkt_tab/english/'):
    nltk.data.find(resource)" 2> /dev/null
}

# ---------------------------------------------------------------- the stages, in order
for name in "${STAGES[@]}"; do
  stage_skipped "$name" && continue
  if [[ " baseline score numbers " == *" $name "* ]] && ! nltk_ready; then
    fail NLTK_DATA "METEOR's WordNet and punkt_tab are not found for stage $name (carry .nltk_data: make setup" \
      "writes it)"
  fi
  out_of_time "$name" "${NEED[$name]}" && exit 3
  timed_stage "$name" run_stage "$name"
  rc=$?
  if [ $rc = 3 ]; then
    say "$name stopped at the deadline after ${STAGE_SECONDS}s (a checkpoint is saved): run again (the next call)" \
      "to continue"
    exit 3
  elif [ $rc != 0 ]; then
    stage_failed "$name" $rc; exit 1
  fi
done
say "every stage done: $RESULTS/learned.md"
exit 0
