#!/usr/bin/env bash
# Create .venv and install the pinned requirements, then the NLTK data METEOR needs.
#   DEVICE=auto|gpu|cpu  which set: gpu -> requirements.txt (vLLM, DeepSpeed), cpu -> requirements-cpu.txt.
#                        auto (default) picks gpu when `nvidia-smi -L` lists a GPU.
#   PYTHON=python3       interpreter for the venv;  VENV=.venv
# Idempotent: a stamp file records what was installed; rerunning with unchanged requirements does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
DEVICE=${DEVICE:-auto}
if [ "$DEVICE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then DEVICE=gpu; else DEVICE=cpu; fi
fi
case "$DEVICE" in
  gpu) REQ=requirements.txt ;;
  cpu) REQ=requirements-cpu.txt ;;
  *) echo "error: DEVICE must be auto, gpu or cpu (got '$DEVICE')" >&2; exit 2 ;;
esac
command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found; set PYTHON=/path/to/python3.10+" >&2; exit 2; }

stamp="$VENV/.medico-setup"
want="$DEVICE $(cat "$REQ" requirements-base.txt requirements-dev.txt | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date ($DEVICE set)"
else
  echo "setup: installing the $DEVICE set ($REQ) into $VENV"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -r "$REQ" -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
bash scripts/install_nltk_data.sh "$VENV/bin/python"
