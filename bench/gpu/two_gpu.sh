#!/usr/bin/env bash
# Two NVIDIA H200s of one host against one (issues 22-25; docs/benchmarks.md, "Two H200s"): each 2-GPU figure beside
# a 1-GPU figure of the same machine, through the make targets a user runs (`make ... SETUP=none PY=python3`).
#
#   bash bench/gpu/two_gpu.sh [STAGE|GROUP...]     (repository root; default: every stage, in this order)
#   bash bench/gpu/two_gpu.sh --list               (stage, issue, GPUs, expected seconds; nothing runs)
#   PLAN=1 bash bench/gpu/two_gpu.sh [STAGE...]     (the exact commands of each stage, on any machine; nothing runs)
#
# Stages (1 = CUDA_VISIBLE_DEVICES=0, 2 = CUDA_VISIBLE_DEVICES=0,1):
#   model            python -m bench.gpu.build_model: the random-init Qwen2.5-VL-7B shape into BASE (kept if there)
#   data             python -m bench.gpu.make_data: N_ITEMS train items, the same N_ITEMS as the test split,
#                    VAL_ROWS val rows; prepared like `make prepare` (task1_public and task2_val: 1,500 rows each)
#   infer_1gpu       1  make infer BACKEND=vllm SPLIT=test-original (N_ITEMS rows)                        issue 22
#   infer_dp2        2  the same: one vLLM engine per GPU over contiguous shards, merged in order         issue 22
#   infer_tp2        2  the same with INFER_ARGS=--tensor-parallel 2: one engine over both GPUs           issue 22
#   infer_1gpu_warm  1  infer_1gpu again, with the compile cache the runs before filled (as dp2 had it)   issue 22
#   submit2_1gpu     1  make submit-task2 DRY_RUN=1 on the 1,500-row task2_val set, default settings; it makes
#                       its Task 1 and calibration predictions (make infer) itself, as a first run does   issue 23
#   submit2_2gpu     2  the same                                                                          issue 23
#   sft_1gpu         1  make sft: the default recipe with its callbacks, liger and batch 32 (141 GB cards),
#                       + bench_perf (bench/gpu/swift_plugin.py), SFT_STEPS optimizer steps               issue 24
#   sft_zero2        2  the same with --deepspeed zero2 (SFT_ARGS: the recipe itself is plain DDP)         issue 24
#   sft_ddp2         2  the same without DeepSpeed: what `make sft` runs on 2 GPUs as the recipe stands    issue 24
#   sft_1gpu_bf16    1  sft_1gpu with --lora_dtype bfloat16: DeepSpeed's bf16 mode casts every parameter, the
#                       LoRA adapters too, to bf16 (fp32 master copies in its optimizer), so this is the 1-GPU
#                       run with zero2's adapter precision                                                 issue 24
#   e2e_1gpu         1  bash bench/gpu/e2e.sh, its default stages one by one (BASE reused)                 issue 25
#   e2e_2gpu         2  the same; make sft with --deepspeed zero2 and the same global batch (8 per GPU)    issue 25
# Groups: issue22 issue23 issue24 issue25 (model data + that issue's stages; issue25: model + its stages), stack
# (the set-up below only). After every invocation the comparisons (bench.gpu.compare_preds: dp2, tp2 and the warm
# run against infer_1gpu; submit2_2gpu's Task 1 answers against submit2_1gpu's) and the summary
# (bench.gpu.two_gpu_summary: RESULTS/two_gpu.{md,json}, ratios against the targets) are redone.
#
# One invocation = one call of the GPU machine (at most 10 minutes): BUDGET seconds (540). A stage starts only when
# its expected time (--list; estimates until measured) fits in what is left. Cut at the deadline (the whole process
# group gets SIGTERM), a resumable stage (submit2_*, e2e_*) continues in the next invocation, any other restarts
# there from scratch. Exit 0 = every stage named is done, 3 = run again (the next call), 1 = a stage failed (its log's
# end is printed), 2 = bad arguments (one line; nothing runs when they are found before the first stage).
# State: $W/state/<stage>.done (a rerun skips it; FORCE=1 redoes the named stages from scratch). Stage times:
# $RESULTS/stage_times.tsv (bench/gpu/stages.sh: stage, seconds, exit_code, invocation, start, end, fresh: 1 = a fresh
# start, 0 = a resumed one). With OUT set (the GPU machine's output folder), RESULTS is packed into
# $OUT/two_gpu_results.tgz at the end of every invocation.
#
# Wheels: STACK=DIR... (e.g. the carried .kit/a .kit/d). Each DIR is first copied to $W/kit (a carried folder need not
# outlive its call; /tmp does while the machine stays warm), then every kit folder not yet installed goes through
# bench/gpu/install_stack.sh (install_kits, bench/gpu/stages.sh): plain wheels at once, a split wheel (NAME.whl.part0
# .part1 ... + NAME.whl.sha256) once all its pieces are here (carry .kit/b in one call and .kit/c in the next).
# $SITE/stack_env.sh is sourced each time.
#
# Variables (default): W (/tmp/two_gpu) work folder; RESULTS ($W/results) small files to keep; PY (python3);
#   MAKE_SETUP (SETUP=none); STACK (none); SITE (/tmp/site); BUDGET (540); DEVICE (cuda; cpu = plumbing checks on
#   a CPU: the transformers backend and 2 CPU worker processes instead of 2 GPUs, no sft/e2e/tp2); BACKEND (vllm;
#   transformers on cpu); BASE ($W/model); DATA ($W/data); N_ITEMS (6000); VAL_ROWS (2000); WORKERS (CPU count);
#   MAX_NEW_TOKENS (64); MAX_PIXELS (the recipe's); RECIPE (recipes/qwen2_5_vl/7B_lora.args); SFT_BATCH (32 per
#   GPU); SFT_STEPS (20); SFT_WARMUP (4: bench_perf's steady window starts after it); INFER_ARGS, TASK2_ARGS,
#   SFT_ARGS (more flags for every make infer / submit-task2 / sft of the stages); NEED_SCALE (100: per cent of the
#   expected times a stage needs to start; small values let a CPU check cut and resume stages).
set -uo pipefail
SCRIPT=bench/gpu/two_gpu.sh
# shellcheck source=bench/gpu/stages.sh
source "$(dirname "${BASH_SOURCE[0]}")/stages.sh"   # fail need_int say left, the stage runs and their times, wheels
STAGES_ALL=(model data infer_1gpu infer_dp2 infer_tp2 infer_1gpu_warm submit2_1gpu submit2_2gpu sft_1gpu sft_zero2
            sft_ddp2 sft_1gpu_bf16 e2e_1gpu e2e_2gpu)
