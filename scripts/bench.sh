#!/usr/bin/env bash
# CPU benchmarks, each "our way vs the plain way" side by side in one run; tables go to bench/results/*.md.
#   EVALUATE_DIR=/path/to/evaluate/metrics   score against local copies of the evaluate scripts (offline machines)
#   PREPARE_BENCH_ARGS="--scale 0.05"         a small data-preparation run instead of the full 159,549 rows
# GPU benchmarks (training MFU, inference throughput, Subtask 2 at 1,500 rows) live in bench/gpu/ and docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD
echo "== scorer: eval.metrics vs evaluate's bleu/rouge/meteor scripts"
$PY -m bench.score_bench ${EVALUATE_DIR:+--evaluate-dir "$EVALUATE_DIR"}
echo "== prepare: make prepare vs the official datasets.map + torchvision (full scale: ~35 min on 2 cores)"
$PY -m bench.prepare_bench ${PREPARE_BENCH_ARGS:-}   # PREPARE_BENCH_ARGS="--scale 0.05" for a quick look
echo "== Subtask 2: the per-row build (88f43d9, from git) vs stage by stage, make demo's data and settings (~10 min)"
$PY -m bench.task2_bench
echo "== serve: make serve start-up and request latency (tiny model, OpenAI client over HTTP)"
$PY -m bench.serve_bench
