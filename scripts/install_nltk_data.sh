#!/usr/bin/env bash
# Install the NLTK data METEOR needs (WordNet 3.0 + punkt_tab) into .nltk_data/ — see eval/nltk_data.py.
#   bash scripts/install_nltk_data.sh [PYTHON] [--dir DIR] [--timeout S] [--no-download] [--no-apt]
# Idempotent: does nothing but a quick METEOR check when the data is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
shift || true
exec "$PY" -m eval.nltk_data "$@"