declare -A ISSUE=([model]=all [data]=22-24 [infer_1gpu]=22 [infer_dp2]=22 [infer_tp2]=22 [infer_1gpu_warm]=22
                  [submit2_1gpu]=23 [submit2_2gpu]=23 [sft_1gpu]=24 [sft_zero2]=24 [sft_ddp2]=24 [sft_1gpu_bf16]=24
                  [e2e_1gpu]=25
                  [e2e_2gpu]=25)
declare -A GPUS=([model]=1 [data]=0 [infer_1gpu]=1 [infer_dp2]=2 [infer_tp2]=2 [infer_1gpu_warm]=1
                 [submit2_1gpu]=1 [submit2_2gpu]=2 [sft_1gpu]=1 [sft_zero2]=2 [sft_ddp2]=2 [sft_1gpu_bf16]=1
                 [e2e_1gpu]=1 [e2e_2gpu]=2)
# Expected seconds on an H200 machine (16 cores per GPU), from the 1-GPU figures of docs/benchmarks.md; estimates
# until measured. A resumable stage needs only enough to make progress (a model load and some rows).
declare -A NEED=([model]=120 [data]=180 [infer_1gpu]=330 [infer_dp2]=240 [infer_tp2]=300 [infer_1gpu_warm]=270
                 [submit2_1gpu]=300 [submit2_2gpu]=300 [sft_1gpu]=270 [sft_zero2]=210 [sft_ddp2]=210
                 [sft_1gpu_bf16]=270 [e2e_1gpu]=60 [e2e_2gpu]=60)
