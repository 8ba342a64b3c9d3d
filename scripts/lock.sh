#!/usr/bin/env bash
# Regenerate requirements-gpu.lock: the GPU set (requirements.txt + requirements-dev.txt) resolved by uv for Linux
# x86_64 / CPython 3.12, the platform it ran on (an NVIDIA H200 node). uv needs no 3.12 interpreter for this and
# ignores pip's configuration (local wheel stores), so the lock names PyPI's files only. Needs network.
#   bash scripts/lock.sh            (UV=/path/to/uv to use an installed uv; else uv is installed into a temp venv)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-}
if [ -z "$UV" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  python3 -m venv "$tmp/venv" && "$tmp/venv/bin/python" -m pip install -q uv && UV="$tmp/venv/bin/uv"
fi
inputs=$(cat requirements.txt requirements-base.txt requirements-dev.txt | sha256sum | cut -c1-16)
out=$(mktemp requirements-gpu.lock.XXXXXX)
{
  echo "# requirements-gpu.lock: the GPU set resolved for Linux x86_64 / CPython 3.12 — regenerate with scripts/lock.sh"
  echo "# $("$UV" --version): uv pip compile requirements.txt requirements-dev.txt --python-version 3.12 --python-platform x86_64-manylinux_2_28"
  echo "# inputs sha256: $inputs  (requirements.txt + requirements-base.txt + requirements-dev.txt; tests check it)"
  "$UV" pip compile requirements.txt requirements-dev.txt --python-version 3.12 --python-platform x86_64-manylinux_2_28 \
    --no-header --emit-index-url
} > "$out"
chmod 644 "$out"
mv "$out" requirements-gpu.lock
echo "wrote requirements-gpu.lock ($(grep -c '==' requirements-gpu.lock) pinned packages)"
