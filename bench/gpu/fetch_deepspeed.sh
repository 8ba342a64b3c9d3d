#!/usr/bin/env bash
# The DeepSpeed wheels for an offline GPU machine (ZeRO-2 in `make sft`): DeepSpeed at the version of
# requirements-gpu.lock, built as a pure-Python wheel (PyPI has only its source), and hjson, the one dependency the
# GPU machine's image lacks (einops, msgpack, ninja, nvidia-ml-py, py-cpuinfo, pydantic and psutil are there or in
# the ms-swift kit). Run on a machine with PyPI, from the repository root:
#   bash bench/gpu/fetch_deepspeed.sh .kit/d        (~2.3 MB: carry it with .kit/a; install_stack.sh installs it)
set -euo pipefail
[ $# = 1 ] || { echo "usage: bash bench/gpu/fetch_deepspeed.sh DIR" >&2; exit 2; }
DIR=$1; PY=${PY:-python3}
pin() {  # the locked version of a package
  local v; v=$(grep -E "^$1==" requirements-gpu.lock | cut -d= -f3)
  [ -n "$v" ] || { echo "error: requirements-gpu.lock: $1: not pinned" >&2; exit 2; }
  echo "$v"
}
mkdir -p "$DIR"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$DIR" "hjson==$(pin hjson)"
"$PY" -m pip wheel --no-deps -w "$DIR" "deepspeed==$(pin deepspeed)"   # no CUDA ops built: they JIT when used
ls -l "$DIR"