RESUMABLE=" submit2_1gpu submit2_2gpu e2e_1gpu e2e_2gpu "
NEEDS_VLLM=" infer_1gpu infer_dp2 infer_tp2 infer_1gpu_warm submit2_1gpu submit2_2gpu e2e_1gpu e2e_2gpu "
GPU_ONLY=" infer_tp2 sft_1gpu sft_zero2 sft_ddp2 sft_1gpu_bf16 e2e_1gpu e2e_2gpu "
# e2e.sh's default stages, one invocation each, with their expected seconds (estimates; model: BASE exists)
E2E_STAGES=(model data prepare sft export infer score submit1 submit2)
declare -A E2E_NEED=([model]=30 [data]=40 [prepare]=60 [sft]=240 [export]=240 [infer]=240 [score]=40 [submit1]=300
                     [submit2]=360)

if [ "${1:-}" = --list ]; then
  printf 'stage\tissue\tgpus\texpected_s\tresumable\n'
  for s in "${STAGES_ALL[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$s" "${ISSUE[$s]}" "${GPUS[$s]}" "${NEED[$s]}" \
      "$([[ $RESUMABLE == *" $s "* ]] && echo yes || echo no)"
  done
  exit 0
fi

W=${W:-/tmp/two_gpu}; RESULTS=${RESULTS:-$W/results}; PY=${PY:-python3}; MAKE_SETUP=${MAKE_SETUP:-SETUP=none}
STACK=${STACK:-}; SITE=${SITE:-/tmp/site}; BUDGET=${BUDGET:-540}; DEVICE=${DEVICE:-cuda}
BACKEND=${BACKEND:-$([ "$DEVICE" = cpu ] && echo transformers || echo vllm)}
BASE=${BASE:-$W/model}; DATA=${DATA:-$W/data}; N_ITEMS=${N_ITEMS:-6000}; VAL_ROWS=${VAL_ROWS:-2000}
WORKERS=${WORKERS:-$(nproc 2>/dev/null || echo 4)}; MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
RECIPE=${RECIPE:-recipes/qwen2_5_vl/7B_lora.args}; SFT_BATCH=${SFT_BATCH:-32}; SFT_STEPS=${SFT_STEPS:-20}
SFT_WARMUP=${SFT_WARMUP:-4}; INFER_ARGS=${INFER_ARGS:-}; TASK2_ARGS=${TASK2_ARGS:-}; SFT_ARGS=${SFT_ARGS:-}
NEED_SCALE=${NEED_SCALE:-100}

# ---------------------------------------------------------------- argument checks (before anything runs)
need_int BUDGET 60; need_int N_ITEMS 1; need_int VAL_ROWS 1; need_int WORKERS 1; need_int MAX_NEW_TOKENS 1
need_int SFT_BATCH 1; need_int SFT_STEPS 2; need_int SFT_WARMUP 1; need_int NEED_SCALE 0
(( 10#$SFT_WARMUP < 10#$SFT_STEPS )) || fail SFT_WARMUP "must be below SFT_STEPS ($SFT_STEPS), got '$SFT_WARMUP'"
case $DEVICE in cuda|cpu) ;; *) fail DEVICE "must be cuda or cpu, got '$DEVICE'" ;; esac
case $BACKEND in vllm|transformers) ;; *) fail BACKEND "must be vllm or transformers, got '$BACKEND'" ;; esac
[ "$DEVICE" = cuda ] || [ "$BACKEND" = transformers ] || fail BACKEND "vllm needs DEVICE=cuda"
[ -f "$RECIPE" ] || fail RECIPE "no such recipe file: '$RECIPE'"
command -v "$PY" > /dev/null || fail PY "no such Python: '$PY'"
for dir in $STACK; do [ -d "$dir" ] || fail STACK "no such wheel folder: '$dir'"; done
STAGES=()
for arg in "$@"; do
  case $arg in
    issue22) STAGES+=(model data infer_1gpu infer_dp2 infer_tp2 infer_1gpu_warm) ;;
    issue23) STAGES+=(model data submit2_1gpu submit2_2gpu) ;;
    issue24) STAGES+=(model data sft_1gpu sft_zero2 sft_ddp2 sft_1gpu_bf16) ;;
    issue25) STAGES+=(model e2e_1gpu e2e_2gpu) ;;
    stack) ;;
    *) [[ " ${STAGES_ALL[*]} " == *" $arg "* ]] \
         || fail stage "unknown stage '$arg' (stages: ${STAGES_ALL[*]}; groups: issue22 issue23 issue24 issue25 stack)"
       STAGES+=("$arg") ;;
  esac
