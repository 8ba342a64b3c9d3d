#!/usr/bin/env bash
# CPU benchmarks, each "our way vs the plain way" side by side in one run; tables go to bench/results/*.md.
#   EVALUATE_DIR=/path/to/evaluate/metrics   score against local copies of the evaluate scripts (offline machines)
# GPU benchmarks (training MFU, inference throughput) live in bench/gpu/ and docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD
echo "== scorer: eval.metrics vs evaluate's bleu/rouge/meteor scripts"
$PY -m bench.score_bench ${EVALUATE_DIR:+--evaluate-dir "$EVALUATE_DIR"}
echo "== prepare: our weak augmentation vs datasets.map + torchvision"
$PY -m bench.prepare_bench
