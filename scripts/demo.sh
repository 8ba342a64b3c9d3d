#!/usr/bin/env bash
# The whole mission path offline on a CPU, through the same `make` targets a GPU user runs:
# synthetic Kvasir-VQA-x1 copy + tiny random Qwen2.5-VL -> prepare -> sft (LoRA) -> export (merge) -> serve + ask
# -> infer (original + augmented images) -> score -> submit-task1 and submit-task2 as dry runs.
# Usage: bash scripts/demo.sh [DEMO_DIR]   (default build/demo). Outputs only under DEMO_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-build/demo}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1 CUDA_VISIBLE_DEVICES=
export MAX_PIXELS=${MAX_PIXELS:-50176}   # 64 image tokens per frame keeps the CPU run short
start=$(date +%s)
step() { echo; echo "=== [$(( $(date +%s) - start ))s] $*"; }
M="make --no-print-directory"
# A random tiny model answers with noise: 8 new tokens are enough to exercise every stage.
COMMON="DATA=$D/prepared RUN=$D/run NAME=demo MAX_NEW_TOKENS=8 SUBMISSION_BUILD=$D/submission"

step "tiny model + synthetic dataset"
$M tiny-model TINY_MODEL=$D/tiny-model
$M synthetic OUT=$D/synthetic IMAGES_N=${DEMO_IMAGES:-32}

step "prepare (original + 2 augmented variants per image)"
$M prepare DATASET=$D/synthetic DATA=$D/prepared AUG_K=2

step "sft (LoRA, tiny CPU recipe)"
$M sft RECIPE=recipes/tiny/qwen2_5_vl_lora_cpu.args MODEL=$D/tiny-model $COMMON

step "export (merge LoRA, check merged == adapter)"
$M export $COMMON

step "serve (OpenAI-compatible endpoint, swift deploy) and ask it one question over HTTP"
PY=${PY:-.venv/bin/python}
port=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
set -m   # the server in its own process group: stopped below (or on any failure) with its pid
$M serve $COMMON SERVE_PORT=$port > $D/serve.log 2>&1 &
server=$!
set +m
trap 'kill -- -$server 2>/dev/null || true' EXIT
$PY -c "import sys, time, urllib.request
for _ in range(600):
    try: urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=2); sys.exit(0)
    except OSError: time.sleep(0.5)
sys.exit('error: the server did not start (see $D/serve.log)')"
image=$(ls $D/prepared/images/original/*.jpg | head -1)
$M ask $COMMON URL=http://127.0.0.1:$port/v1 IMAGE=$image Q="Is there a polyp in the image?"
kill -- -$server && wait $server 2>/dev/null || true
trap - EXIT

# val: labelled held-out answers for confidence calibration; test: both image settings; task2_val: Subtask 2 answers
for split in val-original test-original test-augmented task2_val-original; do
  step "infer $split"
  $M infer $COMMON SPLIT=$split PRED=$D/preds/$split.jsonl BACKEND=transformers INFER_ARGS=--logprobs
  step "score $split"
  $M score PRED=$D/preds/$split.jsonl REPORT=$D/reports/$split
done

step "submit-task1 (dry run: build, regex check, run the generated script offline, validate)"
$M submit-task1 $COMMON HUB_REPO=demo-user/medico2026-task1-demo TEAM=submission/team.demo.json \
  SUBMIT_DATASET=$D/synthetic DRY_RUN=1

step "submit-task2 (dry run: explanations, boxes, heatmaps, calibrated confidence, strict validation)"
$M submit-task2 $COMMON HUB_REPO=demo-user/medico2026-task2-demo TEAM=submission/team.demo.json \
  SUBMIT_DATASET=$D/synthetic DRY_RUN=1 TASK1_PRED=$D/preds/task2_val-original.jsonl \
  CALIBRATION=$D/preds/val-original.jsonl TASK2_ARGS="--grid 4 --probe-tokens 8 --grounding-tokens 16 --rewrite \
  --rewrite-tokens 16"

step "done in $(( $(date +%s) - start ))s. Artefacts:"
cat <<EOF
  tiny model           $D/tiny-model
  synthetic dataset    $D/synthetic
  prepared data        $D/prepared   (swift/*.jsonl, subsets/, stats/report.md)
  training run         $D/run        (checkpoints; merged model in $D/run/merged; logs in v*/logging.jsonl)
  loss curve           $D/run/loss_curve.png
  server log           $D/serve.log  (make serve; make ask URL=... asked it over HTTP)
  predictions          $D/preds/*.jsonl
  score reports        $D/reports/*/
  task 1 submission    $D/submission/task1/demo/   (submission_task1.py, predictions_1.json from its offline run)
  task 2 submission    $D/submission/task2/demo/   (submission_task2.jsonl, visuals/, report/)
  task 2 gallery       $D/submission/task2/demo/README.md   (## Gallery: what the hub shows raters)
  task 2 every row     $D/submission/task2/demo/report/index.html   (filter by topic and confidence; works offline)
EOF