done
[ $# -gt 0 ] || STAGES=("${STAGES_ALL[@]}")
declare -A seen_stage; unique=()
for s in "${STAGES[@]}"; do [ -n "${seen_stage[$s]:-}" ] || { seen_stage[$s]=1; unique+=("$s"); }; done
STAGES=("${unique[@]}")
if [ "$DEVICE" = cpu ]; then
  for s in "${STAGES[@]}"; do
    [[ $GPU_ONLY != *" $s "* ]] || fail stage "$s needs DEVICE=cuda (on a CPU: model data infer_1gpu infer_dp2" \
      "infer_1gpu_warm submit2_1gpu submit2_2gpu)"
  done
elif [ -z "${PLAN:-}" ]; then
  most=0; for s in "${STAGES[@]}"; do (( GPUS[$s] > most )) && most=${GPUS[$s]}; done
  ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
  (( ngpu >= most )) || fail DEVICE "the stages named need $most GPU(s), nvidia-smi lists $ngpu (DEVICE=cpu for" \
    "plumbing checks on a CPU)"
fi
# the recipe's image budget and callbacks: the sft stages run the recipe as it is, plus the measuring callback
recipe_facts=$("$PY" - "$RECIPE" 2>&1 <<'EOF'
import sys
from training.recipe import load_recipe
recipe = load_recipe(sys.argv[1], {'DATA': '/d', 'RUN': '/r', 'MODEL': '/m'})
callbacks = recipe.get('callbacks')
print(recipe.env().get('MAX_PIXELS', ''), ' '.join(callbacks.values) if callbacks else '')
EOF
) || fail RECIPE "$(echo "$recipe_facts" | tail -1)"
recipe_facts=$(echo "$recipe_facts" | tail -1)   # the printed line (a library's warning may come before it)
MAX_PIXELS=${MAX_PIXELS:-${recipe_facts%% *}}; RECIPE_CALLBACKS=${recipe_facts#* }
[ "$RECIPE_CALLBACKS" != "$recipe_facts" ] || RECIPE_CALLBACKS=
[ -n "$MAX_PIXELS" ] || fail RECIPE "sets no MAX_PIXELS (--env MAX_PIXELS=N): give MAX_PIXELS"
need_int MAX_PIXELS 3136

# ---------------------------------------------------------------- environment, helpers
export MAX_PIXELS HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1 PYTHONUNBUFFERED=1
# NVLink multicast stays off on this host (a program using it can take the host's GPUs out of service)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
STATE=$W/state; LOGS=$W/logs; KIT=$W/kit; PREDS=$W/preds
HIGHLIGHTS="^error|timing \[|wrote [0-9]+ predictions|built and validated|\[bench\] perf|FAILED|done in"
M="make --no-print-directory $MAKE_SETUP PY=$PY"
if [ "$DEVICE" = cuda ]; then ONE=0; TWO=0,1; DP_ARGS=; else ONE=; TWO=; DP_ARGS="--workers 2"; fi
within() {  # the command and everything it starts (one process group) get SIGTERM at the deadline, SIGKILL 30 s on
  if [ -n "${PLAN:-}" ]; then printf '%q ' "$@"; echo; return 0; fi   # PLAN=1: show it, run nothing
  local secs; secs=$(left); (( secs > 0 )) || secs=1   # (timeout 0 would mean no limit)
  timeout -k 30 "$secs" "$@"
}

words() { local IFS=' '; echo "$*"; }   # flags joined by single spaces (empty parts dropped by the caller's split)

SAMPLER=
pack() {  # every invocation's end: comparisons, the summary, small results travel back (models and predictions not)
  [ -z "$SAMPLER" ] || kill "$SAMPLER" 2> /dev/null
  for f in "$LOGS"/*.log; do [ -e "$f" ] && tail -c 200000 "$f" > "$RESULTS/logs/$(basename "$f")"; done
  find "$RESULTS" -name '*.log' -size +200k | while read -r f; do   # e2e.sh copies whole logs: their ends suffice
    tail -c 200000 "$f" > "$f.tail" && mv "$f.tail" "$f"; done
  mkdir -p "$RESULTS/infer" "$RESULTS/task2"
  compare "$PREDS/infer_1gpu.jsonl" infer_dp2 infer_tp2 infer_1gpu_warm
  [ -f preds/submit2_2gpu/task2_val-original.jsonl ] && [ -f preds/submit2_1gpu/task2_val-original.jsonl ] \
    && "$PY" -m bench.gpu.compare_preds preds/submit2_1gpu/task2_val-original.jsonl \
         preds/submit2_2gpu/task2_val-original.jsonl --label submit2_2gpu_task1 \
         --out "$RESULTS/task2/compare_task1_answers.json" > /dev/null 2>> "$RESULTS/logs/compare.log"
  "$PY" -m bench.gpu.two_gpu_summary "$RESULTS" > "$LOGS/summary.out" 2>&1 \
    || { echo "summary failed:"; tail -5 "$LOGS/summary.out"; }
  if [ -n "${OUT:-}" ]; then
    tar -czf "$OUT/two_gpu_results.tgz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")" \
      && say "packed $OUT/two_gpu_results.tgz"
  fi
}
compare() {  # base-pred stage...: each stage's predictions against the base's, same rows and order, same answers
  local base=$1; shift
  for s in "$@"; do
    local pred=$PREDS/$s.jsonl out=$RESULTS/infer/compare_$s.json
    [ -f "$base" ] && [ -f "$pred" ] || continue
    [ -f "$out" ] && [ "$out" -nt "$pred" ] && [ "$out" -nt "$base" ] && continue
    "$PY" -m bench.gpu.compare_preds "$base" "$pred" --label "$s" --out "$out" > /dev/null \
      2>> "$RESULTS/logs/compare.log" || echo "compare $s: $(tail -1 "$RESULTS/logs/compare.log")"
  done
}

# ---------------------------------------------------------------- stages
sampler_start() {  # GPU utilisation and memory every second while a stage runs (both GPUs busy = data-parallel)
  [ "$DEVICE" = cuda ] || return 0
  mkdir -p "$RESULTS/smi"
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 1000 \
    >> "$RESULTS/smi/$1.csv" 2> /dev/null &
  SAMPLER=$!
}
sampler_stop() { [ -z "$SAMPLER" ] || { kill "$SAMPLER" 2> /dev/null; wait "$SAMPLER" 2> /dev/null; SAMPLER=; }; }

clean() {  # a fresh measurement: what an earlier (cut or FORCEd) run of the stage left
  case $1 in
    infer_*) rm -f "$PREDS/$1".jsonl "$PREDS/$1".jsonl.partial* "$PREDS/.$1.jsonl.lock" "$PREDS/$1".timing*.json \
               "$PREDS/$1".vllm*.log "$RESULTS/infer/$1".timing*.json "$RESULTS/infer/compare_$1.json" ;;
    submit2_*) rm -rf "$W/$1" "preds/$1" "$RESULTS/task2/$1" ;;
    sft_*) rm -rf "$W/$1" "$RESULTS/sft/perf_$1.json" "$RESULTS/sft/$1.logging.jsonl" ;;
    e2e_*) rm -rf "$W/$1" "$RESULTS/$1" ;;
  esac
}

infer() {  # name devices extra-infer-args: make infer of the test split, N_ITEMS rows
  within env CUDA_VISIBLE_DEVICES="$2" $M infer MODEL="$BASE" DATA="$DATA" SPLIT=test-original BACKEND="$BACKEND" \
    PRED="$PREDS/$1.jsonl" MAX_NEW_TOKENS="$MAX_NEW_TOKENS" INFER_ARGS="$(words $3 $INFER_ARGS)"
}

submit2() {  # name devices extra-args: make submit-task2 DRY_RUN=1; RUN names its default prediction files
  # (preds/<name>/task2_val-original.jsonl, preds/<name>/val-original.jsonl), made by make infer when missing
  within env CUDA_VISIBLE_DEVICES="$2" $M submit-task2 MODEL="$BASE" DATA="$DATA" RUN="$W/$1" NAME="$1" \
    HUB_REPO=bench/two-gpu TEAM=submission/team.demo.json SUBMIT_DATASET="$DATA/source" DRY_RUN=1 \
    BACKEND="$BACKEND" MAX_NEW_TOKENS="$MAX_NEW_TOKENS" SUBMISSION_BUILD="$W/$1/submission" \
    INFER_ARGS="$(words $3 $INFER_ARGS)" TASK2_ARGS="$(words $3 $TASK2_ARGS)"
}

sft() {  # name devices extra-sft-flags: the recipe as it is + the measuring callback, SFT_STEPS optimizer steps
  local flags="--external_plugins bench/gpu/swift_plugin.py --callbacks $RECIPE_CALLBACKS bench_perf"
  flags+=" --per_device_train_batch_size $SFT_BATCH --max_steps $SFT_STEPS --logging_steps 5 --save_strategy no"
  within env CUDA_VISIBLE_DEVICES="$2" BENCH_OUT="$RESULTS/sft" BENCH_NAME="$1" BENCH_WARMUP="$SFT_WARMUP" \
    BENCH_PROFILE=0:0 $M sft RECIPE="$RECIPE" MODEL="$BASE" DATA="$DATA" RUN="$W/$1" \
    SFT_ARGS="$(words $flags --eval_strategy no --report_to none $3 $SFT_ARGS)"
}

e2e() {  # name devices [VAR=value...]: e2e.sh's stages one invocation each, while their expected time fits
  local name=$1 devices=$2 s; shift 2
  for s in "${E2E_STAGES[@]}"; do
    [ -f "$W/$name/state/$s.done" ] && continue
    if [ -z "${PLAN:-}" ] && (( $(left) < E2E_NEED[$s] * NEED_SCALE / 100 )); then
      echo "e2e stage $s needs ~${E2E_NEED[$s]} s, $(left) s left: the next invocation continues"; return 124
    fi
    within env CUDA_VISIBLE_DEVICES="$devices" E2E="$W/$name" RESULTS="$RESULTS/$name" BASE="$BASE" PY="$PY" \
      MAKE_SETUP="$MAKE_SETUP" MAX_NEW_TOKENS="$MAX_NEW_TOKENS" "$@" bash bench/gpu/e2e.sh "$s" || return $?
  done
}

build_model() {
  if [ -f "$BASE/config.json" ]; then echo "model: $BASE exists, kept"; return 0; fi
  within rm -rf "$BASE.partial"
  within "$PY" -m bench.gpu.build_model "$BASE.partial" --device "$([ "$DEVICE" = cuda ] && echo cuda || echo cpu)" \
    $([ "$DEVICE" = cpu ] && echo --tiny) --max-pixels "$MAX_PIXELS" && within mv "$BASE.partial" "$BASE"
}

run_stage() {
  case $1 in
    model)           build_model ;;
    data)            within "$PY" -m bench.gpu.make_data "$DATA" "$N_ITEMS" --test "$N_ITEMS" --val "$VAL_ROWS" \
                       --workers "$WORKERS" ;;
    infer_1gpu)      infer infer_1gpu "$ONE" "" ;;
    infer_dp2)       infer infer_dp2 "$TWO" "$DP_ARGS" ;;
    infer_tp2)       infer infer_tp2 "$TWO" "--tensor-parallel 2" ;;
    infer_1gpu_warm) infer infer_1gpu_warm "$ONE" "" ;;
    submit2_1gpu)    submit2 submit2_1gpu "$ONE" "" ;;
    submit2_2gpu)    submit2 submit2_2gpu "$TWO" "$DP_ARGS" ;;
    sft_1gpu)        sft sft_1gpu "$ONE" "" ;;
    sft_zero2)       sft sft_zero2 "$TWO" "--deepspeed zero2" ;;
    sft_ddp2)        sft sft_ddp2 "$TWO" "" ;;
    sft_1gpu_bf16)   sft sft_1gpu_bf16 "$ONE" "--lora_dtype bfloat16" ;;
    e2e_1gpu)        e2e e2e_1gpu "$ONE" ;;
    e2e_2gpu)        e2e e2e_2gpu "$TWO" SFT_BATCH=8 SFT_GLOBAL=16 SFT_EXTRA="--deepspeed zero2" ;;
  esac
}

collect() {  # the small files a stage's numbers come from, into RESULTS (mtimes kept: the summary reads them)
  local f
  case $1 in
    infer_*) mkdir -p "$RESULTS/infer"
             for f in "$PREDS/$1".timing*.json; do [ -e "$f" ] && cp -p "$f" "$RESULTS/infer/"; done
             for f in "$PREDS/$1".vllm*.log; do [ -e "$f" ] && tail -c 100000 "$f" > "$RESULTS/logs/$(basename "$f")"
             done ;;
    submit2_*) mkdir -p "$RESULTS/task2/$1"
               for f in preds/"$1"/*.timing*.json "$W/$1/submission/task2/.work-$1/timings.jsonl" \
                        "$W/$1/submission/task2/$1/report/report.json"; do
                 [ -e "$f" ] && cp -p "$f" "$RESULTS/task2/$1/"
               done ;;
    sft_*) for f in "$W/$1"/v*/logging.jsonl; do [ -e "$f" ] && cp -p "$f" "$RESULTS/sft/$1.logging.jsonl"; done ;;
    model) [ -f "$BASE/param_count.json" ] && cp -p "$BASE/param_count.json" "$RESULTS/" ;;
  esac
  return 0
}


# ---------------------------------------------------------------- PLAN=1: the commands each stage runs, nothing run
if [ -n "${PLAN:-}" ]; then
  for name in "${STAGES[@]}"; do echo "# $name"; run_stage "$name"; done
  exit 0
fi

# ---------------------------------------------------------------- set-up
mkdir -p "$STATE" "$LOGS" "$KIT" "$RESULTS/logs" "$RESULTS/sft" "$PREDS" || fail W "cannot create '$W'"
trap pack EXIT
install_kits || { say "installing the wheels failed (above; $LOGS/stack.log)"; exit 1; }
# shellcheck disable=SC1091
[ -f "$SITE/stack_env.sh" ] && source "$SITE/stack_env.sh"
"$PY" -c 'import swift' 2> /dev/null \
  || fail PY "'$PY' cannot import ms-swift: install the stack (STACK=DIR..., the first call of the plan; a fresh" \
    "machine has lost the earlier calls' set-up)"
if [ "$DEVICE" = cuda ] && [ ! -f "$RESULTS/gpu.txt" ]; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader > "$RESULTS/gpu.txt"
  echo "$(nproc) CPU cores" >> "$RESULTS/gpu.txt"
fi
"$PY" - > "$RESULTS/versions.txt" 2>&1 <<'EOF'
import importlib.metadata as md, sys
names = ('torch', 'transformers', 'ms-swift', 'vllm', 'deepspeed', 'liger-kernel', 'peft', 'triton')
found = {}
for name in names:
    try:
        found[name] = md.version(name)
    except md.PackageNotFoundError:
        found[name] = None
print('python', sys.version.split()[0], found)
EOF

# ---------------------------------------------------------------- the stages, in order
for name in "${STAGES[@]}"; do
  stage_skipped "$name" && continue
  if [[ $NEEDS_VLLM == *" $name "* ]] && [ "$BACKEND" = vllm ] \
      && ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("vllm") is None)' 2> /dev/null; then
    fail BACKEND "vllm is not importable by '$PY' for stage $name (carry the vLLM kit: .kit/b, then .kit/c)"
  fi
  out_of_time "$name" $(( NEED[$name] * NEED_SCALE / 100 )) && exit 3
  if [[ $RESUMABLE != *" $name "* ]] || [ ! -f "$STATE/$name.started" ] || [ -n "${FORCE:-}" ]; then
    clean "$name"; rm -f "$STATE/$name.started"   # a fresh measurement (its row says fresh = 1)
  fi
  sampler_start "$name"
  timed_stage "$name" run_stage "$name"
  rc=$?
  sampler_stop
  collect "$name"
  if [ $rc = 124 ] || [ $rc = 137 ]; then
    if [[ $RESUMABLE == *" $name "* ]]; then
      say "$name stopped at the deadline after ${STAGE_SECONDS}s: run again (the next call) to continue"
    else
      say "$name cut at the deadline after ${STAGE_SECONDS}s: run again (the next call); it restarts from scratch"
    fi
    exit 3
  elif [ $rc != 0 ]; then
    stage_failed "$name" $rc; exit 1
  fi
done
say "every stage named is done: $RESULTS/two_gpu.md"
exit 0
