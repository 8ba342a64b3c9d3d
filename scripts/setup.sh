#!/usr/bin/env bash
# Create .venv and install the pinned requirements, then the NLTK data METEOR needs.
#   DEVICE=auto|gpu|gpu-next|cpu  which set: gpu -> requirements.txt (the set that ran on an H200: torch 2.11.0,
#                        vLLM 0.26.0, DeepSpeed), gpu-next -> requirements-gpu-next.txt (newer, not yet run on a GPU),
#                        cpu -> requirements-cpu.txt. auto (default) picks gpu when `nvidia-smi -L` lists a GPU.
#   INSTALLER=pip|uv     pip (default) or uv (installed from PyPI into the venv first; it ignores pip's configuration,
#                        so a local wheel store pip would use is bypassed and everything is downloaded)
#   PYTHON=python3       interpreter for the venv;  VENV=.venv
# The gpu set on CPython 3.12 / Linux x86_64 installs exactly requirements-gpu.lock's versions (a resolver's lock).
# Idempotent: a stamp file records what was installed; rerunning with unchanged requirements does nothing.
# A machine whose Python already holds the stack (a cluster image) needs none of this: `make <target> SETUP=none`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
DEVICE=${DEVICE:-auto}
INSTALLER=${INSTALLER:-pip}
if [ "$DEVICE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then DEVICE=gpu; else DEVICE=cpu; fi
fi
case "$DEVICE" in
  gpu) REQ=requirements.txt ;;
  gpu-next) REQ=requirements-gpu-next.txt ;;
  cpu) REQ=requirements-cpu.txt ;;
  *) echo "error: DEVICE must be auto, gpu, gpu-next or cpu (got '$DEVICE')" >&2; exit 2 ;;
esac
case "$INSTALLER" in
  pip|uv) ;;
  *) echo "error: INSTALLER must be pip or uv (got '$INSTALLER')" >&2; exit 2 ;;
esac
command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found; set PYTHON=/path/to/python3.10+" >&2; exit 2; }

# The lock is for CPython 3.12 on Linux x86_64 (what ran on the H200); elsewhere pip resolves the pins itself.
LOCK=
if [ "$DEVICE" = gpu ] && "$PYTHON" -c 'import platform,sys; sys.exit(not (sys.version_info[:2] == (3, 12)
    and platform.system() == "Linux" and platform.machine() == "x86_64"))'; then
  LOCK=requirements-gpu.lock
fi

stamp="$VENV/.medico-setup"
want="$DEVICE $(cat "$REQ" requirements-base.txt requirements-dev.txt ${LOCK:+"$LOCK"} | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cut -d' ' -f1-2 "$stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date ($DEVICE set)"
else
  echo "setup: installing the $DEVICE set ($REQ${LOCK:+, versions from $LOCK}) into $VENV with $INSTALLER"
  # a venv cut short (no pip in it) is made again rather than failing on every later run
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || { rm -rf "$VENV"; "$PYTHON" -m venv "$VENV"; }
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if [ "$INSTALLER" = uv ]; then
    "$VENV/bin/python" -m pip install -q uv
    "$VENV/bin/python" -m uv pip install --python "$VENV/bin/python" -r "$REQ" -r requirements-dev.txt ${LOCK:+-c "$LOCK"}
  else
    "$VENV/bin/python" -m pip install -r "$REQ" -r requirements-dev.txt ${LOCK:+-c "$LOCK"}
  fi
  echo "$want $INSTALLER" > "$stamp"
fi
bash scripts/install_nltk_data.sh "$VENV/bin/python"
